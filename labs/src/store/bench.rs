//! `labs bench store`: the store's append shapes and readers against their ceilings, in one run
//! on one server, so the ratios compare like with like on a shared, noisy machine.
//!
//! Ceilings: a plain binary COPY of the same rows into the same table and indexes (for the
//! append shapes), a plain single-row INSERT per transaction (for one event per transaction:
//! the store's checks must not cost group commit), and `position > checkpoint` (for the
//! watermark reader). Every figure is the median of `runs`; the shapes run in turn within each
//! run, each after a TRUNCATE and a CHECKPOINT so each starts from the same state. Then
//! `pgbench.rs` runs the single-event appends as prepared statements on the server, decomposed,
//! with and without the order rule.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::types::Type;
use tokio_postgres::Client;
use uuid::Uuid;

use super::{append, append_bulk, ExpectedVersion, NewEvent, StoreError, StreamAppend};
use crate::pg::Server;

fn db(context: &str) -> impl FnOnce(tokio_postgres::Error) -> StoreError + use<> {
    let context = context.to_string();
    StoreError::db(context)
}

/// How much each shape writes; `scale` multiplies them all (1.0 takes about 12 s a run here).
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub runs: usize,
    pub scale: f64,
    /// Only these shapes and their ceilings; empty for all.
    pub only: Vec<Shape>,
}

/// One shape's medians. `ratio_to_ceiling` is the median of the run-by-run ratios.
#[derive(Clone, Debug, Serialize)]
pub struct ShapeResult {
    pub shape: &'static str,
    pub writers: usize,
    pub events: u64,
    pub median_seconds: f64,
    pub events_per_second: f64,
    pub wal_bytes_per_event: f64,
    /// Events/s over the shape's ceiling's events/s, measured in the same runs.
    pub ratio_to_ceiling: Option<f64>,
    pub ceiling: Option<&'static str>,
    pub target: Option<f64>,
    pub meets_target: Option<bool>,
}

/// The watermark's cost, measured: a transaction that has a transaction id and stays open, in
/// another database of the same cluster, holds back the watermark reader until it ends.
#[derive(Clone, Debug, Serialize)]
pub struct WatermarkStall {
    /// Where the open transaction was (another database when the server allows creating one).
    pub open_transaction_in: String,
    pub held_open_seconds: f64,
    /// From the append's commit until each reader returned the event.
    pub position_reader_seconds: f64,
    pub watermark_reader_seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub server: String,
    pub fsync: String,
    pub synchronous_commit: String,
    pub runs: usize,
    /// /proc/loadavg when the run started and when it ended (Linux): figures from a loaded
    /// machine compare only within the run.
    pub load_average: Option<(String, String)>,
    pub shapes: Vec<ShapeResult>,
    /// The same appends as prepared statements on the server (pgbench), when it is installed.
    pub pgbench: Option<super::pgbench::PgbenchReport>,
    pub watermark_stall: WatermarkStall,
}

/// The 1, 5 and 15 minute load averages, and the runnable and total processes.
fn load_average() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg").ok().map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
}

impl BenchReport {
    fn render(&self) -> String {
        let mut out = format!(
            "labs bench store: {} (fsync {}, synchronous_commit {}), median of {} runs\n\n",
            self.server, self.fsync, self.synchronous_commit, self.runs
        );
        if !self.shapes.is_empty() {
            out += &format!(
                "{:<34} {:>7} {:>8} {:>10} {:>9}  {:<26} {}\n",
                "shape", "writers", "events", "events/s", "WAL B/ev", "ratio to ceiling", "target"
            );
        }
        for s in &self.shapes {
            let ratio = match (s.ratio_to_ceiling, s.ceiling) {
                (Some(r), Some(c)) => format!("{:>5.0}% of {c}", r * 100.0),
                _ => "ceiling".to_string(),
            };
            let target = match (s.target, s.meets_target) {
                (Some(t), Some(true)) => format!(">= {:.0}%: met", t * 100.0),
                (Some(t), Some(false)) => format!(">= {:.0}%: NOT met", t * 100.0),
                _ => String::new(),
            };
            out += &format!(
                "{:<34} {:>7} {:>8} {:>10.0} {:>9.0}  {:<26} {}\n",
                s.shape, s.writers, s.events, s.events_per_second, s.wal_bytes_per_event, ratio, target
            );
        }
        if let Some((start, end)) = &self.load_average {
            out += &format!("\nLoad average (1, 5, 15 min; runnable/total): {start} at the start, {end} at the end.\n");
        }
        if let Some(p) = &self.pgbench {
            out += &p.render();
        }
        let w = &self.watermark_stall;
        out += &format!(
            "\nThe watermark's cost: a transaction holding a transaction id, left open for {:.2} s in {},\n\
             delayed the watermark reader by {:.2} s; the position reader saw the same event after {:.3} s.\n",
            w.held_open_seconds, w.open_transaction_in, w.watermark_reader_seconds, w.position_reader_seconds
        );
        out
    }
}

/// Fresh event ids for every run: the unique index must see new keys, as in production.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn new_event(kind: &str) -> NewEvent {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    NewEvent::new(
        Uuid::from_u128(0xbe00_0000_0000_0000_0000_0000_0000_0000 | n as u128),
        kind,
        serde_json::json!({ "amount_cents": n % 10_000, "currency": "EUR" }),
    )
}

id_enum! {
    /// A shape of the benchmark, by its short name for `labs bench store --only`.
    pub enum Shape {
        CopyCeiling = "copy",
        Bulk = "bulk",
        InsertSingle1 = "insert-1",
        InsertSingle16 = "insert-16",
        AppendSingle1 = "append-1",
        AppendSingle16 = "append-16",
        AppendBatch100x1 = "batch100-1",
        AppendBatch100x4 = "batch100-4",
        ReadNaive = "read-naive",
        ReadWatermark = "read-watermark",
        Pgbench = "pgbench",
    }
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::CopyCeiling => "plain COPY (ceiling)",
            Shape::Bulk => "bulk path (COPY + checks)",
            Shape::InsertSingle1 | Shape::InsertSingle16 => "plain INSERT, 1 event/tx (ceiling)",
            Shape::AppendSingle1 => "append, 1 event/tx (fast path)",
            Shape::AppendSingle16 => "append, 1 event/tx (fast path)",
            Shape::AppendBatch100x1 => "append, batches of 100",
            Shape::AppendBatch100x4 => "append, batches of 100",
            Shape::ReadNaive => "read: position > checkpoint (ceiling)",
            Shape::ReadWatermark => "read: watermark (store reader)",
            Shape::Pgbench => "pgbench: the appends on the server",
        }
    }
    fn writers(self) -> usize {
        match self {
            Shape::InsertSingle16 | Shape::AppendSingle16 => 16,
            Shape::AppendBatch100x4 => 4,
            _ => 1,
        }
    }
    /// (ceiling, target ratio) from the issue.
    fn ceiling(self) -> Option<(Shape, f64)> {
        match self {
            Shape::Bulk => Some((Shape::CopyCeiling, 0.8)),
            Shape::AppendBatch100x1 => Some((Shape::CopyCeiling, 0.4)),
            Shape::AppendBatch100x4 => Some((Shape::CopyCeiling, 0.8)),
            Shape::AppendSingle16 => Some((Shape::InsertSingle16, 0.9)),
            Shape::AppendSingle1 => Some((Shape::InsertSingle1, 0.9)),
            Shape::InsertSingle1 | Shape::InsertSingle16 => Some((Shape::CopyCeiling, 0.0)),
            Shape::ReadWatermark => Some((Shape::ReadNaive, 0.8)),
            Shape::CopyCeiling | Shape::ReadNaive | Shape::Pgbench => None,
        }
    }
}

/// The shapes measured through the Rust client; pgbench has its own module.
const SHAPES: &[Shape] = &[
    Shape::CopyCeiling,
    Shape::Bulk,
    Shape::InsertSingle1,
    Shape::InsertSingle16,
    Shape::AppendSingle1,
    Shape::AppendSingle16,
    Shape::AppendBatch100x1,
    Shape::AppendBatch100x4,
    Shape::ReadNaive,
    Shape::ReadWatermark,
];

/// Runs every shape `runs` times on `server` and reports medians and ratios.
pub async fn run(
    server: &Server,
    options: BenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<BenchReport, StoreError> {
    let admin = server.connect().await?;
    super::install(&admin).await.map_err(db("installing the store"))?;
    let setting = |name: &'static str| {
        let admin = &admin;
        async move { admin.query_one(&format!("SHOW {name}"), &[]).await.map(|r| r.get::<_, String>(0)) }
    };
    // Each shape starts from a TRUNCATE and writes up to 100,000 rows: autovacuum would wake up
    // on the table at random moments and take CPU from whichever shape runs then. Off for the
    // benchmark's table only; a production events table keeps it on (and tuned).
    admin
        .batch_execute("ALTER TABLE events SET (autovacuum_enabled = false)")
        .await
        .map_err(db("turning autovacuum off for the benchmark's table"))?;
    let load_at_start = load_average();
    let fsync = setting("fsync").await.map_err(db("SHOW fsync"))?;
    let synchronous_commit = setting("synchronous_commit").await.map_err(db("SHOW synchronous_commit"))?;
    let scaled = |n: f64| ((n * options.scale).round() as u64).max(1);
    let mut samples: Vec<Vec<(u64, Duration, u64)>> = vec![Vec::new(); SHAPES.len()];
    let selected: Vec<bool> = SHAPES
        .iter()
        .map(|s| options.only.is_empty() || options.only.iter().any(|o| o == s || o.ceiling().map(|c| c.0) == Some(*s)))
        .collect();
    for run in 0..options.runs {
        // Odd runs go through the shapes backwards, so no shape always runs right after a
        // heavy one (or always first): drift on a shared machine spreads over both sides of
        // each ratio, and ratios are taken run by run.
        let mut order: Vec<usize> = (0..SHAPES.len()).filter(|i| selected[*i]).collect();
        if run % 2 == 1 {
            order.reverse();
        }
        let mut readers_data = false;
        for i in order {
            let shape = SHAPES[i];
            progress(&format!("run {}/{}: {} ({} writers)", run + 1, options.runs, shape.name(), shape.writers()));
            let is_read = matches!(shape, Shape::ReadNaive | Shape::ReadWatermark);
            if !is_read {
                admin.batch_execute("TRUNCATE events").await.map_err(db("TRUNCATE events"))?;
                readers_data = false;
            } else if !readers_data {
                // The readers' data, written once per run through the bulk path; both readers
                // read the same rows.
                admin.batch_execute("TRUNCATE events").await.map_err(db("TRUNCATE events"))?;
                fill(server, scaled(100_000.0)).await?;
                admin.batch_execute("VACUUM ANALYZE events").await.map_err(db("VACUUM ANALYZE events"))?;
                readers_data = true;
            }
            // CHECKPOINT so every shape pays the same full-page writes; needs a superuser, which
            // the container and local servers give. Without it the WAL figures are noisier.
            let _ = admin.batch_execute("CHECKPOINT").await;
            // Sessions are opened before the clock starts: connecting (SCRAM authentication) is
            // not what is measured.
            let mut clients = Vec::new();
            for _ in 0..shape.writers() {
                clients.push(server.connect().await?);
            }
            let lsn_before: String = admin
                .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
                .await
                .map_err(db("reading the WAL position"))?
                .get(0);
            let started = Instant::now();
            let events = match shape {
                Shape::CopyCeiling => copy_ceiling(clients, scaled(100_000.0)).await?,
                Shape::Bulk => bulk(clients, scaled(100_000.0)).await?,
                Shape::InsertSingle1 => single(clients, scaled(2_500.0), true).await?,
                Shape::InsertSingle16 => single(clients, scaled(1_000.0), true).await?,
                Shape::AppendSingle1 => single(clients, scaled(2_500.0), false).await?,
                Shape::AppendSingle16 => single(clients, scaled(1_000.0), false).await?,
                Shape::AppendBatch100x1 => batches(clients, scaled(300.0)).await?,
                Shape::AppendBatch100x4 => batches(clients, scaled(150.0)).await?,
                Shape::ReadNaive => read_all(clients, false).await?,
                Shape::ReadWatermark => read_all(clients, true).await?,
                Shape::Pgbench => unreachable!("pgbench runs in pgbench.rs, not in this loop"),
            };
            let elapsed = started.elapsed();
            let wal: i64 = admin
                .query_one(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::text::pg_lsn)::bigint",
                    &[&lsn_before],
                )
                .await
                .map_err(db("measuring WAL"))?
                .get(0);
            samples[i].push((events, elapsed, wal.max(0) as u64));
        }
    }

    let rate = |i: usize| -> (u64, Duration, f64, f64) {
        let mut s = samples[i].clone();
        s.sort_by_key(|x| x.1);
        let (events, median, _) = s[s.len() / 2];
        let mut wal: Vec<f64> = samples[i].iter().map(|(e, _, w)| *w as f64 / *e as f64).collect();
        wal.sort_by(|a, b| a.total_cmp(b));
        (events, median, events as f64 / median.as_secs_f64(), wal[wal.len() / 2])
    };
    let index = |shape: Shape| SHAPES.iter().position(|&s| s == shape).expect("every shape is listed");
    let mut shapes = Vec::new();
    for (i, &shape) in SHAPES.iter().enumerate() {
        if !selected[i] {
            continue;
        }
        let (events, median, per_second, wal) = rate(i);
        let is_read = matches!(shape, Shape::ReadNaive | Shape::ReadWatermark);
        let (ratio, ceiling, target) = match shape.ceiling().filter(|(c, _)| selected[index(*c)]) {
            Some((c, target)) => {
                // The median of run-by-run ratios: each pairs two measurements minutes apart.
                let c = index(c);
                let mut ratios: Vec<f64> = samples[i]
                    .iter()
                    .zip(&samples[c])
                    .map(|(own, ceiling)| {
                        (own.0 as f64 / own.1.as_secs_f64()) / (ceiling.0 as f64 / ceiling.1.as_secs_f64())
                    })
                    .collect();
                ratios.sort_by(|a, b| a.total_cmp(b));
                let target = if target > 0.0 { Some(target) } else { None };
                (Some(ratios[ratios.len() / 2]), Some(SHAPES[c].name()), target)
            }
            None => (None, None, None),
        };
        shapes.push(ShapeResult {
            shape: shape.name(),
            writers: shape.writers(),
            events,
            median_seconds: median.as_secs_f64(),
            events_per_second: per_second.round(),
            wal_bytes_per_event: if is_read { 0.0 } else { wal.round() },
            ratio_to_ceiling: ratio.map(|r| (r * 1000.0).round() / 1000.0),
            ceiling,
            target,
            meets_target: target.zip(ratio).map(|(t, r)| r >= t),
        });
    }
    let pgbench = if options.only.is_empty() || options.only.contains(&Shape::Pgbench) {
        let seconds = super::pgbench::seconds_per_point(options.scale);
        progress(&format!("pgbench: about {} s more", super::pgbench::estimate(options.runs, seconds).as_secs()));
        super::pgbench::run(server, &admin, options.runs, seconds, &mut progress).await?
    } else {
        None
    };
    progress("the watermark's cost: an open transaction in another database");
    let watermark_stall = watermark_stall(server, &admin).await?;
    Ok(BenchReport {
        server: server.describe(),
        fsync,
        synchronous_commit,
        runs: options.runs,
        load_average: load_at_start.zip(load_average()),
        shapes,
        pgbench,
        watermark_stall,
    })
}

/// 100-event streams, new each time, as one bulk append or one COPY would carry them.
fn stream_batch(streams: usize) -> Vec<StreamAppend> {
    (0..streams)
        .map(|_| StreamAppend {
            stream_id: format!("account-{}", Uuid::from_u128(NEXT_ID.fetch_add(1, Ordering::Relaxed) as u128).simple()),
            expected: ExpectedVersion::NoStream,
            events: (0..100).map(|_| new_event("Deposited")).collect(),
        })
        .collect()
}

/// Chunks of 5,000 events (50 streams of 100), one transaction each, for both COPY shapes.
const CHUNK_STREAMS: usize = 50;

async fn copy_ceiling(clients: Vec<Client>, events: u64) -> Result<u64, StoreError> {
    let mut client = one(clients);
    let mut written = 0;
    while written < events {
        let chunk = stream_batch(CHUNK_STREAMS);
        let tx = client.transaction().await.map_err(db("BEGIN"))?;
        let streams: Vec<(&StreamAppend, i64)> = chunk.iter().map(|a| (a, 0)).collect();
        super::bulk::copy_events(&tx, &streams).await.map_err(db("COPY"))?;
        tx.commit().await.map_err(db("COMMIT"))?;
        written += (CHUNK_STREAMS * 100) as u64;
    }
    Ok(written)
}

/// The single session of a one-writer shape.
fn one(clients: Vec<Client>) -> Client {
    clients.into_iter().next().expect("one session per writer")
}

async fn bulk(clients: Vec<Client>, events: u64) -> Result<u64, StoreError> {
    let mut client = one(clients);
    let mut written = 0;
    while written < events {
        append_bulk(&mut client, &stream_batch(CHUNK_STREAMS)).await?;
        written += (CHUNK_STREAMS * 100) as u64;
    }
    Ok(written)
}

async fn fill(server: &Server, events: u64) -> Result<(), StoreError> {
    bulk(vec![server.connect().await?], events).await.map(|_| ())
}

/// `writers` sessions, each committing one event per transaction to its own ten streams, with
/// the expected version checked (the store's fast path) or as a bare INSERT (the ceiling). Both
/// statements are prepared once per session, as a driver's statement cache would, so neither
/// pays for planning at every call.
async fn single(clients: Vec<Client>, per_writer: u64, plain_insert: bool) -> Result<u64, StoreError> {
    let mut tasks = Vec::new();
    for (w, client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let prefix = Uuid::from_u128(NEXT_ID.fetch_add(1, Ordering::Relaxed) as u128).simple().to_string();
            let insert = client
                .prepare_typed(
                    "INSERT INTO events (event_id, stream_id, version, type, data, metadata) VALUES ($1, $2, $3, $4, $5, $6)",
                    &[Type::UUID, Type::TEXT, Type::INT8, Type::TEXT, Type::JSONB, Type::JSONB],
                )
                .await
                .map_err(db("preparing the INSERT"))?;
            let appender = super::append::Appender::prepare(&client).await?;
            let mut versions = [0i64; 10];
            for n in 0..per_writer as usize {
                let stream = format!("account-{prefix}-{w}-{}", n % 10);
                let e = new_event("Deposited");
                if plain_insert {
                    let version = versions[n % 10] + 1;
                    client
                        .execute(&insert, &[&e.event_id, &stream, &version, &e.event_type, &e.data, &e.metadata])
                        .await
                        .map_err(db("INSERT"))?;
                } else {
                    let expected = if versions[n % 10] == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(versions[n % 10])
                    };
                    appender.append(&client, &stream, expected, &e).await?;
                }
                versions[n % 10] += 1;
            }
            Ok::<u64, StoreError>(per_writer)
        }));
    }
    join(tasks).await
}

async fn batches(clients: Vec<Client>, per_writer: u64) -> Result<u64, StoreError> {
    let mut tasks = Vec::new();
    for client in clients {
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_writer {
                let batch = stream_batch(1).pop().expect("one stream");
                append(&client, &batch.stream_id, batch.expected, &batch.events).await?;
            }
            Ok::<u64, StoreError>(per_writer * 100)
        }));
    }
    join(tasks).await
}

async fn join(tasks: Vec<tokio::task::JoinHandle<Result<u64, StoreError>>>) -> Result<u64, StoreError> {
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("benchmark task panicked")?;
    }
    Ok(total)
}

/// Reads the whole table five times over (a pass alone is too short to time on a noisy
/// machine), in batches of 1,000, following the reader's own checkpoint.
async fn read_all(clients: Vec<Client>, watermark: bool) -> Result<u64, StoreError> {
    const PASSES: usize = 5;
    let client = one(clients);
    let mut read = 0u64;
    for _ in 0..PASSES {
        if watermark {
            let mut after = super::Checkpoint::START;
            loop {
                let events = super::read_all_after(&client, after, 1_000).await?;
                let Some(last) = events.last() else { break };
                after = last.checkpoint;
                read += events.len() as u64;
            }
        } else {
            let mut after = 0i64;
            loop {
                let rows = client
                    .query(
                        "SELECT position, transaction_id, event_id, stream_id, version, type, data, metadata
                         FROM events WHERE position > $1 ORDER BY position LIMIT 1000",
                        &[&after],
                    )
                    .await
                    .map_err(db("naive read"))?;
                // Decoded into the same events the store's reader returns: both readers pay
                // the same client work, and differ only in what they ask of the server.
                let events: Vec<super::RecordedEvent> = rows
                    .iter()
                    .map(|row| super::RecordedEvent {
                        checkpoint: super::Checkpoint {
                            position: row.get(0),
                            transaction_id: row.get(1),
                            ..super::Checkpoint::START
                        },
                        event_id: row.get(2),
                        stream_id: row.get(3),
                        version: row.get(4),
                        event_type: row.get(5),
                        data: row.get(6),
                        metadata: row.get(7),
                    })
                    .collect();
                let Some(last) = rows.last() else { break };
                after = last.get(0);
                read += events.len() as u64;
            }
        }
    }
    Ok(read)
}

/// Opens a transaction elsewhere in the cluster, gives it a transaction id, appends one event,
/// and times how long each reader takes to return it; then ends the transaction.
async fn watermark_stall(server: &Server, admin: &Client) -> Result<WatermarkStall, StoreError> {
    const HOLD: Duration = Duration::from_secs(1);
    admin.batch_execute("TRUNCATE events").await.map_err(db("TRUNCATE events"))?;
    // Another database, if this server lets us make one (not always so with --pg url).
    let mut config = server.config();
    let own = config.get_dbname().unwrap_or("postgres").to_string();
    let elsewhere = admin.batch_execute("CREATE DATABASE labs_bench_elsewhere").await.is_ok();
    if elsewhere {
        config.dbname("labs_bench_elsewhere");
    }
    let (other, connection) =
        config.connect(tokio_postgres::NoTls).await.map_err(db("connecting to the other database"))?;
    tokio::spawn(connection);
    // pg_current_xact_id() assigns a transaction id without writing anything: an idle session
    // that has written once, as an application's forgotten transaction would be.
    other.batch_execute("BEGIN; SELECT pg_current_xact_id();").await.map_err(db("opening the other transaction"))?;
    let reader = server.connect().await?;
    append(admin, "account-stall", ExpectedVersion::Any, &[new_event("Deposited")]).await?;
    let committed = Instant::now();
    let end_other = tokio::spawn(async move {
        tokio::time::sleep(HOLD).await;
        other.batch_execute("COMMIT").await.map(|_| other)
    });
    let mut position_seen = None;
    let mut watermark_seen = None;
    while watermark_seen.is_none() && committed.elapsed() < Duration::from_secs(30) {
        if position_seen.is_none() {
            let n: i64 = reader
                .query_one("SELECT count(*) FROM events WHERE position > 0", &[])
                .await
                .map_err(db("position read"))?
                .get(0);
            if n > 0 {
                position_seen = Some(committed.elapsed());
            }
        }
        let rows =
            reader.query(super::read::READ_ALL_SQL, &[&None::<String>, &10i32]).await.map_err(db("read_all_after"))?;
        if !rows.is_empty() {
            watermark_seen = Some(committed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let other =
        end_other.await.expect("the other session's task panicked").map_err(db("ending the other transaction"))?;
    drop(other);
    if elsewhere {
        let _ = admin.batch_execute("DROP DATABASE labs_bench_elsewhere WITH (FORCE)").await;
    }
    Ok(WatermarkStall {
        open_transaction_in: if elsewhere { "another database".into() } else { format!("the same database ({own})") },
        held_open_seconds: HOLD.as_secs_f64(),
        position_reader_seconds: position_seen.unwrap_or_default().as_secs_f64(),
        watermark_reader_seconds: watermark_seen.unwrap_or_default().as_secs_f64(),
    })
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}
