//! `labs run schema-sketch`: a scripted day at the bank on the reference store, then a replay.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;
use tokio_postgres::Client;
use uuid::Uuid;

use super::bank::{self, money, TransferOutcome, TransferRequest};
use crate::error::LabError;
use crate::pg::Server;
use crate::store::{self, ExpectedVersion, NewEvent, StoreError};

/// One line of the day: who did what, and what the store said.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub step: usize,
    pub who: String,
    pub command: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct StreamSummary {
    pub events: usize,
    pub version: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReplayedEvent {
    pub stream_id: String,
    pub version: i64,
    pub event_type: String,
    pub data: serde_json::Value,
}

#[derive(Clone, Debug, Serialize)]
pub struct LabReport {
    pub lab: &'static str,
    /// Account -> balance in cents, from the replay.
    #[serde(rename = "balances_cents")]
    pub balances: BTreeMap<String, i64>,
    /// Stream id -> event count (and version, for people).
    #[serde(rename = "events_per_stream", serialize_with = "event_counts")]
    pub streams: BTreeMap<String, StreamSummary>,
    /// Whether the replay's balances equal the balances loaded stream by stream.
    #[serde(rename = "replay_matches_streams")]
    pub replay_matches: bool,
    pub steps: Vec<Step>,
    /// Account -> balance in cents, loaded stream by stream.
    #[serde(skip)]
    pub loaded_balances: BTreeMap<String, i64>,
    #[serde(skip)]
    pub replay: Vec<ReplayedEvent>,
}

/// What a machine reads of the streams: each one's event count.
fn event_counts<S: serde::Serializer>(streams: &BTreeMap<String, StreamSummary>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(streams.iter().map(|(stream, summary)| (stream, summary.events)))
}

const ACCOUNTS: [&str; 3] = ["alice", "bob", "carol"];

/// Deterministic ids: the same day gives the same events on every run.
fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x5c4e_7c40_0000_4000_8000_0000_0000_0000 | n << 8)
}

fn request(n: u128, from: &str, to: &str, amount_cents: i64) -> TransferRequest {
    TransferRequest { transfer_id: id(n), from: from.into(), to: to.into(), amount_cents }
}

/// What a transfer wrote, read back from both streams (the day runs one step at a time).
async fn describe(client: &Client, outcome: &TransferOutcome, request: &TransferRequest) -> Result<String, LabError> {
    Ok(match outcome {
        TransferOutcome::Done { .. } => format!(
            "{} v{} TransferSent, {} v{} TransferReceived, one transaction",
            bank::stream_of(&request.from),
            bank::load(client, &request.from).await?.version,
            bank::stream_of(&request.to),
            bank::load(client, &request.to).await?.version,
        ),
        TransferOutcome::Rejected { reason } => format!("rejected: {reason}; nothing written"),
        other => return Err(LabError::Script(format!("the reference transfer ended {other:?}"))),
    })
}

pub async fn run(server: &Server) -> Result<LabReport, LabError> {
    let mut client = server.connect().await?;
    store::install(&client).await.map_err(LabError::db("installing the reference store"))?;
    client.batch_execute(bank::BANK_SQL).await.map_err(LabError::db("installing the bank's helpers"))?;
    client
        .batch_execute(bank::REFERENCE_TRANSFER_SQL)
        .await
        .map_err(LabError::db("installing the reference transfer"))?;
    let mut steps = Vec::new();
    let mut step = |who: &str, command: String, outcome: String| {
        steps.push(Step { step: steps.len() + 1, who: who.into(), command, outcome });
    };

    for (n, name) in ACCOUNTS.iter().enumerate() {
        let opened = NewEvent::new(id(10 + n as u128), "AccountOpened", json!({ "owner": name, "currency": "EUR" }));
        let v = store::append(&client, &bank::stream_of(name), ExpectedVersion::NoStream, &[opened]).await?;
        step(
            "teller",
            format!("open an account for {name} (expected: no stream)"),
            format!("{} v{v} AccountOpened", bank::stream_of(name)),
        );
    }
    for (n, (name, cents)) in [("alice", 10_000), ("bob", 5_000), ("carol", 2_000)].into_iter().enumerate() {
        let deposit = NewEvent::new(id(20 + n as u128), "Deposited", json!({ "amount_cents": cents }));
        let v = store::append(&client, &bank::stream_of(name), ExpectedVersion::Exact(1), &[deposit]).await?;
        step(
            "teller",
            format!("deposit {} to {name} (expected: v1)", money(cents)),
            format!("{} v{v} Deposited", bank::stream_of(name)),
        );
    }

    let first = request(30, "alice", "bob", 3_000);
    let outcome = bank::transfer(&mut client, &first).await?;
    let said = describe(&client, &outcome, &first).await?;
    step("teller", format!("transfer {} alice -> bob", money(first.amount_cents)), said);

    let overdraft = request(31, "carol", "alice", 5_000);
    let outcome = bank::transfer(&mut client, &overdraft).await?;
    if !matches!(outcome, TransferOutcome::Rejected { .. }) {
        return Err(LabError::Script(format!("the script expects the overdraft to be rejected, but: {outcome:?}")));
    }
    let said = describe(&client, &outcome, &overdraft).await?;
    step("teller", format!("transfer {} carol -> alice", money(overdraft.amount_cents)), said);

    // Two tellers load bob's account at the same moment and decide on the same version.
    let teller_2_client = server.connect().await?;
    let seen_1 = bank::load(&client, "bob").await?;
    step(
        "teller 1",
        "load bob".into(),
        format!("balance {} at version {}", money(seen_1.balance_cents), seen_1.version),
    );
    let seen_2 = bank::load(&teller_2_client, "bob").await?;
    step(
        "teller 2",
        "load bob".into(),
        format!("balance {} at version {}", money(seen_2.balance_cents), seen_2.version),
    );
    let withdrawal = NewEvent::new(id(40), "Withdrawn", json!({ "amount_cents": 6_000 }));
    let v = store::append(&client, "account-bob", ExpectedVersion::Exact(seen_1.version), &[withdrawal]).await?;
    step(
        "teller 1",
        format!("withdraw 60.00 from bob (expected: v{})", seen_1.version),
        format!("account-bob v{v} Withdrawn"),
    );
    let racing = request(41, "bob", "carol", 4_000);
    // Teller 2's debit, decided on version 3, as the transfer would append it.
    let debit = NewEvent::new(
        id(42),
        "TransferSent",
        json!({ "transfer_id": racing.transfer_id, "to": racing.to, "amount_cents": racing.amount_cents }),
    );
    match store::append(&teller_2_client, "account-bob", ExpectedVersion::Exact(seen_2.version), &[debit]).await {
        Err(conflict @ StoreError::VersionConflict { .. }) => {
            step(
                "teller 2",
                format!("transfer 40.00 bob -> carol (expected: v{})", seen_2.version),
                format!("{conflict}"),
            );
        }
        other => {
            return Err(LabError::Script(format!("the script expects a version conflict for teller 2, but: {other:?}")))
        }
    }
    let mut teller_2 = teller_2_client;
    let outcome = bank::transfer(&mut teller_2, &racing).await?;
    let said = describe(&teller_2, &outcome, &racing).await?;
    step("teller 2", "load bob again and decide again".into(), said);

    let last = request(50, "alice", "carol", 2_500);
    let outcome = bank::transfer(&mut client, &last).await?;
    let said = describe(&client, &outcome, &last).await?;
    step("teller", format!("transfer {} alice -> carol", money(last.amount_cents)), said);

    let replay = bank::replay(&client).await?;
    let mut streams = BTreeMap::new();
    for e in &replay.events {
        let s = streams.entry(e.stream_id.clone()).or_insert(StreamSummary { events: 0, version: 0 });
        s.events += 1;
        s.version = s.version.max(e.version);
    }
    let mut loaded_balances = BTreeMap::new();
    for name in ACCOUNTS {
        loaded_balances.insert(name.to_string(), bank::load(&client, name).await?.balance_cents);
    }
    let replay_matches = loaded_balances == replay.balances;
    let replayed = replay
        .events
        .iter()
        .map(|e| ReplayedEvent {
            stream_id: e.stream_id.clone(),
            version: e.version,
            event_type: e.event_type.clone(),
            data: e.data.clone(),
        })
        .collect();
    Ok(LabReport {
        lab: "schema-sketch",
        steps,
        streams,
        balances: replay.balances,
        loaded_balances,
        replay: replayed,
        replay_matches,
    })
}

impl LabReport {
    fn render(&self) -> String {
        let mut out = String::from("A day at the bank, on the reference store (a fresh PostgreSQL)\n\n");
        for s in &self.steps {
            out += &format!("{:>2}  {:<8}  {:<48}  {}\n", s.step, s.who, s.command, s.outcome);
        }
        out += "\nReplay: every event from the start, behind the watermark, in checkpoint order\n\n";
        for (n, e) in self.replay.iter().enumerate() {
            let amount = e.data["amount_cents"].as_i64().map(money).unwrap_or_default();
            out += &format!("{:>3}  {:<14} v{}  {:<17} {}\n", n + 1, e.stream_id, e.version, e.event_type, amount);
        }
        out += &format!("\n{:<16} {:>6} {:>8}\n", "stream", "events", "version");
        for (stream, s) in &self.streams {
            out += &format!("{stream:<16} {:>6} {:>8}\n", s.events, s.version);
        }
        out += &format!("\n{:<8} {:>16} {:>22}\n", "account", "balance (replay)", "balance (its stream)");
        for (name, cents) in &self.balances {
            let loaded = self.loaded_balances.get(name).copied().map(money).unwrap_or_default();
            out += &format!("{name:<8} {:>16} {:>22}\n", money(*cents), loaded);
        }
        let total: i64 = self.balances.values().sum();
        let overdrawn = self.balances.values().filter(|c| **c < 0).count();
        out += &format!(
            "\n{}: {} held in all; {}.\n",
            if self.replay_matches {
                "The replay matches every stream"
            } else {
                "THE REPLAY DOES NOT MATCH THE STREAMS"
            },
            money(total),
            if overdrawn == 0 { "no balance below 0.00".to_string() } else { format!("{overdrawn} OVERDRAWN") }
        );
        out
    }
}

impl std::fmt::Display for LabReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

impl crate::lab::Report for LabReport {}
