//! What the macros register: events, aggregates, projections and handlers,
//! found with no wiring; handlers called straight from their descriptors.

use annals::Aggregate;
use annals::Metadata;
use annals::registry;
use annals::testing::recorded;
use annals_tests::domain::{Tenant, TenantSuspended, User, UserEvent, WELCOMED};

#[test]
fn events_are_registered_with_name_version_type_and_upcasts() {
    let registered = registry::event("test.user.registered").expect("registered");
    assert_eq!(registered.version, 2);
    assert_eq!(registered.upcasts_from, &[1]);
    assert_eq!(
        registered.rust_type,
        "annals_tests::domain::UserEvent::Registered"
    );
    let created = registry::event("test.tenant.created").expect("registered");
    assert_eq!(created.rust_type, "annals_tests::domain::TenantCreated");
    assert!(registry::event("test.nothing").is_none());
    registry::validate().expect("no duplicates in the test domain");
}

#[test]
fn aggregates_are_registered_with_their_events_and_snapshot_settings() {
    let tenant = registry::aggregates()
        .find(|a| a.name == "tenant")
        .expect("tenant");
    assert_eq!(tenant.rust_type, "annals_tests::domain::Tenant");
    assert_eq!(
        (tenant.event_types)(),
        [
            "test.tenant.created",
            "test.tenant.renamed",
            "test.tenant.suspended"
        ]
    );
    assert_eq!(
        (tenant.snapshot_every, tenant.snapshot_version),
        (Some(50), 1)
    );
    assert_eq!((Tenant::NAME, Tenant::SNAPSHOT_EVERY), ("tenant", Some(50)));
    assert_eq!(
        (User::NAME, User::SNAPSHOT_EVERY),
        ("user", None),
        "name defaults to snake case"
    );
    let owners: Vec<&str> = registry::aggregates_for_event("test.user.renamed")
        .iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(owners, ["user"]);
}

#[test]
fn projections_are_registered_with_name_version_and_events() {
    let directory = registry::projections()
        .find(|p| p.name == "test_tenant_directory")
        .expect("directory");
    assert_eq!(directory.version, 3);
    assert_eq!(
        (directory.event_types)(),
        [
            "test.tenant.created",
            "test.tenant.renamed",
            "test.tenant.suspended"
        ]
    );
    let counts = registry::projections()
        .find(|p| p.name == "test_role_counts")
        .expect("role counts");
    assert_eq!(counts.version, 1, "version defaults to 1");
}

#[test]
fn handlers_are_found_by_event_type_in_priority_order() {
    let names: Vec<&str> = registry::handlers_for("test.user.registered")
        .iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(names, ["annals_tests::domain::welcome", "test.audit"]);
    let welcome = registry::handlers_for("test.user.registered")[0];
    assert_eq!(welcome.priority, 10);
    assert_eq!(welcome.retry.attempts, 5);
    assert_eq!(welcome.retry.backoff.as_millis(), 10);
    assert_eq!(welcome.timeout.map(|t| t.as_millis()), Some(2000));
    let audit = registry::handlers_for("test.user.deactivated")[1];
    assert_eq!(
        (audit.priority, audit.retry.attempts, audit.timeout),
        (0, 3, None),
        "defaults"
    );
}

#[tokio::test]
async fn handlers_can_be_called_through_their_descriptor() {
    let event = UserEvent::Registered {
        email: "zoe@acme.test".into(),
        display_name: "Zoe".into(),
    };
    let envelope = recorded(&event, 1, Metadata::new());
    let welcome = registry::handlers_for("test.user.registered")[0];
    (welcome.call)(&envelope).await.expect("welcome succeeds");
    let welcomed = WELCOMED.lock().expect("lock").clone();
    assert!(
        welcomed.contains(&"zoe@acme.test (test-1)".to_owned()),
        "{welcomed:?}"
    );

    let failing = registry::handlers_for("test.tenant.suspended")[0];
    let error = (failing.call)(&recorded(&TenantSuspended, 1, Metadata::new()))
        .await
        .expect_err("fails");
    assert_eq!(error.to_string(), "the mail server is down");

    // A handler fed an event it cannot decode reports it instead of panicking.
    let mut wrong = envelope.clone();
    wrong.payload = annals::Payload::from_json("42").expect("json");
    let error = (welcome.call)(&wrong).await.expect_err("undecodable");
    assert!(
        error.to_string().contains("test.user.registered"),
        "{error}"
    );
}
