//! `#[pii(subject = field)]` on the named fields of a struct event (or of an
//! enum event's variant, whose content is the payload): parse the
//! attributes into [`PiiField`]s (the JSON keys of the field and of its
//! subject, and the field's type), check them, strip them from the item, and
//! generate the descriptor entries the crypto-shredding store reads.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, Fields, Ident, LitStr, Type};

use crate::diagnostics::Diagnostics;
use crate::options::{self, Site};

const PII_SITE: Site = Site {
    macro_name: "pii",
    accepted: &["subject"],
    repeatable: &[],
};

/// One field marked `#[pii(subject = ...)]`.
pub(crate) struct PiiField {
    /// The field's JSON key.
    key: String,
    /// The JSON key of the field naming its data subject.
    subject_key: String,
    /// The field's type, whose `Redact` impl gives the redacted value.
    ty: Type,
}

impl PiiField {
    /// The field's JSON key (its name).
    pub(crate) fn key(&self) -> &str {
        &self.key
    }
}

/// A named field of the struct, as the checks need it.
struct FieldInfo {
    ident: Ident,
    key: String,
    pii: Option<(Attribute, Option<Ident>)>,
}

/// Takes the `#[pii]` attributes off a struct's (or variant's) fields and returns the
/// checked model. Errors (a tuple struct, a subject that is not a field or
/// is itself pii, a bad option) are recorded; the fields in error are left
/// out of the result.
pub(crate) fn take_struct_fields(
    fields: &mut Fields,
    diagnostics: &mut Diagnostics,
) -> Vec<PiiField> {
    let named = match fields {
        Fields::Named(named) => named,
        Fields::Unnamed(unnamed) => {
            for field in &mut unnamed.unnamed {
                for attr in take_pii_attrs(&mut field.attrs) {
                    diagnostics.error_at(
                        &attr,
                        "`#[pii]` goes on named fields: the field's JSON key locates it in the payload",
                    );
                }
            }
            return Vec::new();
        }
        Fields::Unit => return Vec::new(),
    };
    let mut infos = Vec::new();
    let mut types = Vec::new();
    for field in &mut named.named {
        let Some(ident) = field.ident.clone() else {
            continue;
        };
        let key = json_key(&field.attrs, &ident, diagnostics);
        let mut attrs = take_pii_attrs(&mut field.attrs).into_iter();
        let pii = attrs.next().map(|attr| {
            let subject = parse_subject(&attr, diagnostics);
            (attr, subject)
        });
        for duplicate in attrs {
            diagnostics.error_at(
                &duplicate,
                "duplicate `#[pii]` attribute on this field; keep one",
            );
        }
        infos.push(FieldInfo { ident, key, pii });
        types.push(field.ty.clone());
    }
    let mut model = Vec::new();
    for (info, ty) in infos.iter().zip(types) {
        let Some((attr, Some(subject))) = &info.pii else {
            continue;
        };
        match infos.iter().find(|other| other.ident == *subject) {
            None => diagnostics.error_at(
                subject,
                format!(
                    "`#[pii(subject = {subject})]`: this struct has no field `{subject}`; name the field that identifies the data subject"
                ),
            ),
            Some(_) if *subject == info.ident => diagnostics.error_at(
                attr,
                "a `#[pii]` field cannot be its own subject: the subject must stay readable to find its key",
            ),
            Some(other) if other.pii.is_some() => diagnostics.error_at(
                subject,
                format!(
                    "`#[pii(subject = {subject})]`: the subject field `{subject}` is itself `#[pii]`; the subject must stay readable to find its key"
                ),
            ),
            Some(other) => model.push(PiiField {
                key: info.key.clone(),
                subject_key: other.key.clone(),
                ty,
            }),
        }
    }
    model
}

/// The `&[PiiField]` expression of an event descriptor.
pub(crate) fn descriptor_entries(fields: &[PiiField]) -> TokenStream {
    let entries = fields.iter().map(|field| {
        let key = &field.key;
        let subject = &field.subject_key;
        let ty = &field.ty;
        let redacted = quote_spanned! {ty.span()=>
            ::annals::__private::redacted_value::<#ty>
        };
        quote! {
            ::annals::__private::PiiField {
                field: #key,
                subject: #subject,
                redacted: #redacted,
            }
        }
    });
    quote! { &[#(#entries),*] }
}

fn take_pii_attrs(attrs: &mut Vec<Attribute>) -> Vec<Attribute> {
    let mut taken = Vec::new();
    attrs.retain(|attr| {
        if attr.path().is_ident("pii") {
            taken.push(attr.clone());
            false
        } else {
            true
        }
    });
    taken
}

fn parse_subject(attr: &Attribute, diagnostics: &mut Diagnostics) -> Option<Ident> {
    let tokens = match &attr.meta {
        syn::Meta::List(list) => list.tokens.clone(),
        _ => {
            diagnostics.error_at(attr, "write `#[pii(subject = user_id)]`, naming the field that identifies the data subject");
            return None;
        }
    };
    let mut subject = None;
    let empty = tokens.is_empty();
    options::parse(tokens, PII_SITE, diagnostics, |key, meta| {
        let path = options::path(meta, key, "subject = user_id")?;
        match path.get_ident() {
            Some(ident) => subject = Some(ident.clone()),
            None => {
                return Err(syn::Error::new_spanned(
                    path,
                    "`subject` takes a field name of this struct, like `subject = user_id`",
                ));
            }
        }
        Ok(())
    });
    // Other mistakes (an unknown option) were reported by `options::parse`.
    if subject.is_none() && empty {
        diagnostics.error_at(
            attr,
            "`#[pii]` needs `subject = <field>`, naming the field that identifies the data subject",
        );
    }
    subject
}

/// The field's JSON key: its `#[serde(rename = "...")]`, or its name.
fn json_key(attrs: &[Attribute], ident: &Ident, diagnostics: &mut Diagnostics) -> String {
    let mut key = None;
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                if meta.input.peek(syn::Token![=]) {
                    let value: LitStr = meta.value()?.parse()?;
                    key = Some(value.value());
                } else {
                    diagnostics.error_at(
                        &meta.path,
                        "a field's `#[serde(rename(...))]` with separate names is not supported on events; use `rename = \"...\"`",
                    );
                    skip(&meta)?;
                }
            } else {
                skip(&meta)?;
            }
            Ok(())
        });
    }
    key.unwrap_or_else(|| unraw(ident))
}

/// Skips the value of a serde option this module does not read.
fn skip(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        let _: TokenStream = content.parse()?;
    }
    Ok(())
}

fn unraw(ident: &Ident) -> String {
    let text = ident.to_string();
    text.strip_prefix("r#")
        .map_or_else(|| text.clone(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(item: TokenStream) -> (Vec<PiiField>, Option<String>, syn::ItemStruct) {
        let mut item: syn::ItemStruct = syn::parse2(item).expect("a struct");
        let mut diagnostics = Diagnostics::default();
        let fields = take_struct_fields(&mut item.fields, &mut diagnostics);
        let error = diagnostics.into_error().map(|error| error.to_string());
        (fields, error, item)
    }

    #[test]
    fn keys_follow_serde_renames_and_attributes_are_stripped() {
        let (fields, error, item) = model(quote! {
            struct Registered {
                #[serde(rename = "userId")]
                user_id: String,
                #[pii(subject = user_id)]
                #[serde(rename = "mail", default)]
                email: String,
                #[pii(subject = user_id)]
                r#type: Option<String>,
            }
        });
        assert_eq!(error, None);
        let keys: Vec<(&str, &str)> = fields
            .iter()
            .map(|f| (f.key.as_str(), f.subject_key.as_str()))
            .collect();
        assert_eq!(keys, [("mail", "userId"), ("type", "userId")]);
        let printed = quote!(#item).to_string();
        assert!(!printed.contains("pii"), "{printed}");
    }

    #[test]
    fn a_missing_or_pii_subject_is_an_error() {
        let (_, error, _) = model(quote! {
            struct Registered { #[pii(subject = owner)] email: String }
        });
        assert!(error.is_some_and(|e| e.contains("no field `owner`")));
        let (_, error, _) = model(quote! {
            struct Registered {
                #[pii(subject = email)] name: String,
                #[pii(subject = id)] email: String,
                id: String,
            }
        });
        assert!(error.is_some_and(|e| e.contains("is itself `#[pii]`")));
    }
}
