#[annals::event(name = "iam.user.registered", tags("email"))]
struct UserRegistered {
    email: String,
}

fn main() {}
