//! A lab: what `labs run <id>` and `labs check <id>` do for one activity, declared once.
//!
//! Each activity module implements [`Lab`] for one type: its flags (clap rejects any other), what
//! it needs from the PostgreSQL provider, its `run`, its report, and optionally its exercise and
//! `check`. [`LABS`](crate::LABS) lists them; the `labs` binary only starts the lab, handles
//! signals and prints the report as text or JSON.
//!
//! **Architecture Invariant:** a lab never prints its report and never starts a server except
//! through [`Ctx`], so the binary decides the output format and every server is removed however
//! the run ends.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::{ArgMatches, Args, FromArgMatches};
use futures_util::future::LocalBoxFuture;
use serde::Serialize;

use crate::error::{Exit, LabError};
use crate::pg::{self, Capability, ProviderConfig, Server};
use crate::settings::Settings;

/// A report: JSON for machines (`--json`), text for people, and the exit code it ends with.
pub trait Report: Serialize + fmt::Display {
    fn exit(&self) -> Exit {
        Exit::Done
    }
}

/// One activity's lab.
pub trait Lab: Sync + 'static {
    /// The activity's id in course.toml, and the name of `labs run <id>`.
    const ID: &'static str;
    /// What the lab asks of the provider beyond a fresh server; course.toml's `needs` says the
    /// same (a test compares them).
    const NEEDS: &'static [Capability];
    /// Whether a first Ctrl-C asks the lab to finish its step and report what it has
    /// ([`Ctx::stop_requested`]); otherwise it abandons the lab at once.
    const WINDS_DOWN: bool = false;
    /// The flags of a short run for smoke tests (another PostgreSQL major, the bundle): the
    /// same lab, as small as it can be and still show its point. Empty: the lab as it is.
    const SMOKE_ARGS: &'static [&'static str] = &[];
    /// `labs run <id>`'s own flags.
    type Args: Args + Send + 'static;
    type Report: Report + 'static;

    fn run(&self, args: Self::Args, ctx: &Ctx) -> impl Future<Output = Result<Self::Report, LabError>>;

    /// The attendee's exercise, if this activity has one.
    fn exercise(&self) -> Option<Exercise> {
        None
    }

    /// Judges an exercise file. Called only for labs whose [`Lab::exercise`] is `Some`.
    fn check(&self, file: &ExerciseFile, ctx: &Ctx) -> impl Future<Output = Result<CheckReport, LabError>> {
        let _ = (file, ctx);
        async { Err(LabError::Usage(format!("{} has no exercise", Self::ID))) }
    }
}

/// An exercise the attendee edits: an SQL file read at run time, no compiler involved.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Exercise {
    /// Its path under the kit's `exercises/` directory, e.g. `01-log-sleuth/poll.sql`. The
    /// reference solution lies beside it as `poll.solution.sql` (never in the attendee bundle).
    pub file: &'static str,
    /// The file as shipped, for `labs exercises init`.
    #[serde(skip)]
    pub template: &'static str,
    /// One line: what the attendee writes.
    pub task: &'static str,
}

impl Exercise {
    /// `exercises/01-log-sleuth/poll.sql`.
    pub fn path(&self) -> String {
        format!("exercises/{}", self.file)
    }

    /// `exercises/01-log-sleuth/poll.solution.sql`.
    pub fn solution_path(&self) -> String {
        format!("exercises/{}", self.file.replace(".sql", ".solution.sql"))
    }
}

/// An exercise as read for one check: where from, and its text.
#[derive(Clone, Debug)]
pub struct ExerciseFile {
    /// As the attendee would type it (relative to the kit when it is inside it).
    pub shown: String,
    pub path: PathBuf,
    pub sql: String,
}

impl ExerciseFile {
    pub fn read(path: PathBuf, shown: String) -> Result<ExerciseFile, LabError> {
        let sql = std::fs::read_to_string(&path).map_err(|e| LabError::file(&path, e))?;
        if sql.trim().is_empty() {
            return Err(LabError::Exercise(format!("{shown} is empty: `labs exercises init` writes a fresh copy")));
        }
        Ok(ExerciseFile { shown, path, sql })
    }

    /// `file:line:column: message (SQLSTATE …)` for an error the server raised on this file's
    /// text, as `labs schema verify` reports it. `offset` is where the file's text starts in the
    /// statement the server saw (0 when it was sent as is).
    pub fn locate(&self, error: &tokio_postgres::Error, offset: usize) -> String {
        let Some(db) = error.as_db_error() else { return format!("{}: {error}", self.shown) };
        let at = match db.position() {
            Some(tokio_postgres::error::ErrorPosition::Original(p)) => {
                // The server counts characters from 1, in the whole statement.
                let chars = (*p as usize).saturating_sub(1).saturating_sub(offset);
                let byte = self.sql.char_indices().nth(chars).map_or(self.sql.len(), |(b, _)| b);
                let (line, column) = crate::settings::line_and_column(&self.sql, byte);
                format!("{}:{line}:{column}", self.shown)
            }
            _ => self.shown.clone(),
        };
        format!("{at}: {}", crate::store::server_message(error))
    }
}

/// The verdict of `labs check <id>`: one type for every activity.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub activity: &'static str,
    /// The file that was checked.
    pub file: String,
    pub passed: bool,
    pub checks: Vec<Check>,
    /// Said when every check passes: what the exercise now guarantees.
    #[serde(skip)]
    pub passed_means: &'static str,
}

/// One check: a stable id for machines, a name and the reason for people.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl Check {
    pub fn new(id: &'static str, name: impl Into<String>, passed: bool, detail: impl Into<String>) -> Check {
        Check { id, name: name.into(), passed, detail: detail.into() }
    }
}

impl CheckReport {
    pub fn new(activity: &'static str, file: &ExerciseFile, checks: Vec<Check>, passed_means: &'static str) -> Self {
        let passed = checks.iter().all(|c| c.passed);
        CheckReport { activity, file: file.shown.clone(), passed, checks, passed_means }
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "labs check {} ({})", self.activity, self.file)?;
        for c in &self.checks {
            writeln!(f, "  {} {}", if c.passed { "ok  " } else { "FAIL" }, c.name)?;
            for line in c.detail.lines() {
                writeln!(f, "       {line}")?;
            }
        }
        if self.passed {
            writeln!(f, "passed: {}", self.passed_means)
        } else {
            writeln!(
                f,
                "failed: change {} (the task and hints are at its top), save, and run `labs check {}` again.",
                self.file, self.activity
            )
        }
    }
}

impl Report for CheckReport {
    fn exit(&self) -> Exit {
        if self.passed {
            Exit::Done
        } else {
            Exit::CheckFailed
        }
    }
}

/// What a lab may use while it runs: the settings, servers, progress lines, the stop request.
pub struct Ctx {
    pub settings: Settings,
    provider: ProviderConfig,
    stop: Arc<AtomicBool>,
    terminal: bool,
}

impl Ctx {
    pub fn new(settings: Settings, provider: ProviderConfig) -> Ctx {
        use std::io::IsTerminal;
        Ctx { settings, provider, stop: Arc::new(AtomicBool::new(false)), terminal: std::io::stderr().is_terminal() }
    }

    pub fn provider(&self) -> &ProviderConfig {
        &self.provider
    }

    /// One line of progress, on stderr (stdout carries only the report).
    pub fn progress(&self, line: impl fmt::Display) {
        eprintln!("{line}");
    }

    /// Whether stderr is a terminal, where a live view may redraw in place.
    pub fn live(&self) -> bool {
        self.terminal
    }

    /// Set by the first Ctrl-C for labs that wind down ([`Lab::WINDS_DOWN`]).
    pub fn stop_flag(&self) -> &Arc<AtomicBool> {
        &self.stop
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Refuses, before anything starts, a backend that cannot do what the lab needs.
    pub async fn require(&self, needs: &[Capability]) -> Result<(), LabError> {
        let backend = pg::resolve_backend(&self.provider).await?;
        if let Some(&capability) = needs.iter().find(|c| !pg::capabilities_of(backend).contains(c)) {
            return Err(pg::ProviderError::MissingCapability { backend, capability }.into());
        }
        Ok(())
    }

    /// A fresh server with `needs`, announced on stderr.
    pub async fn start_server(&self, needs: &[Capability]) -> Result<Server, LabError> {
        let started = Instant::now();
        self.progress(format_args!("starting a fresh PostgreSQL ({} backend)...", self.provider.backend));
        let server = Server::start(&self.provider, needs).await?;
        self.progress(format_args!("server ready in {:.1} s: {}", started.elapsed().as_secs_f64(), server.describe()));
        Ok(server)
    }

    /// Runs `work` on a fresh server and removes the server afterwards, whatever `work` returned.
    /// (An abandoned run, its future dropped on a signal, is cleaned up by `pg::reap_all`.)
    pub async fn with_server<T>(
        &self,
        needs: &[Capability],
        work: impl AsyncFnOnce(&mut Server) -> Result<T, LabError>,
    ) -> Result<T, LabError> {
        let mut server = self.start_server(needs).await?;
        let result = work(&mut server).await;
        if let Err(e) = server.shutdown().await {
            self.progress(format_args!("warning: the server was not removed cleanly: {e}"));
        }
        result
    }
}

/// A report already rendered both ways, with its exit code: what the binary prints.
pub struct Rendered {
    pub text: String,
    pub json: serde_json::Value,
    pub exit: Exit,
}

impl Rendered {
    fn of(report: &(impl Report + ?Sized)) -> Result<Rendered, LabError> {
        let json = serde_json::to_value(report).map_err(|e| LabError::Script(format!("rendering the report: {e}")))?;
        Ok(Rendered { text: report.to_string(), json, exit: report.exit() })
    }
}

/// [`Lab`] without its types, so the registry can hold every lab in one list.
pub trait AnyLab: Sync {
    fn id(&self) -> &'static str;
    fn needs(&self) -> &'static [Capability];
    fn winds_down(&self) -> bool;
    fn smoke_args(&self) -> &'static [&'static str];
    /// `labs run <id>` with the lab's flags.
    fn command(&self) -> clap::Command;
    fn run<'a>(&'a self, matches: &'a ArgMatches, ctx: &'a Ctx) -> LocalBoxFuture<'a, Result<Rendered, LabError>>;
    fn exercise(&self) -> Option<Exercise>;
    fn check<'a>(&'a self, file: &'a ExerciseFile, ctx: &'a Ctx) -> LocalBoxFuture<'a, Result<Rendered, LabError>>;
}

impl<L: Lab> AnyLab for L {
    fn id(&self) -> &'static str {
        L::ID
    }
    fn needs(&self) -> &'static [Capability] {
        L::NEEDS
    }
    fn winds_down(&self) -> bool {
        L::WINDS_DOWN
    }
    fn smoke_args(&self) -> &'static [&'static str] {
        L::SMOKE_ARGS
    }
    fn command(&self) -> clap::Command {
        // The help line is the activity's one-line lab description from the built-in course.
        let about = Settings::compiled_in().course.activity(L::ID).map(|a| a.lab.clone()).unwrap_or_default();
        L::Args::augment_args(clap::Command::new(L::ID).about(about))
    }
    fn run<'a>(&'a self, matches: &'a ArgMatches, ctx: &'a Ctx) -> LocalBoxFuture<'a, Result<Rendered, LabError>> {
        Box::pin(async move {
            let args = L::Args::from_arg_matches(matches).map_err(|e| LabError::Usage(e.to_string()))?;
            let report = Lab::run(self, args, ctx).await?;
            Rendered::of(&report)
        })
    }
    fn exercise(&self) -> Option<Exercise> {
        Lab::exercise(self)
    }
    fn check<'a>(&'a self, file: &'a ExerciseFile, ctx: &'a Ctx) -> LocalBoxFuture<'a, Result<Rendered, LabError>> {
        Box::pin(async move { Rendered::of(&Lab::check(self, file, ctx).await?) })
    }
}

/// The lab registered for an activity id.
pub fn find(id: &str) -> Option<&'static dyn AnyLab> {
    crate::LABS.iter().copied().find(|lab| lab.id() == id)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::course::Status;

    /// The registry and course.toml agree: every ready activity has a lab, every lab an
    /// activity, and each lab asks the provider for exactly what course.toml says it needs.
    #[test]
    fn the_registry_matches_the_course() {
        let course = Settings::compiled_in().course;
        for activity in &course.activities {
            let lab = find(&activity.id);
            match activity.status {
                Status::Ready => {
                    let lab =
                        lab.unwrap_or_else(|| panic!("activity '{}' is ready but has no lab in LABS", activity.id));
                    let declared: BTreeSet<String> = activity.needs.iter().map(|c| c.to_string()).collect();
                    let asked: BTreeSet<String> = lab.needs().iter().map(|c| c.to_string()).collect();
                    assert_eq!(asked, declared, "'{}': the lab's NEEDS and course.toml's needs differ", activity.id);
                }
                Status::Draft => assert!(lab.is_none(), "activity '{}' is a draft but has a lab", activity.id),
            }
        }
        for lab in crate::LABS {
            assert!(course.activity(lab.id()).is_some(), "lab '{}' has no activity in course.toml", lab.id());
        }
        let ids: BTreeSet<&str> = crate::LABS.iter().map(|l| l.id()).collect();
        assert_eq!(ids.len(), crate::LABS.len(), "a lab is registered twice");
    }

    /// Each exercise's file is where it says, its template is that file, and its reference
    /// solution lies beside it.
    #[test]
    fn every_exercise_has_its_file_and_a_solution() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for lab in crate::LABS {
            let Some(exercise) = lab.exercise() else { continue };
            let on_disk = std::fs::read_to_string(root.join(exercise.path()))
                .unwrap_or_else(|e| panic!("{}: {}: {e}", lab.id(), exercise.path()));
            assert_eq!(on_disk, exercise.template, "{}: the compiled-in template is not the file", lab.id());
            assert!(root.join(exercise.solution_path()).is_file(), "{}: no {}", lab.id(), exercise.solution_path());
        }
    }
}
