//! The command line: every subcommand and option, as `--help` shows them.

use annals::LogPosition;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

/// See and act on an Annals event store (a SQLite file or PostgreSQL).
///
/// Exit codes: 0 done, 1 the operation failed, 2 bad usage or input, 3 not
/// found, 4 a broken hash chain, 5 schema missing or not current, 130
/// interrupted.
#[derive(Debug, Parser)]
#[command(name = "annals", version, max_term_width = 100)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) store: StoreOptions,

    /// Print JSON (one document, or one line per event with --follow)
    /// instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Which store to open.
#[derive(Debug, Clone, Args)]
pub(crate) struct StoreOptions {
    /// Where the events live: `sqlite:PATH` or `postgres://user@host/db`.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub(crate) database_url: Option<String>,

    /// PostgreSQL schema of Annals' tables (default: the role's
    /// search_path).
    #[arg(long, global = true)]
    pub(crate) schema: Option<String>,

    /// Prefix of Annals' tables (default: `annals_`).
    #[arg(long, global = true)]
    pub(crate) table_prefix: Option<String>,

    /// Confine every command to this tenant's events, streams, readers and
    /// dead letters.
    #[arg(long, global = true)]
    pub(crate) tenant: Option<String>,

    /// A key of the store's hash chain, `ID:HEX` (its id and 64 hex
    /// digits), for `verify` on a keyed store: repeat for retired keys
    /// (the first is the signing key). Prefer ANNALS_CHAIN_KEYS (the same,
    /// comma-separated): a command line is visible to other users.
    #[arg(
        long = "chain-key",
        value_name = "ID:HEX",
        env = "ANNALS_CHAIN_KEYS",
        hide_env_values = true,
        value_delimiter = ',',
        global = true,
        value_parser = parse_chain_key
    )]
    pub(crate) chain_keys: Vec<ChainKeyArg>,
}

/// A hash chain key as given on the command line; its secret is never
/// shown.
#[derive(Clone)]
pub(crate) struct ChainKeyArg(pub(crate) annals::hash_chain::ChainKey);

impl std::fmt::Debug for ChainKeyArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChainKeyArg({}, ***)", self.0.id())
    }
}

fn parse_chain_key(text: &str) -> Result<ChainKeyArg, String> {
    let (id, secret) = text
        .split_once(':')
        .ok_or_else(|| "a chain key is ID:HEX (its id, a colon, 64 hex digits)".to_owned())?;
    let id: u16 = id
        .trim()
        .parse()
        .map_err(|_| format!("the chain key id {id:?} is not a number from 1 to 65535"))?;
    annals::hash_chain::ChainKey::from_hex(id, secret)
        .map(ChainKeyArg)
        .map_err(|error| error.to_string())
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Health, event counts and rates, and every projection and subscription
    /// with its position, lag and owner.
    Status,
    /// List streams, or show one stream's events.
    #[command(subcommand)]
    Streams(StreamsCommand),
    /// Query events by type, time range, correlation id and tag, or follow
    /// the log live.
    Events(EventsArgs),
    /// Show one event by id.
    Event {
        /// The event's id.
        id: Uuid,
    },
    /// Projections (readers named `projection:NAME:vN`): status, pause,
    /// resume, rebuild.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Subscriptions (every other checkpointed reader): status, pause,
    /// resume, and moving one to another position.
    #[command(subcommand)]
    Subscriptions(SubscriptionsCommand),
    /// Events that handlers gave up on: list, show, retry, discard.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLettersCommand),
    /// Recompute the hash chain of every stream (or one) and report the
    /// first broken link.
    Verify(VerifyArgs),
    /// Forget a data subject: delete its personal-data key (crypto-shredding)
    /// and its streams' snapshots. Its encrypted fields read as redacted from
    /// then on.
    Forget {
        /// The data subject's id.
        subject: String,
    },
    /// Write the log (this tenant's, with --tenant) as JSON Lines: every
    /// event with its id, stream, version, metadata, time and tags, and a
    /// hash chain of the file's own. A backup, and the way to move a log
    /// between SQLite and PostgreSQL.
    Export(ExportArgs),
    /// Write the events of a file `annals export` made into this store, in
    /// one transaction: all of them, or none if the file is damaged or a
    /// stream or event id is already here.
    Import(ImportArgs),
    /// Re-stamp a PostgreSQL log restored from another cluster (pg_dump and
    /// pg_restore, logical replication) with this cluster's transaction
    /// ids, keeping its order, positions and checkpoints; as the tables'
    /// owner, once, before the application starts. A log of this cluster
    /// is left as it is.
    Restamp,
    /// The database schema: status, apply the pending migrations, or print
    /// their SQL.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Serve the web console: overview with charts, streams, events,
    /// projections and subscriptions, dead letters, /health and /metrics.
    Serve(ServeArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum StreamsCommand {
    /// List streams with their versions, ordered by id.
    List {
        /// Only streams whose id starts with this.
        #[arg(long)]
        prefix: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show a stream's events, oldest first.
    Show {
        /// The stream's id.
        stream: String,
        /// The first version to show.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// At most this many events.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// Only events of this type (repeat for several).
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) event_types: Vec<String>,
    /// Recorded at or after this instant (RFC 3339, e.g. 2026-12-01T10:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub(crate) since: Option<DateTime<Utc>>,
    /// Recorded before this instant (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub(crate) until: Option<DateTime<Utc>>,
    /// With this correlation id.
    #[arg(long, value_name = "UUID")]
    pub(crate) correlation_id: Option<Uuid>,
    /// With this correlation key (a request id of any form).
    #[arg(long, value_name = "KEY", conflicts_with = "correlation_id")]
    pub(crate) correlation_key: Option<String>,
    /// Carrying this tag (repeat: all of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub(crate) tags: Vec<String>,
    /// At most this many events.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
    /// Keep printing new events as they are committed, until Ctrl-C
    /// (starts at the head of the log, or after --after).
    #[arg(long, conflicts_with_all = ["since", "until", "correlation_id", "correlation_key", "tags"])]
    pub(crate) follow: bool,
    /// With --follow: start after this log position (`commit/sequence`)
    /// instead of the head; `0/0` replays the whole log first.
    #[arg(long, value_name = "POSITION", requires = "follow")]
    pub(crate) after: Option<LogPosition>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProjectionsCommand {
    /// Every projection's position, lag, state and owner.
    Status,
    /// Pause a projection: its owner stops applying events (at once for
    /// any batch it would commit, and it stops reading within a lease
    /// renewal, 5 s by default), keeping its lease.
    Pause {
        /// The projection: its name, or its checkpoint name
        /// `projection:NAME:vN`.
        name: String,
    },
    /// Resume a paused projection: its owner carries on within a lease
    /// renewal.
    Resume {
        /// The projection: its name, or `projection:NAME:vN`.
        name: String,
    },
    /// Rebuild a projection in place: its owner, within a lease renewal,
    /// empties the tables it declares and moves its checkpoint back to the
    /// start of the log in one transaction, then catches up again. A
    /// projection that declares no tables refuses (its status says why).
    /// `reset` is the same: a projection's checkpoint never moves without
    /// its tables emptied, or it would apply events twice.
    #[command(visible_alias = "reset")]
    Rebuild {
        /// The projection: its name, or `projection:NAME:vN`.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SubscriptionsCommand {
    /// Every subscription's position, lag, state and owner.
    Status,
    /// Pause a subscription: its owner stops delivering within a lease
    /// renewal (5 s by default), keeping its lease; a batch it was
    /// delivering meanwhile is not checkpointed and comes again on resume.
    Pause {
        /// The subscription's name.
        name: String,
    },
    /// Resume a paused subscription.
    Resume {
        /// The subscription's name.
        name: String,
    },
    /// Move a subscription's checkpoint: it resumes after POSITION (`0/0`:
    /// from the start of the log, redelivering everything). A running owner
    /// notices at its next commit and carries on from there.
    Reset {
        /// The subscription's name.
        name: String,
        /// The position to resume after (`commit/sequence`).
        #[arg(long, value_name = "POSITION")]
        to: LogPosition,
        /// Create the checkpoint if the subscription has none yet (a
        /// store just imported: start a subscription whose effects must
        /// not repeat at the head instead of the beginning).
        #[arg(long)]
        create: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeadLettersCommand {
    /// Dead letters, oldest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One dead letter with its event.
    Show {
        /// The dead letter's id.
        id: Uuid,
    },
    /// Ask the service that runs its handler to run it again: the handler
    /// registry of the subscription that owns the handler does, when it is
    /// next caught up. Success deletes the dead letter; failure keeps it
    /// with the new error.
    Retry {
        /// The dead letter's id.
        id: Uuid,
    },
    /// Delete a dead letter without retrying it.
    Discard {
        /// The dead letter's id.
        id: Uuid,
    },
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// Only this stream.
    #[arg(long)]
    pub(crate) stream: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub(crate) no_progress: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The file to write (`-` or none: stdout). It appears only once
    /// complete; an interrupted export leaves nothing.
    #[arg(long, short, value_name = "PATH")]
    pub(crate) output: Option<std::path::PathBuf>,
    /// Replace the file if it exists.
    #[arg(long)]
    pub(crate) force: bool,
    /// Skip checking the store's hash chain first (by default a broken
    /// chain stops the export, exit code 4, so that a backup never
    /// launders a tampered log into a freshly chained one).
    #[arg(long)]
    pub(crate) no_verify: bool,
    /// No progress bars.
    #[arg(long)]
    pub(crate) no_progress: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The export file (`-`: stdin).
    pub(crate) file: std::path::PathBuf,
    /// No progress bar.
    #[arg(long)]
    pub(crate) no_progress: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on (loopback unless told otherwise; port 0
    /// picks a free one). The first line printed is the URL.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub(crate) listen: std::net::SocketAddr,
    /// A file holding the token that changes (pause, resume, retry,
    /// discard) need; without one (or ANNALS_CONSOLE_TOKEN) the console is
    /// read-only. The token is never logged.
    #[arg(long, value_name = "PATH")]
    pub(crate) token_file: Option<std::path::PathBuf>,
    /// Change nothing, whatever token is configured.
    #[arg(long)]
    pub(crate) read_only: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum MigrateCommand {
    /// Applied and pending migrations.
    Status,
    /// Apply the pending migrations (one transaction).
    Apply,
    /// Print the pending migrations' SQL, for a DBA to review or run.
    Sql,
}
