//! `labs run log-sleuth` and `labs check log-sleuth`: out-of-order commits against a real server.
//!
//! The run is a script, not a race: writer sessions are interleaved step by step so that the
//! event with the smaller position commits last, on every run. Positions come from a fresh
//! identity column, so the output is the same on every machine.
//!
//! The check runs the attendee's read through three scripted interleavings, each of which defeats
//! one plausible half-fix on every run, then through concurrent writers:
//! - the out-of-order commit above: a position checkpoint skips the smaller position;
//! - an older transaction whose events lie on both sides of a younger one's, committing first: a
//!   read that stays behind the watermark but keeps only the position skips the younger event;
//! - a consumer that starts after everything committed and reads it all at once: a read that
//!   resumes after the pair (transaction_id, position) but orders by position repeats events.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

use super::{EventRow, Reader};
use crate::error::LabError;
use crate::lab::{Check, CheckReport, ExerciseFile};
use crate::pg::Server;
use crate::rng::Rng;
use crate::store::{self, Checkpoint};

/// A poll that takes longer than this is waiting for something that will not come.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the check keeps polling for committed events a read has not returned yet, before
/// calling them missed: a read that waits for events to "settle" shows up here as late.
/// (Short, because an unsolved exercise pays it in every check that misses events; a read that
/// waits longer than this is reported as skipping, which, for a transaction open that long, it does.)
const LATE_WINDOW: Duration = Duration::from_millis(600);

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
    pub query: String,
    /// Positions in the order the consumer received them.
    pub delivered: Vec<i64>,
    pub missed_events: usize,
    pub missed: Vec<String>,
    pub duplicates: usize,
}

/// One consumer with its checkpoint and what it has received.
struct Consumer {
    name: &'static str,
    client: Client,
    statement: Statement,
    checkpoint: Checkpoint,
    delivered: Vec<EventRow>,
}

impl Consumer {
    async fn new(server: &Server, reader: &Reader) -> Result<Consumer, LabError> {
        let client = server.connect().await?;
        let statement = reader.prepare(&client).await?;
        Ok(Consumer { name: reader.name, client, statement, checkpoint: Checkpoint::START, delivered: Vec::new() })
    }

    async fn poll_once(&mut self) -> Result<Vec<EventRow>, LabError> {
        let events = tokio::time::timeout(POLL_TIMEOUT, Reader::poll(&self.client, &self.statement, self.checkpoint))
            .await
            .map_err(|_| {
                LabError::Exercise(format!(
                    "the {} consumer's read did not return within {} s. Does it wait for the writers (a lock, \
                     or pg_sleep until something arrives)? A read must return what is readable now, even \
                     nothing: in this check the open transaction commits only after the read returns",
                    self.name,
                    POLL_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| {
                LabError::Exercise(format!("the {} consumer's read failed: {}", self.name, store::server_message(&e)))
            })?;
        if let Some(last) = events.last() {
            self.checkpoint = last.checkpoint();
        }
        self.delivered.extend(events.iter().cloned());
        Ok(events)
    }

    /// Polls until nothing more comes: what a consumer sees once the writers are done.
    async fn drain(&mut self) -> Result<(), LabError> {
        while !self.poll_once().await?.is_empty() {}
        Ok(())
    }

    /// Drains, then keeps polling a while for committed events still missing, so a read that
    /// returns them only late is told apart from one that never does. Returns how long after the
    /// first empty poll the last late event came (None: nothing came late).
    async fn drain_and_wait_for(&mut self, committed: &BTreeSet<Uuid>) -> Result<Option<Duration>, LabError> {
        self.drain().await?;
        let started = Instant::now();
        let mut late = None;
        while started.elapsed() < LATE_WINDOW {
            let seen: BTreeSet<Uuid> = self.delivered.iter().map(|e| e.event_id).collect();
            if committed.is_subset(&seen) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            if !self.poll_once().await?.is_empty() {
                late = Some(started.elapsed());
            }
        }
        Ok(late)
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
        .map_err(LabError::db(format!("appending {stream} v{version}")))?;
    Ok(row.get(0))
}

async fn sql(client: &Client, statement: &str, who: &str) -> Result<(), LabError> {
    client.batch_execute(statement).await.map_err(LabError::db(format!("{who}: {statement}")))
}

/// A fresh store (the events table, empty) in the server's database.
async fn fresh_store(server: &Server) -> Result<(), LabError> {
    let setup = server.connect().await?;
    let installed: bool = setup
        .query_one("SELECT to_regclass('events') IS NOT NULL", &[])
        .await
        .map_err(LabError::db("looking for events"))?
        .get(0);
    if installed {
        sql(&setup, "TRUNCATE events RESTART IDENTITY", "setup").await
    } else {
        store::install(&setup).await.map_err(LabError::db("installing the events table"))
    }
}

/// Runs the scripted out-of-order commit with the given consumers.
pub async fn run(server: &Server, readers: &[Reader]) -> Result<LabReport, LabError> {
    Ok(run_script(server, readers, false).await?.0)
}

/// What each consumer received, and how late its last late event came (see
/// [`Consumer::drain_and_wait_for`]).
type Received = Vec<(Vec<EventRow>, Option<Duration>)>;

/// The script; with `wait_for_late`, each consumer keeps polling a while at the end for
/// committed events it has not returned yet.
async fn run_script(
    server: &Server,
    readers: &[Reader],
    wait_for_late: bool,
) -> Result<(LabReport, Received), LabError> {
    fresh_store(server).await?;
    let writer_a = server.connect().await?;
    let writer_b = server.connect().await?;
    let mut consumers = Vec::new();
    for reader in readers {
        consumers.push(Consumer::new(server, reader).await?);
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
    sql(&writer_a, "BEGIN", "writer A").await?;
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
    sql(&writer_a, "COMMIT", "writer A").await?;
    committed.insert(p2, ("payment-1002".into(), 1, "PaymentAuthorized".into()));
    writer(&mut timeline, "writer A", "commit".into(), vec![p2], &format!("position {p2} commits after position {p3}"));
    poll_all(&mut consumers, &mut timeline, &committed).await?;

    // 5. Traffic goes on.
    let p4 = append(&writer_b, 4, "payment-1002", 2, "PaymentCaptured").await?;
    committed.insert(p4, ("payment-1002".into(), 2, "PaymentCaptured".into()));
    writer(&mut timeline, "writer B", "append payment-1002 v2 PaymentCaptured; commit".into(), vec![p4], "");
    poll_all(&mut consumers, &mut timeline, &committed).await?;

    let all: BTreeSet<Uuid> = all_events(server).await?.into_iter().map(|(id, _)| id).collect();
    let mut received = Vec::new();
    for c in &mut consumers {
        let late = if wait_for_late { c.drain_and_wait_for(&all).await? } else { c.drain().await.map(|_| None)? };
        received.push((c.delivered.clone(), late));
    }
    let readers = consumers.iter().zip(readers).map(|(c, r)| result_of(c, &r.describe, &committed)).collect();
    Ok((LabReport { lab: "log-sleuth", timeline, committed: committed.keys().copied().collect(), readers }, received))
}

async fn poll_all(consumers: &mut [Consumer], timeline: &mut Vec<Step>, committed: &Committed) -> Result<(), LabError> {
    for c in consumers.iter_mut() {
        let got = c.poll_once().await?;
        let seen: BTreeSet<i64> = c.delivered.iter().map(|e| e.position).collect();
        let waiting: Vec<i64> = committed.keys().filter(|p| !seen.contains(p)).copied().collect();
        // Say why a consumer got nothing while committed events are still undelivered.
        let note = if !got.is_empty() || waiting.is_empty() {
            String::new()
        } else if waiting.iter().all(|p| *p < c.checkpoint.position) && c.name != "watermark" {
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
            who: c.name.into(),
            action: "poll".into(),
            positions: got.iter().map(|e| e.position).collect(),
            note,
        });
    }
    Ok(())
}

fn result_of(c: &Consumer, query: &str, committed: &Committed) -> ReaderResult {
    let delivered: Vec<i64> = c.delivered.iter().map(|e| e.position).collect();
    let unique: BTreeSet<i64> = delivered.iter().copied().collect();
    let missed: Vec<String> = committed
        .iter()
        .filter(|(p, _)| !unique.contains(p))
        .map(|(p, (stream, version, ty))| format!("position {p}: {stream} v{version} {ty}"))
        .collect();
    ReaderResult {
        name: c.name,
        query: query.to_string(),
        missed_events: missed.len(),
        missed,
        duplicates: delivered.len() - unique.len(),
        delivered,
    }
}

fn join(positions: &[i64]) -> String {
    positions.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for LabReport {
    /// The timeline for people: what each session did and what each consumer received.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        use fmt::Write as _;
        let _ = writeln!(out, "Log Sleuth: two writers commit out of order; {} consumers poll.", self.readers.len());
        for r in &self.readers {
            let _ = writeln!(out, "  {:<10} {}", r.name, r.query);
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{:>4}  {:<10} {:<52} {:<10} note", "step", "who", "what", "positions");
        for s in &self.timeline {
            let positions = if s.positions.is_empty() { "-".to_string() } else { join(&s.positions) };
            let _ = writeln!(out, "{:>4}  {:<10} {:<52} {:<10} {}", s.step, s.who, s.action, positions, s.note);
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
        for line in out.lines() {
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

impl crate::lab::Report for LabReport {}

/// What every check of a consumer looks at: each committed event delivered exactly once, each
/// stream in version order, and promptly.
struct Verdict {
    missed: Vec<String>,
    duplicates: usize,
    out_of_order: usize,
    late: Option<Duration>,
}

impl Verdict {
    fn of(delivered: &[EventRow], committed: &BTreeMap<Uuid, String>, late: Option<Duration>) -> Verdict {
        let unique: BTreeSet<Uuid> = delivered.iter().map(|e| e.event_id).collect();
        let missed = committed.iter().filter(|(id, _)| !unique.contains(id)).map(|(_, what)| what.clone()).collect();
        let mut last_version: BTreeMap<&str, i64> = BTreeMap::new();
        let mut out_of_order = 0;
        let mut seen = BTreeSet::new();
        for e in delivered {
            if !seen.insert(e.event_id) {
                continue; // a repeat is counted as a duplicate, not again as disorder
            }
            let last = last_version.entry(e.stream_id.as_str()).or_insert(0);
            if e.version < *last {
                out_of_order += 1;
            }
            *last = (*last).max(e.version);
        }
        Verdict { missed, duplicates: delivered.len() - unique.len(), out_of_order, late }
    }

    fn passed(&self) -> bool {
        self.missed.is_empty() && self.duplicates == 0 && self.out_of_order == 0 && self.late.is_none()
    }

    /// Why it failed, in words an attendee can act on; `why_missed` explains a skip here.
    fn detail(&self, all: usize, why_missed: &str, why_repeated: &str) -> String {
        let mut lines = Vec::new();
        if let Some(late) = self.late {
            lines.push(format!(
                "some events came only {} ms after the writers had committed and nothing older was open: a read \
                 that waits for events to settle skips any transaction that stays open longer than its wait",
                late.as_millis()
            ));
        }
        if !self.missed.is_empty() {
            const SHOWN: usize = 4;
            let more = self.missed.len().saturating_sub(SHOWN);
            let listed = self.missed.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("; ");
            let listed = if more > 0 { format!("{listed} and {more} more") } else { listed };
            lines.push(format!("skipped {listed}: {why_missed}"));
        }
        if self.duplicates > 0 {
            lines.push(format!("{} event(s) delivered twice: {why_repeated}", self.duplicates));
        }
        if self.out_of_order > 0 {
            lines.push(format!("{} event(s) arrived after a later version of their stream", self.out_of_order));
        }
        if lines.is_empty() {
            format!("all {all} events delivered once, each stream in order")
        } else {
            lines.join("\n")
        }
    }
}

/// Checks a consumer's read: three scripted interleavings, then concurrent writers. It passes
/// only if every committed event arrives exactly once, each stream in order, without delay.
pub async fn check(server: &Server, reader: &Reader, file: &ExerciseFile) -> Result<CheckReport, LabError> {
    let checks = checks(server, reader).await?;
    Ok(CheckReport::new("log-sleuth", file, checks, "this consumer never skips or repeats an event."))
}

/// The checks themselves, for any reader (tests run them on the half-fixes).
pub async fn checks(server: &Server, reader: &Reader) -> Result<Vec<Check>, LabError> {
    Ok(vec![
        out_of_order_commit(server, reader).await?,
        interleaved_transactions(server, reader).await?,
        late_consumer(server, reader).await?,
        concurrent_writers(server, reader).await?,
    ])
}

/// Event ids of the scripted checks, by position: the committed set a verdict compares with.
fn committed_ids(server_rows: &[(Uuid, String)]) -> BTreeMap<Uuid, String> {
    server_rows.iter().cloned().collect()
}

async fn all_events(server: &Server) -> Result<Vec<(Uuid, String)>, LabError> {
    let client = server.connect().await?;
    let rows = client
        .query("SELECT event_id, format('position %s: %s v%s %s', position, stream_id, version, type) FROM events ORDER BY position", &[])
        .await
        .map_err(LabError::db("reading what was committed"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The lab's own script: a smaller position commits after a larger one has been read.
async fn out_of_order_commit(server: &Server, reader: &Reader) -> Result<Check, LabError> {
    let (_, received) = run_script(server, std::slice::from_ref(reader), true).await?;
    let (delivered, late) = &received[0];
    let committed = committed_ids(&all_events(server).await?);
    let verdict = Verdict::of(delivered, &committed, *late);
    Ok(Check::new(
        "out-of-order-commit",
        "a smaller position commits after a larger one: nothing skipped or repeated",
        verdict.passed(),
        verdict.detail(
            committed.len(),
            "it committed after position 3 had been read, and its position is behind the checkpoint",
            "the read returned rows at or before its own checkpoint",
        ),
    ))
}

/// An older transaction (it wrote first, so it holds the smaller transaction id) takes positions
/// 1 and 3 around a younger transaction's position 2 and commits first; the consumer reads; then
/// the younger one commits. Behind the watermark the consumer has read 1 and 3; a checkpoint of
/// position 3 alone now hides position 2 for ever. The pair (xid, 3) does not: 2's xid is larger.
async fn interleaved_transactions(server: &Server, reader: &Reader) -> Result<Check, LabError> {
    fresh_store(server).await?;
    let older = server.connect().await?;
    let younger = server.connect().await?;
    let mut consumer = Consumer::new(server, reader).await?;
    sql(&older, "BEGIN", "older transaction").await?;
    append(&older, 11, "order-7", 1, "OrderPlaced").await?;
    sql(&younger, "BEGIN", "younger transaction").await?;
    append(&younger, 12, "invoice-9", 1, "InvoiceIssued").await?;
    append(&older, 13, "order-7", 2, "OrderPaid").await?;
    sql(&older, "COMMIT", "older transaction").await?;
    consumer.poll_once().await?;
    sql(&younger, "COMMIT", "younger transaction").await?;
    let committed = committed_ids(&all_events(server).await?);
    let late = consumer.drain_and_wait_for(&committed.keys().copied().collect()).await?;
    let verdict = Verdict::of(&consumer.delivered, &committed, late);
    Ok(Check::new(
        "interleaved-transactions",
        "an older transaction's events on both sides of a younger one's: nothing skipped",
        verdict.passed(),
        verdict.detail(
            committed.len(),
            "a younger transaction took a smaller position than events already read from an older one and \
             committed later; a checkpoint of the position alone is already past it. Resume after the pair \
             (transaction_id, position)",
            "the checkpoint is the last row's pair, so the rows must come in (transaction_id, position) order",
        ),
    ))
}

/// A consumer that starts after the writers of the previous check: it reads all at once, so a
/// read whose order differs from its checkpoint's order returns rows again.
async fn late_consumer(server: &Server, reader: &Reader) -> Result<Check, LabError> {
    // The previous check left three events from two interleaved transactions.
    let committed = committed_ids(&all_events(server).await?);
    let mut consumer = Consumer::new(server, reader).await?;
    let late = consumer.drain_and_wait_for(&committed.keys().copied().collect()).await?;
    let verdict = Verdict::of(&consumer.delivered, &committed, late);
    Ok(Check::new(
        "late-consumer",
        "a consumer that starts after the writers: every event once",
        verdict.passed(),
        verdict.detail(
            committed.len(),
            "nothing was open any more: the read's condition itself excludes it",
            "the rows came in one order and the checkpoint (the last row's transaction_id and position) \
             follows another: order by transaction_id, position",
        ),
    ))
}

/// Writers and one consumer race for real: each writer appends to its own stream, one event per
/// transaction, and holds each transaction open for a random moment before committing.
async fn concurrent_writers(server: &Server, reader: &Reader) -> Result<Check, LabError> {
    const WRITERS: usize = 4;
    const EVENTS_PER_WRITER: i64 = 50;
    fresh_store(server).await?;
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
    let mut consumer = Consumer::new(server, reader).await?;
    while tasks.iter().any(|t| !t.is_finished()) {
        consumer.poll_once().await?;
        tokio::time::sleep(Duration::from_micros(300)).await;
    }
    for t in tasks {
        t.await?.map_err(LabError::db("a concurrent writer"))?;
    }
    let committed = committed_ids(&all_events(server).await?);
    let late = consumer.drain_and_wait_for(&committed.keys().copied().collect()).await?;
    let verdict = Verdict::of(&consumer.delivered, &committed, late);
    Ok(Check::new(
        "concurrent-writers",
        format!("{WRITERS} writers holding their transactions open a random moment: every event once, in stream order"),
        verdict.passed(),
        verdict.detail(
            committed.len(),
            "transactions commit in another order than their positions",
            "the read returned rows at or before its own checkpoint",
        ),
    ))
}
