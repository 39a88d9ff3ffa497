#[annals::event(name = "iam.user.registered", tags(email))]
struct UserRegistered {
    user_id: String,
    #[pii(subject = user_id)]
    email: String,
}

fn main() {}
