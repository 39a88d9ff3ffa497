//! The append statement, its column arrays and outcomes, and group commit's
//! writer.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::error::{Error, Result};
use crate::event::metadata::headers_json;
use crate::hash_chain::LinkFormat;
use crate::projection::sql_read_model::PostgresContext as _;
use crate::store::append::{apply_inline, next_version, validate_batch};
use crate::store::condition::AppendCondition;
use crate::store::group_commit::{FlightFailure, FlightWriter, QueuedAppend, submit};
use crate::store::position::LogPosition;
use crate::store::row::{position_from_columns, tags_json, to_i64};
use crate::store::stream::ExpectedVersion;
use crate::store::table_names::TableNames;
use crate::store::tenancy::stream_tenant;
use crate::store::tenant_session::{LocalSettings, Session};
use crate::store::{AppendResult, StreamAppend};

use super::{BACKEND, PostgresEventStore, failed};

/// How often an append is re-run after colliding with a concurrent writer
/// before giving up.
pub(super) const APPEND_ATTEMPTS: usize = 16;

/// The settings an append runs with: its statement's generic plan, made
/// once per connection. PostgreSQL's choice otherwise is a plan made for
/// every execution (the generic plan, costed with unknown array lengths,
/// never looks cheaper than one made for the arrays at hand), and making
/// it took about 0.9 ms of the statement's 2 ms on this project's machine,
/// more than the whole raw single-row insert.
pub(super) const APPEND_SETTINGS: LocalSettings = &[("plan_cache_mode", "force_generic_plan")];

/// The whole append in one statement; see the module docs. Each stream
/// belongs to a group (`$15`): a group commit writes several callers' appends
/// at once, and a conflict keeps only its own group's events out.
pub(super) const APPEND_SQL: &str = "
WITH expectations AS (
    SELECT s.stream_id, s.expected, s.grp, s.expected_head, COALESCE(h.version, 0) AS head,
           h.event_id AS head_event,
           COALESCE(h.hash, '\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea) AS head_link
    FROM unnest($1::text[], $2::int8[], $15::int4[], $19::text[], $20::uuid[])
         AS s(stream_id, expected, grp, tenant_key, expected_head)
    LEFT JOIN LATERAL (
        SELECT e.version, e.hash, e.event_id FROM annals_events e
        WHERE e.stream_id = s.stream_id AND coalesce(e.tenant_id, '') = s.tenant_key
        ORDER BY e.version DESC LIMIT 1
    ) h ON true
),
conflicts AS (
    SELECT stream_id, head, head_event, grp FROM expectations
    WHERE NOT (expected = -1 OR (expected = -2 AND head > 0) OR expected = head)
       OR (expected_head IS NOT NULL AND expected_head IS DISTINCT FROM head_event)
),
-- Locks the tags written and conditioned on, then checks the conditions
-- on a fresh snapshot (see migration 0019); skipped when the flight has
-- neither tags nor conditions. It runs before any row is written: the rows
-- below are filtered by its result.
condition_failures AS (
    SELECT f.* FROM annals_check_append_conditions(
        $22::int8[], $23::bool[], $24::int4[], $25::text[], $26::int4[], $27::text[], $28::text[],
        $29::text[], $30::int8[], $31::int8[]) AS f
    WHERE cardinality($22::int8[]) > 0
),
refused AS (
    SELECT grp FROM conflicts UNION SELECT failed_group FROM condition_failures
),
inserted AS (
    INSERT INTO annals_events (position, transaction_id, event_id, stream_id, version, event_type,
                               schema_version, payload, tenant_id, correlation_id, causation_id,
                               actor, trace_context, headers, recorded_at, tags, hash, chain_key)
    OVERRIDING SYSTEM VALUE
    SELECT n.position, n.transaction_id, n.event_id, n.stream_id, n.version, n.event_type,
           n.schema_version, n.payload, n.tenant_id, n.correlation_id, n.causation_id, n.actor,
           n.trace_context, n.headers, n.recorded_at, n.tags,
           annals_keyed_chain(n.head_link, annals_event_link_digest(
               n.event_id, n.stream_id, n.version, n.event_type, n.schema_version, n.payload::text,
               n.tenant_id, n.correlation_id, n.causation_id, n.actor, n.trace_context,
               n.headers::text, n.recorded_at, n.position, n.transaction_id::text::int8),
               $16::bytea, $17::bytea)
               OVER (PARTITION BY n.stream_id ORDER BY n.version),
           $18::int2
    -- Positions are drawn in the callers' order, before the links that
    -- cover them are computed.
    FROM (
        SELECT r.*, nextval('annals_events_position_seq'::regclass) AS position,
               pg_current_xact_id() AS transaction_id
        -- A fence (OFFSET 0): each payload is parsed once, not once per use.
        FROM (
            SELECT i.event_id, i.stream_id, x.head + i.idx AS version, i.event_type,
                   i.schema_version, i.payload::jsonb AS payload, i.tenant_id, i.correlation_id,
                   i.causation_id, i.actor, i.trace_context, i.headers::jsonb AS headers,
                   COALESCE($32::timestamptz, now()) AS recorded_at, x.head_link, i.ord,
                   CASE WHEN i.tags IS NOT NULL
                        THEN ARRAY(SELECT jsonb_array_elements_text(i.tags::jsonb)) END AS tags
            FROM unnest($3::text[], $4::int8[], $5::uuid[], $6::text[], $7::int4[], $8::text[],
                        $9::text[], $10::uuid[], $11::uuid[], $12::text[], $13::text[], $14::text[],
                        $21::text[])
                 WITH ORDINALITY
                 AS i(stream_id, idx, event_id, event_type, schema_version, payload,
                      tenant_id, correlation_id, causation_id, actor, trace_context, headers, tags,
                      ord)
            JOIN expectations x ON x.stream_id = i.stream_id
            WHERE x.grp NOT IN (SELECT grp FROM refused)
            ORDER BY i.ord
            OFFSET 0
        ) r
    ) n
    -- Rows go in by stream, whatever order the callers named the streams
    -- in: two appends to the same streams then take their version keys in
    -- the same order and never wait on each other crosswise (a deadlock).
    -- Positions were drawn above, in the callers' order.
    ORDER BY n.stream_id, n.version
    RETURNING stream_id, version, position, transaction_id, recorded_at, tenant_id, event_type, tags
),
tagged AS (
    INSERT INTO annals_event_tags (tag, tenant_id, transaction_id, position, event_type)
    SELECT t.tag, i.tenant_id, i.transaction_id, i.position, i.event_type
    FROM inserted i CROSS JOIN LATERAL unnest(i.tags) AS t(tag)
)
SELECT false AS conflict, stream_id, version, position, transaction_id::text::bigint AS commit_id,
       recorded_at, NULL::uuid AS head_event, NULL::int4 AS criterion
FROM inserted
UNION ALL
SELECT true, stream_id, head, 0, 0, now(), head_event, NULL FROM conflicts
UNION ALL
SELECT true, failed_stream, 0, found_sequence, found_commit, now(), NULL, failed_criterion
FROM condition_failures";

/// `expected` as the number the append statement compares with the head.
pub(super) fn encode_expected(expected: ExpectedVersion) -> i64 {
    match expected {
        ExpectedVersion::Any => -1,
        ExpectedVersion::StreamExists => -2,
        ExpectedVersion::NoStream => 0,
        ExpectedVersion::Exact(version) => to_i64(version),
    }
}

/// The append's arguments as column arrays for `UNNEST`.
#[derive(Default)]
pub(super) struct AppendColumns<'a> {
    streams: Vec<&'a str>,
    expected: Vec<i64>,
    groups: Vec<i32>,
    stream_ids: Vec<&'a str>,
    indexes: Vec<i64>,
    event_ids: Vec<uuid::Uuid>,
    event_types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    payloads: Vec<&'a str>,
    tenant_ids: Vec<Option<&'a str>>,
    correlation_ids: Vec<Option<uuid::Uuid>>,
    causation_ids: Vec<Option<uuid::Uuid>>,
    actors: Vec<Option<&'a str>>,
    trace_contexts: Vec<Option<&'a str>>,
    headers: Vec<String>,
    /// Per stream: the tenant it belongs to (`''` for none), part of its
    /// identity since migration 16.
    stream_tenants: Vec<String>,
    /// Per stream: the id its newest event must have, if any.
    expected_heads: Vec<Option<uuid::Uuid>>,
    /// The table prefix, part of every lock key.
    prefix: &'a str,
    /// Per event: its tags as a JSON array, `None` for none.
    tags: Vec<Option<String>>,
    /// When the events were recorded: `None` (now) but for an import,
    /// which keeps the time they were first recorded at.
    pub(super) recorded_at: Option<DateTime<Utc>>,
    /// The advisory locks to take, by key: exclusive (a condition's) or
    /// shared (a written tag's).
    locks: std::collections::BTreeMap<i64, bool>,
    /// Per criterion of a condition: its group, stream, index, tenant,
    /// tags and types (JSON arrays) and position.
    conditions: ConditionColumns<'a>,
}

/// The conditions' criteria as column arrays.
#[derive(Default)]
struct ConditionColumns<'a> {
    groups: Vec<i32>,
    streams: Vec<&'a str>,
    criteria: Vec<i32>,
    tenants: Vec<String>,
    tags: Vec<String>,
    types: Vec<String>,
    after_commits: Vec<i64>,
    after_sequences: Vec<i64>,
}

impl<'a> AppendColumns<'a> {
    /// One caller's batch: a single group.
    pub(super) fn new(tables: &'a TableNames, batch: &'a [StreamAppend]) -> Result<Self> {
        Self::grouped(tables, [batch])
    }

    /// Several callers' batches, each its own group.
    pub(super) fn grouped(
        tables: &'a TableNames,
        batches: impl IntoIterator<Item = &'a [StreamAppend]>,
    ) -> Result<Self> {
        let mut columns = AppendColumns {
            prefix: tables.prefix(),
            ..AppendColumns::default()
        };
        for (group, batch) in (0..).zip(batches) {
            columns.push_group(group, batch)?;
        }
        Ok(columns)
    }

    fn push_condition(
        &mut self,
        group: i32,
        append: &'a StreamAppend,
        tenant: &str,
        condition: &AppendCondition,
    ) {
        let after = condition.after_or_start();
        for (index, criterion) in (0..).zip(&condition.fail_if_events_match.criteria) {
            self.locks.insert(
                tag_lock_key(self.prefix, tenant, criterion.lock_tag()),
                true,
            );
            let rows = &mut self.conditions;
            rows.groups.push(group);
            rows.streams.push(append.stream_id.as_str());
            rows.criteria.push(index);
            rows.tenants.push(tenant.to_owned());
            rows.tags
                .push(serde_json::Value::from(criterion.tags.clone()).to_string());
            rows.types
                .push(serde_json::Value::from(criterion.event_types.clone()).to_string());
            rows.after_commits.push(to_i64(after.commit));
            rows.after_sequences.push(to_i64(after.sequence));
        }
    }

    pub(super) fn push_group(&mut self, group: i32, batch: &'a [StreamAppend]) -> Result<()> {
        let columns = self;
        for append in batch {
            columns.streams.push(append.stream_id.as_str());
            columns.expected.push(encode_expected(append.expected));
            columns.groups.push(group);
            let tenant = stream_tenant(&append.stream_id, &append.events)?;
            columns.expected_heads.push(append.expected_head);
            if let Some(condition) = &append.condition {
                columns.push_condition(group, append, &tenant, condition);
            }
            for (index, event) in append.events.iter().enumerate() {
                for tag in &event.tags {
                    columns
                        .locks
                        .entry(tag_lock_key(columns.prefix, &tenant, tag))
                        .or_insert(false);
                }
                columns.tags.push(tags_json(&event.tags));
                let metadata = &event.metadata;
                columns.stream_ids.push(append.stream_id.as_str());
                columns.indexes.push(to_i64(index as u64 + 1));
                columns.event_ids.push(event.event_id);
                columns.event_types.push(&event.event_type);
                columns
                    .schema_versions
                    .push(i32::try_from(event.schema_version).map_err(|_| {
                        Error::invalid(
                            "schema version",
                            format!(
                                "schema version {} of `{}` is too large",
                                event.schema_version, event.event_type
                            ),
                        )
                    })?);
                columns.payloads.push(event.payload.as_json());
                columns.tenant_ids.push(metadata.tenant_id.as_deref());
                columns.correlation_ids.push(metadata.correlation_id);
                columns.causation_ids.push(metadata.causation_id);
                columns.actors.push(metadata.actor.as_deref());
                columns
                    .trace_contexts
                    .push(metadata.trace_context.as_deref());
                columns.headers.push(headers_json(&metadata.headers));
            }
            columns.stream_tenants.push(tenant);
        }
        Ok(())
    }
}

/// The advisory lock key of `tag` in `tenant` for tables with `prefix`:
/// the first 8 bytes of a SHA-256 of the three (two keys colliding only
/// makes their appends wait for each other).
fn tag_lock_key(prefix: &str, tenant: &str, tag: &str) -> i64 {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for part in [prefix, tenant, tag] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
}

/// Per stream: (version, position) of every row written, and when.
pub(super) type WrittenRows = (Vec<(u64, LogPosition)>, DateTime<Utc>);

/// What the append statement reported for one stream.
pub(super) enum StreamOutcome {
    Written(WrittenRows),
    /// Its group wrote nothing because of this stream.
    Refused {
        /// The expected version or head did not hold: the stream's head.
        head: Option<(u64, Option<uuid::Uuid>)>,
        /// A criterion of its condition was broken: its index, and the
        /// first matching event's position.
        condition: Option<(usize, LogPosition)>,
    },
}

/// What one run of the append statement found.
pub(super) enum AppendOutcome {
    Written(Vec<AppendResult>),
    /// Lost a race with a concurrent writer (unique violation, deadlock):
    /// run again on a fresh snapshot.
    Collided(sqlx::Error),
}

/// The append statement's rows, per stream.
pub(super) fn stream_outcomes(rows: &[PgRow]) -> Result<HashMap<String, StreamOutcome>> {
    let read = |error: sqlx::Error| failed("read append result")(error);
    let mut outcomes: HashMap<String, StreamOutcome> = HashMap::new();
    for row in rows {
        let conflict: bool = row.try_get("conflict").map_err(read)?;
        let stream: String = row.try_get("stream_id").map_err(read)?;
        let version: i64 = row.try_get("version").map_err(read)?;
        let version = u64::try_from(version).unwrap_or(0);
        let commit: i64 = row.try_get("commit_id").map_err(read)?;
        let position: i64 = row.try_get("position").map_err(read)?;
        let position = position_from_columns(commit, position);
        if conflict {
            let criterion: Option<i32> = row.try_get("criterion").map_err(read)?;
            let head_event: Option<uuid::Uuid> = row.try_get("head_event").map_err(read)?;
            let entry = outcomes.entry(stream).or_insert(StreamOutcome::Refused {
                head: None,
                condition: None,
            });
            if let StreamOutcome::Refused { head, condition } = entry {
                match criterion {
                    None => *head = Some((version, head_event)),
                    Some(criterion) => {
                        let criterion = usize::try_from(criterion).unwrap_or(0);
                        if condition.is_none_or(|(_, found)| position < found) {
                            *condition = Some((criterion, position));
                        }
                    }
                }
            }
            continue;
        }
        let recorded_at: DateTime<Utc> = row.try_get("recorded_at").map_err(read)?;
        if let StreamOutcome::Written((rows, _)) = outcomes
            .entry(stream)
            .or_insert_with(|| StreamOutcome::Written((Vec::new(), recorded_at)))
        {
            rows.push((version, position));
        }
    }
    Ok(outcomes)
}

/// One caller's result out of the statement's outcomes: its own version
/// conflict or broken condition if any of its streams had one (then none
/// of them was written), else each stream's versions and positions.
pub(super) fn batch_results(
    batch: &[StreamAppend],
    outcomes: &mut HashMap<String, StreamOutcome>,
) -> Result<Vec<AppendResult>> {
    for append in batch {
        if let Some(StreamOutcome::Refused {
            head: Some((head, head_event)),
            ..
        }) = outcomes.get(append.stream_id.as_str())
        {
            if !append.expected.accepts(*head) {
                return Err(Error::VersionConflict {
                    stream: append.stream_id.as_str().to_owned(),
                    expected: append.expected,
                    actual: *head,
                });
            }
            append.check_head(*head, *head_event)?;
        }
    }
    for append in batch {
        if let (
            Some(StreamOutcome::Refused {
                condition: Some((index, found)),
                ..
            }),
            Some(condition),
        ) = (outcomes.get(append.stream_id.as_str()), &append.condition)
            && let Some(criterion) = condition.fail_if_events_match.criteria.get(*index)
        {
            return Err(condition.failed(append.stream_id.as_str(), criterion, *found));
        }
    }
    batch
        .iter()
        .map(|append| {
            let Some(StreamOutcome::Written((mut rows, recorded_at))) =
                outcomes.remove(append.stream_id.as_str())
            else {
                return Err(Error::Backend {
                    backend: BACKEND,
                    operation: "append",
                    source: format!("no rows were reported for stream `{}`", append.stream_id)
                        .into(),
                });
            };
            rows.sort_unstable();
            let last_version = rows.last().map_or(0, |(version, _)| *version);
            let positions: Vec<LogPosition> = rows.iter().map(|(_, position)| *position).collect();
            Ok(AppendResult {
                first_version: last_version + 1 - append.events.len() as u64,
                last_version,
                position: positions.last().copied().unwrap_or_default(),
                positions,
                recorded_at,
            })
        })
        .collect()
}

impl PostgresEventStore {
    /// Appends and applies an inline `projection` to the new events in the
    /// same transaction: the read model changes exactly when the events are
    /// stored, and a projection failure aborts the append (nothing written).
    /// Keep inline projections quick: the open transaction holds back the
    /// log's visibility horizon for every reader.
    pub async fn append_inline<P>(
        &self,
        mut batch: Vec<StreamAppend>,
        projection: &mut P,
    ) -> Result<Vec<AppendResult>>
    where
        P: crate::projection::Projection,
        P::Context: crate::projection::sql_read_model::PostgresContext,
    {
        self.stamp_tenant(&mut batch)?;
        validate_batch(&batch)?;
        for append in &batch {
            next_version(&append.stream_id, 0, append.events.len())?;
        }
        let columns = AppendColumns::new(&self.tables, &batch)?;
        for _ in 0..APPEND_ATTEMPTS {
            let mut tx = self.begin().await?;
            match self.try_append(&mut *tx, &batch, &columns).await? {
                AppendOutcome::Written(results) => {
                    // On error `tx` is dropped: the append rolls back.
                    apply_inline(
                        projection,
                        &batch,
                        &results,
                        P::Context::from_postgres(&mut tx),
                    )
                    .await?;
                    tx.commit().await.map_err(failed("commit append"))?;
                    return Ok(results);
                }
                AppendOutcome::Collided(_) => continue,
            }
        }
        Err(Error::Backend {
            backend: BACKEND,
            operation: "append",
            source: format!("the append collided with concurrent writers {APPEND_ATTEMPTS} times")
                .into(),
        })
    }

    pub(super) async fn try_append<'e>(
        &self,
        executor: impl sqlx::PgExecutor<'e>,
        batch: &[StreamAppend],
        columns: &AppendColumns<'_>,
    ) -> Result<AppendOutcome> {
        match self.run_append(executor, columns).await {
            Ok(rows) => {
                batch_results(batch, &mut stream_outcomes(&rows)?).map(AppendOutcome::Written)
            }
            Err(error) => classify_append_error(&self.tables, error, batch),
        }
    }

    pub(super) async fn run_append<'e>(
        &self,
        executor: impl sqlx::PgExecutor<'e>,
        columns: &AppendColumns<'_>,
    ) -> std::result::Result<Vec<PgRow>, sqlx::Error> {
        // HMAC's padded keys, when the store signs: the statement keys the
        // links with them, and they are never stored.
        let pads = self.chain_keys.as_deref().map(|keys| keys.signing().pads());
        sqlx::query(self.tables.sql(APPEND_SQL))
            .bind(&columns.streams)
            .bind(&columns.expected)
            .bind(&columns.stream_ids)
            .bind(&columns.indexes)
            .bind(&columns.event_ids)
            .bind(&columns.event_types)
            .bind(&columns.schema_versions)
            .bind(&columns.payloads)
            .bind(&columns.tenant_ids)
            .bind(&columns.correlation_ids)
            .bind(&columns.causation_ids)
            .bind(&columns.actors)
            .bind(&columns.trace_contexts)
            .bind(&columns.headers)
            .bind(&columns.groups)
            .bind(pads.as_ref().map(|(inner, _)| inner.as_slice()))
            .bind(pads.as_ref().map(|(_, outer)| outer.as_slice()))
            .bind(LinkFormat::signing(self.chain_keys.as_deref()).column())
            .bind(&columns.stream_tenants)
            .bind(&columns.expected_heads)
            .bind(&columns.tags)
            .bind(columns.locks.keys().copied().collect::<Vec<i64>>())
            .bind(columns.locks.values().copied().collect::<Vec<bool>>())
            .bind(&columns.conditions.groups)
            .bind(&columns.conditions.streams)
            .bind(&columns.conditions.criteria)
            .bind(&columns.conditions.tenants)
            .bind(&columns.conditions.tags)
            .bind(&columns.conditions.types)
            .bind(&columns.conditions.after_commits)
            .bind(&columns.conditions.after_sequences)
            .bind(columns.recorded_at)
            .fetch_all(executor)
            .await
    }
}

/// A flight task's connection from the store's flight pool, taken at its
/// first flight and kept while flights follow each other (the pool checks
/// an idle connection with a round trip at every acquire).
pub(super) type FlightLane = Option<sqlx::pool::PoolConnection<sqlx::Postgres>>;

/// The lane's connection, taken from `pool` at its first use. After a
/// failed statement the caller empties the lane: the connection may be
/// broken, and the next flight takes one the pool has checked.
async fn lane_connection<'l>(
    pool: &PgPool,
    lane: &'l mut FlightLane,
) -> std::result::Result<&'l mut sqlx::pool::PoolConnection<sqlx::Postgres>, sqlx::Error> {
    match lane {
        Some(connection) => Ok(connection),
        None => Ok(lane.insert(pool.acquire().await?)),
    }
}

impl PostgresEventStore {
    /// One append as its own statement, re-run after collisions: in
    /// autocommit on a flight task's `lane` when given (a connection of the
    /// store's flight pool, whose session has the append's generic plan),
    /// else in a transaction on the store's pool with the append's settings
    /// (and the tenant of a scoped handle).
    async fn write_alone(
        &self,
        batch: &[StreamAppend],
        mut lane: Option<&mut FlightLane>,
    ) -> Result<Vec<AppendResult>> {
        let columns = AppendColumns::new(&self.tables, batch)?;
        let mut last_collision = None;
        for attempt in 0..APPEND_ATTEMPTS {
            let on_lane = match (&self.flight_pool, lane.as_deref_mut()) {
                (Some(pool), Some(lane)) if self.tenant.is_none() => Some((pool, lane)),
                _ => None,
            };
            let outcome = match on_lane {
                Some((pool, lane)) => {
                    let connection = lane_connection(pool, lane)
                        .await
                        .map_err(failed("acquire connection"))?;
                    let outcome = self.try_append(&mut **connection, batch, &columns).await;
                    if outcome.is_err() {
                        *lane = None;
                    }
                    outcome?
                }
                None => {
                    // A collision aborts a tenant's transaction: each
                    // attempt gets a session of its own.
                    let mut session = Session::open_with_settings(
                        &self.pool,
                        self.tenant.as_deref(),
                        APPEND_SETTINGS,
                    )
                    .await?;
                    let outcome = self
                        .try_append(session.connection(), batch, &columns)
                        .await?;
                    if matches!(outcome, AppendOutcome::Written(_)) {
                        session.finish().await?;
                    }
                    outcome
                }
            };
            match outcome {
                AppendOutcome::Written(results) => return Ok(results),
                AppendOutcome::Collided(error) => {
                    tracing::debug!(attempt, %error, "append collided with a concurrent writer; re-running");
                    last_collision = Some(error);
                    // A random pause, growing with the attempts: two
                    // writers re-running at once would collide again, in
                    // step (up to 16 ms; 16 collisions in a row were seen
                    // between two writers of the same streams without it).
                    let most = 250 * (1u64 << attempt.min(6));
                    tokio::time::sleep(std::time::Duration::from_micros(fastrand::u64(0..=most)))
                        .await;
                }
            }
        }
        Err(Error::Backend {
            backend: BACKEND,
            operation: "append",
            source: format!(
                "the append collided with concurrent writers {APPEND_ATTEMPTS} times; last error: {}",
                last_collision.map_or_else(String::new, |error| error.to_string())
            )
            .into(),
        })
    }
}

impl FlightWriter for PostgresEventStore {
    const BACKEND: &'static str = BACKEND;

    /// A flight connection, kept while flights follow each other.
    type Lane = FlightLane;

    /// One append in a flight of its own (or written alone after its
    /// flight failed): on the flight task's connection.
    async fn append_alone(
        &self,
        lane: &mut FlightLane,
        batch: &[StreamAppend],
    ) -> Result<Vec<AppendResult>> {
        self.write_alone(batch, Some(lane)).await
    }

    /// One statement for the whole flight, in autocommit on a flight
    /// connection (its own transaction, its generic plan set for the
    /// session); a conflict keeps only its own caller's events out (each
    /// caller's streams are a group of their own).
    async fn write_together(
        &self,
        lane: &mut FlightLane,
        flight: &[QueuedAppend],
    ) -> std::result::Result<Vec<Result<Vec<AppendResult>>>, FlightFailure> {
        // Only a store with group commit on has flights, and flight
        // connections.
        let Some(pool) = &self.flight_pool else {
            return Err(FlightFailure::WriteEachAlone);
        };
        let columns =
            AppendColumns::grouped(&self.tables, flight.iter().map(|q| q.batch.as_slice()))
                .map_err(|_| FlightFailure::WriteEachAlone)?;
        let connection = lane_connection(pool, lane)
            .await
            .map_err(|error| FlightFailure::Failed(format!("acquire connection: {error}")))?;
        let written = self.run_append(&mut **connection, &columns).await;
        if written.is_err() {
            *lane = None;
        }
        match written {
            Ok(rows) => {
                let mut outcomes = stream_outcomes(&rows)
                    .map_err(|error| FlightFailure::Failed(error.to_string()))?;
                Ok(flight
                    .iter()
                    .map(|queued| batch_results(&queued.batch, &mut outcomes))
                    .collect())
            }
            // The statement failed and rolled back.
            Err(sqlx::Error::Database(_)) => Err(FlightFailure::WriteEachAlone),
            Err(error) => Err(FlightFailure::Failed(format!("append failed: {error}"))),
        }
    }
}

pub(super) fn classify_append_error(
    tables: &TableNames,
    error: sqlx::Error,
    batch: &[StreamAppend],
) -> Result<AppendOutcome> {
    if let sqlx::Error::Database(db) = &error {
        // Constraint names carry the table prefix (`annals_events_event_id`).
        let constraint = db
            .constraint()
            .and_then(|name| name.strip_prefix(tables.prefix()));
        match (db.code().as_deref(), constraint) {
            (Some("23505"), Some("events_event_id")) => {
                // PostgreSQL names the key in the error's detail:
                // "Key (event_id)=(...) already exists."
                let detail = db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .and_then(|pg| pg.detail())
                    .unwrap_or_default();
                let ids: Vec<String> = batch
                    .iter()
                    .flat_map(|append| &append.events)
                    .map(|event| event.event_id.to_string())
                    .collect();
                let reason = match ids.iter().find(|id| detail.contains(id.as_str())) {
                    Some(id) => {
                        format!("an event with id {id} is already stored; event ids must be unique")
                    }
                    // Under row-level security PostgreSQL withholds the key
                    // from the detail: name the batch's ids instead.
                    None => format!(
                        "one of this batch's event ids ({}{}) is already stored; event ids must be unique",
                        ids.iter().take(10).cloned().collect::<Vec<_>>().join(", "),
                        if ids.len() > 10 { ", ..." } else { "" }
                    ),
                };
                return Err(Error::invalid("event id", reason));
            }
            // Another writer took the version first, or two multi-stream
            // appends waited on each other: re-run on a fresh snapshot.
            (Some("23505"), Some("events_stream_version"))
            | (Some("40P01"), _)
            | (Some("40001"), _) => return Ok(AppendOutcome::Collided(error)),
            _ => {}
        }
    }
    Err(failed("append")(error))
}

impl PostgresEventStore {
    /// The append itself (`append_batch` adds its metrics).
    pub(super) async fn write_batch(
        &self,
        mut batch: Vec<StreamAppend>,
    ) -> Result<Vec<AppendResult>> {
        self.stamp_tenant(&mut batch)?;
        validate_batch(&batch)?;
        for append in &batch {
            // Only checks that the largest possible version fits the column.
            next_version(&append.stream_id, 0, append.events.len())?;
        }
        if let Some(group) = self.group.as_ref().filter(|group| group.accepts(&batch)) {
            return submit(group, self, batch).await;
        }
        // Too large to share a flight (or group commit is off): on the
        // store's pool, leaving the flight connections to flights.
        self.write_alone(&batch, None).await
    }
}
