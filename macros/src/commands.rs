//! `#[commands]`: an aggregate's command handlers as the methods of one
//! `impl` block, each taking its command by value; an `annals::Handle`
//! impl is generated per method, naming the method's error type.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, ItemImpl, PathArguments, ReturnType, Type};

use crate::diagnostics::Diagnostics;

const SHAPE: &str = "a command handler is `fn name(&self, command: Command) -> Result<Vec<Event>, Error>`; \
     put other methods in an `impl` block of their own";

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut diagnostics = Diagnostics::default();
    if !args.is_empty() {
        diagnostics.error_at(&args, "`#[commands]` takes no options");
    }
    let block: ItemImpl = match syn::parse2(item.clone()) {
        Ok(block) => block,
        Err(_) => {
            return syn::Error::new_spanned(
                item,
                "`#[commands]` goes on an `impl` block of an aggregate's command handlers",
            )
            .to_compile_error();
        }
    };
    if let Some((path, _)) = &block.trait_ {
        diagnostics.error_at(
            path,
            "`#[commands]` goes on the aggregate's own `impl` block, not a trait impl",
        );
        return diagnostics.emit(quote! { #block });
    }
    if !block.generics.params.is_empty() {
        diagnostics.error_at(
            &block.generics,
            "`#[commands]` does not take generics: an aggregate is one concrete type",
        );
        return diagnostics.emit(quote! { #block });
    }
    let self_ty = &block.self_ty;
    let mut seen: Vec<(String, syn::Ident)> = Vec::new();
    let mut impls = Vec::new();
    for item in &block.items {
        let ImplItem::Fn(method) = item else {
            diagnostics.error_at(item, SHAPE);
            continue;
        };
        let Some(handler) = handler(method, &mut diagnostics) else {
            if let Some(command) = command_type(method) {
                let key = quote!(#command).to_string();
                if !seen.iter().any(|(seen, _)| *seen == key) {
                    seen.push((key, method.sig.ident.clone()));
                    impls.push(placeholder(self_ty, command));
                }
            }
            continue;
        };
        let command = handler.command;
        let key = quote!(#command).to_string();
        if let Some((_, first)) = seen.iter().find(|(seen, _)| *seen == key) {
            diagnostics.error_at(
                command,
                format!("`{first}` already handles `{key}`: one handler per command type"),
            );
            continue;
        }
        seen.push((key, method.sig.ident.clone()));
        let name = &method.sig.ident;
        let error = handler.error;
        let ok = handler.ok;
        impls.push(quote_spanned! {method.sig.span()=>
            impl ::annals::__private::Handle<#command> for #self_ty {
                type Error = #error;

                fn handle(
                    &self,
                    command: &#command,
                ) -> ::core::result::Result<#ok, #error> {
                    <#self_ty>::#name(self, ::core::clone::Clone::clone(command))
                }
            }
        });
    }
    diagnostics.emit(quote! {
        #block
        #(#impls)*
    })
}

/// The command type a method names, by value or by reference, whatever
/// else is wrong with its shape.
fn command_type(method: &syn::ImplItemFn) -> Option<&Type> {
    match method.sig.inputs.iter().nth(1)? {
        FnArg::Typed(command) => match &*command.ty {
            Type::Reference(reference) => Some(&*reference.elem),
            other => Some(other),
        },
        FnArg::Receiver(_) => None,
    }
}

/// What stands in for a malformed handler's `Handle` impl (the shape was
/// reported): executing the command then compiles, so one mistake gives one
/// error instead of "does not handle the command" at every call. The
/// placeholder refuses every command.
fn placeholder(self_ty: &Type, command: &Type) -> TokenStream {
    quote! {
        impl ::annals::__private::Handle<#command> for #self_ty {
            type Error = ::annals::__private::HandlerNotWellFormed;

            fn handle(
                &self,
                _command: &#command,
            ) -> ::core::result::Result<
                ::std::vec::Vec<<Self as ::annals::__private::Aggregate>::Event>,
                Self::Error,
            > {
                ::core::result::Result::Err(::annals::__private::HandlerNotWellFormed)
            }
        }
    }
}

/// One handler's command, events and error types.
struct Handler<'a> {
    command: &'a Type,
    ok: &'a Type,
    error: &'a Type,
}

/// The handler a method declares, or `None` (with an error) when its shape
/// is not one.
fn handler<'a>(method: &'a syn::ImplItemFn, diagnostics: &mut Diagnostics) -> Option<Handler<'a>> {
    let signature = &method.sig;
    let mut inputs = signature.inputs.iter();
    let by_ref_self = matches!(
        inputs.next(),
        Some(FnArg::Receiver(receiver))
            if matches!(receiver.kind, syn::ReceiverKind::Reference(_, _, None))
    );
    if !by_ref_self {
        diagnostics.error_at(
            &signature.inputs,
            format!(
                "`{}` must take `&self`: deciding does not change the state; {SHAPE}",
                signature.ident
            ),
        );
        return None;
    }
    let command = match (inputs.next(), inputs.next()) {
        (Some(FnArg::Typed(command)), None) => &*command.ty,
        _ => {
            diagnostics.error_at(
                &signature.inputs,
                format!(
                    "`{}` must take exactly one command after `&self`; {SHAPE}",
                    signature.ident
                ),
            );
            return None;
        }
    };
    if let Type::Reference(reference) = command {
        diagnostics.error_at(
            reference,
            "commands come by value: take the command itself, and move its fields into the events",
        );
        return None;
    }
    if !signature.generics.params.is_empty() || signature.asyncness.is_some() {
        diagnostics.error_at(
            &signature.ident,
            format!(
                "`{}` must be a plain synchronous method without generics; {SHAPE}",
                signature.ident
            ),
        );
        return None;
    }
    let Some((ok, error)) = result_types(&signature.output) else {
        diagnostics.error_at(
            &signature.output,
            format!(
                "`{}` must return `Result<Vec<Event>, Error>`; {SHAPE}",
                signature.ident
            ),
        );
        return None;
    };
    Some(Handler { command, ok, error })
}

/// `T` and `E` of a `-> Result<T, E>` return type.
fn result_types(output: &ReturnType) -> Option<(&Type, &Type)> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let Type::Path(path) = &**ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(arguments) = &last.arguments else {
        return None;
    };
    let mut types = arguments.args.iter().filter_map(|argument| match argument {
        syn::GenericArgument::Type(ty) => Some(ty),
        _ => None,
    });
    match (types.next(), types.next(), types.next()) {
        (Some(ok), Some(error), None) => Some((ok, error)),
        _ => None,
    }
}
