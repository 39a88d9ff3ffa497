#![allow(dead_code)]

// The state is stored in snapshots, so its fields' types must be
// serialisable. The error names the public `annals::serde::Serialize`, not
// `annals::__private`: deriving it through `annals::serde` needs no `serde`
// dependency (`../pass/state_field_through_annals_serde.rs`).

#[annals::event(name = "iam.user.registered")]
struct UserRegistered {
    email: String,
}

#[derive(Default)]
enum Status {
    #[default]
    Active,
    Suspended,
}

#[annals::aggregate(name = "user", events(UserRegistered))]
#[derive(Default)]
struct User {
    status: Status,
}

impl annals::Apply<UserRegistered> for User {
    fn apply(&mut self, _event: &UserRegistered) {
        self.status = Status::Active;
    }
}

fn main() {}
