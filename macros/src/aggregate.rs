//! `#[aggregate]`: parse the state item and its options, check them, then
//! generate the `Aggregate` impl (dispatching each accepted event to its
//! `Apply` impl), the event enum when several event types are accepted,
//! serde derives for snapshots, and the registration.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, Ident, Item, LitStr, Token, Type, Visibility};

use crate::diagnostics::Diagnostics;
use crate::options::{self, Site};

const SITE: Site = Site {
    macro_name: "aggregate",
    accepted: &[
        "name",
        "events",
        "snapshot_every",
        "snapshot_version",
        "event_enum",
    ],
    repeatable: &[],
};

/// The checked options of one aggregate.
struct AggregateModel {
    name: String,
    events: Vec<Type>,
    snapshot_every: Option<u64>,
    snapshot_version: u32,
    event_enum: Ident,
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut diagnostics = Diagnostics::default();
    let mut item: Item = match syn::parse2(item) {
        Ok(item) => item,
        Err(error) => return error.to_compile_error(),
    };
    let (ident, vis, generics, attrs) = match &mut item {
        Item::Struct(s) => (
            s.ident.clone(),
            s.vis.clone(),
            s.generics.clone(),
            &mut s.attrs,
        ),
        Item::Enum(e) => (
            e.ident.clone(),
            e.vis.clone(),
            e.generics.clone(),
            &mut e.attrs,
        ),
        other => {
            diagnostics.error_at(
                crate::event::item_keyword(other),
                "`#[aggregate]` goes on the aggregate's state: a struct or an enum",
            );
            return diagnostics.emit(quote! { #other });
        }
    };
    let generic = !generics.params.is_empty();
    if generic {
        diagnostics.error_at(&generics, "aggregates cannot be generic");
    }
    add_serde_derives(attrs);
    let model = parse_model(args, &ident, &mut diagnostics).filter(|_| !generic);
    let generated = match model {
        Some(model) => generate(&ident, &vis, &model),
        None if !generic => placeholder(&ident),
        None => TokenStream::new(),
    };
    diagnostics.emit(quote! {
        #item
        #generated
    })
}

/// What stands in for the `Aggregate` impl when the options failed (each
/// failure already reported): code that uses the aggregate compiles against
/// it, so one mistake gives one error instead of "annotate the type with
/// `#[aggregate]`" wherever the type is used. Its event type has no values.
fn placeholder(ident: &Ident) -> TokenStream {
    quote! {
        const _: () = {
            impl ::annals::__private::Aggregate for #ident {
                const NAME: &'static str = "";
                const SNAPSHOT_VERSION: u32 = 1;
                const SNAPSHOT_EVERY: ::core::option::Option<u64> = ::core::option::Option::None;

                type Event = ::annals::__private::EventsNotDeclared;

                fn apply_event(&mut self, event: &Self::Event) {
                    match *event {}
                }
            }
        };
    }
}

/// The options as written, before any check.
#[derive(Default)]
struct AggregateOptions {
    name: Option<LitStr>,
    /// The listed event types and the span of `events`.
    events: Option<(Vec<Type>, Span)>,
    /// `events` was written, even if malformed (and reported).
    events_given: bool,
    snapshot_every: Option<(u64, Span)>,
    snapshot_version: Option<(u32, Span)>,
    event_enum: Option<Ident>,
}

/// The aggregate's options, parsed and then checked.
fn parse_model(
    args: TokenStream,
    ident: &Ident,
    diagnostics: &mut Diagnostics,
) -> Option<AggregateModel> {
    let written = parse_options(args, diagnostics);
    check_options(written, ident, diagnostics)
}

/// Reads the options into their typed values; syntax errors are recorded.
fn parse_options(args: TokenStream, diagnostics: &mut Diagnostics) -> AggregateOptions {
    let mut written = AggregateOptions::default();
    options::parse(args, SITE, diagnostics, |key, meta| {
        match key {
            "name" => written.name = Some(options::string(meta, key, "name = \"user\"")?),
            "snapshot_every" => {
                written.snapshot_every =
                    Some(options::integer::<u64>(meta, key, "snapshot_every = 100")?)
            }
            "snapshot_version" => {
                written.snapshot_version =
                    Some(options::integer::<u32>(meta, key, "snapshot_version = 2")?)
            }
            "event_enum" => {
                let path = options::path(meta, key, "event_enum = UserEvents")?;
                let enum_ident = path.get_ident().cloned().ok_or_else(|| {
                    syn::Error::new_spanned(&path, "`event_enum` takes a plain name")
                })?;
                written.event_enum = Some(enum_ident);
            }
            _ => {
                written.events_given = true;
                let span = meta.path.span();
                if !meta.input.peek(syn::token::Paren) {
                    return Err(meta.error(
                        "write the accepted event types as `events(UserRegistered, UserRenamed)`",
                    ));
                }
                let content;
                syn::parenthesized!(content in meta.input);
                let list = content.parse_terminated(Type::parse_event_type, Token![,])?;
                written.events = Some((list.into_iter().collect(), span));
            }
        }
        Ok(())
    });
    written
}

/// Checks the written options against the rules (names, a non-empty list
/// of distinct events, versions from 1) and fills in the defaults; `None`
/// when there is nothing to generate.
fn check_options(
    written: AggregateOptions,
    ident: &Ident,
    diagnostics: &mut Diagnostics,
) -> Option<AggregateModel> {
    let AggregateOptions {
        name,
        events,
        events_given,
        snapshot_every,
        snapshot_version,
        event_enum,
    } = written;
    let name = match &name {
        Some(literal) => {
            let value = literal.value();
            if value.is_empty()
                || value.contains('-')
                || value.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                diagnostics.error_at(
                    literal,
                    "an aggregate name is the stream category: non-empty, without `-`, whitespace or control characters",
                );
            }
            value
        }
        None => crate::naming::snake_case(&ident.to_string()),
    };
    let Some((events, span)) = events else {
        if events_given {
            // The malformed `events` option was reported already.
            return None;
        }
        diagnostics.push(syn::Error::new(
            Span::call_site(),
            "`#[aggregate]` needs the event types it accepts: `#[aggregate(events(UserRegistered, UserRenamed))]`",
        ));
        return None;
    };
    if events.is_empty() {
        diagnostics.push(syn::Error::new(span, "`events(...)` lists no event type"));
        return None;
    }
    let mut unique: Vec<Type> = Vec::with_capacity(events.len());
    for event in events {
        if unique
            .iter()
            .any(|earlier| quote!(#earlier).to_string() == quote!(#event).to_string())
        {
            diagnostics.error_at(&event, "this event type is listed twice");
        } else {
            unique.push(event);
        }
    }
    let events = unique;
    let snapshot_every = match snapshot_every {
        Some((0, span)) => {
            diagnostics.push(syn::Error::new(
                span,
                "`snapshot_every` must be at least 1 (leave it out for on-demand snapshots)",
            ));
            None
        }
        other => other.map(|(every, _)| every),
    };
    let snapshot_version = match snapshot_version {
        Some((0, span)) => {
            diagnostics.push(syn::Error::new(span, "snapshot versions start at 1"));
            1
        }
        Some((version, _)) => version,
        None => 1,
    };
    Some(AggregateModel {
        name,
        events,
        snapshot_every,
        snapshot_version,
        event_enum: event_enum.unwrap_or_else(|| format_ident!("{}Event", ident)),
    })
}

/// Parsing of one entry of `events(...)`: a type path.
trait ParseEventType {
    fn parse_event_type(input: syn::parse::ParseStream<'_>) -> syn::Result<Type>;
}

impl ParseEventType for Type {
    fn parse_event_type(input: syn::parse::ParseStream<'_>) -> syn::Result<Type> {
        let ty: Type = input.parse()?;
        match &ty {
            Type::Path(path) if path.qself.is_none() => Ok(ty),
            other => Err(syn::Error::new_spanned(
                other,
                "an accepted event is a type path, like `UserRegistered`",
            )),
        }
    }
}

/// Adds the serde derives ahead of the item's own attributes, so that its
/// container attributes (`#[serde(default)]`, ...) follow the derive they
/// belong to.
fn add_serde_derives(attrs: &mut Vec<Attribute>) {
    attrs.insert(
        0,
        syn::parse_quote!(#[derive(::annals::serde::Serialize, ::annals::serde::Deserialize)]),
    );
    attrs.push(syn::parse_quote!(#[serde(crate = "::annals::serde")]));
}

/// The variant name for an event type in the generated enum: its last
/// path segment.
fn variant_ident(ty: &Type) -> Ident {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .map(|segment| segment.ident.clone())
            .unwrap_or_else(|| format_ident!("Event")),
        _ => format_ident!("Event"),
    }
}

fn generate(ident: &Ident, vis: &Visibility, model: &AggregateModel) -> TokenStream {
    let name = &model.name;
    let snapshot_version = model.snapshot_version;
    let snapshot_every = match model.snapshot_every {
        Some(every) => quote!(::core::option::Option::Some(#every)),
        None => quote!(::core::option::Option::None),
    };
    let rust_name = ident.to_string();

    let (event_type, event_enum, apply_body) = if let [only] = model.events.as_slice() {
        let apply = quote_spanned! {only.span()=>
            <#ident as ::annals::__private::Apply<#only>>::apply(self, event)
        };
        (quote!(#only), TokenStream::new(), apply)
    } else {
        let enum_ident = &model.event_enum;
        let types = &model.events;
        let variants: Vec<Ident> = types.iter().map(variant_ident).collect();
        let arms = types.iter().zip(&variants).map(|(ty, variant)| {
            quote_spanned! {ty.span()=>
                #enum_ident::#variant(event) => <#ident as ::annals::__private::Apply<#ty>>::apply(self, event),
            }
        });
        let doc = format!("The events of the [`{ident}`] aggregate (generated by `#[aggregate]`).");
        let enum_item = quote! {
            #[doc = #doc]
            #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::cmp::PartialEq)]
            #vis enum #enum_ident {
                #(
                    #[allow(missing_docs)]
                    #variants(#types),
                )*
            }

            #(
                impl ::core::convert::From<#types> for #enum_ident {
                    fn from(event: #types) -> Self {
                        #enum_ident::#variants(event)
                    }
                }
            )*

            const _: () = {
                impl ::annals::__private::Event for #enum_ident {
                    const EVENT_TYPES: &'static [&'static str] = &{
                        const COUNT: usize = 0 #(+ <#types as ::annals::__private::Event>::EVENT_TYPES.len())*;
                        ::annals::__private::concat_names::<COUNT>(&[#(<#types as ::annals::__private::Event>::EVENT_TYPES),*])
                    };

                    fn event_type(&self) -> &'static str {
                        match self {
                            #( #enum_ident::#variants(event) => ::annals::__private::Event::event_type(event), )*
                        }
                    }

                    fn schema_version(&self) -> u32 {
                        match self {
                            #( #enum_ident::#variants(event) => ::annals::__private::Event::schema_version(event), )*
                        }
                    }

                    fn to_payload(&self) -> ::core::result::Result<::annals::__private::Payload, ::annals::__private::serde_json::Error> {
                        match self {
                            #( #enum_ident::#variants(event) => ::annals::__private::Event::to_payload(event), )*
                        }
                    }

                    fn from_payload(
                        event_type: &str,
                        schema_version: u32,
                        payload: &::annals::__private::Payload,
                    ) -> ::core::result::Result<Self, ::annals::__private::DecodeError> {
                        #(
                            if <#types as ::annals::__private::Event>::EVENT_TYPES.iter().any(|name| *name == event_type) {
                                return <#types as ::annals::__private::Event>::from_payload(event_type, schema_version, payload)
                                    .map(#enum_ident::#variants);
                            }
                        )*
                        ::core::result::Result::Err(::annals::__private::DecodeError::UnknownType)
                    }
                }
            };
        };
        let apply = quote! {
            match event {
                #(#arms)*
            }
        };
        (quote!(#enum_ident), enum_item, apply)
    };

    quote! {
        #event_enum

        const _: () = {
            impl ::annals::__private::Aggregate for #ident {
                const NAME: &'static str = #name;
                const SNAPSHOT_VERSION: u32 = #snapshot_version;
                const SNAPSHOT_EVERY: ::core::option::Option<u64> = #snapshot_every;

                type Event = #event_type;

                fn apply_event(&mut self, event: &Self::Event) {
                    #apply_body
                }
            }

            ::annals::__private::inventory::submit! {
                ::annals::__private::AggregateDescriptor {
                    name: #name,
                    rust_type: ::core::concat!(::core::module_path!(), "::", #rust_name),
                    event_types: || <#event_type as ::annals::__private::Event>::EVENT_TYPES.to_vec(),
                    snapshot_version: #snapshot_version,
                    snapshot_every: #snapshot_every,
                }
            }
        };
    }
}
