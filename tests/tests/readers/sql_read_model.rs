//! The portable SQL layer of read models on SQLite and PostgreSQL: every
//! column type round-trips, `None` of any type binds as a NULL the column
//! accepts, `$N` placeholders work on both backends, in any order, and rows
//! read into Rust tuples (`fetch_rows`, `fetch_values`) or fail naming the
//! column that did not fit.

use annals::projection::sql_read_model::{SqlConnection, SqlValue};
use annals::registry::ColumnType;
use annals_tests::backends::{RawAccess, TestStore};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;

const COLUMNS: [ColumnType; 9] = [
    ColumnType::Text,
    ColumnType::Text,
    ColumnType::Integer,
    ColumnType::Real,
    ColumnType::Boolean,
    ColumnType::Uuid,
    ColumnType::Timestamp,
    ColumnType::Json,
    ColumnType::Bytes,
];

async fn round_trip(db: &mut dyn SqlConnection, create: &str) {
    db.execute(create, &[]).await.expect("create");
    let at: DateTime<Utc> = Utc
        .with_ymd_and_hms(2026, 11, 27, 12, 30, 0)
        .single()
        .expect("time");
    let id = uuid::Uuid::now_v7();
    // Parameters out of order on purpose: `$2` comes first.
    db.execute(
        "INSERT INTO portable (id, t, i, r, b, u, ts, j, by) VALUES ($2, $1, $3, $4, $5, $6, $7, $8, $9)",
        &[
            "text, with 'quotes' and $1 inside".into(),
            "full".into(),
            42_i64.into(),
            2.5_f64.into(),
            true.into(),
            id.into(),
            at.into(),
            json!({ "k": [1, 2] }).into(),
            vec![0_u8, 255].into(),
        ],
    )
    .await
    .expect("insert values");
    db.execute(
        "INSERT INTO portable (id, t, i, r, b, u, ts, j, by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            "empty".into(),
            None::<String>.into(),
            None::<i64>.into(),
            None::<f64>.into(),
            None::<bool>.into(),
            None::<uuid::Uuid>.into(),
            None::<DateTime<Utc>>.into(),
            None::<serde_json::Value>.into(),
            None::<Vec<u8>>.into(),
        ],
    )
    .await
    .expect("insert typed NULLs");
    let rows = db
        .fetch_all(
            "SELECT id, t, i, r, b, u, ts, j, by FROM portable WHERE id = $1 OR id = $2 ORDER BY id",
            &["empty".into(), "full".into()],
            &COLUMNS,
        )
        .await
        .expect("select");
    assert_eq!(
        rows,
        [
            vec![
                SqlValue::Text("empty".into()),
                SqlValue::Null,
                SqlValue::Null,
                SqlValue::Null,
                SqlValue::Null,
                SqlValue::Null,
                SqlValue::Null,
                SqlValue::Null,
                SqlValue::Null,
            ],
            vec![
                SqlValue::Text("full".into()),
                SqlValue::Text("text, with 'quotes' and $1 inside".into()),
                SqlValue::Integer(42),
                SqlValue::Real(2.5),
                SqlValue::Boolean(true),
                SqlValue::Uuid(id),
                SqlValue::Timestamp(at),
                SqlValue::Json(json!({ "k": [1, 2] })),
                SqlValue::Bytes(vec![0, 255]),
            ],
        ]
    );
    typed_reads(db, id, at).await;
}

/// The same rows read into Rust types: `Option`s for the nullable columns,
/// and a NULL asked for as a plain type is an error naming the column, not
/// a row left out.
async fn typed_reads(db: &mut dyn SqlConnection, id: uuid::Uuid, at: DateTime<Utc>) {
    type Row = (
        String,
        Option<String>,
        Option<i64>,
        Option<f64>,
        Option<bool>,
        Option<uuid::Uuid>,
        Option<DateTime<Utc>>,
        Option<serde_json::Value>,
    );
    let rows: Vec<Row> = db
        .fetch_rows(
            "SELECT id, t, i, r, b, u, ts, j FROM portable WHERE id = $1 OR id = $2 ORDER BY id",
            &["empty".into(), "full".into()],
        )
        .await
        .expect("typed select");
    assert_eq!(
        rows,
        [
            ("empty".into(), None, None, None, None, None, None, None),
            (
                "full".into(),
                Some("text, with 'quotes' and $1 inside".into()),
                Some(42),
                Some(2.5),
                Some(true),
                Some(id),
                Some(at),
                Some(json!({ "k": [1, 2] })),
            ),
        ]
    );
    let bytes: Vec<Option<Vec<u8>>> = db
        .fetch_values("SELECT by FROM portable ORDER BY id", &[])
        .await
        .expect("one typed column");
    assert_eq!(bytes, [None, Some(vec![0, 255])]);

    let sql = "SELECT id, i FROM portable ORDER BY id";
    let refused = db.fetch_rows::<(String, i64)>(sql, &[]).await;
    match refused {
        Err(annals::Error::ReadModelRow {
            query,
            column,
            expected,
            found,
        }) => {
            assert_eq!(
                (query.as_str(), column, expected, found),
                (sql, 1, ColumnType::Integer, "NULL")
            );
        }
        other => panic!("expected ReadModelRow for the NULL in column 1, got {other:?}"),
    }
}

#[tokio::test]
async fn every_column_type_round_trips_on_sqlite() {
    let t = TestStore::sqlite().await;
    let RawAccess::Sqlite(pool) = &t.raw else {
        unreachable!("a SQLite store")
    };
    let mut connection = pool.acquire().await.expect("connection");
    let ddl = annals_codegen::read_model_ddl::create_table(annals_codegen::Dialect::Sqlite, &TABLE);
    round_trip(&mut *connection, ddl.trim_end().trim_end_matches(';')).await;
}

#[tokio::test]
async fn every_column_type_round_trips_on_postgres() {
    let t = TestStore::postgres().await;
    let RawAccess::Postgres(pool) = &t.raw else {
        unreachable!("a PostgreSQL store")
    };
    let mut connection = pool.acquire().await.expect("connection");
    let ddl =
        annals_codegen::read_model_ddl::create_table(annals_codegen::Dialect::Postgres, &TABLE);
    round_trip(&mut *connection, ddl.trim_end().trim_end_matches(';')).await;
}

/// The table, declared as a projection would, so its DDL is the generated one.
const TABLE: annals::registry::ReadModelTable = annals::registry::ReadModelTable {
    name: "portable",
    columns: &[
        column("id", ColumnType::Text, false),
        column("t", ColumnType::Text, true),
        column("i", ColumnType::Integer, true),
        column("r", ColumnType::Real, true),
        column("b", ColumnType::Boolean, true),
        column("u", ColumnType::Uuid, true),
        column("ts", ColumnType::Timestamp, true),
        column("j", ColumnType::Json, true),
        column("by", ColumnType::Bytes, true),
    ],
    primary_key: &["id"],
    indexes: &[],
};

const fn column(
    name: &'static str,
    column_type: ColumnType,
    nullable: bool,
) -> annals::registry::ReadModelColumn {
    annals::registry::ReadModelColumn {
        name,
        column_type,
        nullable,
    }
}
