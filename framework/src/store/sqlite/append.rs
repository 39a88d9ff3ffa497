//! Appending: the write transaction, its rows and errors, inline projections,
//! and group commit's writer.

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::envelope::NewEvent;
use crate::event::metadata::headers_json;
use crate::hash_chain::{ChainKeys, ChainSigner, EventHash, StoredEvent};
use crate::projection::sql_read_model::SqliteContext as _;
use crate::store::append::{apply_inline, next_version, validate_batch};
use crate::store::condition::{AppendCondition, Criterion, EventCriteria};
use crate::store::group_commit::{FlightFailure, FlightWriter, QueuedAppend, submit};
use crate::store::position::LogPosition;
use crate::store::row::{position_from_columns, tags_json, to_i64};
use crate::store::table_names::TableNames;
use crate::store::{AppendResult, StreamAppend};

use super::read::push_criteria;
use super::{BACKEND, SqliteEventStore, failed};

impl SqliteEventStore {
    /// Appends and applies an inline `projection` to the new events in the
    /// same transaction: the read model changes exactly when the events are
    /// stored, and a projection failure aborts the append (nothing written).
    pub async fn append_inline<P>(
        &self,
        mut batch: Vec<StreamAppend>,
        projection: &mut P,
    ) -> Result<Vec<AppendResult>>
    where
        P: crate::projection::Projection,
        P::Context: crate::projection::sql_read_model::SqliteContext,
    {
        validate_batch(&batch)?;
        self.stamp(&mut batch)?;
        let _writer = self.write_gate.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failed("begin append"))?;
        let results = append_in(&self.tables, self.chain_keys.as_deref(), &mut tx, &batch).await?;
        // On error `tx` is dropped: the append rolls back.
        apply_inline(
            projection,
            &batch,
            &results,
            P::Context::from_sqlite(&mut tx),
        )
        .await?;
        tx.commit().await.map_err(failed("commit append"))?;
        self.appended.signal();
        Ok(results)
    }
}

/// The columns of an event about to be written that its link covers.
pub(super) fn new_row<'a>(
    append: &'a StreamAppend,
    version: u64,
    event: &'a NewEvent,
    headers: &'a str,
    recorded_at: i64,
    (commit, position): (i64, i64),
) -> StoredEvent<'a> {
    let metadata = &event.metadata;
    StoredEvent {
        event_id: event.event_id,
        stream_id: append.stream_id.as_str(),
        version,
        event_type: &event.event_type,
        schema_version: event.schema_version,
        payload: event.payload.as_json(),
        tenant_id: metadata.tenant_id.as_deref(),
        correlation_id: metadata.correlation_id,
        causation_id: metadata.causation_id,
        actor: metadata.actor.as_deref(),
        trace_context: metadata.trace_context.as_deref(),
        headers,
        recorded_at_micros: recorded_at,
        position: u64::try_from(position).unwrap_or(0),
        commit_id: u64::try_from(commit).unwrap_or(0),
    }
}

impl FlightWriter for SqliteEventStore {
    const BACKEND: &'static str = BACKEND;
    /// Nothing: the write gate serializes SQLite's writers anyway.
    type Lane = ();

    async fn append_alone(
        &self,
        _lane: &mut (),
        batch: &[StreamAppend],
    ) -> Result<Vec<AppendResult>> {
        let _writer = self.write_gate.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failed("begin append"))?;
        let results = append_in(&self.tables, self.chain_keys.as_deref(), &mut tx, batch).await?;
        tx.commit().await.map_err(failed("commit append"))?;
        self.appended.signal();
        Ok(results)
    }

    /// One transaction, each caller's append in a savepoint of its own: a
    /// caller's conflict or duplicate event id undoes only its own events.
    async fn write_together(
        &self,
        _lane: &mut (),
        flight: &[QueuedAppend],
    ) -> std::result::Result<Vec<Result<Vec<AppendResult>>>, FlightFailure> {
        let failure = |error: sqlx::Error| FlightFailure::Failed(format!("append failed: {error}"));
        let _writer = self.write_gate.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failure)?;
        let mut outcomes = Vec::with_capacity(flight.len());
        for queued in flight {
            sqlx::query("SAVEPOINT annals_append")
                .execute(&mut *tx)
                .await
                .map_err(failure)?;
            let outcome = append_in(
                &self.tables,
                self.chain_keys.as_deref(),
                &mut tx,
                &queued.batch,
            )
            .await;
            if outcome.is_err() {
                sqlx::query("ROLLBACK TO SAVEPOINT annals_append")
                    .execute(&mut *tx)
                    .await
                    .map_err(failure)?;
            }
            sqlx::query("RELEASE SAVEPOINT annals_append")
                .execute(&mut *tx)
                .await
                .map_err(failure)?;
            outcomes.push(outcome);
        }
        tx.commit().await.map_err(failure)?;
        self.appended.signal();
        Ok(outcomes)
    }
}

impl SqliteEventStore {
    /// The append itself (`append_batch` adds its metrics).
    pub(super) async fn write_batch(
        &self,
        mut batch: Vec<StreamAppend>,
    ) -> Result<Vec<AppendResult>> {
        validate_batch(&batch)?;
        self.stamp(&mut batch)?;
        if let Some(group) = self.group.as_ref().filter(|group| group.accepts(&batch)) {
            return submit(group, self, batch).await;
        }
        self.append_alone(&mut (), &batch).await
    }
}

/// The append itself, inside the caller's write transaction: check every
/// expectation, then insert. Returning an error leaves the transaction to
/// be rolled back.
pub(super) async fn append_in(
    tables: &TableNames,
    keys: Option<&ChainKeys>,
    connection: &mut SqliteConnection,
    batch: &[StreamAppend],
) -> Result<Vec<AppendResult>> {
    append_in_at(tables, keys, connection, batch, Utc::now().trunc_subsecs(6)).await
}

/// [`append_in`] with the events' recording time given (an import keeps
/// the one they were first recorded with).
pub(super) async fn append_in_at(
    tables: &TableNames,
    keys: Option<&ChainKeys>,
    connection: &mut SqliteConnection,
    batch: &[StreamAppend],
    recorded_at_time: DateTime<Utc>,
) -> Result<Vec<AppendResult>> {
    let (heads, log_head) = check_heads(tables, connection, batch).await?;
    let commit: i64 = match log_head {
        Some(commit) => commit,
        None => sqlx::query_scalar(
            tables.sql("SELECT COALESCE(MAX(position), 0) + 1 FROM annals_events"),
        )
        .fetch_one(&mut *connection)
        .await
        .map_err(failed("read log head"))?,
    };
    let recorded_at = recorded_at_time.timestamp_micros();
    let commit_position = u64::try_from(commit).unwrap_or(0);
    let signer = ChainSigner::new(keys);
    let rows = chained_rows(&signer, batch, &heads, commit, recorded_at);
    insert_rows(
        tables,
        connection,
        &rows,
        commit,
        recorded_at,
        signer.format().column(),
    )
    .await?;
    let mut results = Vec::with_capacity(batch.len());
    let mut row_positions = rows.iter().map(|(.., position)| *position);
    for (append, &(current, _)) in batch.iter().zip(&heads) {
        let positions: Vec<LogPosition> = row_positions
            .by_ref()
            .take(append.events.len())
            .map(|position| LogPosition::new(commit_position, u64::try_from(position).unwrap_or(0)))
            .collect();
        results.push(AppendResult {
            first_version: current + 1,
            last_version: current + append.events.len() as u64,
            position: positions.last().copied().unwrap_or_default(),
            positions,
            recorded_at: recorded_at_time,
        });
    }
    Ok(results)
}

/// Each stream's head (version and link), checked against the append's
/// expectations; and the log's next position when the first stream's read
/// could bring it along (each statement is a round trip to SQLite's worker
/// thread).
async fn check_heads(
    tables: &TableNames,
    connection: &mut SqliteConnection,
    batch: &[StreamAppend],
) -> Result<(Vec<(u64, EventHash)>, Option<i64>)> {
    let mut heads = Vec::with_capacity(batch.len());
    let mut log_head: Option<i64> = None;
    for append in batch {
        // A stream belongs to the tenant its events name (a tenant handle
        // stamped its own on them).
        let tenant = crate::store::tenancy::stream_tenant(&append.stream_id, &append.events)?;
        type Head = (Option<i64>, Option<Vec<u8>>, Option<Uuid>);
        let (current, link, head_event): Head = if log_head.is_none() {
            let (current, link, head_event, next_commit): (
                Option<i64>,
                Option<Vec<u8>>,
                Option<Uuid>,
                i64,
            ) = sqlx::query_as(tables.sql(
                "SELECT head.version, head.hash, head.event_id, \
                        (SELECT COALESCE(MAX(position), 0) + 1 FROM annals_events) \
                 FROM (SELECT 1) LEFT JOIN (SELECT version, hash, event_id FROM annals_events \
                     WHERE stream_id = ? AND COALESCE(tenant_id, '') = ? \
                     ORDER BY version DESC LIMIT 1) AS head",
            ))
            .bind(append.stream_id.as_str())
            .bind(&tenant)
            .fetch_one(&mut *connection)
            .await
            .map_err(failed("read stream version"))?;
            log_head = Some(next_commit);
            (current, link, head_event)
        } else {
            sqlx::query_as(tables.sql(
                "SELECT version, hash, event_id FROM annals_events \
                 WHERE stream_id = ? AND COALESCE(tenant_id, '') = ? ORDER BY version DESC LIMIT 1",
            ))
            .bind(append.stream_id.as_str())
            .bind(&tenant)
            .fetch_optional(&mut *connection)
            .await
            .map_err(failed("read stream version"))?
            .map_or((None, None, None), |(version, hash, event)| {
                (Some(version), hash, Some(event))
            })
        };
        let current = current
            .and_then(|version| u64::try_from(version).ok())
            .unwrap_or(0);
        if !append.expected.accepts(current) {
            // Dropping `tx` rolls back; nothing was written.
            return Err(Error::VersionConflict {
                stream: append.stream_id.to_string(),
                expected: append.expected,
                actual: current,
            });
        }
        append.check_head(current, head_event)?;
        next_version(&append.stream_id, current, append.events.len())?;
        if let Some(condition) = &append.condition {
            check_condition(tables, connection, append, &tenant, condition).await?;
        }
        // A head without a link was written past Annals (and is reported by
        // verification); the chain goes on from the start.
        let link = link
            .as_deref()
            .and_then(EventHash::from_slice)
            .unwrap_or(EventHash::GENESIS);
        heads.push((current, link));
    }

    Ok((heads, log_head))
}

/// Refuses the append if an event in `tenant` after the condition's
/// position matches one of its criteria. The caller holds SQLite's write
/// lock, so nothing can be appended between this check and the insert.
async fn check_condition(
    tables: &TableNames,
    connection: &mut SqliteConnection,
    append: &StreamAppend,
    tenant: &str,
    condition: &AppendCondition,
) -> Result<()> {
    let after = to_i64(condition.after_or_start().sequence);
    let mut first: Option<(&Criterion, LogPosition)> = None;
    for criterion in &condition.fail_if_events_match.criteria {
        let mut sql = QueryBuilder::<Sqlite>::new(
            tables.rename("SELECT commit_id, position FROM annals_events WHERE "),
        );
        let one = EventCriteria::from(criterion.clone());
        push_criteria(&mut sql, tables, tenant, &one, after);
        sql.push(" ORDER BY position LIMIT 1");
        let found: Option<(i64, i64)> = sql
            .build_query_as()
            .fetch_optional(&mut *connection)
            .await
            .map_err(failed("check append condition"))?;
        if let Some((commit, sequence)) = found {
            let found = position_from_columns(commit, sequence);
            if first.is_none_or(|(_, earliest)| found < earliest) {
                first = Some((criterion, found));
            }
        }
    }
    match first {
        Some((criterion, found)) => {
            Err(condition.failed(append.stream_id.as_str(), criterion, found))
        }
        None => Ok(()),
    }
}

/// A row to insert: its stream's append, version, event, headers JSON,
/// link and position.
type ChainedRow<'a> = (&'a StreamAppend, u64, &'a NewEvent, String, EventHash, i64);

/// Every row of the batch, in order, with its position and link. The
/// positions are given, not left to AUTOINCREMENT, because links cover
/// them: the writer holds the write lock, and the log's head is `commit`.
fn chained_rows<'a>(
    signer: &ChainSigner<'_>,
    batch: &'a [StreamAppend],
    heads: &[(u64, EventHash)],
    commit: i64,
    recorded_at: i64,
) -> Vec<ChainedRow<'a>> {
    let mut rows = Vec::new();
    let mut position = commit;
    for (append, &(current, head_link)) in batch.iter().zip(heads) {
        let mut link = head_link;
        for (offset, event) in append.events.iter().enumerate() {
            let version = current + 1 + offset as u64;
            let headers = headers_json(&event.metadata.headers);
            let stored = new_row(
                append,
                version,
                event,
                &headers,
                recorded_at,
                (commit, position),
            );
            link = signer.link(&link, &stored);
            rows.push((append, version, event, headers, link, position));
            position += 1;
        }
    }
    rows
}

/// Inserts the rows a chunk at a time, one multi-row statement each; a
/// failure names the event id already stored, if that was the cause.
async fn insert_rows(
    tables: &TableNames,
    connection: &mut SqliteConnection,
    rows: &[ChainedRow<'_>],
    commit: i64,
    recorded_at: i64,
    chain_key: Option<i16>,
) -> Result<()> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut insert = QueryBuilder::<Sqlite>::new(tables.rename(
            "INSERT INTO annals_events (position, commit_id, event_id, stream_id, version, \
             event_type, schema_version, payload, tenant_id, correlation_id, causation_id, actor, \
             trace_context, headers, recorded_at, hash, chain_key, tags) ",
        ));
        insert.push_values(
            chunk,
            |mut row, (append, version, event, headers, link, position)| {
                let metadata = &event.metadata;
                row.push_bind(*position)
                    .push_bind(commit)
                    .push_bind(event.event_id)
                    .push_bind(append.stream_id.as_str())
                    .push_bind(to_i64(*version))
                    .push_bind(event.event_type.as_str())
                    .push_bind(i64::from(event.schema_version))
                    .push_bind(event.payload.as_json())
                    .push_bind(metadata.tenant_id.as_deref())
                    .push_bind(metadata.correlation_id)
                    .push_bind(metadata.causation_id)
                    .push_bind(metadata.actor.as_deref())
                    .push_bind(metadata.trace_context.as_deref())
                    .push_bind(headers.as_str())
                    .push_bind(recorded_at)
                    .push_bind(link.as_bytes().as_slice())
                    .push_bind(chain_key)
                    .push_bind(tags_json(&event.tags));
            },
        );
        if let Err(error) = insert.build().execute(&mut *connection).await {
            let stored = stored_event_id(
                tables,
                connection,
                chunk.iter().map(|(_, _, event, _, _, _)| event.event_id),
            )
            .await;
            return Err(insert_error(error, stored));
        }
    }
    insert_tags(tables, connection, rows).await
}

/// Indexes the rows' tags in `annals_event_tags`.
async fn insert_tags(
    tables: &TableNames,
    connection: &mut SqliteConnection,
    rows: &[ChainedRow<'_>],
) -> Result<()> {
    let tags: Vec<(&str, &str, i64, &str)> = rows
        .iter()
        .flat_map(|(_, _, event, _, _, position)| {
            let tenant = event.metadata.tenant_id.as_deref().unwrap_or("");
            event
                .tags
                .iter()
                .map(move |tag| (tag.as_str(), tenant, *position, event.event_type.as_str()))
        })
        .collect();
    for chunk in tags.chunks(INSERT_CHUNK) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            tables.rename("INSERT INTO annals_event_tags (tag, tenant_key, position, event_type) "),
        );
        insert.push_values(chunk, |mut row, (tag, tenant, position, event_type)| {
            row.push_bind(*tag)
                .push_bind(*tenant)
                .push_bind(*position)
                .push_bind(*event_type);
        });
        insert
            .build()
            .execute(&mut *connection)
            .await
            .map_err(failed("index tags"))?;
    }
    Ok(())
}

/// Events per multi-row insert: 14 parameters each, well below SQLite's
/// limit of 32,766 per statement.
pub(super) const INSERT_CHUNK: usize = 500;

/// The first of `ids` already stored, to name it in the error.
pub(super) async fn stored_event_id(
    tables: &TableNames,
    connection: &mut SqliteConnection,
    ids: impl Iterator<Item = Uuid>,
) -> Option<Uuid> {
    for id in ids {
        let found: Option<i64> =
            sqlx::query_scalar(tables.sql("SELECT position FROM annals_events WHERE event_id = ?"))
                .bind(id)
                .fetch_optional(&mut *connection)
                .await
                .ok()
                .flatten();
        if found.is_some() {
            return Some(id);
        }
    }
    None
}

pub(super) fn insert_error(error: sqlx::Error, event_id: Option<Uuid>) -> Error {
    if let sqlx::Error::Database(db) = &error
        && db.is_unique_violation()
        && db.message().contains("event_id")
    {
        let id = event_id.map_or_else(|| "of this batch".to_owned(), |id| id.to_string());
        return Error::invalid(
            "event id",
            format!("an event with id {id} is already stored; event ids must be unique"),
        );
    }
    failed("insert events")(error)
}
