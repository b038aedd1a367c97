//! `cargo xtask <task>`: the course's build, check and packaging tasks, in Rust so they run the
//! same on every machine (no shell scripts, no globally installed mdbook).
//!
//! One module per task. Every external program is started through [`run_command`] (or
//! [`command_output`]), which echoes it first, so a failing step can be rerun by hand, and gives
//! it a time limit; `children` ends it (and xtask) on SIGINT, SIGTERM or SIGHUP.

mod bench;
mod book;
mod browser;
mod bundle;
mod check;
mod children;
mod external_links;
mod figures;
mod fork_matrix;
mod handouts;
mod how_to_run;
mod links;
mod markdown;
mod materials;
mod poll;
mod prepare;
mod rehearse;
mod run_sheet;
mod serve;
mod sql;
mod style;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use labs::course::Course;
use labs::pg::Backend;

#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "Build, check and package the workshop kit")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the book: the full edition into target/book, or with --attendee the attendee edition
    /// (no facilitator notes, no solutions) into target/book-attendee.
    Book {
        #[arg(long)]
        attendee: bool,
        /// Output directory instead of the default.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Build the labs and the book, serve the book on 127.0.0.1 and rebuild it when
    /// book/, course.toml, cohort.toml, fixtures/, exercises/ or labs/tests/snapshots/ change.
    Serve {
        #[arg(long, default_value_t = 3000)]
        port: u16,
    },
    /// The course's full test run: course, book, links, SQL in the book, tests, exercises, handouts.
    Check {
        /// Where the PostgreSQL servers come from (see `cargo labs doctor`).
        #[arg(long, default_value = "container")]
        pg: Backend,
        /// Skip `cargo test --workspace` (for quick iterations on the book).
        #[arg(long)]
        quick: bool,
    },
    /// External links: `--update` records them in book/external-links.txt; `--online` checks
    /// that each answers (needs the network; not part of `check`).
    Links {
        #[arg(long)]
        update: bool,
        #[arg(long)]
        online: bool,
    },
    /// Package target/handouts/attendee.zip and facilitator.zip.
    Handouts {
        #[arg(long)]
        out: Option<PathBuf>,
        /// Put the dev build of `labs` in the attendee bundle instead of the release build
        /// (what `cargo xtask check` does: the same code, without a release compile).
        #[arg(long)]
        dev: bool,
    },
    /// Benchmarks behind the labs' speed and memory targets (medians; target/bench/results.json).
    Bench {
        /// Runs per benchmark; the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// On the facilitator's machine, before the day: run every live demo of the cohort's session
    /// once, time each against its slot, build the printables, and print a go/no-go list.
    Rehearse {
        /// Where the PostgreSQL servers come from (see `cargo labs doctor`).
        #[arg(long, default_value = "auto")]
        pg: Backend,
        /// Also save each demo's output as a fallback under fixtures/<activity>/saved/rehearsal/.
        #[arg(long)]
        save: bool,
    },
    /// Runs one program as xtask runs every child: in a process group of its own, within a time
    /// limit, ended (SIGTERM, then SIGKILL) when xtask gets SIGINT, SIGTERM or SIGHUP. For the
    /// tests of that path (xtask/tests/interrupt.rs).
    #[command(hide = true)]
    RunChild {
        /// Seconds before the program is ended as timed out.
        #[arg(long, default_value_t = 600)]
        limit: u64,
        #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
        program: Vec<String>,
    },
    /// Ahead of the workshop, while online: build everything and fetch the PostgreSQL image.
    Prepare {
        /// Build the PostgreSQL image from Debian's packages (.ci/postgres-image/build.sh)
        /// instead of pulling it, for machines without access to an image registry.
        #[arg(long)]
        image_from_debian: bool,
    },
}

fn links_task(root: &Path, update: bool, online: bool) -> Result<()> {
    if update {
        let n = external_links::update(root)?;
        println!("{} records {n} external links", external_links::RECORD);
    } else {
        let n = external_links::check_recorded(root)?;
        println!("{} is up to date: {n} external links", external_links::RECORD);
    }
    if online {
        external_links::check_online(root)?;
    }
    Ok(())
}

fn main() {
    // First: from here on an interrupt ends what xtask started before xtask exits.
    children::end_children_on_signals();
    book::install_logger();
    let cli = Cli::parse();
    let root = repo_root();
    let result = match cli.task {
        Task::Book { attendee, out } => book::run(&root, attendee, out),
        Task::Serve { port } => serve::run(&root, port),
        Task::Check { pg, quick } => match check::run(&root, pg, quick) {
            Ok(true) => Ok(()),
            // The summary's last line is the verdict; no further message after it.
            Ok(false) => std::process::exit(1),
            Err(e) => Err(e),
        },
        Task::Handouts { out, dev } => {
            handouts::run(&root, out, if dev { bundle::Profile::Dev } else { bundle::Profile::Release })
        }
        Task::Links { update, online } => links_task(&root, update, online),
        Task::Bench { runs } => bench::run(&root, runs),
        Task::Prepare { image_from_debian } => prepare::run(&root, image_from_debian),
        Task::Rehearse { pg, save } => match rehearse::run(&root, pg, save) {
            Ok(true) => Ok(()),
            // The go/no-go list ends with the verdict; no further message after it.
            Ok(false) => std::process::exit(1),
            Err(e) => Err(e),
        },
        Task::RunChild { limit, program } => {
            run_command_within(Command::new(&program[0]).args(&program[1..]), Duration::from_secs(limit))
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The repository root, wherever `cargo xtask` is started from.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives one level below the root").to_path_buf()
}

/// The kit's settings as they are on disk now (course.toml, cohort.toml), read with the labs'
/// own loader, so an instructor's edit shows up without recompiling and is judged by one rule.
pub fn load_settings(root: &Path) -> Result<labs::settings::Settings> {
    labs::settings::Settings::load_from(labs::settings::Kit::at(root))
        .map_err(|e| anyhow::anyhow!("{e}\nFix the file named above, then rerun."))
}

/// course.toml as it is on disk now.
pub fn load_course(root: &Path) -> Result<Course> {
    Ok(load_settings(root)?.course)
}

/// The myth bank on disk, with the cohort's poll (every poll myth must be in it).
pub fn load_bank(root: &Path) -> Result<labs::mythbusting::Bank> {
    let settings = load_settings(root)?;
    labs::mythbusting::Bank::load(&settings).map_err(|e| anyhow::anyhow!("{e}\nFix it, then rerun."))
}

/// cohort.toml from disk, checked against the course and the myth bank.
pub fn load_cohort(root: &Path) -> Result<labs::course::Cohort> {
    load_bank(root)?;
    Ok(load_settings(root)?.cohort)
}

/// `cargo`, the same one that started us, run from the repository root.
pub fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root);
    // `cargo run` gave us xtask's CARGO_MANIFEST_DIR, CARGO_PKG_*…; some build scripts (ring's)
    // track CARGO_MANIFEST_DIR, so passing it on would rebuild ring, rustls and everything above
    // them each time a cargo started from here alternates with one started from a shell.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo_run = name.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&name.as_ref());
        if set_by_cargo_run {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd
}

/// How long a program xtask runs may take unless its caller says otherwise: far more than any
/// lab or check needs, so only a hung one reaches it.
pub const DEFAULT_LIMIT: Duration = minutes(30);

/// Runs a program with inherited output, echoing it first; fails if it does not succeed or
/// outlives [`DEFAULT_LIMIT`] (then it is ended: SIGTERM, then SIGKILL).
pub fn run_command(cmd: &mut Command) -> Result<()> {
    run_command_within(cmd, DEFAULT_LIMIT)
}

/// [`run_command`] with its own time limit.
pub fn run_command_within(cmd: &mut Command, limit: Duration) -> Result<()> {
    println!("$ {}", describe(cmd));
    let status = children::run(cmd, Some(limit))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs a program, echoing it first, and captures its output; the caller judges the exit status.
/// Past [`DEFAULT_LIMIT`] it is ended and this fails.
pub fn command_output(cmd: &mut Command) -> Result<Output> {
    println!("$ {}", describe(cmd));
    children::output(cmd, Some(DEFAULT_LIMIT))
}

/// `n` minutes, for time limits.
pub const fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

/// The command as one would type it: explicit environment, program, arguments.
pub fn describe(cmd: &Command) -> String {
    let quote = |s: &OsStr| {
        let s = s.to_string_lossy();
        if s.is_empty() || s.contains(|c: char| c.is_whitespace() || "\"'$`|&;<>()".contains(c)) {
            format!("'{}'", s.replace('\'', r"'\''"))
        } else {
            s.into_owned()
        }
    };
    let mut parts: Vec<String> =
        cmd.get_envs().filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), quote(v)))).collect();
    let program = Path::new(cmd.get_program());
    // `cargo` rather than the absolute path cargo gave us in $CARGO.
    parts.push(match program.file_stem() {
        Some(stem) if stem == "cargo" => "cargo".into(),
        _ => quote(cmd.get_program()),
    });
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

/// Where cargo puts what it builds for the kit at `root`: `CARGO_TARGET_DIR` when set (as in
/// CI caches and shared build directories), else `target/`.
pub fn cargo_target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// A path relative to the repository root, for messages.
pub fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

/// A small course for tests, so they do not break when an instructor edits course.toml. Its
/// core holds the one ready activity; the two-hour `long` variant holds all three.
#[cfg(test)]
pub const TEST_COURSE: &str = r#"
[course]
title = "Test course"
session_minutes = 25
core = ["log-sleuth"]

[[activity]]
number = 1
id = "log-sleuth"
title = "Log Sleuth"
minutes = 15
status = "ready"
needs = []
lab = "find the | skipped event"
materials = "the logs"

[activity.card]
name = "Log Sleuth"
changeover = 1
changeover_room = "Pairs sit together."
changeover_remote = "Stay in the main room."
groups = "pairs"
remote_in = "main-room"
room = "Pairs hunt the log."
remote = "Post findings in the chat."
fallback = "Show the saved timeline."

[[activity.demo]]
run = "run log-sleuth"
phase = "Reproduce"
within_seconds = 60

[[activity]]
number = 2
id = "wal-race"
title = "Throughput Throwdown: WAL Race"
minutes = 10
status = "draft"
needs = []
lab = "race ingestion strategies"
materials = "bet sheets"

[activity.card]
name = "WAL Race"
changeover = 2
changeover_room = "Two pairs make a table."
changeover_remote = "Producer pastes the bet line."
groups = "tables"
remote_in = "main-room"
room = "Tables bet, then watch the race."
remote = "Post bets in the chat."
fallback = "Show the saved race."

[[activity.demo]]
run = "run wal-race --myth {myth}"
phase = "Race"
within_seconds = 60

[[activity.print]]
page = "04-wal-race/bet-sheet.html"
per = "table"

[[activity]]
number = 3
id = "outage"
title = "'Oh No!' Outage"
minutes = 10
status = "draft"
needs = ["crash"]
lab = "lose the recent WAL"
materials = "role cards"

[activity.card]
name = "Outage"
changeover = 2
changeover_room = "Deal the role cards."
changeover_remote = "Producer posts the doc links."
groups = "tables"
remote_in = "breakout-rooms"
room = "Tables argue three decisions."
remote = "Tables argue in their rooms."
fallback = "Show the saved run."

[[variant]]
id = "long"
title = "Long"
session_minutes = 80
minutes = { log-sleuth = 30, wal-race = 15, outage = 15, close = 10 }

[[segment]]
id = "welcome"
title = "Welcome"
minutes = 5
facilitator = "Greet the room."
room = "Run `labs doctor`."
remote = "Post the last line in the chat."
materials = "none"
fallback = "Pair up."

[[segment]]
activity = "log-sleuth"

[[segment]]
activity = "wal-race"

[[segment]]
activity = "outage"

[[segment]]
id = "close"
title = "Close"
minutes = 4
facilitator = "Thank the room."
room = "Take the handouts."
remote = "Take the link."
materials = "none"
fallback = "E-mail the bundle."
"#;

#[cfg(test)]
pub fn test_course() -> Course {
    Course::parse(TEST_COURSE).expect("the test course is valid")
}

/// A cohort that runs the test course's `long` variant in full (every activity).
/// The frozen kit the labs' tests use (labs/tests/data/kit): course.toml and cohort.toml as
/// shipped, never the repository's own, so an instructor's edit does not break xtask's tests.
#[cfg(test)]
pub fn test_kit() -> PathBuf {
    repo_root().join("labs/tests/data/kit")
}

/// A cohort that runs the test course's core variant in full.
#[cfg(test)]
pub fn test_cohort() -> labs::course::Cohort {
    labs::course::Cohort {
        title: "Test cohort".into(),
        date: "2026-01-01".into(),
        variant: "long".into(),
        poll: vec![],
        skip: vec![],
        core: None,
        expected: labs::course::Expected::default(),
    }
}
