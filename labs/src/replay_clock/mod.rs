//! Activity 8, Replay Clock: rebuilding a read model from 200,000 events, four ways, while the
//! balance page keeps reading it; aggregate loads with and without snapshots; legacy payloads
//! read through an upcaster, never rewritten.
//!
//! - [`bank`]: the accounts, their events in two payload shapes, the load through the store's
//!   COPY path, and the golden balances computed in Rust.
//! - [`rebuild`]: the four strategies and the reader that watches the live model.
//! - [`snapshots`]: load time against stream length, with and without a snapshot.
//! - [`check`]: `labs check replay-clock`, the attendee's upcaster, snapshot policy and rebuild
//!   (`exercises/08-replay-clock/replay.sql`).
//!
//! `labs run replay-clock` runs the reference solution (`replay.solution.sql`): its upcaster in
//! every strategy, its `load_account` for the snapshots, its `rebuild_balances` as blue-green.

pub mod bank;
pub mod check;
pub mod rebuild;
pub mod snapshots;

use std::fmt::{self, Write as _};
use std::io::Write as _;

use serde::{Deserialize, Serialize};

use crate::error::LabError;
use crate::lab::{CheckReport, Ctx, Exercise, ExerciseFile, Lab, Report};
use crate::pg::{Capability, Server};
use bank::{Bank, Plan};
use rebuild::{Strategy, StrategyResult};
use snapshots::SnapshotReport;

/// `labs run replay-clock` and `labs check replay-clock`.
pub struct ReplayClock;

/// Options of `labs run replay-clock`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Events the per-event strategy replays: a prefix of the log, since one transaction per
    /// event over all of it takes minutes (the report extrapolates, and says so).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(100..=200_000))]
    pub per_event: u32,
    /// Also write the report as run.txt and run.json into this directory (how the chapter's
    /// saved run in fixtures/08-replay-clock/saved/ was made).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

pub const EXERCISE: Exercise = Exercise {
    file: "08-replay-clock/replay.sql",
    template: include_str!("../../../exercises/08-replay-clock/replay.sql"),
    task: "an upcaster, a snapshot policy and a rebuild: never rewrite history, never serve a stale or empty model",
};

/// The reference solution: what `labs run` uses as upcaster, snapshot policy and blue-green rebuild.
pub const SOLUTION_SQL: &str = include_str!("../../../exercises/08-replay-clock/replay.solution.sql");
/// The lab's measuring helpers (fold without snapshots).
const MEASURE_SQL: &str = include_str!("measure.sql");

/// The bank `labs run` replays: about 200,000 events.
pub fn lab_plan() -> Plan {
    Plan { seed: 8, accounts: 4_000, long_streams: vec![10, 100, 1_000, 10_000, 20_000], rounds: 20 }
}

impl Lab for ReplayClock {
    const ID: &'static str = "replay-clock";
    const NEEDS: &'static [Capability] = &[];
    type Args = RunArgs;
    type Report = ReplayReport;

    async fn run(&self, args: RunArgs, ctx: &Ctx) -> Result<ReplayReport, LabError> {
        let live = Progress { live: ctx.live() };
        let report = ctx
            .with_server(Self::NEEDS, async |server| run(server, &lab_plan(), args.per_event as usize, &live).await)
            .await?;
        if let Some(dir) = &args.out {
            for (name, text) in report.renderings() {
                let path = dir.join(name);
                std::fs::create_dir_all(dir)
                    .and_then(|_| std::fs::write(&path, text))
                    .map_err(|e| LabError::file(&path, format!("writing the saved run: {e}")))?;
                ctx.progress(format_args!("written: {}", path.display()));
            }
        }
        Ok(report)
    }

    fn exercise(&self) -> Option<Exercise> {
        Some(EXERCISE)
    }

    async fn check(&self, file: &ExerciseFile, ctx: &Ctx) -> Result<CheckReport, LabError> {
        ctx.with_server(Self::NEEDS, async |server| check::check(server, file).await).await
    }
}

/// The progress line on stderr: redrawn in place on a terminal, one line per finished step
/// elsewhere (a log, CI).
pub struct Progress {
    pub live: bool,
}

impl Progress {
    pub fn quiet() -> Progress {
        Progress { live: false }
    }

    fn update(&self, line: impl fmt::Display) {
        if self.live {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        }
    }

    fn done(&self, line: impl fmt::Display) {
        if self.live {
            eprintln!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

/// Everything `labs run replay-clock` measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplayReport {
    pub lab: String,
    pub server_version: String,
    pub events: usize,
    pub accounts: usize,
    pub legacy_events: usize,
    pub load_seconds: f64,
    pub strategies: Vec<StrategyResult>,
    pub snapshots: SnapshotReport,
}

impl Report for ReplayReport {}

/// Where the chapter's saved run lives in the kit.
pub const SAVED: &str = "fixtures/08-replay-clock/saved";

impl ReplayReport {
    /// The files of a saved run: the text people read and the JSON it renders from.
    pub fn renderings(&self) -> [(&'static str, String); 2] {
        [
            ("run.txt", self.to_string()),
            ("run.json", serde_json::to_string_pretty(self).expect("a report serializes") + "\n"),
        ]
    }
}

/// The lab on a fresh server: load, four rebuilds, the snapshot loads.
pub async fn run(
    server: &Server,
    plan: &Plan,
    per_event: usize,
    progress: &Progress,
) -> Result<ReplayReport, LabError> {
    let bank = Bank::plan(plan);
    let total = bank.events();
    let mut client = server.connect().await?;
    crate::store::install(&client).await.map_err(LabError::db("installing the reference store"))?;
    client.batch_execute(bank::BANK_SQL).await.map_err(LabError::db("installing the bank"))?;
    let started = std::time::Instant::now();
    bank.load(&mut client, |done| {
        progress.update(format_args!("loading: {} of {} events", thousands(done), thousands(total)))
    })
    .await?;
    let load_seconds = started.elapsed().as_secs_f64();
    progress
        .done(format_args!("loaded {} events through the store's COPY path in {load_seconds:.1} s", thousands(total)));
    client.batch_execute(SOLUTION_SQL).await.map_err(LabError::db("installing the reference solution"))?;
    client.batch_execute(MEASURE_SQL).await.map_err(LabError::db("installing the lab's measures"))?;
    rebuild::prepare(&client, &bank).await?;
    // Fresh statistics after the bulk load, as a deployment would have them: without them the
    // planner may sort the whole log for a subscription's LIMIT 1 instead of walking its index.
    client.batch_execute("ANALYZE").await.map_err(LabError::db("ANALYZE after the load"))?;

    let mut strategies = Vec::new();
    for &strategy in Strategy::ALL {
        let result = rebuild::run(server, &bank, strategy, per_event, |done, of| {
            progress.update(format_args!("{strategy}: {} of {} events", thousands(done), thousands(of)))
        })
        .await?;
        progress.done(format_args!(
            "{strategy}: {} events in {:.2} s, {} events/s",
            thousands(result.events),
            result.seconds,
            thousands(result.events_per_second.round() as usize)
        ));
        strategies.push(result);
    }
    progress.update("snapshots: loading streams of 10 to 20,000 events");
    let lengths = plan.long_streams.clone();
    let snapshots = snapshots::run(&client, &bank, &lengths).await?;
    progress.done("snapshots: loads timed");
    Ok(ReplayReport {
        lab: "replay-clock".into(),
        server_version: server.version().to_string(),
        events: total,
        accounts: bank.accounts.len(),
        legacy_events: bank.legacy_events(),
        load_seconds,
        strategies,
        snapshots,
    })
}

/// 12,345.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.2} ms")
    } else {
        format!("{value:.1} ms")
    }
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Replay Clock: {} events over {} accounts; {} of them legacy v1 payloads ({:.1}%), read through the upcaster, never rewritten.",
            thousands(self.events),
            thousands(self.accounts),
            thousands(self.legacy_events),
            self.legacy_events as f64 * 100.0 / self.events as f64
        );
        let _ = writeln!(out, "Loaded through the store's COPY path in {:.1} s.", self.load_seconds);
        let _ = writeln!(out);
        let _ = writeln!(out, "Four rebuilds of the balances read model, each judged against golden balances computed outside the database:");
        let _ = writeln!(
            out,
            "  {:<11} {:>9} {:>9} {:>12}  {:<8}  readers of the live model",
            "strategy", "events", "time", "events/s", "balances"
        );
        for s in &self.strategies {
            let events = if s.prefix_of.is_some() { format!("{}*", thousands(s.events)) } else { thousands(s.events) };
            let _ = writeln!(
                out,
                "  {:<11} {:>9} {:>9} {:>12}  {:<8}  {}",
                s.strategy.id(),
                events,
                format!("{:.2} s", s.seconds),
                format!("{}/s", thousands(s.events_per_second.round() as usize)),
                if s.golden { "golden" } else { "WRONG" },
                if s.took_the_model_away() { "saw it empty or half-built" } else { "saw the old model or the new one" }
            );
        }
        for s in &self.strategies {
            if let (Some(total), Some(estimate)) = (s.prefix_of, s.estimated_full_seconds) {
                let _ = writeln!(
                    out,
                    "  * {} replayed the first {} events of the log. At that rate all {} would take about {} s ({} min): an estimate, not a run.",
                    s.strategy.id(),
                    thousands(s.events),
                    thousands(total),
                    thousands(estimate.round() as usize),
                    thousands((estimate / 60.0).round() as usize)
                );
            }
            if let Some(difference) = &s.difference {
                let _ = writeln!(out, "  ! {}: {difference}", s.strategy.id());
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "What a reader of the live table saw during each rebuild (one count(*) every 5 ms):");
        for s in &self.strategies {
            let r = &s.readers;
            let after_reset = match s.rows_after_reset {
                Some(rows) => format!("; right after the reset committed, a read found {rows} rows"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:<11} {} reads: {} empty, {} partial, {} failed; longest read {}{after_reset}",
                s.strategy.id(),
                thousands(r.reads as usize),
                thousands(r.empty as usize),
                thousands(r.partial as usize),
                thousands(r.failed as usize),
                ms(r.longest_read_ms)
            );
            if let Some(failure) = &r.first_failure {
                let _ = writeln!(out, "  {:<11} first failed read: {failure}", "");
            }
        }
        for s in &self.strategies {
            let _ = writeln!(out, "  {:<11} {}", s.strategy.id(), s.strategy.describe());
        }
        let _ = writeln!(out);
        let snap = &self.snapshots;
        let _ = writeln!(
            out,
            "Loading one account against its stream length (median of {} loads; the snapshot {} events behind the head, half the policy's {}):",
            snap.loads, snap.tail, snap.policy_threshold
        );
        let _ = writeln!(
            out,
            "  {:>8}  {:>15} {:>10}  {:>15} {:>10}",
            "events", "folded without", "time", "folded with", "time"
        );
        for row in &snap.rows {
            let (folded_with, time_with) = match (row.folded_with, row.median_ms_with) {
                (Some(n), Some(t)) => (thousands(n as usize), ms(t)),
                _ => ("no snapshot".to_string(), "-".to_string()),
            };
            let _ = writeln!(
                out,
                "  {:>8}  {:>15} {:>10}  {:>15} {:>10}",
                thousands(row.stream_length),
                thousands(row.folded_without as usize),
                ms(row.median_ms_without),
                folded_with,
                time_with
            );
        }
        let _ = match snap.pays_from {
            Some(length) => writeln!(
                out,
                "  In this run the snapshot paid from {} events on (timed: it can move a row between runs).",
                thousands(length)
            ),
            None => writeln!(out, "  In this run no snapshot made a load faster."),
        };
        f.write_str(&out)
    }
}
