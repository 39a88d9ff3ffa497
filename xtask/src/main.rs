//! Project automation for Annals. Run through the cargo alias:
//!
//! ```text
//! cargo xtask test [-- <cargo test arguments>]   start throwaway PostgreSQL and Redis, run every suite, stop them
//! cargo xtask bench [--quick] [--runs N]         Annals against raw SQL and peer crates
//! cargo xtask schema [--check]                   regenerate (or check) framework/migrations/ and schema/
//! cargo xtask services up [--cluster]|down|status long-lived local servers for manual work
//! ```

mod bench;
mod cluster;
mod schema;
mod services;
mod test;

use anyhow::{Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test [-- ARGS]        start throwaway PostgreSQL and Redis on free loopback ports,
                        run `cargo test --workspace` against them (ARGS are passed on),
                        stop them, and exit non-zero if anything failed
  bench [--quick] [--runs N]
                        run the workloads on Annals, raw sqlx/Redis and peer crates
                        against throwaway servers; print ratios and write
                        target/annals-bench/summary.json (--quick: small sizes;
                        --runs N: N rounds, each ratio the median of the rounds'
                        with min and max)
  schema [--check]      regenerate framework/migrations/ and schema/ (SQL DDL, JSON Schemas,
                        event catalog) from the registered types; with --check,
                        change nothing and fail naming each stale file
  services up [--cluster]
                        start PostgreSQL and Redis under target/annals-services and
                        print their URLs (they keep running); with --cluster also a
                        streaming replica, a 3-master Redis Cluster and NATS
                        JetStream, and how to run three IAM service instances on them
  services down         stop the servers started by `services up`
  services status       say whether they are running

environment:
  ANNALS_NO_INSTALL=1   never install missing servers with apt-get";

fn main() {
    if let Err(error) = run() {
        eprintln!("xtask: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["test", rest @ ..] => {
            let passthrough = match rest {
                [] => &[][..],
                ["--", passthrough @ ..] => passthrough,
                other => bail!(
                    "unexpected arguments {other:?}; pass cargo test arguments after `--`\n\n{USAGE}"
                ),
            };
            test::run(passthrough)
        }
        ["bench", rest @ ..] => bench::run(bench::Options::parse(rest)?),
        ["schema"] => schema::run(false),
        ["schema", "--check"] => schema::run(true),
        ["services", "up"] => services::up(false),
        ["services", "up", "--cluster"] => services::up(true),
        ["services", "down"] => services::down(),
        ["services", "status"] => services::status(),
        ["help" | "--help" | "-h"] | [] => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}
