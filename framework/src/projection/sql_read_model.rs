//! SQL read models written once for SQLite and PostgreSQL.
//!
//! A projection whose handlers take `&mut dyn SqlConnection` runs on
//! [`SqliteReadModel`](crate::projection::runner::SqliteReadModel) and on
//! [`PostgresReadModel`](crate::projection::runner::PostgresReadModel) alike
//! (and inline in either store's append): statements use `$1`, `$2`, ...
//! placeholders on both backends, and values are the portable
//! [`SqlValue`]s, stored with the column types `annals-codegen` uses for
//! `#[projection(table(...))]` (on SQLite: UUIDs, timestamps and JSON as
//! text, booleans as 0/1). The tables themselves come from the projection's
//! `table(...)` declarations.
//!
//! ```
//! use annals::prelude::*;
//! use annals::registry::ColumnType;
//! use annals::projection::sql_read_model::{SqlConnection, SqlValue};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let store = annals::store::SqliteEventStore::open(dir.path().join("doc.db")).await?;
//! let mut connection = store.pool().acquire().await.unwrap();
//! let db: &mut dyn SqlConnection = &mut *connection;
//! db.execute("CREATE TABLE grants (user_id TEXT NOT NULL, permission TEXT NOT NULL, PRIMARY KEY (user_id, permission))", &[]).await?;
//! db.execute(
//!     "INSERT INTO grants (user_id, permission) VALUES ($1, $2)",
//!     &["ada".into(), "users.read".into()],
//! ).await?;
//! let rows = db
//!     .fetch_all("SELECT permission FROM grants WHERE user_id = $1", &["ada".into()], &[ColumnType::Text])
//!     .await?;
//! assert_eq!(rows, [vec![SqlValue::Text("users.read".into())]]);
//! # Ok::<(), annals::Error>(())
//! # }).unwrap();
//! ```

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::registry::ColumnType;
use crate::store::row::failed;

/// A value bound to, or read from, a portable SQL statement.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// SQL `NULL`, as read back. Bound as a parameter it is a NULL of type
    /// text; for a NULL in a column of another type on PostgreSQL, bind
    /// [`SqlValue::TypedNull`] (what `None::<T>.into()` gives).
    Null,
    /// A NULL of a column type: PostgreSQL types every parameter, and a NULL
    /// meant for a `uuid` or `timestamptz` column must say so.
    TypedNull(ColumnType),
    /// Text.
    Text(String),
    /// A 64-bit integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// A boolean (0/1 on SQLite).
    Boolean(bool),
    /// A UUID (text on SQLite).
    Uuid(Uuid),
    /// A UTC timestamp (RFC 3339 text on SQLite).
    Timestamp(DateTime<Utc>),
    /// JSON (text on SQLite).
    Json(serde_json::Value),
    /// Bytes.
    Bytes(Vec<u8>),
}

impl SqlValue {
    /// The text, if this is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            SqlValue::Text(text) => Some(text),
            _ => None,
        }
    }

    /// The text, owned, if this is text.
    pub fn into_text(self) -> Option<String> {
        match self {
            SqlValue::Text(text) => Some(text),
            _ => None,
        }
    }

    /// The integer, if this is an integer.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            SqlValue::Integer(value) => Some(*value),
            _ => None,
        }
    }

    /// The boolean, if this is a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            SqlValue::Boolean(value) => Some(*value),
            _ => None,
        }
    }

    /// The timestamp, if this is a timestamp.
    pub fn as_timestamp(&self) -> Option<DateTime<Utc>> {
        match self {
            SqlValue::Timestamp(value) => Some(*value),
            _ => None,
        }
    }

    /// What kind of value this is, for errors: `NULL`, `text`, `integer`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            SqlValue::Null | SqlValue::TypedNull(_) => "NULL",
            SqlValue::Text(_) => "text",
            SqlValue::Integer(_) => "integer",
            SqlValue::Real(_) => "real",
            SqlValue::Boolean(_) => "boolean",
            SqlValue::Uuid(_) => "uuid",
            SqlValue::Timestamp(_) => "timestamp",
            SqlValue::Json(_) => "json",
            SqlValue::Bytes(_) => "bytes",
        }
    }
}

impl From<&str> for SqlValue {
    fn from(value: &str) -> Self {
        SqlValue::Text(value.to_owned())
    }
}

impl From<String> for SqlValue {
    fn from(value: String) -> Self {
        SqlValue::Text(value)
    }
}

impl From<&String> for SqlValue {
    fn from(value: &String) -> Self {
        SqlValue::Text(value.clone())
    }
}

impl From<i64> for SqlValue {
    fn from(value: i64) -> Self {
        SqlValue::Integer(value)
    }
}

impl From<bool> for SqlValue {
    fn from(value: bool) -> Self {
        SqlValue::Boolean(value)
    }
}

impl From<Uuid> for SqlValue {
    fn from(value: Uuid) -> Self {
        SqlValue::Uuid(value)
    }
}

impl From<DateTime<Utc>> for SqlValue {
    fn from(value: DateTime<Utc>) -> Self {
        SqlValue::Timestamp(value)
    }
}

impl From<serde_json::Value> for SqlValue {
    fn from(value: serde_json::Value) -> Self {
        SqlValue::Json(value)
    }
}

impl From<f64> for SqlValue {
    fn from(value: f64) -> Self {
        SqlValue::Real(value)
    }
}

impl From<Vec<u8>> for SqlValue {
    fn from(value: Vec<u8>) -> Self {
        SqlValue::Bytes(value)
    }
}

/// The column type of a Rust value, for the NULL that `None` binds as.
pub trait SqlColumnType {
    /// The portable column type.
    const COLUMN_TYPE: ColumnType;
}

macro_rules! column_types {
    ($($rust:ty => $column:ident),* $(,)?) => {
        $(impl SqlColumnType for $rust {
            const COLUMN_TYPE: ColumnType = ColumnType::$column;
        })*
    };
}

column_types! {
    &str => Text,
    String => Text,
    &String => Text,
    i64 => Integer,
    f64 => Real,
    bool => Boolean,
    Uuid => Uuid,
    DateTime<Utc> => Timestamp,
    serde_json::Value => Json,
    Vec<u8> => Bytes,
}

impl<T: Into<SqlValue> + SqlColumnType> From<Option<T>> for SqlValue {
    fn from(value: Option<T>) -> Self {
        value.map_or(SqlValue::TypedNull(T::COLUMN_TYPE), Into::into)
    }
}

/// A connection (inside the read model's transaction) that runs portable
/// statements: `$1`, `$2`, ... placeholders and [`SqlValue`] parameters on
/// either backend.
#[async_trait]
pub trait SqlConnection: Send {
    /// `"sqlite"` or `"postgres"`, for the rare statement that must differ.
    fn backend(&self) -> &'static str;

    /// Runs a statement; returns the number of rows it changed.
    async fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64>;

    /// Runs a query and reads every row as `columns` (one type per selected
    /// column; a NULL reads as [`SqlValue::Null`]).
    async fn fetch_all(
        &mut self,
        sql: &str,
        params: &[SqlValue],
        columns: &[ColumnType],
    ) -> Result<Vec<Vec<SqlValue>>>;

    /// Runs a query that selects one column, and reads it as `column`.
    async fn fetch_column(
        &mut self,
        sql: &str,
        params: &[SqlValue],
        column: ColumnType,
    ) -> Result<Vec<SqlValue>> {
        let rows = self.fetch_all(sql, params, &[column]).await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| row.into_iter().next())
            .collect())
    }
}

/// A Rust value a column reads into, for
/// `fetch_rows` and `fetch_values` of a [`SqlConnection`]: `String`, `i64`, `f64`,
/// `bool`, `Uuid`, `DateTime<Utc>`, `serde_json::Value`, `Vec<u8>`, and an
/// `Option` of each for a nullable column. Each is read as its
/// [`SqlColumnType`].
pub trait FromSqlValue: SqlColumnType + Sized {
    /// The value, or the column's value back when it held something else
    /// (a NULL, for a type that is not an `Option`).
    fn from_sql_value(value: SqlValue) -> std::result::Result<Self, SqlValue>;
}

macro_rules! from_sql_values {
    ($($rust:ty => $variant:ident),* $(,)?) => {
        $(impl FromSqlValue for $rust {
            fn from_sql_value(value: SqlValue) -> std::result::Result<Self, SqlValue> {
                match value {
                    SqlValue::$variant(value) => Ok(value),
                    other => Err(other),
                }
            }
        })*
    };
}

from_sql_values! {
    String => Text,
    i64 => Integer,
    f64 => Real,
    bool => Boolean,
    Uuid => Uuid,
    DateTime<Utc> => Timestamp,
    serde_json::Value => Json,
    Vec<u8> => Bytes,
}

impl<T: SqlColumnType> SqlColumnType for Option<T> {
    const COLUMN_TYPE: ColumnType = T::COLUMN_TYPE;
}

impl<T: FromSqlValue> FromSqlValue for Option<T> {
    fn from_sql_value(value: SqlValue) -> std::result::Result<Self, SqlValue> {
        match value {
            SqlValue::Null | SqlValue::TypedNull(_) => Ok(None),
            other => T::from_sql_value(other).map(Some),
        }
    }
}

/// A row read into a tuple of [`FromSqlValue`]s, one per selected column
/// (up to eight), by `fetch_rows` of a [`SqlConnection`].
pub trait FromSqlRow: Sized {
    /// The column types, in order.
    fn read_as() -> Vec<ColumnType>;

    /// The typed row, or the index, expected type and value of the first
    /// column that did not read.
    fn from_sql_row(row: Vec<SqlValue>)
    -> std::result::Result<Self, (usize, ColumnType, SqlValue)>;
}

macro_rules! from_sql_rows {
    ($(($($column:ident),+)),* $(,)?) => {
        $(impl<$($column: FromSqlValue),+> FromSqlRow for ($($column,)+) {
            fn read_as() -> Vec<ColumnType> {
                vec![$($column::COLUMN_TYPE),+]
            }

            // The last column's index step is never read.
            #[allow(unused_assignments)]
            fn from_sql_row(row: Vec<SqlValue>) -> std::result::Result<Self, (usize, ColumnType, SqlValue)> {
                let mut values = row.into_iter();
                let mut index = 0;
                Ok(($({
                    let value = values.next().unwrap_or(SqlValue::Null);
                    let typed = $column::from_sql_value(value)
                        .map_err(|value| (index, $column::COLUMN_TYPE, value))?;
                    index += 1;
                    typed
                },)+))
            }
        })*
    };
}

from_sql_rows! {
    (A),
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, F),
    (A, B, C, D, E, F, G),
    (A, B, C, D, E, F, G, H),
}

impl dyn SqlConnection + '_ {
    /// Runs a query and reads each row into the tuple `R`, whose element
    /// types say how each column reads: `Option<T>` for a nullable one.
    /// A column that holds something else is [`Error::ReadModelRow`],
    /// naming it, rather than a row silently left out.
    ///
    /// ```
    /// # use annals::projection::sql_read_model::SqlConnection;
    /// async fn tenants(db: &mut dyn SqlConnection) -> annals::Result<Vec<(String, Option<String>, i64)>> {
    ///     db.fetch_rows("SELECT tenant_id, name, users FROM tenants ORDER BY tenant_id", &[]).await
    /// }
    /// ```
    pub async fn fetch_rows<R: FromSqlRow>(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<R>> {
        let rows = self.fetch_all(sql, params, &R::read_as()).await?;
        rows.into_iter()
            .map(|row| {
                R::from_sql_row(row).map_err(|(column, expected, found)| Error::ReadModelRow {
                    query: sql.to_owned(),
                    column,
                    expected,
                    found: found.kind(),
                })
            })
            .collect()
    }

    /// Runs a query that selects one column and reads it as `T`, like
    /// `fetch_rows`.
    ///
    /// ```
    /// # use annals::projection::sql_read_model::SqlConnection;
    /// async fn permissions(db: &mut dyn SqlConnection, user: &str) -> annals::Result<Vec<String>> {
    ///     db.fetch_values("SELECT permission FROM grants WHERE user_id = $1", &[user.into()]).await
    /// }
    /// ```
    pub async fn fetch_values<T: FromSqlValue>(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<T>> {
        let rows: Vec<(T,)> = self.fetch_rows(sql, params).await?;
        Ok(rows.into_iter().map(|(value,)| value).collect())
    }
}

/// Every row read as `columns`, by a backend's column decoder.
fn decode_rows<R>(
    rows: &[R],
    columns: &[ColumnType],
    column: impl Fn(&R, usize, ColumnType) -> Result<SqlValue>,
) -> Result<Vec<Vec<SqlValue>>> {
    rows.iter()
        .map(|row| {
            columns
                .iter()
                .enumerate()
                .map(|(index, column_type)| column(row, index, *column_type))
                .collect()
        })
        .collect()
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use sqlx::sqlite::{SqliteArguments, SqliteRow};
    use sqlx::{Arguments, Row, SqliteConnection};

    use super::*;

    /// `$1` → `?1` outside quoted text: SQLite's numbered parameters.
    fn numbered(sql: &str) -> String {
        let mut out = String::with_capacity(sql.len());
        let mut quote: Option<char> = None;
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            match (quote, c) {
                (None, '\'' | '"') => quote = Some(c),
                (Some(open), _) if c == open => quote = None,
                (None, '$') if chars.peek().is_some_and(char::is_ascii_digit) => {
                    out.push('?');
                    continue;
                }
                _ => {}
            }
            out.push(c);
        }
        out
    }

    fn arguments(params: &[SqlValue]) -> Result<SqliteArguments> {
        let mut arguments = SqliteArguments::default();
        for param in params {
            let added = match param {
                // SQLite columns take a NULL of any type.
                SqlValue::Null | SqlValue::TypedNull(_) => arguments.add(Option::<String>::None),
                SqlValue::Text(text) => arguments.add(text.clone()),
                SqlValue::Integer(value) => arguments.add(*value),
                SqlValue::Real(value) => arguments.add(*value),
                SqlValue::Boolean(value) => arguments.add(i64::from(*value)),
                SqlValue::Uuid(value) => arguments.add(value.to_string()),
                SqlValue::Timestamp(value) => arguments.add(value.to_rfc3339()),
                SqlValue::Json(value) => arguments.add(value.to_string()),
                SqlValue::Bytes(value) => arguments.add(value.clone()),
            };
            added.map_err(|error| Error::Backend {
                backend: "sqlite",
                operation: "bind read-model parameter",
                source: error,
            })?;
        }
        Ok(arguments)
    }

    fn column(row: &SqliteRow, index: usize, column_type: ColumnType) -> Result<SqlValue> {
        let bad = |error: String| Error::Backend {
            backend: "sqlite",
            operation: "read read-model row",
            source: format!("column {index}: {error}").into(),
        };
        let text = |row: &SqliteRow| -> Result<Option<String>> {
            row.try_get::<Option<String>, _>(index)
                .map_err(|error| bad(error.to_string()))
        };
        Ok(match column_type {
            ColumnType::Text => text(row)?.map_or(SqlValue::Null, SqlValue::Text),
            ColumnType::Integer => row
                .try_get::<Option<i64>, _>(index)
                .map_err(|error| bad(error.to_string()))?
                .map_or(SqlValue::Null, SqlValue::Integer),
            ColumnType::Real => row
                .try_get::<Option<f64>, _>(index)
                .map_err(|error| bad(error.to_string()))?
                .map_or(SqlValue::Null, SqlValue::Real),
            ColumnType::Boolean => row
                .try_get::<Option<i64>, _>(index)
                .map_err(|error| bad(error.to_string()))?
                .map_or(SqlValue::Null, |value| SqlValue::Boolean(value != 0)),
            ColumnType::Uuid => match text(row)? {
                None => SqlValue::Null,
                Some(text) => SqlValue::Uuid(
                    Uuid::parse_str(&text).map_err(|error| bad(format!("{text:?}: {error}")))?,
                ),
            },
            ColumnType::Timestamp => match text(row)? {
                None => SqlValue::Null,
                Some(text) => SqlValue::Timestamp(
                    DateTime::parse_from_rfc3339(&text)
                        .map_err(|error| bad(format!("{text:?}: {error}")))?
                        .with_timezone(&Utc),
                ),
            },
            ColumnType::Json => match text(row)? {
                None => SqlValue::Null,
                Some(text) => SqlValue::Json(
                    serde_json::from_str(&text).map_err(|error| bad(error.to_string()))?,
                ),
            },
            ColumnType::Bytes => row
                .try_get::<Option<Vec<u8>>, _>(index)
                .map_err(|error| bad(error.to_string()))?
                .map_or(SqlValue::Null, SqlValue::Bytes),
        })
    }

    #[async_trait]
    impl SqlConnection for SqliteConnection {
        fn backend(&self) -> &'static str {
            "sqlite"
        }

        async fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64> {
            let sql = numbered(sql);
            let result = sqlx::query_with(sqlx::AssertSqlSafe(sql), arguments(params)?)
                .execute(&mut *self)
                .await
                .map_err(failed("sqlite", "read-model statement"))?;
            Ok(result.rows_affected())
        }

        async fn fetch_all(
            &mut self,
            sql: &str,
            params: &[SqlValue],
            columns: &[ColumnType],
        ) -> Result<Vec<Vec<SqlValue>>> {
            let sql = numbered(sql);
            let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql), arguments(params)?)
                .fetch_all(&mut *self)
                .await
                .map_err(failed("sqlite", "read-model query"))?;
            decode_rows(&rows, columns, column)
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn placeholders_are_numbered_outside_quotes() {
            assert_eq!(
                super::numbered("SELECT '$1', \"$2\" FROM t WHERE a = $1 AND b = $12"),
                "SELECT '$1', \"$2\" FROM t WHERE a = ?1 AND b = ?12"
            );
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use sqlx::postgres::{PgArguments, PgRow};
    use sqlx::{Arguments, PgConnection, Row};

    use super::*;

    fn arguments(params: &[SqlValue]) -> Result<PgArguments> {
        let mut arguments = PgArguments::default();
        for param in params {
            let added = match param {
                SqlValue::Null | SqlValue::TypedNull(ColumnType::Text) => {
                    arguments.add(Option::<String>::None)
                }
                SqlValue::TypedNull(ColumnType::Integer) => arguments.add(Option::<i64>::None),
                SqlValue::TypedNull(ColumnType::Real) => arguments.add(Option::<f64>::None),
                SqlValue::TypedNull(ColumnType::Boolean) => arguments.add(Option::<bool>::None),
                SqlValue::TypedNull(ColumnType::Uuid) => arguments.add(Option::<Uuid>::None),
                SqlValue::TypedNull(ColumnType::Timestamp) => {
                    arguments.add(Option::<DateTime<Utc>>::None)
                }
                SqlValue::TypedNull(ColumnType::Json) => {
                    arguments.add(Option::<sqlx::types::Json<serde_json::Value>>::None)
                }
                SqlValue::TypedNull(ColumnType::Bytes) => arguments.add(Option::<Vec<u8>>::None),
                SqlValue::Text(text) => arguments.add(text.clone()),
                SqlValue::Integer(value) => arguments.add(*value),
                SqlValue::Real(value) => arguments.add(*value),
                SqlValue::Boolean(value) => arguments.add(*value),
                SqlValue::Uuid(value) => arguments.add(*value),
                SqlValue::Timestamp(value) => arguments.add(*value),
                SqlValue::Json(value) => arguments.add(sqlx::types::Json(value.clone())),
                SqlValue::Bytes(value) => arguments.add(value.clone()),
            };
            added.map_err(|error| Error::Backend {
                backend: "postgres",
                operation: "bind read-model parameter",
                source: error,
            })?;
        }
        Ok(arguments)
    }

    fn column(row: &PgRow, index: usize, column_type: ColumnType) -> Result<SqlValue> {
        fn get<'r, T>(row: &'r PgRow, index: usize) -> Result<Option<T>>
        where
            T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
        {
            row.try_get::<Option<T>, _>(index)
                .map_err(|error| Error::Backend {
                    backend: "postgres",
                    operation: "read read-model row",
                    source: format!("column {index}: {error}").into(),
                })
        }
        Ok(match column_type {
            ColumnType::Text => get::<String>(row, index)?.map_or(SqlValue::Null, SqlValue::Text),
            ColumnType::Integer => {
                get::<i64>(row, index)?.map_or(SqlValue::Null, SqlValue::Integer)
            }
            ColumnType::Real => get::<f64>(row, index)?.map_or(SqlValue::Null, SqlValue::Real),
            ColumnType::Boolean => {
                get::<bool>(row, index)?.map_or(SqlValue::Null, SqlValue::Boolean)
            }
            ColumnType::Uuid => get::<Uuid>(row, index)?.map_or(SqlValue::Null, SqlValue::Uuid),
            ColumnType::Timestamp => {
                get::<DateTime<Utc>>(row, index)?.map_or(SqlValue::Null, SqlValue::Timestamp)
            }
            ColumnType::Json => get::<sqlx::types::Json<serde_json::Value>>(row, index)?
                .map_or(SqlValue::Null, |json| SqlValue::Json(json.0)),
            ColumnType::Bytes => {
                get::<Vec<u8>>(row, index)?.map_or(SqlValue::Null, SqlValue::Bytes)
            }
        })
    }

    #[async_trait]
    impl SqlConnection for PgConnection {
        fn backend(&self) -> &'static str {
            "postgres"
        }

        async fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64> {
            let result = sqlx::query_with(sqlx::AssertSqlSafe(sql.to_owned()), arguments(params)?)
                .execute(&mut *self)
                .await
                .map_err(failed("postgres", "read-model statement"))?;
            Ok(result.rows_affected())
        }

        async fn fetch_all(
            &mut self,
            sql: &str,
            params: &[SqlValue],
            columns: &[ColumnType],
        ) -> Result<Vec<Vec<SqlValue>>> {
            let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql.to_owned()), arguments(params)?)
                .fetch_all(&mut *self)
                .await
                .map_err(failed("postgres", "read-model query"))?;
            decode_rows(&rows, columns, column)
        }
    }
}

/// A projection context a SQLite read model can hand out from its
/// transaction: the connection itself, or `dyn SqlConnection`.
#[cfg(feature = "sqlite")]
pub trait SqliteContext: Send {
    /// The context over the transaction's connection.
    fn from_sqlite(connection: &mut sqlx::SqliteConnection) -> &mut Self;
}

#[cfg(feature = "sqlite")]
impl SqliteContext for sqlx::SqliteConnection {
    fn from_sqlite(connection: &mut sqlx::SqliteConnection) -> &mut Self {
        connection
    }
}

#[cfg(feature = "sqlite")]
impl SqliteContext for dyn SqlConnection {
    fn from_sqlite(connection: &mut sqlx::SqliteConnection) -> &mut Self {
        connection
    }
}

/// A projection context a PostgreSQL read model can hand out from its
/// transaction: the connection itself, or `dyn SqlConnection`.
#[cfg(feature = "postgres")]
pub trait PostgresContext: Send {
    /// The context over the transaction's connection.
    fn from_postgres(connection: &mut sqlx::PgConnection) -> &mut Self;
}

#[cfg(feature = "postgres")]
impl PostgresContext for sqlx::PgConnection {
    fn from_postgres(connection: &mut sqlx::PgConnection) -> &mut Self {
        connection
    }
}

#[cfg(feature = "postgres")]
impl PostgresContext for dyn SqlConnection {
    fn from_postgres(connection: &mut sqlx::PgConnection) -> &mut Self {
        connection
    }
}
