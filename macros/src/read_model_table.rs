//! `#[projection(table(...))]`: a SQL read-model table a projection declares,
//! parsed and checked here (column types, key and index columns), emitted as
//! a `ReadModelTable` descriptor that `annals-codegen` turns into DDL.
//!
//! ```text
//! table(
//!     name = "iam_user_permissions",
//!     columns(tenant_id = "text", user_id = "text", permission = "text", granted_at = "timestamp?"),
//!     primary_key(tenant_id, user_id, permission),
//!     index(user_id),
//! )
//! ```

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Ident, LitStr};

use crate::diagnostics::Diagnostics;
use crate::options::{self, Site};

const SITE: Site = Site {
    macro_name: "projection",
    accepted: &["name", "columns", "primary_key", "index"],
    repeatable: &["index"],
};

/// The column types a read-model table may use, with the `ColumnType`
/// variant each maps to.
const COLUMN_TYPES: &[(&str, &str)] = &[
    ("text", "Text"),
    ("integer", "Integer"),
    ("real", "Real"),
    ("boolean", "Boolean"),
    ("uuid", "Uuid"),
    ("timestamp", "Timestamp"),
    ("json", "Json"),
    ("bytes", "Bytes"),
];

struct Column {
    name: Ident,
    kind: &'static str,
    nullable: bool,
}

/// One parsed `table(...)`.
pub(crate) struct TableModel {
    name: String,
    columns: Vec<Column>,
    primary_key: Vec<Ident>,
    indexes: Vec<Vec<Ident>>,
}

/// Parses the parenthesised content of one `table(...)` option. Problems are
/// recorded in `diagnostics`; `None` when the table cannot be emitted.
pub(crate) fn parse(
    meta: &ParseNestedMeta<'_>,
    diagnostics: &mut Diagnostics,
) -> Option<TableModel> {
    let span = meta.path.span();
    let content = match meta.input.parse::<proc_macro2::Group>() {
        Ok(group) if group.delimiter() == proc_macro2::Delimiter::Parenthesis => group.stream(),
        _ => {
            diagnostics.push(meta.error(
                "`table` takes a parenthesised list, like `table(name = \"users\", columns(id = \"text\"), primary_key(id))`",
            ));
            // The rest of the option is not read as further options.
            let _ = options::skip_value(meta.input);
            return None;
        }
    };
    let written = parse_table_options(content);
    check_table(written, span, diagnostics)
}

/// A `table(...)` as written, before the checks that span its options.
struct WrittenTable {
    name: Option<LitStr>,
    /// The columns whose type is known.
    columns: Vec<Column>,
    /// Every column named, whatever its type.
    declared: Vec<Ident>,
    primary_key: Vec<Ident>,
    /// `primary_key(...)` was written, even if empty (and reported).
    primary_key_given: bool,
    indexes: Vec<Vec<Ident>>,
    /// Problems found while reading: syntax, names, types, duplicates.
    problems: Diagnostics,
}

/// Reads the table's options into their typed values.
fn parse_table_options(content: proc_macro2::TokenStream) -> WrittenTable {
    let mut name: Option<LitStr> = None;
    let mut columns: Vec<Column> = Vec::new();
    let mut primary_key: Vec<Ident> = Vec::new();
    let mut primary_key_given = false;
    let mut indexes: Vec<Vec<Ident>> = Vec::new();
    let mut declared: Vec<Ident> = Vec::new();
    let mut column_errors: Vec<syn::Error> = Vec::new();
    let mut problems = Diagnostics::default();
    options::parse(content, SITE, &mut problems, |key, meta| {
        match key {
            "name" => {
                let literal = options::string(meta, key, "name = \"iam_user_permissions\"")?;
                if !is_sql_name(&literal.value()) {
                    column_errors.push(syn::Error::new(
                        literal.span(),
                        "a table name must be 1 to 63 lowercase letters, digits or underscores, starting with a letter or underscore",
                    ));
                }
                name = Some(literal);
            }
            "columns" => {
                meta.parse_nested_meta(|column| {
                    // A path is reported and read as its last name, so the
                    // column still counts as declared.
                    let ident = match column.path.get_ident() {
                        Some(ident) => ident.clone(),
                        None => {
                            column_errors.push(
                                column.error("a column is a plain name, like `user_id = \"text\"`"),
                            );
                            match column.path.segments.last() {
                                Some(segment) => segment.ident.clone(),
                                None => return options::skip_value(column.input),
                            }
                        }
                    };
                    let literal =
                        options::string(&column, &ident.to_string(), "user_id = \"text\"")?;
                    // A bad type is reported and the column still counts as
                    // declared, so key and index checks do not cascade.
                    match column_type(&literal) {
                        Ok((kind, nullable)) => columns.push(Column {
                            name: ident.clone(),
                            kind,
                            nullable,
                        }),
                        Err(error) => column_errors.push(error),
                    }
                    if declared.contains(&ident) {
                        column_errors.push(syn::Error::new(
                            ident.span(),
                            format!("duplicate column `{ident}`"),
                        ));
                    }
                    declared.push(ident);
                    Ok(())
                })?;
            }
            "primary_key" => {
                primary_key_given = true;
                primary_key = column_list(meta)?;
            }
            _ => indexes.push(column_list(meta)?),
        }
        Ok(())
    });
    for error in column_errors {
        problems.push(error);
    }
    WrittenTable {
        name,
        columns,
        declared,
        primary_key,
        primary_key_given,
        indexes,
        problems,
    }
}

/// Checks what spans the options (keys and indexes name declared columns,
/// keys are not nullable, the required options are there) and builds the
/// model; `None`, with the problems recorded, when the table is wrong.
fn check_table(
    written: WrittenTable,
    span: proc_macro2::Span,
    diagnostics: &mut Diagnostics,
) -> Option<TableModel> {
    let WrittenTable {
        name,
        columns,
        declared,
        primary_key,
        primary_key_given,
        indexes,
        mut problems,
    } = written;
    // With no columns declared, that is the one error: every key and index
    // column would be unknown too.
    if !declared.is_empty() {
        for ident in primary_key.iter().chain(indexes.iter().flatten()) {
            if !declared.contains(ident) {
                problems.error_at(
                    ident,
                    format!("`{ident}` is not one of this table's columns"),
                );
            }
        }
    }
    for ident in &primary_key {
        if let Some(column) = columns.iter().find(|c| c.name == *ident && c.nullable) {
            problems.error_at(
                ident,
                format!("primary key column `{}` cannot be nullable", column.name),
            );
        }
    }
    if name.is_none() {
        problems.push(syn::Error::new(span, "`table` needs `name = \"...\"`"));
    }
    if declared.is_empty() {
        problems.push(syn::Error::new(
            span,
            "`table` needs `columns(name = \"type\", ...)`",
        ));
    }
    if !primary_key_given {
        problems.push(syn::Error::new(
            span,
            "`table` needs `primary_key(...)`: read models are upserted by key",
        ));
    }
    if let Some(error) = problems.into_error() {
        diagnostics.push(error);
        return None;
    }
    Some(TableModel {
        name: name.map(|literal| literal.value()).unwrap_or_default(),
        columns,
        primary_key,
        indexes,
    })
}

/// `"text"`, `"uuid?"`, ...: the `ColumnType` variant and nullability.
fn column_type(literal: &LitStr) -> syn::Result<(&'static str, bool)> {
    let text = literal.value();
    let (base, nullable) = match text.strip_suffix('?') {
        Some(base) => (base, true),
        None => (text.as_str(), false),
    };
    COLUMN_TYPES
        .iter()
        .find(|(sql, _)| *sql == base)
        .map(|(_, variant)| (*variant, nullable))
        .ok_or_else(|| {
            syn::Error::new(
                literal.span(),
                format!(
                    "unknown column type {text:?}; expected one of {} (add `?` for a nullable column)",
                    COLUMN_TYPES
                        .iter()
                        .map(|(sql, _)| format!("\"{sql}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
}

fn column_list(meta: &ParseNestedMeta<'_>) -> syn::Result<Vec<Ident>> {
    let mut idents = Vec::new();
    // `primary_key()`: said plainly, rather than the parser's "unexpected
    // end of input".
    if let Ok(group) = meta.input.fork().parse::<proc_macro2::Group>()
        && group.stream().is_empty()
    {
        meta.input.parse::<proc_macro2::Group>()?;
        return Err(meta.error("name at least one column"));
    }
    meta.parse_nested_meta(|column| {
        let ident = column
            .path
            .get_ident()
            .cloned()
            .ok_or_else(|| column.error("expected a column name"))?;
        idents.push(ident);
        Ok(())
    })?;
    if idents.is_empty() {
        return Err(meta.error("name at least one column"));
    }
    Ok(idents)
}

fn is_sql_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The `ReadModelTable` descriptor expression of a parsed table.
pub(crate) fn descriptor(table: &TableModel) -> TokenStream {
    let name = &table.name;
    let columns = table.columns.iter().map(|column| {
        let column_name = column.name.to_string();
        let kind = Ident::new(column.kind, Span::call_site());
        let nullable = column.nullable;
        quote! {
            ::annals::__private::ReadModelColumn {
                name: #column_name,
                column_type: ::annals::__private::ColumnType::#kind,
                nullable: #nullable,
            }
        }
    });
    let key = table.primary_key.iter().map(ToString::to_string);
    let indexes = table.indexes.iter().map(|index| {
        let columns = index.iter().map(ToString::to_string);
        quote! { &[#(#columns),*] }
    });
    quote! {
        ::annals::__private::ReadModelTable {
            name: #name,
            columns: &[#(#columns),*],
            primary_key: &[#(#key),*],
            indexes: &[#(#indexes),*],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse_table(tokens: TokenStream) -> (Option<String>, String) {
        let mut diagnostics = Diagnostics::default();
        let mut emitted = None;
        let parser = syn::meta::parser(|meta| {
            emitted = parse(&meta, &mut diagnostics).map(|table| descriptor(&table).to_string());
            Ok(())
        });
        syn::parse::Parser::parse2(parser, tokens).expect("option syntax");
        let errors = diagnostics.emit(TokenStream::new()).to_string();
        (emitted, errors)
    }

    #[test]
    fn a_full_table_is_described() {
        let (emitted, errors) = parse_table(quote!(table(
            name = "user_permissions",
            columns(
                user_id = "text",
                permission = "text",
                granted_at = "timestamp?"
            ),
            primary_key(user_id, permission),
            index(permission),
        )));
        assert_eq!(errors, "");
        let emitted = emitted.expect("table");
        assert!(emitted.contains("ColumnType :: Timestamp"), "{emitted}");
        assert!(emitted.contains("nullable : true"), "{emitted}");
    }

    #[test]
    fn unknown_types_and_columns_are_named() {
        let (emitted, errors) = parse_table(quote!(table(
            name = "t",
            columns(id = "varchar", note = "text?"),
            primary_key(id, note),
            index(missing),
        )));
        assert!(emitted.is_none());
        assert!(
            errors.contains("unknown column type \\\"varchar\\\""),
            "{errors}"
        );
        assert!(
            errors.contains("`missing` is not one of this table's columns"),
            "{errors}"
        );
        assert!(
            errors.contains("primary key column `note` cannot be nullable"),
            "{errors}"
        );
    }

    #[test]
    fn a_table_without_a_key_is_refused() {
        let (_, errors) = parse_table(quote!(table(name = "t", columns(id = "text"))));
        assert!(errors.contains("needs `primary_key(...)`"), "{errors}");
    }
}
