//! One demonstration per myth that has one. Each gets a fresh server, scripts the situation
//! the myth is about, and measures; whether the myth is busted is judged from the numbers.

use std::time::{Duration, Instant};

use futures_util::{stream::poll_fn, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::DemoReport;
use crate::error::{ensure, LabError};
use crate::pg::{Capability, Node, Server};

id_enum! {
    /// A myth that has a demonstration, by the myth's id.
    pub enum Demo {
        ReplicationNoLoss = "replication-no-loss",
        IdentityGapFree = "identity-gap-free",
        NotifyDurableQueue = "notify-durable-queue",
        AsyncCommitCorrupts = "async-commit-corrupts",
        UpdateLessWal = "update-less-wal",
        UnloggedFreeSpeedup = "unlogged-free-speedup",
        MoreIndexesFree = "more-indexes-free",
    }
}

pub const ALL: &[Demo] = Demo::ALL;

/// Rows the WAL demonstrations write: enough for full-page images and index pages to show,
/// small enough to take well under a second.
const WAL_ROWS: i32 = 10_000;
/// Commits acknowledged with the WAL writer frozen in the async-commit demonstration.
const ASYNC_COMMITS: i32 = 200;
const DURABLE_COMMITS: i32 = 100;

impl Demo {
    /// What the demonstration does to its server beyond SQL.
    pub fn needs(self) -> &'static [Capability] {
        match self {
            Demo::ReplicationNoLoss => &[Capability::Standby, Capability::Crash, Capability::Restart],
            Demo::AsyncCommitCorrupts => &[Capability::FreezeWalWriter, Capability::Crash, Capability::Restart],
            Demo::UnloggedFreeSpeedup => &[Capability::Crash, Capability::Restart],
            Demo::IdentityGapFree | Demo::NotifyDurableQueue | Demo::UpdateLessWal | Demo::MoreIndexesFree => &[],
        }
    }

    /// Runs the demonstration on a fresh server.
    pub async fn run(self, server: &mut Server, statement: &str, verdict: &str) -> Result<DemoReport, LabError> {
        let started = Instant::now();
        let mut report = DemoReport {
            myth: self.id().to_string(),
            statement: statement.to_string(),
            verdict: verdict.to_string(),
            busted: false,
            steps: Vec::new(),
            measured: Vec::new(),
            server_said: Vec::new(),
            seconds: 0.0,
        };
        match self {
            Demo::ReplicationNoLoss => replication_no_loss(server, &mut report).await?,
            Demo::IdentityGapFree => identity_gap_free(server, &mut report).await?,
            Demo::NotifyDurableQueue => notify_durable_queue(server, &mut report).await?,
            Demo::AsyncCommitCorrupts => async_commit_corrupts(server, &mut report).await?,
            Demo::UpdateLessWal => update_less_wal(server, &mut report).await?,
            Demo::UnloggedFreeSpeedup => unlogged_free_speedup(server, &mut report).await?,
            Demo::MoreIndexesFree => more_indexes_free(server, &mut report).await?,
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }
}

impl DemoReport {
    fn step(&mut self, text: impl Into<String>) {
        self.steps.push(text.into());
    }
    /// A measurement shown as its value (numbers, flags, lists of ids).
    fn measure(&mut self, name: &str, value: impl Into<serde_json::Value>) {
        let value = value.into();
        let shown = super::show(&value);
        self.measured.push(super::Measure { name: name.to_string(), value, unit: None, shown });
    }
    /// A measurement whose machine value (bytes, seconds, a ratio) reads better another way.
    fn measure_shown(&mut self, name: &str, value: impl Into<serde_json::Value>, shown: String) {
        // "name (unit)": the unit goes to machines with the value; people read it in `shown`.
        let (name, unit) = match name.strip_suffix(')').and_then(|n| n.rsplit_once(" (")) {
            Some((name, unit)) => (name, Some(unit.to_string())),
            None => (name, None),
        };
        self.measured.push(super::Measure { name: name.to_string(), value: value.into(), unit, shown });
    }
}

/// A session whose server messages (warnings, notifications) arrive on a channel, in order.
async fn session_with_messages(
    config: &tokio_postgres::Config,
) -> Result<(Client, mpsc::UnboundedReceiver<AsyncMessage>), LabError> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (send, receive) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if send.send(message).is_err() {
                break;
            }
        }
    });
    Ok((client, receive))
}

async fn count(client: &Client, table: &str) -> Result<i64, LabError> {
    Ok(client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await?.get(0))
}

async fn wal_lsn(client: &Client) -> Result<String, LabError> {
    Ok(client.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).await?.get(0))
}

async fn wal_since(client: &Client, from: &str) -> Result<i64, LabError> {
    Ok(client
        .query_one("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::text::pg_lsn)::bigint", &[&from])
        .await?
        .get(0))
}

fn kib(bytes: i64) -> String {
    if bytes < 10 * 1024 {
        format!("{bytes} bytes")
    } else {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    }
}

/// "Replication means no data loss": an asynchronous standby that falls behind loses what the
/// primary acknowledged; a synchronous one makes the commit wait instead, and a cancelled wait
/// still reports success.
async fn replication_no_loss(server: &mut Server, r: &mut DemoReport) -> Result<(), LabError> {
    let primary = server.connect().await?;
    primary.batch_execute("CREATE TABLE orders (id int PRIMARY KEY, note text NOT NULL)").await?;
    server.start_standby().await?;
    r.step("built a streaming standby from the primary (pg_basebackup) and waited until it had replayed everything");

    // Synchronous first: with the standby's receiver paused, a commit cannot be confirmed.
    server.set_synchronous_standby(true).await?;
    server.pause_standby_receiver().await?;
    r.step("made the standby synchronous (synchronous_standby_names = '*'), then paused its WAL receiver");
    let (waiting, mut messages) = session_with_messages(&server.config()).await?;
    let pid: i32 = waiting.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
    let insert = tokio::spawn(async move {
        let started = Instant::now();
        let result = waiting.execute("INSERT INTO orders VALUES (100, 'waited for the standby')", &[]).await;
        (result.map_err(|e| e.to_string()), started.elapsed(), waiting)
    });
    // Wait until the commit is really waiting for the standby, then give it a second.
    let started = Instant::now();
    loop {
        let state: Option<String> =
            primary.query_one("SELECT wait_event FROM pg_stat_activity WHERE pid = $1", &[&pid]).await?.get(0);
        if state.as_deref() == Some("SyncRep") {
            break;
        }
        ensure(started.elapsed() < Duration::from_secs(20), || {
            "the commit never started waiting for the standby".to_string()
        })?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still_waiting: bool =
        primary.query_one("SELECT wait_event = 'SyncRep' FROM pg_stat_activity WHERE pid = $1", &[&pid]).await?.get(0);
    primary.query_one("SELECT pg_cancel_backend($1)", &[&pid]).await?;
    let (result, waited, waiting) = insert.await?;
    r.step("inserted order 100 with the receiver paused: the commit waited; after a second the lab cancelled the wait (pg_cancel_backend)");
    r.measure("sync commit still waiting after 1 s", still_waiting);
    r.measure_shown(
        "sync commit returned after (s)",
        waited.as_secs_f64(),
        format!("{:.1} s, when cancelled", waited.as_secs_f64()),
    );
    r.measure("sync commit reported to the client", if result.is_ok() { "success" } else { "an error" });
    drop(waiting);
    while let Ok(message) = messages.try_recv() {
        if let AsyncMessage::Notice(notice) = message {
            let detail = notice.detail().map(|d| format!(" DETAIL: {d}")).unwrap_or_default();
            r.server_said.push(format!("{}: {}{detail}", notice.severity(), notice.message()));
        }
    }

    // Asynchronous: the same situation, nothing waits.
    server.set_synchronous_standby(false).await?;
    r.step("made the standby asynchronous again (its receiver still paused)");
    for id in 1..=3 {
        primary.execute("INSERT INTO orders VALUES ($1, 'acknowledged')", &[&id]).await?;
    }
    r.step("inserted orders 1, 2 and 3: each commit returned at once");
    let on_primary = count(&primary, "orders").await?;
    server.crash().await?;
    r.step("crashed the primary (immediate stop)");
    server.promote_standby().await?;
    r.step("promoted the standby to be the new primary");
    let standby = server.connect_to(Node::Standby).await?;
    let on_new_primary = count(&standby, "orders").await?;
    server.restart().await?;
    let old = server.connect().await?;
    let on_old_primary = count(&old, "orders").await?;
    r.step("restarted the old primary to see what its disk kept");

    r.measure("orders acknowledged to clients", on_primary);
    r.measure("orders on the promoted standby", on_new_primary);
    r.measure("orders lost by the failover", on_primary - on_new_primary);
    r.measure("orders still on the old primary's disk", on_old_primary);
    r.busted = on_new_primary < on_primary && result.is_ok();
    Ok(())
}

/// "Identity values are gap-free and in commit order": a reader that polls `id > last_seen`
/// skips a row whose id was taken before, but committed after, one it has read.
async fn identity_gap_free(server: &mut Server, r: &mut DemoReport) -> Result<(), LabError> {
    let setup = server.connect().await?;
    setup
        .batch_execute("CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text NOT NULL)")
        .await?;
    let a = server.connect().await?;
    let b = server.connect().await?;
    let reader = server.connect().await?;
    a.batch_execute("BEGIN").await?;
    let id_a: i64 = a.query_one("INSERT INTO events (body) VALUES ('A') RETURNING id", &[]).await?.get(0);
    r.step(format!("session A began, inserted, got id {id_a}, and has not committed"));
    let id_b: i64 = b.query_one("INSERT INTO events (body) VALUES ('B') RETURNING id", &[]).await?.get(0);
    r.step(format!("session B inserted and committed: id {id_b}"));
    let poll = "SELECT id FROM events WHERE id > $1 ORDER BY id";
    let first: Vec<i64> = reader.query(poll, &[&0i64]).await?.iter().map(|row| row.get(0)).collect();
    let last_seen = first.iter().copied().max().unwrap_or(0);
    r.step(format!("the reader polled `id > 0`: read {first:?}, so it remembers last_seen = {last_seen}"));
    a.batch_execute("COMMIT").await?;
    r.step(format!("session A committed id {id_a}"));
    let second: Vec<i64> = reader.query(poll, &[&last_seen]).await?.iter().map(|row| row.get(0)).collect();
    r.step(format!("the reader polled `id > {last_seen}`: read {second:?}"));
    let c = server.connect().await?;
    c.batch_execute("BEGIN").await?;
    let id_c: i64 = c.query_one("INSERT INTO events (body) VALUES ('C') RETURNING id", &[]).await?.get(0);
    c.batch_execute("ROLLBACK").await?;
    let id_d: i64 = b.query_one("INSERT INTO events (body) VALUES ('D') RETURNING id", &[]).await?.get(0);
    r.step(format!("session C inserted (id {id_c}) and rolled back; then D inserted and committed: id {id_d}"));
    let stored: Vec<i64> =
        setup.query("SELECT id FROM events ORDER BY id", &[]).await?.iter().map(|row| row.get(0)).collect();
    let read: Vec<i64> = first.iter().chain(second.iter()).copied().collect();
    let missed: Vec<i64> = stored.iter().filter(|id| **id < id_d && !read.contains(id)).copied().collect();
    r.measure("ids in the table", json!(stored));
    r.measure("ids the reader saw (before D)", json!(read));
    r.measure("ids the reader will never see", json!(missed));
    r.measure("gaps in the ids", json!(gaps(&stored)));
    r.busted = !missed.is_empty() || !gaps(&stored).is_empty();
    Ok(())
}

fn gaps(ids: &[i64]) -> Vec<i64> {
    ids.windows(2).flat_map(|w| (w[0] + 1)..w[1]).collect()
}

/// "LISTEN/NOTIFY is a durable queue": a listener that is not connected gets nothing, ever.
async fn notify_durable_queue(server: &mut Server, r: &mut DemoReport) -> Result<(), LabError> {
    let writer = server.connect().await?;
    writer.batch_execute("CREATE TABLE orders (id int PRIMARY KEY)").await?;
    let notify = |id: i32| format!("BEGIN; INSERT INTO orders VALUES ({id}); NOTIFY orders, 'order {id}'; COMMIT;");

    let (listener, mut messages) = session_with_messages(&server.config()).await?;
    listener.batch_execute("LISTEN orders").await?;
    writer.batch_execute(&notify(1)).await?;
    let while_connected = notifications_within(&mut messages, Duration::from_millis(500)).await;
    r.step("a listener ran LISTEN orders; the writer inserted order 1 and sent NOTIFY in the same transaction");
    drop(listener);
    drop(messages);
    r.step("the listener disconnected (a deploy, a network blip)");
    for id in 2..=4 {
        writer.batch_execute(&notify(id)).await?;
    }
    r.step("the writer inserted orders 2, 3 and 4, each with its NOTIFY, and committed");
    let (listener, mut messages) = session_with_messages(&server.config()).await?;
    listener.batch_execute("LISTEN orders").await?;
    let after_reconnect = notifications_within(&mut messages, Duration::from_secs(1)).await;
    r.step("the listener reconnected, ran LISTEN orders again and waited a second");
    let rows = count(&writer, "orders").await?;

    r.measure("notifications received while connected", json!(while_connected));
    r.measure("notifications received after reconnecting", json!(after_reconnect));
    r.measure("orders in the table", rows);
    r.busted = after_reconnect.is_empty() && rows == 4;
    Ok(())
}

async fn notifications_within(messages: &mut mpsc::UnboundedReceiver<AsyncMessage>, wait: Duration) -> Vec<String> {
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, messages.recv()).await {
        if let AsyncMessage::Notification(n) = message {
            received.push(n.payload().to_string());
        }
    }
    received
}

/// "synchronous_commit = off can corrupt the database": it loses the last commits, and what
/// remains is consistent.
async fn async_commit_corrupts(server: &mut Server, r: &mut DemoReport) -> Result<(), LabError> {
    server.quiet_background_wal_writes().await?;
    let client = server.connect().await?;
    client
        .batch_execute("CREATE EXTENSION amcheck; CREATE TABLE orders (id int PRIMARY KEY, body jsonb NOT NULL)")
        .await?;
    let insert =
        "INSERT INTO orders VALUES ($1, jsonb_build_object('order', $1::int, 'sku', 'sku-' || ($1::int % 97)))";
    for id in 1..=DURABLE_COMMITS {
        client.execute(insert, &[&id]).await?;
    }
    r.step(format!(
        "committed orders 1..{DURABLE_COMMITS} with synchronous_commit = on (each flushed before it returned)"
    ));
    let pid = server.freeze_wal_writer().await?;
    r.step(format!("froze the WAL writer (SIGSTOP to pid {pid}): from now on nothing flushes async commits, as when an OS crash loses unflushed writes"));
    client.batch_execute("SET synchronous_commit = off").await?;
    let last = DURABLE_COMMITS + ASYNC_COMMITS;
    for id in (DURABLE_COMMITS + 1)..=last {
        client.execute(insert, &[&id]).await?;
    }
    r.step(format!(
        "committed orders {}..{last} with synchronous_commit = off: every commit returned success",
        DURABLE_COMMITS + 1
    ));
    let acknowledged = count(&client, "orders").await?;
    drop(client);
    server.crash().await?;
    r.step("crashed the server (immediate stop)");
    let restarted = Instant::now();
    server.restart().await?;
    r.step("restarted it: crash recovery replayed the WAL on disk");
    let client = server.connect().await?;
    let survived = count(&client, "orders").await?;
    let max_id: Option<i32> = client.query_one("SELECT max(id) FROM orders", &[]).await?.get(0);
    let index_ok = client.batch_execute("SELECT bt_index_check('orders_pkey', true)").await.is_ok();
    let heap_ok = client
        .query_one("SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT FROM orders i WHERE i.id = o.id)", &[])
        .await?
        .get::<_, i64>(0)
        == 0;
    let writable = client.execute(insert, &[&(last + 1)]).await.is_ok();
    r.step("checked the index against the table with amcheck (bt_index_check, heapallindexed) and wrote a new order");

    r.measure("commits acknowledged", acknowledged);
    r.measure("orders after recovery", survived);
    r.measure("acknowledged commits lost", acknowledged - survived);
    r.measure("highest order id after recovery", json!(max_id));
    r.measure_shown(
        "recovery and restart (s)",
        restarted.elapsed().as_secs_f64(),
        format!("{:.1} s", restarted.elapsed().as_secs_f64()),
    );
    r.measure("amcheck: index consistent with the table", index_ok && heap_ok);
    r.measure("accepts writes again", writable);
    // Busted: the database is consistent; what went is exactly the unflushed commits.
    r.busted = index_ok && heap_ok && writable && survived == i64::from(DURABLE_COMMITS);
    Ok(())
}

const EVENTS_TABLE: &str = "(id bigint PRIMARY KEY, stream_id text NOT NULL, type text NOT NULL, \
     created_at timestamptz NOT NULL, data jsonb NOT NULL)";

fn insert_events(table: &str) -> String {
    format!(
        "INSERT INTO {table} SELECT i, 'order-' || (i % 500), 'OrderPlaced', \
         timestamptz '2026-11-27 09:00+00' + i * interval '1 ms', \
         jsonb_build_object('order', i, 'sku', 'sku-' || (i % 97), 'amount_cents', (i * 7919) % 100000, 'note', repeat('x', 120)) \
         FROM generate_series(1, {WAL_ROWS}) AS i"
    )
}

/// "UPDATE writes less WAL than INSERT": right after a checkpoint, each page's first change
/// writes the whole page (a full-page image).
async fn update_less_wal(server: &mut Server, r: &mut DemoReport) -> Result<(), LabError> {
    let client = server.connect().await?;
    client.batch_execute(&format!("CREATE TABLE events {EVENTS_TABLE}")).await?;
    let from = wal_lsn(&client).await?;
    client.batch_execute(&insert_events("events")).await?;
    let insert = wal_since(&client, &from).await?;
    r.step(format!("inserted {WAL_ROWS} events in one statement"));
    client.batch_execute("CHECKPOINT").await?;
    let from = wal_lsn(&client).await?;
    client.batch_execute("UPDATE events SET data = data || '{\"status\": \"shipped\"}'").await?;
    let update_after_checkpoint = wal_since(&client, &from).await?;
    r.step("ran CHECKPOINT, then updated every event (one jsonb key added)");
    let from = wal_lsn(&client).await?;
    client.batch_execute("UPDATE events SET data = data || '{\"status\": \"delivered\"}'").await?;
    let update_again = wal_since(&client, &from).await?;
    r.step("updated every event again, no checkpoint in between");
    r.measure_shown("WAL of the INSERT (bytes)", insert, kib(insert));
    r.measure_shown(
        "WAL of the UPDATE after a checkpoint (bytes)",
        update_after_checkpoint,
        kib(update_after_checkpoint),
    );
    r.measure_shown("WAL of the same UPDATE again (bytes)", update_again, kib(update_again));
    let ratio = update_after_checkpoint as f64 / insert as f64;
    r.measure_shown("UPDATE after checkpoint / INSERT", ratio, format!("{ratio:.2}x"));
    r.busted = update_after_checkpoint > insert;
    Ok(())
}

/// "Unlogged tables are a free speed-up": they skip WAL, and a crash empties them.
async fn unlogged_free_speedup(server: &mut Server, r: &mut DemoReport) -> Result<(), LabError> {
    let client = server.connect().await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE events {EVENTS_TABLE}; CREATE UNLOGGED TABLE events_unlogged {EVENTS_TABLE}"
        ))
        .await?;
    let from = wal_lsn(&client).await?;
    client.batch_execute(&insert_events("events")).await?;
    let logged = wal_since(&client, &from).await?;
    let from = wal_lsn(&client).await?;
    client.batch_execute(&insert_events("events_unlogged")).await?;
    let unlogged = wal_since(&client, &from).await?;
    r.step(format!("inserted the same {WAL_ROWS} events into a logged table and into an UNLOGGED one"));
    drop(client);
    server.crash().await?;
    server.restart().await?;
    r.step("crashed the server (immediate stop) and restarted it");
    let client = server.connect().await?;
    let logged_rows = count(&client, "events").await?;
    let unlogged_rows = count(&client, "events_unlogged").await?;
    r.measure_shown("WAL, logged table (bytes)", logged, kib(logged));
    r.measure_shown("WAL, unlogged table (bytes)", unlogged, kib(unlogged));
    r.measure("rows after the crash, logged table", logged_rows);
    r.measure("rows after the crash, unlogged table", unlogged_rows);
    r.busted = unlogged_rows == 0 && logged_rows == i64::from(WAL_ROWS);
    Ok(())
}

/// "More indexes are free on an append-only table": every index is written, and logged, on
/// every insert.
async fn more_indexes_free(server: &mut Server, r: &mut DemoReport) -> Result<(), LabError> {
    let client = server.connect().await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE events_pk {EVENTS_TABLE};
             CREATE TABLE events_btree {EVENTS_TABLE};
             CREATE INDEX ON events_btree (stream_id); CREATE INDEX ON events_btree (type); CREATE INDEX ON events_btree (created_at);
             CREATE TABLE events_gin {EVENTS_TABLE};
             CREATE INDEX ON events_gin (stream_id); CREATE INDEX ON events_gin (type); CREATE INDEX ON events_gin (created_at);
             CREATE INDEX ON events_gin USING gin (data);"
        ))
        .await?;
    let mut wal = Vec::new();
    for table in ["events_pk", "events_btree", "events_gin"] {
        let from = wal_lsn(&client).await?;
        client.batch_execute(&insert_events(table)).await?;
        wal.push(wal_since(&client, &from).await?);
    }
    r.step(format!("inserted the same {WAL_ROWS} events into three tables: primary key only; plus 3 B-tree indexes; plus those and a GIN index on the jsonb"));
    r.measure_shown("WAL, primary key only (bytes)", wal[0], kib(wal[0]));
    r.measure_shown(
        "WAL, + 3 B-tree indexes (bytes)",
        wal[1],
        format!("{} ({:+.0}%)", kib(wal[1]), (wal[1] as f64 / wal[0] as f64 - 1.0) * 100.0),
    );
    r.measure_shown(
        "WAL, + 3 B-tree + GIN (bytes)",
        wal[2],
        format!("{} ({:+.0}%)", kib(wal[2]), (wal[2] as f64 / wal[0] as f64 - 1.0) * 100.0),
    );
    r.busted = wal[1] > wal[0] && wal[2] > wal[1];
    Ok(())
}
