//! Reading events: streaming rows off a statement and decoding them by column
//! position, and the query filters.

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};

use crate::error::Result;
use crate::event::envelope::RecordedEvent;
use crate::store::position::LogPosition;
use crate::store::row::{RowIdentity, StoredRow};
use crate::store::row::{limit, position_from_columns, to_i64};
use crate::store::stream::StreamId;
use crate::store::table_names::TableNames;
use crate::store::tenancy::check_one_holder;
use crate::store::tenant_session::{LocalSettings, Session};
use crate::store::{EventCriteria, EventQuery, LogFilter, LogPage};

use super::{PostgresEventStore, ReadKind, failed};

impl PostgresEventStore {
    pub(super) async fn fetch_events(
        &self,
        query: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
        operation: &'static str,
        kind: ReadKind,
    ) -> Result<Vec<RecordedEvent>> {
        // Decoded as they arrive: the server produces the next rows while
        // this decodes the last ones.
        let mut session = self.read_session(kind).await?;
        let mut rows = query.fetch(session.connection());
        let mut events = Vec::new();
        while let Some(row) = rows.try_next().await.map_err(failed(operation))? {
            events.push(decode_row(&row)?);
        }
        drop(rows);
        session.finish().await?;
        Ok(events)
    }
}

impl PostgresEventStore {
    /// Runs a `log_page!` query: its events, and the head row (NULL
    /// `event_id`) that says how far the log goes.
    pub(super) async fn fetch_log_page(
        &self,
        query: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
        after: LogPosition,
        max_count: usize,
        settings: LocalSettings,
        layout: Layout,
    ) -> Result<LogPage> {
        const OPERATION: &str = "read log";
        let mut session = Session::open_with_settings(
            self.read_pool(ReadKind::Log),
            self.tenant.as_deref(),
            settings,
        )
        .await?;
        let mut rows = query.fetch(session.connection());
        let mut events = Vec::new();
        let mut head = after;
        while let Some(row) = rows.try_next().await.map_err(failed(OPERATION))? {
            let event_id: Option<uuid::Uuid> = row.try_get(2).map_err(failed(OPERATION))?;
            if event_id.is_some() {
                events.push(decode_row_as(&row, layout)?);
            } else {
                // `xid8`, read as the 8-byte integer of its binary form.
                let commit: i64 = row.try_get_unchecked(1).map_err(failed(OPERATION))?;
                let sequence: i64 = row.try_get(0).map_err(failed(OPERATION))?;
                head = head.max(position_from_columns(commit, sequence));
            }
        }
        drop(rows);
        session.finish().await?;
        Ok(LogPage::new(events, after, max_count, head))
    }
}

impl PostgresEventStore {
    /// [`fetch_events`](Self::fetch_events) for a `stream_events!` query,
    /// refusing a stream id several tenants hold.
    pub(super) async fn fetch_stream_events(
        &self,
        query: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
        stream: &StreamId,
        operation: &'static str,
    ) -> Result<Vec<RecordedEvent>> {
        let mut session = self.read_session(ReadKind::Load).await?;
        let mut rows = query.fetch(session.connection());
        let mut events = Vec::new();
        while let Some(row) = rows.try_next().await.map_err(failed(operation))? {
            if events.is_empty() {
                let holders: i64 = row.try_get(16).map_err(|error| failed(operation)(error))?;
                check_one_holder(stream, usize::try_from(holders).unwrap_or(usize::MAX))?;
            }
            events.push(decode_row(&row)?);
        }
        drop(rows);
        session.finish().await?;
        Ok(events)
    }
}

/// Column `index` of a `select_events!` row (`name` for the error).
pub(super) fn column<'r, T>(
    row: &'r PgRow,
    identity: &RowIdentity,
    index: usize,
    name: &str,
) -> Result<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    // Unchecked: the statements are fixed, so each column's type is known
    // (checking it against the Rust type for every value of every row was
    // a twentieth of a catch-up); a value that does not decode is still an
    // error.
    row.try_get_unchecked(index)
        .map_err(|error| identity.corrupt(format!("column `{name}` is unreadable: {error}")))
}

/// Which columns an event row has: those of `event_columns!`, or those of
/// `event_columns_without_metadata!` (the same up to the payload, then
/// `recorded_at` and `tags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// Every column.
    Full,
    /// No metadata columns.
    WithoutMetadata,
}

impl Layout {
    /// The layout of the rows `filter` wants.
    pub(super) fn of(filter: &LogFilter) -> Self {
        if filter.with_metadata() {
            Layout::Full
        } else {
            Layout::WithoutMetadata
        }
    }

    /// The select list.
    fn columns(self) -> &'static str {
        match self {
            Layout::Full => event_columns!(),
            Layout::WithoutMetadata => event_columns_without_metadata!(),
        }
    }

    /// The names the select list gives its columns (for a select over a
    /// subquery that selected them).
    fn names(self) -> &'static str {
        match self {
            Layout::Full => {
                "position, commit_id, event_id, stream_id, version, event_type, \
                 schema_version, payload, tenant_id, correlation_id, causation_id, actor, \
                 trace_context, headers, recorded_at, tags"
            }
            Layout::WithoutMetadata => {
                "position, commit_id, event_id, stream_id, version, event_type, \
                 schema_version, payload, recorded_at, tags"
            }
        }
    }

    /// The select list of a row that carries only a position: NULLs of
    /// the right types after `position` and `commit_id`.
    fn position_only(self) -> &'static str {
        match self {
            Layout::Full => {
                "position, transaction_id AS commit_id, NULL::uuid, NULL::text, NULL::bigint, \
                 NULL::text, NULL::int4, NULL::text, NULL::text, NULL::uuid, NULL::uuid, \
                 NULL::text, NULL::text, NULL::text, NULL::timestamptz, NULL::text[]"
            }
            Layout::WithoutMetadata => {
                "position, transaction_id AS commit_id, NULL::uuid, NULL::text, NULL::bigint, \
                 NULL::text, NULL::int4, NULL::text, NULL::timestamptz, NULL::text[]"
            }
        }
    }
}

/// A column of the row's identity: [`column`], with an error that names no
/// event (none is known yet), made only when there is an error (this runs
/// for every row read).
fn identity_column<'r, T>(row: &'r PgRow, index: usize, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get_unchecked(index).map_err(|error| {
        RowIdentity::unreadable().corrupt(format!("column `{name}` is unreadable: {error}"))
    })
}

/// Decodes a row of `select_events!`, by column position (a name lookup
/// per column was a tenth of a catch-up's time).
pub(super) fn decode_row(row: &PgRow) -> Result<RecordedEvent> {
    decode_row_as(row, Layout::Full)
}

/// Decodes a row of the columns `layout` names.
fn decode_row_as(row: &PgRow, layout: Layout) -> Result<RecordedEvent> {
    let identity = RowIdentity {
        stream_id: identity_column(row, 3, "stream_id")?,
        version: identity_column(row, 4, "version")?,
        event_type: identity_column(row, 5, "event_type")?,
    };
    let schema_version: i32 = column(row, &identity, 6, "schema_version")?;
    // The metadata, and where `recorded_at` and `tags` are after it.
    let (tenant_id, correlation_id, causation_id, actor, trace_context, headers, last) =
        match layout {
            Layout::Full => (
                column(row, &identity, 8, "tenant_id")?,
                column(row, &identity, 9, "correlation_id")?,
                column(row, &identity, 10, "causation_id")?,
                column(row, &identity, 11, "actor")?,
                column(row, &identity, 12, "trace_context")?,
                Some(column(row, &identity, 13, "headers")?),
                14,
            ),
            Layout::WithoutMetadata => (None, None, None, None, None, None, 8),
        };
    let recorded_at = recorded_at(row, &identity, last)?;
    StoredRow {
        // `xid8`: unchecked, its binary form is an 8-byte integer.
        commit: column(row, &identity, 1, "commit_id")?,
        position: column(row, &identity, 0, "position")?,
        event_id: column(row, &identity, 2, "event_id")?,
        schema_version: i64::from(schema_version),
        payload: column(row, &identity, 7, "payload")?,
        payload_checked: true,
        tenant_id,
        correlation_id,
        causation_id,
        actor,
        trace_context,
        headers,
        recorded_at,
        tags: column::<Option<Vec<String>>>(row, &identity, last + 1, "tags")?.unwrap_or_default(),
        identity,
    }
    .into_recorded()
}

/// A `timestamptz` column, from its binary form (microseconds since
/// 2000-01-01 UTC) without the calendar arithmetic of sqlx's decoding,
/// which was a twenty-fifth of a catch-up's client time.
fn recorded_at(row: &PgRow, identity: &RowIdentity, index: usize) -> Result<DateTime<Utc>> {
    /// 2000-01-01 UTC in microseconds since 1970-01-01 UTC.
    const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
    let micros: i64 = column(row, identity, index, "recorded_at")?;
    micros
        .checked_add(POSTGRES_EPOCH_MICROS)
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(|| {
            identity.corrupt(format!(
                "recorded_at ({micros} microseconds after 2000-01-01) is out of range"
            ))
        })
}

/// ` LIMIT n`, with the page size written into the statement rather than
/// bound. PostgreSQL plans a bound limit as a tenth of the rows, so a
/// statement's generic plan never beat planning each execution anew (for a
/// page by tag it was a parallel scan: 11 ms instead of 0.6), and every page
/// paid its planning, a third of a 1 ms page. Given the page size, the
/// generic plan is the page's plan, and PostgreSQL reuses it after five
/// executions where the plan does not depend on the parameters (pages by
/// tag or correlation id; the bounds of a time window still choose between
/// indexes). Each page size is a statement of its own in the connection's
/// cache; callers use a handful.
pub(super) fn push_limit(sql: &mut QueryBuilder<Postgres>, max_count: usize) {
    sql.push(" LIMIT ").push(limit(max_count));
}

/// Where a query's page starts, in its order (see [`EventQuery`]): the
/// keyset its index continues from. Shared by `query` and `count`, as
/// [`push_filters`] is, so they always agree. A first page has none (every
/// position is 1 or more): without a condition that holds for every row,
/// its statement is the one a first page written by hand is (W6's first
/// pages by type and time: 0.33 ms at p50 against the hand-written 0.36,
/// where with `position > 0` and `event_type = ANY(..)` they took 0.41-0.48
/// against 0.27-0.30).
pub(super) fn push_after(sql: &mut QueryBuilder<Postgres>, query: &EventQuery) {
    match (query.in_recorded_order(), query.after.recorded_at) {
        (true, Some(at)) => sql
            .push("(recorded_at, position) > (")
            .push_bind(at)
            .push(", ")
            .push_bind(to_i64(query.after.sequence))
            .push(")"),
        _ if query.after.sequence == 0 => sql.push("TRUE"),
        _ => sql
            .push("position > ")
            .push_bind(to_i64(query.after.sequence)),
    };
}

/// The query's conditions but paging, as `AND ...`; the first
/// `tags_done` tags are left out (the query reads them another way).
pub(super) fn push_filters(
    sql: &mut QueryBuilder<Postgres>,
    query: &EventQuery,
    tables: &TableNames,
    tags_done: usize,
) {
    // One type as an equality, which the planner estimates from the
    // type's statistics even for a generic plan.
    match query.event_types.as_slice() {
        [] => {}
        [event_type] => {
            sql.push(" AND event_type = ").push_bind(event_type.clone());
        }
        types => {
            sql.push(" AND event_type = ANY(")
                .push_bind(types.to_vec())
                .push(")");
        }
    }
    if let Some(from) = query.recorded_from {
        sql.push(" AND recorded_at >= ").push_bind(from);
    }
    if let Some(until) = query.recorded_until {
        sql.push(" AND recorded_at < ").push_bind(until);
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
    for tag in query.tags.iter().skip(tags_done) {
        sql.push(
            tables.rename(" AND position IN (SELECT position FROM annals_event_tags WHERE tag = "),
        )
        .push_bind(tag.clone())
        .push(")");
    }
    if let Some((key, value)) = &query.header {
        sql.push(" AND headers @> jsonb_build_object(")
            .push_bind(key.clone())
            .push("::text, ")
            .push_bind(value.clone())
            .push("::text)");
    }
}

/// `position IN (...)`: the positions of `tenant`'s events ordered after
/// `after` matching any of `criteria`, from the tag index.
pub(super) fn push_criteria(
    sql: &mut QueryBuilder<Postgres>,
    tables: &TableNames,
    tenant: &str,
    criteria: &EventCriteria,
    after: LogPosition,
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
            .push(" AND (t.transaction_id, t.position) > (")
            .push_bind(after.commit.to_string())
            .push("::xid8, ")
            .push_bind(to_i64(after.sequence))
            .push(")");
        if !criterion.event_types.is_empty() {
            sql.push(" AND t.event_type = ANY(")
                .push_bind(criterion.event_types.clone())
                .push(")");
        }
        for tag in criterion.tags.iter().skip(1) {
            sql.push(tables.rename(
                " AND EXISTS (SELECT 1 FROM annals_event_tags o \
                 WHERE o.tag = ",
            ))
            .push_bind(tag.clone())
            .push(
                " AND o.tenant_key = t.tenant_key AND o.transaction_id = t.transaction_id \
                 AND o.position = t.position)",
            );
        }
    }
    sql.push(")");
}

/// The planner settings a [`log_page`] query runs with: none for the whole
/// log; for a type filter, no sorts and no bitmap scans, so that the type's
/// branches can only run as a walk of the type index in log order from the
/// keyset (`events_by_type_log_order`), and no JIT (a disabled sort's cost
/// would otherwise buy a compilation that takes longer than the page).
///
/// Without them the plan hangs on estimates PostgreSQL cannot make: it
/// judges a row comparison by its first column alone, and a log that has
/// grown since the last `ANALYZE` has no statistics for its newest
/// transactions, so it took a type index ordered by position or time and
/// sorted everything of the type after the keyset, for every page (a
/// catch-up of a common type read a page in 250 ms instead of 10).
pub(super) fn log_page_settings(filter: &LogFilter) -> LocalSettings {
    const TYPE_INDEX_WALK: LocalSettings = &[
        ("enable_sort", "off"),
        ("enable_incremental_sort", "off"),
        ("enable_bitmapscan", "off"),
        ("jit", "off"),
    ];
    match filter.types() {
        Some(types) if !types.is_empty() => TYPE_INDEX_WALK,
        _ => &[],
    }
}

/// The statement of `read_log`: the wanted events after `after` below the
/// horizon, then one row for the head of the log below the same horizon
/// (one statement, so one snapshot), told apart by its NULL `event_id`.
/// (The commit is selected as `commit_id`, the name the merge of several
/// types' branches selects it by.)
///
/// Each wanted type is read on its own, in log order, on the (type,
/// transaction, position) index, and the branches' pages are merged when
/// there are several (one `event_type = ANY(..)` scan cannot keep the log
/// order on PostgreSQL 15, so it would sort every remaining event of the
/// types for each page). It runs with [`log_page_settings`], which leave
/// the planner no other way to read a type.
pub(super) fn log_page(
    tables: &TableNames,
    after: LogPosition,
    max_count: usize,
    filter: &LogFilter,
) -> QueryBuilder<Postgres> {
    let layout = Layout::of(filter);
    let columns = layout.columns();
    // The events of one type (or of all) after `after`, in log order. With
    // a type, the keyset and the horizon are both row comparisons that
    // lead with the type, so on the type index they bound the scan at both
    // ends (its start at the keyset, not at the type's first entry; an
    // `event_type = $1` equality beside the keyset made the equality the
    // start), and the log-order index cannot serve them; with the settings
    // of `log_page_settings` no other plan is left.
    let scan = |sql: &mut QueryBuilder<Postgres>, event_type: Option<&str>| {
        sql.push(tables.rename(" FROM annals_events WHERE "));
        match event_type {
            Some(event_type) => {
                sql.push("(event_type, transaction_id, position) > (")
                    .push_bind(event_type.to_owned())
                    .push(", ")
                    .push_bind(after.commit.to_string())
                    .push("::xid8, ")
                    .push_bind(to_i64(after.sequence))
                    .push(") AND (event_type, transaction_id) < (")
                    .push_bind(event_type.to_owned())
                    .push(
                        ", pg_snapshot_xmin(pg_current_snapshot())) \
                         ORDER BY event_type, transaction_id, position",
                    );
            }
            None => {
                sql.push("(transaction_id, position) > (")
                    .push_bind(after.commit.to_string())
                    .push("::xid8, ")
                    .push_bind(to_i64(after.sequence))
                    .push(
                        ") AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
                         ORDER BY transaction_id, position",
                    );
            }
        }
        push_limit(sql, max_count);
    };
    let mut sql = QueryBuilder::<Postgres>::new("(SELECT ");
    match filter.types() {
        None => {
            sql.push(columns);
            scan(&mut sql, None);
        }
        Some([]) => {
            sql.push(columns)
                .push(tables.rename(" FROM annals_events WHERE false"));
        }
        // One type's branch is in log order already.
        Some([event_type]) => {
            sql.push(columns);
            scan(&mut sql, Some(event_type));
        }
        Some(types) => {
            sql.push(layout.names()).push(" FROM (");
            for (index, event_type) in types.iter().enumerate() {
                if index > 0 {
                    sql.push(" UNION ALL ");
                }
                sql.push("(SELECT transaction_id AS log_order, ")
                    .push(columns);
                scan(&mut sql, Some(event_type));
                sql.push(")");
            }
            sql.push(") wanted ORDER BY log_order, position");
            push_limit(&mut sql, max_count);
        }
    }
    sql.push(") UNION ALL (SELECT ")
        .push(layout.position_only())
        .push(tables.rename(
            " FROM annals_events \
              WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
              ORDER BY transaction_id DESC, position DESC LIMIT 1)",
        ));
    sql
}
