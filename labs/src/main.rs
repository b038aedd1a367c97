//! The `labs` command: the attendee's and facilitator's entry point to every lab.
//! Errors end here as one readable message (anyhow); the library's errors are typed.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use labs::course::{Course, Status};
use labs::log_sleuth::{self, generate::Difficulty, Reader};
use labs::pg::{self, Backend, DockerEngine, ProviderConfig, Server};
use labs::schema_sketch::{self, check::Handler};
use labs::store;

#[derive(Parser)]
#[command(
    name = "labs",
    version,
    about = "Labs for 'Designing High-Throughput Event Sourcing Systems with PostgreSQL'"
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
    /// List the activities, their minutes and what each lab needs.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Run an activity's lab against a fresh PostgreSQL server.
    Run {
        /// Activity id, e.g. log-sleuth (see `labs list`).
        lab: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// List what the lab can run (wal-race: strategies; mythbusting: myths; outage:
        /// scenarios) and exit, without a server.
        #[arg(long)]
        list: bool,
        #[command(flatten)]
        race: RaceArgs,
        #[command(flatten)]
        myths: MythArgs,
        #[command(flatten)]
        outage: OutageArgs,
    },
    /// Check your exercise for an activity: fails until it is solved.
    Check {
        lab: String,
        /// Check the reference solution instead of your exercise.
        #[arg(long)]
        solution: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check this machine: toolchain, Docker or local PostgreSQL, and that a server starts.
    Doctor {
        #[arg(long)]
        json: bool,
    },
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

/// Options of `labs run wal-race` (activity 4).
#[derive(clap::Args)]
struct RaceArgs {
    /// wal-race: the short race, under a minute (1, 4 and 16 writers, 0.7 s a point).
    #[arg(long, help_heading = "wal-race")]
    quick: bool,
    /// wal-race: only these strategies, comma-separated (see --list).
    #[arg(long, value_delimiter = ',', help_heading = "wal-race")]
    strategies: Vec<String>,
    /// wal-race: writer counts, comma-separated (default 1,2,4,8,16).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=64), help_heading = "wal-race")]
    writers: Vec<u16>,
    /// wal-race: seconds per point (default 2.5).
    #[arg(long, allow_negative_numbers = true, help_heading = "wal-race")]
    seconds: Option<f64>,
    /// wal-race: where to write results.json, results.csv, race.txt and the SVG charts.
    #[arg(long, default_value = "target/wal-race", help_heading = "wal-race")]
    out: PathBuf,
    /// wal-race: no server; show the saved result set (fixtures/04-wal-race/saved) instead.
    #[arg(long, help_heading = "wal-race")]
    saved: bool,
}

impl RaceArgs {
    fn given(&self) -> bool {
        self.quick || !self.strategies.is_empty() || !self.writers.is_empty() || self.seconds.is_some() || self.saved
    }
}

/// Options of `labs run mythbusting` (activity 2).
#[derive(clap::Args)]
struct MythArgs {
    /// mythbusting: run this myth's demonstration (repeatable; default: the poll's three).
    #[arg(long = "myth", value_name = "ID", help_heading = "mythbusting")]
    ids: Vec<String>,
    /// mythbusting: print the poll's questions as CSV for a poll tool, and exit (no server).
    #[arg(long, help_heading = "mythbusting")]
    poll_csv: bool,
}

/// Options of `labs run outage` (activity 5).
#[derive(clap::Args)]
struct OutageArgs {
    /// outage: which failure to stage (default frozen-wal-writer; see --list).
    #[arg(long, value_name = "ID", help_heading = "outage")]
    scenario: Option<String>,
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
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Only these shapes (and their ceilings), comma-separated: copy, bulk, insert-16,
        /// append-1, append-16, batch100-1, batch100-4, read-naive, read-watermark.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        #[arg(long)]
        json: bool,
    },
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
        #[arg(long)]
        payments: Option<usize>,
        /// Overwrite files that already exist.
        #[arg(long)]
        force: bool,
    },
}

/// Exit codes: 0 done, 1 failed (an error, or a check that did not pass), 2 bad usage (clap),
/// 3 the activity has no lab or exercise yet, 130 interrupted.
const EXIT_NOT_AVAILABLE: u8 = 3;
const EXIT_INTERRUPTED: u8 = 130;

#[tokio::main]
async fn main() -> ExitCode {
    // Die quietly when stdout is closed early (`labs run --json | head`), like other Unix tools.
    // SAFETY: resetting a signal disposition at startup, before any thread writes to stdout.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let course = Course::load();
    match cli.command {
        Command::List { json } => list(&course, json),
        Command::Run { lab, json, list, race, myths, outage } => {
            if race.given() && lab != "wal-race" {
                bail!("--quick, --strategies, --writers, --seconds and --saved are options of `labs run wal-race`, not of {lab}");
            }
            if (!myths.ids.is_empty() || myths.poll_csv) && lab != "mythbusting" {
                bail!("--myth and --poll-csv are options of `labs run mythbusting`, not of {lab}");
            }
            if outage.scenario.is_some() && lab != "outage" {
                bail!("--scenario is an option of `labs run outage`, not of {lab}");
            }
            match lab.as_str() {
                "wal-race" => run_wal_race(&course, race, list, json, cli.pg).await,
                "mythbusting" => run_mythbusting(&course, myths, list, json, cli.pg).await,
                "outage" => run_outage(&course, outage, list, json, cli.pg).await,
                _ if list => bail!("--list is an option of wal-race, mythbusting and outage, not of {lab}"),
                _ => run(&course, &lab, json, cli.pg).await,
            }
        }
        Command::Check { lab, solution, json } => check(&course, &lab, solution, json, cli.pg).await,
        Command::Doctor { json } => doctor(cli.pg, json).await,
        Command::Sleuth(Sleuth::Audit { files, json }) => audit(&files, json),
        Command::Sleuth(Sleuth::Generate { seed, out, difficulty, payments, force }) => {
            generate(seed, &out, difficulty, payments, force)
        }
        Command::Schema(Schema::Verify { file, json }) => verify_schema(&file, json, cli.pg).await,
        Command::Bench(Bench::Store { runs, scale, only, json }) => {
            bench_store(runs as usize, scale, &only, json, cli.pg).await
        }
    }
}

fn list(course: &Course, json: bool) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(&course.activities)?);
        return Ok(ExitCode::SUCCESS);
    }
    let cohort = labs::course::Cohort::load(course).map_err(anyhow::Error::msg)?;
    let minutes_of = |id: &str| {
        course
            .run_sheet_of(&cohort.variant)
            .into_iter()
            .find(|(_, _, s)| s.activity.as_deref() == Some(id))
            .map_or(0, |(_, m, _)| m)
    };
    println!(
        "{} ({} minutes, {} variant)\ncohort: {}, {} (cohort.toml)\n",
        course.course.title,
        course.session_minutes(&cohort.variant),
        cohort.variant,
        cohort.title,
        cohort.date
    );
    let needs: Vec<String> = course
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
    println!("{:>2}  {:<16} {:>4}  {:<7} {:<width$}  lab", "#", "id", "min", "status", "needs");
    for (a, needs) in course.activities.iter().zip(&needs) {
        let status = match a.status {
            _ if !cohort.runs(&a.id) => "skipped",
            Status::Ready => "ready",
            Status::Draft => "draft",
        };
        println!("{:>2}  {:<16} {:>4}  {:<7} {:<width$}  {}", a.number, a.id, minutes_of(&a.id), status, needs, a.lab);
    }
    println!("\nRun one with `labs run <id>`; check your exercise with `labs check <id>`.");
    Ok(ExitCode::SUCCESS)
}

/// Finds a ready activity, or explains why it cannot run.
fn ready_activity<'a>(course: &'a Course, id: &str) -> Result<Option<&'a labs::course::Activity>> {
    let Some(activity) = course.activity(id) else {
        let ids: Vec<&str> = course.activities.iter().map(|a| a.id.as_str()).collect();
        bail!("unknown activity '{id}'; the activities are: {}", ids.join(", "));
    };
    if activity.status == Status::Draft {
        eprintln!("activity '{id}' is a draft: its lab is not written yet (see `labs list`)");
        return Ok(None);
    }
    Ok(Some(activity))
}

/// Starts a server for a lab, printing progress, with the capabilities the activity needs.
async fn start_server(backend: Option<Backend>, needs: &[pg::Capability]) -> Result<Server> {
    let config = ProviderConfig::from_env(backend)?;
    let started = Instant::now();
    eprintln!("starting a fresh PostgreSQL ({} backend)...", config.backend);
    let server = Server::start(&config, needs).await?;
    eprintln!("server ready in {:.1} s: {}", started.elapsed().as_secs_f64(), server.describe());
    Ok(server)
}

/// Runs `work` on a fresh server and always removes the server afterwards, also on Ctrl-C.
/// Ctrl-C during the server's start lets the start finish (a few seconds at most) and then
/// removes the server: killing initdb, pg_ctl or a container half-way would leave pieces behind.
async fn with_server<T>(
    backend: Option<Backend>,
    needs: &[pg::Capability],
    work: impl for<'s> AsyncFnOnce(&'s mut Server) -> Result<T>,
) -> Result<Option<T>> {
    with_server_stoppable(backend, needs, None, work).await
}

/// As [`with_server`]; with `stop`, the first Ctrl-C during the work sets it and lets the work
/// wind down and report (a second Ctrl-C abandons it).
async fn with_server_stoppable<T>(
    backend: Option<Backend>,
    needs: &[pg::Capability],
    stop: Option<Arc<AtomicBool>>,
    work: impl for<'s> AsyncFnOnce(&'s mut Server) -> Result<T>,
) -> Result<Option<T>> {
    // Registered before anything starts, so no Ctrl-C falls through to the default (exit at once).
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let start = start_server(backend, needs);
    tokio::pin!(start);
    let mut interrupted = false;
    let mut server = loop {
        tokio::select! {
            server = &mut start => break server?,
            _ = sigint.recv(), if !interrupted => {
                interrupted = true;
                eprintln!("interrupted: removing the server as soon as it has started...");
            }
        }
    };
    let outcome = if interrupted {
        None
    } else {
        let work = work(&mut server);
        tokio::pin!(work);
        let mut asked_to_stop = false;
        loop {
            tokio::select! {
                result = &mut work => break Some(result),
                _ = sigint.recv() => match &stop {
                    Some(flag) if !asked_to_stop => {
                        asked_to_stop = true;
                        flag.store(true, Ordering::SeqCst);
                        eprintln!("\ninterrupted: finishing the current step, then reporting what was measured (Ctrl-C again to abandon)");
                    }
                    _ => break None,
                },
            }
        }
    };
    if let Err(e) = server.shutdown().await {
        eprintln!("warning: the server was not removed cleanly: {e}");
    }
    match outcome {
        Some(result) => result.map(Some),
        None => {
            eprintln!("interrupted: the server and its files are removed");
            Ok(None)
        }
    }
}

async fn run(course: &Course, lab: &str, json: bool, backend: Option<Backend>) -> Result<ExitCode> {
    let Some(activity) = ready_activity(course, lab)? else { return Ok(ExitCode::from(EXIT_NOT_AVAILABLE)) };
    let report = match activity.id.as_str() {
        "log-sleuth" => {
            with_server(backend, &activity.needs, async |server| {
                Ok(log_sleuth::scenario::run(server, &[Reader::Naive, Reader::Watermark]).await?)
            })
            .await?
        }
        "reflection-wall" => {
            // No server: the menu is data.
            if json {
                let value =
                    serde_json::json!({ "prompt": labs::reflection_wall::PROMPT, "menu": labs::reflection_wall::MENU });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", labs::reflection_wall::menu_text());
            }
            return Ok(ExitCode::SUCCESS);
        }
        "schema-sketch" => {
            let report =
                with_server(backend, &activity.needs, async |server| Ok(schema_sketch::scenario::run(server).await?))
                    .await?;
            let Some(report) = report else { return Ok(ExitCode::from(EXIT_INTERRUPTED)) };
            if json {
                // What a machine reads: the balances and each stream's event count.
                let events_per_stream: std::collections::BTreeMap<&String, usize> =
                    report.streams.iter().map(|(s, v)| (s, v.events)).collect();
                let value = serde_json::json!({
                    "lab": report.lab,
                    "balances_cents": report.balances,
                    "events_per_stream": events_per_stream,
                    "replay_matches_streams": report.replay_matches,
                    "steps": report.steps,
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", report.to_text());
            }
            return Ok(ExitCode::SUCCESS);
        }
        other => bail!("activity '{other}' is marked ready in course.toml but has no lab in this build"),
    };
    let Some(report) = report else { return Ok(ExitCode::from(EXIT_INTERRUPTED)) };
    print_report(json, &report, report.to_text())?;
    Ok(ExitCode::SUCCESS)
}

async fn check(course: &Course, lab: &str, solution: bool, json: bool, backend: Option<Backend>) -> Result<ExitCode> {
    let Some(activity) = ready_activity(course, lab)? else { return Ok(ExitCode::from(EXIT_NOT_AVAILABLE)) };
    let report = match activity.id.as_str() {
        "log-sleuth" => {
            let reader = if solution { Reader::Watermark } else { Reader::Exercise };
            with_server(backend, &activity.needs, async |server| Ok(log_sleuth::scenario::check(server, reader).await?))
                .await?
        }
        "schema-sketch" => {
            let handler = if solution { Handler::Solution } else { Handler::Exercise };
            let report = with_server(backend, &activity.needs, async |server| {
                Ok(schema_sketch::check::check(server, handler).await?)
            })
            .await?;
            let Some(report) = report else { return Ok(ExitCode::from(EXIT_INTERRUPTED)) };
            print_report(json, &report, report.to_text())?;
            return Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        other => {
            eprintln!("activity '{other}' has no exercise");
            return Ok(ExitCode::from(EXIT_NOT_AVAILABLE));
        }
    };
    let Some(report) = report else { return Ok(ExitCode::from(EXIT_INTERRUPTED)) };
    print_report(json, &report, report.to_text())?;
    Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn run_wal_race(
    course: &Course,
    args: RaceArgs,
    list: bool,
    json: bool,
    backend: Option<Backend>,
) -> Result<ExitCode> {
    use labs::wal_race::{self, race::Progress, strategy::Strategy};
    if list {
        print!("{}", wal_race::report::strategies_text());
        return Ok(ExitCode::SUCCESS);
    }
    if args.saved {
        let dir = wal_race::saved_dir();
        let mut report = wal_race::read_results(&dir).map_err(anyhow::Error::msg)?;
        // The walls are named again by this build's detector, from the saved measurements.
        report.strategies = wal_race::race::summarize(
            &report.strategies.iter().map(|s| s.strategy).collect::<Vec<_>>(),
            &report.points,
        );
        eprintln!("the saved result set in {} (see PROVENANCE.md there); no server was started", dir.display());
        let command = wal_race::saved_command(&dir).unwrap_or_else(|| "labs run wal-race".into());
        let written = wal_race::write_results(&report, &args.out, &command)
            .with_context(|| format!("writing into {}", args.out.display()))?;
        print_report(json, &report, report.to_text())?;
        eprintln!("written: {}", written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
        return Ok(ExitCode::SUCCESS);
    }
    let Some(activity) = ready_activity(course, "wal-race")? else { return Ok(ExitCode::from(EXIT_NOT_AVAILABLE)) };
    let mut options = if args.quick { wal_race::RaceOptions::quick() } else { wal_race::RaceOptions::full() };
    if !args.strategies.is_empty() {
        options.strategies = Vec::new();
        for id in &args.strategies {
            let Some(s) = Strategy::from_id(id) else {
                let ids: Vec<&str> = wal_race::strategy::ALL.iter().map(|s| s.id()).collect();
                bail!("unknown strategy '{id}'; the strategies are: {}", ids.join(", "));
            };
            if !options.strategies.contains(&s) {
                options.strategies.push(s);
            }
        }
    }
    if !args.writers.is_empty() {
        let mut writers: Vec<usize> = args.writers.iter().map(|w| *w as usize).collect();
        writers.sort_unstable();
        writers.dedup();
        options.writers = writers;
    }
    if let Some(seconds) = args.seconds {
        if !(seconds.is_finite() && seconds > 0.0 && seconds <= 600.0) {
            bail!("--seconds must be above 0 and at most 600, not {seconds}");
        }
        options.seconds = seconds;
    }
    let points = options.strategies.len() * options.writers.len();
    eprintln!(
        "racing {} strategies at {:?} writers, {:.1} s a point: about {:.0} s in all",
        options.strategies.len(),
        options.writers,
        options.seconds,
        points as f64 * (options.seconds + 0.5)
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut board = RaceBoard::new(&options.strategies, std::io::stderr().is_terminal());
    let report = with_server_stoppable(backend, &activity.needs, Some(stop.clone()), async |server| {
        Ok(wal_race::race::run(server, &options, &stop, |p: Progress| board.update(p)).await?)
    })
    .await?;
    let Some(report) = report else { return Ok(ExitCode::from(EXIT_INTERRUPTED)) };
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let written = wal_race::write_results(&report, &args.out, &format!("labs {command}"))
        .with_context(|| format!("writing the results into {}", args.out.display()))?;
    print_report(json, &report, report.to_text())?;
    eprintln!("written: {}", written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    Ok(if report.interrupted { ExitCode::from(EXIT_INTERRUPTED) } else { ExitCode::SUCCESS })
}

/// The live view of the race: one line per strategy with a bar on a log scale (100 to 1,000,000
/// events/s). On a terminal the board is redrawn in place; elsewhere each finished point is a line.
struct RaceBoard {
    lines: Vec<(labs::wal_race::strategy::Strategy, String)>,
    redraw: bool,
    drawn: bool,
}

impl RaceBoard {
    fn new(strategies: &[labs::wal_race::strategy::Strategy], redraw: bool) -> RaceBoard {
        RaceBoard {
            lines: strategies.iter().map(|s| (*s, format!("{:<17} waiting", s.id()))).collect(),
            redraw,
            drawn: false,
        }
    }

    fn line(strategy: labs::wal_race::strategy::Strategy, writers: usize, eps: f64, wal_mb: f64, done: &str) -> String {
        const WIDTH: usize = 30;
        let filled = (((eps.max(100.0).log10() - 2.0) / 4.0) * WIDTH as f64).round().clamp(0.0, WIDTH as f64) as usize;
        format!(
            "{:<17} {:>2}w {}{} {:>10} ev/s {:>7.1} MB/s WAL{}",
            strategy.id(),
            writers,
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            labs::wal_race::report::thousands(eps),
            wal_mb,
            done
        )
    }

    fn update(&mut self, progress: labs::wal_race::race::Progress) {
        use labs::wal_race::race::Progress;
        let (strategy, text, finished) = match progress {
            Progress::Started { strategy, writers } => {
                (strategy, Self::line(strategy, writers, 0.0, 0.0, " ..."), false)
            }
            Progress::Running { strategy, writers, events_per_second, wal_mb_per_second, .. } => {
                (strategy, Self::line(strategy, writers, events_per_second, wal_mb_per_second, ""), false)
            }
            Progress::Finished(p) => {
                let done = format!("  {:.0} B/event", p.wal_bytes_per_event);
                (p.strategy, Self::line(p.strategy, p.writers, p.events_per_second, p.wal_mb_per_second, &done), true)
            }
        };
        if let Some(entry) = self.lines.iter_mut().find(|(s, _)| *s == strategy) {
            entry.1 = text.clone();
        }
        if !self.redraw {
            if finished {
                eprintln!("{text}");
            }
            return;
        }
        let mut out = String::new();
        if self.drawn {
            out += &format!("\x1b[{}A", self.lines.len());
        }
        for (_, l) in &self.lines {
            out += &format!("\x1b[2K{l}\n");
        }
        self.drawn = true;
        eprint!("{out}");
    }
}

/// `labs run mythbusting`: each chosen myth's demonstration on a fresh server of its own.
async fn run_mythbusting(
    course: &Course,
    args: MythArgs,
    list: bool,
    json: bool,
    backend: Option<Backend>,
) -> Result<ExitCode> {
    use labs::mythbusting::Bank;
    let bank = Bank::load().map_err(anyhow::Error::msg)?;
    if list {
        if json {
            println!("{}", serde_json::to_string_pretty(&bank)?);
        } else {
            print!("{}", bank.list_text());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.poll_csv {
        print!("{}", bank.poll_csv());
        return Ok(ExitCode::SUCCESS);
    }
    let demos = bank.select(&args.ids).map_err(anyhow::Error::msg)?;
    if ready_activity(course, "mythbusting")?.is_none() {
        return Ok(ExitCode::from(EXIT_NOT_AVAILABLE));
    }
    // Refuse before starting anything when the backend cannot do what the demos need.
    let config = ProviderConfig::from_env(backend)?;
    let resolved = pg::resolve_backend(&config).await?;
    for capability in labs::mythbusting::needs(&demos) {
        if !pg::capabilities_of(resolved).contains(&capability) {
            return Err(pg::ProviderError::MissingCapability { backend: resolved, capability }.into());
        }
    }
    let mut reports = Vec::new();
    for (n, demo) in demos.iter().enumerate() {
        let myth = bank.get(demo.id()).expect("selected from the bank");
        eprintln!("[{}/{}] myth {}: \"{}\"", n + 1, demos.len(), myth.id, myth.statement);
        let report =
            with_server(backend, demo.needs(), async |server| demo.run(server, &myth.statement, &myth.verdict).await)
                .await?;
        let Some(report) = report else { return Ok(ExitCode::from(EXIT_INTERRUPTED)) };
        eprintln!("[{}/{}] done in {:.1} s", n + 1, demos.len(), report.seconds);
        if !json {
            println!("{}", report.to_text(myth));
        }
        reports.push(report);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "lab": "mythbusting", "myths": reports }))?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `labs run outage`: one scenario, as configured and safe, each on a fresh server.
async fn run_outage(
    course: &Course,
    args: OutageArgs,
    list: bool,
    json: bool,
    backend: Option<Backend>,
) -> Result<ExitCode> {
    use labs::outage::{self, Report, Scenario, Variant};
    if list {
        print!("{}", outage::scenarios_text());
        return Ok(ExitCode::SUCCESS);
    }
    let scenario = match &args.scenario {
        Some(id) => Scenario::parse(id).map_err(anyhow::Error::msg)?,
        None => {
            eprintln!("no --scenario given: running frozen-wal-writer (see `labs run outage --list`)");
            Scenario::FrozenWalWriter
        }
    };
    if ready_activity(course, "outage")?.is_none() {
        return Ok(ExitCode::from(EXIT_NOT_AVAILABLE));
    }
    // The two runs are independent (a fresh server each, counts decided by the script), so they
    // run side by side: most of a run is waiting on fsync, pg_basebackup and server starts.
    let one = async |variant: Variant| {
        eprintln!(
            "outage {}: {} run starts ({})",
            scenario.id(),
            if variant == Variant::Safe { "safe" } else { "as-configured" },
            scenario.setting(variant)
        );
        let run =
            with_server(backend, scenario.needs(), async |server| outage::burst::run(server, scenario, variant).await)
                .await?;
        if let Some(run) = &run {
            eprintln!(
                "outage {}: {} run done in {:.1} s",
                scenario.id(),
                if variant == Variant::Safe { "safe" } else { "as-configured" },
                run.seconds
            );
        }
        anyhow::Ok(run)
    };
    let (configured, safe) = tokio::join!(one(Variant::AsConfigured), one(Variant::Safe));
    let (Some(configured), Some(safe)) = (configured?, safe?) else { return Ok(ExitCode::from(EXIT_INTERRUPTED)) };
    let report = Report::new(scenario, vec![configured, safe]);
    print_report(json, &report, report.to_text())?;
    Ok(ExitCode::SUCCESS)
}

async fn verify_schema(file: &PathBuf, json: bool, backend: Option<Backend>) -> Result<ExitCode> {
    let sql = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    if sql.trim().is_empty() {
        bail!("{} is empty: start from fixtures/03-schema-sketch/my-schema.sql", file.display());
    }
    let name = file.display().to_string();
    let report =
        with_server(backend, &[], async |server| Ok(store::conformance::verify(server, &sql, &name).await?)).await?;
    let Some(report) = report else { return Ok(ExitCode::from(EXIT_INTERRUPTED)) };
    print_report(json, &report, report.to_text())?;
    Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn bench_store(
    runs: usize,
    scale: f64,
    only: &[String],
    json: bool,
    backend: Option<Backend>,
) -> Result<ExitCode> {
    if !(scale > 0.0 && scale <= 100.0) {
        bail!("--scale must be above 0 and at most 100, not {scale}");
    }
    let ids = store::bench::shape_ids();
    if let Some(unknown) = only.iter().find(|o| !ids.contains(&o.as_str())) {
        bail!("--only: no shape '{unknown}'; the shapes are {}", ids.join(", "));
    }
    // Shape ids are static; keep the matching ones.
    let only: Option<&'static [&'static str]> = if only.is_empty() {
        None
    } else {
        Some(Vec::leak(ids.into_iter().filter(|id| only.iter().any(|o| o == id)).collect()))
    };
    let options = store::bench::BenchOptions { runs, scale, only };
    let report = with_server(backend, &[], async |server| {
        Ok(store::bench::run(server, options, |step| eprintln!("{step}")).await?)
    })
    .await?;
    let Some(report) = report else { return Ok(ExitCode::from(EXIT_INTERRUPTED)) };
    print_report(json, &report, report.to_text())?;
    Ok(ExitCode::SUCCESS)
}

/// A report as pretty JSON with `--json`, as its text otherwise.
fn print_report(json: bool, report: &impl serde::Serialize, text: String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{text}");
    }
    Ok(())
}

fn audit(files: &[PathBuf], json: bool) -> Result<ExitCode> {
    let show_progress = std::io::stderr().is_terminal();
    for file in files {
        let started = Instant::now();
        let audit = log_sleuth::audit::audit_file(file, |lines| {
            if show_progress {
                eprint!("\r{}: {lines} lines read...", file.display());
            }
        })?;
        if show_progress && audit.lines >= 100_000 {
            eprintln!();
        }
        let name = file.display().to_string();
        if json {
            for f in &audit.findings {
                let mut value = serde_json::to_value(f)?;
                value.as_object_mut().expect("a finding is an object").insert("file".into(), name.clone().into());
                println!("{}", serde_json::to_string(&value)?);
            }
            continue;
        }
        print!("{}", audit.to_text(&name));
        eprintln!("{name}: audited in {:.2} s", started.elapsed().as_secs_f64());
    }
    Ok(ExitCode::SUCCESS)
}

fn generate(
    seed: u64,
    out: &PathBuf,
    difficulty: Difficulty,
    payments: Option<usize>,
    force: bool,
) -> Result<ExitCode> {
    if payments == Some(0) {
        bail!("--payments must be at least 1");
    }
    let incident = log_sleuth::generate::generate_sized(seed, difficulty, payments);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let log = out.join("incident.jsonl");
    let key = out.join("answer-key.json");
    for path in [&log, &key] {
        if path.exists() && !force {
            bail!("{} already exists; pass --force to overwrite it", path.display());
        }
    }
    std::fs::write(&log, &incident.jsonl).with_context(|| format!("writing {}", log.display()))?;
    std::fs::write(&key, serde_json::to_string_pretty(&incident.key)? + "\n")
        .with_context(|| format!("writing {}", key.display()))?;
    println!(
        "wrote {} ({} lines) and {} ({} findings to discover); keep the key away from attendees",
        log.display(),
        incident.key.lines,
        key.display(),
        incident.key.findings.len()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(serde::Serialize)]
struct DoctorItem {
    item: &'static str,
    status: &'static str,
    detail: String,
}

async fn doctor(backend: Option<Backend>, json: bool) -> Result<ExitCode> {
    let mut items = Vec::new();
    let mut fixes = Vec::new();
    let mut add = |item, status, detail: String| items.push(DoctorItem { item, status, detail });

    let version = |cmd: &str| {
        std::process::Command::new(cmd)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match version("cargo") {
        Some(v) => add("rust toolchain", "ok", v),
        None => {
            add("rust toolchain", "FAIL", "cargo not found".into());
            fixes.push("install Rust with rustup (https://rustup.rs)".to_string());
        }
    }
    let config = ProviderConfig::from_env(backend)?;
    let docker = DockerEngine::detect().await;
    match &docker {
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
                    "run `cargo xtask prepare` while online to get {} (or set LABS_PG_IMAGE)",
                    config.image
                ));
            }
        }
        Err(e) => add("docker engine", "warn", e.to_string()),
    }
    match pg::find_local_binaries() {
        Ok(dir) => add(
            "local postgres",
            "ok",
            version(&dir.join("postgres").to_string_lossy()).unwrap_or_else(|| dir.display().to_string()),
        ),
        Err(e) => add("local postgres", "warn", e.to_string()),
    }
    if let Some(url) = &config.database_url {
        add("DATABASE_URL", "ok", format!("set ({} characters); used with --pg url", url.len()));
    }

    let started = Instant::now();
    let trial = async {
        let server = Server::start(&config, &[]).await?;
        let client = server.connect().await?;
        let version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
        let fsync: String = client.query_one("SHOW fsync", &[]).await?.get(0);
        let described = server.describe();
        drop(client);
        server.shutdown().await?;
        Ok::<_, anyhow::Error>((described, version, fsync))
    };
    let server_ok = match trial.await {
        Ok((described, version, fsync)) => {
            add(
                "start a server",
                "ok",
                format!("PostgreSQL {version} in {:.1} s: {described}", started.elapsed().as_secs_f64()),
            );
            if fsync != "on" {
                add("fsync", "FAIL", format!("fsync is {fsync}: durability labs would lie"));
                fixes.push("use an image or server with fsync on (the default)".into());
            }
            true
        }
        Err(e) => {
            add("start a server", "FAIL", format!("{e:#}"));
            fixes.push("fix the first FAIL or warn above, then run `labs doctor` again".into());
            false
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "ready": server_ok, "items": items, "fixes": fixes }))?
        );
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
    Ok(if server_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
