//! A health report for a running service: can the store be reached, can
//! the cache, and how far behind (and in what state) is each projection.
//! Meant for a health endpoint or a start-up log line; it says what is
//! wrong in words and never carries a secret (store errors name servers
//! with their passwords redacted).

use std::fmt;
use std::time::{Duration, Instant};

use crate::cache::{CacheKey, EventCache};
use crate::projection::runner::{ProjectionState, ProjectionStatus};
use crate::store::EventStore;
use crate::store::stream::StreamId;

/// The outcome of reaching one component.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// It answered, in this long.
    Healthy {
        /// Round trip of the probe.
        latency: Duration,
    },
    /// It did not; why.
    Unhealthy {
        /// The error, as the component reported it.
        error: String,
    },
}

impl Check {
    /// Whether the component answered.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Check::Healthy { .. })
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Healthy { latency } => {
                write!(f, "ok ({:.1} ms)", latency.as_secs_f64() * 1000.0)
            }
            Check::Unhealthy { error } => write!(f, "FAILING: {error}"),
        }
    }
}

/// One projection's part of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionHealth {
    /// The projection's name.
    pub name: &'static str,
    /// Its runner's state.
    pub state: ProjectionState,
    /// About how many events of the log it has not applied (positions up to
    /// the head its last read saw; see `ProjectionStatus::lag_events`).
    pub lag_events: u64,
    /// Age of the last event it applied, when it applied it.
    pub lag: Duration,
    /// Its last error, while it is failing.
    pub last_error: Option<String>,
}

/// Store, cache and projections at one moment.
///
/// ```
/// use annals::observability::health::HealthReport;
/// use annals::store::InMemoryEventStore;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = InMemoryEventStore::new();
/// let report = HealthReport::check(&store, None).await;
/// assert!(report.is_healthy());
/// assert!(report.to_string().starts_with("store (memory): ok"));
/// # });
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    /// The store's backend name.
    pub backend: &'static str,
    /// Whether the store answered a read.
    pub store: Check,
    /// Whether the cache answered a lookup (`None`: no cache configured).
    pub cache: Option<Check>,
    /// Each projection added with [`with_projection`](Self::with_projection).
    pub projections: Vec<ProjectionHealth>,
}

impl HealthReport {
    /// Probes the store (a read of one stream's version, an index lookup)
    /// and the cache (a lookup of a key nothing writes).
    pub async fn check(store: &dyn EventStore, cache: Option<&dyn EventCache>) -> HealthReport {
        let started = Instant::now();
        let probed = match StreamId::new("annals-health-probe") {
            Ok(probe) => store.stream_version(&probe).await.map(drop),
            Err(error) => Err(error),
        };
        let store_check = match probed {
            Ok(()) => Check::Healthy {
                latency: started.elapsed(),
            },
            Err(error) => Check::Unhealthy {
                error: error.to_string(),
            },
        };
        let cache_check = match cache {
            None => None,
            Some(cache) => {
                let started = Instant::now();
                let key = CacheKey::new(None, "health", "probe");
                Some(match cache.get(&key).await {
                    Ok(_) => Check::Healthy {
                        latency: started.elapsed(),
                    },
                    Err(error) => Check::Unhealthy {
                        error: error.to_string(),
                    },
                })
            }
        };
        HealthReport {
            backend: store.backend(),
            store: store_check,
            cache: cache_check,
            projections: Vec::new(),
        }
    }

    /// Adds a projection's status (from its runner's
    /// [`status`](crate::task::TaskHandle::status)).
    pub fn with_projection(mut self, status: &ProjectionStatus) -> Self {
        self.projections.push(ProjectionHealth {
            name: status.name,
            state: status.state.clone(),
            lag_events: status.lag_events,
            lag: status.lag,
            last_error: status.last_error.clone(),
        });
        self
    }

    /// Healthy when the store and the cache answer and no projection is
    /// failing.
    pub fn is_healthy(&self) -> bool {
        self.store.is_healthy()
            && self.cache.as_ref().is_none_or(Check::is_healthy)
            && self
                .projections
                .iter()
                .all(|projection| projection.state != ProjectionState::Failed)
    }
}

impl fmt::Display for HealthReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "store ({}): {}", self.backend, self.store)?;
        match &self.cache {
            Some(cache) => writeln!(f, "cache: {cache}")?,
            None => writeln!(f, "cache: none configured")?,
        }
        for projection in &self.projections {
            write!(
                f,
                "projection {}: {:?}, {} events behind, last event {:.1} s old",
                projection.name,
                projection.state,
                projection.lag_events,
                projection.lag.as_secs_f64()
            )?;
            if let Some(error) = &projection.last_error {
                write!(f, ", last error: {error}")?;
            }
            writeln!(f)?;
        }
        write!(
            f,
            "overall: {}",
            if self.is_healthy() {
                "healthy"
            } else {
                "UNHEALTHY"
            }
        )
    }
}
