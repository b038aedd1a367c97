//! Part A of `labs run outbox-relay`: three relays read the same outbox while one writer holds
//! its transaction open across the others' commits.
//!
//! The run is a script, not a race: writer sessions are interleaved step by step, so the outbox
//! row with the smallest id commits last on every run, and every relay sees the same thing each
//! time. At the end every relay crashes after handing its last batch on and before saving its
//! cursor: restarted, each hands that batch on again.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

use serde::Serialize;
use tokio_postgres::Client;

use super::relay::{self, Message, OrderEvent, Relay, RelayKind};
use crate::error::LabError;
use crate::pg::Server;

/// The slot the slot relay reads.
pub const RELAY_SLOT: &str = "outbox_relay";

/// What part A shows: the timeline, what committed in which order, and each relay's result.
#[derive(Clone, Debug, Serialize)]
pub struct RelayRace {
    pub timeline: Vec<Step>,
    /// Every outbox row that committed, in commit order.
    pub committed: Vec<Committed>,
    pub relays: Vec<RelayResult>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub step: usize,
    pub who: String,
    pub action: String,
    /// Outbox ids written (writers) or handed on (relays) at this step.
    pub ids: Vec<i64>,
    pub note: String,
    /// The slot relay's lag before this poll: WAL bytes since the slot's confirmed position.
    /// Varies from run to run (background records), so only the JSON carries it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_lag_bytes: Option<i64>,
    /// Outbox ids whose transaction committed at this step.
    #[serde(skip)]
    pub committed_ids: Vec<i64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Committed {
    pub id: i64,
    pub event: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct RelayResult {
    pub name: &'static str,
    pub how: &'static str,
    /// Outbox ids in the order the relay handed them on, repeats included.
    pub delivered: Vec<i64>,
    pub missed: Vec<String>,
    pub duplicated: usize,
    /// Events handed on after a later version of their own stream.
    pub out_of_stream_order: usize,
    /// Whether the first delivery of each event follows the commit order (None: it missed some).
    pub in_commit_order: Option<bool>,
    /// Polls that returned nothing while events it would hand on later had already committed:
    /// the watermark waiting for the open transaction.
    pub stalled_polls: usize,
    pub stalled_steps: Vec<usize>,
    /// The most committed events held back at one of those polls.
    pub most_held_back: usize,
}

struct Writer {
    name: &'static str,
    client: Client,
}

impl Writer {
    async fn sql(&self, statement: &str) -> Result<(), LabError> {
        self.client.batch_execute(statement).await.map_err(LabError::db(format!("{}: {statement}", self.name)))
    }
}

struct Script {
    timeline: Vec<Step>,
    committed: Vec<Committed>,
    /// Outbox id -> the event, for the report.
    events: BTreeMap<i64, OrderEvent>,
    relays: Vec<Relay>,
    delivered: Vec<Vec<Message>>,
}

impl Script {
    fn step(&mut self, who: &str, action: impl Into<String>, ids: Vec<i64>, note: &str) {
        let step = self.timeline.len() + 1;
        self.timeline.push(Step {
            step,
            who: who.into(),
            action: action.into(),
            ids,
            note: note.into(),
            slot_lag_bytes: None,
            committed_ids: Vec::new(),
        });
    }

    /// Writes `event` in the writer's open transaction (BEGIN first); the caller commits.
    async fn write(&mut self, writer: &Writer, event: OrderEvent) -> Result<i64, LabError> {
        let id = relay::write(&writer.client, &event).await?;
        self.events.insert(id, event);
        Ok(id)
    }

    /// A writer's whole transaction: BEGIN, the store's append and the outbox row, COMMIT.
    async fn commit_one(&mut self, writer: &Writer, event: OrderEvent) -> Result<(), LabError> {
        writer.sql("BEGIN").await?;
        let action = format!("append {} + outbox row; COMMIT", event.describe());
        let id = self.write(writer, event).await?;
        writer.sql("COMMIT").await?;
        self.committed(id);
        self.step(writer.name, action, vec![id], "");
        self.timeline.last_mut().expect("the step just pushed").committed_ids = vec![id];
        Ok(())
    }

    fn committed(&mut self, id: i64) {
        let event = self.events[&id].describe();
        self.committed.push(Committed { id, event });
    }

    /// Every relay polls once and hands its batch on, then saves its cursor (`save`) or crashes
    /// before saving it.
    async fn poll_all(&mut self, save: bool) -> Result<(), LabError> {
        for i in 0..self.relays.len() {
            let lag = self.relays[i].slot_lag_bytes().await?;
            let got = self.relays[i].poll().await?;
            if save {
                self.relays[i].save().await?;
            } else {
                self.relays[i].crash();
            }
            let kind = self.relays[i].kind;
            let note = self.note(i, &got);
            self.delivered[i].extend(got.iter().cloned());
            let step = self.timeline.len() + 1;
            self.timeline.push(Step {
                step,
                who: kind.name().into(),
                action: if save {
                    "poll".into()
                } else {
                    "poll; hand the batch on; crash before saving the cursor".into()
                },
                ids: got.iter().map(|m| m.id).collect(),
                note,
                slot_lag_bytes: lag,
                committed_ids: Vec::new(),
            });
        }
        Ok(())
    }

    /// Why a relay got nothing while committed events are still undelivered.
    fn note(&self, relay: usize, got: &[Message]) -> String {
        let seen: BTreeSet<i64> = self.delivered[relay].iter().chain(got).map(|m| m.id).collect();
        let waiting: Vec<i64> = self.committed.iter().map(|c| c.id).filter(|id| !seen.contains(id)).collect();
        if !got.is_empty() || waiting.is_empty() {
            return String::new();
        }
        let cursor = self.delivered[relay].iter().map(|m| m.id).max().unwrap_or(0);
        match self.relays[relay].kind {
            RelayKind::Naive if waiting.iter().all(|id| *id < cursor) => {
                format!("id {} is behind its cursor ({cursor}): skipped for good", join(&waiting))
            }
            _ => format!("holds back id {}: an older transaction is still open", join(&waiting)),
        }
    }
}

/// Runs the script on `server` (wal_level = logical) in its database, which must be empty.
pub async fn run(server: &Server) -> Result<RelayRace, LabError> {
    let setup = server.connect().await?;
    quiet_autovacuum(&setup).await?;
    relay::install(&setup).await?;
    // Before any writer opens a transaction: creating a slot waits for those to end.
    relay::create_slot(&setup, RELAY_SLOT).await?;
    let writers = [
        Writer { name: "writer A", client: server.connect().await? },
        Writer { name: "writer B", client: server.connect().await? },
        Writer { name: "writer C", client: server.connect().await? },
    ];
    let mut relays = Vec::new();
    for kind in RelayKind::ALL {
        relays.push(Relay::new(kind, server.connect().await?, RELAY_SLOT));
    }
    let mut script = Script {
        timeline: Vec::new(),
        committed: Vec::new(),
        events: BTreeMap::new(),
        delivered: vec![Vec::new(); relays.len()],
        relays,
    };
    let [a, b, c] = &writers;

    // 1. Writer A starts an order and does not commit yet (a slow payment check, a GC pause).
    a.sql("BEGIN").await?;
    let first = OrderEvent::new(1001, 1, "OrderPlaced", "sku-7", 2);
    let action = format!("BEGIN; append {} + outbox row; no COMMIT yet", first.describe());
    let id_a = script.write(a, first).await?;
    script.step(a.name, action, vec![id_a], "");
    // 2. Others commit meanwhile.
    script.commit_one(b, OrderEvent::new(1002, 1, "OrderPlaced", "sku-3", 1)).await?;
    script.poll_all(true).await?;
    script.commit_one(c, OrderEvent::new(1003, 1, "OrderPlaced", "sku-7", 5)).await?;
    script.commit_one(b, OrderEvent::new(1002, 2, "OrderCancelled", "sku-3", 1)).await?;
    script.poll_all(true).await?;
    // 3. Writer A commits last, with the smallest id.
    a.sql("COMMIT").await?;
    script.committed(id_a);
    script.step(a.name, "COMMIT", vec![id_a], "");
    script.timeline.last_mut().expect("the step just pushed").committed_ids = vec![id_a];
    script.poll_all(true).await?;
    script.commit_one(c, OrderEvent::new(1003, 2, "OrderCancelled", "sku-7", 5)).await?;
    // 4. Every relay hands this batch on, then crashes before saving where it got to.
    script.poll_all(false).await?;
    script.step("relays", "restart from the last saved cursor", vec![], "");
    script.poll_all(true).await?;

    setup
        .execute("SELECT pg_drop_replication_slot($1)", &[&RELAY_SLOT])
        .await
        .map_err(LabError::db(format!("dropping slot {RELAY_SLOT}")))?;
    let relays = script
        .relays
        .iter()
        .zip(&script.delivered)
        .map(|(r, delivered)| result_of(r.kind, delivered, &script.committed, &script.timeline))
        .collect();
    Ok(RelayRace { timeline: script.timeline, committed: script.committed, relays })
}

/// The watermark waits for every transaction that holds an id, and an autovacuum ANALYZE takes
/// one: on this throwaway server autovacuum is off for the script, so only the script's writers
/// hold the watermark back and every run reads the same. (Reloadable; the server is the lab's.)
async fn quiet_autovacuum(client: &Client) -> Result<(), LabError> {
    for statement in ["ALTER SYSTEM SET autovacuum = off", "SELECT pg_reload_conf()"] {
        client.batch_execute(statement).await.map_err(LabError::db(statement))?;
    }
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(10) {
        let now: String = client
            .query_one("SELECT current_setting('autovacuum')", &[])
            .await
            .map_err(LabError::db("reading autovacuum"))?
            .get(0);
        if now == "off" {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Err(LabError::Script("autovacuum was still on 10 s after ALTER SYSTEM and pg_reload_conf()".into()))
}

fn result_of(kind: RelayKind, delivered: &[Message], committed: &[Committed], timeline: &[Step]) -> RelayResult {
    let ids: Vec<i64> = delivered.iter().map(|m| m.id).collect();
    let unique: BTreeSet<i64> = ids.iter().copied().collect();
    let missed =
        committed.iter().filter(|c| !unique.contains(&c.id)).map(|c| format!("id {}: {}", c.id, c.event)).collect();
    let mut first_seen = Vec::new();
    let mut out_of_stream_order = 0;
    let mut last_version: BTreeMap<&str, i64> = BTreeMap::new();
    for m in delivered {
        if first_seen.contains(&m.id) {
            continue; // a repeat is counted as a duplicate, not again as disorder
        }
        first_seen.push(m.id);
        let last = last_version.entry(&m.stream).or_insert(0);
        if m.version < *last {
            out_of_stream_order += 1;
        }
        *last = (*last).max(m.version);
    }
    let commit_order: Vec<i64> = committed.iter().map(|c| c.id).filter(|id| unique.contains(id)).collect();

    // A stall: a poll of this relay that returned nothing while some committed event that it
    // hands on later was already there.
    let mut stalled_steps = Vec::new();
    let mut most_held_back = 0;
    let mut committed_so_far = BTreeSet::new();
    let mut delivered_so_far = BTreeSet::new();
    for step in timeline {
        committed_so_far.extend(step.committed_ids.iter().copied());
        if step.who == kind.name() {
            if step.ids.is_empty() {
                let held: usize = committed_so_far
                    .iter()
                    .filter(|id| !delivered_so_far.contains(*id) && unique.contains(*id))
                    .count();
                if held > 0 {
                    stalled_steps.push(step.step);
                    most_held_back = most_held_back.max(held);
                }
            }
            delivered_so_far.extend(step.ids.iter().copied());
        }
    }
    RelayResult {
        name: kind.name(),
        how: kind.how(),
        duplicated: ids.len() - unique.len(),
        delivered: ids,
        missed,
        out_of_stream_order,
        in_commit_order: if unique.len() == committed.len() { Some(first_seen == commit_order) } else { None },
        stalled_polls: stalled_steps.len(),
        stalled_steps,
        most_held_back,
    }
}

pub(crate) fn join(ids: &[i64]) -> String {
    ids.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for RelayRace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let _ = writeln!(out, "PART A: three relays read one outbox; writer A holds its transaction open.");
        for r in &self.relays {
            let _ = writeln!(out, "  {:<10} {}", r.name, r.how);
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{:>4}  {:<10} {:<68} {:<10} note", "step", "who", "what", "outbox id");
        for s in &self.timeline {
            let ids = if s.ids.is_empty() { "-".to_string() } else { join(&s.ids) };
            let _ = writeln!(out, "{:>4}  {:<10} {:<68} {:<10} {}", s.step, s.who, s.action, ids, s.note);
        }
        let _ = writeln!(out);
        let order: Vec<String> = self.committed.iter().map(|c| c.id.to_string()).collect();
        let _ = writeln!(out, "committed, in commit order: {}", order.join(", "));
        for c in &self.committed {
            let _ = writeln!(out, "  id {}: {}", c.id, c.event);
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<10} {:<18} {:>6} {:>6} {:>10}  {:<12}  stalled behind the open transaction",
            "relay", "handed on", "missed", "twice", "reordered", "commit order"
        );
        for r in &self.relays {
            let stalled = if r.stalled_polls == 0 {
                "never".to_string()
            } else {
                format!(
                    "{} poll(s) (steps {}), up to {} committed event(s) held back",
                    r.stalled_polls,
                    join(&r.stalled_steps.iter().map(|s| *s as i64).collect::<Vec<_>>()),
                    r.most_held_back
                )
            };
            let order = match r.in_commit_order {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            };
            let _ = writeln!(
                out,
                "{:<10} {:<18} {:>6} {:>6} {:>10}  {:<12}  {}",
                r.name,
                join(&r.delivered),
                r.missed.len(),
                r.duplicated,
                r.out_of_stream_order,
                order,
                stalled
            );
        }
        let _ = writeln!(out, "  missed: committed, never handed on; twice: handed on again;");
        let _ = writeln!(out, "  reordered: handed on after a later version of its own stream;");
        let _ =
            writeln!(out, "  commit order: first deliveries in the order the transactions committed (-: some missed)");
        let _ = writeln!(out);
        for r in self.relays.iter().filter(|r| !r.missed.is_empty()) {
            let _ = writeln!(out, "{} missed for good: {}", r.name, r.missed.join("; "));
        }
        // Relays that handed the same ids on twice, named together.
        let mut repeats: Vec<(String, Vec<&str>)> = Vec::new();
        for r in self.relays.iter().filter(|r| r.duplicated > 0) {
            let mut seen = BTreeSet::new();
            let repeated: Vec<i64> = r.delivered.iter().copied().filter(|id| !seen.insert(*id)).collect();
            let ids = join(&repeated);
            match repeats.iter_mut().find(|(i, _)| *i == ids) {
                Some((_, names)) => names.push(r.name),
                None => repeats.push((ids, vec![r.name])),
            }
        }
        for (ids, names) in repeats {
            let _ = writeln!(
                out,
                "{} handed id {ids} on twice: {} after handing it on and before saving where it got to.",
                names.join(", "),
                if names.len() > 1 { "each crashed" } else { "it crashed" }
            );
        }
        let _ = writeln!(out, "(`--json` adds the slot's lag in bytes before each of its polls.)");
        for line in out.lines() {
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}
