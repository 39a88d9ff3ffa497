#[annals::event(name = "iam.user.registered", tags(emails))]
struct UserRegistered {
    emails: Vec<String>,
}

fn main() {}
