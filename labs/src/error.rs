//! The activity layer's one error type, and the exit codes of the `labs` command.
//!
//! Layers below have their own: `pg::ProviderError` (getting and controlling servers) and
//! `store::StoreError` (the event store's contract). A lab's error is one of those, a failed
//! statement with what the lab was doing, bad input the user can fix, or a step of the lab's
//! script that did not go as the script says it must.

use std::path::PathBuf;

use crate::pg::ProviderError;
use crate::settings::SettingsError;
use crate::store::StoreError;

/// What the `labs` command's exit code says. Tools (xtask, CI, scripts) read the code, never the
/// message text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exit {
    /// 0: the lab ran, or the check passed.
    Done,
    /// 1: the check ran and the exercise did not pass it.
    CheckFailed,
    /// 2: bad usage: an unknown flag, activity, myth or scenario (clap uses 2 as well).
    Usage,
    /// 3: the activity has no exercise, or its lab is a draft.
    NoExercise,
    /// 4: the lab or check could not run: no server, an unreadable file, a database error.
    CouldNotRun,
    /// 130: interrupted (Ctrl-C); also 129 for SIGHUP and 143 for SIGTERM, as shells report.
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Done => 0,
            Exit::CheckFailed => 1,
            Exit::Usage => 2,
            Exit::NoExercise => 3,
            Exit::CouldNotRun => 4,
            Exit::Interrupted => 130,
        }
    }

    /// The table `labs --help` and the README show.
    pub const HELP: &'static str = "Exit codes: 0 done or passed; 1 a check failed; 2 bad usage; \
        3 no exercise for that activity; 4 could not run (server, file, database); \
        130 interrupted (129 SIGHUP, 143 SIGTERM).";
}

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A statement failed; `context` says what the lab was doing.
    #[error("{context}: {}", crate::store::server_message(source))]
    Database {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// Input the user can fix: an unknown id, a bad value. Exit code 2.
    #[error("{0}")]
    Usage(String),
    /// A file that cannot be read or written.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// The attendee's exercise cannot be run at all (it does not load, has the wrong shape, never
    /// returns). Says where and why; the check counts as failed, not as unable to run.
    #[error("{0}")]
    Exercise(String),
    /// A step of the lab's script did not happen as the script requires (a wait that never
    /// ended, a count that cannot be). Says what was expected.
    #[error("{0}")]
    Script(String),
}

/// A statement that failed without a more precise context: the message still carries the
/// server's text and SQLSTATE. Prefer [`LabError::db`] where a lab step has a name.
impl From<tokio_postgres::Error> for LabError {
    fn from(source: tokio_postgres::Error) -> LabError {
        LabError::Database { context: "a statement failed".into(), source }
    }
}

impl From<tokio::task::JoinError> for LabError {
    fn from(e: tokio::task::JoinError) -> LabError {
        LabError::Script(format!("a task of the lab ended abnormally: {e}"))
    }
}

/// `ensure(condition, || "what should have happened")?`: a step of the script that must hold.
pub fn ensure(condition: bool, expected: impl FnOnce() -> String) -> Result<(), LabError> {
    if condition {
        Ok(())
    } else {
        Err(LabError::Script(expected()))
    }
}

impl LabError {
    /// `map_err(LabError::db("what the lab was doing"))`.
    pub fn db(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> LabError {
        let context = context.into();
        move |source| LabError::Database { context, source }
    }

    pub fn file(path: impl Into<PathBuf>, error: impl std::fmt::Display) -> LabError {
        LabError::File { path: path.into(), message: error.to_string() }
    }

    /// The exit code this error ends the command with.
    pub fn exit(&self) -> Exit {
        match self {
            LabError::Usage(_) | LabError::Provider(ProviderError::BadSetting { .. }) => Exit::Usage,
            LabError::Exercise(_) => Exit::CheckFailed,
            _ => Exit::CouldNotRun,
        }
    }
}
