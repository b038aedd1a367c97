//! One run of a scenario: the burst, the consumer that ships orders, the failure, the counts.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use super::{Counts, Run, Scenario, Variant};
use crate::error::{ensure, LabError};
use crate::pg::{Node, Server};
use crate::store::{self, Checkpoint, ExpectedVersion, NewEvent};

/// Clients placing orders at once.
pub const WRITERS: usize = 4;
/// Orders placed before the failure is set up: durable in every scenario.
pub const PHASE_ONE_ORDERS: usize = 200;
/// Orders placed after it: the ones the scenario puts at risk.
pub const PHASE_TWO_ORDERS: usize = 200;
/// Orders placed on the serving node after recovery, to test the consumer's checkpoint.
pub const NEW_ORDERS_AFTER_RECOVERY: usize = 20;
const FIRST_NEW_ORDER: usize = 10_001;

/// The one event each order is: its id is derived from the order number, so a client that
/// retries sends the same event and the store keeps one (idempotent by event id).
pub(super) fn order_placed(order: usize, writer: usize) -> (String, NewEvent) {
    // A fixed namespace in the high bits, the order number in the low ones.
    let event_id = Uuid::from_u128((0x5a1e_u128 << 64) | order as u128);
    let data = json!({ "order": order, "writer": writer, "sku": format!("sku-{}", order % 97), "amount_cents": (order * 7919) % 100_000 });
    (format!("order-{order:05}"), NewEvent::new(event_id, "OrderPlaced", data))
}

/// Places `orders` from `WRITERS` concurrent clients; returns the orders acknowledged.
async fn place_orders(
    server: &Server,
    orders: Vec<usize>,
    synchronous_commit_off: bool,
) -> Result<Vec<usize>, LabError> {
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let mine: Vec<usize> = orders.iter().copied().filter(|o| o % WRITERS == writer).collect();
        let client = server.connect().await?;
        if synchronous_commit_off {
            client.batch_execute("SET synchronous_commit = off").await?;
        }
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for order in mine {
                let (stream, event) = order_placed(order, writer);
                store::append(&client, &stream, ExpectedVersion::NoStream, &[event]).await?;
                acknowledged.push(order);
            }
            Ok::<_, LabError>(acknowledged)
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await??);
    }
    acknowledged.sort_unstable();
    Ok(acknowledged)
}

/// The downstream consumer: reads the store behind its checkpoint and "ships" every order
/// (the warehouse's own records, outside PostgreSQL, kept here in memory).
struct Consumer {
    stop: watch::Sender<bool>,
    state: Arc<Mutex<Shipping>>,
    task: tokio::task::JoinHandle<Result<(), LabError>>,
}

#[derive(Default)]
struct Shipping {
    checkpoint: Option<Checkpoint>,
    shipped: Vec<usize>,
}

impl Consumer {
    async fn start(server: &Server) -> Result<Consumer, LabError> {
        let client = server.connect().await?;
        let (stop, mut stopped) = watch::channel(false);
        let state = Arc::new(Mutex::new(Shipping::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let after = shared.lock().expect("consumer state").checkpoint.unwrap_or(Checkpoint::START);
                let events = store::read_all_after(&client, after, 500).await?;
                if events.is_empty() {
                    if *stopped.borrow() {
                        return Ok(());
                    }
                    let _ = tokio::time::timeout(Duration::from_millis(10), stopped.changed()).await;
                    continue;
                }
                let mut state = shared.lock().expect("consumer state");
                for event in events {
                    if let Some(order) = event.data.get("order").and_then(|o| o.as_u64()) {
                        state.shipped.push(order as usize);
                    }
                    state.checkpoint = Some(event.checkpoint);
                }
            }
        });
        Ok(Consumer { stop, state, task })
    }

    async fn wait_until_shipped(&self, count: usize) -> Result<(), LabError> {
        let started = Instant::now();
        while self.state.lock().expect("consumer state").shipped.len() < count {
            ensure(!self.task.is_finished(), || "the consumer stopped early".to_string())?;
            ensure(started.elapsed() < Duration::from_secs(30), || {
                format!("the consumer did not ship {count} orders within 30 s")
            })?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Stops it and returns its checkpoint and what it shipped.
    async fn stop(self) -> Result<(Option<Checkpoint>, Vec<usize>), LabError> {
        let _ = self.stop.send(true);
        self.task.await??;
        let state = std::mem::take(&mut *self.state.lock().expect("consumer state"));
        Ok((state.checkpoint, state.shipped))
    }
}

/// The acknowledged orders present on a node.
async fn orders_on(server: &Server, node: Node, acknowledged: &HashSet<usize>) -> Result<HashSet<usize>, LabError> {
    let client = server.connect_to(node).await?;
    let rows = client.query("SELECT (data->>'order')::int FROM events WHERE type = 'OrderPlaced'", &[]).await?;
    Ok(rows.iter().map(|r| r.get::<_, i32>(0) as usize).filter(|o| acknowledged.contains(o)).collect())
}

/// Runs the scenario once on a fresh `server`.
pub async fn run(server: &mut Server, scenario: Scenario, variant: Variant) -> Result<Run, LabError> {
    let started = Instant::now();
    let mut steps: Vec<String> = Vec::new();
    let safe = variant == Variant::Safe;
    store::install(&server.connect().await?).await?;
    // Nothing but the script flushes WAL: what is lost is decided by the phases, not by luck.
    server.quiet_background_wal_writes().await?;
    match scenario {
        Scenario::FrozenWalWriter => {}
        Scenario::AsyncFailover => {
            server.start_standby().await?;
            steps.push("built a streaming standby (pg_basebackup)".into());
        }
        Scenario::UnarchivedWal => {
            server.take_base_backup().await?;
            steps.push("WAL archiving on since the server started; took a base backup".into());
            if safe {
                server.start_standby().await?;
                steps.push("built a streaming standby (pg_basebackup)".into());
            }
        }
    }
    if safe && scenario != Scenario::FrozenWalWriter {
        server.set_synchronous_standby(true).await?;
        steps.push("made the standby synchronous: a commit returns once the standby has flushed it".into());
    }

    let consumer = Consumer::start(server).await?;
    let phase_one: Vec<usize> = (1..=PHASE_ONE_ORDERS).collect();
    let mut acknowledged = place_orders(server, phase_one, false).await?;
    consumer.wait_until_shipped(acknowledged.len()).await?;
    steps.push(format!(
        "{WRITERS} writers placed orders 1..{PHASE_ONE_ORDERS} (synchronous_commit = on); the consumer shipped them"
    ));

    match (scenario, variant) {
        (Scenario::FrozenWalWriter, _) => {
            server.freeze_wal_writer().await?;
            steps.push("froze the WAL writer (SIGSTOP)".into());
        }
        (Scenario::AsyncFailover, Variant::AsConfigured) => {
            server.wait_standby_caught_up().await?;
            server.pause_standby_receiver().await?;
            steps.push("the standby fell behind: its WAL receiver paused after it had replayed phase one".into());
        }
        (Scenario::AsyncFailover, Variant::Safe) => {}
        (Scenario::UnarchivedWal, _) => {
            let segment = server.switch_wal_and_wait_archived().await?;
            steps.push(format!("closed the WAL segment ({segment}) and waited until the archiver had copied it"));
        }
    }

    let phase_two: Vec<usize> = ((PHASE_ONE_ORDERS + 1)..=(PHASE_ONE_ORDERS + PHASE_TWO_ORDERS)).collect();
    let async_commit = scenario == Scenario::FrozenWalWriter && !safe;
    let phase_started = Instant::now();
    acknowledged.extend(place_orders(server, phase_two, async_commit).await?);
    let phase_two_ms = phase_started.elapsed().as_millis() as u64;
    consumer.wait_until_shipped(acknowledged.len()).await?;
    let (checkpoint, shipped) = consumer.stop().await?;
    let commit = if async_commit { "synchronous_commit = off" } else { "synchronous_commit = on" };
    steps.push(format!(
        "the writers placed orders {}..{} ({commit}); every append returned success; the consumer shipped them",
        PHASE_ONE_ORDERS + 1,
        PHASE_ONE_ORDERS + PHASE_TWO_ORDERS
    ));

    let acked: HashSet<usize> = acknowledged.iter().copied().collect();
    let mut counts = Counts { acknowledged: acknowledged.len(), shipped: shipped.len(), ..Counts::default() };
    server.crash().await?;
    let serving = match scenario {
        Scenario::FrozenWalWriter => {
            steps.push("crashed the server (immediate stop) and restarted it: crash recovery".into());
            server.restart().await?;
            let on_primary = orders_on(server, Node::Primary, &acked).await?;
            counts.durable_on_primary = Some(on_primary.len());
            (Node::Primary, on_primary)
        }
        Scenario::AsyncFailover => {
            server.promote_standby().await?;
            steps.push("crashed the primary; promoted the standby, which now serves".into());
            let on_standby = orders_on(server, Node::Standby, &acked).await?;
            server.restart().await?;
            steps.push("restarted the old primary, only to count what its disk kept".into());
            counts.durable_on_primary = Some(orders_on(server, Node::Primary, &acked).await?.len());
            counts.on_standby = Some(on_standby.len());
            (Node::Standby, on_standby)
        }
        Scenario::UnarchivedWal => {
            server.restore_primary_from_archive().await?;
            steps.push(
                "crashed the primary and lost its disk; rebuilt it from the base backup plus the archived WAL".into(),
            );
            let archived = orders_on(server, Node::Primary, &acked).await?;
            counts.in_archive = Some(archived.len());
            if safe {
                server.promote_standby().await?;
                steps.push("promoted the synchronous standby, which now serves".into());
                let on_standby = orders_on(server, Node::Standby, &acked).await?;
                counts.on_standby = Some(on_standby.len());
                (Node::Standby, on_standby)
            } else {
                (Node::Primary, archived)
            }
        }
    };
    let (node, present) = serving;
    counts.serving = present.len();
    counts.lost = acknowledged.iter().filter(|o| !present.contains(o)).count();
    counts.shipped_but_missing = shipped.iter().filter(|o| !present.contains(o)).count();

    // After recovery: new orders, and the consumer resuming from the checkpoint it had.
    let client = server.connect_to(node).await?;
    for order in FIRST_NEW_ORDER..(FIRST_NEW_ORDER + NEW_ORDERS_AFTER_RECOVERY) {
        let (stream, event) = order_placed(order, 0);
        store::append(&client, &stream, ExpectedVersion::NoStream, &[event]).await?;
    }
    let resumed = store::read_all_after(&client, checkpoint.unwrap_or(Checkpoint::START), 10_000).await?;
    let last_shipped_position = checkpoint.map_or(0, |c| c.position);
    let reused: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE type = 'OrderPlaced' AND (data->>'order')::int >= $1 AND position <= $2",
            &[&(FIRST_NEW_ORDER as i32), &last_shipped_position],
        )
        .await?
        .get(0);
    counts.new_with_reused_position = reused as usize;
    counts.new_after_recovery = NEW_ORDERS_AFTER_RECOVERY;
    counts.new_seen_by_consumer = resumed
        .iter()
        .filter_map(|e| e.data.get("order").and_then(|o| o.as_u64()))
        .filter(|o| *o as usize >= FIRST_NEW_ORDER)
        .count();
    steps.push(format!(
        "placed {NEW_ORDERS_AFTER_RECOVERY} new orders on the serving node; the consumer resumed from the checkpoint (transaction id, position) of the last order it had shipped"
    ));

    Ok(Run {
        variant,
        setting: scenario.setting(variant).to_string(),
        counts,
        steps,
        phase_two_ms,
        seconds: started.elapsed().as_secs_f64(),
    })
}
