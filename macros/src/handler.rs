//! `#[handler]`: check an async function's signature and options, then
//! register it (priority, retry, timeout) so the handler registry finds it.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, Item, ItemFn, LitStr, Type};

use crate::diagnostics::Diagnostics;
use crate::options::{self, Site};

const SITE: Site = Site {
    macro_name: "handler",
    accepted: &["name", "priority", "retry", "timeout"],
    repeatable: &[],
};
const RETRY_SITE: Site = Site {
    macro_name: "retry",
    accepted: &["attempts", "backoff"],
    repeatable: &[],
};

/// The checked options of one handler.
struct HandlerModel {
    name: Option<LitStr>,
    priority: i32,
    attempts: u32,
    backoff_millis: u64,
    timeout_millis: Option<u64>,
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut diagnostics = Diagnostics::default();
    let item: Item = match syn::parse2(item) {
        Ok(item) => item,
        Err(error) => return error.to_compile_error(),
    };
    let Item::Fn(function) = item else {
        diagnostics.error_at(
            crate::event::item_keyword(&item),
            "`#[handler]` goes on an `async fn`",
        );
        return diagnostics.emit(quote! { #item });
    };
    let model = parse_model(args, &mut diagnostics);
    let generated = match check_signature(&function, &mut diagnostics) {
        Some((event, with_envelope)) => generate(&function, &model, &event, with_envelope),
        None => TokenStream::new(),
    };
    diagnostics.emit(quote! {
        #function
        #generated
    })
}

fn parse_model(args: TokenStream, diagnostics: &mut Diagnostics) -> HandlerModel {
    let mut model = HandlerModel {
        name: None,
        priority: 0,
        attempts: 3,
        backoff_millis: 100,
        timeout_millis: None,
    };
    let mut nested = Diagnostics::default();
    options::parse(args, SITE, diagnostics, |key, meta| {
        match key {
            "name" => {
                model.name = Some(options::string(meta, key, "name = \"send_welcome_mail\"")?)
            }
            "priority" => model.priority = options::integer::<i32>(meta, key, "priority = 10")?.0,
            "timeout" => {
                model.timeout_millis =
                    Some(options::duration_millis(meta, key, "timeout = \"5s\"")?)
            }
            _ => {
                if !meta.input.peek(syn::token::Paren) {
                    return Err(meta.error("write `retry(attempts = 5, backoff = \"200ms\")`"));
                }
                let content;
                syn::parenthesized!(content in meta.input);
                let tokens: TokenStream = content.parse()?;
                options::parse(tokens, RETRY_SITE, &mut nested, |key, meta| {
                    match key {
                        "attempts" => {
                            let (attempts, span) =
                                options::integer::<u32>(meta, key, "attempts = 5")?;
                            if attempts == 0 {
                                return Err(syn::Error::new(
                                    span,
                                    "`attempts` counts the first try too: at least 1",
                                ));
                            }
                            model.attempts = attempts;
                        }
                        _ => {
                            model.backoff_millis =
                                options::duration_millis(meta, key, "backoff = \"200ms\"")?
                        }
                    }
                    Ok(())
                });
            }
        }
        Ok(())
    });
    if let Some(error) = nested.into_error() {
        diagnostics.push(error);
    }
    model
}

/// The event type and whether the envelope is passed too; `None` (with
/// errors recorded) when the signature cannot be a handler.
fn check_signature(function: &ItemFn, diagnostics: &mut Diagnostics) -> Option<(Type, bool)> {
    let sig = &function.sig;
    let mut ok = true;
    if sig.asyncness.is_none() {
        diagnostics.error_at(sig.fn_token, "a handler must be an `async fn`");
        ok = false;
    }
    if !sig.generics.params.is_empty() {
        diagnostics.error_at(&sig.generics, "a handler cannot be generic");
        ok = false;
    }
    let mut inputs = sig.inputs.iter();
    let event = match inputs.next() {
        Some(FnArg::Typed(arg)) => match &*arg.ty {
            Type::Reference(reference) if reference.mutability.is_none() => {
                Some((*reference.elem).clone())
            }
            other => {
                diagnostics.error_at(other, "a handler's first parameter is the event, by reference: `event: &UserRegistered`");
                None
            }
        },
        Some(FnArg::Receiver(receiver)) => {
            diagnostics.error_at(receiver, "a handler is a free function, not a method");
            None
        }
        None => {
            diagnostics.push(syn::Error::new(
                sig.paren_token.span.join(),
                "a handler takes the event it reacts to: `event: &UserRegistered`",
            ));
            None
        }
    };
    let with_envelope = match inputs.next() {
        None => false,
        Some(FnArg::Typed(arg)) if matches!(&*arg.ty, Type::Reference(r) if r.mutability.is_none()) => {
            true
        }
        Some(other) => {
            diagnostics.error_at(other, "a handler's second parameter, if any, is the stored envelope: `envelope: &annals::RecordedEvent`");
            ok = false;
            false
        }
    };
    if let Some(extra) = inputs.next() {
        diagnostics.error_at(
            extra,
            "a handler takes at most two parameters: the event and the envelope",
        );
        ok = false;
    }
    match (ok, event) {
        (true, Some(event)) => Some((event, with_envelope)),
        _ => None,
    }
}

fn generate(
    function: &ItemFn,
    model: &HandlerModel,
    event: &Type,
    with_envelope: bool,
) -> TokenStream {
    let ident = &function.sig.ident;
    let call_ident = format_ident!("__annals_call_{}", ident);
    let rust_name = ident.to_string();
    let name = match &model.name {
        Some(name) => quote!(#name),
        None => quote!(::core::concat!(::core::module_path!(), "::", #rust_name)),
    };
    let priority = model.priority;
    let attempts = model.attempts;
    let backoff = model.backoff_millis;
    let timeout = match model.timeout_millis {
        Some(millis) => {
            quote!(::core::option::Option::Some(::core::time::Duration::from_millis(#millis)))
        }
        None => quote!(::core::option::Option::None),
    };
    let envelope = if with_envelope {
        quote!(, envelope)
    } else {
        TokenStream::new()
    };
    let decode = quote_spanned! {event.span()=>
        let typed: #event = envelope.decode()?;
    };
    // Point a wrong return type's error at the return type.
    let result_span = match &function.sig.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => function.sig.ident.span(),
    };
    let result = quote_spanned! {result_span=>
        ::annals::__private::handler_result(#ident(&typed #envelope).await)
    };
    quote! {
        const _: () = {
            fn #call_ident<'a>(
                envelope: &'a ::annals::__private::RecordedEvent,
            ) -> ::annals::__private::BoxFuture<'a, ::core::result::Result<(), ::annals::__private::BoxError>> {
                ::std::boxed::Box::pin(async move {
                    #decode
                    #result
                })
            }

            ::annals::__private::inventory::submit! {
                ::annals::__private::HandlerDescriptor {
                    name: #name,
                    rust_path: ::core::concat!(::core::module_path!(), "::", #rust_name),
                    event_types: <#event as ::annals::__private::Event>::EVENT_TYPES,
                    priority: #priority,
                    retry: ::annals::__private::RetryPolicy {
                        attempts: #attempts,
                        backoff: ::core::time::Duration::from_millis(#backoff),
                    },
                    timeout: #timeout,
                    call: #call_ident,
                }
            }
        };
    }
}
