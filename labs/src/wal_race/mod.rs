//! Activity 4, Throughput Throwdown: WAL Race. Ingestion strategies raced side by side.
//!
//! - [`strategy`]: the strategies, how each writes, and which are durable.
//! - [`race`]: `labs run wal-race`: every strategy at rising writer counts, with WAL, full-page
//!   images, flushes and the writers' wait events measured per point.
//! - [`bottleneck`]: where adding writers stops helping, and the wall named in plain words.
//! - [`report`] and [`chart`]: the table, CSV and SVG charts; a saved result set lives in
//!   `fixtures/04-wal-race/saved/` for a facilitator whose demo fails (`--saved`).

pub mod board;
pub mod bottleneck;
pub mod chart;
pub mod race;
pub mod report;
pub mod strategy;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use race::{RaceOptions, RaceReport};
use strategy::Strategy;

use crate::error::{Exit, LabError};
use crate::lab::{Ctx, Lab, Report};
use crate::pg::Capability;

/// Where the saved result set lives in the kit (a real run, with its provenance).
pub const SAVED: &str = "fixtures/04-wal-race/saved";

/// `labs run wal-race`.
pub struct WalRace;

/// Options of `labs run wal-race`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The short race, under a minute (1, 4 and 16 writers, 0.7 s a point).
    #[arg(long)]
    pub quick: bool,
    /// Only these strategies, comma-separated (see --list).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub strategies: Vec<Strategy>,
    /// Writer counts, comma-separated (default 1,2,4,8,16).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=64))]
    pub writers: Vec<u16>,
    /// Seconds per point (default 2.5).
    #[arg(long, allow_negative_numbers = true, value_parser = seconds_per_point)]
    pub seconds: Option<f64>,
    /// Where to write results.json, results.csv, race.txt and the SVG charts.
    #[arg(long, default_value = "target/wal-race")]
    pub out: PathBuf,
    /// No server: show the saved result set (fixtures/04-wal-race/saved) instead.
    #[arg(long, conflicts_with_all = ["quick", "strategies", "writers", "seconds"])]
    pub saved: bool,
    /// List the strategies and exit (no server).
    #[arg(long, conflicts_with_all = ["quick", "strategies", "writers", "seconds", "saved"])]
    pub list: bool,
}

fn seconds_per_point(text: &str) -> Result<f64, LabError> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 600.0 => Ok(s),
        _ => Err(LabError::Usage(format!("must be a number of seconds above 0 and at most 600, not {text}"))),
    }
}

/// What `labs run wal-race` prints: the strategies, or a race (run now, or saved).
#[derive(Serialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant, reason = "one report per run: boxing saves nothing")]
pub enum WalRaceReport {
    Strategies { strategies: Vec<StrategyInfo> },
    Race(RaceReport),
}

#[derive(Serialize)]
pub struct StrategyInfo {
    pub id: Strategy,
    pub durable: bool,
    pub describe: &'static str,
}

impl fmt::Display for WalRaceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalRaceReport::Strategies { .. } => f.write_str(&report::strategies_text()),
            WalRaceReport::Race(race) => write!(f, "{race}"),
        }
    }
}

impl Report for WalRaceReport {
    fn exit(&self) -> Exit {
        match self {
            WalRaceReport::Race(race) if race.interrupted => Exit::Interrupted,
            _ => Exit::Done,
        }
    }
}

impl Lab for WalRace {
    const ID: &'static str = "wal-race";
    const NEEDS: &'static [Capability] = &[];
    /// The first Ctrl-C finishes the point in progress and reports what was measured.
    const WINDS_DOWN: bool = true;
    /// Three strategies that show the three walls (fsync, lock, COPY's CPU), at 1 and 4 writers.
    const SMOKE_ARGS: &'static [&'static str] = &[
        "--strategies",
        "row-per-tx,advisory-lock,copy",
        "--writers",
        "1,4",
        "--seconds",
        "0.5",
        "--out",
        "target/wal-race-smoke",
    ];
    type Args = RunArgs;
    type Report = WalRaceReport;

    async fn run(&self, args: RunArgs, ctx: &Ctx) -> Result<WalRaceReport, LabError> {
        if args.list {
            let strategies = strategy::ALL
                .iter()
                .map(|&s| StrategyInfo { id: s, durable: s.durable(), describe: s.describe() })
                .collect();
            return Ok(WalRaceReport::Strategies { strategies });
        }
        if args.saved {
            let dir = ctx.settings.kit.path(SAVED).ok_or_else(|| {
                LabError::Usage(format!(
                    "--saved: there is no {SAVED} in this kit (a checkout or the attendee bundle has it)"
                ))
            })?;
            let mut report = read_results(&dir)?;
            // The walls are named again by this build's detector, from the saved measurements.
            report.strategies =
                race::summarize(&report.strategies.iter().map(|s| s.strategy).collect::<Vec<_>>(), &report.points);
            ctx.progress(format_args!(
                "the saved result set in {} (see PROVENANCE.md there); no server was started",
                dir.display()
            ));
            let command = saved_command(&dir).unwrap_or_else(|| "labs run wal-race".into());
            write_all(ctx, &report, &args.out, &command)?;
            return Ok(WalRaceReport::Race(report));
        }
        let mut options = if args.quick { RaceOptions::quick() } else { RaceOptions::full() };
        if !args.strategies.is_empty() {
            options.strategies = Vec::new();
            for s in args.strategies {
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
            options.seconds = seconds;
        }
        let points = options.strategies.len() * options.writers.len();
        ctx.progress(format_args!(
            "racing {} strategies at {:?} writers, {:.1} s a point: about {:.0} s in all",
            options.strategies.len(),
            options.writers,
            options.seconds,
            points as f64 * (options.seconds + 0.5)
        ));
        let mut board = board::Board::new(&options.strategies, ctx.live());
        let report = ctx
            .with_server(Self::NEEDS, async |server| {
                race::run(server, &options, ctx.stop_flag(), |p| board.update(p)).await
            })
            .await?;
        let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
        write_all(ctx, &report, &args.out, &format!("labs {command}"))?;
        Ok(WalRaceReport::Race(report))
    }
}

fn write_all(ctx: &Ctx, report: &RaceReport, out: &Path, command: &str) -> Result<(), LabError> {
    let written =
        write_results(report, out, command).map_err(|e| LabError::file(out, format!("writing the results: {e}")))?;
    ctx.progress(format_args!(
        "written: {}",
        written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    ));
    Ok(())
}

/// The files a race writes into its output directory, in this order.
pub const RESULT_FILES: [&str; 6] =
    ["results.json", "results.csv", "race.txt", "throughput.svg", "wal-per-event.svg", "PROVENANCE.md"];

/// Every rendering of a report, by file name: what `--out` writes, and what a saved set must hold.
pub fn renderings(report: &RaceReport, command: &str) -> Vec<(&'static str, String)> {
    vec![
        ("results.json", serde_json::to_string_pretty(report).expect("a report serializes") + "\n"),
        ("results.csv", report.to_csv()),
        ("race.txt", report.to_string()),
        ("throughput.svg", chart::throughput_svg(report)),
        ("wal-per-event.svg", chart::wal_per_event_svg(report)),
        ("PROVENANCE.md", report.provenance_markdown(command)),
    ]
}

/// Writes every rendering into `dir` (created if needed); returns the paths written.
pub fn write_results(report: &RaceReport, dir: &Path, command: &str) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, text) in renderings(report, command) {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok(written)
}

/// Reads a result set written by [`write_results`].
pub fn read_results(dir: &Path) -> Result<RaceReport, LabError> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path).map_err(|e| LabError::file(&path, e))?;
    serde_json::from_str(&text).map_err(|e| LabError::file(&path, format!("not a WAL race result set: {e}")))
}

/// The command that measured a saved result set, from its PROVENANCE.md.
pub fn saved_command(dir: &Path) -> Option<String> {
    let provenance = std::fs::read_to_string(dir.join("PROVENANCE.md")).ok()?;
    provenance
        .lines()
        .find_map(|l| l.strip_prefix("- Command: `").and_then(|c| c.strip_suffix('`')).map(str::to_string))
}
