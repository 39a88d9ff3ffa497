//! `#[projection]`: check an `impl` block of event handlers and its options,
//! then generate the `Projection` impl that dispatches each stored event to
//! the handlers of its type, and the registration.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, ImplItemFn, Item, ItemImpl, LitStr, ReceiverKind, Type};

use crate::diagnostics::Diagnostics;
use crate::options::{self, Site};
use crate::read_model_table::{self, TableModel};

const SITE: Site = Site {
    macro_name: "projection",
    accepted: &["name", "version", "table", "flush"],
    repeatable: &["table"],
};

/// One handler method of the block.
struct HandlerMethod {
    method: syn::Ident,
    event: Type,
    with_envelope: bool,
    with_context: bool,
    is_async: bool,
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut diagnostics = Diagnostics::default();
    let item: Item = match syn::parse2(item) {
        Ok(item) => item,
        Err(error) => return error.to_compile_error(),
    };
    let Item::Impl(block) = item else {
        diagnostics.error_at(
            crate::event::item_keyword(&item),
            "`#[projection]` goes on an `impl` block whose methods handle events",
        );
        return diagnostics.emit(quote! { #item });
    };
    let (name, version, tables, flush) = parse_options(args, &block, &mut diagnostics);
    let generated = check_block(&block, &mut diagnostics)
        .map(|(handlers, context)| {
            let options = Generated {
                name: &name,
                version,
                tables: &tables,
                flush: flush.as_ref(),
            };
            generate(&block, &options, &handlers, context.as_ref())
        })
        .unwrap_or_default();
    diagnostics.emit(quote! {
        #block
        #generated
    })
}

fn self_ident(block: &ItemImpl) -> Option<String> {
    match &*block.self_ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .map(|segment| segment.ident.to_string()),
        _ => None,
    }
}

fn parse_options(
    args: TokenStream,
    block: &ItemImpl,
    diagnostics: &mut Diagnostics,
) -> (String, u32, Vec<TableModel>, Option<syn::Path>) {
    let mut name: Option<LitStr> = None;
    let mut version = None;
    let mut tables = Vec::new();
    let mut flush = None;
    let mut table_problems = Diagnostics::default();
    options::parse(args, SITE, diagnostics, |key, meta| {
        match key {
            "name" => name = Some(options::string(meta, key, "name = \"tenant_directory\"")?),
            "table" => tables.extend(read_model_table::parse(meta, &mut table_problems)),
            "flush" => flush = Some(options::path(meta, key, "flush = Self::write_rows")?),
            _ => version = Some(options::integer::<u32>(meta, key, "version = 2")?),
        }
        Ok(())
    });
    if let Some(error) = table_problems.into_error() {
        diagnostics.push(error);
    }
    let name = match name {
        Some(literal) => {
            if literal.value().is_empty()
                || literal
                    .value()
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
            {
                diagnostics.error_at(
                    &literal,
                    "a projection name may not be empty or contain whitespace",
                );
            }
            literal.value()
        }
        None => crate::naming::snake_case(&self_ident(block).unwrap_or_default()),
    };
    let version = match version {
        Some((0, span)) => {
            diagnostics.push(syn::Error::new(span, "projection versions start at 1"));
            1
        }
        Some((version, _)) => version,
        None => 1,
    };
    (name, version, tables, flush)
}

/// The well-formed handlers and the shared context type (errors recorded),
/// or `None` for a block that cannot implement `Projection` (a trait impl,
/// generics). The impl is generated from the well-formed handlers even when
/// others were reported, so one mistake gives one error rather than "not a
/// projection" wherever the type is used.
fn check_block(
    block: &ItemImpl,
    diagnostics: &mut Diagnostics,
) -> Option<(Vec<HandlerMethod>, Option<Type>)> {
    let mut all_well_formed = true;
    if let Some((path, _)) = &block.trait_ {
        diagnostics.error_at(
            path,
            "`#[projection]` goes on an inherent `impl` block, not a trait impl",
        );
        return None;
    }
    if !block.generics.params.is_empty() {
        diagnostics.error_at(&block.generics, "projections cannot be generic");
        return None;
    }
    let mut handlers = Vec::new();
    let mut context: Option<Type> = None;
    for item in &block.items {
        let ImplItem::Fn(method) = item else { continue };
        match check_method(method, diagnostics) {
            Some((handler, method_context)) => {
                if let Some(found) = method_context {
                    match &context {
                        Some(earlier)
                            if quote!(#earlier).to_string() != quote!(#found).to_string() =>
                        {
                            diagnostics.error_at(
                                &found,
                                format!(
                                    "all handlers of a projection share one context type; another handler uses `{}`",
                                    crate::naming::type_text(earlier)
                                ),
                            );
                            continue;
                        }
                        Some(_) => {}
                        None => context = Some(found),
                    }
                }
                handlers.push(handler);
            }
            None => all_well_formed = false,
        }
    }
    if handlers.is_empty() && all_well_formed {
        diagnostics.error_at(
            &block.self_ty,
            "a projection needs at least one event handler, like `fn on_created(&mut self, event: &TenantCreated)`",
        );
    }
    Some((handlers, context))
}

fn check_method(
    method: &ImplItemFn,
    diagnostics: &mut Diagnostics,
) -> Option<(HandlerMethod, Option<Type>)> {
    let sig = &method.sig;
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(receiver))
            if matches!(receiver.kind, ReceiverKind::Reference(_, _, Some(_))) => {}
        _ => {
            diagnostics.error_at(
                &sig.ident,
                "a projection handler takes `&mut self` first (move helpers to another `impl` block)",
            );
            return None;
        }
    }
    if !sig.generics.params.is_empty() {
        diagnostics.error_at(&sig.generics, "a projection handler cannot be generic");
        return None;
    }
    let event = match inputs.next() {
        Some(FnArg::Typed(arg)) => match &*arg.ty {
            Type::Reference(reference) if reference.mutability.is_none() => {
                (*reference.elem).clone()
            }
            other => {
                diagnostics.error_at(
                    other,
                    "the event parameter is a shared reference, like `event: &TenantCreated`",
                );
                return None;
            }
        },
        _ => {
            diagnostics.error_at(
                &sig.ident,
                "a projection handler takes the event after `&mut self`: `event: &TenantCreated`",
            );
            return None;
        }
    };
    let mut with_envelope = false;
    let mut context = None;
    for input in inputs {
        let FnArg::Typed(arg) = input else { continue };
        match &*arg.ty {
            Type::Reference(reference)
                if reference.mutability.is_none() && !with_envelope && context.is_none() =>
            {
                with_envelope = true;
            }
            Type::Reference(reference) if reference.mutability.is_some() && context.is_none() => {
                context = Some((*reference.elem).clone());
            }
            other => {
                diagnostics.error_at(
                    other,
                    "after the event, a projection handler may take `&RecordedEvent` (the envelope) and then `&mut` a context (such as a database connection)",
                );
                return None;
            }
        }
    }
    Some((
        HandlerMethod {
            method: sig.ident.clone(),
            event,
            with_envelope,
            with_context: context.is_some(),
            is_async: sig.asyncness.is_some(),
        },
        context,
    ))
}

/// The parsed options that shape the generated impl.
struct Generated<'a> {
    name: &'a str,
    version: u32,
    tables: &'a [TableModel],
    flush: Option<&'a syn::Path>,
}

fn generate(
    block: &ItemImpl,
    options: &Generated<'_>,
    handlers: &[HandlerMethod],
    context: Option<&Type>,
) -> TokenStream {
    let (name, version, tables) = (options.name, options.version, options.tables);
    let flush = options.flush.map(|path| {
        quote_spanned! {path.span()=>
            async fn flush(&mut self, context: &mut Self::Context) -> ::annals::__private::Result<()> {
                ::annals::__private::handler_result(#path(self, context).await).map_err(|source| {
                    ::annals::__private::Error::Projection {
                        projection: #name,
                        stream: ::std::string::String::from("(batch flush)"),
                        version: 0,
                        event_type: ::std::string::String::from("(batch flush)"),
                        source,
                    }
                })
            }
        }
    });
    let self_ty = &block.self_ty;
    let tables = tables.iter().map(read_model_table::descriptor);
    let rust_name = self_ident(block).unwrap_or_default();
    let context_type = match context {
        Some(context) => quote!(#context),
        None => quote!(()),
    };
    let events: Vec<&Type> = handlers.iter().map(|handler| &handler.event).collect();
    let reads_metadata = handlers.iter().any(|handler| handler.with_envelope);
    let dispatch = handlers.iter().map(|handler| {
        let event = &handler.event;
        let method = &handler.method;
        let envelope = handler.with_envelope.then(|| quote!(, event));
        let context = handler.with_context.then(|| quote!(, context));
        let call = if handler.is_async {
            quote!(self.#method(&typed #envelope #context).await)
        } else {
            quote!(self.#method(&typed #envelope #context))
        };
        quote_spanned! {event.span()=>
            if <#event as ::annals::__private::Event>::EVENT_TYPES.iter().any(|name| *name == event.event_type) {
                let typed: #event = event.decode()?;
                ::annals::__private::handler_result(#call).map_err(|source| ::annals::__private::Error::Projection {
                    projection: #name,
                    stream: event.stream_id.to_string(),
                    version: event.version,
                    event_type: event.event_type.clone(),
                    source,
                })?;
            }
        }
    });
    quote! {
        const _: () = {
            #[::annals::__private::async_trait]
            impl ::annals::__private::Projection for #self_ty {
                const NAME: &'static str = #name;
                const VERSION: u32 = #version;

                type Context = #context_type;

                fn event_types() -> ::std::vec::Vec<&'static str> {
                    let mut names: ::std::vec::Vec<&'static str> = ::std::vec::Vec::new();
                    #( names.extend_from_slice(<#events as ::annals::__private::Event>::EVENT_TYPES); )*
                    names.dedup();
                    names
                }

                fn reads_metadata() -> bool {
                    #reads_metadata
                }

                #[allow(unused_variables)]
                async fn apply(
                    &mut self,
                    event: &::annals::__private::RecordedEvent,
                    context: &mut Self::Context,
                ) -> ::annals::__private::Result<()> {
                    #(#dispatch)*
                    ::core::result::Result::Ok(())
                }

                #flush
            }

            ::annals::__private::inventory::submit! {
                ::annals::__private::ProjectionDescriptor {
                    name: #name,
                    version: #version,
                    rust_type: ::core::concat!(::core::module_path!(), "::", #rust_name),
                    event_types: <#self_ty as ::annals::__private::Projection>::event_types,
                    tables: &[#(#tables),*],
                }
            }
        };
    }
}
