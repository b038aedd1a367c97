//! `labs check schema-sketch`: the attendee's `transfer` function against a real server.
//!
//! The races are scripted, not left to chance, so each plausible half-fix fails on every run:
//! - debit appended with expected version "any" (the exercise as given): a withdrawal that
//!   commits while the transfer decides makes it overdraw (`withdrawal-race`);
//! - the conflict caught inside the function and turned into a refusal: a deposit that commits
//!   while the transfer decides makes it refuse a transfer the sender can afford
//!   (`conflict-retried`);
//! - the two streams locked one at a time, in request order: two opposite transfers deadlock
//!   (`opposite-transfers`);
//! - no lock_streams before the two appends: the store refuses the second (ES428, its order
//!   rule), so no transfer goes through (`plain-transfer`);
//! - no overdraft rule, or no check that both accounts exist (`overdraft-rule`,
//!   `unknown-account`);
//!
//! Then tellers transfer at random, at once, and money must be kept (`concurrent-tellers`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_postgres::Client;
use uuid::Uuid;

use super::bank::{self, money, TransferOutcome, TransferRequest};
use crate::error::LabError;
use crate::lab::{Check, CheckReport, ExerciseFile};
use crate::pg::Server;
use crate::rng::Rng;
use crate::store::{self, ExpectedVersion, NewEvent};

/// A transfer's outcome in a few words, for the report.
fn said(outcome: &TransferOutcome) -> String {
    match outcome {
        TransferOutcome::Done { attempts } => format!("done, in {attempts} call(s)"),
        TransferOutcome::Rejected { reason } => format!("refused ({reason})"),
        TransferOutcome::GaveUp { attempts } => format!("still conflicting after {attempts} calls"),
        TransferOutcome::Failed { error, .. } => format!("failed: {error}"),
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

fn request(transfer_id: Uuid, from: &str, to: &str, amount_cents: i64) -> TransferRequest {
    TransferRequest { transfer_id, from: from.into(), to: to.into(), amount_cents }
}

/// Loads the store, the bank's helpers and the attendee's file into the server's database.
/// A file that does not load is the first failed check, with its line and column.
async fn install(client: &Client, file: &ExerciseFile) -> Result<Option<Check>, LabError> {
    store::install(client).await.map_err(LabError::db("installing the reference store"))?;
    client.batch_execute(bank::BANK_SQL).await.map_err(LabError::db("installing the bank's helpers"))?;
    if let Err(e) = client.batch_execute(&file.sql).await {
        return Ok(Some(Check::new("loads", format!("{} loads", file.shown), false, file.locate(&e, 0))));
    }
    let defined: bool = client
        .query_one("SELECT to_regprocedure('transfer(uuid,text,text,bigint)') IS NOT NULL", &[])
        .await
        .map_err(LabError::db("looking for transfer()"))?
        .get(0);
    if !defined {
        return Ok(Some(Check::new(
            "loads",
            format!("{} loads", file.shown),
            false,
            "it loads, but defines no transfer(uuid, text, text, bigint): keep the signature of the exercise",
        )));
    }
    Ok(None)
}

pub async fn check(server: &Server, file: &ExerciseFile) -> Result<CheckReport, LabError> {
    let client = server.connect().await?;
    let checks = match install(&client, file).await? {
        Some(failed) => vec![failed],
        None => vec![
            plain_transfer(server).await?,
            overdraft_rule(server).await?,
            unknown_account(server).await?,
            withdrawal_race(server).await?,
            conflict_retried(server).await?,
            opposite_transfers(server).await?,
            concurrent_tellers(server).await?,
        ],
    };
    Ok(CheckReport::new(
        "schema-sketch",
        file,
        checks,
        "the transfer keeps the overdraft rule under concurrency, retries conflicts, and cannot deadlock.",
    ))
}

/// Waits until the session `pid` waits for a lock (a stream's), or the task ends, for up to 5 s.
async fn wait_until_blocked(
    setup: &Client,
    pid: i32,
    task: &tokio::task::JoinHandle<impl Sized>,
) -> Result<bool, LabError> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) && !task.is_finished() {
        let waiting: bool = setup
            .query_one(
                "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .map_err(LabError::db("watching the transfer's session"))?
            .get(0);
        if waiting {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(false)
}

async fn pid_of(client: &Client) -> Result<i32, LabError> {
    Ok(client.query_one("SELECT pg_backend_pid()", &[]).await.map_err(LabError::db("pg_backend_pid()"))?.get(0))
}

/// Runs a transfer on its own session in the background.
async fn spawn_transfer(
    server: &Server,
    request: TransferRequest,
) -> Result<(i32, tokio::task::JoinHandle<Result<TransferOutcome, LabError>>), LabError> {
    let mut client = server.connect().await?;
    // Deadlocks are found after deadlock_timeout (1 s by default): sooner here, where one is
    // expected. Only superusers may change it; elsewhere the default stays.
    let _ = client.batch_execute("SET deadlock_timeout = '200ms'").await;
    let pid = pid_of(&client).await?;
    Ok((pid, tokio::spawn(async move { bank::transfer(&mut client, &request).await })))
}

async fn finished(
    task: tokio::task::JoinHandle<Result<TransferOutcome, LabError>>,
) -> Result<TransferOutcome, LabError> {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .map_err(|_| {
            LabError::Exercise("a transfer did not finish within 10 s of the last commit it waited for".into())
        })?
        .map_err(LabError::from)?
}

/// A transfer the sender can pay, nothing else running: done in one call, both sides written.
async fn plain_transfer(server: &Server) -> Result<Check, LabError> {
    let mut client = server.connect().await?;
    open(&client, "olga", 5_000, 20).await?;
    open(&client, "pete", 0, 21).await?;
    let outcome = bank::transfer(&mut client, &request(id(22, 1), "olga", "pete", 2_000)).await?;
    let olga = bank::load(&client, "olga").await?;
    let pete = bank::load(&client, "pete").await?;
    let passed = matches!(outcome, TransferOutcome::Done { attempts: 1 })
        && (olga.balance_cents, pete.balance_cents) == (3_000, 2_000)
        && (olga.version, pete.version) == (3, 3);
    let detail = match &outcome {
        TransferOutcome::Failed { sqlstate, error } if sqlstate == store::SQLSTATE_STREAM_NOT_LOCKED => format!(
            "the transfer failed: {error}. A transaction that appends to two streams takes both locks first: \
             PERFORM lock_streams(ARRAY['account-' || p_from, 'account-' || p_to]) before the first append"
        ),
        _ => format!(
            "the transfer said {}; olga holds {} (v{}), pete {} (v{})",
            said(&outcome),
            money(olga.balance_cents),
            olga.version,
            money(pete.balance_cents),
            pete.version
        ),
    };
    Ok(Check::new(
        "plain-transfer",
        "20.00 from an account holding 50.00, nothing else running: both sides written",
        passed,
        detail,
    ))
}

/// A transfer larger than the balance: refused, nothing written.
async fn overdraft_rule(server: &Server) -> Result<Check, LabError> {
    let mut client = server.connect().await?;
    open(&client, "ivan", 1_000, 30).await?;
    open(&client, "judy", 0, 31).await?;
    let outcome = bank::transfer(&mut client, &request(id(32, 1), "ivan", "judy", 1_500)).await?;
    let ivan = bank::load(&client, "ivan").await?;
    let judy = bank::load(&client, "judy").await?;
    let passed = matches!(outcome, TransferOutcome::Rejected { .. }) && ivan.version == 2 && judy.version == 2;
    Ok(Check::new(
        "overdraft-rule",
        "15.00 from an account holding 10.00: refused, nothing written",
        passed,
        format!(
            "the transfer said {}; ivan's stream is at v{}, judy's at v{}",
            said(&outcome),
            ivan.version,
            judy.version
        ),
    ))
}

/// To an account nobody opened: refused, and nothing written anywhere.
async fn unknown_account(server: &Server) -> Result<Check, LabError> {
    let mut client = server.connect().await?;
    open(&client, "dave", 5_000, 4).await?;
    let outcome = bank::transfer(&mut client, &request(id(4, 9), "dave", "nobody", 1_000)).await?;
    let dave = bank::load(&client, "dave").await?;
    let nobody = bank::load(&client, "nobody").await?;
    let passed = matches!(outcome, TransferOutcome::Rejected { .. }) && dave.version == 2 && nobody.version == 0;
    Ok(Check::new(
        "unknown-account",
        "a transfer to an account that does not exist: refused, nothing written",
        passed,
        format!(
            "the transfer said {}; dave's stream is at v{}, nobody's at v{}",
            said(&outcome),
            dave.version,
            nobody.version
        ),
    ))
}

/// A withdrawal from alice is in flight (appended, not committed) while the transfer loads
/// alice and decides; it commits while the transfer waits to append. The transfer decided on a
/// balance that is gone: it must notice (ES409) and decide again.
async fn withdrawal_race(server: &Server) -> Result<Check, LabError> {
    let setup = server.connect().await?;
    open(&setup, "alice", 10_000, 1).await?;
    open(&setup, "bob", 0, 2).await?;
    let mut teller = server.connect().await?;
    let tx = teller.transaction().await.map_err(LabError::db("the teller's BEGIN"))?;
    let withdrawal = NewEvent::new(id(3, 1), "Withdrawn", json!({ "amount_cents": 8_000 }));
    store::append(&tx, "account-alice", ExpectedVersion::Exact(2), &[withdrawal]).await?;
    let (pid, transfer) = spawn_transfer(server, request(id(3, 2), "alice", "bob", 8_000)).await?;
    let waited = wait_until_blocked(&setup, pid, &transfer).await?;
    tx.commit().await.map_err(LabError::db("the teller's COMMIT"))?;
    let outcome = finished(transfer).await?;
    let alice = bank::load(&setup, "alice").await?;
    let bob = bank::load(&setup, "bob").await?;
    let passed = alice.balance_cents >= 0 && alice.balance_cents + bob.balance_cents == 2_000;
    let detail = if passed {
        format!(
            "alice {} and bob {} after the race; the transfer said {}",
            money(alice.balance_cents),
            money(bob.balance_cents),
            said(&outcome)
        )
    } else {
        format!(
            "alice is at {} (bob {}): the transfer checked the overdraft rule on 100.00, but 80.00 had been \
             withdrawn before its debit was written{}. The debit must expect the version the rule was checked at",
            money(alice.balance_cents),
            money(bob.balance_cents),
            if waited { "" } else { " (it never waited for alice's stream)" }
        )
    };
    Ok(Check::new("withdrawal-race", "a withdrawal commits while the transfer decides: no overdraft", passed, detail))
}

/// A deposit to carol is in flight while a transfer from carol decides; it commits while the
/// transfer waits. The transfer's debit expected the old version, so it conflicts; called again,
/// it must go through: carol can afford it. A function that turns the conflict into a refusal
/// refuses a transfer the account could pay.
async fn conflict_retried(server: &Server) -> Result<Check, LabError> {
    let setup = server.connect().await?;
    open(&setup, "carol", 5_000, 5).await?;
    open(&setup, "erin", 0, 6).await?;
    let mut teller = server.connect().await?;
    let tx = teller.transaction().await.map_err(LabError::db("the teller's BEGIN"))?;
    let deposit = NewEvent::new(id(7, 1), "Deposited", json!({ "amount_cents": 5_000 }));
    store::append(&tx, "account-carol", ExpectedVersion::Exact(2), &[deposit]).await?;
    let (pid, transfer) = spawn_transfer(server, request(id(7, 2), "carol", "erin", 3_000)).await?;
    wait_until_blocked(&setup, pid, &transfer).await?;
    tx.commit().await.map_err(LabError::db("the teller's COMMIT"))?;
    let outcome = finished(transfer).await?;
    let erin = bank::load(&setup, "erin").await?;
    let passed = matches!(outcome, TransferOutcome::Done { .. }) && erin.balance_cents == 3_000;
    let detail = match &outcome {
        _ if passed => format!("the transfer said {}; erin holds {}", said(&outcome), money(erin.balance_cents)),
        TransferOutcome::Rejected { reason } => format!(
            "the transfer refused ({reason}) although carol held 100.00 for a 30.00 transfer: a conflict is not a \
             refusal. Let ES409 reach the caller, which calls again and decides on the new balance"
        ),
        other => format!("the transfer said {}; erin holds {}", said(other), money(erin.balance_cents)),
    };
    Ok(Check::new(
        "conflict-retried",
        "a deposit commits while the transfer decides: the transfer still goes through",
        passed,
        detail,
    ))
}

/// Two opposite transfers, grace -> heidi and heidi -> grace, at once. The script holds heidi's
/// stream lock, lets the heidi -> grace transfer queue for it first, then the other; then lets
/// go. Transfers that lock their streams one at a time in request order now hold one lock each
/// and wait for the other's: a deadlock, on every run. With both in one lock_streams call (one
/// fixed order), one simply waits for the other.
async fn opposite_transfers(server: &Server) -> Result<Check, LabError> {
    let setup = server.connect().await?;
    open(&setup, "grace", 10_000, 8).await?;
    open(&setup, "heidi", 10_000, 9).await?;
    let mut holder = server.connect().await?;
    let tx = holder.transaction().await.map_err(LabError::db("BEGIN"))?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtextextended('account-heidi', 0))", &[])
        .await
        .map_err(LabError::db("holding heidi's stream lock"))?;
    let (second_pid, second) = spawn_transfer(server, request(id(8, 3), "heidi", "grace", 1_000)).await?;
    wait_until_blocked(&setup, second_pid, &second).await?;
    let (first_pid, first) = spawn_transfer(server, request(id(8, 4), "grace", "heidi", 2_000)).await?;
    wait_until_blocked(&setup, first_pid, &first).await?;
    tx.commit().await.map_err(LabError::db("letting heidi's stream go"))?;
    let outcomes = [finished(second).await?, finished(first).await?];
    let deadlocked =
        outcomes.iter().any(|o| matches!(o, TransferOutcome::Failed { sqlstate, .. } if sqlstate == "40P01"));
    let passed = outcomes.iter().all(|o| matches!(o, TransferOutcome::Done { .. }));
    let detail = if deadlocked {
        "\"deadlock detected\": each transfer held one stream's lock and waited for the other's. Lock both \
         streams in one call, lock_streams(ARRAY[...both...]), which takes them in one fixed order whatever the \
         direction of the transfer"
            .to_string()
    } else {
        format!("heidi -> grace said {}; grace -> heidi said {}", said(&outcomes[0]), said(&outcomes[1]))
    };
    Ok(Check::new("opposite-transfers", "two opposite transfers at once: both go through, no deadlock", passed, detail))
}

/// Four tellers move money at random between four accounts at once.
async fn concurrent_tellers(server: &Server) -> Result<Check, LabError> {
    const TELLERS: u64 = 4;
    const TRANSFERS: u128 = 25;
    let names = ["kim", "lou", "mia", "ned"];
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
                let request = request(id(100 + t as u128, n), from, to, 1_000 + rng.below(5_000) as i64);
                outcomes.push((request.transfer_id, bank::transfer(&mut client, &request).await?));
            }
            Ok::<_, LabError>(outcomes)
        }));
    }
    let mut done: HashMap<Uuid, bool> = HashMap::new();
    let mut failures = Vec::new();
    let mut most_attempts = 0;
    for task in tasks {
        for (transfer_id, outcome) in task.await?? {
            match outcome {
                TransferOutcome::Done { attempts } => {
                    done.insert(transfer_id, true);
                    most_attempts = most_attempts.max(attempts);
                }
                TransferOutcome::Rejected { .. } => {
                    done.insert(transfer_id, false);
                }
                other => failures.push(said(&other)),
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
    if !failures.is_empty() {
        problems.push(format!("{} transfers did not finish, e.g. {}", failures.len(), failures[0]));
    }
    let completed = done.values().filter(|d| **d).count();
    Ok(Check::new(
        "concurrent-tellers",
        format!(
            "{TELLERS} tellers, {} transfers at once: money kept, no overdraft, both sides of every transfer",
            TELLERS as u128 * TRANSFERS
        ),
        problems.is_empty(),
        if problems.is_empty() {
            format!(
                "400.00 kept across the four accounts; {completed} transfers done (the busiest took {most_attempts} \
                 call(s)), the others refused by the overdraft rule"
            )
        } else {
            problems.join("\n")
        },
    ))
}
