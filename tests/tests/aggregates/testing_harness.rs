//! The given/when/then harness of the `testing` feature.

use annals::Metadata;
use annals::testing::{AggregateTest, ProjectionTest};
use annals_tests::domain::{
    AssignRole, CreateTenant, RenameTenant, SuspendTenant, Tenant, TenantCreated, TenantDirectory,
    TenantError, TenantEvent, TenantRenamed, TenantSuspended, User, UserError, UserEvent,
};

#[test]
fn aggregate_given_when_then_events() {
    let state = AggregateTest::<Tenant>::given_no_events()
        .when(&CreateTenant {
            name: "Acme".into(),
        })
        .then_events([TenantCreated {
            name: "Acme".into(),
        }]);
    assert_eq!(state.name, "Acme");

    AggregateTest::<Tenant>::given([TenantCreated {
        name: "Acme".into(),
    }])
    .when(&RenameTenant {
        name: "Acme Corp".into(),
    })
    .then_events([TenantRenamed {
        name: "Acme Corp".into(),
        reason: "requested".into(),
    }]);

    AggregateTest::<User>::given([UserEvent::Registered {
        email: "a@b.test".into(),
        display_name: "A".into(),
    }])
    .when(&AssignRole {
        role: "admin".into(),
    })
    .then_events([UserEvent::RoleAssigned {
        role: "admin".into(),
    }]);
}

#[test]
fn aggregate_given_when_then_error() {
    AggregateTest::<Tenant>::given_no_events()
        .when(&SuspendTenant)
        .then_error(TenantError::NotFound);
    let history: [TenantEvent; 2] = [
        TenantCreated {
            name: "Acme".into(),
        }
        .into(),
        TenantSuspended.into(),
    ];
    AggregateTest::<Tenant>::given(history)
        .when(&RenameTenant { name: "x".into() })
        .then_error(TenantError::Suspended);
    AggregateTest::<User>::given_no_events()
        .when(&AssignRole {
            role: "admin".into(),
        })
        .then_error_matches(|error| *error == UserError::NotFound);
}

#[test]
#[should_panic(expected = "the command produced other events than expected")]
fn a_wrong_expectation_fails_the_test() {
    AggregateTest::<Tenant>::given_no_events()
        .when(&CreateTenant {
            name: "Acme".into(),
        })
        .then_events([TenantCreated {
            name: "Globex".into(),
        }]);
}

#[test]
#[should_panic(expected = "but the command was rejected")]
fn an_unexpected_rejection_fails_the_test() {
    AggregateTest::<Tenant>::given_no_events()
        .when(&SuspendTenant)
        .then_events(Vec::<TenantSuspended>::new());
}

#[test]
fn projection_given_then() {
    ProjectionTest::new(TenantDirectory::default())
        .given([TenantCreated {
            name: "Acme".into(),
        }])
        .given_with_metadata([(
            TenantRenamed {
                name: "Acme 2".into(),
                reason: "r".into(),
            },
            Metadata::new(),
        )])
        .then(|directory| assert_eq!(directory.names["test-1"], "Acme 2"));
}
