//! `labs check schema-sketch`: the transfer handler against a real server. A race is scripted
//! so an unsafe handler fails on every run, then transfers run concurrently for real.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use tokio_postgres::Client;
use uuid::Uuid;

use super::bank::{self, money, BankError, TransferOutcome, TransferRequest};
use super::scenario::LabError;
use super::{exercise, solution};
use crate::pg::Server;
use crate::rng::Rng;
use crate::store::{self, ExpectedVersion, NewEvent};

/// Which transfer handler to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Handler {
    Exercise,
    Solution,
}

impl Handler {
    async fn transfer(self, client: &mut Client, request: &TransferRequest) -> Result<TransferOutcome, BankError> {
        match self {
            Handler::Exercise => exercise::transfer(client, request).await,
            Handler::Solution => solution::transfer(client, request).await,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub activity: &'static str,
    pub handler: Handler,
    pub passed: bool,
    pub checks: Vec<CheckResult>,
}

impl CheckReport {
    pub fn to_text(&self) -> String {
        let mut out = format!("labs check schema-sketch ({:?} transfer)\n\n", self.handler).to_lowercase();
        for c in &self.checks {
            out += &format!("{}  {}\n      {}\n", if c.passed { "PASS" } else { "FAIL" }, c.name, c.detail);
        }
        out += if self.passed {
            "\nAll checks pass: the transfer keeps the overdraft rule under concurrency.\n"
        } else {
            "\nNot yet: change labs/src/schema_sketch/exercise.rs (the hints are at its top) and run the check again.\n"
        };
        out
    }
}

/// A transfer's outcome in a few words, for the report.
fn said(outcome: &Result<TransferOutcome, BankError>) -> String {
    match outcome {
        Ok(TransferOutcome::Done { attempts, .. }) => format!("done, in {attempts} attempt(s)"),
        Ok(TransferOutcome::Rejected { reason }) => format!("rejected ({reason})"),
        Err(e) => format!("error: {e}"),
    }
}

fn id(space: u128, n: u128) -> Uuid {
    Uuid::from_u128(0xc4ec_0000_0000_4000_8000_0000_0000_0000 | space << 32 | n << 8)
}

async fn open(client: &Client, name: &str, cents: i64, space: u128) -> Result<(), LabError> {
    let events = [
        NewEvent::new(id(space, 1), "AccountOpened", json!({ "owner": name, "currency": "EUR" })),
        NewEvent::new(id(space, 2), "Deposited", json!({ "amount_cents": cents })),
    ];
    store::append(client, &bank::stream_of(name), ExpectedVersion::NoStream, &events).await?;
    Ok(())
}

pub async fn check(server: &Server, handler: Handler) -> Result<CheckReport, LabError> {
    let client = server.connect().await?;
    store::install(&client).await.map_err(LabError::Install)?;
    let checks = vec![
        scripted_race(server, handler).await?,
        unknown_account(server, handler).await?,
        concurrent(server, handler).await?,
    ];
    let passed = checks.iter().all(|c| c.passed);
    Ok(CheckReport { activity: "schema-sketch", handler, passed, checks })
}

/// A withdrawal from alice is in flight (appended, not committed) while the transfer loads
/// alice and decides; it commits while the transfer waits to append. The transfer decided on a
/// balance that is gone: it must notice and decide again.
async fn scripted_race(server: &Server, handler: Handler) -> Result<CheckResult, LabError> {
    const NAME: &str = "a withdrawal commits while the transfer decides: no overdraft";
    let setup = server.connect().await?;
    open(&setup, "alice", 10_000, 1).await?;
    open(&setup, "bob", 0, 2).await?;
    let mut teller = server.connect().await?;
    let tx = teller.transaction().await.map_err(BankError::from)?;
    let withdrawal = NewEvent::new(id(3, 1), "Withdrawn", json!({ "amount_cents": 8_000 }));
    store::append(&tx, "account-alice", ExpectedVersion::Exact(2), &[withdrawal]).await?;

    let mut attendee = server.connect().await?;
    let pid: i32 = attendee.query_one("SELECT pg_backend_pid()", &[]).await.map_err(BankError::from)?.get(0);
    let request =
        TransferRequest { transfer_id: id(3, 2), from: "alice".into(), to: "bob".into(), amount_cents: 8_000 };
    let transfer = tokio::spawn(async move {
        let outcome = handler.transfer(&mut attendee, &request).await;
        (outcome, request)
    });
    // Commit once the transfer waits for alice's stream (or after 5 s, if it never appends).
    let started = Instant::now();
    let mut waited = false;
    while started.elapsed() < Duration::from_secs(5) && !transfer.is_finished() {
        let waiting: bool = setup
            .query_one(
                "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .map_err(BankError::from)?
            .get(0);
        if waiting {
            waited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tx.commit().await.map_err(BankError::from)?;
    let (outcome, _) = tokio::time::timeout(Duration::from_secs(10), transfer)
        .await
        .map_err(|_| LabError::Script {
            expected: "the transfer to finish within 10 s of the withdrawal's commit".into(),
            got: "it did not".into(),
        })?
        .expect("transfer task panicked");
    let alice = bank::load(&setup, "alice").await?;
    let bob = bank::load(&setup, "bob").await?;
    let outcome = said(&outcome);
    let passed = alice.balance_cents >= 0 && alice.balance_cents + bob.balance_cents == 2_000;
    let detail = if passed {
        format!(
            "alice {} and bob {} after the race; the transfer said {outcome}",
            money(alice.balance_cents),
            money(bob.balance_cents)
        )
    } else {
        format!(
            "alice is at {} (bob {}): the transfer checked the overdraft rule on 100.00, but 80.00 had been withdrawn before it appended{}",
            money(alice.balance_cents),
            money(bob.balance_cents),
            if waited { "" } else { " (it never waited for alice's stream)" }
        )
    };
    Ok(CheckResult { name: NAME.into(), passed, detail })
}

/// To an account nobody opened: rejected, and nothing written anywhere.
async fn unknown_account(server: &Server, handler: Handler) -> Result<CheckResult, LabError> {
    const NAME: &str = "a transfer to an account that does not exist: rejected, nothing written";
    let mut client = server.connect().await?;
    open(&client, "dave", 5_000, 4).await?;
    let request =
        TransferRequest { transfer_id: id(4, 9), from: "dave".into(), to: "nobody".into(), amount_cents: 1_000 };
    let outcome = handler.transfer(&mut client, &request).await;
    let dave = bank::load(&client, "dave").await?;
    let nobody = bank::load(&client, "nobody").await?;
    let passed = matches!(outcome, Ok(TransferOutcome::Rejected { .. })) && dave.version == 2 && nobody.version == 0;
    let detail = format!(
        "the transfer said {}; dave's stream is at v{}, nobody's at v{}",
        said(&outcome),
        dave.version,
        nobody.version
    );
    Ok(CheckResult { name: NAME.into(), passed, detail })
}

/// Four tellers move money at random between four accounts at once.
async fn concurrent(server: &Server, handler: Handler) -> Result<CheckResult, LabError> {
    const TELLERS: u64 = 4;
    const TRANSFERS: u128 = 25;
    let names = ["erin", "frank", "grace", "heidi"];
    let setup = server.connect().await?;
    for (n, name) in names.iter().enumerate() {
        open(&setup, name, 10_000, 10 + n as u128).await?;
    }
    let mut tasks = Vec::new();
    for t in 0..TELLERS {
        let mut client = server.connect().await?;
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(t + 1);
            let mut outcomes = Vec::new();
            for n in 0..TRANSFERS {
                let from = names[rng.below(4)];
                let to = names[(names.iter().position(|x| *x == from).unwrap_or(0) + 1 + rng.below(3)) % 4];
                let request = TransferRequest {
                    transfer_id: id(100 + t as u128, n),
                    from: from.into(),
                    to: to.into(),
                    amount_cents: 1_000 + rng.below(5_000) as i64,
                };
                outcomes.push((
                    request.transfer_id,
                    handler.transfer(&mut client, &request).await.map_err(|e| e.to_string()),
                ));
            }
            outcomes
        }));
    }
    let mut done: HashMap<Uuid, bool> = HashMap::new();
    let mut errors = Vec::new();
    let mut most_attempts = 0;
    for task in tasks {
        for (transfer_id, outcome) in task.await.expect("teller task panicked") {
            match outcome {
                Ok(TransferOutcome::Done { attempts, .. }) => {
                    done.insert(transfer_id, true);
                    most_attempts = most_attempts.max(attempts);
                }
                Ok(TransferOutcome::Rejected { .. }) => {
                    done.insert(transfer_id, false);
                }
                Err(e) => errors.push(e),
            }
        }
    }
    let mut balances = Vec::new();
    let mut sent: HashMap<Uuid, u32> = HashMap::new();
    let mut received: HashMap<Uuid, u32> = HashMap::new();
    for name in names {
        let account = bank::load(&setup, name).await?;
        balances.push((name, account.balance_cents));
        for e in store::read_stream(&setup, &bank::stream_of(name), 1, i64::MAX).await? {
            let transfer_id = e.data["transfer_id"].as_str().and_then(|s| s.parse::<Uuid>().ok());
            match (e.event_type.as_str(), transfer_id) {
                ("TransferSent", Some(t)) => *sent.entry(t).or_default() += 1,
                ("TransferReceived", Some(t)) => *received.entry(t).or_default() += 1,
                _ => {}
            }
        }
    }
    let total: i64 = balances.iter().map(|b| b.1).sum();
    let overdrawn: Vec<String> =
        balances.iter().filter(|b| b.1 < 0).map(|b| format!("{} at {}", b.0, money(b.1))).collect();
    let unpaired =
        sent.keys().chain(received.keys()).filter(|t| sent.get(*t) != Some(&1) || received.get(*t) != Some(&1)).count();
    let unreported = sent.keys().filter(|t| done.get(*t) != Some(&true)).count();
    let name = format!(
        "{TELLERS} tellers, {} transfers at once: money kept, no overdraft, both sides of every transfer",
        TELLERS as u128 * TRANSFERS
    );
    let mut problems = Vec::new();
    if total != 40_000 {
        problems.push(format!("the four accounts hold {} instead of 400.00", money(total)));
    }
    if !overdrawn.is_empty() {
        problems.push(format!("overdrawn: {}", overdrawn.join(", ")));
    }
    if unpaired > 0 {
        problems.push(format!("{unpaired} transfers have a debit without a credit, or one written twice"));
    }
    if unreported > 0 {
        problems.push(format!("{unreported} transfers are written but were not reported done"));
    }
    if !errors.is_empty() {
        problems.push(format!("{} transfers failed, e.g. {}", errors.len(), errors[0]));
    }
    let completed = done.values().filter(|d| **d).count();
    Ok(CheckResult {
        name,
        passed: problems.is_empty(),
        detail: if problems.is_empty() {
            format!(
                "400.00 kept across the four accounts; {completed} transfers done (the busiest took {most_attempts} attempt(s)), the others rejected by the overdraft rule"
            )
        } else {
            problems.join("; ")
        },
    })
}
