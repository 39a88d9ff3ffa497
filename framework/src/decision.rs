//! Decisions: commands that span aggregates or belong to no single stream.
//!
//! A [`Decision`] declares the events it depends on (by types and tags:
//! [`EventCriteria`]), folds them into a state, and decides what to append.
//! [`Decisions::execute`] reads the matching events (gap-safe, in the
//! tenant's log), decides, and appends with an [`AppendCondition`] that no
//! matching event was recorded after the last one it read, so the decision
//! is still true when its events are stored. When another writer recorded
//! such an event first, it reads again and decides again, up to a number of
//! attempts, as [`Repository::execute`](crate::Repository::execute) does
//! for one aggregate.
//!
//! The rule "an email is registered at most once per tenant" in a few lines:
//!
//! ```
//! use annals::decision::{Decision, Decisions};
//! use annals::prelude::*;
//! use annals::store::{Criterion, EventCriteria};
//!
//! #[annals::event(name = "iam.user.registered", tags(email))]
//! struct UserRegistered {
//!     user_id: String,
//!     email: String,
//! }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("{0} is already registered")]
//! struct EmailTaken(String);
//!
//! struct Register {
//!     user_id: String,
//!     email: String,
//! }
//!
//! impl Decision for Register {
//!     type State = bool; // taken?
//!     type Error = EmailTaken;
//!
//!     fn criteria(&self) -> EventCriteria {
//!         Criterion::tagged([format!("email:{}", self.email)])
//!             .of_types(["iam.user.registered"])
//!             .into()
//!     }
//!
//!     fn evolve(&self, taken: &mut bool, _event: &RecordedEvent) -> annals::Result<()> {
//!         *taken = true;
//!         Ok(())
//!     }
//!
//!     fn decide(&self, taken: &bool) -> Result<Appends, EmailTaken> {
//!         if *taken {
//!             return Err(EmailTaken(self.email.clone()));
//!         }
//!         let registered = UserRegistered { user_id: self.user_id.clone(), email: self.email.clone() };
//!         Ok(Appends::new().to_new::<User>(&self.user_id, [registered]))
//!     }
//! }
//!
//! #[annals::aggregate(name = "user", events(UserRegistered))]
//! #[derive(Default)]
//! struct User;
//!
//! impl Apply<UserRegistered> for User {
//!     fn apply(&mut self, _event: &UserRegistered) {}
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = std::sync::Arc::new(InMemoryEventStore::new());
//! let decisions = Decisions::new(store);
//! let ada = Register { user_id: "1".into(), email: "ada@example.test".into() };
//! let decided = decisions.execute(&ada, Metadata::new()).await?;
//! assert_eq!(decided.results.len(), 1);
//!
//! let again = Register { user_id: "2".into(), email: "ada@example.test".into() };
//! let refused = decisions.execute(&again, Metadata::new()).await;
//! assert!(matches!(refused, Err(CommandError::Rejected(EmailTaken(_)))));
//! # Ok(())
//! # }
//! ```

use std::fmt::Display;
use std::sync::Arc;

use crate::aggregate::Aggregate;
use crate::aggregate::repository::CommandError;
use crate::error::Result;
use crate::event::envelope::NewEvent;
use crate::event::envelope::RecordedEvent;
use crate::event::metadata::Metadata;
use crate::store::position::LogPosition;
use crate::store::stream::{ExpectedVersion, StreamId};
use crate::store::{
    AppendCondition, AppendResult, EventCriteria, EventStore, EventStoreExt, StreamAppend,
};

/// How many times [`Decisions::execute`] decides before giving up on
/// conflicts, unless set with [`Decisions::with_max_attempts`].
pub const DEFAULT_MAX_ATTEMPTS: usize = 16;

/// Events read per round trip while a decision builds its state.
const READ_BATCH: usize = 500;

/// A command decided on the events of several streams (see the
/// [module docs](self)).
pub trait Decision: Send + Sync {
    /// What the decision knows, built from the events it reads.
    type State: Default + Send;
    /// Why it refuses.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The events it depends on. Every criterion names at least one tag:
    /// the narrowest first (appends lock on it). None: the decision reads
    /// only [`streams`](Self::streams), whose versions guard it.
    fn criteria(&self) -> EventCriteria;

    /// Streams whose whole history it also reads: other aggregates' state
    /// (none by default). Their events are folded with
    /// [`evolve`](Self::evolve) first, stream by stream in the order
    /// given, before the matching events (each event once, even if it
    /// also matches the criteria); an append to one of them expects
    /// the version read, so it too is still current when the decision's
    /// events are stored.
    fn streams(&self) -> Vec<StreamId> {
        Vec::new()
    }

    /// Folds one event (of a stream it reads, or matching its criteria, in
    /// log order) into the state.
    fn evolve(&self, state: &mut Self::State, event: &RecordedEvent) -> Result<()>;

    /// Decides on the state: the appends to make (none: nothing to do), or
    /// a refusal. Every event gets the metadata given to
    /// [`Decisions::execute`] where it has none of its own.
    fn decide(&self, state: &Self::State) -> std::result::Result<Appends, Self::Error>;
}

/// What an executed decision appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// Each stream's outcome, in the order the decision gave them (empty:
    /// the decision appended nothing).
    pub results: Vec<AppendResult>,
    /// The log position of the last event appended (`None` when nothing
    /// was), for waiting until a reader has seen it.
    pub position: Option<LogPosition>,
    /// How many times the decision was made (1 unless it hit conflicts; 0
    /// when an earlier execution's outcome came back).
    pub attempts: usize,
    /// The decision was executed before under the same command id
    /// ([`Metadata::with_command_id`]): these are that execution's appends,
    /// and nothing was appended now.
    pub repeated: bool,
}

/// Runs [`Decision`]s against a store, within one tenant.
#[derive(Debug, Clone)]
pub struct Decisions {
    store: Arc<dyn EventStore>,
    tenant: Option<String>,
    max_attempts: usize,
}

impl Decisions {
    /// Decisions over `store`'s events: a tenant handle's own tenant; on
    /// the unscoped store, the tenant of the metadata each execution is
    /// given (events without a tenant when it names none), unless
    /// [`for_tenant`](Self::for_tenant) says otherwise.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Decisions {
            store,
            tenant: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// Decides within `tenant` on an unscoped store: reads its events and
    /// stamps it on the events appended.
    pub fn for_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Decides at most `attempts` times (at least 1) before returning the
    /// last conflict.
    pub fn with_max_attempts(mut self, attempts: usize) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Reads, decides and appends, deciding again after a conflict (see
    /// the [module docs](self)). A refusal is [`CommandError::Rejected`];
    /// conflicts that outlast every attempt are [`CommandError::Store`]
    /// with the last one ([`Error::AppendConditionFailed`](crate::Error::AppendConditionFailed) or
    /// [`Error::VersionConflict`](crate::Error::VersionConflict)).
    ///
    /// With a command id in `metadata` ([`Metadata::with_command_id`]), the
    /// events appended carry it as a tag, and a decision executed before
    /// under that id (in this tenant) is not decided again: that
    /// execution's appends come back, marked [`Decided::repeated`]. So a
    /// client that lost the answer retries safely, as with
    /// [`Repository::execute`](crate::Repository::execute).
    pub async fn execute<D: Decision>(
        &self,
        decision: &D,
        metadata: Metadata,
    ) -> std::result::Result<Decided, CommandError<D::Error>> {
        let criteria = decision.criteria();
        let tenant = self.tenant.clone().or_else(|| metadata.tenant_id.clone());
        let command_tag = crate::aggregate::repository::command_tag(&metadata)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Checked on every attempt: a first execution whose commit was
            // still landing shows up as a conflict, then here.
            if let Some(tag) = &command_tag
                && let Some(earlier) = self.earlier_outcome(tag, tenant.as_deref()).await?
            {
                return Ok(earlier);
            }
            let (state, read_up_to, versions) = self
                .read_state(decision, tenant.as_deref(), &criteria)
                .await?;
            let decided = decision.decide(&state).map_err(CommandError::Rejected)?;
            let mut appends = decided.into_stream_appends().map_err(CommandError::Store)?;
            if appends.is_empty() {
                return Ok(Decided {
                    results: Vec::new(),
                    position: None,
                    attempts: attempt,
                    repeated: false,
                });
            }
            // A decision on streams alone is guarded by their versions.
            let condition = (!criteria.criteria.is_empty()).then(|| AppendCondition {
                fail_if_events_match: criteria.clone(),
                after: read_up_to,
            });
            for append in &mut appends {
                if let Some((_, version)) = versions.iter().find(|(id, _)| *id == append.stream_id)
                {
                    append.expected = ExpectedVersion::Exact(*version);
                }
                for event in &mut append.events {
                    stamp(&mut event.metadata, &metadata, tenant.as_deref());
                    if let Some(tag) = &command_tag
                        && !event.tags.contains(tag)
                    {
                        event.tags.push(tag.clone());
                    }
                }
                append.condition.clone_from(&condition);
            }
            match self.store.append_batch(appends).await {
                Ok(results) => {
                    return Ok(Decided {
                        position: results.iter().map(|result| result.position).max(),
                        results,
                        attempts: attempt,
                        repeated: false,
                    });
                }
                Err(conflict) if conflict.is_conflict() && attempt < self.max_attempts => {
                    tracing::debug!(attempt, %conflict, "decision conflicted; deciding again");
                }
                Err(other) => return Err(CommandError::Store(other)),
            }
        }
    }

    /// The appends of the execution whose events carry the command `tag`,
    /// if there was one: each stream's versions and positions as recorded.
    async fn earlier_outcome(&self, tag: &str, tenant: Option<&str>) -> Result<Option<Decided>> {
        let recorded =
            crate::aggregate::repository::command_events(self.store.as_ref(), tag, tenant).await?;
        let mut results: Vec<(StreamId, AppendResult)> = Vec::new();
        for event in &recorded {
            match results
                .iter_mut()
                .find(|(stream, _)| *stream == event.stream_id)
            {
                Some((_, result)) => {
                    result.last_version = event.version;
                    result.position = event.position;
                    result.positions.push(event.position);
                }
                None => results.push((
                    event.stream_id.clone(),
                    AppendResult {
                        first_version: event.version,
                        last_version: event.version,
                        position: event.position,
                        positions: vec![event.position],
                        recorded_at: event.recorded_at,
                    },
                )),
            }
        }
        Ok((!results.is_empty()).then(|| Decided {
            position: recorded.last().map(|event| event.position),
            results: results.into_iter().map(|(_, result)| result).collect(),
            attempts: 0,
            repeated: true,
        }))
    }

    /// The decision's state from the streams it reads and every matching
    /// event; the position of the last matching one (`None`: none
    /// matched), and the version of each stream read.
    async fn read_state<D: Decision>(
        &self,
        decision: &D,
        tenant: Option<&str>,
        criteria: &EventCriteria,
    ) -> Result<(D::State, Option<LogPosition>, Vec<(StreamId, u64)>)> {
        let mut state = D::State::default();
        let mut versions = Vec::new();
        for stream in decision.streams() {
            let events = self.store.load_stream(&stream).await?;
            for event in &events {
                decision.evolve(&mut state, event)?;
            }
            versions.push((stream, events.last().map_or(0, |event| event.version)));
        }
        let mut after = None;
        if criteria.criteria.is_empty() {
            return Ok((state, after, versions));
        }
        loop {
            let events = self
                .store
                .read_matching(tenant, criteria, after, READ_BATCH)
                .await?;
            let Some(last) = events.last().map(|event| event.position) else {
                return Ok((state, after, versions));
            };
            // An event of a stream read above was folded there already.
            let fresh = events.iter().filter(|event| {
                !versions
                    .iter()
                    .any(|(id, version)| *id == event.stream_id && event.version <= *version)
            });
            for event in fresh {
                decision.evolve(&mut state, event)?;
            }
            after = Some(last);
            if events.len() < READ_BATCH {
                return Ok((state, after, versions));
            }
        }
    }
}

/// What a [`Decision`] appends: events for aggregates' instances
/// ([`to`](Self::to), [`to_new`](Self::to_new)) or any [`StreamAppend`]
/// ([`with`](Self::with)); nothing when empty. A stream id or event that
/// does not encode is kept and returned by [`Decisions::execute`] as
/// [`CommandError::Store`] naming it, so `decide` maps no framework errors
/// into its own.
///
/// ```
/// use annals::decision::Appends;
/// use annals::prelude::*;
///
/// #[annals::event(name = "doc.club_member.joined")]
/// struct Joined {
///     email: String,
/// }
///
/// #[annals::aggregate(name = "club_member", events(Joined))]
/// #[derive(Default)]
/// struct Member {
///     email: Option<String>,
/// }
///
/// impl Apply<Joined> for Member {
///     fn apply(&mut self, event: &Joined) {
///         self.email = Some(event.email.clone());
///     }
/// }
///
/// let appends = Appends::new().to_new::<Member>("m-1", [Joined { email: "ada@x.test".into() }]);
/// assert!(!appends.is_empty());
/// assert!(Appends::new().to::<Member>("m-2", []).is_empty());
/// ```
#[derive(Debug, Default)]
pub struct Appends {
    appends: Vec<StreamAppend>,
    invalid: Option<crate::Error>,
}

impl Appends {
    /// Nothing to append (yet).
    pub fn new() -> Self {
        Appends::default()
    }

    /// `events` for the instance `id` of the aggregate `A`, none when
    /// empty. The append expects the version the decision read when the
    /// stream is one of its [`Decision::streams`], and any version
    /// otherwise (the criteria's condition still guards it).
    pub fn to<A: Aggregate>(
        self,
        id: impl Display,
        events: impl IntoIterator<Item = A::Event>,
    ) -> Self {
        self.aggregate::<A>(&id, ExpectedVersion::Any, events)
    }

    /// `events` starting the instance `id` of the aggregate `A`: the
    /// append fails with a conflict if the stream exists.
    pub fn to_new<A: Aggregate>(
        self,
        id: impl Display,
        events: impl IntoIterator<Item = A::Event>,
    ) -> Self {
        self.aggregate::<A>(&id, ExpectedVersion::NoStream, events)
    }

    /// Any append (events of a stream that is no aggregate's, an expected
    /// version of your own).
    pub fn with(mut self, append: StreamAppend) -> Self {
        self.appends.push(append);
        self
    }

    /// Whether there is nothing to append.
    pub fn is_empty(&self) -> bool {
        self.appends.is_empty() && self.invalid.is_none()
    }

    fn aggregate<A: Aggregate>(
        mut self,
        id: &dyn Display,
        expected: ExpectedVersion,
        events: impl IntoIterator<Item = A::Event>,
    ) -> Self {
        let encoded: Result<Vec<NewEvent>> = events
            .into_iter()
            .map(|event| NewEvent::from_event(&event))
            .collect();
        let append = encoded.and_then(|events| {
            if events.is_empty() {
                return Ok(None);
            }
            Ok(Some(StreamAppend::new(A::stream_id(id)?, expected, events)))
        });
        match append {
            Ok(append) => self.appends.extend(append),
            Err(error) => {
                self.invalid.get_or_insert(error);
            }
        }
        self
    }

    /// The appends, or the first stream id or event that did not encode.
    fn into_stream_appends(self) -> Result<Vec<StreamAppend>> {
        match self.invalid {
            Some(error) => Err(error),
            None => Ok(self.appends),
        }
    }
}

impl From<Vec<StreamAppend>> for Appends {
    fn from(appends: Vec<StreamAppend>) -> Self {
        Appends {
            appends,
            invalid: None,
        }
    }
}

impl From<StreamAppend> for Appends {
    fn from(append: StreamAppend) -> Self {
        Appends::new().with(append)
    }
}

/// Fills what an event's metadata leaves out from the execution's, and the
/// tenant decided in.
fn stamp(event: &mut Metadata, given: &Metadata, tenant: Option<&str>) {
    if event.correlation_id.is_none() {
        event.correlation_id = given.correlation_id;
    }
    if event.causation_id.is_none() {
        event.causation_id = given.causation_id;
    }
    if event.actor.is_none() {
        event.actor.clone_from(&given.actor);
    }
    if event.trace_context.is_none() {
        event.trace_context.clone_from(&given.trace_context);
    }
    if event.tenant_id.is_none() {
        event.tenant_id = tenant
            .map(str::to_owned)
            .or_else(|| given.tenant_id.clone());
    }
    for (key, value) in &given.headers {
        event
            .headers
            .entry(key.clone())
            .or_insert_with(|| value.clone());
    }
}
