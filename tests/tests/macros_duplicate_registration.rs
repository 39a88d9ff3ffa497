//! Two Rust types claiming one event name and version are caught at
//! startup, naming both; the repository refuses to run with them.

use annals::prelude::*;
use annals::{Apply, event, registry};

mod billing {
    /// Claims `dup.invoice.paid` v1.
    #[annals::event(name = "dup.invoice.paid")]
    pub(crate) struct InvoicePaid {
        pub(crate) amount: u64,
    }
}

mod payments {
    /// Also claims `dup.invoice.paid` v1.
    #[annals::event(name = "dup.invoice.paid")]
    pub(crate) struct PaymentReceived {
        pub(crate) cents: u64,
    }
}

/// Same name at another version: not a duplicate.
#[event(name = "dup.invoice.paid", version = 2)]
struct InvoicePaidV2 {
    amount: u64,
}

#[annals::aggregate(name = "invoice", events(billing::InvoicePaid))]
#[derive(Default)]
struct Invoice {
    paid: u64,
}

impl Apply<billing::InvoicePaid> for Invoice {
    fn apply(&mut self, event: &billing::InvoicePaid) {
        self.paid += event.amount;
    }
}

#[test]
fn validate_names_both_claimants() {
    let _ = (
        InvoicePaidV2 { amount: 1 },
        payments::PaymentReceived { cents: 1 },
    );
    match registry::validate() {
        Err(error @ Error::DuplicateRegistration { kind: "event", .. }) => {
            let message = error.to_string();
            assert!(message.contains("`dup.invoice.paid v1`"), "{message}");
            assert!(
                message.contains("macros_duplicate_registration::billing::InvoicePaid"),
                "{message}"
            );
            assert!(
                message.contains("macros_duplicate_registration::payments::PaymentReceived"),
                "{message}"
            );
        }
        other => panic!("expected a duplicate registration, got {other:?}"),
    }
}

#[tokio::test]
async fn the_repository_refuses_to_run_with_duplicates() {
    let repo = Repository::<Invoice>::new(std::sync::Arc::new(InMemoryEventStore::new()));
    match repo.load("1").await {
        Err(Error::DuplicateRegistration { name, .. }) => assert_eq!(name, "dup.invoice.paid v1"),
        other => panic!(
            "expected a duplicate registration, got {:?}",
            other.map(|l| l.version)
        ),
    }
}
