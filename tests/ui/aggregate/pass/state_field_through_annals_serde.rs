// A type of the user's own inside a state and an event derives serde's
// traits through `annals::serde` (and, inside an event, the JSON schema
// through `annals::schemars`), without dependencies of its own, and the
// state round-trips through a snapshot.

use annals::Aggregate;

#[derive(Debug, Default, Clone, PartialEq)]
#[derive(annals::serde::Serialize, annals::serde::Deserialize, annals::schemars::JsonSchema)]
#[serde(crate = "annals::serde")]
#[schemars(crate = "annals::schemars")]
enum Status {
    #[default]
    Active,
    Suspended,
}

#[annals::event(name = "ui.user.status_set")]
struct StatusSet {
    status: Status,
}

#[annals::aggregate(name = "ui_user", events(StatusSet))]
#[derive(Default, Debug, PartialEq)]
struct User {
    status: Status,
}

impl annals::Apply<StatusSet> for User {
    fn apply(&mut self, event: &StatusSet) {
        self.status = event.status.clone();
    }
}

fn main() {
    let mut user = User::default();
    user.apply_event(&StatusSet { status: Status::Suspended });
    let snapshot = user.snapshot().expect("the state serialises");
    let restored = User::restore(1, &snapshot).expect("the snapshot restores");
    assert_eq!(restored, user);
}
