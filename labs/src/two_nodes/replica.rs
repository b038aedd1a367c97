//! Part C: a logical replica of the events, in a second database of the same cluster. The
//! watermark guards the transactions running where the reader runs; a replicated
//! `transaction_id` names a transaction that ran on the publisher and became visible here only
//! when the subscriber applied it, later. Copy it across and a reader skips; publish a column
//! list without it and let the subscriber stamp its own xid8 at apply, and a reader gets every
//! event in the publisher's commit order (the order the subscriber applies in).
//!
//! Why a second database and not a second server: the container backend runs its servers in
//! one container, reachable from each other, and a database of the same cluster needs nothing
//! more. The cost, proven here: CREATE SUBSCRIPTION cannot make its own slot on the same
//! cluster (it waits for its own transaction), so the slot is made first.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use tokio_postgres::Client;
use uuid::Uuid;

use super::retention::{connect, verbatim};
use crate::error::LabError;
use crate::pg::Server;
use crate::store::{self, Checkpoint, ExpectedVersion, NewEvent};

pub const PUBLISHER: &str = "origin";

/// The two replicas: one gets transaction_id as the publisher wrote it, one stamps its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Replica {
    /// Publication of every column: transaction_id arrives with the publisher's value.
    Copied,
    /// Publication with a column list without transaction_id: the subscriber's default,
    /// pg_current_xact_id(), stamps the applying transaction's id.
    Stamped,
}

impl Replica {
    pub const ALL: [Replica; 2] = [Replica::Copied, Replica::Stamped];

    pub fn database(self) -> &'static str {
        match self {
            Replica::Copied => "replica_copied",
            Replica::Stamped => "replica_stamped",
        }
    }

    fn publication(self) -> &'static str {
        match self {
            Replica::Copied => "events_all_columns",
            Replica::Stamped => "events_without_xid",
        }
    }

    /// The publication, as created on the publisher.
    fn create_publication(self) -> String {
        match self {
            Replica::Copied => format!("CREATE PUBLICATION {} FOR TABLE events", self.publication()),
            Replica::Stamped => format!(
                "CREATE PUBLICATION {} FOR TABLE events (position, event_id, stream_id, version, type, data, metadata, recorded_at)",
                self.publication()
            ),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Replica::Copied => "all columns published: transaction_id is the publisher's",
            Replica::Stamped => "column list without transaction_id: the subscriber stamps its own at apply",
        }
    }
}

/// What one replica's reader got, and what pg_stat_subscription said.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaRun {
    pub replica: Replica,
    /// While the first writer is held open on the publisher.
    pub while_held: Vec<String>,
    /// With the subscription disabled (apply lag), after the held writer committed there.
    pub during_lag: Vec<String>,
    /// pg_stat_subscription while disabled: a worker running or not.
    pub worker_during_lag: bool,
    /// After the subscription caught up, and after three more orders.
    pub after_catch_up: Vec<String>,
    pub after_more: Vec<String>,
    /// Everything it delivered, in order, and what it never delivered.
    pub delivered: Vec<String>,
    pub missed: Vec<String>,
    /// Delivered in the publisher's commit order.
    pub in_commit_order: bool,
    /// pg_stat_subscription at the end: the publisher's WAL position minus the last one the
    /// worker reported back (latest_end_lsn), in bytes; it varies from run to run.
    pub lag_bytes: Option<i64>,
}

/// Part C's findings.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaReport {
    /// CREATE SUBSCRIPTION to the same cluster with its default create_slot = true, cut by a
    /// statement_timeout: what the server said.
    pub same_cluster_create_slot: String,
    /// The publisher's commit order of the orders.
    pub commit_order: Vec<String>,
    pub replicas: Vec<ReplicaRun>,
}

fn order(n: usize) -> (String, NewEvent) {
    let id = Uuid::from_u128(0x0990_0c00_0000_4000_8000_0000_0000_0000 | n as u128);
    (format!("order-{n}"), NewEvent::new(id, "OrderPlaced", json!({ "order": n })))
}

async fn place(client: &Client, n: usize) -> Result<(), LabError> {
    let (stream, event) = order(n);
    store::append(client, &stream, ExpectedVersion::NoStream, &[event]).await?;
    Ok(())
}

/// The store's reader on a replica, its checkpoint in memory.
struct ReplicaReader {
    client: Client,
    after: Checkpoint,
    delivered: Vec<String>,
}

impl ReplicaReader {
    async fn read(&mut self) -> Result<Vec<String>, LabError> {
        let events = store::read_all_after(&self.client, self.after, 100).await?;
        if let Some(last) = events.last() {
            self.after = last.checkpoint;
        }
        let got: Vec<String> = events.iter().map(|e| e.stream_id.clone()).collect();
        self.delivered.extend(got.iter().cloned());
        Ok(got)
    }
}

fn db(server: &Server, database: &str) -> tokio_postgres::Config {
    let mut config = server.config();
    config.dbname(database);
    config
}

pub async fn run(server: &Server) -> Result<ReplicaReport, LabError> {
    let setup = server.connect().await?;
    for database in [PUBLISHER, Replica::Copied.database(), Replica::Stamped.database()] {
        setup.batch_execute(&format!("CREATE DATABASE {database}")).await.map_err(LabError::db("CREATE DATABASE"))?;
        let client = connect(&db(server, database)).await?;
        store::install(&client).await.map_err(LabError::db(format!("installing the store in {database}")))?;
    }
    let origin = connect(&db(server, PUBLISHER)).await?;
    // The logical replication launcher starts apply workers at most once per
    // wal_retrieve_retry_interval (5 s by default); this part starts and restarts four. A lab
    // setting, reloaded, so the waits are the replication's and not the launcher's pacing.
    origin
        .batch_execute("ALTER SYSTEM SET wal_retrieve_retry_interval = '50ms'")
        .await
        .map_err(LabError::db("ALTER SYSTEM SET wal_retrieve_retry_interval"))?;
    origin.batch_execute("SELECT pg_reload_conf()").await.map_err(LabError::db("pg_reload_conf()"))?;
    for replica in Replica::ALL {
        origin.batch_execute(&replica.create_publication()).await.map_err(LabError::db("CREATE PUBLICATION"))?;
    }
    // How the subscriber's apply worker reaches the publisher: from inside the server, over
    // its own Unix socket (trusted there), whatever port this machine sees.
    let row = origin
        .query_one("SELECT current_setting('unix_socket_directories'), current_setting('port')", &[])
        .await
        .map_err(LabError::db("reading the server's socket directory and port"))?;
    let (sockets, port): (String, String) = (row.get(0), row.get(1));
    let socket = sockets.split(',').next().unwrap_or_default().trim().to_string();
    let conninfo = format!("host={socket} port={port} user=postgres dbname={PUBLISHER}");

    // The same cluster, the default create_slot: the command waits for its own transaction.
    let probe = connect(&db(server, Replica::Copied.database())).await?;
    probe.batch_execute("SET statement_timeout = '1s'").await.map_err(LabError::db("SET statement_timeout"))?;
    let same_cluster_create_slot = match probe
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION same_cluster_probe CONNECTION '{conninfo}' PUBLICATION {}",
            Replica::Copied.publication()
        ))
        .await
    {
        Ok(()) => "it returned (a subscription was created)".to_string(),
        Err(e) => verbatim(&e),
    };
    drop(probe);

    // The supported way: the slot first, then the subscription that uses it. No initial copy
    // (copy_data = false): the events table is still empty, and a copy would make a temporary
    // slot that, like any new slot, waits for every transaction running on the cluster, which
    // would hold the replica back behind the writer this part holds open.
    let mut replicas = Vec::new();
    for replica in Replica::ALL {
        let slot = replica.database();
        origin
            .execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])
            .await
            .map_err(LabError::db(format!("creating slot {slot}")))?;
        let client = connect(&db(server, replica.database())).await?;
        client
            .batch_execute(&format!(
                "CREATE SUBSCRIPTION {slot} CONNECTION '{conninfo}' PUBLICATION {} WITH (create_slot = false, slot_name = '{slot}', copy_data = false)",
                replica.publication()
            ))
            .await
            .map_err(LabError::db(format!("CREATE SUBSCRIPTION {slot}")))?;
        replicas.push((replica, ReplicaReader { client, after: Checkpoint::START, delivered: Vec::new() }));
    }
    for (replica, reader) in &replicas {
        wait_for_worker(&reader.client, replica.database(), true).await?;
    }

    // Order 1 is appended and held open; order 2 commits after it.
    let held = connect(&db(server, PUBLISHER)).await?;
    held.batch_execute("BEGIN").await.map_err(LabError::db("BEGIN"))?;
    place(&held, 1).await?;
    place(&origin, 2).await?;
    let mut commit_order = vec![order(2).0];
    for (_, reader) in &replicas {
        wait_for_rows(&reader.client, 1).await?;
    }
    let mut while_held = Vec::new();
    for (_, reader) in &mut replicas {
        while_held.push(reader.read().await?);
    }

    // Apply lag: the subscriptions stop (as a subscriber restart or a slow network would stop
    // them) while order 1 commits on the publisher.
    for (replica, reader) in &replicas {
        reader
            .client
            .batch_execute(&format!("ALTER SUBSCRIPTION {} DISABLE", replica.database()))
            .await
            .map_err(LabError::db("ALTER SUBSCRIPTION … DISABLE"))?;
        wait_for_worker(&reader.client, replica.database(), false).await?;
    }
    held.batch_execute("COMMIT").await.map_err(LabError::db("COMMIT"))?;
    commit_order.push(order(1).0);
    let mut during_lag = Vec::new();
    let mut worker_during_lag = Vec::new();
    for (replica, reader) in &mut replicas {
        during_lag.push(reader.read().await?);
        worker_during_lag.push(worker_running(&reader.client, replica.database()).await?);
    }

    // The subscriptions resume and apply order 1.
    for (replica, reader) in &replicas {
        reader
            .client
            .batch_execute(&format!("ALTER SUBSCRIPTION {} ENABLE", replica.database()))
            .await
            .map_err(LabError::db("ALTER SUBSCRIPTION … ENABLE"))?;
    }
    for (_, reader) in &replicas {
        wait_for_rows(&reader.client, 2).await?;
    }
    let mut after_catch_up = Vec::new();
    for (_, reader) in &mut replicas {
        after_catch_up.push(reader.read().await?);
    }

    // Three more orders, one after the other.
    for n in 3..=5 {
        place(&origin, n).await?;
        commit_order.push(order(n).0);
    }
    for (_, reader) in &replicas {
        wait_for_rows(&reader.client, 5).await?;
    }
    let mut after_more = Vec::new();
    for (_, reader) in &mut replicas {
        after_more.push(reader.read().await?);
    }

    let mut runs = Vec::new();
    for (i, (replica, reader)) in replicas.into_iter().enumerate() {
        let missed: Vec<String> = commit_order.iter().filter(|o| !reader.delivered.contains(o)).cloned().collect();
        // One cluster: its current WAL position is the publisher's, so pg_stat_subscription's
        // last position reported back to the publisher gives the lag in bytes.
        let lag_bytes: Option<i64> = reader
            .client
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), max(latest_end_lsn))::bigint
                   FROM pg_stat_subscription WHERE subname = $1",
                &[&replica.database()],
            )
            .await
            .map_err(LabError::db("reading pg_stat_subscription"))?
            .get(0);
        runs.push(ReplicaRun {
            replica,
            while_held: while_held[i].clone(),
            during_lag: during_lag[i].clone(),
            worker_during_lag: worker_during_lag[i],
            after_catch_up: after_catch_up[i].clone(),
            after_more: after_more[i].clone(),
            in_commit_order: reader.delivered == commit_order,
            delivered: reader.delivered,
            missed,
            lag_bytes,
        });
    }
    Ok(ReplicaReport { same_cluster_create_slot, commit_order, replicas: runs })
}

/// Whether the subscription's apply worker runs: pg_stat_subscription has a row with a
/// process for it. (pg_subscription is shared by the whole cluster, so the name matters.)
async fn worker_running(client: &Client, subscription: &str) -> Result<bool, LabError> {
    Ok(client
        .query_one(
            "SELECT count(*) > 0 FROM pg_stat_subscription WHERE subname = $1 AND pid IS NOT NULL",
            &[&subscription],
        )
        .await
        .map_err(LabError::db("reading pg_stat_subscription"))?
        .get(0))
}

async fn wait_for_worker(client: &Client, subscription: &str, running: bool) -> Result<(), LabError> {
    let what = format!("the apply worker of {subscription} to {}", if running { "start" } else { "stop" });
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if worker_running(client, subscription).await? == running {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(LabError::Script(format!("waited 30 s for {what}")))
}

/// Waits (up to 30 s) until the replica's events table has `rows` rows.
async fn wait_for_rows(client: &Client, rows: i64) -> Result<(), LabError> {
    wait_for(client, &format!("the replica to hold {rows} events"), async |c| {
        Ok(c.query_one("SELECT count(*) >= $1 FROM events", &[&rows]).await?.get(0))
    })
    .await
}

async fn wait_for(
    client: &Client,
    what: &str,
    check: impl AsyncFn(&Client) -> Result<bool, tokio_postgres::Error>,
) -> Result<(), LabError> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if check(client).await.map_err(LabError::db(format!("waiting for {what}")))? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(LabError::Script(format!("waited 30 s for {what}")))
}
