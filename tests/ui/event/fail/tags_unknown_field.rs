#[annals::event(name = "iam.user.registered", tags(emial))]
struct UserRegistered {
    email: String,
}

fn main() {}
