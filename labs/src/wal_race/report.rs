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

/// The bet sheet's three headline bets, in the words the sheet and the lab both print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadlineBet {
    ScalesLongest,
    SlowestDurable,
    FastestDurable,
}

impl HeadlineBet {
    pub const ALL: [HeadlineBet; 3] =
        [HeadlineBet::ScalesLongest, HeadlineBet::SlowestDurable, HeadlineBet::FastestDurable];

    /// The bet as the sheet asks it and the race's headline answers it.
    pub fn label(self) -> &'static str {
        match self {
            HeadlineBet::ScalesLongest => "Scales longest",
            HeadlineBet::SlowestDurable => "Slowest durable at the most writers",
            HeadlineBet::FastestDurable => "Fastest durable at the most writers",
        }
    }
}

/// The answers to the headline bets, from one race's points: what the lab prints under
/// "Headline bets" and what a team's sheet is scored against, for any writer counts (the
/// `--quick` race's 1, 4, 16 as much as the full race's 1, 2, 4, 8, 16).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Headline {
    /// The most writers the race measured: "at the most writers".
    pub writers: usize,
    /// Strategies that kept scaling longest: still scaling at the most writers, or, if none
    /// did, those with the highest knee ("scales to N writers, then stops").
    pub scales_longest: Vec<Strategy>,
    /// Where they stop: None when they were still scaling at the most writers.
    pub scales_to: Option<usize>,
    /// The slowest and fastest durable strategy at the most writers, with events/s.
    pub slowest_durable: (Strategy, f64),
    pub fastest_durable: (Strategy, f64),
}

/// One team's headline bets: a strategy per bet (None: left empty, scores nothing).
#[derive(Clone, Debug, Default)]
pub struct HeadlineBets {
    pub scales_longest: Option<Strategy>,
    pub slowest_durable: Option<Strategy>,
    pub fastest_durable: Option<Strategy>,
}

/// The headline of a race, from the same walls the report prints (None: no durable point at
/// the most writers, as in an interrupted race).
pub fn headline(report: &RaceReport) -> Option<Headline> {
    let writers = report.points.iter().map(|p| p.writers).max()?;
    let at_most: Vec<(Strategy, f64)> = report
        .points
        .iter()
        .filter(|p| p.writers == writers && p.strategy.durable())
        .map(|p| (p.strategy, p.events_per_second))
        .collect();
    let slowest_durable = *at_most.iter().min_by(|a, b| a.1.total_cmp(&b.1))?;
    let fastest_durable = *at_most.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
    // The knee of each strategy, as "Where each strategy hits the wall" prints it; still
    // scaling counts as beyond every knee.
    let reach = |s: &super::race::StrategyResult| {
        s.bottleneck.as_ref().map(|b| b.stops_scaling_after.map_or(usize::MAX, |w| w))
    };
    let longest = report.strategies.iter().filter_map(reach).max()?;
    let scales_longest = report.strategies.iter().filter(|s| reach(s) == Some(longest)).map(|s| s.strategy).collect();
    Some(Headline {
        writers,
        scales_longest,
        scales_to: (longest != usize::MAX).then_some(longest),
        slowest_durable,
        fastest_durable,
    })
}

impl Headline {
    /// The sheet's scoring rule: one point per headline bet the race confirms. "Scales longest"
    /// scores when the bet is among the strategies that scaled longest.
    pub fn score(&self, bets: &HeadlineBets) -> u32 {
        let hit = |bet: Option<Strategy>, right: &[Strategy]| u32::from(bet.is_some_and(|b| right.contains(&b)));
        hit(bets.scales_longest, &self.scales_longest)
            + hit(bets.slowest_durable, &[self.slowest_durable.0])
            + hit(bets.fastest_durable, &[self.fastest_durable.0])
    }

    /// The answer to one bet, as the lab prints it.
    pub fn answer(&self, bet: HeadlineBet) -> String {
        match bet {
            HeadlineBet::ScalesLongest => {
                let ids: Vec<&str> = self.scales_longest.iter().map(|s| s.id()).collect();
                match self.scales_to {
                    None => format!("{} (still scaling at {} writers)", ids.join(", "), self.writers),
                    Some(1) => format!("{} (flat from 1 writer)", ids.join(", ")),
                    Some(w) => format!("{} (scales to {w} writers, then stops)", ids.join(", ")),
                }
            }
            HeadlineBet::SlowestDurable => {
                format!("{}, {} events/s", self.slowest_durable.0.id(), thousands(self.slowest_durable.1))
            }
            HeadlineBet::FastestDurable => {
                format!("{}, {} events/s", self.fastest_durable.0.id(), thousands(self.fastest_durable.1))
            }
        }
    }
}

impl std::fmt::Display for Headline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "Headline bets (the most writers: {}; one point each)", self.writers)?;
        for bet in HeadlineBet::ALL {
            writeln!(f, "  {:<37} {}", format!("{}:", bet.label()), self.answer(bet))?;
        }
        Ok(())
    }
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
        if let Some(headline) = headline(self) {
            out += &format!("\n{headline}");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The race's headline and the bet sheet's scoring rule, on the saved full race.
    fn saved() -> RaceReport {
        let text = include_str!("../../../fixtures/04-wal-race/saved/results.json");
        let mut report: RaceReport = serde_json::from_str(text).unwrap();
        let strategies: Vec<Strategy> = report.strategies.iter().map(|s| s.strategy).collect();
        report.strategies = super::super::race::summarize(&strategies, &report.points);
        report
    }

    /// The same race cut to the `--quick` writer counts (1, 4, 16), walls found again.
    fn quick_cut() -> RaceReport {
        let mut report = saved();
        report.points.retain(|p| [1, 4, 16].contains(&p.writers));
        report.writers = vec![1, 4, 16];
        let strategies: Vec<Strategy> = report.strategies.iter().map(|s| s.strategy).collect();
        report.strategies = super::super::race::summarize(&strategies, &report.points);
        report
    }

    #[test]
    fn the_headline_is_printed_and_scored_from_the_same_answers_on_full_and_quick_races() {
        for report in [saved(), quick_cut()] {
            let headline = headline(&report).unwrap();
            let text = report.to_string();
            for bet in HeadlineBet::ALL {
                assert!(text.contains(&headline.answer(bet)), "{}: {text}", bet.label());
            }
            let right = HeadlineBets {
                scales_longest: headline.scales_longest.first().copied(),
                slowest_durable: Some(headline.slowest_durable.0),
                fastest_durable: Some(headline.fastest_durable.0),
            };
            assert_eq!(headline.score(&right), 3);
            assert_eq!(headline.score(&HeadlineBets::default()), 0);
            // The fastest is never the slowest: one wrong bet costs exactly its point.
            let wrong = HeadlineBets { fastest_durable: Some(headline.slowest_durable.0), ..right };
            assert_eq!(headline.score(&wrong), 2);
        }
    }

    #[test]
    fn the_saved_race_headline_is_what_its_walls_and_table_say() {
        let headline = headline(&saved()).unwrap();
        assert_eq!(headline.writers, 16);
        // "still scaling at 16 writers": row-per-tx and store-append in the saved walls.
        assert_eq!(headline.scales_longest, [Strategy::RowPerTx, Strategy::StoreAppend]);
        assert_eq!(headline.scales_to, None);
        assert_eq!(headline.slowest_durable.0, Strategy::GlobalCounter);
        assert_eq!(headline.fastest_durable.0, Strategy::Copy);
    }

    #[test]
    fn the_bet_sheet_asks_the_three_bets_the_lab_answers() {
        let sheet = include_str!("../../../book/src/04-wal-race/bet-sheet.md");
        for bet in HeadlineBet::ALL {
            assert!(sheet.contains(&format!("| {} |", bet.label())), "the bet sheet lacks `{}`", bet.label());
        }
        assert!(sheet.contains("one point per headline bet"), "the sheet states another scoring rule");
    }
}
