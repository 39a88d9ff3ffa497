#[annals::event(name = "iam.user.registered", tags(email, email = backup_email))]
struct UserRegistered {
    email: String,
    backup_email: String,
}

fn main() {}
