//! `labs run log-sleuth` and `labs check log-sleuth`: out-of-order commits against a real server.
//!
//! The run is a script, not a race: two writer sessions are interleaved step by step so that the
//! event with the smaller position commits last, on every run. Positions come from a fresh
//! identity column, so the output is the same on every machine.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use tokio_postgres::Client;
use uuid::Uuid;

use super::generate::Rng;
use super::{Checkpoint, EventRow, Reader};
use crate::pg::{ProviderError, Server};
use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("{context}: {source}")]
    Sql { context: String, source: tokio_postgres::Error },
    #[error(
        "the {0} consumer's poll did not return within {1} s. Does it wait for the writers (a table lock, \
         or a loop until something arrives)? A poll must return what is readable now, even nothing; \
         in this lab the open transaction commits only after the poll returns"
    )]
    PollStalled(&'static str, u64),
}

/// A poll that takes longer than this is waiting for something that will not come.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

fn sql(context: &str) -> impl FnOnce(tokio_postgres::Error) -> LabError + '_ {
    move |source| LabError::Sql { context: context.to_string(), source }
}

/// What `labs run log-sleuth` shows: the timeline and each consumer's result.
#[derive(Debug, Clone, Serialize)]
pub struct LabReport {
    pub lab: &'static str,
    pub timeline: Vec<Step>,
    /// Positions of every committed event, ascending.
    pub committed: Vec<i64>,
    pub readers: Vec<ReaderResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: usize,
    pub who: String,
    pub action: String,
    /// Positions written (writers) or received (consumers) at this step.
    pub positions: Vec<i64>,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReaderResult {
    pub name: &'static str,
    pub query: &'static str,
    /// Positions in the order the consumer received them.
    pub delivered: Vec<i64>,
    pub missed_events: usize,
    pub missed: Vec<String>,
    pub duplicates: usize,
}

/// One consumer with its checkpoint and what it has received.
struct Consumer {
    reader: Reader,
    client: Client,
    checkpoint: Checkpoint,
    delivered: Vec<EventRow>,
}

impl Consumer {
    async fn poll_once(&mut self) -> Result<Vec<EventRow>, LabError> {
        let events = tokio::time::timeout(POLL_TIMEOUT, self.reader.poll(&self.client, &self.checkpoint))
            .await
            .map_err(|_| LabError::PollStalled(self.reader.name(), POLL_TIMEOUT.as_secs()))?
            .map_err(sql("the consumer's poll"))?;
        if let Some(last) = events.last() {
            self.checkpoint = Checkpoint::after(last);
        }
        self.delivered.extend(events.iter().cloned());
        Ok(events)
    }

    /// Polls until nothing more comes: what a consumer sees once the writers are done.
    async fn drain(&mut self) -> Result<(), LabError> {
        while !self.poll_once().await?.is_empty() {}
        Ok(())
    }
}

/// What the script knows has been committed: position -> (stream, version, type).
type Committed = BTreeMap<i64, (String, i64, String)>;

async fn append(client: &Client, n: u128, stream: &str, version: i64, event_type: &str) -> Result<i64, LabError> {
    let row = client
        .query_one(
            "INSERT INTO events (event_id, stream_id, version, type, data)
             VALUES ($1, $2, $3, $4, '{}') RETURNING position",
            &[&Uuid::from_u128(n), &stream, &version, &event_type],
        )
        .await
        .map_err(sql("append"))?;
    Ok(row.get(0))
}

/// Runs the scripted interleaving with the given consumers.
pub async fn run(server: &Server, readers: &[Reader]) -> Result<LabReport, LabError> {
    let setup = server.connect().await?;
    store::install(&setup).await.map_err(sql("installing the events table"))?;
    let writer_a = server.connect().await?;
    let writer_b = server.connect().await?;
    let mut consumers = Vec::new();
    for &reader in readers {
        consumers.push(Consumer {
            reader,
            client: server.connect().await?,
            checkpoint: Checkpoint::default(),
            delivered: Vec::new(),
        });
    }
    let mut timeline = Vec::new();
    let mut committed = Committed::new();
    let writer = |timeline: &mut Vec<Step>, who: &str, action: String, positions: Vec<i64>, note: &str| {
        timeline.push(Step { step: timeline.len() + 1, who: who.into(), action, positions, note: note.into() });
    };

    // 1. Writer A appends and commits: the normal case.
    let p1 = append(&writer_a, 1, "payment-1001", 1, "PaymentAuthorized").await?;
    committed.insert(p1, ("payment-1001".into(), 1, "PaymentAuthorized".into()));
    writer(&mut timeline, "writer A", "append payment-1001 v1 PaymentAuthorized; commit".into(), vec![p1], "");
    poll_all(&mut consumers, &mut timeline, &committed).await?;

    // 2. Writer A opens a transaction and appends, then stalls before committing.
    writer_a.batch_execute("BEGIN").await.map_err(sql("writer A: BEGIN"))?;
    let p2 = append(&writer_a, 2, "payment-1002", 1, "PaymentAuthorized").await?;
    writer(
        &mut timeline,
        "writer A",
        "begin; append payment-1002 v1 PaymentAuthorized".into(),
        vec![p2],
        "not committed yet: waiting on a fraud check",
    );

    // 3. Writer B appends after it, so takes a larger position, and commits first.
    let p3 = append(&writer_b, 3, "payment-1001", 2, "PaymentCaptured").await?;
    committed.insert(p3, ("payment-1001".into(), 2, "PaymentCaptured".into()));
    writer(&mut timeline, "writer B", "append payment-1001 v2 PaymentCaptured; commit".into(), vec![p3], "");
    poll_all(&mut consumers, &mut timeline, &committed).await?;

    // 4. Writer A commits: its smaller position becomes visible after a larger one.
    writer_a.batch_execute("COMMIT").await.map_err(sql("writer A: COMMIT"))?;
    committed.insert(p2, ("payment-1002".into(), 1, "PaymentAuthorized".into()));
    writer(&mut timeline, "writer A", "commit".into(), vec![p2], &format!("position {p2} commits after position {p3}"));
    poll_all(&mut consumers, &mut timeline, &committed).await?;

    // 5. Traffic goes on.
    let p4 = append(&writer_b, 4, "payment-1002", 2, "PaymentCaptured").await?;
    committed.insert(p4, ("payment-1002".into(), 2, "PaymentCaptured".into()));
    writer(&mut timeline, "writer B", "append payment-1002 v2 PaymentCaptured; commit".into(), vec![p4], "");
    poll_all(&mut consumers, &mut timeline, &committed).await?;

    for c in &mut consumers {
        c.drain().await?;
    }
    let readers = consumers.iter().map(|c| result_of(c, &committed)).collect();
    Ok(LabReport { lab: "log-sleuth", timeline, committed: committed.keys().copied().collect(), readers })
}

async fn poll_all(consumers: &mut [Consumer], timeline: &mut Vec<Step>, committed: &Committed) -> Result<(), LabError> {
    for c in consumers.iter_mut() {
        let got = c.poll_once().await?;
        let seen: BTreeSet<i64> = c.delivered.iter().map(|e| e.position).collect();
        let waiting: Vec<i64> = committed.keys().filter(|p| !seen.contains(p)).copied().collect();
        // Say why a consumer got nothing while committed events are still undelivered.
        let note = if !got.is_empty() || waiting.is_empty() {
            String::new()
        } else if waiting.iter().all(|p| *p < c.checkpoint.position) && c.reader != Reader::Watermark {
            format!(
                "position {} is behind its checkpoint ({}): skipped for good",
                join(&waiting),
                c.checkpoint.position
            )
        } else {
            format!("holds back position {}: an older transaction is still open", join(&waiting))
        };
        timeline.push(Step {
            step: timeline.len() + 1,
            who: c.reader.name().into(),
            action: "poll".into(),
            positions: got.iter().map(|e| e.position).collect(),
            note,
        });
    }
    Ok(())
}

fn result_of(c: &Consumer, committed: &Committed) -> ReaderResult {
    let delivered: Vec<i64> = c.delivered.iter().map(|e| e.position).collect();
    let unique: BTreeSet<i64> = delivered.iter().copied().collect();
    let missed: Vec<String> = committed
        .iter()
        .filter(|(p, _)| !unique.contains(p))
        .map(|(p, (stream, version, ty))| format!("position {p}: {stream} v{version} {ty}"))
        .collect();
    ReaderResult {
        name: c.reader.name(),
        query: c.reader.describe(),
        missed_events: missed.len(),
        missed,
        duplicates: delivered.len() - unique.len(),
        delivered,
    }
}

fn join(positions: &[i64]) -> String {
    positions.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
}

impl LabReport {
    /// The timeline for people: what each session did and what each consumer received.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Log Sleuth: two writers commit out of order; {} consumers poll.", self.readers.len());
        for r in &self.readers {
            let _ = writeln!(out, "  {:<10} {}", r.name, r.query);
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{:>4}  {:<10} {:<52} {:<10} {}", "step", "who", "what", "positions", "note");
        for s in &self.timeline {
            let positions = if s.positions.is_empty() { "-".to_string() } else { join(&s.positions) };
            let _ =
                writeln!(out, "{:>4}  {:<10} {:<52} {:<10} {}", s.step, s.who, s.action, positions, s.note).map(|_| ());
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "committed: {}", join(&self.committed));
        for r in &self.readers {
            let verdict = if r.missed_events == 0 {
                "missed none".to_string()
            } else {
                format!("MISSED {}", r.missed.join("; "))
            };
            let _ = writeln!(out, "{:<10} delivered {:<12} {}", r.name, join(&r.delivered), verdict);
        }
        // Trailing spaces from empty notes would make the snapshot fragile to editors.
        out.lines().map(str::trim_end).collect::<Vec<_>>().join("\n") + "\n"
    }
}

/// The result of `labs check log-sleuth`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub activity: &'static str,
    pub reader: &'static str,
    pub passed: bool,
    pub checks: Vec<CheckResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// Checks a consumer: the scripted interleaving, then concurrent writers with random commit
/// delays. It passes only if every committed event arrives exactly once, each stream in order.
pub async fn check(server: &Server, reader: Reader) -> Result<CheckReport, LabError> {
    let mut checks = Vec::new();
    let scripted = run(server, &[reader]).await?;
    let r = &scripted.readers[0];
    checks.push(CheckResult {
        name: "scripted out-of-order commit: no event missed".into(),
        passed: r.missed_events == 0,
        detail: if r.missed.is_empty() {
            "all 4 events delivered".into()
        } else {
            format!("missed {}", r.missed.join("; "))
        },
    });
    checks.push(CheckResult {
        name: "scripted out-of-order commit: no event delivered twice".into(),
        passed: r.duplicates == 0,
        detail: format!("{} duplicate deliveries", r.duplicates),
    });
    checks.extend(concurrent_writers(server, reader).await?);
    let passed = checks.iter().all(|c| c.passed);
    Ok(CheckReport { activity: "log-sleuth", reader: reader.name(), passed, checks })
}

/// Writers and one consumer race for real: each writer appends to its own stream, one event per
/// transaction, and holds each transaction open for a random moment before committing.
async fn concurrent_writers(server: &Server, reader: Reader) -> Result<Vec<CheckResult>, LabError> {
    const WRITERS: usize = 4;
    const EVENTS_PER_WRITER: i64 = 50;
    let setup = server.connect().await?;
    setup.batch_execute("TRUNCATE events").await.map_err(sql("truncating events"))?;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = server.connect().await?;
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(w as u64 + 1);
            let stream = format!("account-{w}");
            for version in 1..=EVENTS_PER_WRITER {
                client.batch_execute("BEGIN").await?;
                let n = 1_000 + (w as u128) * 1_000 + version as u128;
                client
                    .execute(
                        "INSERT INTO events (event_id, stream_id, version, type, data) VALUES ($1, $2, $3, 'Deposited', '{}')",
                        &[&Uuid::from_u128(n), &stream, &version],
                    )
                    .await?;
                tokio::time::sleep(Duration::from_micros(rng.below(3_000) as u64)).await;
                client.batch_execute("COMMIT").await?;
            }
            Ok::<(), tokio_postgres::Error>(())
        }));
    }
    let mut consumer =
        Consumer { reader, client: server.connect().await?, checkpoint: Checkpoint::default(), delivered: Vec::new() };
    while tasks.iter().any(|t| !t.is_finished()) {
        consumer.poll_once().await?;
        tokio::time::sleep(Duration::from_micros(300)).await;
    }
    for t in tasks {
        t.await.expect("writer task panicked").map_err(sql("a concurrent writer"))?;
    }
    consumer.drain().await?;

    let total = WRITERS as i64 * EVENTS_PER_WRITER;
    let delivered: BTreeSet<Uuid> = consumer.delivered.iter().map(|e| e.event_id).collect();
    let missed = total - delivered.len() as i64;
    let duplicates = consumer.delivered.len() - delivered.len();
    let mut last_version: BTreeMap<&str, i64> = BTreeMap::new();
    let mut out_of_order = 0;
    for e in &consumer.delivered {
        let last = last_version.entry(e.stream_id.as_str()).or_insert(0);
        if e.version <= *last {
            out_of_order += 1;
        }
        *last = (*last).max(e.version);
    }
    Ok(vec![
        CheckResult {
            name: format!("{WRITERS} concurrent writers: every one of {total} events delivered"),
            passed: missed == 0,
            detail: format!("{missed} missed"),
        },
        CheckResult {
            name: format!("{WRITERS} concurrent writers: no event delivered twice"),
            passed: duplicates == 0,
            detail: format!("{duplicates} duplicate deliveries"),
        },
        CheckResult {
            name: format!("{WRITERS} concurrent writers: each stream in version order"),
            passed: out_of_order == 0,
            detail: format!("{out_of_order} events arrived after a later version of their stream"),
        },
    ])
}

impl CheckReport {
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "labs check {} ({} consumer)", self.activity, self.reader);
        for c in &self.checks {
            let _ = writeln!(out, "  {} {}  ({})", if c.passed { "ok  " } else { "FAIL" }, c.name, c.detail);
        }
        if self.passed {
            let _ = writeln!(out, "passed: this consumer never skips or repeats an event.");
        } else {
            let _ = writeln!(out, "failed: fix poll() in labs/src/log_sleuth/exercise.rs (hints at the top of the file), then run this again.");
        }
        out
    }
}
