//! Bulk writes into PostgreSQL read models with `COPY ... FROM STDIN`: the
//! fastest way PostgreSQL has to take many new rows, for projections that
//! only insert (audit trails, per-event rows) and for rebuilds.
//!
//! Rows are encoded into COPY's text format as they are pushed (escaping
//! tabs, newlines and backslashes; `\N` for NULL) and sent in one `COPY`
//! per [`CopyRows::write`], typically from a projection's `flush` so the
//! rows commit with the batch's checkpoint. `COPY` cannot update or skip a
//! row: a row that breaks a constraint fails the whole `COPY`, and with it
//! the projection's batch (nothing of it is kept).

use std::fmt::Write as _;

use sqlx::PgConnection;

use crate::error::{Error, Result};
use crate::projection::sql_read_model::SqlValue;
use crate::store::table_names::is_plain_identifier;

/// Largest piece of COPY data sent in one message.
const SEND_CHUNK: usize = 1 << 20;

/// Rows waiting to be copied into one table.
///
/// ```no_run
/// use annals::projection::postgres_copy::CopyRows;
/// use annals::projection::sql_read_model::SqlValue;
///
/// # async fn run(db: &mut sqlx::PgConnection) -> annals::Result<()> {
/// let mut rows = CopyRows::new("audit_lines", &["event_id", "actor", "note"])?;
/// rows.push(&[uuid::Uuid::now_v7().into(), "ada".into(), None::<String>.into()])?;
/// rows.push(&[uuid::Uuid::now_v7().into(), "bob".into(), "tab\there".into()])?;
/// assert_eq!(rows.write(db).await?, 2);
/// assert!(rows.is_empty(), "written rows are cleared");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CopyRows {
    statement: String,
    table: String,
    columns: usize,
    data: String,
    rows: u64,
}

impl CopyRows {
    /// Rows for `table` (optionally `schema.table`) with these `columns`,
    /// each a lowercase SQL identifier (letters, digits, underscores).
    pub fn new(table: &str, columns: &[&str]) -> Result<Self> {
        for part in table.split('.') {
            check_identifier("copy table", table, part)?;
        }
        if table.split('.').count() > 2 {
            return Err(Error::invalid(
                "copy table",
                format!("{table:?} must be `table` or `schema.table`"),
            ));
        }
        if columns.is_empty() {
            return Err(Error::invalid(
                "copy columns",
                format!("a COPY into {table} needs at least one column"),
            ));
        }
        for column in columns {
            check_identifier("copy column", column, column)?;
        }
        Ok(CopyRows {
            statement: format!("COPY {table} ({}) FROM STDIN", columns.join(", ")),
            table: table.to_owned(),
            columns: columns.len(),
            data: String::new(),
            rows: 0,
        })
    }

    /// Adds one row, a value per column in order.
    pub fn push(&mut self, row: &[SqlValue]) -> Result<()> {
        if row.len() != self.columns {
            return Err(Error::invalid(
                "copy row",
                format!(
                    "a row for {} has {} values, but the COPY names {} columns",
                    self.table,
                    row.len(),
                    self.columns
                ),
            ));
        }
        for (index, value) in row.iter().enumerate() {
            if index > 0 {
                self.data.push('\t');
            }
            encode(&mut self.data, value);
        }
        self.data.push('\n');
        self.rows += 1;
        Ok(())
    }

    /// Rows pushed and not yet written.
    pub fn len(&self) -> u64 {
        self.rows
    }

    /// Whether no rows wait.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Copies the waiting rows on `db` (inside its transaction, if one is
    /// open) and clears them; returns the number of rows written. Nothing is
    /// sent when no rows wait. On error the rows are cleared too: the
    /// transaction they were meant for is aborted.
    pub async fn write(&mut self, db: &mut PgConnection) -> Result<u64> {
        if self.is_empty() {
            return Ok(0);
        }
        let data = std::mem::take(&mut self.data);
        self.rows = 0;
        let failed = |error: sqlx::Error| Error::Backend {
            backend: "postgres",
            operation: "copy read-model rows",
            source: Box::new(error),
        };
        let mut copy = db.copy_in_raw(&self.statement).await.map_err(failed)?;
        for chunk in data.as_bytes().chunks(SEND_CHUNK) {
            if let Err(error) = copy.send(chunk).await {
                // Abort so the connection is usable (for the rollback).
                let _ = copy.abort("annals: sending COPY data failed").await;
                return Err(failed(error));
            }
        }
        copy.finish().await.map_err(failed)
    }
}

fn check_identifier(field: &'static str, whole: &str, part: &str) -> Result<()> {
    if is_plain_identifier(part, 63) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "{whole:?} is not a plain SQL identifier (1 to 63 lowercase letters, digits or underscores, not starting with a digit)"
            ),
        ))
    }
}

/// One value in COPY's text format.
fn encode(out: &mut String, value: &SqlValue) {
    match value {
        SqlValue::Null | SqlValue::TypedNull(_) => out.push_str("\\N"),
        SqlValue::Text(text) => escape(out, text),
        SqlValue::Integer(number) => {
            let _ = write!(out, "{number}");
        }
        SqlValue::Real(number) if number.is_nan() => out.push_str("NaN"),
        SqlValue::Real(number) if number.is_infinite() => {
            out.push_str(if *number > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            });
        }
        SqlValue::Real(number) => {
            let _ = write!(out, "{number:?}");
        }
        SqlValue::Boolean(flag) => out.push(if *flag { 't' } else { 'f' }),
        SqlValue::Uuid(id) => {
            let _ = write!(out, "{id}");
        }
        SqlValue::Timestamp(at) => {
            out.push_str(&at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
        }
        SqlValue::Json(json) => escape(out, &json.to_string()),
        SqlValue::Bytes(bytes) => {
            // bytea's hex input `\x...`, its backslash escaped for COPY.
            out.push_str("\\\\x");
            for byte in bytes {
                let _ = write!(out, "{byte:02x}");
            }
        }
    }
}

fn escape(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            other => out.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(values: &[SqlValue]) -> String {
        let mut rows = CopyRows::new("t", &["a", "b", "c"][..values.len()]).expect("valid");
        rows.push(values).expect("right width");
        rows.data
    }

    #[test]
    fn values_are_escaped_for_the_text_format() {
        assert_eq!(
            line(&["a\tb\nc\\d\re".into(), SqlValue::Null, 7_i64.into()]),
            "a\\tb\\nc\\\\d\\re\t\\N\t7\n"
        );
        assert_eq!(
            line(&[
                SqlValue::Bytes(vec![0, 255]),
                true.into(),
                SqlValue::Real(f64::NEG_INFINITY)
            ]),
            "\\\\x00ff\tt\t-Infinity\n"
        );
    }

    #[test]
    fn bad_names_and_rows_are_refused_naming_them() {
        let error = CopyRows::new("lines; drop table x", &["a"]).expect_err("not an identifier");
        assert!(error.to_string().contains("lines; drop table x"), "{error}");
        let error = CopyRows::new("lines", &["A"]).expect_err("uppercase");
        assert!(error.to_string().contains("\"A\""), "{error}");
        let mut rows = CopyRows::new("app.lines", &["a", "b"]).expect("schema-qualified");
        let error = rows.push(&["only one".into()]).expect_err("too few values");
        assert!(error.to_string().contains("1 values"), "{error}");
        assert!(rows.is_empty());
    }
}
