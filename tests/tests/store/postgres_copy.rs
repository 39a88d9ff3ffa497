//! `CopyRows` against a real PostgreSQL: every value type round-trips
//! through COPY's text format, and a failing COPY keeps nothing.

use annals::prelude::*;
use annals::projection::postgres_copy::CopyRows;
use annals::projection::sql_read_model::SqlValue;
use annals_tests::backends::fresh_postgres_store;
use chrono::{TimeZone, Utc};
use serde_json::json;
use sqlx::Row;

#[tokio::test]
async fn every_value_type_round_trips_through_copy() {
    let store = fresh_postgres_store().await;
    let pool = store.pool();
    sqlx::query(
        "CREATE TABLE copied (id uuid PRIMARY KEY, note text, n bigint, x double precision, \
         flag boolean, at timestamptz, doc jsonb, raw bytea)",
    )
    .execute(pool)
    .await
    .expect("create table");

    let id = uuid::Uuid::now_v7();
    let at = Utc
        .with_ymd_and_hms(2026, 11, 27, 16, 45, 42)
        .single()
        .expect("a time")
        + chrono::Duration::microseconds(123_456);
    let note = "tab\there, newline\nthere, back\\slash, cr\r, \\N, naïve";
    let mut rows = CopyRows::new(
        "copied",
        &["id", "note", "n", "x", "flag", "at", "doc", "raw"],
    )
    .expect("valid names");
    rows.push(&[
        id.into(),
        note.into(),
        (-42_i64).into(),
        SqlValue::Real(0.1),
        true.into(),
        at.into(),
        SqlValue::Json(json!({ "k": "v\tw", "list": [1, 2] })),
        SqlValue::Bytes(vec![0, 1, 0x5c, 0xff]),
    ])
    .expect("a full row");
    let empty = uuid::Uuid::now_v7();
    rows.push(&[
        empty.into(),
        None::<String>.into(),
        None::<i64>.into(),
        SqlValue::Null,
        None::<bool>.into(),
        None::<chrono::DateTime<Utc>>.into(),
        SqlValue::Null,
        SqlValue::Null,
    ])
    .expect("a row of NULLs");
    assert_eq!(rows.len(), 2);

    let mut db = pool.acquire().await.expect("connection");
    assert_eq!(rows.write(&mut db).await.expect("copy"), 2);
    assert!(rows.is_empty());
    assert_eq!(rows.write(&mut db).await.expect("nothing to copy"), 0);

    let row = sqlx::query("SELECT note, n, x, flag, at, doc, raw FROM copied WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("the full row");
    assert_eq!(row.get::<String, _>("note"), note);
    assert_eq!(row.get::<i64, _>("n"), -42);
    assert_eq!(row.get::<f64, _>("x"), 0.1);
    assert!(row.get::<bool, _>("flag"));
    assert_eq!(row.get::<chrono::DateTime<Utc>, _>("at"), at);
    assert_eq!(
        row.get::<serde_json::Value, _>("doc"),
        json!({ "k": "v\tw", "list": [1, 2] })
    );
    assert_eq!(row.get::<Vec<u8>, _>("raw"), vec![0, 1, 0x5c, 0xff]);

    let nulls: (Option<String>, Option<i64>, Option<bool>, Option<Vec<u8>>) =
        sqlx::query_as("SELECT note, n, flag, raw FROM copied WHERE id = $1")
            .bind(empty)
            .fetch_one(pool)
            .await
            .expect("the row of NULLs");
    assert_eq!(nulls, (None, None, None, None));
}

#[tokio::test]
async fn a_failing_copy_keeps_nothing_and_names_the_cause() {
    let store = fresh_postgres_store().await;
    let pool = store.pool();
    sqlx::query("CREATE TABLE unique_ids (id uuid PRIMARY KEY)")
        .execute(pool)
        .await
        .expect("create table");
    let id = uuid::Uuid::now_v7();
    let mut rows = CopyRows::new("unique_ids", &["id"]).expect("valid names");
    rows.push(&[uuid::Uuid::now_v7().into()]).expect("row");
    rows.push(&[id.into()]).expect("row");
    rows.push(&[id.into()]).expect("the same id again");

    let mut tx = pool.begin().await.expect("begin");
    let error = rows.write(&mut tx).await.expect_err("duplicate key");
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    assert!(
        format!("{error:?}").contains("unique_ids_pkey"),
        "{error:?}"
    );
    drop(tx);
    assert!(
        rows.is_empty(),
        "the rows were meant for the aborted transaction"
    );

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM unique_ids")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(count, 0);
}
