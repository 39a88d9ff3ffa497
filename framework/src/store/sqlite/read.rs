//! Reading events: decoding rows by column position, and the query filters.

use chrono::DateTime;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::error::Result;
use crate::event::envelope::RecordedEvent;
use crate::store::row::{RowIdentity, StoredRow, tags_from_json, to_i64};
use crate::store::table_names::TableNames;
use crate::store::{EventCriteria, EventQuery};

use super::{SqliteEventStore, failed};

impl SqliteEventStore {
    pub(super) async fn fetch_events(
        &self,
        query: sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments>,
        operation: &'static str,
    ) -> Result<Vec<RecordedEvent>> {
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(failed(operation))?;
        rows.iter().map(decode_row).collect()
    }
}

/// Column `index` of a `select_events!` row (`name` for the error).
pub(super) fn column<'r, T>(
    row: &'r SqliteRow,
    identity: &RowIdentity,
    index: usize,
    name: &str,
) -> Result<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(index)
        .map_err(|error| identity.corrupt(format!("column `{name}` is unreadable: {error}")))
}

pub(super) fn decode_row(row: &SqliteRow) -> Result<RecordedEvent> {
    let unreadable = RowIdentity::unreadable();
    let identity = RowIdentity {
        stream_id: column(row, &unreadable, 3, "stream_id")?,
        version: column(row, &unreadable, 4, "version")?,
        event_type: column(row, &unreadable, 5, "event_type")?,
    };
    let recorded_at: i64 = column(row, &identity, 14, "recorded_at")?;
    let recorded_at = DateTime::from_timestamp_micros(recorded_at)
        .ok_or_else(|| identity.corrupt(format!("recorded_at {recorded_at} is out of range")))?;
    let tags: Option<String> = column(row, &identity, 15, "tags")?;
    let tags = tags_from_json(&identity, tags.as_deref())?;
    StoredRow {
        commit: column(row, &identity, 1, "commit_id")?,
        position: column(row, &identity, 0, "position")?,
        event_id: column(row, &identity, 2, "event_id")?,
        schema_version: column(row, &identity, 6, "schema_version")?,
        payload: column(row, &identity, 7, "payload")?,
        payload_checked: false,
        tenant_id: column(row, &identity, 8, "tenant_id")?,
        correlation_id: column(row, &identity, 9, "correlation_id")?,
        causation_id: column(row, &identity, 10, "causation_id")?,
        actor: column(row, &identity, 11, "actor")?,
        trace_context: column(row, &identity, 12, "trace_context")?,
        headers: Some(column(row, &identity, 13, "headers")?),
        recorded_at,
        tags,
        identity,
    }
    .into_recorded()
}

/// Where a query's page starts, in its order (see [`EventQuery`]): the
/// keyset its index continues from. Shared by `query` and `count`, as
/// [`push_filters`] is, so they always agree.
pub(super) fn push_after(sql: &mut QueryBuilder<Sqlite>, query: &EventQuery) {
    match (query.in_recorded_order(), query.after.recorded_at) {
        (true, Some(at)) => sql
            .push("(recorded_at, position) > (")
            .push_bind(at.timestamp_micros())
            .push(", ")
            .push_bind(to_i64(query.after.sequence))
            .push(")"),
        _ => sql
            .push("position > ")
            .push_bind(to_i64(query.after.sequence)),
    };
}

/// The query's conditions but paging, as `AND ...`.
pub(super) fn push_filters(
    sql: &mut QueryBuilder<Sqlite>,
    query: &EventQuery,
    tables: &TableNames,
) {
    if !query.event_types.is_empty() {
        sql.push(" AND event_type IN (");
        let mut types = sql.separated(", ");
        for event_type in &query.event_types {
            types.push_bind(event_type.clone());
        }
        sql.push(")");
    }
    if let Some(from) = query.recorded_from {
        sql.push(" AND recorded_at >= ")
            .push_bind(from.timestamp_micros());
    }
    if let Some(until) = query.recorded_until {
        sql.push(" AND recorded_at < ")
            .push_bind(until.timestamp_micros());
    }
    if let Some(tenant) = &query.tenant_id {
        sql.push(" AND tenant_id = ").push_bind(tenant.clone());
    }
    if let Some(correlation) = query.correlation_id {
        sql.push(" AND correlation_id = ").push_bind(correlation);
    }
    if let Some(event_id) = query.event_id {
        sql.push(" AND event_id = ").push_bind(event_id);
    }
    for tag in &query.tags {
        sql.push(
            tables.rename(" AND position IN (SELECT position FROM annals_event_tags WHERE tag = "),
        )
        .push_bind(tag.clone())
        .push(")");
    }
    if let Some((key, value)) = &query.header {
        sql.push(" AND EXISTS (SELECT 1 FROM json_each(headers) WHERE json_each.key = ")
            .push_bind(key.clone())
            .push(" AND json_each.value = ")
            .push_bind(value.clone())
            .push(")");
    }
}

/// `position IN (...)`: the positions of `tenant`'s events after `after`
/// matching any of `criteria`, from the tag index.
pub(super) fn push_criteria(
    sql: &mut QueryBuilder<Sqlite>,
    tables: &TableNames,
    tenant: &str,
    criteria: &EventCriteria,
    after: i64,
) {
    sql.push("position IN (");
    for (index, criterion) in criteria.criteria.iter().enumerate() {
        if index > 0 {
            sql.push(" UNION ");
        }
        sql.push(tables.rename("SELECT t.position FROM annals_event_tags t WHERE t.tag = "))
            .push_bind(criterion.lock_tag().to_owned())
            .push(" AND t.tenant_key = ")
            .push_bind(tenant.to_owned())
            .push(" AND t.position > ")
            .push_bind(after);
        if !criterion.event_types.is_empty() {
            sql.push(" AND t.event_type IN (");
            let mut types = sql.separated(", ");
            for event_type in &criterion.event_types {
                types.push_bind(event_type.clone());
            }
            sql.push(")");
        }
        for tag in criterion.tags.iter().skip(1) {
            sql.push(tables.rename(
                " AND EXISTS (SELECT 1 FROM annals_event_tags o \
                 WHERE o.tenant_key = t.tenant_key AND o.position = t.position AND o.tag = ",
            ))
            .push_bind(tag.clone())
            .push(")");
        }
    }
    sql.push(")");
}
