//! `labs run schema-sketch`: a scripted day at the bank on the reference store, then a replay.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::bank::{self, money, BankError, TransferOutcome, TransferRequest};
use super::solution;
use crate::pg::{ProviderError, Server};
use crate::store::{self, ExpectedVersion, NewEvent, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bank(#[from] BankError),
    #[error("installing the reference store: {0}")]
    Install(tokio_postgres::Error),
    #[error("the script expected {expected}, but {got}")]
    Script { expected: String, got: String },
}

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
    pub steps: Vec<Step>,
    /// Stream id -> event count and version.
    pub streams: BTreeMap<String, StreamSummary>,
    /// Account -> balance in cents, from the replay.
    pub balances: BTreeMap<String, i64>,
    /// Account -> balance in cents, loaded stream by stream.
    pub loaded_balances: BTreeMap<String, i64>,
    pub replay: Vec<ReplayedEvent>,
    pub replay_matches: bool,
}

const ACCOUNTS: [&str; 3] = ["alice", "bob", "carol"];

/// Deterministic ids: the same day gives the same events on every run.
fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x5c4e_7c40_0000_4000_8000_0000_0000_0000 | n << 8)
}

fn request(n: u128, from: &str, to: &str, amount_cents: i64) -> TransferRequest {
    TransferRequest { transfer_id: id(n), from: from.into(), to: to.into(), amount_cents }
}

fn describe(outcome: &TransferOutcome, request: &TransferRequest) -> String {
    match outcome {
        TransferOutcome::Done { from_version, to_version, .. } => format!(
            "{} v{from_version} TransferSent, {} v{to_version} TransferReceived, one transaction",
            bank::stream_of(&request.from),
            bank::stream_of(&request.to)
        ),
        TransferOutcome::Rejected { reason } => format!("rejected: {reason}; nothing written"),
    }
}

pub async fn run(server: &Server) -> Result<LabReport, LabError> {
    let mut client = server.connect().await?;
    store::install(&client).await.map_err(LabError::Install)?;
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
    let outcome = solution::transfer(&mut client, &first).await?;
    step("teller", format!("transfer {} alice -> bob", money(first.amount_cents)), describe(&outcome, &first));

    let overdraft = request(31, "carol", "alice", 5_000);
    let outcome = solution::transfer(&mut client, &overdraft).await?;
    if !matches!(outcome, TransferOutcome::Rejected { .. }) {
        return Err(LabError::Script { expected: "the overdraft to be rejected".into(), got: format!("{outcome:?}") });
    }
    step(
        "teller",
        format!("transfer {} carol -> alice", money(overdraft.amount_cents)),
        describe(&outcome, &overdraft),
    );

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
    let (debit, _) = bank::transfer_events(&racing);
    match store::append(&teller_2_client, "account-bob", ExpectedVersion::Exact(seen_2.version), &[debit]).await {
        Err(conflict @ StoreError::VersionConflict { .. }) => {
            step(
                "teller 2",
                format!("transfer 40.00 bob -> carol (expected: v{})", seen_2.version),
                format!("{conflict}"),
            );
        }
        other => {
            return Err(LabError::Script {
                expected: "a version conflict for teller 2".into(),
                got: format!("{other:?}"),
            })
        }
    }
    let mut teller_2 = teller_2_client;
    let outcome = solution::transfer(&mut teller_2, &racing).await?;
    step("teller 2", "load bob again and decide again".into(), describe(&outcome, &racing));

    let last = request(50, "alice", "carol", 2_500);
    let outcome = solution::transfer(&mut client, &last).await?;
    step("teller", format!("transfer {} alice -> carol", money(last.amount_cents)), describe(&outcome, &last));

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
    pub fn to_text(&self) -> String {
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
