//! `labs sleuth generate`: a fresh incident log with its answer key, so each cohort gets a new
//! puzzle. The same seed and difficulty give the same bytes on every machine: the random numbers
//! come from SplitMix64, written out here, not from a crate whose algorithm may change.
//!
//! The answer key is built from the anomalies the generator plants, not by running the audit,
//! so the tests that compare the two check one against the other.

use std::fmt::Write as _;

use serde::Serialize;

use super::findings::{Finding, FindingKind};

/// How big the log is and how many anomalies hide in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Difficulty {
    /// About 40 lines, two anomalies.
    Easy,
    /// About 400 lines, one anomaly of each kind.
    Medium,
    /// About 5,000 lines, two or three of each kind.
    Hard,
}

impl Difficulty {
    fn payments(self) -> usize {
        match self {
            Difficulty::Easy => 12,
            Difficulty::Medium => 110,
            Difficulty::Hard => 1_400,
        }
    }
    fn anomalies(self) -> Vec<FindingKind> {
        use FindingKind::*;
        match self {
            Difficulty::Easy => vec![DuplicateEvent, VersionGap],
            Difficulty::Medium => FindingKind::ALL.to_vec(),
            Difficulty::Hard => {
                let mut all = FindingKind::ALL.to_vec();
                all.extend(FindingKind::ALL);
                all.extend([ConflictingDuplicate, VersionConflict, OutOfOrder]);
                all
            }
        }
    }
}

/// A generated incident: the log's lines and the answer key.
pub struct Incident {
    pub jsonl: String,
    pub key: AnswerKey,
}

#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct AnswerKey {
    pub seed: u64,
    pub difficulty: String,
    pub lines: u64,
    /// Sorted by line: exactly what `labs sleuth audit` must report.
    pub findings: Vec<Finding>,
}

pub(crate) use crate::rng::Rng;

/// A version-4-shaped UUID from the seeded generator, so the same seed gives the same ids.
fn uuid(rng: &mut Rng) -> String {
    let (a, b) = (rng.next(), rng.next());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

#[derive(Clone)]
struct Event {
    event_id: String,
    stream_id: String,
    version: u64,
    event_type: &'static str,
    data: String,
    /// Milliseconds since the start of the incident window.
    at_ms: u64,
}

const LIFECYCLE: [&str; 4] = ["PaymentInitiated", "PaymentAuthorized", "PaymentCaptured", "PaymentSettled"];

pub fn generate(seed: u64, difficulty: Difficulty) -> Incident {
    generate_sized(seed, difficulty, None)
}

/// As [`generate`], with `payments` payments (four events each) instead of the difficulty's.
pub fn generate_sized(seed: u64, difficulty: Difficulty, payments: Option<usize>) -> Incident {
    let mut rng = Rng(seed);
    // Enough streams that every anomaly gets one of its own.
    let payments = payments.unwrap_or(difficulty.payments()).max(difficulty.anomalies().len() * 4);
    let mut events = payment_traffic(&mut rng, payments);

    // Plant each anomaly on a stream of its own, so no two interact and the key stays exact.
    let mut used_streams: Vec<String> = Vec::new();
    let mut planted: Vec<(FindingKind, Plant)> = Vec::new();
    let mut kinds = difficulty.anomalies();
    // Position swaps last: every other plant inserts or removes lines.
    kinds.sort_by_key(|k| *k == FindingKind::PositionRegression);
    for kind in kinds {
        let plant = plant(&mut rng, &mut events, kind, &mut used_streams);
        planted.push((kind, plant));
    }

    // Positions follow log order with small gaps (rolled-back transactions leave holes in a
    // sequence, which is normal and not a finding); a regression swaps two neighbours' positions.
    let mut positions = Vec::with_capacity(events.len());
    let mut next = 10_000 + rng.below(5_000) as i64;
    for _ in &events {
        positions.push(next);
        next += 1 + if rng.below(10) == 0 { 1 + rng.below(3) as i64 } else { 0 };
    }
    let mut findings = Vec::new();
    for (kind, plant) in &planted {
        let finding = |line: usize| {
            let e = &events[line];
            Finding::new(*kind, line as u64 + 1, &e.stream_id, &e.event_id)
        };
        match plant {
            Plant::Swap { index } => {
                positions.swap(*index, *index + 1);
                let mut f = finding(*index + 1);
                f.position = Some(positions[*index + 1]);
                f.previous_position = Some(positions[*index]);
                findings.push(f);
            }
            Plant::Copy { event_id } => {
                let mut lines = events.iter().enumerate().filter(|(_, e)| &e.event_id == event_id).map(|(i, _)| i);
                let (original, copy) = (lines.next().expect("planted"), lines.next().expect("planted"));
                let mut f = finding(copy);
                f.first_line = Some(original as u64 + 1);
                findings.push(f);
            }
            Plant::Gap { stream, missing } => {
                let mut f = finding(line_of(&events, stream, missing + 1));
                f.missing_from = Some(*missing);
                f.missing_to = Some(*missing);
                findings.push(f);
            }
            Plant::Conflict { stream, version } => {
                let mut lines =
                    events.iter().enumerate().filter(|(_, e)| &e.stream_id == stream && e.version == *version);
                let (first, second) = (lines.next().expect("planted").0, lines.next().expect("planted").0);
                let mut f = finding(second);
                f.version = Some(*version);
                f.first_line = Some(first as u64 + 1);
                findings.push(f);
            }
            Plant::Reorder { stream, version } => {
                let mut f = finding(line_of(&events, stream, *version));
                f.version = Some(*version);
                f.after_version = Some(version + 1);
                findings.push(f);
            }
        }
    }
    findings.sort_by_key(|f| (f.line, f.kind));

    let mut jsonl = String::with_capacity(events.len() * 260);
    for (e, position) in events.iter().zip(&positions) {
        let at = e.at_ms;
        let (h, m, s, ms) = (9 + at / 3_600_000, at / 60_000 % 60, at / 1000 % 60, at % 1000);
        writeln!(
            jsonl,
            r#"{{"event_id":"{}","stream_id":"{}","version":{},"position":{},"type":"{}","recorded_at":"2026-03-14T{h:02}:{m:02}:{s:02}.{ms:03}Z","data":{}}}"#,
            e.event_id, e.stream_id, e.version, position, e.event_type, e.data
        )
        .expect("writing to a String cannot fail");
    }
    let key =
        AnswerKey { seed, difficulty: format!("{difficulty:?}").to_lowercase(), lines: events.len() as u64, findings };
    Incident { jsonl, key }
}

/// Clean traffic: payments move through their lifecycle, interleaved, in commit order.
fn payment_traffic(rng: &mut Rng, payments: usize) -> Vec<Event> {
    let mut events = Vec::new();
    let mut active: Vec<(String, u64, u64, &'static str)> = Vec::new(); // stream, next version, amount, merchant
    let merchants = ["m-bakery", "m-books", "m-cinema", "m-grocer", "m-travel"];
    let mut started = 0;
    let mut at_ms = 0u64;
    while started < payments || !active.is_empty() {
        if started < payments && (active.len() < 3 || rng.below(3) == 0) {
            let stream = format!("payment-{}", 4_000 + started * 7 + rng.below(7));
            let amount = 500 + rng.below(50_000) as u64;
            active.push((stream, 1, amount, merchants[rng.below(merchants.len())]));
            started += 1;
        }
        let pick = rng.below(active.len());
        let (stream, version, amount, merchant) = active[pick].clone();
        at_ms += 20 + rng.below(900) as u64;
        let event_type = LIFECYCLE[(version - 1) as usize];
        let data = format!(r#"{{"amount_cents":{amount},"currency":"EUR","merchant":"{merchant}"}}"#);
        events.push(Event { event_id: uuid(rng), stream_id: stream, version, event_type, data, at_ms });
        if version as usize == LIFECYCLE.len() {
            active.swap_remove(pick);
        } else {
            active[pick].1 += 1;
        }
    }
    events
}

/// Where an anomaly was planted, by ids rather than line numbers: later plants insert and
/// remove lines, so lines are only known once every plant is in.
enum Plant {
    Copy {
        event_id: String,
    },
    Gap {
        stream: String,
        missing: u64,
    },
    Conflict {
        stream: String,
        version: u64,
    },
    Reorder {
        stream: String,
        version: u64,
    },
    /// Line `index` and the next swap positions; planted last, so `index` stays true.
    Swap {
        index: usize,
    },
}

fn plant(rng: &mut Rng, events: &mut Vec<Event>, kind: FindingKind, used: &mut Vec<String>) -> Plant {
    // A stream no other anomaly touches, with all four versions, not at the very end of the log.
    let mut pick_stream = |rng: &mut Rng, events: &Vec<Event>| loop {
        let i = rng.below(events.len() * 3 / 4);
        let stream = events[i].stream_id.clone();
        if !used.contains(&stream) && events.iter().filter(|e| e.stream_id == stream).count() == LIFECYCLE.len() {
            used.push(stream.clone());
            return stream;
        }
    };
    match kind {
        FindingKind::DuplicateEvent | FindingKind::ConflictingDuplicate => {
            let stream = pick_stream(rng, events);
            let version = 2 + rng.below(2) as u64;
            let original = line_of(events, &stream, version);
            let mut copy = events[original].clone();
            if kind == FindingKind::ConflictingDuplicate {
                // The same id, a different amount: two different events under one id.
                copy.data = copy.data.replacen("\"amount_cents\":", "\"amount_cents\":1", 1);
            }
            let at = (original + 2 + rng.below(12)).min(events.len());
            copy.at_ms = events[at - 1].at_ms;
            let event_id = copy.event_id.clone();
            events.insert(at, copy);
            Plant::Copy { event_id }
        }
        FindingKind::VersionGap => {
            let stream = pick_stream(rng, events);
            let missing = 2 + rng.below(2) as u64;
            let line = line_of(events, &stream, missing);
            events.remove(line);
            Plant::Gap { stream, missing }
        }
        FindingKind::VersionConflict => {
            let stream = pick_stream(rng, events);
            let version = 2 + rng.below(2) as u64;
            let first = line_of(events, &stream, version);
            let mut rival = events[first].clone();
            rival.event_id = uuid(rng);
            rival.data = rival.data.replacen("\"currency\":\"EUR\"", "\"currency\":\"EUR\",\"retry\":true", 1);
            let at = (first + 1 + rng.below(6)).min(events.len());
            rival.at_ms = events[at - 1].at_ms;
            events.insert(at, rival);
            Plant::Conflict { stream, version }
        }
        FindingKind::OutOfOrder => {
            let stream = pick_stream(rng, events);
            let version = 2 + rng.below(2) as u64;
            let (a, b) = (line_of(events, &stream, version), line_of(events, &stream, version + 1));
            // Swap the two events' places in the log, keeping each line's timestamp.
            let (at_a, at_b) = (events[a].at_ms, events[b].at_ms);
            events.swap(a, b);
            events[a].at_ms = at_a;
            events[b].at_ms = at_b;
            Plant::Reorder { stream, version }
        }
        FindingKind::PositionRegression => {
            // Two neighbouring lines of streams no other anomaly touches.
            loop {
                let i = 1 + rng.below(events.len() - 3);
                let (s1, s2) = (events[i].stream_id.clone(), events[i + 1].stream_id.clone());
                if s1 != s2 && !used.contains(&s1) && !used.contains(&s2) {
                    used.push(s1);
                    used.push(s2);
                    return Plant::Swap { index: i };
                }
            }
        }
    }
}

fn line_of(events: &[Event], stream: &str, version: u64) -> usize {
    events.iter().position(|e| e.stream_id == stream && e.version == version).expect("the stream has that version")
}
