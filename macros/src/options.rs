//! Parsing `key = value` and `key(...)` options of the macros into typed
//! values, reporting unknown, duplicate and mistyped options (all of them,
//! not just the first) with the span of the offending token.

use proc_macro2::{Span, TokenStream};

use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser};
use syn::{LitInt, LitStr, Token};

use crate::diagnostics::Diagnostics;

/// Where options are being parsed, for messages: the macro and the position.
#[derive(Clone, Copy)]
pub(crate) struct Site {
    /// `event`, `aggregate`, ...
    pub(crate) macro_name: &'static str,
    /// The keys accepted here.
    pub(crate) accepted: &'static [&'static str],
    /// Accepted keys that may appear more than once.
    pub(crate) repeatable: &'static [&'static str],
}

impl Site {
    fn expected(&self) -> String {
        match self.accepted {
            [] => "it takes no options here".to_owned(),
            [only] => format!("expected `{only}`"),
            keys => format!(
                "expected one of {}",
                keys.iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Parses comma-separated options, calling `on_option` for each accepted key
/// seen for the first time. Errors are recorded, and parsing goes on with the
/// next option.
pub(crate) fn parse(
    tokens: TokenStream,
    site: Site,
    diagnostics: &mut Diagnostics,
    mut on_option: impl FnMut(&str, &ParseNestedMeta<'_>) -> syn::Result<()>,
) {
    let mut seen: Vec<String> = Vec::new();
    let mut errors = Diagnostics::default();
    let parser = syn::meta::parser(|meta| {
        let key = meta.path.get_ident().map(ToString::to_string);
        let problem = match &key {
            None => Some(format!(
                "`{}` options are plain names; {}",
                site.macro_name,
                site.expected()
            )),
            Some(key) if !site.accepted.contains(&key.as_str()) => Some(format!(
                "unknown `{}` option `{key}`; {}",
                site.macro_name,
                site.expected()
            )),
            Some(key) if seen.contains(key) && !site.repeatable.contains(&key.as_str()) => {
                Some(format!("duplicate `{}` option `{key}`", site.macro_name))
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            errors.error_at(&meta.path, problem);
            // `annals::events(...)` for `events(...)`: reported, then read
            // as what it plainly means, so the option's absence does not
            // cause a second error.
            let meant = meta
                .path
                .segments
                .last()
                .map(|segment| segment.ident.to_string());
            match meant {
                Some(meant)
                    if key.is_none()
                        && site.accepted.contains(&meant.as_str())
                        && !seen.contains(&meant) =>
                {
                    seen.push(meant.clone());
                    if let Err(error) = on_option(&meant, &meta) {
                        errors.push(error);
                        return skip_value(meta.input);
                    }
                    return Ok(());
                }
                _ => return skip_value(meta.input),
            }
        }
        let key = key.unwrap_or_default();
        seen.push(key.clone());
        if let Err(error) = on_option(&key, &meta) {
            errors.push(error);
            return skip_value(meta.input);
        }
        Ok(())
    });
    if let Err(error) = parser.parse2(tokens) {
        errors.push(error);
    }
    if let Some(error) = errors.into_error() {
        diagnostics.push(error);
    }
}

/// Skips the rest of one option's tokens, up to the next top-level comma.
pub(crate) fn skip_value(input: ParseStream<'_>) -> syn::Result<()> {
    while !input.is_empty() && !input.peek(Token![,]) {
        input.parse::<proc_macro2::TokenTree>()?;
    }
    Ok(())
}

/// The value stream after `key =`, with a helpful error when `=` is missing.
fn value<'a>(meta: &ParseNestedMeta<'a>, key: &str, example: &str) -> syn::Result<ParseStream<'a>> {
    if !meta.input.peek(Token![=]) {
        return Err(meta.error(format!("`{key}` takes a value, like `{example}`")));
    }
    meta.value()
}

/// `key = "text"`.
pub(crate) fn string(meta: &ParseNestedMeta<'_>, key: &str, example: &str) -> syn::Result<LitStr> {
    let input = value(meta, key, example)?;
    input.parse::<LitStr>().map_err(|error| {
        syn::Error::new(
            error.span(),
            format!("`{key}` takes a string, like `{example}`"),
        )
    })
}

/// `key = 123` (or `key = -5`), within the range of `N`.
pub(crate) fn integer<N>(
    meta: &ParseNestedMeta<'_>,
    key: &str,
    example: &str,
) -> syn::Result<(N, Span)>
where
    N: std::str::FromStr,
    N::Err: std::fmt::Display,
{
    let input = value(meta, key, example)?;
    let negative: Option<Token![-]> = input.parse()?;
    let literal = input.parse::<LitInt>().map_err(|error| {
        syn::Error::new(
            error.span(),
            format!("`{key}` takes an integer, like `{example}`"),
        )
    })?;
    let digits = format!(
        "{}{}",
        if negative.is_some() { "-" } else { "" },
        literal.base10_digits()
    );
    let number = digits
        .parse::<N>()
        .map_err(|error| syn::Error::new(literal.span(), format!("`{key}` = {digits}: {error}")))?;
    Ok((number, literal.span()))
}

/// `key = some::path`.
pub(crate) fn path(meta: &ParseNestedMeta<'_>, key: &str, example: &str) -> syn::Result<syn::Path> {
    let input = value(meta, key, example)?;
    input.parse::<syn::Path>().map_err(|error| {
        syn::Error::new(
            error.span(),
            format!("`{key}` takes a path, like `{example}`"),
        )
    })
}

/// `key = "250ms"` / `"5s"` / `"2m"`, in milliseconds.
pub(crate) fn duration_millis(
    meta: &ParseNestedMeta<'_>,
    key: &str,
    example: &str,
) -> syn::Result<u64> {
    let literal = string(meta, key, example)?;
    parse_duration_millis(&literal.value()).ok_or_else(|| {
        syn::Error::new(
            literal.span(),
            format!(
                "`{key}` takes a duration such as \"250ms\", \"5s\" or \"2m\", not {:?}",
                literal.value()
            ),
        )
    })
}

fn parse_duration_millis(text: &str) -> Option<u64> {
    let (digits, factor) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1000)
    } else if let Some(m) = text.strip_suffix('m') {
        (m, 60_000)
    } else {
        return None;
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    const SITE: Site = Site {
        macro_name: "event",
        accepted: &["name", "version"],
        repeatable: &[],
    };

    fn run(tokens: TokenStream) -> (Vec<String>, Option<String>) {
        let mut diagnostics = Diagnostics::default();
        let mut keys = Vec::new();
        parse(tokens, SITE, &mut diagnostics, |key, meta| {
            match key {
                "name" => drop(string(meta, key, "name = \"x\"")?),
                _ => drop(integer::<u32>(meta, key, "version = 2")?),
            }
            keys.push(key.to_owned());
            Ok(())
        });
        let errors = diagnostics.emit(TokenStream::new());
        (keys, (!errors.is_empty()).then(|| errors.to_string()))
    }

    #[test]
    fn accepted_options_are_parsed() {
        let (keys, errors) = run(quote!(name = "a.b", version = 3));
        assert_eq!(keys, ["name", "version"]);
        assert_eq!(errors, None);
    }

    #[test]
    fn every_problem_is_reported_and_parsing_goes_on() {
        let (keys, errors) = run(quote!(
            nam = "a",
            version = "2",
            name = "ok",
            name = "again"
        ));
        assert_eq!(keys, ["name"]);
        let errors = errors.expect("errors");
        assert!(
            errors.contains("unknown `event` option `nam`; expected one of `name`, `version`"),
            "{errors}"
        );
        assert!(errors.contains("`version` takes an integer"), "{errors}");
        assert!(
            errors.contains("duplicate `event` option `name`"),
            "{errors}"
        );
    }

    #[test]
    fn out_of_range_integers_are_reported() {
        let (_, errors) = run(quote!(version = -1));
        assert!(errors.expect("error").contains("version` = -1"));
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration_millis("250ms"), Some(250));
        assert_eq!(parse_duration_millis("5s"), Some(5000));
        assert_eq!(parse_duration_millis("2m"), Some(120_000));
        assert_eq!(parse_duration_millis("5"), None);
        assert_eq!(parse_duration_millis("fast"), None);
    }
}
