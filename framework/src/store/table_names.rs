//! The names of Annals' tables in one database: `annals_events`,
//! `annals_snapshots`, ... by default, or with another prefix
//! (`table_prefix` on the store builders), so that several applications, or
//! an application and its tests, can share one schema or SQLite file.
//!
//! Every SQL statement of the backends, and every embedded migration, is
//! written with the default `annals_` prefix; [`TableNames::sql`] renames it
//! once per statement when another prefix is configured.

use std::borrow::Cow;
use std::sync::Arc;

use crate::error::{Error, Result};

/// The prefix the embedded migrations and statements are written with.
pub const DEFAULT_TABLE_PREFIX: &str = "annals_";

/// Whether `name` is 1 to `max_len` lowercase ASCII letters, digits or
/// underscores, not starting with a digit: safe to splice into SQL as an
/// unquoted identifier, and the same on every backend.
pub(crate) fn is_plain_identifier(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The table prefix of one store.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableNames {
    /// `None` for the default prefix (statements are used as written).
    prefix: Option<Arc<str>>,
}

impl TableNames {
    /// Checks a prefix: 1 to 32 lowercase letters, digits or underscores,
    /// not starting with a digit (it becomes part of unquoted identifiers).
    pub(crate) fn new(prefix: &str) -> Result<Self> {
        if !is_plain_identifier(prefix, 32) {
            return Err(Error::Config(format!(
                "table prefix {prefix:?} must be 1 to 32 lowercase letters, digits or underscores, not starting with a digit"
            )));
        }
        Ok(TableNames {
            prefix: (prefix != DEFAULT_TABLE_PREFIX).then(|| Arc::from(prefix)),
        })
    }

    /// The prefix in use.
    pub(crate) fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(DEFAULT_TABLE_PREFIX)
    }

    /// `text` with this store's prefix.
    pub(crate) fn rename(&self, text: &'static str) -> Cow<'static, str> {
        match &self.prefix {
            None => Cow::Borrowed(text),
            Some(prefix) => Cow::Owned(text.replace(DEFAULT_TABLE_PREFIX, prefix)),
        }
    }

    /// A statement for `sqlx::query` and friends, with this store's prefix.
    /// Only ever given `'static` statement text, never input.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn sql(&self, text: &'static str) -> sqlx::AssertSqlSafe<Cow<'static, str>> {
        sqlx::AssertSqlSafe(self.rename(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_prefix_borrows_and_others_rename() {
        let default = TableNames::new("annals_").expect("valid");
        assert!(matches!(
            default.rename("SELECT 1 FROM annals_events"),
            Cow::Borrowed(_)
        ));
        let custom = TableNames::new("iam_").expect("valid");
        assert_eq!(
            custom.rename("INSERT INTO annals_events SELECT * FROM annals_snapshots"),
            "INSERT INTO iam_events SELECT * FROM iam_snapshots"
        );
        assert_eq!(custom.prefix(), "iam_");
    }

    #[test]
    fn unsafe_prefixes_are_refused() {
        for bad in ["", "Iam_", "1x_", "x; DROP TABLE y", &"a".repeat(33)] {
            assert!(TableNames::new(bad).is_err(), "{bad:?}");
        }
    }
}
