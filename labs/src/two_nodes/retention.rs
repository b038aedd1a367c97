//! Part A's scenario: a month-partitioned events table, four months of history, two
//! subscriptions, and the oldest month archived while one subscription holds a batch open and a
//! writer appends. `labs run two-nodes` plays it with the reference solution and tells it;
//! `labs check two-nodes` plays it with the attendee's file and judges it.
//!
//! Everything that decides a verdict is scripted, not left to timing: which subscription has
//! read how far, that a batch is open when the archive starts, that an append arrives while the
//! archive waits. A half-fix therefore fails on every run, for its own reason.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{pin_mut, SinkExt, TryStreamExt};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};
use uuid::Uuid;

use super::script::{self, Statement, Variable};
use crate::error::LabError;
use crate::lab::ExerciseFile;
use crate::store::read::RecordedEvent;
use crate::store::subscription::{Batch, Reader, Subscription};

/// Partitions from this many months ago...
pub const MONTHS_BACK: i32 = 4;
/// ...to this many months ahead (next month's is made before it starts, as a partition manager
/// does: a row with no partition to go to is refused).
pub const MONTHS_AHEAD: i32 = 1;
/// History backfilled into each past month.
pub const HISTORY_PER_MONTH: usize = 40;
/// Streams the history spreads over: `account-0` … `account-3`, ten versions a month each.
pub const STREAMS: usize = 4;
/// Events appended through append_to_stream in the current month before the archive.
pub const LIVE_APPENDS: usize = 4;
/// How far each subscription has read when the archive starts: all of the oldest month and
/// this many events of the next one.
pub const READ_INTO_SECOND_MONTH: usize = 15;
/// The batch subscription "projection" holds open while the archive starts.
pub const OPEN_BATCH: i32 = 10;
/// How long that batch stays open after the archive has started: longer than an append needs,
/// shorter than the reference's lock_timeout.
pub const OPEN_BATCH_HOLD: Duration = Duration::from_millis(1_000);
/// How long the lab waits for the archive part to finish once nothing holds it up.
const ARCHIVE_DEADLINE: Duration = Duration::from_secs(20);

/// The line that starts the exercise file's second part.
pub const ARCHIVE_MARKER: &str = "-- ==== ARCHIVE";

/// The two parts of an exercise file (template, solution or the attendee's).
#[derive(Clone, Debug)]
pub struct ExerciseParts {
    /// Everything before the ARCHIVE line: loaded as one script. It starts the file, so the
    /// server's error positions in it are positions in the file.
    pub schema: String,
    /// The ARCHIVE part's statements, with the lines they start on.
    pub archive: Vec<Statement>,
}

impl ExerciseParts {
    /// Splits `sql` at its `-- ==== ARCHIVE` line. `shown` names the file in errors.
    pub fn parse(sql: &str, shown: &str) -> Result<ExerciseParts, LabError> {
        let mut offset = 0;
        for (index, line) in sql.split_inclusive('\n').enumerate() {
            if line.trim_start().starts_with(ARCHIVE_MARKER) {
                let archive_text = &sql[offset + line.len()..];
                let archive = script::split(archive_text, index + 2);
                if archive.is_empty() {
                    return Err(LabError::Exercise(format!(
                        "{shown}:{}: the ARCHIVE part has no statement: write the statements that archive :\"partition\"",
                        index + 1
                    )));
                }
                return Ok(ExerciseParts { schema: sql[..offset].to_string(), archive });
            }
            offset += line.len();
        }
        Err(LabError::Exercise(format!(
            "{shown}: no `{ARCHIVE_MARKER} ====` line: keep the two parts of the template (`labs exercises init` writes a fresh copy)"
        )))
    }
}

/// What `store_contract_sql` adds, as messages name it.
pub const STORE_CONTRACT_NAMES: &str =
    "store_clusters, store_check_cluster, lock_streams, append_to_stream, read_all_after and subscriptions";

/// The store's contract as schema.sql writes it: the cluster record (`store_clusters`,
/// `store_check_cluster`), the order rule (`lock_streams`), `append_to_stream`, `read_all_after`
/// and the `subscriptions` table, between their ANCHOR lines. The lab adds them after the attendee's
/// table, unchanged, so the partitioned table is judged by the store's own functions.
pub fn store_contract_sql() -> Result<String, LabError> {
    let mut sql = String::new();
    for anchor in ["clusters", "order", "append", "read_all", "subscriptions"] {
        let start = format!("-- ANCHOR: {anchor}\n");
        let end = format!("-- ANCHOR_END: {anchor}");
        let text = crate::store::SCHEMA_SQL;
        let body = text
            .find(&start)
            .map(|at| &text[at + start.len()..])
            .and_then(|rest| rest.find(&end).map(|to| &rest[..to]))
            .ok_or_else(|| LabError::Script(format!("labs/src/store/schema.sql has no `{start}` … `{end}` block")))?;
        sql.push_str(body);
    }
    Ok(sql)
}

/// One monthly partition, named and bounded in UTC.
#[derive(Clone, Debug, Serialize)]
pub struct Month {
    /// `events_2026_08`.
    pub partition: String,
    /// Months from the current one: -4 … 1.
    pub offset: i32,
    /// `2026-08-01 00:00:00+00`.
    pub start: String,
    pub end: String,
}

impl Month {
    /// `4 months ago`, `this month`, `next month`: what the report says instead of a date, so
    /// that it reads the same whenever it runs.
    pub fn label(&self) -> String {
        match self.offset {
            0 => "this month".into(),
            1 => "next month".into(),
            -1 => "last month".into(),
            n if n < 0 => format!("{} months ago", -n),
            n => format!("in {n} months"),
        }
    }

    /// A timestamp `minute` minutes into the month (UTC).
    fn at_minute(&self, minute: usize) -> String {
        format!("{} {:02}:{:02}:00+00", &self.start[..10], minute / 60, minute % 60)
    }

    pub fn variables(&self) -> Vec<Variable> {
        vec![
            Variable { name: "partition", value: self.partition.clone() },
            Variable { name: "month_start", value: self.start.clone() },
            Variable { name: "month_end", value: self.end.clone() },
        ]
    }
}

/// The months around now, oldest first, computed by the server in UTC.
pub async fn months(client: &Client) -> Result<Vec<Month>, LabError> {
    let rows = client
        .query(
            "SELECT 'events_' || to_char(m, 'YYYY_MM'), k,
                    to_char(m, 'YYYY-MM-DD HH24:MI:SS') || '+00',
                    to_char(m + interval '1 month', 'YYYY-MM-DD HH24:MI:SS') || '+00'
               FROM generate_series(-$1::int, $2::int) AS k,
                    LATERAL (SELECT date_trunc('month', now() AT TIME ZONE 'UTC') + k * interval '1 month' AS m) AS month
              ORDER BY k",
            &[&MONTHS_BACK, &MONTHS_AHEAD],
        )
        .await
        .map_err(LabError::db("computing the months around now"))?;
    Ok(rows.iter().map(|r| Month { partition: r.get(0), offset: r.get(1), start: r.get(2), end: r.get(3) }).collect())
}

/// `CREATE TABLE … PARTITION OF events …` for each month.
pub fn partitions_ddl(months: &[Month]) -> String {
    months
        .iter()
        .map(|m| {
            format!(
                "CREATE TABLE {} PARTITION OF events FOR VALUES FROM ({}) TO ({});\n",
                script::quote_identifier(&m.partition),
                script::quote_literal(&m.start),
                script::quote_literal(&m.end)
            )
        })
        .collect()
}

/// Why a database could not be set up from an exercise file: the first failed check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetupFailure {
    /// The SCHEMA part does not load: `file:line:column: message`.
    Load(String),
    /// events is not partitioned by range on recorded_at.
    NotByMonth(String),
    /// The monthly partitions or the store's functions do not fit the table.
    Contract(String),
}

/// A database set up from an exercise file: the SCHEMA part, the month partitions, the store's
/// contract. Returns the months, or the check that failed.
pub async fn set_up(
    client: &Client,
    file: &ExerciseFile,
    parts: &ExerciseParts,
    months: &[Month],
) -> Result<Result<(), SetupFailure>, LabError> {
    if let Err(e) = client.batch_execute(&parts.schema).await {
        return Ok(Err(SetupFailure::Load(file.locate(&e, 0))));
    }
    let layout = client
        .query_opt(
            "SELECT p.partstrat::text,
                    (SELECT string_agg(a.attname::text, ', ' ORDER BY a.attnum) FROM pg_attribute a
                      WHERE a.attrelid = p.partrelid AND a.attnum = ANY (p.partattrs::int2[])),
                    p.partexprs IS NOT NULL
               FROM pg_partitioned_table p WHERE p.partrelid = to_regclass('events')",
            &[],
        )
        .await
        .map_err(LabError::db("reading how events is partitioned"))?;
    let by_month = match &layout {
        None => Err("events is not a partitioned table".to_string()),
        Some(row) => {
            let (strategy, columns, expressions): (String, Option<String>, bool) = (row.get(0), row.get(1), row.get(2));
            if strategy == "r" && columns.as_deref() == Some("recorded_at") && !expressions {
                Ok(())
            } else {
                let how = match strategy.as_str() {
                    "r" => "by range",
                    "l" => "by list",
                    "h" => "by hash",
                    _ => "in another way",
                };
                Err(format!(
                    "events is partitioned {how} on ({}); the archive removes a month, so partition it BY RANGE (recorded_at)",
                    columns.unwrap_or_else(|| "an expression".into())
                ))
            }
        }
    };
    if let Err(why) = by_month {
        return Ok(Err(SetupFailure::NotByMonth(why)));
    }
    if let Err(e) = client.batch_execute(&partitions_ddl(months)).await {
        return Ok(Err(SetupFailure::Contract(format!(
            "the lab could not create the monthly partitions events_YYYY_MM: {}",
            crate::store::server_message(&e)
        ))));
    }
    if let Err(e) = client.batch_execute(&store_contract_sql()?).await {
        let already = matches!(e.code().map(|c| c.code()), Some("42P07" | "42723"));
        return Ok(Err(SetupFailure::Contract(if already {
            format!(
                "{}: the lab adds {STORE_CONTRACT_NAMES} itself, from labs/src/store/schema.sql; \
                 remove them from the SCHEMA part",
                crate::store::server_message(&e)
            )
        } else {
            format!(
                "the store's {STORE_CONTRACT_NAMES} do not fit this events table: {}",
                crate::store::server_message(&e)
            )
        })));
    }
    Ok(Ok(()))
}

/// An event the lab wrote, as a subscription delivers it: (event id, stream, version). Two rows
/// with one id (a retry stored twice) or one version (a second writer) count as two.
pub type EventKey = (Uuid, String, i64);

fn key(e: &RecordedEvent) -> EventKey {
    (e.event_id, e.stream_id.clone(), e.version)
}

/// Deterministic ids: the same history on every run.
fn history_id(month: usize, n: usize) -> Uuid {
    Uuid::from_u128(0x0990_0000_0000_4000_8000_0000_0000_0000 | (month as u128) << 16 | n as u128)
}

fn live_id(n: usize) -> Uuid {
    Uuid::from_u128(0x0990_0001_0000_4000_8000_0000_0000_0000 | n as u128)
}

/// An attempt to store something the keys must refuse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum Probe {
    /// The server refused it: its message (and detail), verbatim.
    Refused(String),
    /// It was stored.
    Stored,
}

/// The server's message, SQLSTATE and detail, for an error a reader should see verbatim.
pub fn verbatim(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} (SQLSTATE {}); {detail}", db.message(), db.code().code()),
            None => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        },
        None => e.to_string(),
    }
}

/// What one run of the ARCHIVE part did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ArchiveRun {
    /// Statements that ran without error.
    pub statements_run: usize,
    /// The first error: `file:line: message`, and the statement's first line.
    pub error: Option<String>,
    /// The part ended inside a transaction block (psql would roll it back on exit).
    pub left_open: bool,
    /// How many `COPY … TO STDOUT` ran, and the lines they wrote.
    pub copies: usize,
    pub copied_lines: usize,
    /// What they wrote: the archive.
    #[serde(skip)]
    pub copied: Vec<u8>,
    /// The part's session was seen waiting on a lock (a detach waiting for the open batch).
    pub waited_on_lock: bool,
    /// A partition of events left half detached (a CONCURRENTLY cancelled in its second step).
    pub detach_pending: bool,
}

/// Runs the ARCHIVE part on `client`, statement by statement, for `month`.
async fn run_archive(client: &Client, shown: &str, statements: &[Statement], month: &Month) -> ArchiveRun {
    let mut run = ArchiveRun::default();
    let variables = month.variables();
    for statement in statements {
        let first_line = statement.text.lines().next().unwrap_or_default().to_string();
        let text = match script::substitute(statement, &variables) {
            Ok(text) => text,
            Err(unknown) => {
                run.error = Some(format!(
                    "{shown}:{}: {} is not set by the lab; use :\"partition\", :'partition', :'month_start' or :'month_end'",
                    unknown.line, unknown.written
                ));
                break;
            }
        };
        let result = if statement.is_copy_to_stdout() {
            copy_out(client, &text).await.map(|bytes| {
                run.copies += 1;
                run.copied_lines += bytes.iter().filter(|&&b| b == b'\n').count();
                run.copied.extend_from_slice(&bytes);
            })
        } else {
            client.batch_execute(&text).await
        };
        match result {
            Ok(()) => run.statements_run += 1,
            Err(e) => {
                run.error = Some(format!("{shown}:{}: {} [{first_line}]", statement.line, verbatim(&e)));
                break;
            }
        }
    }
    // Inside a transaction block a later statement starts after its transaction did; alone
    // (one simple query, its own transaction) the two timestamps are the same.
    let open = client
        .simple_query("SELECT transaction_timestamp() <> statement_timestamp()")
        .await
        .map(|messages| messages.iter().any(|m| matches!(m, SimpleQueryMessage::Row(row) if row.get(0) == Some("t"))));
    match open {
        Ok(false) => {}
        // An aborted transaction block refuses every statement but ROLLBACK.
        Ok(true) | Err(_) => {
            if run.error.is_none() {
                run.left_open = true;
            }
            let _ = client.batch_execute("ROLLBACK").await;
        }
    }
    run
}

async fn copy_out(client: &Client, statement: &str) -> Result<Vec<u8>, tokio_postgres::Error> {
    let stream = client.copy_out(statement).await?;
    pin_mut!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = stream.try_next().await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// What an append made while the archive ran experienced.
#[derive(Clone, Debug, Serialize)]
pub struct AppendProbe {
    /// It was seen waiting on a lock (queued behind the archive's).
    pub waited_on_lock: bool,
    /// It committed (perhaps only after the archive).
    pub committed: bool,
    pub error: Option<String>,
}

/// The state of a month after an archive run.
#[derive(Clone, Debug, Serialize)]
pub struct MonthState {
    /// A table of that name still exists (attached or detached).
    pub table_exists: bool,
    /// It is still a partition of events.
    pub attached: bool,
    /// Its rows still visible through events.
    pub rows_in_events: i64,
    /// The table's size on disk, when it still exists.
    pub bytes: i64,
}

async fn month_state(client: &Client, month: &Month) -> Result<MonthState, LabError> {
    let row = client
        .query_one(
            "SELECT to_regclass($1::text) IS NOT NULL,
                    EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1::text)
                              AND inhparent = 'events'::regclass),
                    (SELECT count(*) FROM events WHERE recorded_at >= $2::text::timestamptz AND recorded_at < $3::text::timestamptz),
                    coalesce(pg_total_relation_size(to_regclass($1::text)), 0)",
            &[&month.partition, &month.start, &month.end],
        )
        .await
        .map_err(LabError::db(format!("looking at {}", month.partition)))?;
    Ok(MonthState { table_exists: row.get(0), attached: row.get(1), rows_in_events: row.get(2), bytes: row.get(3) })
}

/// One subscription's tally: what it was owed, what it delivered.
#[derive(Clone, Debug, Serialize)]
pub struct Tally {
    pub subscription: &'static str,
    pub delivered: usize,
    /// Owed and never delivered: skipped.
    pub missed: usize,
    pub twice: usize,
    /// A few of the missed ones, `stream vN`.
    pub missed_examples: Vec<String>,
}

/// Everything the scenario observed; the lab tells it, the check judges it.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub months: Vec<Month>,
    /// The backfill's COPY straight into each month's partition: the first refusal, if any.
    pub backfill_into_partitions_refused: Option<String>,
    /// An event id stored four months ago, sent again as the second event of an append to
    /// another stream, this month.
    pub id_in_another_month: Probe,
    /// A second row for a stream version stored four months ago, inserted this month.
    pub version_in_another_month: Probe,
    /// The first archive: the oldest month, read by every subscription.
    pub archive: ArchiveRun,
    pub append_during_archive: AppendProbe,
    /// How long subscription "projection" held its batch open.
    #[serde(skip)]
    pub batch_held: Duration,
    pub oldest_after: MonthState,
    /// Events of the oldest month found in what the archive's COPY wrote.
    pub archived_found: usize,
    /// Events of the later months still in events after the first archive, and how many were
    /// expected.
    pub later_months_rows: i64,
    pub later_months_expected: i64,
    /// The second archive: the next month, which subscription "audit" has not finished.
    pub lagging_archive: ArchiveRun,
    pub second_after: MonthState,
    pub tallies: Vec<Tally>,
}

impl Outcome {
    /// The month archived first, and the one the lagging subscription protects.
    pub fn oldest(&self) -> &Month {
        &self.months[0]
    }

    pub fn second(&self) -> &Month {
        &self.months[1]
    }

    /// `text` with every partition name replaced by `events_YYYY_MM`, so a report reads the
    /// same in every month.
    pub fn undated(&self, text: &str) -> String {
        self.months.iter().fold(text.to_string(), |t, m| t.replace(&m.partition, "events_YYYY_MM"))
    }
}

/// A session on `config`'s database, its connection driven in the background.
pub async fn connect(config: &Config) -> Result<Client, LabError> {
    let (client, connection) = config.connect(NoTls).await.map_err(LabError::db("connecting to the lab's database"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn pid_of(client: &Client) -> Result<i32, LabError> {
    Ok(client.query_one("SELECT pg_backend_pid()", &[]).await.map_err(LabError::db("pg_backend_pid()"))?.get(0))
}

/// Whether session `pid` waits on a heavyweight lock right now.
async fn waits_on_lock(watcher: &Client, pid: i32) -> Result<bool, LabError> {
    Ok(watcher
        .query_one(
            "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false) FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
        .map_err(LabError::db("watching a session's wait"))?
        .get(0))
}

/// Plays the scenario in the database `config` points at, which [`set_up`] prepared.
pub async fn play(
    config: &Config,
    file_shown: &str,
    parts: &ExerciseParts,
    months: Vec<Month>,
) -> Result<Outcome, LabError> {
    let mut admin = connect(config).await?;
    let mut owed: Vec<EventKey> = Vec::new();

    // History: each past month COPied straight into its partition, one transaction a month, as
    // a backfill does. If the table cannot take that, through events instead, so the rest of
    // the scenario still runs.
    let past: Vec<&Month> = months.iter().filter(|m| m.offset < 0).collect();
    let mut backfill_into_partitions_refused = None;
    let mut history: Vec<Vec<EventKey>> = Vec::new();
    for (k, month) in past.iter().enumerate() {
        let mut lines = String::new();
        let mut keys = Vec::new();
        for n in 0..HISTORY_PER_MONTH {
            let id = history_id(k, n);
            let stream = format!("account-{}", n % STREAMS);
            let version = (k * HISTORY_PER_MONTH / STREAMS + n / STREAMS + 1) as i64;
            lines.push_str(&format!(
                "{id}\t{stream}\t{version}\tDeposited\t{{\"amount_cents\": {}}}\t{}\n",
                100 * (n + 1),
                month.at_minute(n)
            ));
            keys.push((id, stream, version));
        }
        let columns = "(event_id, stream_id, version, type, data, recorded_at)";
        let direct = format!("COPY {} {columns} FROM STDIN", script::quote_identifier(&month.partition));
        let through_parent = format!("COPY events {columns} FROM STDIN");
        let first_try = if backfill_into_partitions_refused.is_none() { &direct } else { &through_parent };
        if let Err(e) = copy_in(&admin, first_try, &lines).await {
            if backfill_into_partitions_refused.is_none() && first_try == &direct {
                backfill_into_partitions_refused = Some(format!("COPY into {}: {}", month.partition, verbatim(&e)));
                copy_in(&admin, &through_parent, &lines)
                    .await
                    .map_err(LabError::db(format!("backfilling {} through events", month.partition)))?;
            } else {
                return Err(LabError::db(format!("backfilling {}", month.partition))(e));
            }
        }
        owed.extend(keys.iter().cloned());
        history.push(keys);
    }

    // Live appends this month, through the store's function.
    for n in 0..LIVE_APPENDS {
        let stream = format!("account-{}", n % STREAMS);
        let version = append_one(&admin, &stream, live_id(n), "Deposited").await.map_err(|e| {
            LabError::Script(format!("append_to_stream into the partitioned events failed: {}", verbatim(&e)))
        })?;
        owed.push((live_id(n), stream, version));
    }

    // The keys a month cannot hold.
    let reused = history[0][0].0;
    let fresh = Uuid::from_u128(0x0990_0002_0000_4000_8000_0000_0000_0001);
    let id_in_another_month = match append_two(&admin, "retried-elsewhere", fresh, reused).await {
        Ok(version) => {
            owed.push((fresh, "retried-elsewhere".into(), version - 1));
            owed.push((reused, "retried-elsewhere".into(), version));
            Probe::Stored
        }
        Err(e) => Probe::Refused(verbatim(&e)),
    };
    let forged = Uuid::from_u128(0x0990_0002_0000_4000_8000_0000_0000_0002);
    let version_in_another_month = match admin
        .execute(
            "INSERT INTO events (event_id, stream_id, version, type, data) VALUES ($1, 'account-1', 2, 'Forged', '{}')",
            &[&forged],
        )
        .await
    {
        Ok(_) => {
            owed.push((forged, "account-1".into(), 2));
            Probe::Stored
        }
        Err(e) => Probe::Refused(verbatim(&e)),
    };

    // Two subscriptions, both past the oldest month, both inside the next one.
    let mut delivered: BTreeMap<&'static str, Vec<EventKey>> = BTreeMap::new();
    for name in ["audit", "projection"] {
        let subscription = subscription(name, (HISTORY_PER_MONTH + READ_INTO_SECOND_MONTH) as i32);
        subscription.create(&admin).await?;
        let keys = read_batch(&mut admin, &subscription).await?;
        delivered.entry(name).or_default().extend(keys);
    }

    // The first archive, while "projection" holds a batch open and a writer appends. The
    // batch runs beside the script in this task (join!, not a spawned task): its projection
    // step waits for the script's word to commit.
    let (read_done, batch_read) = oneshot::channel::<()>();
    let (release, released) = oneshot::channel::<()>();
    let mut projection_client = connect(config).await?;
    let open_batch = async {
        let mut keys = Vec::new();
        let batch = subscription("projection", OPEN_BATCH)
            .process_batch(&mut projection_client, async |_tx, events| {
                keys.extend(events.iter().map(key));
                let _ = read_done.send(());
                let _ = released.await;
                Ok(())
            })
            .await;
        batch.map(|_| keys)
    };
    let oldest = months[0].clone();
    let script = async {
        batch_read
            .await
            .map_err(|_| LabError::Script("subscription projection's batch ended before it read".into()))?;
        let archive_client = connect(config).await?;
        let archive_pid = pid_of(&archive_client).await?;
        let archive_started = Instant::now();
        let (shown, statements, month) = (file_shown.to_string(), parts.archive.clone(), oldest.clone());
        let archive_task = tokio::spawn(async move { run_archive(&archive_client, &shown, &statements, &month).await });
        // Wait until the archive waits for something (the open batch) or is done.
        let mut archive_waited = false;
        while !archive_task.is_finished() && archive_started.elapsed() < Duration::from_secs(10) {
            if waits_on_lock(&admin, archive_pid).await? {
                archive_waited = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // An append now: it must not queue behind the archive.
        let append_client = connect(config).await?;
        let append_pid = pid_of(&append_client).await?;
        let append_task =
            tokio::spawn(
                async move { append_one(&append_client, "account-0", live_id(LIVE_APPENDS), "Deposited").await },
            );
        let mut append_waited = false;
        let mut seen_waiting = 0;
        let probe_started = Instant::now();
        while !append_task.is_finished() && probe_started.elapsed() < Duration::from_secs(2) {
            if waits_on_lock(&admin, append_pid).await? {
                seen_waiting += 1;
                // Seen waiting on several polls in a row: it is queued, not passing through.
                if seen_waiting >= 10 {
                    append_waited = true;
                    break;
                }
            } else {
                seen_waiting = 0;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !append_task.is_finished() && !append_waited {
            append_waited = true; // two seconds for one append: something held it up
        }

        // Hold the batch a while longer, as a slow projection would, then let it commit.
        if let Some(rest) = OPEN_BATCH_HOLD.checked_sub(archive_started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        let batch_held = archive_started.elapsed();
        let _ = release.send(());

        let mut archive = match tokio::time::timeout(ARCHIVE_DEADLINE, archive_task).await {
            Ok(run) => run?,
            Err(_) => ArchiveRun {
                error: Some(format!(
                    "{file_shown}: the ARCHIVE part did not finish within {} s of the open batch's commit",
                    ARCHIVE_DEADLINE.as_secs()
                )),
                ..ArchiveRun::default()
            },
        };
        archive.waited_on_lock = archive_waited;
        let appended = match tokio::time::timeout(ARCHIVE_DEADLINE, append_task).await {
            Ok(result) => Some(result?),
            Err(_) => None,
        };
        Ok::<_, LabError>((archive, append_waited, appended, batch_held))
    };
    let (projection_keys, scripted) = tokio::join!(open_batch, script);
    let (mut archive, append_waited, appended, batch_held) = scripted?;
    delivered.entry("projection").or_default().extend(projection_keys?);
    archive.detach_pending = detach_pending(&admin).await?;
    let append_during_archive = match appended {
        Some(Ok(version)) => {
            owed.push((live_id(LIVE_APPENDS), "account-0".into(), version));
            AppendProbe { waited_on_lock: append_waited, committed: true, error: None }
        }
        Some(Err(e)) => AppendProbe { waited_on_lock: append_waited, committed: false, error: Some(verbatim(&e)) },
        None => AppendProbe {
            waited_on_lock: true,
            committed: false,
            error: Some(format!("still waiting {} s after the batch committed", ARCHIVE_DEADLINE.as_secs())),
        },
    };

    let oldest_after = month_state(&admin, &oldest).await?;
    let archived_found = history[0]
        .iter()
        .filter(|(id, _, _)| {
            let text = id.to_string();
            contains(&archive.copied, text.as_bytes()) || contains(&archive.copied, id.as_bytes())
        })
        .count();
    let later_months_expected = owed.iter().filter(|k| !history[0].contains(k)).count() as i64;
    let later_months_rows: i64 = admin
        .query_one("SELECT count(*) FROM events WHERE recorded_at >= $1::text::timestamptz", &[&months[1].start])
        .await
        .map_err(LabError::db("counting the later months' events"))?
        .get(0);

    // The second archive: the next month, which neither subscription has finished.
    let second = months[1].clone();
    let lagging_client = connect(config).await?;
    let lagging_archive = run_archive(&lagging_client, file_shown, &parts.archive, &second).await;
    let second_after = month_state(&admin, &second).await?;

    // Both subscriptions read on to the end.
    for name in ["audit", "projection"] {
        let subscription = subscription(name, 100);
        for _ in 0..1_000 {
            let keys = read_batch(&mut admin, &subscription).await?;
            if keys.is_empty() {
                break;
            }
            delivered.entry(name).or_default().extend(keys);
        }
    }
    let tallies = delivered.iter().map(|(&name, keys)| tally(name, keys, &owed)).collect();

    Ok(Outcome {
        months,
        backfill_into_partitions_refused,
        id_in_another_month,
        version_in_another_month,
        archive,
        append_during_archive,
        batch_held,
        oldest_after,
        archived_found,
        later_months_rows,
        later_months_expected,
        lagging_archive,
        second_after,
        tallies,
    })
}

fn tally(subscription: &'static str, delivered: &[EventKey], owed: &[EventKey]) -> Tally {
    let mut counts: HashMap<&EventKey, usize> = HashMap::new();
    for k in delivered {
        *counts.entry(k).or_default() += 1;
    }
    let missed: Vec<&EventKey> = owed.iter().filter(|k| !counts.contains_key(k)).collect();
    Tally {
        subscription,
        delivered: delivered.len(),
        missed: missed.len(),
        twice: counts.values().filter(|&&n| n > 1).count(),
        missed_examples: missed.iter().take(3).map(|(_, stream, version)| format!("{stream} v{version}")).collect(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn subscription(name: &str, batch_size: i32) -> Subscription {
    Subscription { name: name.into(), batch_size, reader: Reader::ContractFunction }
}

/// One batch of a subscription, through the store's contract; the keys it delivered.
async fn read_batch(client: &mut Client, subscription: &Subscription) -> Result<Vec<EventKey>, LabError> {
    let mut keys = Vec::new();
    let batch = subscription
        .process_batch(client, async |_tx, events| {
            keys.extend(events.iter().map(key));
            Ok(())
        })
        .await?;
    match batch {
        Batch::Processed(_) | Batch::CaughtUp => Ok(keys),
        Batch::Standby => Err(LabError::Script(format!(
            "subscription {} is held by another instance; the lab runs one instance of each",
            subscription.name
        ))),
    }
}

async fn copy_in(client: &Client, statement: &str, lines: &str) -> Result<(), tokio_postgres::Error> {
    let sink = client.copy_in::<_, Bytes>(statement).await?;
    pin_mut!(sink);
    sink.send(Bytes::from(lines.to_string())).await?;
    sink.finish().await.map(|_| ())
}

/// append_to_stream with one event and expected version "any"; the stream's new version.
async fn append_one(client: &Client, stream: &str, id: Uuid, event_type: &str) -> Result<i64, tokio_postgres::Error> {
    let data = serde_json::json!({ "amount_cents": 100 });
    let row = client
        .query_one(
            crate::store::append::APPEND_SQL,
            &[&stream, &None::<i64>, &vec![id], &vec![event_type], &vec![&data], &None::<Vec<serde_json::Value>>],
        )
        .await?;
    Ok(row.get(0))
}

/// append_to_stream with two events, `first` then `second`, to a new stream.
async fn append_two(client: &Client, stream: &str, first: Uuid, second: Uuid) -> Result<i64, tokio_postgres::Error> {
    let data = serde_json::json!({ "amount_cents": 100 });
    let row = client
        .query_one(
            crate::store::append::APPEND_SQL,
            &[
                &stream,
                &Some(0i64),
                &vec![first, second],
                &vec!["Deposited", "Deposited"],
                &vec![&data, &data],
                &None::<Vec<serde_json::Value>>,
            ],
        )
        .await?;
    Ok(row.get(0))
}

async fn detach_pending(client: &Client) -> Result<bool, LabError> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = 'events'::regclass AND inhdetachpending)",
            &[],
        )
        .await
        .map_err(LabError::db("looking for a partition left DETACH PENDING"))?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_and_the_solution_have_both_parts() {
        for (name, sql) in
            [("retention.sql", super::super::EXERCISE.template), ("retention.solution.sql", super::super::SOLUTION_SQL)]
        {
            let parts = ExerciseParts::parse(sql, name).unwrap();
            assert!(parts.schema.contains("PARTITION BY RANGE (recorded_at)"), "{name}");
            assert!(!parts.archive.is_empty(), "{name}");
            // The schema part is the start of the file: error positions map one to one.
            assert!(sql.starts_with(&parts.schema), "{name}");
        }
    }

    #[test]
    fn a_file_without_the_archive_line_says_what_to_do() {
        let err = ExerciseParts::parse("CREATE TABLE events ();\n", "mine.sql").unwrap_err().to_string();
        assert!(err.starts_with("mine.sql: no `-- ==== ARCHIVE ====` line"), "{err}");
        let err =
            ExerciseParts::parse("SELECT 1;\n-- ==== ARCHIVE ====\n-- nothing\n", "mine.sql").unwrap_err().to_string();
        assert!(err.starts_with("mine.sql:2: the ARCHIVE part has no statement"), "{err}");
    }

    #[test]
    fn the_archive_statements_carry_their_file_lines() {
        let sql = "CREATE TABLE events ();\n-- ==== ARCHIVE ====\n\nSELECT 1;\nSELECT\n  2;\n";
        let parts = ExerciseParts::parse(sql, "f.sql").unwrap();
        assert_eq!(parts.archive.iter().map(|s| s.line).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(parts.schema, "CREATE TABLE events ();\n");
    }

    #[test]
    fn the_store_contract_is_found_in_schema_sql() {
        let sql = store_contract_sql().unwrap();
        assert!(sql.contains("CREATE FUNCTION append_to_stream"));
        assert!(sql.contains("CREATE FUNCTION read_all_after"));
        assert!(sql.contains("CREATE TABLE subscriptions"));
        assert!(!sql.contains("CREATE TABLE events"), "the lab's contract must not bring the store's own table");
    }

    #[test]
    fn months_are_labelled_without_dates() {
        let m = |offset| Month {
            partition: String::new(),
            offset,
            start: "2026-08-01 00:00:00+00".into(),
            end: String::new(),
        };
        assert_eq!(m(-4).label(), "4 months ago");
        assert_eq!(m(-1).label(), "last month");
        assert_eq!(m(0).label(), "this month");
        assert_eq!(m(1).label(), "next month");
        assert_eq!(m(0).at_minute(39), "2026-08-01 00:39:00+00");
    }

    #[test]
    fn a_tally_counts_what_was_missed_and_what_came_twice() {
        let k = |n: u128, v| (Uuid::from_u128(n), "s".to_string(), v);
        let owed = vec![k(1, 1), k(2, 2), k(3, 3)];
        let t = tally("audit", &[k(1, 1), k(1, 1), k(3, 3)], &owed);
        assert_eq!((t.delivered, t.missed, t.twice), (3, 1, 1));
        assert_eq!(t.missed_examples, vec!["s v2"]);
    }
}
