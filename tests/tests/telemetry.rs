//! Observability: the documented metrics reach an installed `metrics`
//! recorder with their labels, the health report says what is wrong, and
//! neither logs nor errors ever carry a planted secret (a password in a
//! URL) or planted personal data (an email address in a payload).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use annals::cache::{InProcessCache, RedisCache};
use annals::observability::health::{Check, HealthReport};
use annals::observability::telemetry;
use annals::prelude::*;
use annals::projection::runner::{InMemory, ProjectionRunner, ProjectionState, ProjectionStatus};
use annals::subscription::handler::RetryPolicy;
use annals::subscription::handler_registry::{HandlerRegistry, HandlerSpec};
use annals_tests::backends::{postgres_url, redis_url};
use annals_tests::domain::{CreateTenant, RenameTenant, Tenant, TenantCreated, TenantDirectory};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Recorder, SharedString, Unit};
use serde_json::json;

/// A `metrics` recorder that keeps every value, keyed `name{label=value,...}`.
#[derive(Default)]
struct Recorded {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<String, Arc<Samples>>>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl metrics::HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().expect("samples").push(value);
    }
}

fn render(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|label| format!("{}={}", label.key(), label.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

fn entry<T: Default>(map: &Mutex<BTreeMap<String, Arc<T>>>, key: &Key) -> Arc<T> {
    map.lock()
        .expect("metrics map")
        .entry(render(key))
        .or_default()
        .clone()
}

struct Shared(&'static Recorded);

impl Recorder for Shared {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &metrics::Metadata<'_>) -> Counter {
        Counter::from_arc(entry(&self.0.counters, key))
    }
    fn register_gauge(&self, key: &Key, _: &metrics::Metadata<'_>) -> Gauge {
        Gauge::from_arc(entry(&self.0.gauges, key))
    }
    fn register_histogram(&self, key: &Key, _: &metrics::Metadata<'_>) -> Histogram {
        Histogram::from_arc(entry(&self.0.histograms, key))
    }
}

fn recorded() -> &'static Recorded {
    static RECORDED: OnceLock<&'static Recorded> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let recorded: &'static Recorded = Box::leak(Box::default());
        metrics::set_global_recorder(Shared(recorded)).expect("the only recorder");
        recorded
    })
}

fn counter(name: &str) -> u64 {
    recorded()
        .counters
        .lock()
        .expect("counters")
        .get(name)
        .map_or(0, |value| value.load(Ordering::Relaxed))
}

fn gauge(name: &str) -> Option<f64> {
    recorded()
        .gauges
        .lock()
        .expect("gauges")
        .get(name)
        .map(|value| f64::from_bits(value.load(Ordering::Relaxed)))
}

fn samples(name: &str) -> usize {
    recorded()
        .histograms
        .lock()
        .expect("histograms")
        .get(name)
        .map_or(0, |samples| samples.0.lock().expect("samples").len())
}

fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("stream id")
}

#[tokio::test]
async fn the_documented_metrics_reach_the_recorder() {
    recorded();
    let appended = format!("{}{{backend=memory}}", telemetry::EVENTS_APPENDED);
    let failures = format!("{}{{backend=memory}}", telemetry::APPEND_FAILURES);
    let latency = format!("{}{{backend=memory}}", telemetry::APPEND_SECONDS);
    let (appended_before, failures_before, latency_before) =
        (counter(&appended), counter(&failures), samples(&latency));

    let store = Arc::new(InMemoryEventStore::new());
    let events = (0..3)
        .map(|n| NewEvent::json("metrics.noted", &json!({ "n": n })).expect("event"))
        .collect();
    store
        .append(&stream("metrics-1"), ExpectedVersion::NoStream, events)
        .await
        .expect("append");
    store
        .append(
            &stream("metrics-1"),
            ExpectedVersion::NoStream,
            vec![NewEvent::json("metrics.noted", &json!({})).expect("event")],
        )
        .await
        .expect_err("a conflict");
    assert!(counter(&appended) >= appended_before + 3);
    assert!(counter(&failures) > failures_before);
    assert!(samples(&latency) > latency_before);

    // Cache lookups, through a repository with an in-process cache.
    let hits = format!("{}{{cache=in_process}}", telemetry::CACHE_HITS);
    let misses = format!("{}{{cache=in_process}}", telemetry::CACHE_MISSES);
    let (hits_before, misses_before) = (counter(&hits), counter(&misses));
    let cache = Arc::new(InProcessCache::new());
    let repository = Repository::<Tenant>::new(store.clone()).with_cache(cache.clone());
    repository
        .execute(
            "metrics-tenant",
            &CreateTenant { name: "A".into() },
            Metadata::new(),
        )
        .await
        .expect("create");
    repository
        .execute(
            "metrics-tenant",
            &RenameTenant { name: "B".into() },
            Metadata::new(),
        )
        .await
        .expect("rename");
    assert!(counter(&misses) > misses_before, "the first load misses");
    assert!(counter(&hits) > hits_before, "the second load hits");

    // A cached state of another history (another database behind the same
    // cache) is dropped and counted.
    let dropped = format!(
        "{}{{aggregate=tenant,reason=history}}",
        telemetry::CACHED_STATES_DROPPED
    );
    let dropped_before = counter(&dropped);
    let other = Repository::<Tenant>::new(Arc::new(InMemoryEventStore::new())).with_cache(cache);
    other
        .store()
        .append(
            &stream("tenant-metrics-tenant"),
            ExpectedVersion::NoStream,
            vec![
                NewEvent::from_event(&TenantCreated { name: "A".into() }).expect("event"),
                NewEvent::from_event(&TenantCreated { name: "B".into() }).expect("event"),
            ],
        )
        .await
        .expect("the other history");
    assert_eq!(other.load("metrics-tenant").await.expect("load").version, 2);
    assert_eq!(counter(&dropped), dropped_before + 1);

    // A handler that always fails: failed attempts, then a dead letter.
    let handler_failures = format!("{}{{handler=metrics_failing}}", telemetry::HANDLER_FAILURES);
    let dead_letters = format!("{}{{handler=metrics_failing}}", telemetry::DEAD_LETTERS);
    let registry = HandlerRegistry::new(store.clone()).with(
        HandlerSpec::new("metrics_failing", &["metrics.noted"], |_| {
            Box::pin(async { Err("always fails".into()) })
        })
        .retry(RetryPolicy {
            attempts: 2,
            backoff: Duration::from_millis(1),
        }),
    );
    let event = store
        .read_stream(&stream("metrics-1"), 1, 1)
        .await
        .expect("read")
        .remove(0);
    registry.dispatch(&event).await.expect("dispatch");
    assert_eq!(counter(&handler_failures), 2);
    assert_eq!(counter(&dead_letters), 1);

    // A projection reports its lag once it has applied a batch.
    let running = ProjectionRunner::new(store.clone(), InMemory).start(TenantDirectory::default());
    running
        .wait_until(std::time::Duration::from_secs(30), |status| {
            status.applied >= 2 && status.state == ProjectionState::Running
        })
        .await
        .expect("projected");
    running.stop().await.expect("stop");
    let lag = format!(
        "{}{{projection=test_tenant_directory}}",
        telemetry::PROJECTION_LAG_EVENTS
    );
    assert_eq!(gauge(&lag), Some(0.0), "caught up: nothing left to apply");
    let age = format!(
        "{}{{projection=test_tenant_directory}}",
        telemetry::PROJECTION_LAG_SECONDS
    );
    assert!(gauge(&age).is_some_and(|seconds| seconds >= 0.0));
}

#[tokio::test]
async fn the_health_report_names_what_is_failing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteEventStore::open(dir.path().join("events.db"))
        .await
        .expect("open");
    let cache = InProcessCache::new();
    let healthy = HealthReport::check(&store, Some(&cache)).await;
    assert!(healthy.is_healthy(), "{healthy}");
    assert!(matches!(healthy.cache, Some(Check::Healthy { .. })));

    let failing_projection = ProjectionStatus {
        name: "audit_trail",
        state: ProjectionState::Failed,
        last_error: Some("read model table is missing".into()),
        ..ProjectionStatus::default()
    };
    store.pool().close().await;
    let report = HealthReport::check(&store, None)
        .await
        .with_projection(&failing_projection);
    assert!(!report.is_healthy());
    assert!(!report.store.is_healthy(), "{report}");
    let text = report.to_string();
    assert!(text.contains("store (sqlite): FAILING"), "{text}");
    assert!(text.contains("cache: none configured"), "{text}");
    assert!(
        text.contains("projection audit_trail: Failed")
            && text.contains("read model table is missing"),
        "{text}"
    );
    assert!(text.ends_with("overall: UNHEALTHY"), "{text}");
}

/// Everything written to the log, at every level, with span closes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Puts `password` into a URL's user-info.
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, host) = match authority.split_once('@') {
        Some((user, host)) => (user.split(':').next().unwrap_or(user), host),
        None => ("", authority),
    };
    format!("{scheme}://{user}:{password}@{host}/{path}")
}

#[tokio::test]
async fn no_secret_or_personal_data_reaches_logs_or_errors() {
    const SECRET: &str = "planted-s3cret-7f3a";
    const EMAIL: &str = "planted-person@example.test";
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut errors = Vec::new();

    // Unreachable servers, the password in their URLs.
    errors.push(
        PostgresEventStore::builder(with_password(
            "postgres://annals@127.0.0.1:1/annals",
            SECRET,
        ))
        .acquire_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect_err("nothing listens on port 1"),
    );
    // Redis connects lazily: the failure shows on the first command.
    for url in [
        format!("redis://:{SECRET}@127.0.0.1:1"),
        // A reachable Redis that has no password: AUTH fails.
        with_password(&redis_url(), SECRET),
    ] {
        let failure = match RedisCache::builder(url).connect().await {
            Ok(cache) => cache.ping().await.err(),
            Err(error) => Some(error),
        };
        errors.push(failure.expect("a Redis with a wrong address or password fails"));
    }

    // A real PostgreSQL, reached with the password in the URL (the test
    // server trusts loopback, so any password is accepted), doing work on
    // events with personal data in them, and failing some of it.
    let store = PostgresEventStore::builder(with_password(&postgres_url(), SECRET))
        .schema(format!("t_{}", uuid::Uuid::now_v7().simple()))
        .connect()
        .await
        .expect("connect with a password in the URL");
    let person = stream("person-1");
    let registered =
        NewEvent::json("test.person.registered", &json!({ "email": EMAIL })).expect("event");
    store
        .append(&person, ExpectedVersion::NoStream, vec![registered.clone()])
        .await
        .expect("append");
    errors.push(
        store
            .append(&person, ExpectedVersion::NoStream, vec![registered])
            .await
            .expect_err("a version conflict"),
    );
    errors.push(
        store
            .append(
                &person,
                ExpectedVersion::Any,
                vec![
                    NewEvent::json("test.person.noted", &json!({ "email": EMAIL }))
                        .expect("event")
                        .with_schema_version(u32::MAX),
                ],
            )
            .await
            .expect_err("a schema version too large for the column"),
    );
    // A payload that does not fit its type: serde quotes the value it
    // trips over, which must not reach the error.
    let misfit = stream("person-2");
    store
        .append(
            &misfit,
            ExpectedVersion::NoStream,
            vec![
                NewEvent::json(
                    "test.user.registered",
                    &json!({ "email": ["x"], "display_name": EMAIL }),
                )
                .expect("event")
                .with_schema_version(2),
                NewEvent::json("test.user.registered", &json!(EMAIL))
                    .expect("event")
                    .with_schema_version(2),
                NewEvent::json(
                    "test.user.role_assigned",
                    &json!({ "role": 7, "note": EMAIL }),
                )
                .expect("event"),
            ],
        )
        .await
        .expect("append misfits");
    for event in store
        .read_stream(&misfit, 1, 10)
        .await
        .expect("read misfits")
    {
        let error = event
            .decode::<annals_tests::domain::UserEvent>()
            .expect_err("does not fit");
        assert!(matches!(error, Error::Decode { .. }), "{error:?}");
        errors.push(error);
    }
    let stored = store.read_stream(&person, 1, 10).await.expect("read");
    assert_eq!(stored.len(), 1);
    errors.push(
        stored[0]
            .decode::<annals_tests::domain::UserEvent>()
            .expect_err("not a user event"),
    );

    let log = String::from_utf8_lossy(&captured.0.lock().expect("log buffer")).into_owned();
    assert!(
        log.contains("annals.store.append"),
        "the capture works (span closes are logged): {log}"
    );
    assert!(errors.len() >= 8, "{errors:?}");
    for error in &errors {
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(
                !text.contains(SECRET),
                "an error carries the secret: {text}"
            );
            assert!(
                !text.contains(EMAIL),
                "an error carries personal data: {text}"
            );
        }
    }
    assert!(!log.contains(SECRET), "the log carries the secret:\n{log}");
    assert!(
        !log.contains(EMAIL),
        "the log carries personal data:\n{log}"
    );
}
