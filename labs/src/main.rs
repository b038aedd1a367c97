//! The `labs` command: the attendee's and facilitator's entry point to every lab.
//!
//! It parses the command line, finds the lab in the registry (`labs::LABS`), runs it with a
//! [`Ctx`], handles signals (every server is removed however the run ends), and prints the
//! report as text or JSON. The labs themselves live in the library; nothing here knows one.

use std::future::Future;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{ArgMatches, Args, FromArgMatches, Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};

use labs::course::Status;
use labs::lab::{self, AnyLab, Ctx, ExerciseFile, Rendered};
use labs::log_sleuth::generate::Difficulty;
use labs::pg::{self, Backend, DockerEngine, ProviderConfig, Server};
use labs::settings::Settings;
use labs::{store, Exit, LabError, LABS};

#[derive(Parser)]
#[command(
    name = "labs",
    version,
    about = "Labs for 'Designing High-Throughput Event Sourcing Systems with PostgreSQL'",
    after_help = Exit::HELP
)]
struct Cli {
    /// Where the PostgreSQL server comes from (default: auto, or LABS_PG).
    #[arg(long, global = true, value_enum)]
    pg: Option<Backend>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the activities: minutes (this cohort's variant), status, what each lab needs, its exercise.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Run an activity's lab against a fresh PostgreSQL server (`labs run <id> --help`: its options).
    Run(RunCommand),
    /// Check your exercise for an activity: fails until it is solved.
    Check {
        /// Activity id, e.g. log-sleuth (see `labs list`).
        lab: String,
        /// Check this file instead of the kit's exercises/<activity>/… file.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Check the reference solution (in a checkout; the attendee bundle has none).
        #[arg(long, conflicts_with = "file")]
        solution: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check this machine: where the kit's files come from, Docker or local PostgreSQL, and that a
    /// server starts (its version, and how long it took).
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Remove servers, directories and containers left by a labs process that was killed.
    Clean,
    /// While online, before the day: get the PostgreSQL image (or check it is there) and say how
    /// big it is, so the labs need no download in the room.
    Prepare,
    /// Exercise files: `labs exercises init` writes fresh copies.
    #[command(subcommand)]
    Exercises(Exercises),
    /// Activity 1 tools: audit and generate event logs.
    #[command(subcommand)]
    Sleuth(Sleuth),
    /// Activity 3 tools: check your own event store schema against the store's contract.
    #[command(subcommand)]
    Schema(Schema),
    /// Benchmarks you can rerun: figures are medians, ratios compare runs on the same server.
    #[command(subcommand)]
    Bench(Bench),
}

/// `labs run <lab> …`: one subcommand per registered lab, each with its own flags, so clap
/// rejects a flag the lab does not take.
struct RunCommand {
    lab: &'static dyn AnyLab,
    json: bool,
    matches: ArgMatches,
}

impl FromArgMatches for RunCommand {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let (id, sub) =
            matches.subcommand().ok_or_else(|| clap::Error::new(clap::error::ErrorKind::MissingSubcommand))?;
        let lab = lab::find(id).ok_or_else(|| clap::Error::new(clap::error::ErrorKind::InvalidSubcommand))?;
        Ok(RunCommand { lab, json: sub.get_flag("json"), matches: sub.clone() })
    }
    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for RunCommand {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let json =
            clap::Arg::new("json").long("json").action(clap::ArgAction::SetTrue).help("Print the report as JSON");
        cmd.subcommand_required(true)
            .subcommand_value_name("ACTIVITY")
            .subcommands(LABS.iter().map(|lab| lab.command().arg(json.clone())))
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

#[derive(Subcommand)]
enum Exercises {
    /// Write fresh exercise files (exercises/<activity>/…) into DIR (default: the kit's directory,
    /// or the current one). Existing files are kept unless --force.
    Init {
        dir: Option<PathBuf>,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum Schema {
    /// Load FILE.sql into a fresh server and run the store's conformance checks against its
    /// append_to_stream and read_all_after (signatures in labs/src/store/schema.sql).
    Verify {
        /// Your schema, e.g. a copy of fixtures/03-schema-sketch/my-schema.sql.
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// The reference store's appends and reads against a plain COPY, INSERT and position read.
    Store {
        /// Runs per shape; the report gives medians.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=50))]
        runs: u16,
        /// Multiplies every shape's event count (0.1 for a quick look, 1 by default).
        #[arg(long, default_value_t = 1.0, value_parser = scale)]
        scale: f64,
        /// Only these shapes (and their ceilings), comma-separated.
        #[arg(long, value_delimiter = ',', value_enum)]
        only: Vec<store::bench::Shape>,
        #[arg(long)]
        json: bool,
    },
}

fn scale(text: &str) -> Result<f64, LabError> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 100.0 => Ok(s),
        _ => Err(LabError::Usage(format!("must be above 0 and at most 100, not {text}"))),
    }
}

#[derive(Subcommand)]
enum Sleuth {
    /// Report duplicates, version gaps and conflicts, out-of-order versions and position regressions.
    Audit {
        /// JSON-lines event logs (fields: event_id, stream_id, version, position, type, recorded_at, data).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// One JSON object per finding, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Write a fresh incident log and its answer key: the same seed gives the same bytes.
    Generate {
        #[arg(long)]
        seed: u64,
        /// Directory to write incident.jsonl and answer-key.json into (created if missing).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "medium")]
        difficulty: Difficulty,
        /// Number of payments (four events each) instead of the difficulty's, e.g. 250000 for
        /// a million-line log to benchmark the audit.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        payments: Option<u64>,
        /// Overwrite files that already exist.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    // Die quietly when stdout is closed early (`labs run --json | head`), like other Unix tools.
    // SAFETY: resetting a signal disposition at startup, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `labs run <unknown>`: name the activities, as `labs check <unknown>` does; a draft says so.
        Err(e)
            if e.kind() == clap::error::ErrorKind::InvalidSubcommand
                && std::env::args().nth(1).as_deref() == Some("run") =>
        {
            let unknown = e.get(clap::error::ContextKind::InvalidSubcommand).map(|v| v.to_string()).unwrap_or_default();
            let course = Settings::load().map(|s| s.course).unwrap_or_else(|_| Settings::compiled_in().course);
            if course.activity(&unknown).is_some() {
                eprintln!("activity '{unknown}' is a draft: its lab is not in this build yet (`labs list` shows which are ready)");
                return ExitCode::from(Exit::NoExercise.code());
            }
            let ids: Vec<&str> = course.activities.iter().map(|a| a.id.as_str()).collect();
            eprintln!("error: unknown activity '{unknown}'; the activities are: {}", ids.join(", "));
            return ExitCode::from(Exit::Usage.code());
        }
        // Help and version print and exit 0; usage errors exit 2.
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::CouldNotRun.code());
        }
    };
    runtime.block_on(dispatch(cli))
}

/// How a signal ends the command: what to say, and the exit code shells report for it.
#[derive(Clone, Copy)]
enum Interruption {
    Int,
    Term,
    Hup,
}

impl Interruption {
    fn code(self) -> u8 {
        match self {
            Interruption::Int => 130,
            Interruption::Term => 143,
            Interruption::Hup => 129,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Interruption::Int => "interrupted (Ctrl-C)",
            Interruption::Term => "terminated (SIGTERM)",
            Interruption::Hup => "hung up (SIGHUP)",
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, registered before anything starts, so none falls through to the
/// default action (exit at once, servers left running).
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> std::io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Interruption {
        tokio::select! {
            _ = self.int.recv() => Interruption::Int,
            _ = self.term.recv() => Interruption::Term,
            _ = self.hup.recv() => Interruption::Hup,
        }
    }
}

fn report_error(e: &LabError) {
    eprintln!("error: {e}");
}

async fn dispatch(cli: Cli) -> ExitCode {
    let mut signals = match Signals::register() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("error: cannot listen for signals: {e}");
            return ExitCode::from(Exit::CouldNotRun.code());
        }
    };
    match command(cli, &mut signals).await {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(Outcome::Failed(e)) => {
            report_error(&e);
            ExitCode::from(e.exit().code())
        }
        Err(Outcome::Interrupted(i)) => ExitCode::from(i.code()),
    }
}

/// How a command ended other than normally.
enum Outcome {
    Failed(LabError),
    Interrupted(Interruption),
}

impl From<LabError> for Outcome {
    fn from(e: LabError) -> Outcome {
        Outcome::Failed(e)
    }
}

fn failed(e: impl Into<LabError>) -> Outcome {
    Outcome::Failed(e.into())
}

/// Runs `work` under the signal guard, as one lab step.
async fn step<T>(
    signals: &mut Signals,
    ctx: Option<&Ctx>,
    winds_down: bool,
    work: impl Future<Output = Result<T, LabError>>,
) -> Result<T, Outcome> {
    match guarded(signals, ctx, winds_down, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Outcome::Failed(e)),
        Err(interruption) => Err(Outcome::Interrupted(interruption)),
    }
}

/// Runs `work` until it ends or a signal abandons it. A lab that winds down gets the first
/// Ctrl-C as a request to finish its step and report; any other signal, or a second Ctrl-C,
/// abandons it: the work is dropped, then every server, directory and container this process
/// made is removed, and the command says what it removed.
async fn guarded<T>(
    signals: &mut Signals,
    ctx: Option<&Ctx>,
    winds_down: bool,
    work: impl Future<Output = T>,
) -> Result<T, Interruption> {
    // Boxed, so dropping it below really drops the lab (its servers' child processes included)
    // before the sweep; dropping a `Pin<&mut _>` would drop nothing.
    let mut work = Box::pin(work);
    let mut asked_to_stop = false;
    let interruption = loop {
        tokio::select! {
            result = &mut work => return Ok(result),
            interruption = signals.next() => match (interruption, ctx) {
                (Interruption::Int, Some(ctx)) if winds_down && !asked_to_stop => {
                    asked_to_stop = true;
                    ctx.stop_flag().store(true, std::sync::atomic::Ordering::SeqCst);
                    eprintln!("\ninterrupted: finishing the current step, then reporting what was measured (Ctrl-C again to abandon)");
                }
                (interruption, _) => break interruption,
            },
        }
    };
    drop(work);
    eprintln!("{}: removing what this run started...", interruption.name());
    for line in pg::reap_all().await {
        eprintln!("  {line}");
    }
    eprintln!("{}: nothing of this run is left running", interruption.name());
    Err(interruption)
}

fn settings() -> Result<Settings, Outcome> {
    Settings::load().map_err(failed)
}

fn context(backend: Option<Backend>) -> Result<Ctx, Outcome> {
    let settings = settings()?;
    let provider = ProviderConfig::from_env(backend).map_err(failed)?;
    Ok(Ctx::new(settings, provider))
}

/// Before a lab starts servers: remove what a killed labs process left (its owner is gone, so
/// nothing in use is touched), saying what. A failure here never stops the lab.
async fn sweep_leftovers() {
    match pg::clean_leftovers().await {
        Ok(removed) => {
            for line in removed {
                eprintln!("cleaned up after a labs process that was killed: {line}");
            }
        }
        Err(e) => {
            eprintln!("warning: could not look for leftovers of killed labs processes ({e}); `labs clean` retries")
        }
    }
}

async fn command(cli: Cli, signals: &mut Signals) -> Result<Exit, Outcome> {
    match cli.command {
        Command::List { json } => list(json),
        Command::Run(run) => {
            let ctx = context(cli.pg)?;
            ready(&ctx, run.lab.id())?;
            sweep_leftovers().await;
            let rendered = step(signals, Some(&ctx), run.lab.winds_down(), run.lab.run(&run.matches, &ctx)).await?;
            print(&rendered, run.json)
        }
        Command::Check { lab, file, solution, json } => {
            let ctx = context(cli.pg)?;
            let Some(found) = lab::find(&lab) else {
                if ctx.settings.course.activity(&lab).is_some() {
                    eprintln!("activity '{lab}' is a draft: its lab and exercise are not in this build yet");
                    return Ok(Exit::NoExercise);
                }
                return Err(unknown_activity(&ctx, &lab));
            };
            ready(&ctx, &lab)?;
            let Some(exercise) = found.exercise() else {
                eprintln!("activity '{lab}' has no exercise (`labs list` shows which do)");
                return Ok(Exit::NoExercise);
            };
            let file = exercise_file(&ctx, &exercise, file, solution)?;
            sweep_leftovers().await;
            eprintln!("checking {}", file.shown);
            let rendered = step(signals, Some(&ctx), false, found.check(&file, &ctx)).await?;
            print(&rendered, json)
        }
        Command::Doctor { json } => doctor(cli.pg, json, signals).await,
        Command::Clean => {
            let removed = step(signals, None, false, async { Ok(pg::clean_leftovers().await?) }).await?;
            if removed.is_empty() {
                println!("nothing to clean: no leftovers of a killed labs process");
            }
            for line in removed {
                println!("{line}");
            }
            Ok(Exit::Done)
        }
        Command::Exercises(Exercises::Init { dir, force }) => exercises_init(dir, force),
        Command::Prepare => {
            let config = ProviderConfig::from_env(cli.pg).map_err(failed)?;
            step(signals, None, false, prepare(config)).await
        }
        Command::Sleuth(Sleuth::Audit { files, json }) => audit(&files, json),
        Command::Sleuth(Sleuth::Generate { seed, out, difficulty, payments, force }) => {
            generate(seed, &out, difficulty, payments.map(|p| p as usize), force)
        }
        Command::Schema(Schema::Verify { file, json }) => {
            let ctx = context(cli.pg)?;
            let sql = std::fs::read_to_string(&file).map_err(|e| failed(LabError::file(&file, e)))?;
            if sql.trim().is_empty() {
                return Err(failed(LabError::Usage(format!(
                    "{} is empty: start from fixtures/03-schema-sketch/my-schema.sql",
                    file.display()
                ))));
            }
            let name = file.display().to_string();
            let work = ctx.with_server(&[], async |server| Ok(store::conformance::verify(server, &sql, &name).await?));
            let report = step(signals, Some(&ctx), false, work).await?;
            emit(json, &report, &report.to_string())?;
            Ok(if report.passed { Exit::Done } else { Exit::CheckFailed })
        }
        Command::Bench(Bench::Store { runs, scale, only, json }) => {
            let ctx = context(cli.pg)?;
            let options = store::bench::BenchOptions { runs: runs as usize, scale, only };
            let work = ctx.with_server(&[], async |server| {
                Ok(store::bench::run(server, options, |step| eprintln!("{step}")).await?)
            });
            let report = step(signals, Some(&ctx), false, work).await?;
            emit(json, &report, &report.to_string())?;
            Ok(Exit::Done)
        }
    }
}

fn unknown_activity(ctx: &Ctx, id: &str) -> Outcome {
    let ids: Vec<&str> = ctx.settings.course.activities.iter().map(|a| a.id.as_str()).collect();
    failed(LabError::Usage(format!("unknown activity '{id}'; the activities are: {}", ids.join(", "))))
}

/// A registered lab whose activity is ready in this kit's course.toml (and not a draft).
fn ready(ctx: &Ctx, id: &str) -> Result<(), Outcome> {
    match ctx.settings.course.activity(id) {
        None => Err(failed(LabError::Usage(format!(
            "activity '{id}' has a lab in this build but is not in {}'s course.toml",
            ctx.settings.kit.root().map_or("the built-in".into(), |r| r.display().to_string())
        )))),
        Some(a) if a.status == Status::Draft => {
            Err(failed(LabError::Usage(format!("activity '{id}' is a draft in course.toml: its lab is not ready"))))
        }
        Some(_) => Ok(()),
    }
}

/// Finds the exercise file to check: `--file`, the reference solution, or the kit's copy.
fn exercise_file(
    ctx: &Ctx,
    exercise: &lab::Exercise,
    file: Option<PathBuf>,
    solution: bool,
) -> Result<ExerciseFile, Outcome> {
    let kit = &ctx.settings.kit;
    let (relative, what) =
        if solution { (exercise.solution_path(), "the reference solution") } else { (exercise.path(), "the exercise") };
    let (path, shown) = match file {
        Some(path) => {
            let shown = path.display().to_string();
            (path, shown)
        }
        None => match kit.root().map(|r| r.join(&relative)) {
            Some(path) if path.is_file() => (path, relative.clone()),
            _ if solution => {
                return Err(failed(LabError::Usage(format!(
                "{what} ({relative}) is not in this kit: the attendee bundle leaves solutions out; a checkout has them"
            ))))
            }
            _ => {
                return Err(failed(LabError::Usage(format!(
                    "{relative} is not here{}: `labs exercises init` writes a fresh copy, or pass --file PATH",
                    kit.root().map_or(String::new(), |r| format!(" (kit directory {})", r.display()))
                ))))
            }
        },
    };
    ExerciseFile::read(path, shown).map_err(failed)
}

/// Prints a report: JSON with `--json`, text otherwise. Returns its exit code.
fn print(rendered: &Rendered, json: bool) -> Result<Exit, Outcome> {
    if json {
        let text = serde_json::to_string_pretty(&rendered.json).map_err(|e| failed(LabError::Script(e.to_string())))?;
        println!("{text}");
    } else {
        print!("{}", rendered.text);
    }
    Ok(rendered.exit)
}

fn emit(json: bool, report: &impl serde::Serialize, text: &str) -> Result<(), Outcome> {
    if json {
        let value = serde_json::to_string_pretty(report).map_err(|e| failed(LabError::Script(e.to_string())))?;
        println!("{value}");
    } else {
        print!("{text}");
    }
    Ok(())
}

/// One activity as `labs list` shows it, for people and machines alike.
#[derive(serde::Serialize)]
struct Listed {
    number: u32,
    id: String,
    title: String,
    /// Minutes in this cohort's variant.
    minutes: u32,
    status: &'static str,
    needs: Vec<pg::Capability>,
    lab: String,
    /// The attendee's exercise file, if the activity has one.
    exercise: Option<String>,
    /// Whether this cohort's session runs it (its variant and choice of activities, cohort.toml).
    in_session: bool,
}

#[derive(serde::Serialize)]
struct Listing {
    course: String,
    cohort: String,
    date: String,
    variant: String,
    session_minutes: u32,
    activities: Vec<Listed>,
}

fn list(json: bool) -> Result<Exit, Outcome> {
    let settings = settings()?;
    let (course, cohort) = (&settings.course, &settings.cohort);
    // Every activity's minutes in this variant, whether or not the cohort's core holds it.
    let sheet = course.slots(&cohort.variant, &[], &[]);
    let every = course.activities.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
    let all = course.slots(labs::course::CORE, &every, &[]);
    let minutes_of = |id: &str| {
        sheet
            .iter()
            .chain(&all)
            .find(|s| matches!(s.kind, labs::course::SlotKind::Activity(a) if a.id == id))
            .map_or(0, |s| s.minutes)
    };
    let activities: Vec<Listed> = course
        .activities
        .iter()
        .map(|a| Listed {
            number: a.number,
            id: a.id.clone(),
            title: a.title.clone(),
            minutes: minutes_of(&a.id),
            in_session: course.in_session(cohort, &a.id),
            status: match a.status {
                _ if !cohort.runs(&a.id) => "skipped",
                Status::Ready => "ready",
                Status::Draft => "draft",
            },
            needs: a.needs.clone(),
            lab: a.lab.clone(),
            exercise: lab::find(&a.id).and_then(|l| l.exercise()).map(|e| e.path()),
        })
        .collect();
    let listing = Listing {
        course: course.course.title.clone(),
        cohort: cohort.title.clone(),
        date: cohort.date.clone(),
        variant: cohort.variant.clone(),
        session_minutes: course.session_minutes(&cohort.variant),
        activities,
    };
    if json {
        emit(true, &listing, "")?;
        return Ok(Exit::Done);
    }
    println!(
        "{} ({} minutes, {} variant)\ncohort: {}, {} (cohort.toml)\n",
        listing.course, listing.session_minutes, listing.variant, listing.cohort, listing.date
    );
    let needs: Vec<String> = listing
        .activities
        .iter()
        .map(|a| {
            if a.needs.is_empty() {
                "a server".to_string()
            } else {
                a.needs.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
            }
        })
        .collect();
    let width = needs.iter().map(String::len).max().unwrap_or(5).max(5);
    println!("{:>2}  {:<16} {:>4}  {:<7} {:<5} {:<width$}  lab", "#", "id", "min", "status", "today", "needs");
    for (a, needs) in listing.activities.iter().zip(&needs) {
        let today = if a.in_session { "yes" } else { "-" };
        println!(
            "{:>2}  {:<16} {:>4}  {:<7} {:<5} {:<width$}  {}",
            a.number, a.id, a.minutes, a.status, today, needs, a.lab
        );
        if let Some(exercise) = &a.exercise {
            println!("{:>2}  {:<16} {:>4}  {:<7} {:<5} {:<width$}  exercise: {exercise}", "", "", "", "", "", "");
        }
    }
    println!(
        "\n\"today\": in this cohort's {} session (cohort.toml: variant, core, skip).",
        if listing.variant == labs::course::CORE { "90-minute" } else { listing.variant.as_str() }
    );
    println!("\nRun one with `labs run <id>`; check your exercise with `labs check <id>`.");
    Ok(Exit::Done)
}

/// Gets the container backend's image while online, or says why the local backend will do.
async fn prepare(config: ProviderConfig) -> Result<Exit, LabError> {
    let megabytes = |bytes: u64| format!("{:.0} MB", bytes as f64 / 1e6);
    let engine = match DockerEngine::detect().await {
        Ok(engine) => engine,
        Err(e) => {
            println!("no Docker engine: {e}");
            return match pg::find_local_binaries_async().await {
                Ok(dir) => {
                    println!("the labs will use the local PostgreSQL binaries in {} (--pg local): nothing to download", dir.display());
                    Ok(Exit::Done)
                }
                Err(local) => Err(LabError::Usage(format!(
                    "no way to get a PostgreSQL server here: start Docker (then run `labs prepare` again) or install                      PostgreSQL's server binaries ({local})"
                ))),
            };
        }
    };
    if let Some(info) = pg::image::image_info(&engine, &config.image).await? {
        println!("{} is present ({}): the labs need no download", info.image, megabytes(info.size_bytes));
        return Ok(Exit::Done);
    }
    println!("pulling {} (this needs the network once; the labs then run offline)...", config.image);
    let started = Instant::now();
    let info = pg::image::pull(&engine, &config.image, |line| eprintln!("  {line}")).await.map_err(|e| {
        LabError::Usage(format!(
            "{e}\nWithout access to that registry: set LABS_PG_IMAGE to an image you have (`docker images`), or use              --pg local with PostgreSQL's server binaries"
        ))
    })?;
    println!(
        "{} pulled in {:.0} s ({}): the labs need no download",
        info.image,
        started.elapsed().as_secs_f64(),
        megabytes(info.size_bytes)
    );
    Ok(Exit::Done)
}

/// Writes fresh exercise files for every activity that has one.
fn exercises_init(dir: Option<PathBuf>, force: bool) -> Result<Exit, Outcome> {
    let settings = settings()?;
    let dir = match dir {
        Some(dir) => dir,
        None => match settings.kit.root() {
            Some(root) => root.to_path_buf(),
            None => std::env::current_dir().map_err(|e| failed(LabError::file(".", e)))?,
        },
    };
    let mut written = 0;
    for lab in LABS.iter() {
        let Some(exercise) = lab.exercise() else { continue };
        if !settings.cohort.runs(lab.id()) {
            continue;
        }
        let path = dir.join(exercise.path());
        if path.exists() && !force {
            println!("kept    {} (exists; --force overwrites it)", path.display());
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| failed(LabError::file(parent, e)))?;
        }
        std::fs::write(&path, exercise.template).map_err(|e| failed(LabError::file(&path, e)))?;
        println!("written {}", path.display());
        written += 1;
    }
    println!("{written} exercise file(s) written; check one with `labs check <activity>`.");
    Ok(Exit::Done)
}

fn audit(files: &[PathBuf], json: bool) -> Result<Exit, Outcome> {
    let show_progress = std::io::stderr().is_terminal();
    for file in files {
        let started = Instant::now();
        let audit = labs::log_sleuth::audit::audit_file(file, |lines| {
            if show_progress {
                eprint!("\r{}: {lines} lines read...", file.display());
            }
        })
        .map_err(|e| failed(LabError::File { path: file.clone(), message: strip_file(&e.to_string(), file) }))?;
        if show_progress && audit.lines >= 100_000 {
            eprintln!();
        }
        let name = file.display().to_string();
        if json {
            for f in &audit.findings {
                let line = serde_json::json!({ "file": name, "finding": f });
                println!("{line}");
            }
            continue;
        }
        print!("{}", audit.to_text(&name));
        eprintln!("{name}: audited in {:.2} s", started.elapsed().as_secs_f64());
    }
    Ok(Exit::Done)
}

/// An audit error already starts with the file's name; the File error adds it again.
fn strip_file(message: &str, file: &Path) -> String {
    message
        .strip_prefix(&file.display().to_string())
        .map(|m| m.trim_start_matches(':').trim_start().to_string())
        .unwrap_or_else(|| message.to_string())
}

fn generate(
    seed: u64,
    out: &Path,
    difficulty: Difficulty,
    payments: Option<usize>,
    force: bool,
) -> Result<Exit, Outcome> {
    let incident = labs::log_sleuth::generate::generate_sized(seed, difficulty, payments);
    std::fs::create_dir_all(out).map_err(|e| failed(LabError::file(out, e)))?;
    let log = out.join("incident.jsonl");
    let key = out.join("answer-key.json");
    for path in [&log, &key] {
        if path.exists() && !force {
            return Err(failed(LabError::Usage(format!(
                "{} already exists; pass --force to overwrite it",
                path.display()
            ))));
        }
    }
    std::fs::write(&log, &incident.jsonl).map_err(|e| failed(LabError::file(&log, e)))?;
    let key_text =
        serde_json::to_string_pretty(&incident.key).map_err(|e| failed(LabError::Script(e.to_string())))? + "\n";
    std::fs::write(&key, key_text).map_err(|e| failed(LabError::file(&key, e)))?;
    println!(
        "wrote {} ({} lines) and {} ({} findings to discover); keep the key away from attendees",
        log.display(),
        incident.key.lines,
        key.display(),
        incident.key.findings.len()
    );
    Ok(Exit::Done)
}

#[derive(serde::Serialize)]
struct DoctorItem {
    item: &'static str,
    status: &'static str,
    detail: String,
}

/// What this machine can do for the labs, and what to fix first.
async fn doctor(backend: Option<Backend>, json: bool, signals: &mut Signals) -> Result<Exit, Outcome> {
    let mut items = Vec::new();
    let mut fixes = Vec::new();
    let mut add = |item, status, detail: String| items.push(DoctorItem { item, status, detail });

    match Settings::load() {
        Ok(settings) => {
            let from = settings
                .kit
                .root()
                .map_or("built into labs (no kit directory found)".to_string(), |r| r.display().to_string());
            add(
                "kit",
                "ok",
                format!("course and cohort from {from}: {}, {}", settings.cohort.title, settings.cohort.date),
            );
        }
        Err(e) => {
            add("kit", "FAIL", e.to_string());
            fixes.push("fix the file named above (course.toml or cohort.toml), then run `labs doctor` again".into());
        }
    }
    let config = ProviderConfig::from_env(backend).map_err(failed)?;
    match DockerEngine::detect().await {
        Ok(engine) => {
            add(
                "docker engine",
                "ok",
                format!("{} at {}", engine.version().await.unwrap_or_default(), engine.socket().display()),
            );
            if engine.has_image(&config.image).await {
                add("postgres image", "ok", format!("{} is present", config.image));
            } else {
                add("postgres image", "warn", format!("{} is not present", config.image));
                fixes.push(format!(
                    "run `labs prepare` (or `cargo xtask prepare`) while online to get {}, or set LABS_PG_IMAGE",
                    config.image
                ));
            }
        }
        Err(e) => add("docker engine", "warn", e.to_string()),
    }
    match pg::find_local_binaries_async().await {
        Ok(dir) => add("local postgres", "ok", dir.display().to_string()),
        Err(e) => add("local postgres", "warn", e.to_string()),
    }
    if let Some(url) = &config.database_url {
        add("DATABASE_URL", "ok", format!("set ({} characters); used with --pg url", url.len()));
    }
    match pg::find_leftovers().await {
        Ok(leftovers) if leftovers.is_empty() => add("leftovers", "ok", "none from a killed labs process".into()),
        Ok(leftovers) => {
            add("leftovers", "warn", leftovers.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("; "));
            fixes.push("run `labs clean` to remove what a killed labs process left".into());
        }
        Err(e) => add("leftovers", "warn", e.to_string()),
    }
    let resolved = pg::resolve_backend(&config).await;
    let started = Instant::now();
    let trial = async {
        let server = Server::start(&config, &[]).await?;
        let client = server.connect().await?;
        let version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
        let fsync: String = client.query_one("SHOW fsync", &[]).await?.get(0);
        let described = server.describe();
        drop(client);
        server.shutdown().await?;
        Ok::<_, LabError>((described, version, fsync))
    };
    let server_ok = match step(signals, None, false, trial).await {
        Ok((described, version, fsync)) => {
            let backend = resolved.map(|b| b.to_string()).unwrap_or_default();
            add(
                "start a server",
                "ok",
                format!(
                    "labs use the {backend} backend: PostgreSQL {version} started in {:.1} s: {described}",
                    started.elapsed().as_secs_f64()
                ),
            );
            if fsync != "on" {
                add("fsync", "FAIL", format!("fsync is {fsync}: durability labs would lie"));
                fixes.push("use an image or server with fsync on (the default)".into());
            }
            fsync == "on"
        }
        Err(Outcome::Interrupted(i)) => return Err(Outcome::Interrupted(i)),
        Err(Outcome::Failed(e)) => {
            add("start a server", "FAIL", e.to_string());
            fixes.push("fix the first FAIL or warn above, then run `labs doctor` again".into());
            false
        }
    };
    if json {
        let kit = Settings::load().ok().and_then(|s| s.kit.root().map(|r| r.display().to_string()));
        emit(true, &serde_json::json!({ "ready": server_ok, "kit": kit, "items": items, "fixes": fixes }), "")?;
    } else {
        for i in &items {
            println!("{:<5} {:<16} {}", i.status, i.item, i.detail);
        }
        if server_ok {
            println!("\nready: the labs can run on this machine.");
            if !fixes.is_empty() {
                println!("Worth fixing before the day:");
            }
        } else {
            println!("\nnot ready. To fix:");
        }
        for f in &fixes {
            println!("  - {f}");
        }
    }
    Ok(if server_ok { Exit::Done } else { Exit::CouldNotRun })
}
