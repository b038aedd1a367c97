//! The store's contract, checked against any schema that implements it: `labs schema verify`.
//!
//! A schema passes when its `append_to_stream` and `read_all_after` (signatures in schema.sql)
//! keep the promises the reference store keeps: conflicts fail loudly, retries are idempotent,
//! readers skip nothing and see nothing twice while writers commit out of order, and each stream
//! reaches readers in version order, also when one transaction appends to several streams. A
//! schema may define `lock_streams(text[])`, as the reference does; the checks then call it
//! before every transaction that appends to several streams.
//!
//! Every check talks to a real server, and the concurrent ones start with scripted
//! interleavings, so a flawed schema fails on every run, not only on an unlucky one.
//!
//! **Architecture Invariant:** no step of a check waits on something the check itself must do
//! next. A scripted append runs in the background until it has finished or its session waits
//! for a lock, and the script carries on (a schema that serialises every append makes the next
//! writer wait for the previous one's commit). Every check has a deadline, and a check that runs
//! out of time says what it was waiting for. A reader that returns events late is measured,
//! and an event is called "not stored" only after waiting for it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Barrier;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use uuid::Uuid;

use super::append::APPEND_SQL;
use super::read::READ_ALL_SQL;
use super::{ExpectedVersion, NewEvent, StoreError};
use crate::pg::Server;
use crate::rng::Rng;

/// The checks, in the order they run: their ids are stable, for the book and for `--json`.
pub const CHECK_IDS: [&str; 11] = [
    LOADS,
    CONTRACT,
    APPEND_NEW_STREAM,
    EXPECTED_VERSION,
    CONFLICT_DETECTED,
    IDEMPOTENT_RETRY,
    REUSED_ID_REJECTED,
    CONCURRENT_READERS,
    STREAM_ORDER,
    CONFLICTS_UNDER_RACE,
    REPLAY_IN_ORDER,
];
const LOADS: &str = "loads";
const CONTRACT: &str = "contract";
const APPEND_NEW_STREAM: &str = "append-new-stream";
const EXPECTED_VERSION: &str = "expected-version";
const CONFLICT_DETECTED: &str = "conflict-detected";
const IDEMPOTENT_RETRY: &str = "idempotent-retry";
const REUSED_ID_REJECTED: &str = "reused-id-rejected";
const CONCURRENT_READERS: &str = "concurrent-readers";
const STREAM_ORDER: &str = "stream-order";
const CONFLICTS_UNDER_RACE: &str = "conflicts-under-race";
const REPLAY_IN_ORDER: &str = "replay-in-order";

/// One conformance check's outcome. `details` holds what varies from run to run (counts under
/// random load); `summary` does not. `notes` say what a passing check noticed.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Stable: one of [`CHECK_IDS`].
    pub id: &'static str,
    pub passed: bool,
    pub summary: String,
    pub details: Vec<String>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub file: String,
    pub passed: bool,
    pub checks: Vec<Check>,
}

/// How `verify` runs.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Each check's deadline. A check still running then fails, saying what it waited for.
    pub check_deadline: Duration,
    /// How the checks append.
    pub append_path: AppendPath,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions { check_deadline: Duration::from_secs(60), append_path: AppendPath::Contract }
    }
}

/// Which way the checks append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendPath {
    /// `SELECT append_to_stream(...)`, as an attendee's schema is called.
    Contract,
    /// The reference store's Rust `append`: the single-event fast path (fast_append.sql),
    /// falling back to `append_to_stream`. Only for the reference schema, which has both.
    StoreFastPath,
}

const APPEND_SIGNATURE: &str = "append_to_stream(text,bigint,uuid[],text[],jsonb[],jsonb[])";
const READ_SIGNATURE: &str = "read_all_after(text,integer)";
const LOCK_SIGNATURE: &str = "lock_streams(text[])";

/// How long a reader may take to return a committed event before the checks call it missing.
const VISIBILITY_BOUND: Duration = Duration::from_secs(3);
/// How long a scripted append may run before the script treats it as waiting and carries on.
const STEP_SETTLE: Duration = Duration::from_secs(3);
/// How long the script waits for readers to return events before it commits the transaction
/// that will land behind them (longer when the reader was measured to return events late).
const READERS_CATCH_UP: Duration = Duration::from_millis(1500);

/// Loads `sql` (the text of `file`) into the server's database and runs every check.
pub async fn verify(server: &Server, sql: &str, file: &str) -> Result<VerifyReport, StoreError> {
    verify_with(server, sql, file, &VerifyOptions::default()).await
}

/// [`verify`], with a deadline and an append path of your choice.
pub async fn verify_with(
    server: &Server,
    sql: &str,
    file: &str,
    options: &VerifyOptions,
) -> Result<VerifyReport, StoreError> {
    let client = server.connect().await?;
    let mut checks = Vec::new();
    let loaded = load(&client, sql, file).await;
    let loaded_ok = loaded.passed;
    checks.push(loaded);
    if loaded_ok {
        let (contract, has_lock_streams) = contract(&client).await?;
        let contract_ok = contract.passed;
        checks.push(contract);
        if contract_ok {
            let h = Harness {
                server,
                options: options.clone(),
                lock_streams: has_lock_streams,
                visibility_delay: Mutex::new(None),
                waiting: Arc::new(Mutex::new(String::new())),
            };
            checks.push(h.run(APPEND_NEW_STREAM, append_new_stream(&h)).await?);
            checks.push(h.run(EXPECTED_VERSION, expected_versions(&h)).await?);
            checks.push(h.run(CONFLICT_DETECTED, stale_version_rejected(&h)).await?);
            checks.push(h.run(IDEMPOTENT_RETRY, idempotent_retry(&h)).await?);
            checks.push(h.run(REUSED_ID_REJECTED, reused_id_rejected(&h)).await?);
            checks.push(h.run(CONCURRENT_READERS, concurrent_readers(&h)).await?);
            checks.push(h.run(STREAM_ORDER, stream_order(&h)).await?);
            checks.push(h.run(CONFLICTS_UNDER_RACE, racing_writers(&h)).await?);
            checks.push(h.run(REPLAY_IN_ORDER, replay_in_order(&h)).await?);
        }
    }
    let passed = checks.iter().all(|c| c.passed);
    Ok(VerifyReport { file: file.to_string(), passed, checks })
}

impl VerifyReport {
    fn render(&self) -> String {
        let mut out = format!("labs schema verify {}\n\n", self.file);
        for c in &self.checks {
            out += &format!("{}  {:<22} {}\n", if c.passed { "PASS" } else { "FAIL" }, c.id, c.summary);
            for d in &c.details {
                out += &format!("      {:<22} {d}\n", "");
            }
            for n in &c.notes {
                out += &format!("      {:<22} note: {n}\n", "");
            }
        }
        let passing = self.checks.iter().filter(|c| c.passed).count();
        out += &format!("\n{passing} of {} checks pass", self.checks.len());
        if self.checks.len() < CHECK_IDS.len() {
            out += &format!("; the other {} did not run", CHECK_IDS.len() - self.checks.len());
        }
        out += if self.passed { ": the schema keeps the store's promises.\n" } else { ".\n" };
        out
    }
}

fn pass(id: &'static str, summary: impl Into<String>) -> Check {
    Check { id, passed: true, summary: summary.into(), details: Vec::new(), notes: Vec::new() }
}

fn fail(id: &'static str, summary: impl Into<String>) -> Check {
    Check { id, passed: false, summary: summary.into(), details: Vec::new(), notes: Vec::new() }
}

fn db(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    StoreError::db(context)
}

/// What the checks share: the server, the options, what the schema offers, what was measured
/// about its reader, and what the running check waits for now.
struct Harness<'a> {
    server: &'a Server,
    options: VerifyOptions,
    /// The schema defines lock_streams(text[]).
    lock_streams: bool,
    /// How long read_all_after took to return an append it did not return at once (measured by
    /// append-new-stream; None: at once).
    visibility_delay: Mutex<Option<Duration>>,
    /// What the running check waits for, for the message when it runs out of time.
    waiting: Arc<Mutex<String>>,
}

impl Harness<'_> {
    /// Runs one check under its deadline. A check that runs out of time fails, saying what it
    /// was waiting for; its sessions are ended so the next check starts clean. An error from the
    /// schema (a function that raises) fails the check with the server's message.
    async fn run(
        &self,
        id: &'static str,
        check: impl Future<Output = Result<Check, StoreError>>,
    ) -> Result<Check, StoreError> {
        self.wait_for("the check to start");
        let deadline = self.options.check_deadline;
        match tokio::time::timeout(deadline, check).await {
            Ok(Ok(check)) => Ok(check),
            Ok(Err(StoreError::Provider(e))) => Err(StoreError::Provider(e)),
            Ok(Err(e)) => {
                self.end_other_sessions().await?;
                Ok(fail(id, format!("the check stopped on an error: {e}")))
            }
            Err(_) => {
                let waited_for = self.waiting.lock().expect("waiting").clone();
                self.end_other_sessions().await?;
                Ok(fail(
                    id,
                    format!(
                        "no verdict within {} s: the check was waiting for {waited_for}",
                        deadline.as_secs_f64().round()
                    ),
                ))
            }
        }
    }

    fn wait_for(&self, what: impl Into<String>) {
        *self.waiting.lock().expect("waiting") = what.into();
    }

    /// Ends every other session of this database: a check that ran out of time may have left
    /// some waiting on a lock, or holding one.
    async fn end_other_sessions(&self) -> Result<(), StoreError> {
        let client = self.server.connect().await?;
        client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                &[],
            )
            .await
            .map_err(db("ending the sessions of a check that ran out of time"))?;
        Ok(())
    }

    fn visibility_delay(&self) -> Option<Duration> {
        *self.visibility_delay.lock().expect("visibility delay")
    }

    /// Before reading back what a check wrote: as long as the reader was seen to take.
    async fn settle(&self) {
        if let Some(delay) = self.visibility_delay() {
            tokio::time::sleep(delay + delay / 2 + Duration::from_millis(50)).await;
        }
    }

    /// Every event of one stream, read through the contract from the start, once the reader
    /// has had the time it was seen to need.
    async fn stream_events(
        &self,
        client: &Client,
        stream: &str,
    ) -> Result<Vec<(Uuid, i64, serde_json::Value)>, StoreError> {
        self.settle().await;
        self.wait_for(format!("read_all_after to return stream {stream}"));
        Ok(read_everything(client, 1_000)
            .await?
            .into_iter()
            .filter(|row| row.2 == stream)
            .map(|row| (row.1, row.3, row.4))
            .collect())
    }

    async fn append(
        &self,
        client: &Client,
        stream: &str,
        expected: Option<i64>,
        events: &[TestEvent],
    ) -> Result<i64, AppendError> {
        try_append(client, self.options.append_path, stream, expected, events).await
    }

    /// Opens a transaction on `session` for an append to each of `streams`: with the schema's
    /// lock_streams first, when it has one.
    async fn begin(&self, session: &Session, streams: &[&str]) -> Result<(), StoreError> {
        begin(&session.client, self.lock_streams, streams).await.map_err(db(format!("{}: BEGIN", session.name)))
    }

    /// Starts `work` on `session` in the background and returns once it has finished, or the
    /// session waits for a lock, or [`STEP_SETTLE`] has passed: the script never waits for a
    /// step that may be waiting for the script.
    async fn start<T: Send + 'static>(
        &self,
        session: &Session,
        what: &str,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<Step<T>, StoreError> {
        self.wait_for(format!("{} to {what}", session.name));
        let task = tokio::spawn(work);
        let watcher = self.server.connect().await?;
        let started = Instant::now();
        loop {
            if task.is_finished() {
                return Ok(Step::Done(task.await.expect("a scripted step panicked")));
            }
            let waiting: bool = watcher
                .query_one(
                    "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false) FROM pg_stat_activity WHERE pid = $1",
                    &[&session.pid],
                )
                .await
                .map_err(db("watching a scripted session"))?
                .get(0);
            if (waiting && !task.is_finished()) || started.elapsed() > STEP_SETTLE {
                return Ok(Step::Waiting { task, on_a_lock: waiting });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for a step started with [`Harness::start`] (under the check's deadline).
    async fn finish<T>(&self, session: &Session, what: &str, step: Step<T>) -> T {
        match step {
            Step::Done(value) => value,
            Step::Waiting { task, .. } => {
                self.wait_for(format!("{} to {what}", session.name));
                task.await.expect("a scripted step panicked")
            }
        }
    }

    async fn commit(&self, session: &Session) -> Result<(), StoreError> {
        self.wait_for(format!("{}'s COMMIT", session.name));
        session.client.batch_execute("COMMIT").await.map_err(db(format!("{}: COMMIT", session.name)))
    }

    async fn session(&self, name: &'static str) -> Result<Session, StoreError> {
        let client = self.server.connect().await?;
        let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.map_err(db("pg_backend_pid()"))?.get(0);
        Ok(Session { name, client: Arc::new(client), pid })
    }
}

/// A session of a scripted interleaving.
struct Session {
    name: &'static str,
    client: Arc<Client>,
    pid: i32,
}

/// A scripted step: finished, or still running, seen waiting for a lock or not.
enum Step<T> {
    Done(T),
    Waiting { task: JoinHandle<T>, on_a_lock: bool },
}

impl<T> Step<T> {
    fn waiting(&self) -> bool {
        matches!(self, Step::Waiting { .. })
    }

    fn waiting_on_a_lock(&self) -> bool {
        matches!(self, Step::Waiting { on_a_lock: true, .. })
    }
}

async fn begin(client: &Client, lock_streams: bool, streams: &[&str]) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("BEGIN").await?;
    if lock_streams && streams.len() > 1 {
        client.execute("SELECT lock_streams($1)", &[&streams]).await?;
    }
    Ok(())
}

/// An append's failure, whichever way it was called: the SQLSTATE, the server's message, and
/// the actual version a conflict reported.
#[derive(Debug)]
struct AppendError {
    sqlstate: Option<String>,
    message: String,
    actual: Option<i64>,
}

impl From<tokio_postgres::Error> for AppendError {
    fn from(e: tokio_postgres::Error) -> AppendError {
        let actual = e
            .as_db_error()
            .and_then(|d| d.detail())
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .and_then(|d| d["actual"].as_i64());
        AppendError {
            sqlstate: e.as_db_error().map(|d| d.code().code().to_string()),
            message: super::server_message(&e),
            actual,
        }
    }
}

impl From<StoreError> for AppendError {
    fn from(e: StoreError) -> AppendError {
        let sqlstate = |code: &str| Some(code.to_string());
        match e {
            StoreError::VersionConflict { actual, .. } => AppendError {
                sqlstate: sqlstate(super::SQLSTATE_VERSION_CONFLICT),
                message: e.to_string(),
                actual: Some(actual),
            },
            StoreError::EventIdReused { .. } => AppendError {
                sqlstate: sqlstate(super::SQLSTATE_EVENT_ID_REUSED),
                message: e.to_string(),
                actual: None,
            },
            StoreError::StreamNotLocked { .. } => AppendError {
                sqlstate: sqlstate(super::SQLSTATE_STREAM_NOT_LOCKED),
                message: e.to_string(),
                actual: None,
            },
            StoreError::OtherCluster { .. } => {
                AppendError { sqlstate: sqlstate(super::SQLSTATE_OTHER_CLUSTER), message: e.to_string(), actual: None }
            }
            StoreError::Database { source, .. } => source.into(),
            other => AppendError { sqlstate: None, message: other.to_string(), actual: None },
        }
    }
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// An event of the checks: a deterministic id, a type, and data naming the check.
type TestEvent = (Uuid, String, serde_json::Value);

fn event(check: u8, n: u64) -> TestEvent {
    (
        Uuid::from_u128(((check as u128) << 64) | n as u128),
        "Checked".to_string(),
        serde_json::json!({ "check": check, "n": n }),
    )
}

async fn try_append(
    client: &Client,
    path: AppendPath,
    stream: &str,
    expected: Option<i64>,
    events: &[TestEvent],
) -> Result<i64, AppendError> {
    match path {
        AppendPath::Contract => {
            let ids: Vec<Uuid> = events.iter().map(|e| e.0).collect();
            let types: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
            let data: Vec<&serde_json::Value> = events.iter().map(|e| &e.2).collect();
            let metadata: Option<Vec<serde_json::Value>> = None;
            let row = client.query_one(APPEND_SQL, &[&stream, &expected, &ids, &types, &data, &metadata]).await?;
            let version: Option<i64> = row.try_get(0)?;
            Ok(version.unwrap_or(-1))
        }
        AppendPath::StoreFastPath => {
            let expected = match expected {
                None => ExpectedVersion::Any,
                Some(0) => ExpectedVersion::NoStream,
                Some(n) => ExpectedVersion::Exact(n),
            };
            let events: Vec<NewEvent> = events.iter().map(|e| NewEvent::new(e.0, e.1.clone(), e.2.clone())).collect();
            Ok(super::append(client, stream, expected, &events).await?)
        }
    }
}

/// A row of read_all_after: (checkpoint, event_id, stream_id, version, data).
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

async fn load(client: &Client, sql: &str, file: &str) -> Check {
    match client.batch_execute(sql).await {
        Ok(()) => pass(LOADS, "the file loads into a fresh database"),
        Err(e) => {
            let at = match e.as_db_error().and_then(|d| d.position()) {
                Some(tokio_postgres::error::ErrorPosition::Original(p)) => {
                    let (line, column) = line_and_column(sql, *p as usize);
                    format!("{file}:{line}:{column}: ")
                }
                _ => format!("{file}: "),
            };
            fail(LOADS, format!("{at}{}", super::server_message(&e)))
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

/// The contract's functions, and whether the schema offers lock_streams.
async fn contract(client: &Client) -> Result<(Check, bool), StoreError> {
    let row = client
        .query_one(
            "SELECT to_regprocedure($1) IS NOT NULL, to_regprocedure($2) IS NOT NULL, to_regprocedure($3) IS NOT NULL",
            &[&APPEND_SIGNATURE, &READ_SIGNATURE, &LOCK_SIGNATURE],
        )
        .await
        .map_err(db("looking up the contract's functions"))?;
    let has_lock_streams: bool = row.get(2);
    let missing: Vec<&str> = [(row.get::<_, bool>(0), APPEND_SIGNATURE), (row.get(1), READ_SIGNATURE)]
        .into_iter()
        .filter(|(found, _)| !found)
        .map(|(_, signature)| signature)
        .collect();
    if !missing.is_empty() {
        return Ok((
            fail(
                CONTRACT,
                format!("missing {} (see the signatures in labs/src/store/schema.sql)", missing.join(" and ")),
            ),
            has_lock_streams,
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
                return Ok((
                    fail(
                        CONTRACT,
                        format!("read_all_after must return ({}), not ({})", want.join(", "), got.join(", ")),
                    ),
                    has_lock_streams,
                ));
            }
        }
        Err(e) => {
            return Ok((
                fail(
                    CONTRACT,
                    format!("read_all_after cannot be called as the labs call it: {}", super::server_message(&e)),
                ),
                has_lock_streams,
            ))
        }
    }
    let mut check = pass(CONTRACT, "append_to_stream and read_all_after have the documented signatures");
    check.notes.push(if has_lock_streams {
        "lock_streams(text[]) is defined: transactions that append to several streams call it first".into()
    } else {
        "no lock_streams(text[]): transactions that append to several streams just append".into()
    });
    Ok((check, has_lock_streams))
}

/// Also measures how long read_all_after takes to return what was just committed: at once for
/// a reader behind the watermark (nothing else is running), later for one that waits for events
/// to settle. The later checks read back after that long.
async fn append_new_stream(h: &Harness<'_>) -> Result<Check, StoreError> {
    let client = h.server.connect().await?;
    let events = [event(1, 1), event(1, 2)];
    h.wait_for("the first append");
    match h.append(&client, "c1-account", Some(0), &events).await {
        Ok(2) => {}
        Ok(v) => {
            return Ok(fail(
                APPEND_NEW_STREAM,
                format!("two events appended to a new stream returned version {v}, not 2"),
            ))
        }
        Err(e) => return Ok(fail(APPEND_NEW_STREAM, format!("appending two events to a new stream failed: {e}"))),
    }
    let committed = Instant::now();
    h.wait_for("read_all_after to return the first append");
    let mut first_read = true;
    let stored = loop {
        let stored: Vec<(Uuid, i64)> = read_everything(&client, 1_000)
            .await?
            .into_iter()
            .filter(|row| row.2 == "c1-account")
            .map(|row| (row.1, row.3))
            .collect();
        if stored.len() >= 2 || committed.elapsed() > VISIBILITY_BOUND {
            break stored;
        }
        first_read = false;
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let late = (!first_read).then(|| committed.elapsed());
    *h.visibility_delay.lock().expect("visibility delay") = late;
    if stored.is_empty() {
        return Ok(fail(
            APPEND_NEW_STREAM,
            format!(
                "the append returned version 2, but read_all_after has not returned its events {} s later",
                VISIBILITY_BOUND.as_secs()
            ),
        ));
    }
    if stored != vec![(events[0].0, 1), (events[1].0, 2)] {
        return Ok(fail(
            APPEND_NEW_STREAM,
            format!("read_all_after returns the stream as {stored:?}, not the two events as versions 1 and 2"),
        ));
    }
    let mut check =
        pass(APPEND_NEW_STREAM, "two events to a new stream: version 2 returned, read back as versions 1 and 2");
    if let Some(delay) = late {
        check.notes.push(format!(
            "read_all_after returned them only after {} ms, though nothing else was running: later checks read back after as long",
            delay.as_millis()
        ));
    }
    Ok(check)
}

async fn expected_versions(h: &Harness<'_>) -> Result<Check, StoreError> {
    let client = h.server.connect().await?;
    h.wait_for("an append with expected version 2");
    match h.append(&client, "c1-account", Some(2), &[event(2, 1)]).await {
        Ok(3) => {}
        Ok(v) => return Ok(fail(EXPECTED_VERSION, format!("expected version 2 on a stream at 2 returned {v}, not 3"))),
        Err(e) => return Ok(fail(EXPECTED_VERSION, format!("expected version 2 on a stream at 2 failed: {e}"))),
    }
    h.wait_for("an append with expected version any");
    match h.append(&client, "c1-account", None, &[event(2, 2)]).await {
        Ok(4) => {}
        Ok(v) => {
            return Ok(fail(
                EXPECTED_VERSION,
                format!("expected version any (NULL) on a stream at 3 returned {v}, not 4"),
            ))
        }
        Err(e) => return Ok(fail(EXPECTED_VERSION, format!("expected version any (NULL) failed: {e}"))),
    }
    Ok(pass(EXPECTED_VERSION, "exactly 2 on a stream at 2, and any (NULL), both append and return the new version"))
}

async fn stale_version_rejected(h: &Harness<'_>) -> Result<Check, StoreError> {
    let client = h.server.connect().await?;
    let mut notes = Vec::new();
    for (expected, what) in [(2, "expected version 2 on a stream at 4"), (0, "expected no stream (0) on a stream at 4")]
    {
        h.wait_for(what);
        match h.append(&client, "c1-account", Some(expected), &[event(3, expected as u64)]).await {
            Ok(v) => {
                return Ok(fail(
                    CONFLICT_DETECTED,
                    format!("{what} succeeded (returned {v}): a writer that decided on stale state was told its event is stored"),
                ))
            }
            Err(e) if e.sqlstate.as_deref() == Some(super::SQLSTATE_VERSION_CONFLICT) => {
                if e.actual != Some(4) {
                    notes.push(format!("{what}: ES409, but its DETAIL does not give the actual version 4 as JSON"));
                }
            }
            Err(e) if e.sqlstate.as_deref() == Some("23505") => notes.push(format!(
                "{what}: rejected by a unique violation (23505); raise ES409 so callers can tell a conflict from a bug"
            )),
            Err(e) => return Ok(fail(CONFLICT_DETECTED, format!("{what} failed, but not as a conflict: {e}"))),
        }
    }
    let count = h.stream_events(&client, "c1-account").await?.len();
    if count != 4 {
        return Ok(fail(
            CONFLICT_DETECTED,
            format!("the rejected appends changed the stream: {count} events instead of 4"),
        ));
    }
    let mut check =
        pass(CONFLICT_DETECTED, "stale expected versions fail with ES409 and the actual version, and write nothing");
    if !notes.is_empty() {
        check.summary = "stale expected versions fail and write nothing".into();
        check.details = notes;
    }
    Ok(check)
}

async fn idempotent_retry(h: &Harness<'_>) -> Result<Check, StoreError> {
    let client = h.server.connect().await?;
    let batch = [event(4, 1), event(4, 2)];
    h.wait_for("an append of two events at version 4");
    match h.append(&client, "c1-account", Some(4), &batch).await {
        Ok(6) => {}
        Ok(v) => return Ok(fail(IDEMPOTENT_RETRY, format!("appending two events at version 4 returned {v}, not 6"))),
        Err(e) => return Ok(fail(IDEMPOTENT_RETRY, format!("appending two events at version 4 failed: {e}"))),
    }
    // The acknowledgement was lost: the client sends the very same request again.
    h.wait_for("the same append, sent again");
    match h.append(&client, "c1-account", Some(4), &batch).await {
        Ok(6) => {}
        Ok(v) => return Ok(fail(IDEMPOTENT_RETRY, format!("resending the same append returned {v}, not the original 6"))),
        Err(e) => {
            return Ok(fail(
                IDEMPOTENT_RETRY,
                format!("resending the same append failed ({e}): a client that lost the acknowledgement cannot tell it happened"),
            ))
        }
    }
    // The same with expected version any, where only the event ids can tell a retry.
    let any = [event(4, 3)];
    h.wait_for("an append with expected version any, sent twice");
    let first = h.append(&client, "c4-retry-any", None, &any).await;
    let second = h.append(&client, "c4-retry-any", None, &any).await;
    let stored = h.stream_events(&client, "c1-account").await?.len();
    let stored_any = h.stream_events(&client, "c4-retry-any").await?.len();
    if stored != 6 || stored_any != 1 {
        return Ok(fail(IDEMPOTENT_RETRY, format!(
            "a resent append was stored twice: read_all_after returns {stored} events of the stream (6 sent) and {stored_any} of the any-version stream (1 sent)"
        )));
    }
    match (first, second) {
        (Ok(1), Ok(1)) => Ok(pass(
            IDEMPOTENT_RETRY,
            "the same events sent twice, with expected version 4 and with any: original version returned, stored once",
        )),
        (a, b) => Ok(fail(
            IDEMPOTENT_RETRY,
            format!(
                "resending an append with expected version any returned {} then {}, not 1 both times",
                a.map(|v| v.to_string()).unwrap_or_else(|e| e.to_string()),
                b.map(|v| v.to_string()).unwrap_or_else(|e| e.to_string())
            ),
        )),
    }
}

async fn reused_id_rejected(h: &Harness<'_>) -> Result<Check, StoreError> {
    let client = h.server.connect().await?;
    let (id, ty, _) = event(4, 1);
    let other = [(id, ty, serde_json::json!({ "check": 5, "different": true }))];
    h.wait_for("an append that reuses a stored event id");
    match h.append(&client, "c1-account", None, &other).await {
        Ok(v) => Ok(fail(REUSED_ID_REJECTED, format!("an event id already stored, sent with other data, was accepted (returned {v}): two events now share one id"))),
        Err(e) => {
            let stored = h.stream_events(&client, "c1-account").await?.len();
            if stored != 6 {
                return Ok(fail(REUSED_ID_REJECTED, format!("the rejected append changed the stream: {stored} events instead of 6")));
            }
            let how = if e.sqlstate.as_deref() == Some(super::SQLSTATE_EVENT_ID_REUSED) { "ES422".to_string() } else { e.to_string() };
            Ok(pass(REUSED_ID_REJECTED, format!("an event id already stored, sent with other data, is rejected ({how})")))
        }
    }
}

/// What one concurrent reader has returned so far: (event id, stream, version), in order.
type Delivered = Arc<Mutex<Vec<(Uuid, String, i64)>>>;

/// Writers commit out of order while readers poll: first two scripted interleavings, then
/// random load with transfers between streams. Every reader must receive every committed event
/// once, each stream in version order.
///
/// - The late writer: a transaction takes a position and stays open while another commits a
///   later one and the readers read it; then it commits. A reader that trusts positions, or
///   waits a fixed time for events to settle, has moved past it.
/// - The transfer: a transaction appends to two streams and takes positions on both sides of
///   another transaction's event; it commits first, the readers read it, the other commits. A
///   reader that keeps only the position as its checkpoint has moved past the other's event,
///   even behind the transaction-id watermark.
async fn concurrent_readers(h: &Harness<'_>) -> Result<Check, StoreError> {
    const READERS: usize = 3;
    const WRITERS: usize = 6;
    const EVENTS_PER_WRITER: u64 = 25;
    const STREAMS: usize = 4;
    let done = Arc::new(AtomicBool::new(false));
    let delivered: Vec<Delivered> = (0..READERS).map(|_| Delivered::default()).collect();
    let readers: Vec<_> = delivered
        .iter()
        .map(|d| {
            let (done, d, config) = (done.clone(), d.clone(), h.server.config());
            tokio::spawn(async move { read_until_done(config, done, d).await })
        })
        .collect();
    // How long the script waits for the readers to return an event before it commits the
    // transaction that lands behind it: for a reader measured to return events late, several
    // times that delay (the readers poll on a busy machine too); otherwise a fixed while.
    let catch_up = match h.visibility_delay() {
        Some(delay) => (delay * 4 + Duration::from_secs(2)).clamp(READERS_CATCH_UP, Duration::from_secs(15)),
        None => READERS_CATCH_UP,
    };
    let all_returned = |ids: &[Uuid]| {
        delivered.iter().all(|d| {
            let d = d.lock().expect("delivered");
            ids.iter().all(|id| d.iter().any(|e| e.0 == *id))
        })
    };
    let mut committed: Vec<(Uuid, String)> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut serialised = false;

    // 1. The late writer.
    let late = h.session("the late writer").await?;
    let other = h.session("another writer").await?;
    let rival = h.session("a rival writer").await?;
    let (late_event, early_event, second_late, rival_event) = (event(8, 0), event(8, 1), event(8, 3), event(8, 2));
    h.begin(&late, &["c8-late", "c8-s1"]).await?;
    h.wait_for("the late writer's first append");
    if let Err(e) = h.append(&late.client, "c8-late", None, std::slice::from_ref(&late_event)).await {
        failures.push(format!("late writer: {e}"));
    }
    let other_append = {
        let (client, e, path) = (other.client.clone(), early_event.clone(), h.options.append_path);
        h.start(&other, "append to c8-s0", async move { try_append(&client, path, "c8-s0", None, &[e]).await }).await?
    };
    serialised |= other_append.waiting_on_a_lock();
    if !other_append.waiting() {
        h.wait_for("the readers to return the event committed after the late writer's");
        let waited = Instant::now();
        while !all_returned(&[early_event.0]) && waited.elapsed() < catch_up {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    h.wait_for("the late writer's second append");
    if let Err(e) = h.append(&late.client, "c8-s1", None, std::slice::from_ref(&second_late)).await {
        failures.push(format!("late writer: {e}"));
    }
    // A rival appends to a stream the late writer has appended to: it must wait for the late
    // writer's commit and then append after it, or fail loudly; never be told it stored an
    // event that is not there.
    let rival_append = {
        let (client, e, path) = (rival.client.clone(), rival_event.clone(), h.options.append_path);
        h.start(&rival, "append to c8-s1", async move { try_append(&client, path, "c8-s1", None, &[e]).await }).await?
    };
    h.commit(&late).await?;
    committed.push((late_event.0, "c8-late".into()));
    committed.push((second_late.0, "c8-s1".into()));
    for (session, step, e, stream) in
        [(&other, other_append, &early_event, "c8-s0"), (&rival, rival_append, &rival_event, "c8-s1")]
    {
        match h.finish(session, &format!("append to {stream}"), step).await {
            Ok(_) => committed.push((e.0, stream.into())),
            Err(err) => failures.push(format!("{}: {err}", session.name)),
        }
    }

    // 2. The transfer, with positions on both sides of another transaction's event.
    let transfer = h.session("the transfer").await?;
    let between = h.session("the writer in between").await?;
    let (debit, credit, middle) = (event(8, 10), event(8, 11), event(8, 12));
    h.begin(&transfer, &["c8-from", "c8-to"]).await?;
    h.wait_for("the transfer's first append");
    if let Err(e) = h.append(&transfer.client, "c8-from", None, std::slice::from_ref(&debit)).await {
        failures.push(format!("the transfer: {e}"));
    }
    between.client.batch_execute("BEGIN").await.map_err(db("the writer in between: BEGIN"))?;
    let middle_append = {
        let (client, e, path) = (between.client.clone(), middle.clone(), h.options.append_path);
        h.start(
            &between,
            "append to c8-middle",
            async move { try_append(&client, path, "c8-middle", None, &[e]).await },
        )
        .await?
    };
    serialised |= middle_append.waiting_on_a_lock();
    let credit_append = {
        let (client, e, path) = (transfer.client.clone(), credit.clone(), h.options.append_path);
        h.start(&transfer, "append to c8-to", async move { try_append(&client, path, "c8-to", None, &[e]).await })
            .await?
    };
    let mut middle_append = Some(middle_append);
    if credit_append.waiting() {
        if let Some(step) = middle_append.take() {
            // The transfer waits for the writer in between (a schema that locks more than the
            // stream): let that one commit first, and the interleaving does not happen.
            match h.finish(&between, "append to c8-middle", step).await {
                Ok(_) => committed.push((middle.0, "c8-middle".into())),
                Err(err) => failures.push(format!("the writer in between: {err}")),
            }
            h.commit(&between).await?;
        }
    }
    match h.finish(&transfer, "append to c8-to", credit_append).await {
        Ok(_) => {}
        Err(err) => failures.push(format!("the transfer: {err}")),
    }
    h.commit(&transfer).await?;
    committed.push((debit.0, "c8-from".into()));
    committed.push((credit.0, "c8-to".into()));
    if let Some(step) = middle_append {
        if !step.waiting() {
            h.wait_for("the readers to return the transfer's events");
            let waited = Instant::now();
            while !all_returned(&[debit.0, credit.0]) && waited.elapsed() < catch_up {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        match h.finish(&between, "append to c8-middle", step).await {
            Ok(_) => committed.push((middle.0, "c8-middle".into())),
            Err(err) => failures.push(format!("the writer in between: {err}")),
        }
        h.commit(&between).await?;
    }
    if serialised {
        notes.push(
            "appends to different streams waited for each other's commit: this schema serialises every append, \
             so positions follow commit order, and every append in the database waits for every other"
                .into(),
        );
    }

    // 3. Random load: each writer holds its transaction open a random moment after appending;
    // one transaction in four is a transfer that appends to two streams (in stream order, so
    // schemas that lock per stream cannot deadlock).
    h.wait_for(format!("{WRITERS} writers appending at random"));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = h.server.connect().await?;
        let (path, lock_streams) = (h.options.append_path, h.lock_streams);
        writers.push(tokio::spawn(async move {
            let mut rng = Rng(w as u64 + 11);
            let mut ok = Vec::new();
            let mut errors = Vec::new();
            for n in 0..EVENTS_PER_WRITER {
                let first = rng.below(STREAMS);
                let transfer = rng.below(4) == 0;
                let mut streams = vec![format!("c8-s{first}")];
                if transfer {
                    streams.push(format!("c8-s{}", (first + 1 + rng.below(STREAMS - 1)) % STREAMS));
                    streams.sort();
                }
                let events: Vec<TestEvent> =
                    (0..streams.len()).map(|i| event(8, 1_000 * (w as u64 + 1) + 10 * n + i as u64)).collect();
                let attempt = async {
                    let names: Vec<&str> = streams.iter().map(String::as_str).collect();
                    begin(&client, lock_streams, &names).await?;
                    for (stream, e) in streams.iter().zip(&events) {
                        try_append(&client, path, stream, None, std::slice::from_ref(e)).await?;
                    }
                    tokio::time::sleep(Duration::from_micros(rng.below(3_000) as u64)).await;
                    client.batch_execute("COMMIT").await.map_err(AppendError::from)
                };
                match attempt.await {
                    Ok(()) => ok.extend(events.iter().zip(&streams).map(|(e, s)| (e.0, s.clone()))),
                    Err(err) => {
                        let _ = client.batch_execute("ROLLBACK").await;
                        errors.push(err.to_string());
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

    // What is stored: read once more now that every writer has finished, waiting a bounded
    // time for events the reader returns late. An acknowledged event that never comes back was
    // lost by the append, not skipped by the readers.
    let checker = h.server.connect().await?;
    h.wait_for("read_all_after to return every committed event");
    let writers_done = Instant::now();
    let mut first_read = true;
    let (stored, returned_late_after) = loop {
        let stored: HashSet<Uuid> = read_everything(&checker, 1_000).await?.iter().map(|r| r.1).collect();
        let missing = committed.iter().filter(|(id, _)| !stored.contains(id)).count();
        if missing == 0 || writers_done.elapsed() > VISIBILITY_BOUND {
            // Returned only by a later read: the reader holds events back.
            let late = (missing == 0 && !first_read).then(|| writers_done.elapsed());
            break (stored, late);
        }
        first_read = false;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    done.store(true, Ordering::SeqCst);
    h.wait_for("the readers to read to the end");
    for r in readers {
        r.await.expect("reader task panicked").map_err(db("a concurrent reader"))?;
    }

    let lost = committed.iter().filter(|(id, _)| !stored.contains(id)).count();
    let committed_ids: HashMap<Uuid, &str> =
        committed.iter().filter(|(id, _)| stored.contains(id)).map(|(id, s)| (*id, s.as_str())).collect();
    let (mut late_skipped_by, mut middle_skipped_by, mut readers_missing) = (0, 0, 0);
    let mut details = Vec::new();
    let (mut missed_total, mut duplicates_total, mut disorder_total) = (0, 0, 0);
    for (i, d) in delivered.iter().enumerate() {
        let d = d.lock().expect("delivered");
        let ids: HashSet<Uuid> = d.iter().map(|e| e.0).collect();
        if committed_ids.contains_key(&late_event.0) && !ids.contains(&late_event.0) {
            late_skipped_by += 1;
        }
        if committed_ids.contains_key(&middle.0) && !ids.contains(&middle.0) {
            middle_skipped_by += 1;
        }
        let missed = committed_ids.keys().filter(|id| !ids.contains(id)).count();
        let duplicates = d.len() - ids.len();
        let mut last: BTreeMap<&str, i64> = BTreeMap::new();
        let mut disorder = 0;
        for (_, stream, version) in d.iter() {
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
        readers_missing += usize::from(missed > 0);
        duplicates_total += duplicates;
        disorder_total += disorder;
    }
    if !failures.is_empty() {
        details.push(format!("{} appends failed, e.g. {}", failures.len(), failures[0]));
    }
    let total = committed.len();
    let late_reader = h.visibility_delay().or(returned_late_after);
    let check = |passed: bool, summary: String, details: Vec<String>| Check {
        id: CONCURRENT_READERS,
        passed,
        summary,
        details,
        notes: notes.clone(),
    };
    if lost > 0 {
        return Ok(check(
            false,
            format!(
                "{lost} of {total} acknowledged appends are not stored: read_all_after does not return them, even {} s after \
                 the last commit; concurrent appends to one stream lost writes",
                VISIBILITY_BOUND.as_secs()
            ),
            details,
        ));
    }
    if let (Some(delay), true) = (late_reader, readers_missing > 0) {
        return Ok(check(
            false,
            format!(
                "read_all_after returned events only after {} ms: a reader that waits for events to settle skips any \
                 transaction open longer than that, and {readers_missing} of {READERS} readers skipped events here",
                delay.as_millis()
            ),
            details,
        ));
    }
    if late_skipped_by > 0 {
        return Ok(check(
            false,
            format!(
                "{late_skipped_by} of {READERS} readers skipped the event that committed after a later position was read: it is stored, and they will never read it"
            ),
            details,
        ));
    }
    if middle_skipped_by > 0 {
        return Ok(check(
            false,
            format!(
                "{middle_skipped_by} of {READERS} readers skipped an event whose position lies between two positions of a \
                 transfer that committed first: a checkpoint of the position alone moves past it, even behind the \
                 watermark; resume after (transaction id, position), read in that order"
            ),
            details,
        ));
    }
    if missed_total + duplicates_total + disorder_total > 0 || !failures.is_empty() {
        return Ok(check(
            false,
            "under random load with transfers, readers missed events, got one twice or out of its stream's order"
                .into(),
            details,
        ));
    }
    Ok(check(
        true,
        format!(
            "{READERS} readers each got every committed event once, in stream order, while {WRITERS} writers and transfers committed out of order"
        ),
        vec![format!("{total} events committed")],
    ))
}

/// Polls read_all_after from the start, keeping the checkpoint in memory, until the writers are
/// done (every committed event readable by then) and a read comes back empty.
async fn read_until_done(
    config: tokio_postgres::Config,
    done: Arc<AtomicBool>,
    delivered: Delivered,
) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let mut after: Option<String> = None;
    loop {
        let finished = done.load(Ordering::SeqCst);
        let rows = client.query(READ_ALL_SQL, &[&after, &50i32]).await?;
        {
            let mut d = delivered.lock().expect("delivered");
            for r in &rows {
                let stream: String = r.get(2);
                if stream.starts_with("c8-") {
                    d.push((r.get(1), stream, r.get(3)));
                }
            }
        }
        if let Some(last) = rows.last() {
            after = Some(last.get(0));
        } else if finished {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// A transfer appends to alice, then to bob, while a teller appends to bob: scripted so that,
/// without the order rule, the transfer takes bob's lock after its transaction got its id, and
/// commits bob's next version under an id older than the teller's. Readers must get bob's
/// events in version order. (The rule: lock every stream before the transaction's first write,
/// with lock_streams; schema.sql has the argument.)
async fn stream_order(h: &Harness<'_>) -> Result<Check, StoreError> {
    let setup = h.server.connect().await?;
    h.wait_for("opening c10-alice and c10-bob");
    for (stream, e) in [("c10-alice", event(10, 1)), ("c10-bob", event(10, 2))] {
        if let Err(err) = h.append(&setup, stream, Some(0), std::slice::from_ref(&e)).await {
            return Ok(fail(STREAM_ORDER, format!("opening {stream} failed: {err}")));
        }
    }
    let transfer = h.session("the transfer").await?;
    let teller = h.session("the teller").await?;
    let (debit, teller_event, credit) = (event(10, 3), event(10, 4), event(10, 5));
    h.begin(&transfer, &["c10-alice", "c10-bob"]).await?;
    h.wait_for("the transfer's append to c10-alice");
    if let Err(err) = h.append(&transfer.client, "c10-alice", None, std::slice::from_ref(&debit)).await {
        return Ok(fail(STREAM_ORDER, format!("the transfer's first append failed: {err}")));
    }
    teller.client.batch_execute("BEGIN").await.map_err(db("the teller: BEGIN"))?;
    let path = h.options.append_path;
    let teller_step = {
        let (client, e) = (teller.client.clone(), teller_event.clone());
        h.start(&teller, "append to c10-bob", async move { try_append(&client, path, "c10-bob", None, &[e]).await })
            .await?
    };
    let transfer_step = {
        let (client, e) = (transfer.client.clone(), credit.clone());
        h.start(&transfer, "append to c10-bob", async move { try_append(&client, path, "c10-bob", None, &[e]).await })
            .await?
    };
    // Commit whichever has finished its append, until both have: the one that waits for the
    // other's lock goes on once the other commits.
    let mut pending = vec![(&transfer, transfer_step), (&teller, teller_step)];
    let mut errors = Vec::new();
    while !pending.is_empty() {
        h.wait_for("the transfer or the teller to finish its append to c10-bob");
        let next = loop {
            let finished = pending.iter().position(|(_, step)| match step {
                Step::Done(_) => true,
                Step::Waiting { task, .. } => task.is_finished(),
            });
            match finished {
                Some(i) => break i,
                None => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        let (session, step) = pending.remove(next);
        match h.finish(session, "append to c10-bob", step).await {
            Ok(_) => h.commit(session).await?,
            Err(err) => {
                errors.push(format!("{}: {err}", session.name));
                let _ = session.client.batch_execute("ROLLBACK").await;
            }
        }
    }
    if !errors.is_empty() {
        return Ok(fail(STREAM_ORDER, format!("an append of the scripted transfer failed: {}", errors.join("; "))));
    }
    h.settle().await;
    h.wait_for("read_all_after to return c10-bob");
    let bob: Vec<i64> =
        read_everything(&setup, 1_000).await?.into_iter().filter(|row| row.2 == "c10-bob").map(|row| row.3).collect();
    if bob.windows(2).any(|w| w[0] >= w[1]) {
        let shown: Vec<String> = bob.iter().map(|v| v.to_string()).collect();
        return Ok(fail(
            STREAM_ORDER,
            format!(
                "read_all_after returns c10-bob as versions {}: the transfer took c10-bob's lock after its first write \
                 gave it a transaction id older than the teller's. {}",
                shown.join(", "),
                if h.lock_streams {
                    "lock_streams was called first, so it does not take the lock append_to_stream waits for: make it \
                     take the same locks"
                } else {
                    "Take every stream's lock before the transaction's first write: define lock_streams(text[]) and \
                     make append_to_stream refuse a transaction that has written without it"
                }
            ),
        ));
    }
    Ok(pass(
        STREAM_ORDER,
        "a transfer appending to two streams while a teller appends to one of them: each stream read back in version order",
    ))
}

/// Writers race on one stream, round after round, all with the same expected version: exactly
/// one must win each round, the others must fail, and every acknowledged event must be stored.
async fn racing_writers(h: &Harness<'_>) -> Result<Check, StoreError> {
    const WRITERS: usize = 8;
    const ROUNDS: i64 = 10;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = h.server.connect().await?;
        let (barrier, path) = (barrier.clone(), h.options.append_path);
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for round in 0..ROUNDS {
                barrier.wait().await;
                let e = event(9, (round as u64) * 100 + w as u64);
                let result = try_append(&client, path, "c9-hot", Some(round), std::slice::from_ref(&e)).await;
                outcomes.push((round, e.0, result));
            }
            outcomes
        }));
    }
    let mut by_round: BTreeMap<i64, (usize, usize)> = BTreeMap::new();
    let mut acknowledged: HashSet<Uuid> = HashSet::new();
    let mut other_errors = Vec::new();
    let mut unique_violations = 0;
    h.wait_for(format!("{WRITERS} writers racing {ROUNDS} rounds on c9-hot with the same expected version"));
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("writer task panicked"));
    }
    for (round, id, result) in results.into_iter().flatten() {
        let entry = by_round.entry(round).or_default();
        match result {
            Ok(_) => {
                entry.0 += 1;
                acknowledged.insert(id);
            }
            Err(err) => {
                entry.1 += 1;
                match err.sqlstate.as_deref() {
                    Some(super::SQLSTATE_VERSION_CONFLICT) => {}
                    Some("23505") => unique_violations += 1,
                    _ => other_errors.push(err.to_string()),
                }
            }
        }
    }
    let client = h.server.connect().await?;
    let stored: Vec<(Uuid, i64, serde_json::Value)> = h.stream_events(&client, "c9-hot").await?;
    let stored_ids: HashSet<Uuid> = stored.iter().map(|e| e.0).collect();
    let lost = acknowledged.iter().filter(|id| !stored_ids.contains(id)).count();
    let winners: Vec<usize> = by_round.values().map(|(ok, _)| *ok).collect();
    let mut details = Vec::new();
    if unique_violations > 0 {
        details.push(format!("{unique_violations} losers got a unique violation (23505), not ES409"));
    }
    if lost > 0 {
        return Ok(Check {
            id: CONFLICTS_UNDER_RACE,
            passed: false,
            summary: format!(
                "{lost} appends were acknowledged but their events are not stored: writers were told they won when they had lost"
            ),
            details: vec![format!("winners per round: {winners:?}")],
            notes: Vec::new(),
        });
    }
    if !other_errors.is_empty() {
        return Ok(fail(
            CONFLICTS_UNDER_RACE,
            format!("losers failed with errors that are not conflicts, e.g. {}", other_errors[0]),
        ));
    }
    if winners.iter().any(|&w| w != 1) {
        return Ok(fail(
            CONFLICTS_UNDER_RACE,
            format!("each round must have exactly one winner; winners per round: {winners:?}"),
        ));
    }
    let versions: Vec<i64> = stored.iter().map(|e| e.1).collect();
    if versions != (1..=ROUNDS).collect::<Vec<_>>() {
        return Ok(fail(
            CONFLICTS_UNDER_RACE,
            format!("the raced stream's versions are {versions:?}, not 1 to {ROUNDS}"),
        ));
    }
    Ok(Check {
        id: CONFLICTS_UNDER_RACE,
        passed: true,
        summary: format!(
            "{WRITERS} writers raced {ROUNDS} rounds on one stream: one winner a round, every loser told, nothing lost"
        ),
        details,
        notes: Vec::new(),
    })
}

/// Replaying from the start, in small batches through the checkpoints, gives the same events in
/// the same order as one big read, and every stream written one append at a time (by the checks
/// before) reads as versions 1, 2, 3... in order. The streams of the concurrent checks are left to
/// them: concurrent-readers and stream-order say what went wrong there, and why.
async fn replay_in_order(h: &Harness<'_>) -> Result<Check, StoreError> {
    let client = h.server.connect().await?;
    h.settle().await;
    h.wait_for("read_all_after to return every event in one read");
    let whole = read_everything(&client, 100_000).await?;
    h.wait_for("read_all_after to return every event in batches of 7");
    let batched = read_everything(&client, 7).await?;
    let ids = |rows: &[ReadRow]| rows.iter().map(|r| r.1).collect::<Vec<_>>();
    if ids(&whole) != ids(&batched) {
        return Ok(fail(
            REPLAY_IN_ORDER,
            format!(
                "reading in batches of 7 through the checkpoints gives {} events, one read gives {}, or a different order",
                batched.len(),
                whole.len()
            ),
        ));
    }
    let mut next: HashMap<&str, i64> = HashMap::new();
    let concurrent = |stream: &str| stream.starts_with("c8-") || stream.starts_with("c10-");
    for (_, _, stream, version, _) in whole.iter().filter(|row| !concurrent(&row.2)) {
        let expected = next.entry(stream.as_str()).or_insert(1);
        if *version != *expected {
            return Ok(fail(
                REPLAY_IN_ORDER,
                format!("stream {stream} replays version {version} where version {expected} was due"),
            ));
        }
        *expected += 1;
    }
    Ok(pass(
        REPLAY_IN_ORDER,
        format!(
            "the same {} events in batches of 7 as in one read; {} streams written one append at a time replay as versions 1, 2, 3...",
            whole.len(),
            next.len()
        ),
    ))
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}
