//! The live view of the race, on stderr: one line per strategy with a bar on a log scale (100 to
//! 1,000,000 events/s). On a terminal the board is redrawn in place; elsewhere (a log, CI) each
//! finished point is one line.

use std::fmt::Write as _;

use super::race::Progress;
use super::report::thousands;
use super::strategy::Strategy;

pub struct Board {
    lines: Vec<(Strategy, String)>,
    redraw: bool,
    drawn: bool,
}

impl Board {
    pub fn new(strategies: &[Strategy], redraw: bool) -> Board {
        Board {
            lines: strategies.iter().map(|s| (*s, format!("{:<17} waiting", s.id()))).collect(),
            redraw,
            drawn: false,
        }
    }

    fn line(strategy: Strategy, writers: usize, eps: f64, wal_mb: f64, done: &str) -> String {
        const WIDTH: usize = 30;
        let filled = (((eps.max(100.0).log10() - 2.0) / 4.0) * WIDTH as f64).round().clamp(0.0, WIDTH as f64) as usize;
        format!(
            "{:<17} {:>2}w {}{} {:>10} ev/s {:>7.1} MB/s WAL{}",
            strategy.id(),
            writers,
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            thousands(eps),
            wal_mb,
            done
        )
    }

    pub fn update(&mut self, progress: Progress) {
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
            let _ = write!(out, "\x1b[{}A", self.lines.len());
        }
        for (_, l) in &self.lines {
            let _ = writeln!(out, "\x1b[2K{l}");
        }
        self.drawn = true;
        eprint!("{out}");
    }
}
