//! Naming the wall: where adding writers stops helping, and what the writers wait on there.
//!
//! While a point runs, the writers' sessions are sampled in `pg_stat_activity` and each sample
//! is put in one [`Wait`] class. The wall is the most common class (other than plain CPU work,
//! unless nothing else shows) from the first point whose extra writers stopped paying.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a writer's server session was doing when sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Wait {
    /// Waiting for the WAL to be written or flushed (IO WALSync/WALWrite, LWLock WALWrite).
    Fsync,
    /// Waiting for a heavyweight lock on an object, such as an advisory lock.
    Lock,
    /// Waiting for another transaction's row (tuple or transaction id locks).
    RowContention,
    /// Running, not waiting (or waiting on short in-memory locks).
    Cpu,
    /// Waiting for the client's next command: round trips or a busy client.
    RoundTrips,
    /// Anything else (data file I/O, extension locks...).
    Other,
}

impl Wait {
    /// From `pg_stat_activity.wait_event_type`, `wait_event` and `state`.
    pub fn classify(wait_event_type: Option<&str>, wait_event: Option<&str>, state: Option<&str>) -> Wait {
        match (wait_event_type, wait_event) {
            (Some("IO"), Some(e)) if e.starts_with("WAL") => Wait::Fsync,
            (Some("LWLock"), Some("WALWrite")) => Wait::Fsync,
            (Some("Lock"), Some("tuple" | "transactionid")) => Wait::RowContention,
            (Some("Lock"), _) => Wait::Lock,
            (Some("Client"), _) => Wait::RoundTrips,
            (None, _) if state == Some("idle") || state == Some("idle in transaction") => Wait::RoundTrips,
            (None, _) | (Some("LWLock"), _) => Wait::Cpu,
            _ => Wait::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Wait::Fsync => "fsync",
            Wait::Lock => "lock",
            Wait::RowContention => "row contention",
            Wait::Cpu => "CPU",
            Wait::RoundTrips => "round trips",
            Wait::Other => "other",
        }
    }

    /// What the wall means, in a few words.
    pub fn explain(self) -> &'static str {
        match self {
            Wait::Fsync => "writers wait for the WAL flush",
            Wait::Lock => "writers queue for one lock",
            Wait::RowContention => "writers queue for one row",
            Wait::Cpu => "the server's cores are busy",
            Wait::RoundTrips => "the server waits for the client",
            Wait::Other => "writers wait on something else",
        }
    }
}

/// One measured point of a strategy, as the detector sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    pub writers: usize,
    pub events_per_second: f64,
    /// Samples per wait class over the point.
    pub waits: BTreeMap<Wait, u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bottleneck {
    /// The fewest writers beyond which no writer count gained 20% more throughput.
    /// None if the most writers measured still paid.
    pub stops_scaling_after: Option<usize>,
    pub wall: Wait,
    /// The wall's share of the writers' samples from that point on.
    pub share: f64,
    /// Throughput at the best point over throughput at one writer (or the first point).
    pub speedup: f64,
}

/// A step up in writers pays when throughput grows by at least this factor.
const PAYS: f64 = 1.2;

pub fn detect(samples: &[Sample]) -> Option<Bottleneck> {
    let mut points: Vec<&Sample> = samples.iter().collect();
    points.sort_by_key(|s| s.writers);
    let first = points.first()?;
    let best = points.iter().map(|s| s.events_per_second).fold(0.0, f64::max);
    // The knee: the fewest writers beyond which no count gains 20% over it. A dip at one step
    // followed by more scaling (group commit kicking in) is not a knee.
    let knee = (0..points.len().saturating_sub(1)).find(|&i| {
        let beyond = points[i + 1..].iter().map(|s| s.events_per_second).fold(0.0, f64::max);
        beyond < points[i].events_per_second * PAYS
    });
    // Waits where more writers stopped helping; if they never did, at the most writers.
    let from = match knee {
        Some(i) => i + 1,
        None => points.len() - 1,
    };
    let mut waits: BTreeMap<Wait, u32> = BTreeMap::new();
    for s in &points[from..] {
        for (w, n) in &s.waits {
            *waits.entry(*w).or_default() += n;
        }
    }
    let total: u32 = waits.values().sum();
    // CPU is what every session does between waits; name it only when no wait dominates.
    let (wall, count) = waits
        .iter()
        .filter(|(w, _)| **w != Wait::Cpu)
        .max_by_key(|(_, n)| **n)
        .map(|(w, n)| (*w, *n))
        .filter(|(_, n)| total > 0 && *n as f64 >= total as f64 * 0.25)
        .unwrap_or((Wait::Cpu, waits.get(&Wait::Cpu).copied().unwrap_or(0)));
    Some(Bottleneck {
        stops_scaling_after: knee.map(|i| points[i].writers),
        wall,
        share: if total == 0 { 0.0 } else { count as f64 / total as f64 },
        speedup: if first.events_per_second > 0.0 { best / first.events_per_second } else { 0.0 },
    })
}

impl Bottleneck {
    pub fn describe(&self, max_writers: usize) -> String {
        let scaling = match self.stops_scaling_after {
            Some(1) => "flat from 1 writer".to_string(),
            Some(w) => format!("scales to {w} writers (x{:.1}), then stops", self.speedup),
            None => format!("still scaling at {max_writers} writers (x{:.1})", self.speedup),
        };
        format!("{scaling}: {} ({:.0}% of samples; {})", self.wall.name(), self.share * 100.0, self.wall.explain())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(writers: usize, eps: f64, waits: &[(Wait, u32)]) -> Sample {
        Sample { writers, events_per_second: eps, waits: waits.iter().copied().collect() }
    }

    #[test]
    fn a_flat_series_waiting_on_an_advisory_lock_is_a_lock_wall_from_one_writer() {
        let series = [
            sample(1, 2_000.0, &[(Wait::Fsync, 8), (Wait::Cpu, 2)]),
            sample(2, 2_050.0, &[(Wait::Lock, 10), (Wait::Fsync, 8), (Wait::Cpu, 2)]),
            sample(4, 2_010.0, &[(Wait::Lock, 30), (Wait::Fsync, 8), (Wait::Cpu, 2)]),
        ];
        let b = detect(&series).unwrap();
        assert_eq!((b.stops_scaling_after, b.wall), (Some(1), Wait::Lock));
        assert_eq!(b.describe(4).split(':').next().unwrap(), "flat from 1 writer");
    }

    #[test]
    fn group_commit_scaling_then_flush_waits_is_an_fsync_wall_at_the_knee() {
        let series = [
            sample(1, 2_000.0, &[(Wait::Fsync, 9), (Wait::Cpu, 1)]),
            sample(2, 3_800.0, &[(Wait::Fsync, 18), (Wait::Cpu, 2)]),
            sample(4, 7_000.0, &[(Wait::Fsync, 30), (Wait::Cpu, 10)]),
            sample(8, 7_300.0, &[(Wait::Fsync, 60), (Wait::Cpu, 20)]),
            sample(16, 7_100.0, &[(Wait::Fsync, 120), (Wait::Cpu, 40)]),
        ];
        let b = detect(&series).unwrap();
        assert_eq!((b.stops_scaling_after, b.wall), (Some(4), Wait::Fsync));
        assert!((b.speedup - 3.65).abs() < 0.01, "{}", b.speedup);
    }

    #[test]
    fn a_dip_before_group_commit_pays_off_is_not_the_knee() {
        let series = [
            sample(1, 4_400.0, &[(Wait::Fsync, 9)]),
            sample(2, 4_500.0, &[(Wait::Fsync, 18)]),
            sample(4, 9_000.0, &[(Wait::Fsync, 36)]),
            sample(8, 12_500.0, &[(Wait::Fsync, 70)]),
            sample(16, 15_600.0, &[(Wait::Fsync, 140)]),
        ];
        let b = detect(&series).unwrap();
        assert_eq!((b.stops_scaling_after, b.wall), (None, Wait::Fsync));
        assert!(b.describe(16).starts_with("still scaling at 16 writers (x3.5)"), "{}", b.describe(16));
    }

    #[test]
    fn row_locks_are_row_contention_and_busy_sessions_without_waits_are_cpu() {
        let rows = [
            sample(1, 1_000.0, &[(Wait::Fsync, 5)]),
            sample(4, 1_050.0, &[(Wait::RowContention, 30), (Wait::Fsync, 5)]),
        ];
        assert_eq!(detect(&rows).unwrap().wall, Wait::RowContention);
        let cpu = [sample(1, 50_000.0, &[(Wait::Cpu, 10)]), sample(4, 52_000.0, &[(Wait::Cpu, 38), (Wait::Fsync, 2)])];
        assert_eq!(detect(&cpu).unwrap().wall, Wait::Cpu);
        let still = [sample(1, 1_000.0, &[(Wait::RoundTrips, 10)]), sample(4, 3_900.0, &[(Wait::RoundTrips, 40)])];
        let b = detect(&still).unwrap();
        assert_eq!((b.stops_scaling_after, b.wall), (None, Wait::RoundTrips));
    }

    #[test]
    fn wait_events_map_to_their_class() {
        assert_eq!(Wait::classify(Some("IO"), Some("WALSync"), Some("active")), Wait::Fsync);
        assert_eq!(Wait::classify(Some("LWLock"), Some("WALWrite"), Some("active")), Wait::Fsync);
        assert_eq!(Wait::classify(Some("Lock"), Some("advisory"), Some("active")), Wait::Lock);
        assert_eq!(Wait::classify(Some("Lock"), Some("transactionid"), Some("active")), Wait::RowContention);
        assert_eq!(Wait::classify(Some("Client"), Some("ClientRead"), Some("idle")), Wait::RoundTrips);
        assert_eq!(Wait::classify(None, None, Some("active")), Wait::Cpu);
        assert_eq!(Wait::classify(Some("IO"), Some("DataFileExtend"), Some("active")), Wait::Other);
    }
}
