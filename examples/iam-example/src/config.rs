//! The example's command line and environment.

use std::path::PathBuf;

use annals::pii::{MASTER_KEY_VAR, MasterKey, MasterKeyError};
use anyhow::{Context, Result, bail};

/// What `--help` prints.
pub const HELP: &str = "\
iam-example: an IAM system (tenants, roles, users, permissions) on Annals.

Runs a scripted scenario: loads tenants, roles and users through the
aggregates, projects a tenant directory, an effective-permissions read model
and an audit trail, runs the handlers (welcome notifications and permission
audit lines to an outbox file), then shows permission checks, a time-travel
answer, a replayed stream, projection status, cache and store statistics,
and how long each phase took.

usage: iam-example [OPTIONS]

options:
  --database-url URL   where events and read models live (default: $DATABASE_URL,
                       else a SQLite file in the temp directory, named at start):
                         sqlite:PATH           a SQLite file, recreated at start
                         postgres://...        PostgreSQL; the example recreates
                                               the schema given by --schema
                         memory:               the in-memory store (read models
                                               in a temporary SQLite file)
  --schema NAME        PostgreSQL schema the example owns and recreates
                       (default: iam_example)
  --redis-url URL      put a Redis cache behind the in-process one
                       (default: $REDIS_URL, else no Redis)
  --tenants N          tenants to load (default: 100)
  --users N            users per tenant (default: 100)
  --master-key BASE64  the master key (32 bytes, base64) that wraps each user's
                       key for their personal data (default: $ANNALS_MASTER_KEY,
                       else a throwaway key generated for this run)
  --no-progress        no progress bars
  -h, --help           this text

A bad URL or an unreachable server stops the example with a one-line error
naming it.";

/// Where events and read models live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file, recreated at start.
    Sqlite(PathBuf),
    /// A PostgreSQL server; the example owns `schema`.
    Postgres {
        /// The server URL.
        url: String,
        /// The schema it recreates.
        schema: String,
    },
    /// The in-memory store.
    Memory,
}

/// The example's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where events and read models live.
    pub database: Database,
    /// An optional Redis cache.
    pub redis_url: Option<String>,
    /// Tenants to load.
    pub tenants: usize,
    /// Users per tenant.
    pub users_per_tenant: usize,
    /// Commands of the on-call rotation (assign and revoke a role).
    pub rotation_commands: usize,
    /// Whether to draw progress bars.
    pub progress: bool,
    /// The master key of the users' personal-data keys; `None`: generate a
    /// throwaway one. Its `Debug` never shows it.
    pub master_key: Option<MasterKey>,
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Request {
    /// Print the help text.
    Help,
    /// Run with this configuration.
    Run(Config),
}

impl Config {
    /// A configuration for a small run (tests).
    pub fn small(database: Database, redis_url: Option<String>) -> Self {
        Config {
            database,
            redis_url,
            tenants: 4,
            users_per_tenant: 30,
            rotation_commands: 200,
            progress: false,
            master_key: None,
        }
    }

    /// Parses the arguments (without the program name); `env` reads
    /// `DATABASE_URL`, `REDIS_URL` and `ANNALS_MASTER_KEY`.
    pub fn from_args(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Request> {
        let mut args = args.into_iter();
        let mut database_url = None;
        let mut schema = "iam_example".to_owned();
        let mut redis_url = None;
        let mut master_key = None;
        let mut tenants = 100;
        let mut users_per_tenant = 100;
        let mut progress = true;
        while let Some(arg) = args.next() {
            let mut value =
                |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                "-h" | "--help" => return Ok(Request::Help),
                "--database-url" => database_url = Some(value("--database-url")?),
                "--schema" => schema = value("--schema")?,
                "--redis-url" => redis_url = Some(value("--redis-url")?),
                "--master-key" => master_key = Some(value("--master-key")?),
                "--tenants" => tenants = count(&value("--tenants")?, "--tenants", 10_000)?,
                "--users" => users_per_tenant = count(&value("--users")?, "--users", 100_000)?,
                "--no-progress" => progress = false,
                other => bail!("unknown argument {other:?}; see --help"),
            }
        }
        let non_empty = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
        let database_url = non_empty(database_url).or_else(|| non_empty(env("DATABASE_URL")));
        let redis_url = non_empty(redis_url).or_else(|| non_empty(env("REDIS_URL")));
        let master_key = match non_empty(master_key) {
            Some(text) => Some(parse_master_key(&text, "--master-key")?),
            None => non_empty(env(MASTER_KEY_VAR))
                .map(|text| parse_master_key(&text, MASTER_KEY_VAR))
                .transpose()?,
        };
        let database = match database_url {
            None => Database::Sqlite(
                std::env::temp_dir()
                    .join("annals-iam-example")
                    .join("iam.db"),
            ),
            Some(url) => parse_database(&url, schema)?,
        };
        Ok(Request::Run(Config {
            database,
            redis_url,
            tenants,
            users_per_tenant,
            rotation_commands: 2_000,
            progress,
            master_key,
        }))
    }
}

/// The master key from `origin` (a flag or a variable); the error names
/// the origin, never the key.
fn parse_master_key(text: &str, origin: &str) -> Result<MasterKey> {
    MasterKey::from_base64(text).map_err(|error| match error {
        MasterKeyError::WrongLength { length, .. } => {
            anyhow::anyhow!("{origin} must be 32 bytes in base64, not {length} bytes")
        }
        _ => anyhow::anyhow!("{origin} is not valid base64"),
    })
}

fn count(text: &str, name: &str, max: usize) -> Result<usize> {
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => bail!("{name} takes a number from 1 to {max}, not {text:?}"),
    }
}

fn parse_database(url: &str, schema: String) -> Result<Database> {
    if url == "memory:" || url == "memory" {
        return Ok(Database::Memory);
    }
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if path.is_empty() || path.contains(":memory:") {
            bail!("the SQLite URL {url:?} needs a file path, like sqlite:/tmp/iam.db");
        }
        return Ok(Database::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let valid_schema = !schema.is_empty()
            && schema.len() <= 63
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid_schema {
            bail!("--schema {schema:?} must be lowercase letters, digits and underscores");
        }
        return Ok(Database::Postgres {
            url: url.to_owned(),
            schema,
        });
    }
    bail!(
        "unsupported database URL {}: expected sqlite:PATH, postgres://... or memory:",
        annals::store::redact_url(url)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Request> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_args(args.iter().map(|a| (*a).to_owned()), |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn flags_win_over_the_environment() {
        let Ok(Request::Run(config)) = parse(
            &["--database-url", "sqlite:/tmp/x.db", "--tenants", "3"],
            &[
                ("DATABASE_URL", "postgres://h/db"),
                ("REDIS_URL", "redis://r"),
            ],
        ) else {
            panic!("a run");
        };
        assert_eq!(config.database, Database::Sqlite("/tmp/x.db".into()));
        assert_eq!(config.redis_url.as_deref(), Some("redis://r"));
        assert_eq!(config.tenants, 3);
    }

    #[test]
    fn bad_input_is_named() {
        let error = |args: &[&str]| parse(args, &[]).err().map(|e| e.to_string());
        assert_eq!(
            error(&["--database-url", "mysql://u:secret@h/db"]).as_deref(),
            Some(
                "unsupported database URL mysql://u:***@h/db: expected sqlite:PATH, postgres://... or memory:"
            )
        );
        assert_eq!(
            error(&["--tenants", "0"]).as_deref(),
            Some("--tenants takes a number from 1 to 10000, not \"0\"")
        );
        assert_eq!(
            error(&["--bogus"]).as_deref(),
            Some("unknown argument \"--bogus\"; see --help")
        );
        assert_eq!(
            error(&["--master-key", "c2VjcmV0"]).as_deref(),
            Some("--master-key must be 32 bytes in base64, not 6 bytes")
        );
        let from_env = parse(&[], &[("ANNALS_MASTER_KEY", "not base64 but secret")])
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            from_env.as_deref(),
            Some("ANNALS_MASTER_KEY is not valid base64")
        );
    }
}
