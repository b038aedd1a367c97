//! The bank: one stream per account (`account-<name>`), amounts in cents, and one rule: a
//! balance never goes below zero.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio_postgres::{Client, GenericClient};
use uuid::Uuid;

use crate::error::LabError;
use crate::store::{self, RecordedEvent, StoreError};

pub fn stream_of(account: &str) -> String {
    format!("account-{account}")
}

/// "12.50" for 1250 cents.
pub fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

/// An account as its stream says it is, and the version that state was read at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Account {
    pub name: String,
    pub opened: bool,
    pub balance_cents: i64,
    pub version: i64,
}

impl Account {
    /// Folds one event into the account: the same code serves loading and replaying.
    pub fn apply(&mut self, event_type: &str, data: &serde_json::Value) {
        let amount = data["amount_cents"].as_i64().unwrap_or(0);
        match event_type {
            "AccountOpened" => self.opened = true,
            "Deposited" | "TransferReceived" => self.balance_cents += amount,
            "Withdrawn" | "TransferSent" => self.balance_cents -= amount,
            _ => {}
        }
    }
}

/// Loads an account by reading its stream from version 1.
pub async fn load(client: &impl GenericClient, name: &str) -> Result<Account, StoreError> {
    let mut account = Account { name: name.to_string(), ..Account::default() };
    for e in store::read_stream(client, &stream_of(name), 1, i64::MAX).await? {
        account.apply(&e.event_type, &e.data);
        account.version = e.version;
    }
    Ok(account)
}

/// A request to move money; its id makes the events' ids, so a resent request is the same events.
#[derive(Clone, Debug, Serialize)]
pub struct TransferRequest {
    pub transfer_id: Uuid,
    pub from: String,
    pub to: String,
    pub amount_cents: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum TransferOutcome {
    /// Both sides written, in `attempts` calls (a version conflict costs one more).
    Done { attempts: u32 },
    /// The function said no (its reason); nothing was written.
    Rejected { reason: String },
    /// Still conflicting after [`MAX_ATTEMPTS`] calls: the account is too busy.
    GaveUp { attempts: u32 },
    /// The call failed with another error (the server's message); nothing was written.
    Failed { error: String, sqlstate: String },
}

/// The bank's helpers (account_state, load_account, transfer_event_id), installed before any
/// transfer function.
pub const BANK_SQL: &str = include_str!("bank.sql");
/// The reference transfer, for `labs run schema-sketch`: the exercise's solution.
pub const REFERENCE_TRANSFER_SQL: &str = include_str!("../../../exercises/03-schema-sketch/transfer.solution.sql");

/// A conflict means another writer moved first; after this many calls, the account is too busy.
pub const MAX_ATTEMPTS: u32 = 20;

/// How long to wait before attempt `attempt` + 1: a few milliseconds, doubling, with jitter from
/// the transfer id, so two callers that keep colliding stop retrying in lockstep.
fn backoff(request: &TransferRequest, attempt: u32) -> std::time::Duration {
    let ceiling_ms = 1u64 << attempt.min(7);
    let jitter =
        (request.transfer_id.as_u128() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(attempt) % ceiling_ms;
    std::time::Duration::from_millis(1 + jitter)
}

/// Calls the database's `transfer` function as a service would: each call in its own
/// transaction; on ES409 (wrong expected version) roll back, wait, and call again, a bounded
/// number of times. Any other error ends the transfer ([`TransferOutcome::Failed`]).
pub async fn transfer(client: &mut Client, request: &TransferRequest) -> Result<TransferOutcome, LabError> {
    for attempt in 1..=MAX_ATTEMPTS {
        let tx = client.transaction().await.map_err(LabError::db("BEGIN"))?;
        let called = tx
            .query_one(
                "SELECT transfer($1, $2, $3, $4)",
                &[&request.transfer_id, &request.from, &request.to, &request.amount_cents],
            )
            .await;
        match called {
            Ok(row) => {
                let reason: Option<String> = row.get(0);
                return match reason {
                    None => {
                        tx.commit().await.map_err(LabError::db("COMMIT"))?;
                        Ok(TransferOutcome::Done { attempts: attempt })
                    }
                    Some(reason) => Ok(TransferOutcome::Rejected { reason }),
                };
            }
            Err(e) if e.code().map(|c| c.code()) == Some(store::SQLSTATE_VERSION_CONFLICT) => {
                drop(tx);
                tokio::time::sleep(backoff(request, attempt)).await;
            }
            Err(e) => {
                let sqlstate = e.code().map_or(String::new(), |c| c.code().to_string());
                return Ok(TransferOutcome::Failed { error: store::server_message(&e), sqlstate });
            }
        }
    }
    Ok(TransferOutcome::GaveUp { attempts: MAX_ATTEMPTS })
}

/// Balances rebuilt from every event, read behind the watermark from the start in checkpoint
/// order: what a new projection, or a rebuilt one, sees.
#[derive(Clone, Debug, Serialize)]
pub struct Replay {
    pub events: Vec<RecordedEvent>,
    pub balances: BTreeMap<String, i64>,
}

pub async fn replay(client: &impl GenericClient) -> Result<Replay, StoreError> {
    let mut events = Vec::new();
    let mut after = store::Checkpoint::START;
    loop {
        let batch = store::read_all_after(client, after, 100).await?;
        let Some(last) = batch.last() else { break };
        after = last.checkpoint;
        events.extend(batch);
    }
    let mut accounts: BTreeMap<String, Account> = BTreeMap::new();
    for e in &events {
        if let Some(name) = e.stream_id.strip_prefix("account-") {
            accounts.entry(name.to_string()).or_default().apply(&e.event_type, &e.data);
        }
    }
    let balances = accounts.into_iter().map(|(name, a)| (name, a.balance_cents)).collect();
    Ok(Replay { events, balances })
}
