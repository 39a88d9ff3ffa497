//! Snapshot support from `#[aggregate]`: the state serialises, and a
//! snapshot of another shape version (or one that no longer decodes) is
//! refused so the state is rebuilt from events instead.

use annals::{Aggregate, Payload};
use annals_tests::domain::{Tenant, User};

#[test]
fn a_snapshot_restores_the_same_state() {
    let tenant = Tenant {
        created: true,
        name: "Acme".into(),
        suspended: true,
    };
    let snapshot = tenant.snapshot().expect("serialises");
    assert_eq!(
        Tenant::restore(Tenant::SNAPSHOT_VERSION, &snapshot),
        Some(tenant)
    );
}

#[test]
fn a_snapshot_of_another_shape_version_is_ignored() {
    let snapshot = Tenant {
        created: true,
        name: "Acme".into(),
        suspended: false,
    }
    .snapshot()
    .expect("serialises");
    assert_eq!(
        Tenant::restore(Tenant::SNAPSHOT_VERSION + 1, &snapshot),
        None
    );
    assert_eq!(Tenant::restore(0, &snapshot), None);
}

#[test]
fn a_snapshot_that_no_longer_decodes_is_ignored() {
    let stale = Payload::from_json(r#"{"email": 42}"#).expect("json");
    assert!(User::restore(User::SNAPSHOT_VERSION, &stale).is_none());
}
