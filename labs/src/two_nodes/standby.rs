//! Part B: readers on a hot standby. The xid8 watermark works there (the standby keeps the
//! primary's running transactions in its snapshots, procarray.c's KnownAssignedXids), so a
//! reader on the standby stops where a reader on the primary stops; replay paused only delays
//! it. What a subscription also does, LISTEN and write its checkpoint, the standby refuses.

use std::fmt;

use serde::Serialize;
use serde_json::json;
use tokio_postgres::Client;
use uuid::Uuid;

use super::retention::{connect, verbatim};
use crate::error::{ensure, LabError};
use crate::pg::{Node, Server};
use crate::store::read::RecordedEvent;
use crate::store::subscription::{self, Subscription};
use crate::store::{self, Checkpoint, ExpectedVersion, NewEvent};

/// The database Part B works in, on both nodes.
pub const DATABASE: &str = "standby_lab";
/// Orders committed before the held writer.
const BEFORE_STANDBY: usize = 3;
/// Orders committed while replay is paused.
const WHILE_PAUSED: usize = 5;
/// Orders appended on the standby once it is promoted.
const AFTER_PROMOTION: usize = 2;

/// What a reader got in one read: `#position stream`, in the order it got them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Read(pub Vec<String>);

impl fmt::Display for Read {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&self.0.join(", "))
        }
    }
}

/// Part B's findings.
#[derive(Clone, Debug, Serialize)]
pub struct StandbyReport {
    /// The held writer's event and the one committed after it.
    pub held_position: i64,
    pub later_position: i64,
    /// While the writer is held: what each node's reader gets from the start.
    pub primary_read: Read,
    pub standby_read: Read,
    /// The two snapshots' xmin (the watermark) are the same transaction.
    pub same_watermark: bool,
    /// Running transactions each snapshot lists (`pg_snapshot_xip`): a standby keeps them
    /// elsewhere in its snapshot (procarray.c), so a reader of this list sees none there.
    pub xip_on_primary: i64,
    pub xip_on_standby: i64,
    /// After the held writer commits: what the standby's reader gets next.
    pub standby_after_commit: Read,
    /// Replay paused: orders the primary committed, what the standby's reader got.
    pub committed_while_paused: usize,
    pub read_while_paused: Read,
    /// WAL received but not replayed while paused, in bytes (varies from run to run).
    pub replay_lag_bytes: i64,
    pub read_after_resume: Read,
    /// What the standby refused, in the server's words: (what was tried, the error).
    pub refusals: Vec<(String, String)>,
    /// After promotion: the reader's next read (streams only: see `positions_jumped`), and the
    /// subscription's first batch there.
    pub read_after_promotion: Read,
    /// The first position handed out after promotion is not the one after the last replayed:
    /// a sequence WAL-logs values ahead of those it hands out, and the promoted node starts
    /// after the logged ones. (How far ahead depends on checkpoints, so only the jump is shown.)
    pub positions_jumped: bool,
    pub subscription_after_promotion: String,
    /// Every order the reader was owed, and how many it missed or got twice.
    pub owed: usize,
    pub missed: usize,
    pub twice: usize,
}

fn order(n: usize) -> (String, NewEvent) {
    let id = Uuid::from_u128(0x0990_0b00_0000_4000_8000_0000_0000_0000 | n as u128);
    (format!("order-{n}"), NewEvent::new(id, "OrderPlaced", json!({ "order": n })))
}

async fn place(client: &Client, n: usize) -> Result<(), LabError> {
    let (stream, event) = order(n);
    store::append(client, &stream, ExpectedVersion::NoStream, &[event]).await?;
    Ok(())
}

fn label(e: &RecordedEvent) -> String {
    format!("#{} {}", e.checkpoint.position, e.stream_id)
}

/// A reader that keeps its checkpoint in memory, as a replica-side consumer with its own
/// bookkeeping would; it remembers everything it got.
struct Follower {
    after: Checkpoint,
    got: Vec<RecordedEvent>,
}

impl Follower {
    async fn read(&mut self, client: &Client) -> Result<Read, LabError> {
        let events = store::read_all_after(client, self.after, 100).await?;
        if let Some(last) = events.last() {
            self.after = last.checkpoint;
        }
        let read = Read(events.iter().map(label).collect());
        self.got.extend(events);
        Ok(read)
    }
}

async fn watermark(client: &Client) -> Result<String, LabError> {
    Ok(client
        .query_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text", &[])
        .await
        .map_err(LabError::db("reading the watermark"))?
        .get(0))
}

async fn running_listed(client: &Client) -> Result<i64, LabError> {
    Ok(client
        .query_one("SELECT count(*) FROM pg_snapshot_xip(pg_current_snapshot())", &[])
        .await
        .map_err(LabError::db("listing the snapshot's running transactions"))?
        .get(0))
}

/// Part B, on a fresh server with the standby capability. The standby is built first, from the
/// fresh cluster (the smallest base backup); everything after reaches it as WAL.
pub async fn run(server: &mut Server) -> Result<StandbyReport, LabError> {
    server.start_standby().await?;
    let setup = server.connect().await?;
    setup.batch_execute(&format!("CREATE DATABASE {DATABASE}")).await.map_err(LabError::db("CREATE DATABASE"))?;
    let primary_config = on(server, Node::Primary);
    let primary = connect(&primary_config).await?;
    store::install(&primary).await.map_err(LabError::db("installing the store"))?;
    for n in 1..=BEFORE_STANDBY {
        place(&primary, n).await?;
    }
    server.wait_standby_caught_up().await?;
    let standby = connect(&on(server, Node::Standby)).await?;

    // A writer appends and holds its transaction open; another commits after it.
    let held = connect(&primary_config).await?;
    held.batch_execute("BEGIN").await.map_err(LabError::db("the held writer's BEGIN"))?;
    place(&held, BEFORE_STANDBY + 1).await?;
    place(&primary, BEFORE_STANDBY + 2).await?;
    server.wait_standby_caught_up().await?;

    let mut on_primary = Follower { after: Checkpoint::START, got: Vec::new() };
    let mut follower = Follower { after: Checkpoint::START, got: Vec::new() };
    let primary_read = on_primary.read(&primary).await?;
    let standby_read = follower.read(&standby).await?;
    let same_watermark = watermark(&primary).await? == watermark(&standby).await?;
    let xip_on_primary = running_listed(&primary).await?;
    let xip_on_standby = running_listed(&standby).await?;

    held.batch_execute("COMMIT").await.map_err(LabError::db("the held writer's COMMIT"))?;
    let positions: Vec<(i64, String)> = primary
        .query("SELECT position, stream_id FROM events ORDER BY position", &[])
        .await
        .map_err(LabError::db("listing the orders"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let position_of = |n: usize| positions.iter().find(|(_, s)| *s == order(n).0).map(|(p, _)| *p).unwrap_or(-1);
    server.wait_standby_caught_up().await?;
    let standby_after_commit = follower.read(&standby).await?;

    // Replay paused: the standby keeps receiving WAL but applies none of it.
    standby.batch_execute("SELECT pg_wal_replay_pause()").await.map_err(LabError::db("pg_wal_replay_pause()"))?;
    wait_until(&standby, "SELECT pg_get_wal_replay_pause_state() = 'paused'", "replay to pause").await?;
    let first_paused = BEFORE_STANDBY + 3;
    for n in first_paused..first_paused + WHILE_PAUSED {
        place(&primary, n).await?;
    }
    let target: String = primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(LabError::db("reading the primary's WAL position"))?
        .get(0);
    wait_until_with(
        &standby,
        "SELECT coalesce(pg_last_wal_receive_lsn() >= $1::text::pg_lsn, false)",
        &target,
        "the standby to receive the WAL replay has not applied",
    )
    .await?;
    let read_while_paused = follower.read(&standby).await?;
    let replay_lag_bytes: i64 = standby
        .query_one("SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint", &[])
        .await
        .map_err(LabError::db("measuring the replay lag"))?
        .get(0);
    standby.batch_execute("SELECT pg_wal_replay_resume()").await.map_err(LabError::db("pg_wal_replay_resume()"))?;
    server.wait_standby_caught_up().await?;
    let read_after_resume = follower.read(&standby).await?;

    // What a subscription does besides reading, tried on the standby.
    let mut refusals = Vec::new();
    let mut standby_config = on(server, Node::Standby);
    standby_config.application_name("labs-listener");
    match subscription::listen(&standby_config).await {
        Ok(_) => refusals.push(("LISTEN events_appended (the store's wake-up)".into(), "accepted".into())),
        Err(e) => refusals.push(("LISTEN events_appended (the store's wake-up)".into(), verbatim(&e))),
    }
    let projection = Subscription::new("orders-projection");
    projection.create(&primary).await?;
    server.wait_standby_caught_up().await?;
    let mut standby_session = connect(&on(server, Node::Standby)).await?;
    let tried = "a batch of subscription orders-projection (its checkpoint UPDATE)".to_string();
    match projection.process_batch(&mut standby_session, async |_tx, _events| Ok(())).await {
        Ok(batch) => refusals.push((tried, format!("accepted ({batch:?})"))),
        Err(store::StoreError::Database { source, .. }) => refusals.push((tried, verbatim(&source))),
        Err(other) => refusals.push((tried, other.to_string())),
    }

    // Promotion: the standby becomes a primary and its reader goes on from its checkpoint.
    server.promote_standby().await?;
    let promoted = connect(&on(server, Node::Standby)).await?;
    let first_after = first_paused + WHILE_PAUSED;
    for n in first_after..first_after + AFTER_PROMOTION {
        place(&promoted, n).await?;
    }
    let last_before = follower.got.last().map_or(0, |e| e.checkpoint.position);
    let before = follower.got.len();
    follower.read(&standby).await?;
    let after_promotion = &follower.got[before..];
    let positions_jumped = after_promotion.first().is_some_and(|e| e.checkpoint.position > last_before + 1);
    let read_after_promotion = Read(after_promotion.iter().map(|e| e.stream_id.clone()).collect());
    let subscription_after_promotion =
        match projection.process_batch(&mut standby_session, async |_tx, _events| Ok(())).await {
            Ok(subscription::Batch::Processed(n)) => format!("processed {n} events and stored its checkpoint"),
            Ok(other) => format!("{other:?}"),
            Err(e) => e.to_string(),
        };

    // The reader's whole history: every order once, none missed.
    let owed = first_after + AFTER_PROMOTION - 1;
    let got: Vec<&str> = follower.got.iter().map(|e| e.stream_id.as_str()).collect();
    let missed = (1..=owed).filter(|&n| !got.contains(&order(n).0.as_str())).count();
    let mut distinct = got.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let twice = got.len() - distinct.len();
    ensure(on_primary.got.len() == BEFORE_STANDBY, || {
        format!("the primary's reader should have stopped at the held writer after {BEFORE_STANDBY} orders")
    })?;

    Ok(StandbyReport {
        held_position: position_of(BEFORE_STANDBY + 1),
        later_position: position_of(BEFORE_STANDBY + 2),
        primary_read,
        standby_read,
        same_watermark,
        xip_on_primary,
        xip_on_standby,
        standby_after_commit,
        committed_while_paused: WHILE_PAUSED,
        read_while_paused,
        replay_lag_bytes,
        read_after_resume,
        refusals,
        read_after_promotion,
        positions_jumped,
        subscription_after_promotion,
        owed,
        missed,
        twice,
    })
}

/// This part's database on `node`.
fn on(server: &Server, node: Node) -> tokio_postgres::Config {
    let mut config = server.node_config(node);
    config.dbname(DATABASE);
    config
}

async fn wait_until(client: &Client, check: &str, what: &str) -> Result<(), LabError> {
    wait_until_with(client, check, "", what).await
}

/// Polls `check` (a boolean; `$1` is `param` when it has one) for up to 30 s.
async fn wait_until_with(client: &Client, check: &str, param: &str, what: &str) -> Result<(), LabError> {
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(30) {
        let row = if check.contains("$1") {
            client.query_one(check, &[&param]).await
        } else {
            client.query_one(check, &[]).await
        }
        .map_err(LabError::db(format!("waiting for {what}")))?;
        if row.get::<_, bool>(0) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Err(LabError::Script(format!("waited 30 s for {what}")))
}
