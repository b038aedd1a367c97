//! Part B of `labs run outbox-relay`: a slot whose consumer has stopped reading. With no cap it
//! keeps every WAL segment from its position on, checkpoint after checkpoint; with
//! `max_slot_wal_keep_size` the server gives up on it: `unreserved`, then `lost` at the next
//! checkpoint, and the consumer that comes back gets the server's error. The alert query runs at
//! every step.
//!
//! Deterministic by construction: WAL is generated in whole segments (`pg_switch_wal`) from a
//! slot created at the start of a fresh segment, and the report counts segments, not bytes (the
//! bytes go to the JSON only: background records make them vary from run to run).

use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::relay::{self, OrderEvent};
use crate::error::{ensure, LabError};
use crate::pg::Server;

/// The idle consumer's slot.
pub const IDLE_SLOT: &str = "analytics_relay";
/// Rounds of writes, each closed with pg_switch_wal: the slot then holds this many segments.
const ROUNDS: u32 = 3;
/// Orders written per round: enough to look like traffic, far from filling a segment.
const ORDERS_PER_ROUND: u32 = 20;
/// The cap set when the disk alarm goes off; in production a size the WAL disk can afford.
pub const CAP: &str = "16MB";
/// The alert's threshold in WAL segments (16 MB each by default): two and a half, so it stays
/// quiet at two segments held back and fires at three, whatever the slot's offset in its segment.
const ALERT_SEGMENTS_TENTHS: i64 = 25;

/// The alert that would have caught it (slot_alert.sql): `$1` the most WAL a slot may hold back,
/// `$2` the least WAL left before a capped slot is lost, both in bytes. The chapter runs the same
/// file with PREPARE and EXECUTE.
pub const ALERT_SQL: &str = include_str!("slot_alert.sql");

/// What part B shows.
#[derive(Clone, Debug, Serialize)]
pub struct IdleSlot {
    pub slot: &'static str,
    pub cap: &'static str,
    pub alert_query: &'static str,
    /// The alert's thresholds in this run, in bytes: held back, and left before lost.
    pub alert_held_back_bytes: i64,
    pub alert_safe_wal_bytes: i64,
    pub steps: Vec<SlotStep>,
    /// What the slot's consumer got when it came back.
    pub consumer_error: ServerError,
}

#[derive(Clone, Debug, Serialize)]
pub struct SlotStep {
    pub step: usize,
    pub action: String,
    pub max_slot_wal_keep_size: String,
    /// `pg_replication_slots.wal_status`.
    pub wal_status: Option<String>,
    /// Whole WAL segments between the slot's restart_lsn and the current position (none once
    /// the slot is lost: it has no restart_lsn any more).
    pub segments_held: Option<i64>,
    /// Whether the segment holding the slot's position at creation is still in pg_wal.
    pub oldest_segment_on_disk: bool,
    /// What the alert query said about this slot, if anything.
    pub alert: Option<String>,
    /// In bytes; vary from run to run, JSON only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_back_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safe_wal_size: Option<i64>,
    /// PostgreSQL 17 and later: why the slot was invalidated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalidation_reason: Option<String>,
}

/// An error as the server reported it.
#[derive(Clone, Debug, Serialize)]
pub struct ServerError {
    pub sqlstate: String,
    pub message: String,
    pub detail: Option<String>,
}

async fn sql(client: &Client, statement: &str) -> Result<(), LabError> {
    client.batch_execute(statement).await.map_err(LabError::db(statement.to_string()))
}

struct Observer<'a> {
    client: &'a Client,
    segment_bytes: i64,
    oldest_segment: String,
    steps: Vec<SlotStep>,
    server_version_num: u32,
}

impl Observer<'_> {
    /// Reads the slot's state and the alert after `action`.
    async fn observe(&mut self, action: impl Into<String>) -> Result<(), LabError> {
        let invalidation = if self.server_version_num >= 170000 { "invalidation_reason::text" } else { "NULL::text" };
        let row = self
            .client
            .query_one(
                &format!(
                    "SELECT s.wal_status,
                            (floor(pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') / $2::bigint)
                              - floor(pg_wal_lsn_diff(s.restart_lsn, '0/0') / $2::bigint))::bigint,
                            EXISTS (SELECT FROM pg_ls_waldir() WHERE name = $3),
                            pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint,
                            s.safe_wal_size,
                            {invalidation},
                            current_setting('max_slot_wal_keep_size')
                       FROM pg_replication_slots s WHERE s.slot_name = $1"
                ),
                &[&IDLE_SLOT, &self.segment_bytes, &self.oldest_segment],
            )
            .await
            .map_err(LabError::db(format!("reading slot {IDLE_SLOT}")))?;
        // Typed as the chapter's PREPARE types them: bigint thresholds.
        let alert = self
            .client
            .prepare_typed(ALERT_SQL, &[Type::INT8, Type::INT8])
            .await
            .map_err(LabError::db("preparing the alert query"))?;
        let alerts = self
            .client
            .query(&alert, &[&self.alert_held_back(), &self.alert_safe_wal()])
            .await
            .map_err(LabError::db("running the alert query"))?;
        let alert = alerts.iter().find(|r| r.get::<_, &str>(0) == IDLE_SLOT).map(|r| r.get::<_, String>(1));
        let step = self.steps.len() + 1;
        self.steps.push(SlotStep {
            step,
            action: action.into(),
            wal_status: row.get(0),
            segments_held: row.get(1),
            oldest_segment_on_disk: row.get(2),
            alert,
            held_back_bytes: row.get(3),
            safe_wal_size: row.get(4),
            invalidation_reason: row.get(5),
            max_slot_wal_keep_size: row.get(6),
        });
        Ok(())
    }

    fn alert_held_back(&self) -> i64 {
        self.segment_bytes * ALERT_SEGMENTS_TENTHS / 10
    }

    fn alert_safe_wal(&self) -> i64 {
        self.segment_bytes / 2
    }
}

/// Runs part B on `server` (wal_level = logical), in a database where [`relay::install`] ran.
/// It changes `max_slot_wal_keep_size` server-wide: run it after part A, on a server of its own.
pub async fn run(server: &Server) -> Result<IdleSlot, LabError> {
    let client = server.connect().await?;
    let segment_bytes: i64 = client
        .query_one("SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'", &[])
        .await
        .map_err(LabError::db("reading wal_segment_size"))?
        .get(0);
    // A fresh segment first, so the slot's position sits at its start and whole segments of WAL
    // after it read the same on every run.
    sql(&client, "SELECT pg_switch_wal()").await?;
    relay::create_slot(&client, IDLE_SLOT).await?;
    let oldest_segment: String = client
        .query_one("SELECT pg_walfile_name(restart_lsn) FROM pg_replication_slots WHERE slot_name = $1", &[&IDLE_SLOT])
        .await
        .map_err(LabError::db("naming the slot's first segment"))?
        .get(0);
    let mut observer = Observer {
        client: &client,
        segment_bytes,
        oldest_segment,
        steps: Vec::new(),
        server_version_num: server.server_version_num(),
    };
    observer.observe(format!("create slot {IDLE_SLOT}; its consumer stops reading")).await?;

    let writer = server.connect().await?;
    for round in 1..=ROUNDS {
        for n in 0..ORDERS_PER_ROUND {
            let order = 7000 + round * 100 + n;
            writer.batch_execute("BEGIN").await.map_err(LabError::db("BEGIN"))?;
            relay::write(&writer, &OrderEvent::new(order, 1, "OrderPlaced", "sku-1", 1)).await?;
            writer.batch_execute("COMMIT").await.map_err(LabError::db("COMMIT"))?;
        }
        sql(&client, "SELECT pg_switch_wal()").await?;
        observer.observe(format!("{ORDERS_PER_ROUND} orders written; pg_switch_wal()")).await?;
    }
    sql(&client, "CHECKPOINT").await?;
    observer.observe("CHECKPOINT").await?;

    // The disk alarm: someone caps what slots may keep. Reloaded, not restarted.
    sql(&client, &format!("ALTER SYSTEM SET max_slot_wal_keep_size = '{CAP}'")).await?;
    sql(&client, "SELECT pg_reload_conf()").await?;
    wait_for_setting(&client, CAP).await?;
    observer.observe(format!("ALTER SYSTEM SET max_slot_wal_keep_size = '{CAP}'; reload")).await?;
    sql(&client, "CHECKPOINT").await?;
    observer.observe("CHECKPOINT").await?;
    let status = observer.steps.last().and_then(|s| s.wal_status.clone());
    ensure(status.as_deref() == Some("lost"), || {
        format!("slot {IDLE_SLOT} should be lost after the checkpoint with max_slot_wal_keep_size = {CAP}; it is {status:?}")
    })?;

    // The consumer comes back and reads its slot.
    let consumer = server.connect().await?;
    let consumer_error = match relay::get_changes(&consumer, IDLE_SLOT).await {
        Ok(_) => return Err(LabError::Script(format!("slot {IDLE_SLOT} is lost, yet reading it succeeded"))),
        Err(LabError::Database { source, .. }) => match source.as_db_error() {
            Some(db) => ServerError {
                sqlstate: db.code().code().to_string(),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
            },
            None => return Err(LabError::db("reading the lost slot")(source)),
        },
        Err(other) => return Err(other),
    };
    let alert_held_back_bytes = observer.alert_held_back();
    let alert_safe_wal_bytes = observer.alert_safe_wal();
    Ok(IdleSlot {
        slot: IDLE_SLOT,
        cap: CAP,
        alert_query: ALERT_SQL,
        alert_held_back_bytes,
        alert_safe_wal_bytes,
        steps: observer.steps,
        consumer_error,
    })
}

/// pg_reload_conf() only signals: this session picks the new value up at a later statement.
async fn wait_for_setting(client: &Client, value: &str) -> Result<(), LabError> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let now: String = client
            .query_one("SELECT current_setting('max_slot_wal_keep_size')", &[])
            .await
            .map_err(LabError::db("reading max_slot_wal_keep_size"))?
            .get(0);
        if now == value {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(LabError::Script(format!("max_slot_wal_keep_size did not become {value} within 10 s of pg_reload_conf()")))
}

impl fmt::Display for IdleSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let _ = writeln!(out, "PART B: slot {}'s consumer stops reading. The service goes on writing.", self.slot);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:>4}  {:<62} {:>5}  {:<11} {:>8}  {:<9}  alert query",
            "step", "what", "cap", "wal_status", "segments", "in pg_wal"
        );
        for s in &self.steps {
            let _ = writeln!(
                out,
                "{:>4}  {:<62} {:>5}  {:<11} {:>8}  {:<9}  {}",
                s.step,
                s.action,
                s.max_slot_wal_keep_size,
                s.wal_status.as_deref().unwrap_or("-"),
                s.segments_held.map_or("-".to_string(), |n| n.to_string()),
                if s.oldest_segment_on_disk { "yes" } else { "no" },
                s.alert.as_deref().unwrap_or("(quiet)")
            );
        }
        let _ = writeln!(out, "  cap: max_slot_wal_keep_size (-1, the default: no cap)");
        let _ = writeln!(out, "  segments: whole WAL segments between the slot's restart_lsn and the current position");
        let _ = writeln!(out, "  in pg_wal: whether the segment the slot started in is still on disk");
        let _ = writeln!(out);
        let _ = writeln!(out, "The consumer comes back and reads its slot:");
        let _ = writeln!(out, "  ERROR:  {} (SQLSTATE {})", self.consumer_error.message, self.consumer_error.sqlstate);
        if let Some(detail) = &self.consumer_error.detail {
            let _ = writeln!(out, "  DETAIL:  {detail}");
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "The alert query that would have caught it (here $1 = {} segments of WAL held back, $2 = half a segment left):",
            ALERT_SEGMENTS_TENTHS as f64 / 10.0
        );
        for line in self.alert_query.lines() {
            let _ = writeln!(out, "  {line}");
        }
        for line in out.lines() {
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}
