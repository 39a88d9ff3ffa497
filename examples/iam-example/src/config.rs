//! The example's command line and environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
       iam-example serve [OPTIONS]   the IAM service over HTTP (below)

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

`serve` keeps what the database holds (it creates the tables when missing)
and answers the IAM commands and queries over HTTP until Ctrl-C or SIGTERM;
several instances may serve one PostgreSQL schema (the read models are
projected by whichever instance holds each projection's lease). It takes
--database-url, --schema, --redis-url and --master-key as above (a master
key is required: every instance and every restart must use the same one),
and:
  --listen ADDR        address to listen on (default: 127.0.0.1:8080; port 0
                       picks a free one; the first line of stdout names it)
  --replica-url URL    a PostgreSQL hot standby for the projections' reads of
                       the log (default: $DATABASE_REPLICA_URL, else none)
  --nats-url URL       relay every committed event, in the log's order, to the
                       JetStream stream IAM_EVENTS (subjects iam.<event type>),
                       from whichever instance holds the relay's lease
                       (default: $NATS_URL, else no relay)
  --instance NAME      this instance's name in the projections' leases
                       (default: host, process id and a random suffix)
  --lease SECONDS      how long a projection's lease lasts without renewal
                       (default: 15; another instance takes over within
                       about 1.2 times that after this one dies)

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

/// The service's settings (`iam-example serve`).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where events and read models live; kept, never recreated.
    pub database: Database,
    /// An optional Redis cache, shared by the instances.
    pub redis_url: Option<String>,
    /// An optional PostgreSQL hot standby for reading the log.
    pub replica_url: Option<String>,
    /// An optional NATS server to relay the log to (JetStream).
    pub nats_url: Option<String>,
    /// The master key of the users' personal-data keys.
    pub master_key: MasterKey,
    /// Where to listen.
    pub listen: SocketAddr,
    /// This instance's name in leases (`None`: the process's default).
    pub instance: Option<String>,
    /// How long a projection lease lasts without renewal.
    pub lease: Duration,
}

impl ServeConfig {
    /// A service on `database` listening on a free loopback port, with a
    /// throwaway master key and 15 s leases (tests).
    pub fn local(database: Database, master_key: MasterKey) -> Self {
        ServeConfig {
            database,
            redis_url: None,
            replica_url: None,
            nats_url: None,
            master_key,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            instance: None,
            lease: Duration::from_secs(15),
        }
    }
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Request {
    /// Print the help text.
    Help,
    /// Run the scenario with this configuration.
    Run(Config),
    /// Serve the IAM API with this configuration.
    Serve(ServeConfig),
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
    /// `DATABASE_URL`, `DATABASE_REPLICA_URL`, `REDIS_URL` and
    /// `ANNALS_MASTER_KEY`.
    pub fn from_args(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Request> {
        let mut args = args.into_iter().peekable();
        let serve = args.next_if(|first| first == "serve").is_some();
        let mut database_url = None;
        let mut replica_url = None;
        let mut nats_url = None;
        let mut listen = None;
        let mut instance = None;
        let mut lease = None;
        // Flags of the scenario only, named when given to `serve`.
        let mut scenario_only = None;
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
                "--tenants" => {
                    tenants = count(&value("--tenants")?, "--tenants", 10_000)?;
                    scenario_only.get_or_insert("--tenants");
                }
                "--users" => {
                    users_per_tenant = count(&value("--users")?, "--users", 100_000)?;
                    scenario_only.get_or_insert("--users");
                }
                "--no-progress" => {
                    progress = false;
                    scenario_only.get_or_insert("--no-progress");
                }
                "--listen" | "--replica-url" | "--nats-url" | "--instance" | "--lease"
                    if !serve =>
                {
                    bail!("{arg} is an option of `iam-example serve`; see --help")
                }
                "--listen" => {
                    let text = value("--listen")?;
                    listen = Some(text.parse::<SocketAddr>().map_err(|_| {
                        anyhow::anyhow!(
                            "--listen takes an address like 127.0.0.1:8080, not {text:?}"
                        )
                    })?);
                }
                "--replica-url" => replica_url = Some(value("--replica-url")?),
                "--nats-url" => nats_url = Some(value("--nats-url")?),
                "--instance" => {
                    let name = value("--instance")?;
                    if name.trim().is_empty() || name.len() > 200 {
                        bail!("--instance takes a name of 1 to 200 characters");
                    }
                    instance = Some(name);
                }
                "--lease" => {
                    let seconds = count(&value("--lease")?, "--lease", 3_600)?;
                    lease = Some(Duration::from_secs(seconds as u64));
                }
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
        if serve {
            if let Some(flag) = scenario_only {
                bail!("{flag} is an option of the scenario, not of `serve`; see --help");
            }
            let Some(master_key) = master_key else {
                bail!(
                    "`serve` needs --master-key or {MASTER_KEY_VAR} (32 random bytes in base64, \
                     from `openssl rand -base64 32`, say): every instance and every restart must \
                     use the same key, or the users' personal data cannot be read"
                );
            };
            let replica_url =
                non_empty(replica_url).or_else(|| non_empty(env("DATABASE_REPLICA_URL")));
            if replica_url.is_some() && !matches!(database, Database::Postgres { .. }) {
                bail!("--replica-url needs a PostgreSQL --database-url");
            }
            return Ok(Request::Serve(ServeConfig {
                database,
                redis_url,
                replica_url,
                nats_url: non_empty(nats_url).or_else(|| non_empty(env("NATS_URL"))),
                master_key,
                listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
                instance,
                lease: lease.unwrap_or(Duration::from_secs(15)),
            }));
        }
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
    fn serve_takes_its_own_options_and_needs_a_master_key() {
        let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let Ok(Request::Serve(config)) = parse(
            &[
                "serve",
                "--listen",
                "0.0.0.0:9000",
                "--instance",
                "iam-1",
                "--lease",
                "5",
                "--schema",
                "iam_prod",
            ],
            &[
                ("DATABASE_URL", "postgres://h/db"),
                ("DATABASE_REPLICA_URL", "postgres://replica/db"),
                ("ANNALS_MASTER_KEY", key),
            ],
        ) else {
            panic!("a service");
        };
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.instance.as_deref(), Some("iam-1"));
        assert_eq!(config.lease, Duration::from_secs(5));
        assert_eq!(config.replica_url.as_deref(), Some("postgres://replica/db"));
        assert_eq!(
            config.database,
            Database::Postgres {
                url: "postgres://h/db".into(),
                schema: "iam_prod".into()
            }
        );

        let error = |args: &[&str], env: &[(&str, &str)]| {
            parse(args, env)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            error(&["serve"], &[]).starts_with("`serve` needs --master-key or ANNALS_MASTER_KEY")
        );
        let keyed = [("ANNALS_MASTER_KEY", key)];
        assert_eq!(
            error(&["serve", "--tenants", "3"], &keyed),
            "--tenants is an option of the scenario, not of `serve`; see --help"
        );
        assert_eq!(
            error(&["--listen", "127.0.0.1:1"], &keyed),
            "--listen is an option of `iam-example serve`; see --help"
        );
        assert_eq!(
            error(&["serve", "--listen", "localhost"], &keyed),
            "--listen takes an address like 127.0.0.1:8080, not \"localhost\""
        );
        assert_eq!(
            error(&["serve", "--replica-url", "postgres://r/db"], &keyed),
            "--replica-url needs a PostgreSQL --database-url"
        );
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
