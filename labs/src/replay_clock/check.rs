//! `labs check replay-clock`: the attendee's upcaster, snapshot policy and rebuild against a
//! real server, each half-fix defeated by a scripted step on every run:
//! - `upcast-exact`: every legacy payload of the bank, upcast, against the v2 payload the bank
//!   planned (float arithmetic, cents assumed for every currency, a dropped currency);
//! - `snapshot-schema`: the account fold deployed as release 1 (which ignored FeeCharged), a load
//!   that snapshots, then release 2: a snapshot reused across `account_state_version()` serves
//!   release 1's balance;
//! - `snapshot-tail`: a snapshot taken, 30 events appended: the next load must fold just those;
//! - `load-golden`: every account loaded, against the golden balances;
//! - `rebuild-golden` and `switch-readers`: `CALL rebuild_balances()` paused by the script at
//!   its read of `events` (an ACCESS EXCLUSIVE lock the script holds), a read of the live model
//!   at that moment, then a reader looping until the rebuild ends;
//! - `events-untouched`: a digest of the stored events before the file loads and after every
//!   check (an `UPDATE events` migration).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_postgres::Client;

use super::bank::{self, long_stream_id, Bank, Kind, Plan};
use crate::error::LabError;
use crate::lab::{Check, CheckReport, ExerciseFile};
use crate::pg::Server;
use crate::store::{self, ExpectedVersion};

/// The check's bank: small, so the verdict comes in seconds. Two long streams: one for the
/// schema change, one for the snapshot's tail.
pub fn check_plan() -> Plan {
    Plan { seed: 88, accounts: 300, long_streams: vec![SCHEMA_STREAM_LENGTH, TAIL_STREAM_LENGTH], rounds: 4 }
}

const SCHEMA_STREAM_LENGTH: usize = 300;
const TAIL_STREAM_LENGTH: usize = 630;
/// Events of the tail stream held back at load and appended after its first load.
const HELD_BACK: usize = 30;

const DIGEST_SQL: &str = "
    SELECT count(*), coalesce(md5(string_agg(concat_ws('|', position, transaction_id, event_id, stream_id, version,
                                                        type, data::text, metadata::text, recorded_at),
                                              E'\\n' ORDER BY position)), '')
      FROM events WHERE position <= $1";

/// The account fold as deployed now (release 2), from bank.sql.
fn release_2_sql() -> &'static str {
    let start = bank::BANK_SQL.find("-- ANCHOR: release").expect("bank.sql marks the release");
    let end = bank::BANK_SQL.find("-- ANCHOR_END: release").expect("bank.sql marks the release's end");
    &bank::BANK_SQL[start..end]
}

/// Release 1 of the account fold: state version 1, and FeeCharged events ignored (its bug).
fn release_1_sql() -> String {
    let release_2 = release_2_sql();
    let release_1 = release_2
        .replace("$$ SELECT 2 $$", "$$ SELECT 1 $$")
        .replace("WHEN 'FeeCharged' THEN -1", "WHEN 'FeeCharged' THEN 0");
    assert_ne!(release_1.matches("SELECT 1").count(), 0, "bank.sql's state version is not `$$ SELECT 2 $$`");
    assert!(release_1.contains("THEN 0"), "bank.sql's fold has no FeeCharged sign to turn off");
    release_1
}

/// The check's bank, with the tail stream's last events held back.
fn check_bank() -> Bank {
    let mut bank = Bank::plan(&check_plan());
    let tail = bank.accounts.iter().position(|a| a.stream_id == long_stream_id(TAIL_STREAM_LENGTH)).expect("planned");
    let last = bank.bulks.last_mut().expect("at least one bulk");
    let entry = last.iter_mut().find(|(index, _)| *index == tail).expect("the tail stream is in the last bulk");
    entry.1 -= HELD_BACK;
    bank
}

async fn digest(client: &Client, upto: i64) -> Result<(i64, String), LabError> {
    let row = client.query_one(DIGEST_SQL, &[&upto]).await.map_err(LabError::db("digesting the events table"))?;
    Ok((row.get(0), row.get(1)))
}

pub async fn check(server: &Server, file: &ExerciseFile) -> Result<CheckReport, LabError> {
    let bank = check_bank();
    let mut client = server.connect().await?;
    store::install(&client).await.map_err(LabError::db("installing the reference store"))?;
    client.batch_execute(bank::BANK_SQL).await.map_err(LabError::db("installing the bank"))?;
    bank.load(&mut client, |_| {}).await?;
    // The live read model as release 1 built it: no fees.
    let accounts: Vec<&str> = bank.accounts.iter().map(|a| a.stream_id.as_str()).collect();
    let stale: Vec<bank::Balance> = bank
        .accounts
        .iter()
        .map(|a| bank.state_of(&a.stream_id, loaded_length(&bank, &a.stream_id), false).expect("planned"))
        .collect();
    client
        .execute(
            "INSERT INTO balances (account, currency, balance_minor, version)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])",
            &[
                &accounts,
                &stale.iter().map(|b| b.currency.as_str()).collect::<Vec<_>>(),
                &stale.iter().map(|b| b.balance_minor).collect::<Vec<_>>(),
                &stale.iter().map(|b| b.version).collect::<Vec<_>>(),
            ],
        )
        .await
        .map_err(LabError::db("filling the live read model"))?;
    let last_position: i64 = client
        .query_one("SELECT coalesce(max(position), 0) FROM events", &[])
        .await
        .map_err(LabError::db("reading the last position"))?
        .get(0);
    let before = digest(&client, last_position).await?;

    if let Some(failed) = install(&client, file).await? {
        return Ok(report(file, vec![failed]));
    }
    let mut checks = vec![
        upcast_exact(&client, &bank).await?,
        snapshot_schema(server, &bank).await?,
        snapshot_tail(server, &bank).await?,
        load_golden(server, &bank).await?,
    ];
    checks.extend(rebuild(server, &bank).await?);
    let after = digest(&client, last_position).await?;
    checks.push(Check::new(
        "events-untouched",
        "the stored events are exactly as written (a digest before your file loaded, and after every check)",
        before == after,
        if before == after {
            format!("{} events, digest {} before and after", before.0, &before.1[..12.min(before.1.len())])
        } else {
            format!(
                "the events table changed: {} events with digest {} before, {} with digest {} after. Events are \
                 facts: never UPDATE them to a new shape; read old shapes through upcast()",
                before.0, before.1, after.0, after.1
            )
        },
    ));
    Ok(report(file, checks))
}

fn report(file: &ExerciseFile, checks: Vec<Check>) -> CheckReport {
    CheckReport::new(
        "replay-clock",
        file,
        checks,
        "legacy events read exactly through one upcaster, snapshots never outlive the code that wrote them, \
         and the read model is rebuilt beside the live one: readers never see it empty.",
    )
}

fn loaded_length(bank: &Bank, stream_id: &str) -> usize {
    let length = bank.account(stream_id).map_or(0, |a| a.events.len());
    if stream_id == long_stream_id(TAIL_STREAM_LENGTH) {
        length - HELD_BACK
    } else {
        length
    }
}

/// Loads the file; a file that does not load, or lacks one of the three pieces, is the first
/// failed check, with its line and column.
async fn install(client: &Client, file: &ExerciseFile) -> Result<Option<Check>, LabError> {
    let loads = |detail: String| Some(Check::new("loads", format!("{} loads", file.shown), false, detail));
    if let Err(e) = client.batch_execute(&file.sql).await {
        return Ok(loads(file.locate(&e, 0)));
    }
    for (signature, what) in [
        ("upcast(integer,jsonb)", "the function upcast(integer, jsonb)"),
        ("load_account(text)", "the function load_account(text)"),
        ("rebuild_balances()", "the procedure rebuild_balances()"),
    ] {
        let defined: bool = client
            .query_one("SELECT to_regprocedure($1) IS NOT NULL", &[&signature])
            .await
            .map_err(LabError::db("looking for the exercise's functions"))?
            .get(0);
        if !defined {
            return Ok(loads(format!("it loads, but does not define {what}: keep the signatures of the exercise")));
        }
    }
    Ok(None)
}

/// A statement of the attendee's code failed: the check fails with the server's words.
fn failed_with(id: &'static str, name: &str, e: &tokio_postgres::Error, doing: &str) -> Check {
    Check::new(id, name, false, format!("{doing} failed: {}", store::server_message(e)))
}

async fn upcast_exact(client: &Client, bank: &Bank) -> Result<Check, LabError> {
    const NAME: &str = "upcast() turns every legacy v1 payload into the exact v2 payload, and leaves v2 as it is";
    let mut versions = Vec::new();
    let mut stored = Vec::new();
    let mut expected = Vec::new();
    for account in &bank.accounts {
        for e in &account.events {
            versions.push(e.schema_version());
            stored.push(e.stored_data(account.currency));
            expected.push(e.v2_data(account.currency));
        }
    }
    let rows = match client
        .query(
            "SELECT upcast(v, d) FROM unnest($1::integer[], $2::jsonb[]) WITH ORDINALITY AS t(v, d, n) ORDER BY n",
            &[&versions, &stored],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) => return Ok(failed_with("upcast-exact", NAME, &e, "upcast() over the bank's events")),
    };
    let mut wrong = 0;
    let mut first = None;
    let mut legacy_wrong = 0;
    for (n, row) in rows.iter().enumerate() {
        let got: Option<Value> = row.get(0);
        if got.as_ref() != Some(&expected[n]) {
            wrong += 1;
            if versions[n] == 1 {
                legacy_wrong += 1;
            }
            first.get_or_insert_with(|| diagnose(versions[n], &stored[n], got.as_ref(), &expected[n]));
        }
    }
    let legacy = versions.iter().filter(|v| **v == 1).count();
    Ok(Check::new(
        "upcast-exact",
        NAME,
        wrong == 0,
        match first {
            None => format!("{legacy} legacy payloads upcast exactly; {} v2 payloads unchanged", rows.len() - legacy),
            Some(first) => format!(
                "{wrong} of {} payloads come out wrong ({legacy_wrong} of the {legacy} legacy ones). The first: {first}",
                rows.len()
            ),
        },
    ))
}

/// What is wrong with one upcast payload, in words an attendee can act on.
fn diagnose(version: i32, stored: &Value, got: Option<&Value>, expected: &Value) -> String {
    let got_text = got.map_or("NULL".to_string(), Value::to_string);
    let mut why = Vec::new();
    if let Some(got) = got {
        if got.get("currency") != expected.get("currency") {
            why.push(format!("the currency should be {}", expected["currency"]));
        }
        match (got.get("amount_minor").and_then(Value::as_i64), expected["amount_minor"].as_i64()) {
            (Some(g), Some(e)) if g != e => why.push(format!(
                "amount_minor is off by {} (float arithmetic, or a scale other than the currency's minor digits?)",
                g - e
            )),
            (None, _) => why.push("amount_minor is missing or not an integer".into()),
            _ => {}
        }
        if got.as_object().is_some_and(|o| o.len() != 2) {
            why.push("v2 has exactly the keys amount_minor and currency".into());
        }
    }
    format!(
        "v{version} {stored} became {got_text}, expected {expected}{}",
        if why.is_empty() { String::new() } else { format!(": {}", why.join("; ")) }
    )
}

/// Reads `replay_clock.folded`, the count account_apply keeps on this session.
async fn folded(client: &Client) -> Result<i64, LabError> {
    let text: Option<String> = client
        .query_one("SELECT nullif(current_setting('replay_clock.folded', true), '')", &[])
        .await
        .map_err(LabError::db("reading the fold counter"))?
        .get(0);
    Ok(text.and_then(|t| t.parse().ok()).unwrap_or(0))
}

/// `load_account(stream_id)` as the application calls it; Err is the attendee's error.
async fn load(client: &Client, stream_id: &str) -> Result<Result<bank::Balance, tokio_postgres::Error>, LabError> {
    Ok(client.query_one("SELECT state, version FROM load_account($1)", &[&stream_id]).await.map(|row| {
        let state: Option<Value> = row.get(0);
        let state = state.unwrap_or(Value::Null);
        let version: Option<i64> = row.get(1);
        bank::Balance {
            currency: state["currency"].as_str().unwrap_or("NULL").to_string(),
            balance_minor: state["balance_minor"].as_i64().unwrap_or(i64::MIN),
            version: version.unwrap_or(-1),
        }
    }))
}

async fn snapshot_schema(server: &Server, bank: &Bank) -> Result<Check, LabError> {
    const NAME: &str =
        "a snapshot written by release 1 of the account fold is not used by release 2 (account_state_version() 1 -> 2)";
    let stream_id = long_stream_id(SCHEMA_STREAM_LENGTH);
    let fees = bank.account(&stream_id).map_or(0, |a| a.events.iter().filter(|e| e.kind == Kind::FeeCharged).count());
    let golden = bank.state_of(&stream_id, SCHEMA_STREAM_LENGTH, true).expect("planned");
    let release_1_state = bank.state_of(&stream_id, SCHEMA_STREAM_LENGTH, false).expect("planned");
    let deploy = server.connect().await?;
    deploy.batch_execute(&release_1_sql()).await.map_err(LabError::db("deploying release 1 of the account fold"))?;
    let as_release_1 = load(&server.connect().await?, &stream_id).await?;
    deploy.batch_execute(release_2_sql()).await.map_err(LabError::db("deploying release 2 of the account fold"))?;
    if let Err(e) = as_release_1 {
        return Ok(failed_with("snapshot-schema", NAME, &e, &format!("load_account('{stream_id}') under release 1")));
    }
    let as_release_2 = match load(&server.connect().await?, &stream_id).await? {
        Ok(state) => state,
        Err(e) => {
            return Ok(failed_with(
                "snapshot-schema",
                NAME,
                &e,
                &format!("load_account('{stream_id}') under release 2"),
            ))
        }
    };
    let passed = as_release_2 == golden;
    let detail = if passed {
        format!("{stream_id}: release 2 loaded {} ({fees} fees included)", bank::said(&as_release_2))
    } else if as_release_2 == release_1_state {
        format!(
            "{stream_id}: release 2 loaded {}, the balance release 1 computed without its {fees} FeeCharged events; \
             golden is {}. The snapshot release 1 wrote was reused: record account_state_version() in the snapshot \
             and use only one of the current version",
            bank::said(&as_release_2),
            bank::said(&golden)
        )
    } else {
        format!("{stream_id}: release 2 loaded {}; golden is {}", bank::said(&as_release_2), bank::said(&golden))
    };
    Ok(Check::new("snapshot-schema", NAME, passed, detail))
}

async fn snapshot_tail(server: &Server, bank: &Bank) -> Result<Check, LabError> {
    let stream_id = long_stream_id(TAIL_STREAM_LENGTH);
    let loaded = TAIL_STREAM_LENGTH - HELD_BACK;
    let name = format!(
        "{stream_id}: loaded at v{loaded}, {HELD_BACK} events appended, loaded again: correct, folding only the {HELD_BACK} new events"
    );
    let client = server.connect().await?;
    if let Err(e) = load(&client, &stream_id).await? {
        return Ok(failed_with("snapshot-tail", &name, &e, &format!("load_account('{stream_id}')")));
    }
    let index = bank.accounts.iter().position(|a| a.stream_id == stream_id).expect("planned");
    let account = &bank.accounts[index];
    let events: Vec<_> = (loaded..TAIL_STREAM_LENGTH).map(|i| bank::new_event(account, index, i)).collect();
    // The append alone in its transaction: the store's append is the first (and only) write.
    let writer = server.connect().await?;
    store::append(&writer, &stream_id, ExpectedVersion::Exact(loaded as i64), &events).await?;
    let before = folded(&client).await?;
    let state = match load(&client, &stream_id).await? {
        Ok(state) => state,
        Err(e) => return Ok(failed_with("snapshot-tail", &name, &e, &format!("load_account('{stream_id}') again"))),
    };
    let folded_now = folded(&client).await? - before;
    let golden = bank.state_of(&stream_id, TAIL_STREAM_LENGTH, true).expect("planned");
    let mut problems = Vec::new();
    if state != golden {
        problems.push(format!(
            "it loaded {}, golden is {}: the snapshot's stream version must be the last event folded into it",
            bank::said(&state),
            bank::said(&golden)
        ));
    }
    if folded_now > HELD_BACK as i64 {
        problems.push(format!(
            "it folded {folded_now} events, not the {HELD_BACK} appended since the first load: no snapshot was \
             written after a load of {loaded} events, or it was not used"
        ));
    }
    Ok(Check::new(
        "snapshot-tail",
        name,
        problems.is_empty(),
        if problems.is_empty() {
            format!("loaded {} folding {folded_now} events", bank::said(&state))
        } else {
            problems.join("\n")
        },
    ))
}

async fn load_golden(server: &Server, bank: &Bank) -> Result<Check, LabError> {
    const NAME: &str = "load_account() returns the golden state of every account";
    let client = server.connect().await?;
    let mut wrong = 0;
    let mut first = None;
    for account in &bank.accounts {
        let length = account.events.len();
        let golden = bank.state_of(&account.stream_id, length, true).expect("planned");
        match load(&client, &account.stream_id).await? {
            Ok(state) if state == golden => {}
            Ok(state) => {
                wrong += 1;
                first.get_or_insert_with(|| {
                    format!("{} loaded {}, golden is {}", account.stream_id, bank::said(&state), bank::said(&golden))
                });
            }
            Err(e) => {
                return Ok(failed_with("load-golden", NAME, &e, &format!("load_account('{}')", account.stream_id)))
            }
        }
    }
    Ok(Check::new(
        "load-golden",
        NAME,
        wrong == 0,
        match first {
            None => format!("{} accounts, each equal to its golden state", bank.accounts.len()),
            Some(first) => format!("{wrong} of {} accounts differ; the first: {first}", bank.accounts.len()),
        },
    ))
}

/// What the reader of the live model saw during the rebuild.
#[derive(Default)]
struct Seen {
    reads: u64,
    wrong: Vec<String>,
}

/// `CALL rebuild_balances()` paused at its read of `events`, the live model read at that
/// moment, then a reader looping until the rebuild ends; the rebuilt model against golden.
async fn rebuild(server: &Server, bank: &Bank) -> Result<Vec<Check>, LabError> {
    const GOLDEN: &str = "CALL rebuild_balances(): the balances read model equals the golden balances";
    const SWITCH: &str =
        "during the rebuild, every read of balances finds every account (the old model or the new, never empty or half-built)";
    let accounts = bank.accounts.len() as i64;
    let mut holder = server.connect().await?;
    let lock = holder.transaction().await.map_err(LabError::db("BEGIN the pause"))?;
    // The pause: the rebuild waits here as soon as it reads events, whatever it did before.
    lock.batch_execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .map_err(LabError::db("pausing the rebuild"))?;
    let rebuilder = server.connect().await?;
    let pid: i32 =
        rebuilder.query_one("SELECT pg_backend_pid()", &[]).await.map_err(LabError::db("pg_backend_pid()"))?.get(0);
    let call = tokio::spawn(async move { rebuilder.batch_execute("CALL rebuild_balances()").await });
    let watcher = server.connect().await?;
    let started = Instant::now();
    let mut paused = false;
    while started.elapsed() < Duration::from_secs(5) && !call.is_finished() {
        paused = watcher
            .query_one(
                "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .map_err(LabError::db("watching the rebuild's session"))?
            .get(0);
        if paused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reader = server.connect().await?;
    // A balance page does not wait for ever: a read blocked by the rebuild's lock counts as failed.
    reader.batch_execute("SET lock_timeout = '1s'").await.map_err(LabError::db("SET lock_timeout"))?;
    let mut seen = Seen::default();
    if paused {
        read_once(&reader, accounts, "while the rebuild waited to read events", &mut seen).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let looping = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = seen;
            while !stop.load(Ordering::SeqCst) {
                read_once(&reader, accounts, "during the rebuild", &mut seen).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        })
    };
    lock.commit().await.map_err(LabError::db("ending the pause"))?;
    let outcome = tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .map_err(|_| LabError::Exercise("CALL rebuild_balances() did not finish within 60 s".into()))??;
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.store(true, Ordering::SeqCst);
    let seen = looping.await?;
    if let Err(e) = outcome {
        return Ok(vec![
            failed_with("rebuild-golden", GOLDEN, &e, "CALL rebuild_balances()"),
            Check::new("switch-readers", SWITCH, false, "the rebuild failed, see above"),
        ]);
    }
    let client = server.connect().await?;
    let golden_check = match bank::read_model(&client, "balances").await {
        Ok(model) => match bank::differences(&model, &every_event_golden(bank)) {
            None => Check::new("rebuild-golden", GOLDEN, true, format!("{accounts} accounts, each golden")),
            Some((n, first)) => Check::new(
                "rebuild-golden",
                GOLDEN,
                false,
                format!("{n} of {accounts} accounts differ from golden; the first: {first}"),
            ),
        },
        Err(e) => Check::new("rebuild-golden", GOLDEN, false, format!("after the rebuild, {e}")),
    };
    let switch_check = Check::new(
        "switch-readers",
        SWITCH,
        seen.wrong.is_empty() && seen.reads > 0,
        if seen.wrong.is_empty() {
            format!("{} reads, each found all {accounts} accounts", seen.reads)
        } else {
            format!(
                "{} of {} reads did not find the whole model; the first {}. Build the new model in another table, \
                 COMMIT, then switch the names in one transaction",
                seen.wrong.len(),
                seen.reads,
                seen.wrong[0]
            )
        },
    );
    Ok(vec![golden_check, switch_check])
}

/// Every account's golden state with all its planned events, the held-back ones included (they
/// are appended by `snapshot-tail` before the rebuild).
fn every_event_golden(bank: &Bank) -> std::collections::BTreeMap<String, bank::Balance> {
    bank.accounts
        .iter()
        .map(|a| (a.stream_id.clone(), bank.state_of(&a.stream_id, a.events.len(), true).expect("planned")))
        .collect()
}

async fn read_once(reader: &Client, accounts: i64, when: &str, seen: &mut Seen) {
    seen.reads += 1;
    match reader.query_one("SELECT count(*) FROM balances", &[]).await {
        Ok(row) => {
            let rows: i64 = row.get(0);
            if rows != accounts {
                let what = if rows == 0 { "empty".to_string() } else { format!("{rows} of {accounts} accounts") };
                seen.wrong.push(format!("found balances {what} ({when})"));
            }
        }
        Err(e) => seen.wrong.push(format!("failed ({when}): {}", store::server_message(&e))),
    }
}
