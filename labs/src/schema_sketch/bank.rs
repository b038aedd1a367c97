//! The bank: one stream per account (`account-<name>`), amounts in cents, and one rule: a
//! balance never goes below zero.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::store::{self, NewEvent, RecordedEvent, StoreError};

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
    /// Both sides written, in `attempts` tries (a version conflict costs one more).
    Done { from_version: i64, to_version: i64, attempts: u32 },
    /// The rules said no; nothing was written.
    Rejected { reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("transfer {0}: still conflicting after {1} attempts; the account is too busy, try later")]
    TooManyConflicts(Uuid, u32),
}

/// The rules, on the state the handler loaded: the reason for a rejection, or None.
pub fn check_transfer(from: &Account, to: &Account, request: &TransferRequest) -> Option<String> {
    if request.amount_cents <= 0 {
        return Some(format!("the amount must be positive, not {}", money(request.amount_cents)));
    }
    if !from.opened {
        return Some(format!("there is no account named {}", from.name));
    }
    if !to.opened {
        return Some(format!("there is no account named {}", to.name));
    }
    if from.name == to.name {
        return Some("a transfer needs two different accounts".into());
    }
    if from.balance_cents < request.amount_cents {
        return Some(format!(
            "{} has {}, the overdraft rule forbids going below 0.00",
            from.name,
            money(from.balance_cents)
        ));
    }
    None
}

/// The debit for the sender's stream and the credit for the receiver's, ids from the request.
pub fn transfer_events(request: &TransferRequest) -> (NewEvent, NewEvent) {
    let id = request.transfer_id.as_u128();
    let debit = NewEvent::new(
        Uuid::from_u128(id ^ 1),
        "TransferSent",
        json!({ "transfer_id": request.transfer_id, "to": request.to, "amount_cents": request.amount_cents }),
    );
    let credit = NewEvent::new(
        Uuid::from_u128(id ^ 2),
        "TransferReceived",
        json!({ "transfer_id": request.transfer_id, "from": request.from, "amount_cents": request.amount_cents }),
    );
    (debit, credit)
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
    let mut after: Option<String> = None;
    loop {
        let batch = store::read_all_after(client, after.as_deref(), 100).await?;
        let Some(last) = batch.last() else { break };
        after = Some(last.checkpoint.clone());
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
