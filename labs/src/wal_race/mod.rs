//! Activity 4, Throughput Throwdown: WAL Race. Ingestion strategies raced side by side.
//!
//! - [`strategy`]: the strategies, how each writes, and which are durable.
//! - [`race`]: `labs run wal-race`: every strategy at rising writer counts, with WAL, full-page
//!   images, flushes and the writers' wait events measured per point.
//! - [`bottleneck`]: where adding writers stops helping, and the wall named in plain words.
//! - [`report`] and [`chart`]: the table, CSV and SVG charts; a saved result set lives in
//!   `fixtures/04-wal-race/saved/` for a facilitator whose demo fails (`--saved`).

pub mod bottleneck;
pub mod chart;
pub mod race;
pub mod report;
pub mod strategy;

use std::path::{Path, PathBuf};

pub use race::{RaceOptions, RaceReport};

/// The saved result set, from a real run, with its provenance.
pub fn saved_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/04-wal-race/saved")
}

/// The files a race writes into its output directory, in this order.
pub const RESULT_FILES: [&str; 6] =
    ["results.json", "results.csv", "race.txt", "throughput.svg", "wal-per-event.svg", "PROVENANCE.md"];

/// Every rendering of a report, by file name: what `--out` writes, and what a saved set must hold.
pub fn renderings(report: &RaceReport, command: &str) -> Vec<(&'static str, String)> {
    vec![
        ("results.json", serde_json::to_string_pretty(report).expect("a report serializes") + "\n"),
        ("results.csv", report.to_csv()),
        ("race.txt", report.to_text()),
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
pub fn read_results(dir: &Path) -> Result<RaceReport, String> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not a WAL race result set: {e}", path.display()))
}

/// The command that measured a saved result set, from its PROVENANCE.md.
pub fn saved_command(dir: &Path) -> Option<String> {
    let provenance = std::fs::read_to_string(dir.join("PROVENANCE.md")).ok()?;
    provenance
        .lines()
        .find_map(|l| l.strip_prefix("- Command: `").and_then(|c| c.strip_suffix('`')).map(str::to_string))
}
