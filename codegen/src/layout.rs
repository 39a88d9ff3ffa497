//! Where and how Annals' own tables are laid out: PostgreSQL schema, table
//! prefix and partitioning of the events table.

use std::fmt;

use crate::error::CodegenError;

/// How the PostgreSQL events table is partitioned.
///
/// PostgreSQL requires a partitioned table's unique constraints to contain
/// the partition key, so a partitioned layout keeps the log's two global
/// uniqueness rules (one event per stream version, one row per event id) in
/// a small side table, `{prefix}event_keys`, filled by a trigger in the
/// appending transaction. Its constraints carry the names the runtime
/// recognises, so version conflicts and duplicate ids are reported exactly
/// as on an unpartitioned table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Partitioning {
    /// One table (the default).
    #[default]
    None,
    /// `PARTITION BY HASH (tenant_id)` into this many partitions: a tenant's
    /// events share a partition; events without a tenant go to partition 0.
    ByTenant {
        /// The number of partitions (2 to 1024).
        partitions: u16,
    },
    /// `PARTITION BY HASH (stream_id)` into this many partitions: spreads
    /// writes and keeps each stream in one partition.
    ByStreamHash {
        /// The number of partitions (2 to 1024).
        partitions: u16,
    },
}

impl Partitioning {
    /// Parses `none`, `tenant:N` or `stream:N`.
    ///
    /// ```
    /// use annals_codegen::Partitioning;
    /// assert_eq!(
    ///     "stream:16".parse::<Partitioning>()?,
    ///     Partitioning::ByStreamHash { partitions: 16 }
    /// );
    /// assert!("tenant:1".parse::<Partitioning>().is_err());
    /// # Ok::<(), annals_codegen::CodegenError>(())
    /// ```
    fn parse(text: &str) -> Result<Self, CodegenError> {
        let invalid = |reason: String| CodegenError::InvalidOption {
            option: "partitioning",
            reason,
        };
        if text == "none" {
            return Ok(Partitioning::None);
        }
        let (kind, count) = text
            .split_once(':')
            .ok_or_else(|| invalid(format!("{text:?} is not `none`, `tenant:N` or `stream:N`")))?;
        let partitions = count
            .parse::<u16>()
            .ok()
            .filter(|n| (2..=1024).contains(n))
            .ok_or_else(|| {
                invalid(format!(
                    "{count:?} partitions: give a number from 2 to 1024"
                ))
            })?;
        match kind {
            "tenant" => Ok(Partitioning::ByTenant { partitions }),
            "stream" => Ok(Partitioning::ByStreamHash { partitions }),
            other => Err(invalid(format!(
                "unknown partition key {other:?}; expected `tenant` or `stream`"
            ))),
        }
    }

    /// The partition count, if partitioned.
    pub fn partitions(self) -> Option<u16> {
        match self {
            Partitioning::None => None,
            Partitioning::ByTenant { partitions } | Partitioning::ByStreamHash { partitions } => {
                Some(partitions)
            }
        }
    }

    /// The partition key column, if partitioned.
    pub fn key(self) -> Option<&'static str> {
        match self {
            Partitioning::None => None,
            Partitioning::ByTenant { .. } => Some("tenant_id"),
            Partitioning::ByStreamHash { .. } => Some("stream_id"),
        }
    }
}

impl std::str::FromStr for Partitioning {
    type Err = CodegenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Partitioning::parse(text)
    }
}

impl fmt::Display for Partitioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partitioning::None => f.write_str("none"),
            Partitioning::ByTenant { partitions } => write!(f, "tenant:{partitions}"),
            Partitioning::ByStreamHash { partitions } => write!(f, "stream:{partitions}"),
        }
    }
}

/// The layout of Annals' own tables. The default is what the runtime embeds
/// and applies on connect: no schema qualification, prefix `annals_`, no
/// partitioning.
///
/// ```
/// use annals_codegen::{Partitioning, StoreLayout};
/// let layout = StoreLayout::default()
///     .schema("iam")?
///     .partitioning(Partitioning::ByStreamHash { partitions: 8 });
/// assert_eq!(layout.table("events"), "iam.annals_events");
/// # Ok::<(), annals_codegen::CodegenError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLayout {
    schema: Option<String>,
    table_prefix: String,
    partitioning: Partitioning,
}

impl Default for StoreLayout {
    fn default() -> Self {
        StoreLayout {
            schema: None,
            table_prefix: DEFAULT_PREFIX.to_owned(),
            partitioning: Partitioning::None,
        }
    }
}

/// The prefix of Annals' tables unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "annals_";

impl StoreLayout {
    /// Qualifies every object with this PostgreSQL schema (created if
    /// missing). SQLite has no schemas and ignores it.
    pub fn schema(mut self, schema: &str) -> Result<Self, CodegenError> {
        check_identifier("schema name", schema, 63)?;
        self.schema = Some(schema.to_owned());
        Ok(self)
    }

    /// Starts every table, index, trigger and function name with `prefix`
    /// instead of `annals_`.
    pub fn table_prefix(mut self, prefix: &str) -> Result<Self, CodegenError> {
        // Leave room for the longest suffix (`events_no_truncate`, ...).
        check_identifier("table prefix", prefix, 32)?;
        self.table_prefix = prefix.to_owned();
        Ok(self)
    }

    /// Partitions the PostgreSQL events table. SQLite ignores it.
    pub fn partitioning(mut self, partitioning: Partitioning) -> Self {
        self.partitioning = partitioning;
        self
    }

    /// The configured partitioning.
    pub fn partitioning_scheme(&self) -> Partitioning {
        self.partitioning
    }

    /// The configured schema, if any.
    pub fn schema_name(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The configured table prefix.
    pub fn prefix(&self) -> &str {
        &self.table_prefix
    }

    /// Whether this is the layout the runtime embeds.
    pub fn is_default(&self) -> bool {
        *self == StoreLayout::default()
    }

    /// An object's unqualified name: `events` → `annals_events`.
    pub fn name(&self, object: &str) -> String {
        format!("{}{object}", self.table_prefix)
    }

    /// An object's name as DDL refers to it, schema-qualified when a schema
    /// is set: `events` → `iam.annals_events`.
    pub fn table(&self, object: &str) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}.{}{object}", self.table_prefix),
            None => self.name(object),
        }
    }

    /// A one-line description for generated headers.
    pub fn describe(&self) -> String {
        format!(
            "schema {}, table prefix {}, partitioning {}",
            self.schema.as_deref().unwrap_or("(search_path)"),
            self.table_prefix,
            self.partitioning
        )
    }
}

fn check_identifier(option: &'static str, value: &str, max: usize) -> Result<(), CodegenError> {
    let valid = !value.is_empty()
        && value.len() <= max
        && value.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(CodegenError::InvalidOption {
            option,
            reason: format!(
                "{value:?} must be 1 to {max} lowercase letters, digits or underscores, not starting with a digit"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_with_the_option_named() {
        let error = StoreLayout::default()
            .schema("Iam; DROP")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some(
                "invalid schema name: \"Iam; DROP\" must be 1 to 63 lowercase letters, digits or underscores, not starting with a digit"
            )
        );
        assert!(StoreLayout::default().table_prefix("").is_err());
        assert!(
            StoreLayout::default()
                .table_prefix("a".repeat(33).as_str())
                .is_err()
        );
    }

    #[test]
    fn partitioning_round_trips_through_text() {
        for scheme in [
            Partitioning::None,
            Partitioning::ByTenant { partitions: 4 },
            Partitioning::ByStreamHash { partitions: 1024 },
        ] {
            assert_eq!(
                scheme.to_string().parse::<Partitioning>().ok(),
                Some(scheme)
            );
        }
        for bad in ["stream", "stream:1", "stream:1025", "shard:4", "tenant:x"] {
            assert!(bad.parse::<Partitioning>().is_err(), "{bad}");
        }
    }
}
