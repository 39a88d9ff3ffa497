//! `#[event]`: parse the item and its options into an [`EventModel`], check
//! it, then generate the `Event` impl, serde derives and registrations.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, Fields, Ident, Item, LitStr};

use crate::diagnostics::Diagnostics;
use crate::options::{self, Site};
use crate::pii::{self, PiiField};

const STRUCT_SITE: Site = Site {
    macro_name: "event",
    accepted: &["name", "version", "upcast", "tags"],
    repeatable: &["upcast"],
};
const ENUM_SITE: Site = Site {
    macro_name: "event",
    accepted: &[],
    repeatable: &[],
};
const VARIANT_SITE: Site = Site {
    macro_name: "event",
    accepted: &["name", "version", "upcast", "tags"],
    repeatable: &["upcast"],
};
const UPCAST_SITE: Site = Site {
    macro_name: "upcast",
    accepted: &["from", "json", "typed"],
    repeatable: &[],
};

/// The wire identity of one event (a struct, or one variant of an enum).
struct EventIdentity {
    name: String,
    name_span: Span,
    version: u32,
    upcasts: Vec<Upcast>,
    /// `tags(email, tenant = tenant_id)`: each tag's label and field.
    tags: Vec<Tag>,
}

/// One declared tag: `label:<field's value>`.
struct Tag {
    label: String,
    field: Ident,
}

/// One declared upcast.
struct Upcast {
    from: u32,
    kind: UpcastKind,
}

enum UpcastKind {
    /// `fn(serde_json::Value) -> serde_json::Value` (or a `Result` of it).
    Json(syn::Path),
    /// `fn(OldType) -> Self`.
    Typed(syn::Path),
}

/// One variant of an enum event.
struct VariantModel {
    ident: Ident,
    unit: bool,
    identity: EventIdentity,
    /// Its `#[pii]` fields (the variant's content is the payload).
    pii_fields: Vec<PiiField>,
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut diagnostics = Diagnostics::default();
    let item: Item = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(error) => return error.to_compile_error(),
    };
    let generated = match item {
        Item::Struct(mut item) => {
            let generic = reject_generics(&item.generics, &mut diagnostics);
            let identity = parse_identity(
                args,
                STRUCT_SITE,
                &item.ident.to_string(),
                Span::call_site(),
                &mut diagnostics,
            );
            check_serde_attrs(&item.attrs, false, &mut diagnostics);
            let mut identity = identity;
            check_tag_fields(&mut identity.tags, &item.fields, &mut diagnostics);
            let pii_fields = pii::take_struct_fields(&mut item.fields, &mut diagnostics);
            refuse_personal_tags(&mut identity.tags, &pii_fields, &mut diagnostics);
            add_derives(&mut item.attrs);
            let impls = (!generic).then(|| struct_impl(&item.ident, &identity, &pii_fields));
            quote! { #item #impls }
        }
        Item::Enum(mut item) => {
            let generic = reject_generics(&item.generics, &mut diagnostics);
            options::parse(args, ENUM_SITE, &mut diagnostics, |_, _| Ok(()));
            check_serde_attrs(&item.attrs, true, &mut diagnostics);
            if item.variants.is_empty() {
                diagnostics.error_at(&item.ident, "an event enum needs at least one variant");
            }
            let enum_name = item.ident.to_string();
            let mut variants = Vec::new();
            for variant in &mut item.variants {
                let args = take_event_attrs(&mut variant.attrs, &mut diagnostics);
                let pii_fields = pii::take_struct_fields(&mut variant.fields, &mut diagnostics);
                check_serde_attrs(&variant.attrs, false, &mut diagnostics);
                let default_name = format!("{enum_name}.{}", variant.ident);
                let identity = parse_identity(
                    args,
                    VARIANT_SITE,
                    &default_name,
                    variant.ident.span(),
                    &mut diagnostics,
                );
                let mut identity = identity;
                check_tag_fields(&mut identity.tags, &variant.fields, &mut diagnostics);
                refuse_personal_tags(&mut identity.tags, &pii_fields, &mut diagnostics);
                variants.push(VariantModel {
                    ident: variant.ident.clone(),
                    unit: matches!(variant.fields, Fields::Unit),
                    identity,
                    pii_fields,
                });
            }
            check_unique_names(&variants, &mut diagnostics);
            add_derives(&mut item.attrs);
            let impls =
                (!generic && !variants.is_empty()).then(|| enum_impl(&item.ident, &variants));
            quote! { #item #impls }
        }
        other => {
            diagnostics.error_at(
                item_keyword(&other),
                "`#[event]` goes on a struct or an enum",
            );
            quote! { #other }
        }
    };
    diagnostics.emit(generated)
}

/// The tokens that name an item's kind (`union`, `fn`, ...), for errors.
pub(crate) fn item_keyword(item: &Item) -> TokenStream {
    match item {
        Item::Union(union) => {
            let token = union.union_token;
            quote! { #token }
        }
        Item::Fn(function) => {
            let token = function.sig.fn_token;
            quote! { #token }
        }
        Item::Impl(implementation) => {
            let token = implementation.impl_token;
            quote! { #token }
        }
        Item::Trait(definition) => {
            let token = definition.trait_token;
            quote! { #token }
        }
        Item::Mod(module) => {
            let token = module.mod_token;
            quote! { #token }
        }
        other => quote! { #other },
    }
}

/// Records an error for a generic item; `true` if it is generic.
fn reject_generics(generics: &syn::Generics, diagnostics: &mut Diagnostics) -> bool {
    let generic = !generics.params.is_empty();
    if generic {
        diagnostics.error_at(
            generics,
            "event types cannot be generic: their wire shape must be fixed",
        );
    }
    generic
}

/// Removes `#[event(...)]` attributes from a variant and returns their
/// arguments.
fn take_event_attrs(attrs: &mut Vec<Attribute>, diagnostics: &mut Diagnostics) -> TokenStream {
    let mut args = TokenStream::new();
    let mut found = false;
    attrs.retain(|attr| {
        if !attr.path().is_ident("event") {
            return true;
        }
        if found {
            diagnostics.error_at(
                attr,
                "duplicate `#[event]` attribute on this variant; merge them",
            );
        }
        found = true;
        match &attr.meta {
            syn::Meta::List(list) => args = list.tokens.clone(),
            syn::Meta::Path(_) => {}
            syn::Meta::NameValue(nv) => {
                diagnostics.error_at(nv, "write `#[event(name = \"...\")]`")
            }
        }
        false
    });
    args
}

/// The `#[event(...)]` options of a type or variant, parsed and then
/// checked; `default_name` (at `default_span`) when none is given.
fn parse_identity(
    args: TokenStream,
    site: Site,
    default_name: &str,
    default_span: Span,
    diagnostics: &mut Diagnostics,
) -> EventIdentity {
    let written = parse_identity_options(args, site, diagnostics);
    let mut identity = check_identity(
        written.name,
        written.version,
        written.upcasts,
        default_name,
        default_span,
        diagnostics,
    );
    identity.tags = written.tags;
    identity
}

/// An upcast as written, with the span of its `upcast` keyword.
type WrittenUpcast = (Upcast, Span);

/// Reads the name, version and upcasts as written; syntax errors (and an
/// upcast missing a part) are recorded.
fn parse_identity_options(
    args: TokenStream,
    site: Site,
    diagnostics: &mut Diagnostics,
) -> WrittenIdentity {
    let mut name: Option<LitStr> = None;
    let mut version: Option<(u32, Span)> = None;
    let mut upcasts: Vec<WrittenUpcast> = Vec::new();
    let mut tags: Vec<Tag> = Vec::new();
    let mut nested = Diagnostics::default();
    options::parse(args, site, diagnostics, |key, meta| {
        match key {
            "name" => {
                name = Some(options::string(
                    meta,
                    key,
                    "name = \"iam.user.registered\"",
                )?)
            }
            "version" => version = Some(options::integer(meta, key, "version = 2")?),
            "tags" => tags = parse_tags(meta)?,
            _ => parse_upcast(meta, &mut upcasts, &mut nested)?,
        }
        Ok(())
    });
    if let Some(error) = nested.into_error() {
        diagnostics.push(error);
    }
    WrittenIdentity {
        name,
        version,
        upcasts,
        tags,
    }
}

/// An event's options as written, before they are checked.
struct WrittenIdentity {
    name: Option<LitStr>,
    version: Option<(u32, Span)>,
    upcasts: Vec<WrittenUpcast>,
    tags: Vec<Tag>,
}

/// `tags(email, tenant = tenant_id)`: a field tags the event with
/// `email:<value>`, or with a label of its own, `tenant:<value>`.
fn parse_tags(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<Vec<Tag>> {
    const EXAMPLE: &str =
        "write `tags(email, tenant = tenant_id)`: fields, each optionally labelled";
    let content;
    syn::parenthesized!(content in meta.input);
    // Taken whole, so that a mistake inside is one error, not two.
    let tokens: TokenStream = content.parse()?;
    let entry = |input: syn::parse::ParseStream<'_>| {
        let first: Ident = input
            .parse()
            .map_err(|error| syn::Error::new(error.span(), EXAMPLE))?;
        if input.peek(syn::Token![=]) {
            input.parse::<syn::Token![=]>()?;
            let field: Ident = input
                .parse()
                .map_err(|error| syn::Error::new(error.span(), EXAMPLE))?;
            Ok(Tag {
                label: first.to_string(),
                field,
            })
        } else {
            Ok(Tag {
                label: first.to_string(),
                field: first,
            })
        }
    };
    let entries = syn::parse::Parser::parse2(
        |input: syn::parse::ParseStream<'_>| {
            syn::punctuated::Punctuated::<Tag, syn::Token![,]>::parse_terminated_with(input, entry)
        },
        tokens,
    )?;
    let tags: Vec<Tag> = entries.into_iter().collect();
    if tags.is_empty() {
        return Err(meta.error(format!("`tags()` names no field; {EXAMPLE}")));
    }
    for (index, tag) in tags.iter().enumerate() {
        if tags[..index]
            .iter()
            .any(|earlier| earlier.label == tag.label)
        {
            return Err(syn::Error::new(
                tag.field.span(),
                format!(
                    "two tags are labelled `{}`; give one another label",
                    tag.label
                ),
            ));
        }
    }
    Ok(tags)
}

/// Every tag names a named field of the event; when one does not, the
/// error is recorded and no tags are generated (one mistake, one error).
fn check_tag_fields(tags: &mut Vec<Tag>, fields: &Fields, diagnostics: &mut Diagnostics) {
    let mut sound = true;
    for tag in tags.iter() {
        let Fields::Named(named) = fields else {
            diagnostics.push(syn::Error::new(
                tag.field.span(),
                "tags are taken from named fields; this event has none",
            ));
            tags.clear();
            return;
        };
        if !named
            .named
            .iter()
            .any(|field| field.ident.as_ref() == Some(&tag.field))
        {
            let known: Vec<String> = named
                .named
                .iter()
                .filter_map(|field| field.ident.as_ref().map(Ident::to_string))
                .collect();
            diagnostics.push(syn::Error::new(
                tag.field.span(),
                format!(
                    "`tags({})`: no field `{}` here (fields: {})",
                    tag.field,
                    tag.field,
                    known.join(", ")
                ),
            ));
            sound = false;
        }
    }
    if !sound {
        tags.clear();
    }
}

/// Tags are stored in the clear and outlive a forget: a `#[pii]` field
/// cannot be one.
fn refuse_personal_tags(
    tags: &mut Vec<Tag>,
    pii_fields: &[PiiField],
    diagnostics: &mut Diagnostics,
) {
    let before = tags.len();
    tags.retain(|tag| {
        let personal = pii_fields.iter().any(|field| tag.field == field.key());
        if personal {
            diagnostics.push(syn::Error::new(
                tag.field.span(),
                format!(
                    "`{}` is personal data (`#[pii]`): tags are stored in the clear and outlive \
                     forgetting the subject; tag a value that is not personal (an id), or a \
                     keyed digest of this one held in a field of its own",
                    tag.field
                ),
            ));
        }
        !personal
    });
    if tags.len() != before {
        tags.clear();
    }
}

/// The expressions of an event's tags, from its fields reached as `field`.
fn tag_values(tags: &[Tag], field: impl Fn(&Ident) -> TokenStream) -> Vec<TokenStream> {
    tags.iter()
        .map(|tag| {
            let label = &tag.label;
            let value = field(&tag.field);
            quote_spanned! {tag.field.span()=>
                ::annals::__private::tag(#label, &(#value))
            }
        })
        .collect()
}

/// One `upcast(from = N, json = f)` / `upcast(from = N, typed = f)`.
fn parse_upcast(
    meta: &syn::meta::ParseNestedMeta<'_>,
    upcasts: &mut Vec<WrittenUpcast>,
    nested: &mut Diagnostics,
) -> syn::Result<()> {
    let span = meta.path.span();
    let mut from = None;
    let mut kind = None;
    let content;
    syn::parenthesized!(content in meta.input);
    let tokens: TokenStream = content.parse()?;
    let mut own = Diagnostics::default();
    options::parse(tokens, UPCAST_SITE, &mut own, |key, meta| {
        match key {
            "from" => from = Some(options::integer::<u32>(meta, key, "from = 1")?.0),
            "json" => {
                kind = Some(UpcastKind::Json(options::path(
                    meta,
                    key,
                    "json = upcast_v1",
                )?))
            }
            _ => {
                kind = Some(UpcastKind::Typed(options::path(
                    meta,
                    key,
                    "typed = from_v1",
                )?))
            }
        }
        Ok(())
    });
    if let Some(error) = own.into_error() {
        // Its own errors say enough; do not add "needs ..." on top.
        nested.push(error);
        return Ok(());
    }
    match (from, kind) {
        (Some(from), Some(kind)) => upcasts.push((Upcast { from, kind }, span)),
        (None, _) => nested.push(syn::Error::new(
            span,
            "`upcast` needs `from = <older version>`",
        )),
        (_, None) => nested.push(syn::Error::new(
            span,
            "`upcast` needs `json = <fn(Value) -> Value>` or `typed = <fn(OldType) -> Self>`",
        )),
    }
    Ok(())
}

/// Checks the name (the runtime's rules), the version (from 1) and the
/// upcasts (older than the version, one per version read).
fn check_identity(
    name: Option<LitStr>,
    version: Option<(u32, Span)>,
    upcasts: Vec<WrittenUpcast>,
    default_name: &str,
    default_span: Span,
    diagnostics: &mut Diagnostics,
) -> EventIdentity {
    let (name, name_span) = match &name {
        Some(literal) => (literal.value(), literal.span()),
        None => (default_name.to_owned(), default_span),
    };
    if let Some(problem) = crate::naming::event_name_problem(&name) {
        diagnostics.push(syn::Error::new(name_span, problem));
    }
    let version_number = match version {
        Some((0, span)) => {
            diagnostics.push(syn::Error::new(span, "schema versions start at 1"));
            1
        }
        Some((number, _)) => number,
        None => 1,
    };
    let mut froms = Vec::new();
    for (upcast, span) in &upcasts {
        if upcast.from >= version_number {
            diagnostics.push(syn::Error::new(
                *span,
                format!(
                    "`upcast(from = {})` must name a version older than the current `version = {version_number}`",
                    upcast.from
                ),
            ));
        }
        if froms.contains(&upcast.from) {
            diagnostics.push(syn::Error::new(
                *span,
                format!("two upcasts read version {}", upcast.from),
            ));
        }
        froms.push(upcast.from);
    }
    EventIdentity {
        name,
        name_span,
        version: version_number,
        upcasts: upcasts.into_iter().map(|(upcast, _)| upcast).collect(),
        tags: Vec::new(),
    }
}

fn check_unique_names(variants: &[VariantModel], diagnostics: &mut Diagnostics) {
    for (i, variant) in variants.iter().enumerate() {
        if let Some(first) = variants[..i]
            .iter()
            .find(|v| v.identity.name == variant.identity.name)
        {
            diagnostics.push(syn::Error::new(
                variant.identity.name_span,
                format!(
                    "event name `{}` is already used by variant `{}`",
                    variant.identity.name, first.ident
                ),
            ));
        }
    }
}

/// Serde attributes that would change the wire shape behind Annals' back.
fn check_serde_attrs(attrs: &[Attribute], container_of_enum: bool, diagnostics: &mut Diagnostics) {
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
        let meta = &attr.meta;
        let text = quote!(#meta).to_string();
        let forbidden = [
            "tag",
            "untagged",
            "content",
            "rename",
            "rename_all",
            "alias",
        ];
        let hit = forbidden.iter().find(|word| {
            text.split(|c: char| !c.is_alphanumeric() && c != '_')
                .any(|token| token == **word)
        });
        if let Some(word) = hit {
            let hint = if container_of_enum {
                "Annals stores each variant's fields as the payload and the name from `#[event(name = ...)]`"
            } else {
                "set the wire name with `#[event(name = ...)]`"
            };
            diagnostics.error_at(
                attr,
                format!("`#[serde({word} ...)]` is not supported on events: {hint}"),
            );
        }
    }
}

/// Adds serde, `Debug`, `Clone` and `PartialEq` derives unless the item
/// already derives them, ahead of the item's own attributes.
fn add_derives(attrs: &mut Vec<Attribute>) {
    let mut derived = Vec::new();
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("derive")) {
        let _ = attr.parse_nested_meta(|meta| {
            if let Some(last) = meta.path.segments.last() {
                derived.push(last.ident.to_string());
            }
            Ok(())
        });
    }
    let wanted = [
        ("Serialize", quote!(::annals::serde::Serialize)),
        ("Deserialize", quote!(::annals::serde::Deserialize)),
        ("Debug", quote!(::core::fmt::Debug)),
        ("Clone", quote!(::core::clone::Clone)),
        ("PartialEq", quote!(::core::cmp::PartialEq)),
        ("JsonSchema", quote!(::annals::schemars::JsonSchema)),
    ];
    let missing: Vec<&TokenStream> = wanted
        .iter()
        .filter(|(name, _)| !derived.iter().any(|d| d == name))
        .map(|(_, path)| path)
        .collect();
    if !missing.is_empty() {
        // First: the user's container attributes (`#[serde(default)]`, ...)
        // are helpers of these derives and must come after them.
        attrs.insert(0, syn::parse_quote!(#[derive(#(#missing),*)]));
    }
    attrs.push(syn::parse_quote!(#[serde(crate = "::annals::serde")]));
    attrs.push(syn::parse_quote!(#[schemars(crate = "::annals::schemars")]));
}

fn upcasters(upcasts: &[Upcast]) -> Vec<TokenStream> {
    upcasts
        .iter()
        .map(|upcast| {
            let from = upcast.from;
            match &upcast.kind {
                UpcastKind::Json(path) => quote_spanned! {path.span()=>
                    ::annals::__private::Upcaster::Json {
                        from: #from,
                        step: |value| ::annals::__private::upcast_result(#path(value)),
                    }
                },
                UpcastKind::Typed(path) => quote_spanned! {path.span()=>
                    ::annals::__private::Upcaster::Typed {
                        from: #from,
                        convert: |value| ::core::result::Result::Ok(#path(::annals::__private::decode_old(value)?)),
                    }
                },
            }
        })
        .collect()
}

/// The registration of one event type; `json_schema` is an expression of
/// type `fn() -> serde_json::Value`, `pii` one of type `&[PiiField]`.
fn descriptor(
    identity: &EventIdentity,
    rust_name: &str,
    json_schema: &TokenStream,
    pii: &TokenStream,
) -> TokenStream {
    let name = &identity.name;
    let version = identity.version;
    let froms = identity.upcasts.iter().map(|upcast| upcast.from);
    quote! {
        ::annals::__private::inventory::submit! {
            ::annals::__private::EventDescriptor {
                name: #name,
                version: #version,
                rust_type: ::core::concat!(::core::module_path!(), "::", #rust_name),
                upcasts_from: &[#(#froms),*],
                json_schema: #json_schema,
                pii: #pii,
            }
        }
    }
}

fn struct_impl(ident: &Ident, identity: &EventIdentity, pii_fields: &[PiiField]) -> TokenStream {
    let name = &identity.name;
    let version = identity.version;
    let upcasters = upcasters(&identity.upcasts);
    let json_schema = quote! {
        || ::annals::__private::event_schema::<#ident>(#name, #version)
    };
    let pii = pii::descriptor_entries(pii_fields);
    let descriptor = descriptor(identity, &ident.to_string(), &json_schema, &pii);
    let tags = (!identity.tags.is_empty()).then(|| {
        let values = tag_values(
            &identity.tags,
            |field| quote_spanned! {field.span()=> self.#field },
        );
        quote! {
            fn tags(&self) -> ::std::vec::Vec<::std::string::String> {
                ::std::vec![#(#values),*]
            }
        }
    });
    quote! {
        const _: () = {
            impl ::annals::__private::Event for #ident {
                const EVENT_TYPES: &'static [&'static str] = &[#name];

                #tags

                fn event_type(&self) -> &'static str {
                    #name
                }

                fn schema_version(&self) -> u32 {
                    #version
                }

                fn to_payload(&self) -> ::core::result::Result<::annals::__private::Payload, ::annals::__private::serde_json::Error> {
                    ::annals::__private::Payload::from_serialize(self)
                }

                fn from_payload(
                    event_type: &str,
                    schema_version: u32,
                    payload: &::annals::__private::Payload,
                ) -> ::core::result::Result<Self, ::annals::__private::DecodeError> {
                    if event_type != #name {
                        return ::core::result::Result::Err(::annals::__private::DecodeError::UnknownType);
                    }
                    if schema_version == #version {
                        return ::core::result::Result::Ok(payload.decode()?);
                    }
                    ::annals::__private::decode_versioned(
                        payload,
                        schema_version,
                        #version,
                        &[#(#upcasters),*],
                        ::annals::__private::decode_value,
                    )
                }
            }

            #descriptor
        };
    }
}

fn enum_impl(ident: &Ident, variants: &[VariantModel]) -> TokenStream {
    let names: Vec<&String> = variants.iter().map(|v| &v.identity.name).collect();
    let idents: Vec<&Ident> = variants.iter().map(|v| &v.ident).collect();
    let versions: Vec<u32> = variants.iter().map(|v| v.identity.version).collect();
    let decode_arms = variants.iter().map(|variant| {
        let name = &variant.identity.name;
        let version = variant.identity.version;
        let serde_name = variant.ident.to_string();
        let unit = variant.unit;
        let upcasters = upcasters(&variant.identity.upcasts);
        quote! {
            #name => {
                if schema_version == #version {
                    return ::annals::__private::decode_variant_payload(#serde_name, #unit, payload);
                }
                ::annals::__private::decode_versioned(
                    payload,
                    schema_version,
                    #version,
                    &[#(#upcasters),*],
                    |value| ::annals::__private::decode_variant_value(#serde_name, #unit, value),
                )
            }
        }
    });
    let descriptors = variants.iter().map(|variant| {
        let name = &variant.identity.name;
        let version = variant.identity.version;
        let serde_name = variant.ident.to_string();
        let unit = variant.unit;
        let json_schema = quote! {
            || ::annals::__private::variant_schema::<#ident>(#name, #version, #serde_name, #unit)
        };
        descriptor(
            &variant.identity,
            &format!("{ident}::{}", variant.ident),
            &json_schema,
            &pii::descriptor_entries(&variant.pii_fields),
        )
    });
    let tags = variants
        .iter()
        .any(|variant| !variant.identity.tags.is_empty())
        .then(|| {
            let arms = variants
                .iter()
                .filter(|variant| !variant.identity.tags.is_empty())
                .map(|variant| {
                    let variant_ident = &variant.ident;
                    let mut fields: Vec<&Ident> = Vec::new();
                    for tag in &variant.identity.tags {
                        if !fields.contains(&&tag.field) {
                            fields.push(&tag.field);
                        }
                    }
                    let values = tag_values(
                        &variant.identity.tags,
                        |field| quote_spanned! {field.span()=> *#field },
                    );
                    quote! {
                        Self::#variant_ident { #(#fields,)* .. } => ::std::vec![#(#values),*],
                    }
                });
            quote! {
                fn tags(&self) -> ::std::vec::Vec<::std::string::String> {
                    #[allow(unreachable_patterns)]
                    match self {
                        #(#arms)*
                        _ => ::std::vec::Vec::new(),
                    }
                }
            }
        });
    quote! {
        const _: () = {
            impl ::annals::__private::Event for #ident {
                const EVENT_TYPES: &'static [&'static str] = &[#(#names),*];

                #tags

                fn event_type(&self) -> &'static str {
                    match self {
                        #( Self::#idents { .. } => #names, )*
                    }
                }

                fn schema_version(&self) -> u32 {
                    match self {
                        #( Self::#idents { .. } => #versions, )*
                    }
                }

                fn to_payload(&self) -> ::core::result::Result<::annals::__private::Payload, ::annals::__private::serde_json::Error> {
                    ::annals::__private::variant_payload(self)
                }

                fn from_payload(
                    event_type: &str,
                    schema_version: u32,
                    payload: &::annals::__private::Payload,
                ) -> ::core::result::Result<Self, ::annals::__private::DecodeError> {
                    match event_type {
                        #(#decode_arms)*
                        _ => ::core::result::Result::Err(::annals::__private::DecodeError::UnknownType),
                    }
                }
            }

            #(#descriptors)*
        };
    }
}
