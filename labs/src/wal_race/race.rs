//! Running the race: every strategy at every writer count, one point at a time, each point
//! from the same start (tables truncated, a fresh checkpoint so full-page images count alike).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::bottleneck::{self, Bottleneck, Sample, Wait};
use super::strategy::{Strategy, Writer, SETUP_SQL};
use crate::error::LabError;
use crate::pg::Server;
use crate::store;

#[derive(Clone, Debug)]
pub struct RaceOptions {
    pub strategies: Vec<Strategy>,
    pub writers: Vec<usize>,
    pub seconds: f64,
}

impl RaceOptions {
    /// The default race: every strategy at 1, 2, 4, 8, 16 writers, 2.5 s a point.
    pub fn full() -> RaceOptions {
        RaceOptions { strategies: super::strategy::ALL.to_vec(), writers: vec![1, 2, 4, 8, 16], seconds: 2.5 }
    }

    /// Under a minute on two cores: 1, 4 and 16 writers, 0.7 s a point.
    pub fn quick() -> RaceOptions {
        RaceOptions { strategies: super::strategy::ALL.to_vec(), writers: vec![1, 4, 16], seconds: 0.7 }
    }
}

/// One strategy at one writer count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    pub strategy: Strategy,
    pub writers: usize,
    pub seconds: f64,
    pub events: u64,
    pub transactions: u64,
    pub events_per_second: f64,
    pub wal_bytes: u64,
    pub wal_bytes_per_event: f64,
    pub wal_mb_per_second: f64,
    /// Full-page images written (pg_stat_wal.wal_fpi), over the point.
    pub full_page_images: u64,
    /// WAL flushes (pg_stat_wal.wal_sync; from PostgreSQL 18 pg_stat_io's fsyncs of WAL), over the point.
    pub wal_flushes: u64,
    /// The writers' commits per WAL flush; None when nothing was flushed.
    pub commits_per_flush: Option<f64>,
    /// The writers' sessions as sampled in pg_stat_activity, by wait class.
    pub waits: BTreeMap<Wait, u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StrategyResult {
    pub strategy: Strategy,
    pub durable: bool,
    pub description: String,
    pub bottleneck: Option<Bottleneck>,
}

/// Where and how a result set was measured: printed with it, kept beside saved results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Provenance {
    pub recorded_at: String,
    pub postgres: String,
    pub backend: String,
    pub cpus: usize,
    pub memory: String,
    pub kernel: String,
    pub labs_version: String,
    /// Settings that move these figures.
    pub settings: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RaceReport {
    pub provenance: Provenance,
    pub writers: Vec<usize>,
    pub seconds_per_point: f64,
    /// Stopped by Ctrl-C: the points measured until then.
    pub interrupted: bool,
    pub points: Vec<Point>,
    pub strategies: Vec<StrategyResult>,
}

/// What the live view is told.
#[derive(Clone, Debug)]
pub enum Progress {
    Started { strategy: Strategy, writers: usize },
    Running { strategy: Strategy, writers: usize, fraction: f64, events_per_second: f64, wal_mb_per_second: f64 },
    Finished(Point),
}

fn db(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> LabError {
    LabError::db(context)
}

/// The settings recorded with every result set.
const SETTINGS: [&str; 9] = [
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_compression",
    "wal_level",
    "shared_buffers",
    "max_wal_size",
    "commit_delay",
    "wal_sync_method",
];

/// Runs the race. `stop` ends it early (Ctrl-C): the point in progress is dropped, the points
/// measured so far are reported.
pub async fn run(
    server: &Server,
    options: &RaceOptions,
    stop: &AtomicBool,
    mut progress: impl FnMut(Progress),
) -> Result<RaceReport, LabError> {
    let admin = server.connect().await?;
    let version: String = admin.query_one("SHOW server_version", &[]).await.map_err(db("SHOW server_version"))?.get(0);
    let has_stat_wal: bool = admin
        .query_one("SELECT to_regclass('pg_catalog.pg_stat_wal') IS NOT NULL", &[])
        .await
        .map_err(db("looking for pg_stat_wal"))?
        .get(0);
    if !has_stat_wal {
        return Err(LabError::Script(format!("this server ({version}) has no pg_stat_wal view (PostgreSQL 14 or later has it): the race needs it to count full-page images and flushes")));
    }
    store::install(&admin).await.map_err(db("installing the reference store"))?;
    admin.batch_execute(SETUP_SQL).await.map_err(db("creating the race's tables"))?;
    // Autovacuum would wake on these tables at random moments and take CPU from whichever
    // point runs then; off for the race's tables only.
    for table in ["events", "race_events", "race_unlogged", "race_indexed", "race_counter"] {
        admin
            .batch_execute(&format!("ALTER TABLE {table} SET (autovacuum_enabled = false)"))
            .await
            .map_err(db("turning autovacuum off for the race's tables"))?;
    }
    let provenance = provenance(server, &admin, &version).await?;

    let mut points = Vec::new();
    'race: for &strategy in &options.strategies {
        for &writers in &options.writers {
            if stop.load(Ordering::SeqCst) {
                break 'race;
            }
            progress(Progress::Started { strategy, writers });
            match run_point(server, &admin, strategy, writers, options.seconds, stop, &mut progress).await? {
                Some(point) => {
                    progress(Progress::Finished(point.clone()));
                    points.push(point);
                }
                None => break 'race,
            }
        }
    }
    let interrupted = stop.load(Ordering::SeqCst);
    Ok(RaceReport {
        provenance,
        writers: options.writers.clone(),
        seconds_per_point: options.seconds,
        interrupted,
        strategies: summarize(&options.strategies, &points),
        points,
    })
}

/// Each strategy's bottleneck from its points.
pub fn summarize(strategies: &[Strategy], points: &[Point]) -> Vec<StrategyResult> {
    strategies
        .iter()
        .filter(|s| points.iter().any(|p| p.strategy == **s))
        .map(|&strategy| {
            let samples: Vec<Sample> = points
                .iter()
                .filter(|p| p.strategy == strategy)
                .map(|p| Sample { writers: p.writers, events_per_second: p.events_per_second, waits: p.waits.clone() })
                .collect();
            StrategyResult {
                strategy,
                durable: strategy.durable(),
                description: strategy.describe().to_string(),
                bottleneck: bottleneck::detect(&samples),
            }
        })
        .collect()
}

async fn provenance(server: &Server, admin: &Client, version: &str) -> Result<Provenance, LabError> {
    let mut settings = BTreeMap::new();
    for name in SETTINGS {
        let value: String =
            admin.query_one(&format!("SHOW {name}"), &[]).await.map_err(db(format!("SHOW {name}")))?.get(0);
        settings.insert(name.to_string(), value);
    }
    let recorded_at: String = admin
        .query_one("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC'", &[])
        .await
        .map_err(db("reading the time"))?
        .get(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| format!("Linux {}", k.trim()))
        .unwrap_or_else(|_| std::env::consts::OS.into());
    let backend = match server.backend() {
        crate::pg::Backend::Local => "local binaries".to_string(),
        crate::pg::Backend::Container => "container".to_string(),
        other => other.to_string(),
    };
    Ok(Provenance {
        recorded_at,
        postgres: format!("PostgreSQL {version}"),
        backend,
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        memory,
        kernel,
        labs_version: env!("CARGO_PKG_VERSION").to_string(),
        settings,
    })
}

/// Cumulative server counters, read before and after a point.
struct Counters {
    lsn: String,
    fpi: i64,
    syncs: i64,
}

/// Before 18, WAL flushes are pg_stat_wal.wal_sync (issue_xlog_fsync calls).
const COUNTERS_BEFORE_18: &str = "SELECT pg_current_wal_insert_lsn()::text, wal_fpi, wal_sync FROM pg_stat_wal";
/// PostgreSQL 18 removed wal_sync from pg_stat_wal: the same calls are counted in pg_stat_io
/// as fsyncs of object 'wal' in context 'normal' ('init' counts the creation of new segments).
const COUNTERS_FROM_18: &str = "SELECT pg_current_wal_insert_lsn()::text, \
     (SELECT wal_fpi FROM pg_stat_wal), \
     (SELECT coalesce(sum(fsyncs), 0)::bigint FROM pg_stat_io WHERE object = 'wal' AND context = 'normal')";

async fn counters(server: &Server, admin: &Client) -> Result<Counters, LabError> {
    // pg_stat_clear_snapshot: read the counters as they are now, not as cached earlier.
    admin.batch_execute("SELECT pg_stat_clear_snapshot()").await.map_err(db("pg_stat_clear_snapshot"))?;
    let (query, view) = if server.server_version_num() >= 180000 {
        (COUNTERS_FROM_18, "reading pg_stat_wal and pg_stat_io")
    } else {
        (COUNTERS_BEFORE_18, "reading pg_stat_wal")
    };
    let row = admin.query_one(query, &[]).await.map_err(db(view))?;
    Ok(Counters { lsn: row.get(0), fpi: row.get(1), syncs: row.get(2) })
}

async fn wal_since(admin: &Client, lsn: &str) -> Result<u64, LabError> {
    let bytes: i64 = admin
        .query_one("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::text::pg_lsn)::bigint", &[&lsn])
        .await
        .map_err(db("measuring WAL"))?
        .get(0);
    Ok(bytes.max(0) as u64)
}

#[allow(clippy::too_many_arguments)]
async fn run_point(
    server: &Server,
    admin: &Client,
    strategy: Strategy,
    writers: usize,
    seconds: f64,
    stop: &AtomicBool,
    progress: &mut impl FnMut(Progress),
) -> Result<Option<Point>, LabError> {
    // The same start for every point: empty tables, then a checkpoint, so every point pays
    // full-page images for the pages it touches first, as after any checkpoint.
    admin
        .batch_execute("TRUNCATE race_events, race_unlogged, race_indexed, events RESTART IDENTITY; UPDATE race_counter SET value = 0; CHECKPOINT;")
        .await
        .map_err(db("resetting the tables"))?;
    let mut sessions = Vec::new();
    let mut pids: Vec<i32> = Vec::new();
    for w in 0..writers {
        let client = server.connect().await?;
        pids.push(client.query_one("SELECT pg_backend_pid()", &[]).await.map_err(db("pg_backend_pid"))?.get(0));
        let writer =
            Writer::new(client, w, strategy).await.map_err(db(format!("preparing writer {w} of {}", strategy.id())))?;
        sessions.push(writer);
    }
    let sampler = server.connect().await?;
    let before = counters(server, admin).await?;

    let events = Arc::new(AtomicU64::new(0));
    let transactions = Arc::new(AtomicU64::new(0));
    let halt = Arc::new(AtomicBool::new(false));
    let duration = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for mut writer in sessions {
        let (events, transactions, halt) = (events.clone(), transactions.clone(), halt.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline && !halt.load(Ordering::Relaxed) {
                let n = writer.unit(strategy).await?;
                events.fetch_add(n, Ordering::Relaxed);
                transactions.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<Writer, LabError>(writer)
        }));
    }

    // Sample the writers' sessions every 50 ms; tell the live view every 250 ms.
    let mut waits: BTreeMap<Wait, u32> = BTreeMap::new();
    let mut last_report = Instant::now();
    while tasks.iter().any(|t| !t.is_finished()) {
        if stop.load(Ordering::SeqCst) {
            halt.store(true, Ordering::SeqCst);
        }
        let rows = sampler
            .query("SELECT wait_event_type, wait_event, state FROM pg_stat_activity WHERE pid = ANY($1)", &[&pids])
            .await
            .map_err(db("sampling pg_stat_activity"))?;
        for r in &rows {
            let class =
                Wait::classify(r.get::<_, Option<&str>>(0), r.get::<_, Option<&str>>(1), r.get::<_, Option<&str>>(2));
            *waits.entry(class).or_default() += 1;
        }
        if last_report.elapsed() >= Duration::from_millis(250) {
            last_report = Instant::now();
            let elapsed = started.elapsed().as_secs_f64().max(1e-3);
            let wal = wal_since(admin, &before.lsn).await?;
            progress(Progress::Running {
                strategy,
                writers,
                fraction: (elapsed / seconds).min(1.0),
                events_per_second: events.load(Ordering::Relaxed) as f64 / elapsed,
                wal_mb_per_second: wal as f64 / 1e6 / elapsed,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut finished = Vec::new();
    for t in tasks {
        match t.await.expect("writer task panicked") {
            Ok(writer) => finished.push(writer),
            Err(source) => {
                return Err(LabError::Script(format!("strategy {} with {writers} writers: {source}", strategy.id())))
            }
        }
    }
    if stop.load(Ordering::SeqCst) {
        return Ok(None);
    }
    let wal_bytes = wal_since(admin, &before.lsn).await?;
    // The writers' sessions report their WAL counters to pg_stat_wal when they end: close
    // them and wait until they are gone before reading the counters.
    drop(finished);
    let gone_by = Instant::now() + Duration::from_secs(5);
    while Instant::now() < gone_by {
        let left: i64 = sampler
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)", &[&pids])
            .await
            .map_err(db("waiting for the writers to leave"))?
            .get(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = counters(server, admin).await?;
    let events = events.load(Ordering::Relaxed);
    let transactions = transactions.load(Ordering::Relaxed);
    let flushes = (after.syncs - before.syncs).max(0) as u64;
    // Rounded to what the measurement can tell apart: the JSON stays readable.
    let round = |value: f64, places: i32| (value * 10f64.powi(places)).round() / 10f64.powi(places);
    Ok(Some(Point {
        strategy,
        writers,
        seconds: round(elapsed, 3),
        events,
        transactions,
        events_per_second: round(events as f64 / elapsed, 1),
        wal_bytes,
        wal_bytes_per_event: if events == 0 { 0.0 } else { round(wal_bytes as f64 / events as f64, 1) },
        wal_mb_per_second: round(wal_bytes as f64 / 1e6 / elapsed, 3),
        full_page_images: (after.fpi - before.fpi).max(0) as u64,
        wal_flushes: flushes,
        commits_per_flush: if flushes == 0 { None } else { Some(round(transactions as f64 / flushes as f64, 2)) },
        waits,
    }))
}
