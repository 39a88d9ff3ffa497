//! Tags and append conditions: consistency across streams.
//!
//! An event carries *tags* (`email:ada@example.test`, `role:admin`), usually
//! declared on its type with `#[event(tags(...))]`. A [`Criterion`] picks the
//! events of some types carrying some tags; an [`AppendCondition`] attached to
//! an append ([`StreamAppend::with_condition`](super::StreamAppend::with_condition))
//! makes it fail, writing nothing, when an event matching its criteria was
//! recorded after the position the caller decided at. The check and the
//! append are atomic on every backend, so of two writers that decided on the
//! same facts, one wins and the other gets [`Error::AppendConditionFailed`]
//! and decides again: a rule that spans streams (an email unique within a
//! tenant) holds without a read model and without a race. Conditions are
//! checked within the tenant of the stream appended to.
//!
//! Every criterion names at least one tag: the backends lock on a
//! criterion's first tag while the append runs (PostgreSQL, with an advisory
//! lock that only writers of that tag wait on), so put the narrowest tag
//! first. Tags are an index of the payload they were taken from: the hash
//! chain covers the payload, not the tags.
//!
//! ```
//! use annals::prelude::*;
//! use annals::store::{AppendCondition, Criterion};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> annals::Result<()> {
//! let store = InMemoryEventStore::new();
//! let registered = |user: &str| {
//!     Ok::<_, annals::Error>(
//!         NewEvent::json("iam.user.registered", &serde_json::json!({ "user": user }))?
//!             .with_tags(["email:ada@example.test"]),
//!     )
//! };
//! // "No user registered with this email": what both writers decided on.
//! let unique = AppendCondition::none_match(
//!     Criterion::tagged(["email:ada@example.test"]).of_types(["iam.user.registered"]),
//! );
//! let first = StreamAppend::new(StreamId::new("user-1")?, ExpectedVersion::NoStream, vec![registered("1")?])
//!     .with_condition(unique.clone());
//! store.append_batch(vec![first]).await?;
//!
//! let second = StreamAppend::new(StreamId::new("user-2")?, ExpectedVersion::NoStream, vec![registered("2")?])
//!     .with_condition(unique);
//! let refused = store.append_batch(vec![second]).await;
//! assert!(matches!(refused, Err(annals::Error::AppendConditionFailed { .. })));
//! # Ok(())
//! # }
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::position::LogPosition;

/// Longest accepted tag, in bytes.
pub const MAX_TAG_LEN: usize = 256;
/// Most tags on one event.
pub const MAX_TAGS_PER_EVENT: usize = 32;
/// Most criteria in one append condition.
pub const MAX_CRITERIA: usize = 32;

/// The events of some types that carry some tags: an event matches when its
/// type is one of [`event_types`](Self::event_types) (any type when empty)
/// and it carries every one of [`tags`](Self::tags).
///
/// ```
/// use annals::store::Criterion;
///
/// let criterion = Criterion::tagged(["email:ada@example.test"])
///     .of_types(["iam.user.registered", "iam.user.email_changed"]);
/// assert!(criterion.matches("iam.user.registered", &["email:ada@example.test".into(), "tenant:acme".into()]));
/// assert!(!criterion.matches("iam.user.registered", &["email:bob@example.test".into()]));
/// assert!(!criterion.matches("iam.user.removed", &["email:ada@example.test".into()]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Criterion {
    /// The event types to match (any of them); empty matches every type.
    pub event_types: Vec<String>,
    /// The tags a matching event carries, all of them. The first is the one
    /// appends lock on: name the narrowest first.
    pub tags: Vec<String>,
}

impl Criterion {
    /// The events of any type carrying every one of `tags`.
    pub fn tagged<T: Into<String>>(tags: impl IntoIterator<Item = T>) -> Self {
        Criterion {
            event_types: Vec::new(),
            tags: tags.into_iter().map(Into::into).collect(),
        }
    }

    /// Only events of these types.
    pub fn of_types<T: Into<String>>(mut self, event_types: impl IntoIterator<Item = T>) -> Self {
        self.event_types
            .extend(event_types.into_iter().map(Into::into));
        self
    }

    /// Whether an event of `event_type` carrying `tags` matches.
    pub fn matches(&self, event_type: &str, tags: &[String]) -> bool {
        (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
            && self.tags.iter().all(|tag| tags.contains(tag))
    }

    /// The tag appends lock on.
    pub(crate) fn lock_tag(&self) -> &str {
        self.tags.first().map_or("", String::as_str)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.tags.is_empty() {
            return Err(Error::invalid(
                "append condition",
                format!(
                    "the criterion {self} names no tag; a condition needs at least one tag per criterion (the tag the append locks on)"
                ),
            ));
        }
        for tag in &self.tags {
            validate_tag(tag)?;
        }
        for event_type in &self.event_types {
            crate::event::envelope::validate_event_type(event_type)?;
        }
        Ok(())
    }
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let types = if self.event_types.is_empty() {
            "any type".to_owned()
        } else {
            self.event_types.join(" | ")
        };
        write!(f, "[{types}] tagged [{}]", self.tags.join(", "))
    }
}

/// One or more [`Criterion`]s: an event matches when it matches any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCriteria {
    /// The criteria, any of which an event may match.
    pub criteria: Vec<Criterion>,
}

impl EventCriteria {
    /// No criteria yet (matches nothing).
    pub fn new() -> Self {
        EventCriteria::default()
    }

    /// Adds a criterion.
    pub fn or(mut self, criterion: Criterion) -> Self {
        self.criteria.push(criterion);
        self
    }

    /// Whether an event of `event_type` carrying `tags` matches any criterion.
    pub fn matches(&self, event_type: &str, tags: &[String]) -> bool {
        self.criteria
            .iter()
            .any(|criterion| criterion.matches(event_type, tags))
    }

    /// Refuses criteria no backend can read or lock on: none at all, a
    /// criterion without tags, bad tags or type names.
    pub(crate) fn validate(&self) -> Result<()> {
        let count = self.criteria.len();
        if count == 0 {
            return Err(Error::invalid(
                "append condition",
                "no criteria: they would match nothing",
            ));
        }
        if count > MAX_CRITERIA {
            return Err(Error::invalid(
                "append condition",
                format!("{count} criteria; the limit is {MAX_CRITERIA}"),
            ));
        }
        self.criteria.iter().try_for_each(Criterion::validate)
    }

    /// Every tag the criteria name.
    pub(crate) fn tags(&self) -> impl Iterator<Item = &str> {
        self.criteria
            .iter()
            .flat_map(|criterion| criterion.tags.iter().map(String::as_str))
    }
}

impl From<Criterion> for EventCriteria {
    fn from(criterion: Criterion) -> Self {
        EventCriteria {
            criteria: vec![criterion],
        }
    }
}

impl FromIterator<Criterion> for EventCriteria {
    fn from_iter<I: IntoIterator<Item = Criterion>>(iter: I) -> Self {
        EventCriteria {
            criteria: iter.into_iter().collect(),
        }
    }
}

/// "No event matching these criteria after this position": an append that
/// carries it writes nothing if such an event exists in the stream's tenant
/// when it is checked, atomically with the append (see the
/// [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendCondition {
    /// The events that must not exist.
    pub fail_if_events_match: EventCriteria,
    /// Only events after this position count: the position the caller read
    /// up to when it decided. `None`: any matching event counts.
    pub after: Option<LogPosition>,
}

impl AppendCondition {
    /// Fails the append if any event matches `criteria` (add
    /// [`after`](Self::after) to count only newer ones).
    pub fn none_match(criteria: impl Into<EventCriteria>) -> Self {
        AppendCondition {
            fail_if_events_match: criteria.into(),
            after: None,
        }
    }

    /// Counts only events after `position` (`None`: every event).
    pub fn after(mut self, position: Option<LogPosition>) -> Self {
        self.after = position;
        self
    }

    /// The position events must be after to count (the start of the log
    /// when none was given).
    pub(crate) fn after_or_start(&self) -> LogPosition {
        self.after.unwrap_or(LogPosition::START)
    }

    /// Refuses conditions no backend can check: no criteria, a criterion
    /// without tags, bad tags or type names.
    pub(crate) fn validate(&self) -> Result<()> {
        self.fail_if_events_match.validate()
    }

    /// The error for an event at `found` matching `criterion`, for an
    /// append to `stream`.
    pub(crate) fn failed(&self, stream: &str, criterion: &Criterion, found: LogPosition) -> Error {
        Error::AppendConditionFailed {
            stream: stream.to_owned(),
            criterion: criterion.to_string(),
            after: self.after,
            found,
        }
    }
}

/// Checks one tag: not empty, at most [`MAX_TAG_LEN`] bytes, no control
/// characters.
pub(crate) fn validate_tag(tag: &str) -> Result<()> {
    if tag.is_empty() {
        return Err(Error::invalid("tag", "a tag may not be empty"));
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(Error::invalid(
            "tag",
            format!(
                "tag `{}…` is {} bytes long; the limit is {MAX_TAG_LEN}",
                tag.chars().take(32).collect::<String>(),
                tag.len()
            ),
        ));
    }
    if tag.chars().any(char::is_control) {
        return Err(Error::invalid(
            "tag",
            format!("tag {tag:?} contains a control character"),
        ));
    }
    Ok(())
}

/// The tenant whose events a read by criteria on a handle scoped to
/// `scope` counts (`""`: events without a tenant): the handle's own; a
/// handle refuses to read another's.
pub(crate) fn criteria_tenant(scope: Option<&str>, tenant: Option<&str>) -> Result<String> {
    match (scope, tenant) {
        (Some(own), Some(asked)) if own != asked => Err(Error::invalid(
            "tenant id",
            format!("a handle scoped to tenant `{own}` reads only its own events, not `{asked}`'s"),
        )),
        (Some(own), _) => Ok(own.to_owned()),
        (None, asked) => Ok(asked.unwrap_or("").to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_criterion_needs_every_tag_and_one_of_its_types() {
        let criterion = Criterion::tagged(["a", "b"]).of_types(["x"]);
        assert!(criterion.matches("x", &["b".into(), "a".into(), "c".into()]));
        assert!(!criterion.matches("x", &["a".into()]));
        assert!(!criterion.matches("y", &["a".into(), "b".into()]));
        assert!(Criterion::tagged(["a"]).matches("anything", &["a".into()]));
    }

    #[test]
    fn conditions_without_tags_or_criteria_are_refused_naming_the_field() {
        for condition in [
            AppendCondition::none_match(EventCriteria::new()),
            AppendCondition::none_match(Criterion::tagged(Vec::<String>::new()).of_types(["x"])),
            AppendCondition::none_match(Criterion::tagged([""])),
            AppendCondition::none_match(Criterion::tagged(["a"]).of_types(["has space"])),
        ] {
            let error = condition.validate().expect_err("refused");
            assert!(
                matches!(
                    error,
                    Error::InvalidInput {
                        field: "append condition" | "tag" | "event type",
                        ..
                    }
                ),
                "{error}"
            );
        }
    }
}
