//! `cargo run -p iam-example`: the IAM scenario at full size on the embedded
//! SQLite default, or on PostgreSQL and Redis (`--help`);
//! `cargo run -p iam-example -- serve`: the IAM service over HTTP.

use iam_example::config::{Config, HELP, Request};

#[tokio::main]
async fn main() {
    let request = Config::from_args(std::env::args().skip(1), |name| std::env::var(name).ok());
    let config = match request {
        Ok(Request::Help) => {
            println!("{HELP}");
            return;
        }
        Ok(Request::Run(config)) => config,
        Ok(Request::Serve(config)) => {
            if let Err(error) = iam_example::serve::run(&config).await {
                fail(&error);
            }
            return;
        }
        Err(error) => fail(&error),
    };
    if let iam_example::config::Database::Sqlite(path) = &config.database {
        eprintln!("iam-example: SQLite file {} (recreated)", path.display());
    }
    if config.master_key.is_none() {
        eprintln!(
            "iam-example: no --master-key or ANNALS_MASTER_KEY: personal data is encrypted under a key generated for this run"
        );
    }
    match iam_example::scenario::run(&config).await {
        Ok(report) => print!("{}", iam_example::report::render(&report)),
        Err(error) => fail(&error),
    }
}

/// One line naming what went wrong; no backtrace.
fn fail(error: &anyhow::Error) -> ! {
    eprintln!("iam-example: {error:#}");
    std::process::exit(1);
}
