//! Opening a store from a URL, as `DATABASE_URL` gives it, and keeping
//! passwords out of messages.

use std::sync::Arc;

use super::{EventStore, InMemoryEventStore};
use crate::error::{Error, Result};

/// Opens the store a URL names:
///
/// | URL | store |
/// | --- | --- |
/// | `memory:` | [`InMemoryEventStore`] |
/// | `sqlite://path/to/events.db` or `sqlite:events.db` | [`SqliteEventStore`](super::SqliteEventStore) (feature `sqlite`) |
/// | `postgres://user:password@host:port/db` | [`PostgresEventStore`](super::PostgresEventStore) (feature `postgres`) |
///
/// SQL stores create or upgrade their tables on connect.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = annals::store::connect("memory:").await?;
/// assert_eq!(store.backend(), "memory");
///
/// let error = annals::store::connect("mysql://root:hunter2@db/app").await.err().unwrap();
/// assert!(error.to_string().contains("mysql://root:***@db/app"));
/// assert!(!error.to_string().contains("hunter2"));
/// # Ok::<(), annals::Error>(())
/// # }).unwrap();
/// ```
pub async fn connect(url: &str) -> Result<Arc<dyn EventStore>> {
    let (scheme, _rest) = url.split_once(':').unwrap_or((url, ""));
    match scheme {
        "memory" => Ok(Arc::new(InMemoryEventStore::new())),
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            let path = _rest.strip_prefix("//").unwrap_or(_rest);
            let path = path.split('?').next().unwrap_or(path);
            if path.is_empty() {
                return Err(Error::Config(format!(
                    "the SQLite URL {url:?} names no file"
                )));
            }
            Ok(Arc::new(super::SqliteEventStore::open(path).await?))
        }
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(super::PostgresEventStore::connect(url).await?)),
        _ => Err(Error::Config(format!(
            "cannot open an event store at {}: unsupported scheme `{scheme}` (this build supports {})",
            redact_url(url),
            supported_schemes()
        ))),
    }
}

fn supported_schemes() -> &'static str {
    match (cfg!(feature = "sqlite"), cfg!(feature = "postgres")) {
        (true, true) => "memory:, sqlite:, postgres:",
        (true, false) => "memory:, sqlite: (enable the `postgres` feature for postgres:)",
        (false, true) => "memory:, postgres: (enable the `sqlite` feature for sqlite:)",
        (false, false) => "memory: (enable the `sqlite` or `postgres` feature for more)",
    }
}

/// The URL with any password replaced by `***`, for logs and errors.
///
/// ```
/// use annals::store::redact_url;
///
/// assert_eq!(redact_url("postgres://app:s3cret@db:5432/iam"), "postgres://app:***@db:5432/iam");
/// assert_eq!(redact_url("postgres://app@db/iam"), "postgres://app@db/iam");
/// assert_eq!(redact_url("redis://:s3cret@cache:6379"), "redis://:***@cache:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |offset| authority_start + offset);
    let authority = &url[authority_start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..authority_start],
            &userinfo[..colon],
            &url[authority_start + at..]
        ),
        None => url.to_owned(),
    }
}
