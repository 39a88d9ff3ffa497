//! Why a command failed, and the exit code a script sees for it.

/// A command's failure: its message (one line on stderr) and exit code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// Bad usage or input: a malformed value, file or combination.
    #[error("{0}")]
    Usage(String),
    /// What was asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// `verify` found a broken link.
    #[error("{0}")]
    ChainBroken(String),
    /// The database's schema is missing, behind or ahead of this build.
    #[error("{0}")]
    Schema(String),
    /// Whoever read stdout stopped reading (`annals events | head`): the
    /// command ends quietly, as a pipe's writer does.
    #[error("stdout was closed")]
    OutputClosed,
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] annals::Error),
    /// An import failed or was refused: its transaction rolled back.
    #[error("nothing was imported: {0}")]
    Import(annals::Error),
    /// A file or terminal could not be read or written.
    #[error("{0}")]
    Io(String),
}

impl Failure {
    /// The process exit code (see the table in `main.rs` and the README).
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Failure::Store(annals::Error::InvalidInput { .. } | annals::Error::Config(_))
            | Failure::Import(annals::Error::InvalidInput { .. }) => 2,
            Failure::Store(
                annals::Error::SchemaTooNew { .. } | annals::Error::ForeignHistory { .. },
            ) => 5,
            Failure::Store(_) | Failure::Import(_) | Failure::Io(_) => 1,
            Failure::OutputClosed => 0,
            Failure::Usage(_) => 2,
            Failure::NotFound(_) => 3,
            Failure::ChainBroken(_) => 4,
            Failure::Schema(_) => 5,
            Failure::Interrupted => 130,
        }
    }

    /// The message and its causes on one line: a script reads the last
    /// line of stderr.
    pub(crate) fn one_line(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            let next = error.to_string();
            if !text.contains(&next) {
                text.push_str(": ");
                text.push_str(&next);
            }
            cause = error.source();
        }
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// An I/O failure naming what was being done.
    pub(crate) fn io(what: impl std::fmt::Display, error: impl std::fmt::Display) -> Failure {
        Failure::Io(format!("{what}: {error}"))
    }
}
