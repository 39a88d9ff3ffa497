//! Opening the store the options name, without changing it: the tool
//! creates and migrates nothing unless told to (`annals migrate apply`).

use std::path::PathBuf;
use std::sync::Arc;

use annals::hash_chain::{ChainKeys, ChainReport};
use annals::pii::SubjectKeyStore;
use annals::store::{
    EventStore, ImportReport, PostgresEventStore, PostgresStoreBuilder, SchemaStatus,
    SqliteEventStore, import::ImportItem, redact_url,
};

use crate::arguments::StoreOptions;
use crate::failure::Failure;

/// The concrete store, for what the `EventStore` trait does not cover
/// (schema status, migration, tenant handles, subject keys).
#[derive(Clone)]
enum Backend {
    Sqlite(SqliteEventStore),
    Postgres(PostgresEventStore),
}

/// An open store and how to name it to a person.
pub(crate) struct Connection {
    backend: Backend,
    /// The URL it was opened with, to reconnect for migrating.
    url: String,
    options: StoreOptions,
    /// The store, confined to `--tenant` if given.
    pub(crate) store: Arc<dyn EventStore>,
    /// Backend and location, password hidden.
    pub(crate) description: String,
}

impl Connection {
    /// Opens the store, refusing a missing SQLite file unless `create`;
    /// checks nothing of its schema (see
    /// [`require_current_schema`](Self::require_current_schema)).
    pub(crate) async fn open(options: &StoreOptions, create: bool) -> Result<Connection, Failure> {
        let url = database_url(options)?;
        let (scheme, rest) = url.split_once(':').unwrap_or((url, ""));
        let backend = match scheme {
            "sqlite" => {
                if options.schema.is_some() {
                    return Err(Failure::Usage(
                        "--schema names a PostgreSQL schema; a SQLite file has none".to_owned(),
                    ));
                }
                let path = sqlite_path(url, rest)?;
                if !create && !path.is_file() {
                    return Err(Failure::NotFound(format!(
                        "no SQLite file at {} (the tool creates none; check the path)",
                        path.display()
                    )));
                }
                let mut builder = SqliteEventStore::builder(&path).migrate(false);
                if let Some(prefix) = &options.table_prefix {
                    builder = builder.table_prefix(prefix.clone());
                }
                if let Some(keys) = chain_keys(options)? {
                    builder = builder.chain_keys(keys);
                }
                Backend::Sqlite(builder.open().await?)
            }
            "postgres" | "postgresql" => {
                Backend::Postgres(postgres_builder(url, options)?.connect().await?)
            }
            _ => {
                return Err(Failure::Usage(format!(
                    "cannot open {}: use sqlite:PATH or postgres://user@host/db",
                    redact_url(url)
                )));
            }
        };
        let description = match (&backend, &options.schema) {
            (Backend::Sqlite(_), _) => format!("SQLite {}", redact_url(url)),
            (Backend::Postgres(_), Some(schema)) => {
                format!("PostgreSQL {} (schema {schema})", redact_url(url))
            }
            (Backend::Postgres(_), None) => format!("PostgreSQL {}", redact_url(url)),
        };
        let backend = match &options.tenant {
            None => backend,
            Some(tenant) => match backend {
                Backend::Sqlite(store) => Backend::Sqlite(store.for_tenant(tenant.clone())?),
                Backend::Postgres(store) => {
                    Backend::Postgres(store.for_tenant(tenant.clone()).await?)
                }
            },
        };
        let store: Arc<dyn EventStore> = match &backend {
            Backend::Sqlite(store) => Arc::new(store.clone()),
            Backend::Postgres(store) => Arc::new(store.clone()),
        };
        let description = match &options.tenant {
            Some(tenant) => format!("{description}, tenant {tenant}"),
            None => description,
        };
        Ok(Connection {
            backend,
            url: url.to_owned(),
            options: options.clone(),
            store,
            description,
        })
    }

    /// Where the schema stands.
    pub(crate) async fn schema_status(&self) -> Result<SchemaStatus, Failure> {
        Ok(match &self.backend {
            Backend::Sqlite(store) => store.schema_status().await?,
            Backend::Postgres(store) => store.schema_status().await?,
        })
    }

    /// Fails with a schema error unless the schema is exactly what this
    /// build knows: every other command reads tables of that shape.
    pub(crate) async fn require_current_schema(&self) -> Result<(), Failure> {
        let status = self.schema_status().await?;
        if status.version() == 0 {
            return Err(Failure::Schema(format!(
                "{} holds no Annals tables (wrong schema or table prefix?); `annals migrate apply` creates them",
                self.description
            )));
        }
        if status.is_ahead() {
            return Err(Failure::Schema(format!(
                "{} is at schema version {}, newer than this build knows (up to {}): use a newer `annals`",
                self.description,
                status.version(),
                status.supported
            )));
        }
        if !status.pending.is_empty() {
            return Err(Failure::Schema(format!(
                "{} is at schema version {} and this build needs {}: run `annals migrate apply` (or start the application, which migrates)",
                self.description,
                status.version(),
                status.supported
            )));
        }
        Ok(())
    }

    /// Applies the pending migrations (on PostgreSQL through a migrating
    /// connection, which also creates a missing `--schema`).
    pub(crate) async fn migrate(&self) -> Result<(), Failure> {
        match &self.backend {
            Backend::Sqlite(store) => store.migrate().await?,
            Backend::Postgres(_) => {
                let mut builder = PostgresEventStore::builder(self.url.clone()).max_connections(1);
                if let Some(schema) = &self.options.schema {
                    builder = builder.schema(schema.clone());
                }
                if let Some(prefix) = &self.options.table_prefix {
                    builder = builder.table_prefix(prefix.clone());
                }
                builder.connect().await?.pool().close().await;
            }
        }
        Ok(())
    }

    /// The same store confined to `tenant`, to read a stream that several
    /// tenants hold under one id (on PostgreSQL the application role can;
    /// the owner is refused, saying so).
    pub(crate) async fn for_tenant_reading(
        &self,
        tenant: &str,
    ) -> Result<Arc<dyn EventStore>, Failure> {
        Ok(match &self.backend {
            Backend::Sqlite(store) => Arc::new(store.for_tenant(tenant)?),
            Backend::Postgres(store) => Arc::new(store.for_tenant(tenant).await?),
        })
    }

    /// Recomputes the whole log's hash chain (this handle's tenant's),
    /// reporting how many events were checked as it goes.
    pub(crate) async fn verify_log_with_progress(
        &self,
        progress: impl Fn(u64) + Send + Sync,
    ) -> Result<ChainReport, Failure> {
        Ok(match &self.backend {
            Backend::Sqlite(store) => store.verify_log_with_progress(progress).await?,
            Backend::Postgres(store) => store.verify_log_with_progress(progress).await?,
        })
    }

    /// Writes events recorded elsewhere with their ids, versions and times,
    /// in one transaction (see `import_log` on either store).
    pub(crate) async fn import_log<S>(&self, items: S) -> Result<ImportReport, Failure>
    where
        S: futures_util::Stream<Item = annals::Result<ImportItem>> + Send,
    {
        Ok(match &self.backend {
            Backend::Sqlite(store) => store.import_log(items).await?,
            Backend::Postgres(store) => store.import_log(items).await?,
        })
    }

    /// The data subjects' keys kept beside the events.
    pub(crate) fn subject_keys(&self) -> Arc<dyn SubjectKeyStore> {
        match &self.backend {
            Backend::Sqlite(store) => Arc::new(store.clone()),
            Backend::Postgres(store) => Arc::new(store.clone()),
        }
    }
}

/// The hash chain keys the options give: the first signs, the others are
/// retired; `None` for an unkeyed store.
fn chain_keys(options: &StoreOptions) -> Result<Option<ChainKeys>, Failure> {
    let mut given = options.chain_keys.iter().map(|key| key.0.clone());
    let Some(signing) = given.next() else {
        return Ok(None);
    };
    let mut keys = ChainKeys::new(signing);
    for retired in given {
        keys = keys.with_retired(retired)?;
    }
    Ok(Some(keys))
}

/// The file a `sqlite:` URL names.
fn sqlite_path(url: &str, rest: &str) -> Result<PathBuf, Failure> {
    let path = rest.strip_prefix("//").unwrap_or(rest);
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() {
        return Err(Failure::Usage(format!(
            "the SQLite URL {url:?} names no file: use sqlite:PATH"
        )));
    }
    Ok(PathBuf::from(path))
}

/// The PostgreSQL store the options name, not yet connected: no
/// migration, a small pool.
pub(crate) fn postgres_builder(
    url: &str,
    options: &StoreOptions,
) -> Result<PostgresStoreBuilder, Failure> {
    let mut builder = PostgresEventStore::builder(url)
        .migrate(false)
        .max_connections(4);
    if let Some(schema) = &options.schema {
        builder = builder.schema(schema.clone());
    }
    if let Some(prefix) = &options.table_prefix {
        builder = builder.table_prefix(prefix.clone());
    }
    if let Some(keys) = chain_keys(options)? {
        builder = builder.chain_keys(keys);
    }
    Ok(builder)
}

/// The `--database-url` (or `DATABASE_URL`) the options name.
pub(crate) fn database_url(options: &StoreOptions) -> Result<&str, Failure> {
    options
        .database_url
        .as_deref()
        .filter(|url| !url.is_empty())
        .ok_or_else(|| {
            Failure::Usage(
                "no database: pass --database-url (sqlite:PATH or postgres://...) or set DATABASE_URL"
                    .to_owned(),
            )
        })
}
