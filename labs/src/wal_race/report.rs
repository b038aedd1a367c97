//! The race's results for people (a table and the walls), for spreadsheets (CSV), and the
//! summary the debrief rests on.

use super::bottleneck::Wait;
use super::race::{Point, RaceReport};
use super::strategy::Strategy;

/// 12345.6 -> "12,346".
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The most common wait class of a point, with its share.
fn top_wait(point: &Point) -> String {
    let total: u32 = point.waits.values().sum();
    match point.waits.iter().max_by_key(|(_, n)| **n) {
        Some((w, n)) if total > 0 => format!("{} {:.0}%", w.name(), *n as f64 * 100.0 / total as f64),
        _ => "-".into(),
    }
}

/// The list of strategies, one line each, as `labs run wal-race --list` prints it.
pub fn strategies_text() -> String {
    let mut out = String::new();
    for s in super::strategy::ALL {
        out +=
            &format!("{:<17} {:<12} {}\n", s.id(), if s.durable() { "durable" } else { "NOT DURABLE" }, s.describe());
    }
    out
}

/// Facts the debrief uses, computed from the points.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    /// Each strategy's best events/s, fastest first.
    pub best: Vec<(Strategy, usize, f64)>,
    /// The fastest durable strategy other than COPY, and its share of COPY's best.
    pub best_durable_vs_copy: Option<(Strategy, f64)>,
    /// Fastest over slowest best events/s, among durable strategies.
    pub throughput_spread: Option<f64>,
    /// Largest over smallest median WAL bytes per event, among durable strategies without extra indexes.
    pub wal_spread: Option<f64>,
}

pub fn median_wal_per_event(report: &RaceReport, strategy: Strategy) -> Option<f64> {
    let mut v: Vec<f64> = report
        .points
        .iter()
        .filter(|p| p.strategy == strategy && p.events > 0)
        .map(|p| p.wal_bytes_per_event)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

pub fn summary(report: &RaceReport) -> Summary {
    let mut best: Vec<(Strategy, usize, f64)> = report
        .strategies
        .iter()
        .filter_map(|s| {
            report
                .points
                .iter()
                .filter(|p| p.strategy == s.strategy)
                .max_by(|a, b| a.events_per_second.total_cmp(&b.events_per_second))
                .map(|p| (s.strategy, p.writers, p.events_per_second))
        })
        .collect();
    best.sort_by(|a, b| b.2.total_cmp(&a.2));
    let copy = best.iter().find(|b| b.0 == Strategy::Copy).map(|b| b.2);
    let best_durable_vs_copy =
        copy.and_then(|c| best.iter().find(|b| b.0 != Strategy::Copy && b.0.durable()).map(|b| (b.0, b.2 / c)));
    let durable: Vec<f64> = best.iter().filter(|b| b.0.durable()).map(|b| b.2).collect();
    let throughput_spread = match (durable.first(), durable.last()) {
        (Some(hi), Some(lo)) if *lo > 0.0 && durable.len() > 1 => Some(hi / lo),
        _ => None,
    };
    let wal: Vec<f64> = report
        .strategies
        .iter()
        .filter(|s| s.strategy.durable() && s.strategy != Strategy::ExtraIndexes)
        .filter_map(|s| median_wal_per_event(report, s.strategy))
        .collect();
    let wal_spread = match (
        wal.iter().cloned().fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x)))),
        wal.iter().cloned().fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.min(x)))),
    ) {
        (Some(hi), Some(lo)) if lo > 0.0 && wal.len() > 1 => Some(hi / lo),
        _ => None,
    };
    Summary { best, best_durable_vs_copy, throughput_spread, wal_spread }
}

impl RaceReport {
    fn render(&self) -> String {
        let p = &self.provenance;
        let setting = |name: &str| p.settings.get(name).cloned().unwrap_or_else(|| "?".into());
        let writers: Vec<String> = self.writers.iter().map(|w| w.to_string()).collect();
        let mut out = format!(
            "WAL Race: {} strategies at {} writers, {} s a point{}\n",
            self.strategies.len(),
            writers.join(", "),
            format!("{:.2}", self.seconds_per_point).trim_end_matches('0').trim_end_matches('.'),
            if self.interrupted { " (INTERRUPTED: the points measured so far)" } else { "" }
        );
        out += &format!(
            "{} ({}), {} CPUs, {}; fsync {}, synchronous_commit {}, full_page_writes {}, wal_compression {}; recorded {}\n\n",
            p.postgres,
            p.backend,
            p.cpus,
            p.memory,
            setting("fsync"),
            setting("synchronous_commit"),
            setting("full_page_writes"),
            setting("wal_compression"),
            p.recorded_at
        );
        out += &format!(
            "{:<17} {:<7} {:>7} {:>10} {:>9} {:>9} {:>7} {:>13}  {}\n",
            "strategy", "durable", "writers", "events/s", "WAL B/ev", "WAL MB/s", "FPI", "commits/flush", "top wait"
        );
        for s in &self.strategies {
            for point in self.points.iter().filter(|pt| pt.strategy == s.strategy) {
                out += &format!(
                    "{:<17} {:<7} {:>7} {:>10} {:>9.0} {:>9.1} {:>7} {:>13}  {}\n",
                    s.strategy.id(),
                    if s.durable { "yes" } else { "NO" },
                    point.writers,
                    thousands(point.events_per_second),
                    point.wal_bytes_per_event,
                    point.wal_mb_per_second,
                    point.full_page_images,
                    point.commits_per_flush.map(|c| format!("{c:.1}")).unwrap_or_else(|| "-".into()),
                    top_wait(point)
                );
            }
        }
        out += "\nWhere each strategy hits the wall\n";
        let max_writers = self.writers.iter().copied().max().unwrap_or(1);
        for s in &self.strategies {
            if let Some(b) = &s.bottleneck {
                out += &format!("{:<17} {}\n", s.strategy.id(), b.describe(max_writers));
            }
        }
        let summary = summary(self);
        out += "\n";
        if let Some((fastest, w, eps)) = summary.best.first() {
            out += &format!("Fastest: {} at {w} writers, {} events/s.\n", fastest.id(), thousands(*eps));
        }
        if let Some((s, ratio)) = summary.best_durable_vs_copy {
            out += &format!(
                "Fastest durable strategy other than copy: {}, {:.0}% of copy's best.\n",
                s.id(),
                ratio * 100.0
            );
        }
        if let (Some(t), Some(w)) = (summary.throughput_spread, summary.wal_spread) {
            out += &format!(
                "Durable strategies: best throughput differs up to {t:.0}x; WAL bytes per event (without extra indexes) differ up to {w:.1}x.\n"
            );
        }
        out
    }

    pub fn to_csv(&self) -> String {
        let waits = [Wait::Fsync, Wait::Lock, Wait::RowContention, Wait::Cpu, Wait::RoundTrips, Wait::Other];
        let mut out = String::from(
            "strategy,durable,writers,seconds,events,transactions,events_per_second,wal_bytes,wal_bytes_per_event,wal_mb_per_second,full_page_images,wal_flushes,commits_per_flush",
        );
        for w in waits {
            out += &format!(",wait_{}", w.name().replace(' ', "_").to_lowercase());
        }
        out += "\n";
        for p in &self.points {
            out += &format!(
                "{},{},{},{:.3},{},{},{:.1},{},{:.1},{:.2},{},{},{}",
                p.strategy.id(),
                p.strategy.durable(),
                p.writers,
                p.seconds,
                p.events,
                p.transactions,
                p.events_per_second,
                p.wal_bytes,
                p.wal_bytes_per_event,
                p.wal_mb_per_second,
                p.full_page_images,
                p.wal_flushes,
                p.commits_per_flush.map(|c| format!("{c:.2}")).unwrap_or_default()
            );
            for w in waits {
                out += &format!(",{}", p.waits.get(&w).copied().unwrap_or(0));
            }
            out += "\n";
        }
        out
    }

    /// Markdown for PROVENANCE.md beside a saved result set.
    pub fn provenance_markdown(&self, command: &str) -> String {
        let p = &self.provenance;
        let mut out = String::from(
            "# Provenance of this result set\n\nWritten by the lab with the results; do not edit by hand.\n\n",
        );
        out += &format!("- Command: `{command}`\n");
        out += &format!("- Recorded: {}\n", p.recorded_at);
        out += &format!("- Server: {} ({})\n", p.postgres, p.backend);
        out += &format!("- Machine: {} CPUs, {} memory, {}\n", p.cpus, p.memory, p.kernel);
        out += &format!("- labs {}\n", p.labs_version);
        out += &format!("- Writers: {:?}, {:.1} s a point\n\nSettings:\n\n", self.writers, self.seconds_per_point);
        for (k, v) in &p.settings {
            out += &format!("- `{k}` = `{v}`\n");
        }
        out
    }
}

impl std::fmt::Display for RaceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}
