#[annals::event(name = "iam.user.registered", tags())]
struct UserRegistered {
    email: String,
}

fn main() {}
