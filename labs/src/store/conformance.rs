//! The store's contract, checked against any schema that implements it: `labs schema verify`.
//!
//! A schema passes when its `append_to_stream` and `read_all_after` (signatures in schema.sql)
//! keep the promises the reference store keeps: conflicts fail loudly, retries are idempotent,
//! and readers skip nothing and see nothing twice while writers commit out of order. Every
//! check talks to a real server; the concurrent ones start with a scripted interleaving, so a
//! flawed schema fails on every run, not only on an unlucky one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Barrier;
use tokio_postgres::Client;
use uuid::Uuid;

use super::append::APPEND_SQL;
use super::read::READ_ALL_SQL;
use super::StoreError;
use crate::pg::Server;
use crate::rng::Rng;

/// One conformance check's outcome. `details` holds what varies from run to run (counts under
/// random load); `summary` does not.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub summary: String,
    pub details: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub file: String,
    pub passed: bool,
    pub checks: Vec<Check>,
}

fn db(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    StoreError::db(context)
}

const APPEND_SIGNATURE: &str = "append_to_stream(text,bigint,uuid[],text[],jsonb[],jsonb[])";
const READ_SIGNATURE: &str = "read_all_after(text,integer)";

/// Loads `sql` (the text of `file`) into the server's database and runs every check.
pub async fn verify(server: &Server, sql: &str, file: &str) -> Result<VerifyReport, StoreError> {
    let client = server.connect().await?;
    let mut checks = Vec::new();
    let loaded = load(&client, sql, file).await;
    let loaded_ok = loaded.passed;
    checks.push(loaded);
    if loaded_ok {
        let contract = contract(&client).await?;
        let contract_ok = contract.passed;
        checks.push(contract);
        if contract_ok {
            checks.push(append_new_stream(&client).await?);
            checks.push(expected_versions(&client).await?);
            checks.push(stale_version_rejected(&client).await?);
            checks.push(idempotent_retry(&client).await?);
            checks.push(reused_id_rejected(&client).await?);
            checks.push(concurrent_readers(server).await?);
            checks.push(racing_writers(server).await?);
            checks.push(replay_in_order(&client).await?);
        }
    }
    let passed = checks.iter().all(|c| c.passed);
    Ok(VerifyReport { file: file.to_string(), passed, checks })
}

impl VerifyReport {
    fn render(&self) -> String {
        let mut out = format!("labs schema verify {}\n\n", self.file);
        for c in &self.checks {
            out += &format!("{}  {:<22} {}\n", if c.passed { "PASS" } else { "FAIL" }, c.name, c.summary);
            for d in &c.details {
                out += &format!("      {:<22} {d}\n", "");
            }
        }
        let passing = self.checks.iter().filter(|c| c.passed).count();
        out += &format!("\n{passing} of {} checks pass", self.checks.len());
        if self.checks.len() < 10 {
            out += "; the others did not run";
        }
        out += if self.passed { ": the schema keeps the store's promises.\n" } else { ".\n" };
        out
    }
}

fn pass(name: &'static str, summary: impl Into<String>) -> Check {
    Check { name, passed: true, summary: summary.into(), details: Vec::new() }
}

fn fail(name: &'static str, summary: impl Into<String>) -> Check {
    Check { name, passed: false, summary: summary.into(), details: Vec::new() }
}

/// The server's message for an error, with its SQLSTATE.
fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().map(|d| d.code().code())
}

async fn load(client: &Client, sql: &str, file: &str) -> Check {
    match client.batch_execute(sql).await {
        Ok(()) => pass("loads", "the file loads into a fresh database"),
        Err(e) => {
            let at = match e.as_db_error().and_then(|d| d.position()) {
                Some(tokio_postgres::error::ErrorPosition::Original(p)) => {
                    let (line, column) = line_and_column(sql, *p as usize);
                    format!("{file}:{line}:{column}: ")
                }
                _ => format!("{file}: "),
            };
            fail("loads", format!("{at}{}", super::server_message(&e)))
        }
    }
}

/// PostgreSQL reports an error's position as a 1-based character offset into the text sent.
fn line_and_column(text: &str, position: usize) -> (usize, usize) {
    let before: String = text.chars().take(position.saturating_sub(1)).collect();
    let line = before.matches('\n').count() + 1;
    let column = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
    (line, column)
}

async fn contract(client: &Client) -> Result<Check, StoreError> {
    let row = client
        .query_one(
            "SELECT to_regprocedure($1) IS NOT NULL, to_regprocedure($2) IS NOT NULL",
            &[&APPEND_SIGNATURE, &READ_SIGNATURE],
        )
        .await
        .map_err(db("looking up the contract's functions"))?;
    let missing: Vec<&str> = [(row.get::<_, bool>(0), APPEND_SIGNATURE), (row.get(1), READ_SIGNATURE)]
        .into_iter()
        .filter(|(found, _)| !found)
        .map(|(_, signature)| signature)
        .collect();
    if !missing.is_empty() {
        return Ok(fail(
            "contract",
            format!("missing {} (see the signatures in labs/src/store/schema.sql)", missing.join(" and ")),
        ));
    }
    // The read's columns, by name and type, as the labs read them.
    match client.prepare(READ_ALL_SQL).await {
        Ok(statement) => {
            let got: Vec<String> =
                statement.columns().iter().map(|c| format!("{} {}", c.name(), c.type_().name())).collect();
            let want = [
                "checkpoint text",
                "event_id uuid",
                "stream_id text",
                "version int8",
                "type text",
                "data jsonb",
                "metadata jsonb",
            ];
            if got != want {
                return Ok(fail(
                    "contract",
                    format!("read_all_after must return ({}), not ({})", want.join(", "), got.join(", ")),
                ));
            }
        }
        Err(e) => {
            return Ok(fail(
                "contract",
                format!("read_all_after cannot be called as the labs call it: {}", super::server_message(&e)),
            ))
        }
    }
    Ok(pass("contract", "append_to_stream and read_all_after have the documented signatures"))
}

/// An event of the checks: a deterministic id, a type, and data naming the check.
fn event(check: u8, n: u64) -> (Uuid, String, serde_json::Value) {
    (
        Uuid::from_u128(((check as u128) << 64) | n as u128),
        "Checked".to_string(),
        serde_json::json!({ "check": check, "n": n }),
    )
}

async fn try_append(
    client: &impl tokio_postgres::GenericClient,
    stream: &str,
    expected: Option<i64>,
    events: &[(Uuid, String, serde_json::Value)],
) -> Result<i64, tokio_postgres::Error> {
    let ids: Vec<Uuid> = events.iter().map(|e| e.0).collect();
    let types: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    let data: Vec<&serde_json::Value> = events.iter().map(|e| &e.2).collect();
    let metadata: Option<Vec<serde_json::Value>> = None;
    let row = client.query_one(APPEND_SQL, &[&stream, &expected, &ids, &types, &data, &metadata]).await?;
    let version: Option<i64> = row.try_get(0)?;
    Ok(version.unwrap_or(-1))
}

/// Every event of one stream, read through the contract from the start.
async fn stream_events(client: &Client, stream: &str) -> Result<Vec<(Uuid, i64, serde_json::Value)>, StoreError> {
    let mut out = Vec::new();
    for row in read_everything(client, 1_000).await? {
        if row.2 == stream {
            out.push((row.1, row.3, row.4));
        }
    }
    Ok(out)
}

type ReadRow = (String, Uuid, String, i64, serde_json::Value);

/// All events from the start, following the checkpoints in batches of `batch`.
async fn read_everything(client: &Client, batch: i32) -> Result<Vec<ReadRow>, StoreError> {
    let mut out: Vec<ReadRow> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let rows = client.query(READ_ALL_SQL, &[&after, &batch]).await.map_err(db("read_all_after"))?;
        if rows.is_empty() {
            return Ok(out);
        }
        for r in &rows {
            out.push((r.get(0), r.get(1), r.get(2), r.get(3), r.get(5)));
        }
        let next: String = rows.last().expect("not empty").get(0);
        if after.as_deref() == Some(next.as_str()) {
            return Ok(out); // a checkpoint that does not move: reported by replay-in-order
        }
        after = Some(next);
        if out.len() > 1_000_000 {
            return Ok(out);
        }
    }
}

async fn append_new_stream(client: &Client) -> Result<Check, StoreError> {
    const NAME: &str = "append-new-stream";
    let events = [event(1, 1), event(1, 2)];
    match try_append(client, "c1-account", Some(0), &events).await {
        Ok(2) => {}
        Ok(v) => return Ok(fail(NAME, format!("two events appended to a new stream returned version {v}, not 2"))),
        Err(e) => {
            return Ok(fail(
                NAME,
                format!("appending two events to a new stream failed: {}", super::server_message(&e)),
            ))
        }
    }
    let stored = stream_events(client, "c1-account").await?;
    let got: Vec<(Uuid, i64)> = stored.iter().map(|e| (e.0, e.1)).collect();
    if got != vec![(events[0].0, 1), (events[1].0, 2)] {
        return Ok(fail(
            NAME,
            format!("read_all_after returns the stream as {got:?}, not the two events as versions 1 and 2"),
        ));
    }
    Ok(pass(NAME, "two events to a new stream: version 2 returned, read back as versions 1 and 2"))
}

async fn expected_versions(client: &Client) -> Result<Check, StoreError> {
    const NAME: &str = "expected-version";
    match try_append(client, "c1-account", Some(2), &[event(2, 1)]).await {
        Ok(3) => {}
        Ok(v) => return Ok(fail(NAME, format!("expected version 2 on a stream at 2 returned {v}, not 3"))),
        Err(e) => {
            return Ok(fail(NAME, format!("expected version 2 on a stream at 2 failed: {}", super::server_message(&e))))
        }
    }
    match try_append(client, "c1-account", None, &[event(2, 2)]).await {
        Ok(4) => {}
        Ok(v) => return Ok(fail(NAME, format!("expected version any (NULL) on a stream at 3 returned {v}, not 4"))),
        Err(e) => return Ok(fail(NAME, format!("expected version any (NULL) failed: {}", super::server_message(&e)))),
    }
    Ok(pass(NAME, "exactly 2 on a stream at 2, and any (NULL), both append and return the new version"))
}

async fn stale_version_rejected(client: &Client) -> Result<Check, StoreError> {
    const NAME: &str = "conflict-detected";
    let mut notes = Vec::new();
    for (expected, what) in [(2, "expected version 2 on a stream at 4"), (0, "expected no stream (0) on a stream at 4")]
    {
        match try_append(client, "c1-account", Some(expected), &[event(3, expected as u64)]).await {
            Ok(v) => {
                return Ok(fail(
                    NAME,
                    format!("{what} succeeded (returned {v}): a writer that decided on stale state was told its event is stored"),
                ))
            }
            Err(e) if sqlstate(&e) == Some(super::SQLSTATE_VERSION_CONFLICT) => {
                let actual = e
                    .as_db_error()
                    .and_then(|d| d.detail())
                    .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
                    .and_then(|d| d["actual"].as_i64());
                if actual != Some(4) {
                    notes.push(format!("{what}: ES409, but its DETAIL does not give the actual version 4 as JSON"));
                }
            }
            Err(e) if sqlstate(&e) == Some("23505") => {
                notes.push(format!("{what}: rejected by a unique violation (23505); raise ES409 so callers can tell a conflict from a bug"))
            }
            Err(e) => return Ok(fail(NAME, format!("{what} failed, but not as a conflict: {}", super::server_message(&e)))),
        }
    }
    let count = stream_events(client, "c1-account").await?.len();
    if count != 4 {
        return Ok(fail(NAME, format!("the rejected appends changed the stream: {count} events instead of 4")));
    }
    let mut check = pass(NAME, "stale expected versions fail with ES409 and the actual version, and write nothing");
    if !notes.is_empty() {
        check.summary = "stale expected versions fail and write nothing".into();
        check.details = notes;
    }
    Ok(check)
}

async fn idempotent_retry(client: &Client) -> Result<Check, StoreError> {
    const NAME: &str = "idempotent-retry";
    let batch = [event(4, 1), event(4, 2)];
    match try_append(client, "c1-account", Some(4), &batch).await {
        Ok(6) => {}
        Ok(v) => return Ok(fail(NAME, format!("appending two events at version 4 returned {v}, not 6"))),
        Err(e) => {
            return Ok(fail(NAME, format!("appending two events at version 4 failed: {}", super::server_message(&e))))
        }
    }
    // The acknowledgement was lost: the client sends the very same request again.
    match try_append(client, "c1-account", Some(4), &batch).await {
        Ok(6) => {}
        Ok(v) => return Ok(fail(NAME, format!("resending the same append returned {v}, not the original 6"))),
        Err(e) => {
            return Ok(fail(
                NAME,
                format!(
                "resending the same append failed ({}): a client that lost the acknowledgement cannot tell it happened",
                super::server_message(&e)
            ),
            ))
        }
    }
    // The same with expected version any, where only the event ids can tell a retry.
    let any = [event(4, 3)];
    let first = try_append(client, "c4-retry-any", None, &any).await;
    let second = try_append(client, "c4-retry-any", None, &any).await;
    let stored = stream_events(client, "c1-account").await?.len();
    let stored_any = stream_events(client, "c4-retry-any").await?.len();
    if stored != 6 || stored_any != 1 {
        return Ok(fail(NAME, format!(
            "a resent append was stored twice: the stream holds {stored} events (6 sent) and the any-version stream {stored_any} (1 sent)"
        )));
    }
    match (first, second) {
        (Ok(1), Ok(1)) => Ok(pass(
            NAME,
            "the same events sent twice, with expected version 4 and with any: original version returned, stored once",
        )),
        (a, b) => Ok(fail(
            NAME,
            format!(
                "resending an append with expected version any returned {} then {}, not 1 both times",
                a.map(|v| v.to_string()).unwrap_or_else(|e| super::server_message(&e)),
                b.map(|v| v.to_string()).unwrap_or_else(|e| super::server_message(&e))
            ),
        )),
    }
}

async fn reused_id_rejected(client: &Client) -> Result<Check, StoreError> {
    const NAME: &str = "reused-id-rejected";
    let (id, ty, _) = event(4, 1);
    let other = [(id, ty, serde_json::json!({ "check": 5, "different": true }))];
    match try_append(client, "c1-account", None, &other).await {
        Ok(v) => Ok(fail(NAME, format!("an event id already stored, sent with other data, was accepted (returned {v}): two events now share one id"))),
        Err(e) => {
            let stored = stream_events(client, "c1-account").await?.len();
            if stored != 6 {
                return Ok(fail(NAME, format!("the rejected append changed the stream: {stored} events instead of 6")));
            }
            let how = if sqlstate(&e) == Some(super::SQLSTATE_EVENT_ID_REUSED) { "ES422".to_string() } else { super::server_message(&e) };
            Ok(pass(NAME, format!("an event id already stored, sent with other data, is rejected ({how})")))
        }
    }
}

/// What the concurrent check's readers saw.
#[derive(Default)]
struct Delivered {
    events: Vec<(Uuid, String, i64)>,
}

/// Writers commit out of order while readers poll: first a scripted late commit, then random
/// load. Every reader must receive every committed event once, each stream in version order.
async fn concurrent_readers(server: &Server) -> Result<Check, StoreError> {
    const NAME: &str = "concurrent-readers";
    const READERS: usize = 3;
    const WRITERS: usize = 6;
    const EVENTS_PER_WRITER: u64 = 25;
    const STREAMS: usize = 4;
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let done = done.clone();
            let config = server.config();
            tokio::spawn(async move { read_until_done(config, done).await })
        })
        .collect();

    // Scripted: the late writer takes the earlier position, another commits after it, readers
    // get a moment to read, then the late writer commits.
    let late = server.connect().await?;
    let other = server.connect().await?;
    let mut committed: Vec<(Uuid, String)> = Vec::new();
    late.batch_execute("BEGIN").await.map_err(db("late writer: BEGIN"))?;
    let late_event = event(8, 0);
    let mut failures: Vec<String> = Vec::new();
    match try_append(&late, "c8-late", None, std::slice::from_ref(&late_event)).await {
        Ok(_) => {}
        Err(e) => failures.push(format!("late writer: {}", super::server_message(&e))),
    }
    let early_event = event(8, 1);
    match try_append(&other, "c8-s0", None, std::slice::from_ref(&early_event)).await {
        Ok(_) => committed.push((early_event.0, "c8-s0".into())),
        Err(e) => failures.push(format!("writer: {}", super::server_message(&e))),
    }
    // A rival appends to a stream the late writer has also appended to: it must wait for the
    // late writer's commit and then either append after it or fail loudly, never be told it
    // stored an event that is not there.
    let rival_event = event(8, 2);
    let second_late = event(8, 3);
    if let Err(e) = try_append(&late, "c8-s1", None, std::slice::from_ref(&second_late)).await {
        failures.push(format!("late writer: {}", super::server_message(&e)));
    }
    let rival = server.connect().await?;
    let rival_append = {
        let rival_event = rival_event.clone();
        tokio::spawn(async move {
            try_append(&rival, "c8-s1", None, std::slice::from_ref(&rival_event))
                .await
                .map_err(|e| super::server_message(&e))
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    late.batch_execute("COMMIT").await.map_err(db("late writer: COMMIT"))?;
    committed.push((late_event.0, "c8-late".into()));
    committed.push((second_late.0, "c8-s1".into()));
    match rival_append.await.expect("rival task panicked") {
        Ok(_) => committed.push((rival_event.0, "c8-s1".into())),
        Err(e) => failures.push(format!("rival writer: {e}")),
    }
    // Random load: each writer holds its transaction open a random moment after appending.
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = server.connect().await?;
        writers.push(tokio::spawn(async move {
            let mut rng = Rng(w as u64 + 11);
            let mut ok = Vec::new();
            let mut errors = Vec::new();
            for n in 0..EVENTS_PER_WRITER {
                let stream = format!("c8-s{}", rng.below(STREAMS));
                let e = event(8, 1_000 * (w as u64 + 1) + n);
                let attempt = async {
                    client.batch_execute("BEGIN").await?;
                    try_append(&client, &stream, None, std::slice::from_ref(&e)).await?;
                    tokio::time::sleep(Duration::from_micros(rng.below(3_000) as u64)).await;
                    client.batch_execute("COMMIT").await
                };
                match attempt.await {
                    Ok(()) => ok.push((e.0, stream)),
                    Err(err) => {
                        let _ = client.batch_execute("ROLLBACK").await;
                        errors.push(super::server_message(&err));
                    }
                }
            }
            (ok, errors)
        }));
    }
    for w in writers {
        let (ok, errors) = w.await.expect("writer task panicked");
        committed.extend(ok);
        failures.extend(errors);
    }
    done.store(true, Ordering::SeqCst);
    let mut delivered = Vec::new();
    for r in readers {
        delivered.push(r.await.expect("reader task panicked").map_err(db("a concurrent reader"))?);
    }

    // What is stored, read once more now that every writer has finished: an acknowledged event
    // that is not there was lost by the append, not skipped by the readers.
    let checker = server.connect().await?;
    let stored: HashSet<Uuid> = read_everything(&checker, 1_000).await?.iter().map(|r| r.1).collect();
    let lost = committed.iter().filter(|(id, _)| !stored.contains(id)).count();
    let committed_ids: HashMap<Uuid, &str> =
        committed.iter().filter(|(id, _)| stored.contains(id)).map(|(id, s)| (*id, s.as_str())).collect();
    let mut late_skipped_by = 0;
    let mut details = Vec::new();
    let (mut missed_total, mut duplicates_total, mut disorder_total) = (0, 0, 0);
    for (i, d) in delivered.iter().enumerate() {
        let ids: HashSet<Uuid> = d.events.iter().map(|e| e.0).collect();
        if !ids.contains(&late_event.0) {
            late_skipped_by += 1;
        }
        let missed = committed_ids.keys().filter(|id| !ids.contains(id)).count();
        let duplicates = d.events.len() - ids.len();
        let mut last: BTreeMap<&str, i64> = BTreeMap::new();
        let mut disorder = 0;
        for (_, stream, version) in &d.events {
            let l = last.entry(stream.as_str()).or_insert(0);
            if *version <= *l {
                disorder += 1;
            }
            *l = (*l).max(*version);
        }
        if missed + duplicates + disorder > 0 {
            details
                .push(format!("reader {}: {missed} missed, {duplicates} twice, {disorder} out of stream order", i + 1));
        }
        missed_total += missed;
        duplicates_total += duplicates;
        disorder_total += disorder;
    }
    if !failures.is_empty() {
        details.push(format!("{} appends failed, e.g. {}", failures.len(), failures[0]));
    }
    let total = committed.len();
    if lost > 0 {
        return Ok(Check {
            name: NAME,
            passed: false,
            summary: format!(
                "{lost} of {total} acknowledged appends are not stored: concurrent appends to one stream lost writes"
            ),
            details,
        });
    }
    if late_skipped_by > 0 {
        return Ok(Check {
            name: NAME,
            passed: false,
            summary: format!(
                "{late_skipped_by} of {READERS} readers skipped the event that committed after a later position was read: it is stored, and they will never read it"
            ),
            details,
        });
    }
    if missed_total + duplicates_total + disorder_total > 0 || !failures.is_empty() {
        return Ok(Check {
            name: NAME,
            passed: false,
            summary: "under random load, readers missed events, got one twice or out of its stream's order".into(),
            details,
        });
    }
    Ok(Check {
        name: NAME,
        passed: true,
        summary: format!("{READERS} readers each got every committed event once, in stream order, while {WRITERS} writers committed out of order"),
        details: vec![format!("{total} events committed")],
    })
}

/// Polls read_all_after from the start, keeping the checkpoint in memory, until the writers are
/// done and a read comes back empty. Gives up after a minute (a reader that never catches up).
async fn read_until_done(
    config: tokio_postgres::Config,
    done: Arc<AtomicBool>,
) -> Result<Delivered, tokio_postgres::Error> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let mut delivered = Delivered::default();
    let mut after: Option<String> = None;
    let started = Instant::now();
    loop {
        let finished = done.load(Ordering::SeqCst);
        let rows = client.query(READ_ALL_SQL, &[&after, &50i32]).await?;
        for r in &rows {
            let stream: String = r.get(2);
            if stream.starts_with("c8-") {
                delivered.events.push((r.get(1), stream, r.get(3)));
            }
        }
        if let Some(last) = rows.last() {
            after = Some(last.get(0));
        } else if finished || started.elapsed() > Duration::from_secs(60) {
            return Ok(delivered);
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// Writers race on one stream, round after round, all with the same expected version: exactly
/// one must win each round, the others must fail, and every acknowledged event must be stored.
async fn racing_writers(server: &Server) -> Result<Check, StoreError> {
    const NAME: &str = "conflicts-under-race";
    const WRITERS: usize = 8;
    const ROUNDS: i64 = 10;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = server.connect().await?;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for round in 0..ROUNDS {
                barrier.wait().await;
                let e = event(9, (round as u64) * 100 + w as u64);
                let result = try_append(&client, "c9-hot", Some(round), std::slice::from_ref(&e)).await;
                outcomes.push((
                    round,
                    e.0,
                    result.map_err(|err| (sqlstate(&err).unwrap_or("").to_string(), super::server_message(&err))),
                ));
            }
            outcomes
        }));
    }
    let mut by_round: BTreeMap<i64, (usize, usize)> = BTreeMap::new();
    let mut acknowledged: HashSet<Uuid> = HashSet::new();
    let mut other_errors = Vec::new();
    let mut unique_violations = 0;
    for t in tasks {
        for (round, id, result) in t.await.expect("writer task panicked") {
            let entry = by_round.entry(round).or_default();
            match result {
                Ok(_) => {
                    entry.0 += 1;
                    acknowledged.insert(id);
                }
                Err((state, message)) => {
                    entry.1 += 1;
                    match state.as_str() {
                        super::SQLSTATE_VERSION_CONFLICT => {}
                        "23505" => unique_violations += 1,
                        _ => other_errors.push(message),
                    }
                }
            }
        }
    }
    let client = server.connect().await?;
    let stored: Vec<(Uuid, i64, serde_json::Value)> = stream_events(&client, "c9-hot").await?;
    let stored_ids: HashSet<Uuid> = stored.iter().map(|e| e.0).collect();
    let lost = acknowledged.iter().filter(|id| !stored_ids.contains(id)).count();
    let winners: Vec<usize> = by_round.values().map(|(ok, _)| *ok).collect();
    let mut details = Vec::new();
    if unique_violations > 0 {
        details.push(format!("{unique_violations} losers got a unique violation (23505), not ES409"));
    }
    if lost > 0 {
        return Ok(Check {
            name: NAME,
            passed: false,
            summary: format!(
                "{lost} appends were acknowledged but their events are not stored: writers were told they won when they had lost"
            ),
            details: vec![format!("winners per round: {winners:?}")],
        });
    }
    if !other_errors.is_empty() {
        return Ok(fail(NAME, format!("losers failed with errors that are not conflicts, e.g. {}", other_errors[0])));
    }
    if winners.iter().any(|&w| w != 1) {
        return Ok(fail(NAME, format!("each round must have exactly one winner; winners per round: {winners:?}")));
    }
    let versions: Vec<i64> = stored.iter().map(|e| e.1).collect();
    if versions != (1..=ROUNDS).collect::<Vec<_>>() {
        return Ok(fail(NAME, format!("the raced stream's versions are {versions:?}, not 1 to {ROUNDS}")));
    }
    Ok(Check {
        name: NAME,
        passed: true,
        summary: format!(
            "{WRITERS} writers raced {ROUNDS} rounds on one stream: one winner a round, every loser told, nothing lost"
        ),
        details,
    })
}

/// Replaying from the start, in small batches through the checkpoints, gives the same events in
/// the same order as one big read, and every stream reads as versions 1, 2, 3... in order.
async fn replay_in_order(client: &Client) -> Result<Check, StoreError> {
    const NAME: &str = "replay-in-order";
    let whole = read_everything(client, 100_000).await?;
    let batched = read_everything(client, 7).await?;
    let ids = |rows: &[ReadRow]| rows.iter().map(|r| r.1).collect::<Vec<_>>();
    if ids(&whole) != ids(&batched) {
        return Ok(fail(
            NAME,
            format!(
                "reading in batches of 7 through the checkpoints gives {} events, one read gives {}, or a different order",
                batched.len(),
                whole.len()
            ),
        ));
    }
    let mut next: HashMap<&str, i64> = HashMap::new();
    for (_, _, stream, version, _) in &whole {
        let expected = next.entry(stream.as_str()).or_insert(1);
        if *version != *expected {
            return Ok(fail(
                NAME,
                format!("stream {stream} replays version {version} where version {expected} was due"),
            ));
        }
        *expected += 1;
    }
    Ok(pass(
        NAME,
        format!("{} streams replay from the start as versions 1, 2, 3..., in batches or in one read", next.len()),
    ))
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}
