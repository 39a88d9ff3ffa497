//! Writing the artefacts into a workspace, and checking that the files on
//! disk are what the registry would generate now.
//!
//! A workspace gets:
//!
//! | path | what |
//! | --- | --- |
//! | `migrations/{postgres,sqlite}/NNNN_name.sql` | Annals' own tables, default layout; embedded by the runtime; append-only |
//! | `schema/events/{type}.v{N}.json` | a JSON Schema per event type and version |
//! | `schema/read_models/{postgres,sqlite}.sql` | the tables `#[projection(table(...))]` declares |
//! | `schema/catalog.md` | the event catalog |
//!
//! Migrations are never rewritten: an existing file that differs from what
//! the generator produces for its number is an error
//! ([`CodegenError::EditedMigration`]), in both modes. Schemas of event
//! versions that are no longer written but still upcast from are kept as
//! they are: they document what old events in the log look like.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use annals::registry;

use crate::catalog;
use crate::dialect::Dialect;
use crate::error::CodegenError;
use crate::json_schema;
use crate::layout::StoreLayout;
use crate::read_model_ddl;
use crate::store_migrations::{self, GENERATED_MARKER};

/// What `check` found wrong with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staleness {
    /// The file should exist and does not.
    Missing,
    /// The file differs from what would be generated.
    Outdated,
    /// The file is generated output that nothing registered produces any more.
    Orphaned,
}

/// One stale file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleFile {
    /// The file, relative to the workspace root.
    pub path: PathBuf,
    /// What is wrong with it.
    pub staleness: Staleness,
}

impl std::fmt::Display for StaleFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.staleness {
            Staleness::Missing => "missing",
            Staleness::Outdated => "out of date",
            Staleness::Orphaned => "no longer generated",
        };
        write!(f, "{}: {what}", self.path.display())
    }
}

/// What a run changed (write mode) or would change (check mode).
#[derive(Debug, Default)]
pub struct Outcome {
    /// Files written (or, in check mode, that would be written).
    pub stale: Vec<StaleFile>,
    /// Files left alone because they are current.
    pub current: usize,
}

/// Whether to write files or only compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Write missing and outdated files, remove orphaned ones.
    Write,
    /// Change nothing; report what `Write` would do.
    Check,
}

/// Generates (or checks) every artefact under `root` for the types
/// registered in this program.
pub fn run(root: &Path, mode: Mode) -> Result<Outcome, CodegenError> {
    run_with_migrations_in(root, &root.join("migrations"), mode)
}

/// [`run`], with Annals' own migrations in `migrations` (a `postgres` and a
/// `sqlite` folder) instead of `root/migrations`: the Annals workspace keeps
/// them inside the runtime crate, which embeds them.
pub fn run_with_migrations_in(
    root: &Path,
    migrations: &Path,
    mode: Mode,
) -> Result<Outcome, CodegenError> {
    registry::validate()?;
    let mut outcome = Outcome::default();
    for dialect in Dialect::ALL {
        let folder = migrations.join(dialect.folder());
        migrations_into(
            &folder,
            root,
            dialect,
            &StoreLayout::default(),
            mode,
            &mut outcome,
        )?;
    }
    let schema = root.join("schema");
    let mut files: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (dialect, sql) in read_models()? {
        files.insert(
            schema
                .join("read_models")
                .join(format!("{}.sql", dialect.folder())),
            sql,
        );
    }
    files.insert(schema.join("catalog.md"), catalog::markdown());
    let events = schema.join("events");
    for event in registry::events() {
        files.insert(
            events.join(json_schema::file_name(event.name, event.version)),
            json_schema::to_file_text(&json_schema::for_event(event)),
        );
    }
    for (path, text) in &files {
        sync_file(path, text, root, mode, &mut outcome)?;
    }
    remove_orphaned_schemas(&events, &files, root, mode, &mut outcome)?;
    Ok(outcome)
}

/// Writes (or checks) the migrations of one dialect and layout into
/// `folder`: the `cargo xtask schema` step for `migrations/`, and the way to
/// produce a custom layout (schema, prefix, partitioning) for a DBA.
pub fn migrations_into(
    folder: &Path,
    root: &Path,
    dialect: Dialect,
    layout: &StoreLayout,
    mode: Mode,
    outcome: &mut Outcome,
) -> Result<(), CodegenError> {
    let rendered = store_migrations::migrations(dialect, layout);
    let known: HashMap<String, &store_migrations::RenderedMigration> = rendered
        .iter()
        .map(|migration| (migration.file_name(), migration))
        .collect();
    for entry in list_dir(folder)? {
        let name = entry
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".sql") && !known.contains_key(&name) {
            return Err(CodegenError::UnknownMigration {
                path: entry,
                last: store_migrations::latest(dialect),
            });
        }
    }
    for migration in &rendered {
        let path = folder.join(migration.file_name());
        match read_optional(&path)? {
            Some(existing) if existing == migration.sql => outcome.current += 1,
            Some(_) => {
                return Err(CodegenError::EditedMigration {
                    path,
                    version: migration.version,
                });
            }
            None => {
                if mode == Mode::Write {
                    write(&path, &migration.sql)?;
                }
                outcome.stale.push(StaleFile {
                    path: relative(&path, root),
                    staleness: Staleness::Missing,
                });
            }
        }
    }
    Ok(())
}

/// The read-model DDL of every registered projection, per dialect.
fn read_models() -> Result<Vec<(Dialect, String)>, CodegenError> {
    let mut projections: Vec<_> = registry::projections().collect();
    projections.sort_by(|a, b| a.name.cmp(b.name).then(a.version.cmp(&b.version)));
    let mut owners: HashMap<&'static str, &'static str> = HashMap::new();
    for projection in &projections {
        for table in projection.tables {
            if let Some(first) = owners.insert(table.name, projection.rust_type) {
                let (first, second) = if first <= projection.rust_type {
                    (first, projection.rust_type)
                } else {
                    (projection.rust_type, first)
                };
                return Err(CodegenError::DuplicateTable {
                    table: table.name,
                    first,
                    second,
                });
            }
        }
    }
    Ok(Dialect::ALL
        .into_iter()
        .map(|dialect| {
            let mut sql = format!(
                "-- {GENERATED_MARKER}.\n-- SQL read models declared with #[projection(table(...))], for {dialect}.\n\n"
            );
            for projection in &projections {
                sql.push_str(&read_model_ddl::for_projection(dialect, projection));
            }
            (dialect, sql)
        })
        .collect())
}

fn sync_file(
    path: &Path,
    text: &str,
    root: &Path,
    mode: Mode,
    outcome: &mut Outcome,
) -> Result<(), CodegenError> {
    let staleness = match read_optional(path)? {
        Some(existing) if existing == text => {
            outcome.current += 1;
            return Ok(());
        }
        Some(_) => Staleness::Outdated,
        None => Staleness::Missing,
    };
    if mode == Mode::Write {
        write(path, text)?;
    }
    outcome.stale.push(StaleFile {
        path: relative(path, root),
        staleness,
    });
    Ok(())
}

/// Removes schemas of event versions nothing writes or upcasts from; keeps
/// those of older versions that registered events still read.
fn remove_orphaned_schemas(
    folder: &Path,
    generated: &BTreeMap<PathBuf, String>,
    root: &Path,
    mode: Mode,
    outcome: &mut Outcome,
) -> Result<(), CodegenError> {
    let retained: Vec<String> = registry::events()
        .flat_map(|event| {
            event
                .upcasts_from
                .iter()
                .map(|version| json_schema::file_name(event.name, *version))
        })
        .collect();
    for path in list_dir(folder)? {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.ends_with(".json") || generated.contains_key(&path) || retained.contains(&name) {
            continue;
        }
        if mode == Mode::Write {
            fs::remove_file(&path).map_err(|source| CodegenError::Io {
                path: path.clone(),
                source,
            })?;
        }
        outcome.stale.push(StaleFile {
            path: relative(&path, root),
            staleness: Staleness::Orphaned,
        });
    }
    Ok(())
}

fn list_dir(folder: &Path) -> Result<Vec<PathBuf>, CodegenError> {
    let entries = match fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CodegenError::Io {
                path: folder.to_owned(),
                source,
            });
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CodegenError::Io {
            path: folder.to_owned(),
            source,
        })?;
        paths.push(entry.path());
    }
    paths.sort();
    Ok(paths)
}

fn read_optional(path: &Path) -> Result<Option<String>, CodegenError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CodegenError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn write(path: &Path, text: &str) -> Result<(), CodegenError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|source| CodegenError::Io {
            path: parent.to_owned(),
            source,
        })?;
    }
    fs::write(path, text).map_err(|source| CodegenError::Io {
        path: path.to_owned(),
        source,
    })
}

fn relative(path: &Path, root: &Path) -> PathBuf {
    path.strip_prefix(root).unwrap_or(path).to_owned()
}
