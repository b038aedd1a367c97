//! `labs check outbox-relay`: the attendee's consumer, `process_next` in
//! `exercises/07-outbox-relay/consumer.sql`, against a real server.
//!
//! Every injection is scripted, so each plausible half-fix fails on every run:
//! - `crash-between-commits`: the worker's session dies as its 1st, 2nd, then 3rd transaction
//!   touching an event commits; each event must end up applied once and acknowledged. An effect
//!   committed before its acknowledgement is applied twice; an inbox row committed before its
//!   effect loses the effect.
//! - `slot-redelivery`: a relay peeks a real logical slot, hands the changes on, restarts before
//!   confirming and reads them again with pg_logical_slot_get_changes; two consumers each must
//!   apply every event once. No inbox applies them twice; an inbox looked up without the
//!   consumer skips the second consumer's events.
//! - `poison-event`: an event that can never be applied, with more of its stream behind it and
//!   other streams after it: exactly 3 attempts, a dead letter, the rest of that stream parked
//!   (pending, not applied), other streams applied.
//! - `transient-failure`: an event that fails once and then can be applied: retried, applied, no
//!   dead letter.
//! - `competing-workers`: two workers; the first is held by a scripted delay while applying a
//!   stream's v1. The second must not apply that stream's v2 before it (SKIP LOCKED does), and
//!   must not wait for the first (a lock that serialises the workers does).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};
use uuid::Uuid;

use super::relay::{self, Message, OrderEvent};
use crate::error::{ensure, LabError};
use crate::lab::{Check, CheckReport, ExerciseFile};
use crate::pg::Server;
use crate::store;

/// The consumer's kit: deliveries, inbox, failures, dead letters, parked streams, the effect.
pub const CONSUMER_SQL: &str = include_str!("consumer.sql");

/// The poison policy the exercise states: an event is given up on after this many attempts.
pub const ATTEMPTS: i64 = 3;

/// The procedure the attendee writes, as `to_regprocedure` names it.
const PROCEDURE: &str = "process_next(text,integer,integer,text)";

/// A call that takes longer than this is waiting for something that will not come.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the script waits for a worker to block on the scripted delay, or to finish.
const STAGE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn check(server: &Server, file: &ExerciseFile) -> Result<CheckReport, LabError> {
    let checks = match loads(server, file).await? {
        Some(failed) => vec![failed],
        None => vec![
            crash_between_commits(server, file).await?,
            slot_redelivery(server, file).await?,
            poison_event(server, file).await?,
            transient_failure(server, file).await?,
            competing_workers(server, file).await?,
        ],
    };
    Ok(CheckReport::new(
        "outbox-relay",
        file,
        checks,
        "the consumer applies every event once through crashes and redeliveries, parks a poison event's \
         stream while the others go on, and keeps each stream's order across workers.",
    ))
}

/// One scenario's own database: the store, the outbox, the consumer's kit and the attendee's file.
struct Scenario {
    config: tokio_postgres::Config,
    client: Client,
}

impl Scenario {
    /// A fresh database named after the check, loaded. A file that does not load is reported
    /// by `loads` first, so here it is an error of the script.
    async fn new(server: &Server, name: &str, file: &ExerciseFile) -> Result<Scenario, LabError> {
        let (config, client) = fresh_database(server, name).await?;
        install_kit(&client).await?;
        client
            .batch_execute(&file.sql)
            .await
            .map_err(|e| LabError::Exercise(format!("{} (loading it for {name})", file.locate(&e, 0))))?;
        Ok(Scenario { config, client })
    }

    async fn connect(&self) -> Result<Client, LabError> {
        connect(&self.config).await
    }

    async fn worker(&self, consumer: &'static str, number: i32, of: i32) -> Result<Worker, LabError> {
        Worker::new(self.config.clone(), consumer, number, of).await
    }

    async fn deliver(&self, consumer: &str, event: &Message) -> Result<(), LabError> {
        self.client
            .execute(
                "INSERT INTO deliveries (consumer, event_id, stream_id, version, type, data) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&consumer, &event.event_id, &event.stream, &event.version, &event.event_type, &event.payload],
            )
            .await
            .map_err(LabError::db("delivering an event"))?;
        Ok(())
    }

    async fn add_to_catalog(&self, skus: &[&str]) -> Result<(), LabError> {
        for sku in skus {
            self.client
                .execute("INSERT INTO catalog (sku) VALUES ($1)", &[sku])
                .await
                .map_err(LabError::db("filling the catalog"))?;
        }
        Ok(())
    }

    /// How many times each event was applied for `consumer`.
    async fn applied(&self, consumer: &str) -> Result<BTreeMap<Uuid, usize>, LabError> {
        let rows = self
            .client
            .query("SELECT event_id, count(*) FROM effect_log WHERE consumer = $1 GROUP BY event_id", &[&consumer])
            .await
            .map_err(LabError::db("reading effect_log"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as usize)).collect())
    }

    /// The applications in order: (stream, version, type).
    async fn effect_order(&self, consumer: &str) -> Result<Vec<(String, i64, String)>, LabError> {
        let rows = self
            .client
            .query("SELECT stream_id, version, type FROM effect_log WHERE consumer = $1 ORDER BY applied", &[&consumer])
            .await
            .map_err(LabError::db("reading effect_log"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// Event ids with a delivery not acknowledged yet.
    async fn pending(&self, consumer: &str) -> Result<BTreeSet<Uuid>, LabError> {
        let rows = self
            .client
            .query("SELECT DISTINCT event_id FROM deliveries WHERE consumer = $1 AND NOT acked", &[&consumer])
            .await
            .map_err(LabError::db("reading deliveries"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn dead_letters(&self, consumer: &str) -> Result<BTreeSet<Uuid>, LabError> {
        let rows = self
            .client
            .query("SELECT event_id FROM dead_letters WHERE consumer = $1", &[&consumer])
            .await
            .map_err(LabError::db("reading dead_letters"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Failed applications so far, rolled back or not.
    async fn failed_applications(&self) -> Result<i64, LabError> {
        let row = self
            .client
            .query_one("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM failed_applications", &[])
            .await
            .map_err(LabError::db("reading failed_applications"))?;
        Ok(row.get(0))
    }
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, LabError> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| LabError::Script(format!("connecting to the check's database: {e}")))?;
    tokio::spawn(async move {
        // A connection error surfaces on the client's next query.
        let _ = connection.await;
    });
    Ok(client)
}

async fn fresh_database(server: &Server, name: &str) -> Result<(tokio_postgres::Config, Client), LabError> {
    let admin = server.connect().await?;
    let database = format!("check_{}", name.replace('-', "_"));
    // A check run before on this server (the tests check many files on one) may have left its
    // database with a slot (a scenario that stopped half-way) or sessions still closing.
    admin
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1",
            &[&database],
        )
        .await
        .map_err(LabError::db(format!("dropping the slots of {database}")))?;
    // Two statements: DROP DATABASE refuses the implicit transaction of a multi-statement query.
    for statement in [format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"), format!("CREATE DATABASE {database}")]
    {
        admin.batch_execute(&statement).await.map_err(LabError::db(format!("creating database {database}")))?;
    }
    let mut config = server.config();
    config.dbname(&database);
    let client = connect(&config).await?;
    Ok((config, client))
}

async fn install_kit(client: &Client) -> Result<(), LabError> {
    relay::install(client).await?;
    client.batch_execute(CONSUMER_SQL).await.map_err(LabError::db("installing the consumer's kit"))
}

/// The file loads and defines the procedure; otherwise the one failed check, with its line.
async fn loads(server: &Server, file: &ExerciseFile) -> Result<Option<Check>, LabError> {
    let (_, client) = fresh_database(server, "loads").await?;
    install_kit(&client).await?;
    let name = format!("{} loads", file.shown);
    if let Err(e) = client.batch_execute(&file.sql).await {
        return Ok(Some(Check::new("loads", name, false, file.locate(&e, 0))));
    }
    let kind: Option<String> = client
        .query_one("SELECT (SELECT prokind::text FROM pg_proc WHERE oid = to_regprocedure($1))", &[&PROCEDURE])
        .await
        .map_err(LabError::db("looking for process_next"))?
        .get(0);
    match kind.as_deref() {
        Some("p") => Ok(None),
        Some(_) => Ok(Some(Check::new(
            "loads",
            name,
            false,
            "process_next is a function: keep it a PROCEDURE, as in the exercise (a procedure can COMMIT)",
        ))),
        None => Ok(Some(Check::new(
            "loads",
            name,
            false,
            "it loads, but defines no procedure process_next(text, integer, integer, INOUT text): keep the \
             signature of the exercise",
        ))),
    }
}

/// What one call of the procedure did.
#[derive(Clone, Debug)]
enum Call {
    /// It returned; its `outcome`.
    Returned(Option<String>),
    /// It raised an error.
    Raised(String),
    /// The session died: the scripted crash.
    Crashed,
}

/// One worker: a session calling `process_next(consumer, number, of)`.
struct Worker {
    config: tokio_postgres::Config,
    consumer: &'static str,
    number: i32,
    of: i32,
    client: Option<Client>,
    pid: i32,
}

impl Worker {
    async fn new(
        config: tokio_postgres::Config,
        consumer: &'static str,
        number: i32,
        of: i32,
    ) -> Result<Worker, LabError> {
        let mut worker = Worker { config, consumer, number, of, client: None, pid: 0 };
        worker.reconnect().await?;
        Ok(worker)
    }

    async fn reconnect(&mut self) -> Result<(), LabError> {
        let client = connect(&self.config).await?;
        // A call stuck on something the script never releases ends here, not in a hang.
        client
            .batch_execute("SET statement_timeout = '12s'")
            .await
            .map_err(LabError::db("setting the worker's statement_timeout"))?;
        self.pid =
            client.query_one("SELECT pg_backend_pid()", &[]).await.map_err(LabError::db("pg_backend_pid()"))?.get(0);
        self.client = Some(client);
        Ok(())
    }

    fn statement(&self) -> String {
        format!("CALL process_next('{}', {}, {}, NULL)", self.consumer, self.number, self.of)
    }

    /// Calls the procedure once, in autocommit (so it may COMMIT), reconnecting after a crash.
    async fn call(&mut self) -> Result<Call, LabError> {
        if self.client.is_none() {
            self.reconnect().await?;
        }
        let client = self.client.take().expect("connected above");
        let (client, result) = call_on(client, self.statement()).await?;
        if !matches!(result, Call::Crashed) {
            self.client = Some(client);
        }
        Ok(result)
    }

    /// Calls until the procedure says 'idle', at most `max` times.
    async fn drain(&mut self, max: usize) -> Result<Vec<Call>, LabError> {
        let mut calls = Vec::new();
        for _ in 0..max {
            let call = self.call().await?;
            let idle = matches!(&call, Call::Returned(Some(o)) if o == "idle");
            calls.push(call);
            if idle {
                break;
            }
        }
        Ok(calls)
    }

    /// Starts one call in the background.
    fn spawn(&mut self) -> Result<CallTask, LabError> {
        let client =
            self.client.take().ok_or_else(|| LabError::Script(format!("worker {} has no session", self.number)))?;
        let statement = self.statement();
        Ok(tokio::spawn(call_on(client, statement)))
    }
}

/// A call running in the background; it gives the session back when it ends.
type CallTask = tokio::task::JoinHandle<Result<(Client, Call), LabError>>;

async fn call_on(client: Client, statement: String) -> Result<(Client, Call), LabError> {
    let result = tokio::time::timeout(CALL_TIMEOUT, client.simple_query(&statement)).await.map_err(|_| {
        LabError::Exercise(format!(
            "`{statement}` did not return within {} s: does process_next wait for something (a lock, \
                 pg_sleep)? A call must return what it did, 'idle' when there is nothing to do",
            CALL_TIMEOUT.as_secs()
        ))
    })?;
    let call = match result {
        Ok(messages) => Call::Returned(
            messages
                .iter()
                .find_map(|m| match m {
                    SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
                    _ => None,
                })
                .flatten(),
        ),
        Err(e) if e.is_closed() || e.code() == Some(&tokio_postgres::error::SqlState::ADMIN_SHUTDOWN) => Call::Crashed,
        Err(e) => Call::Raised(store::server_message(&e)),
    };
    Ok((client, call))
}

fn message(event: &OrderEvent) -> Message {
    Message {
        id: 0,
        event_id: event.event_id,
        stream: event.stream.clone(),
        version: event.version,
        event_type: event.event_type.clone(),
        payload: event.payload.clone(),
    }
}

fn times(n: usize) -> String {
    match n {
        0 => "0 times".into(),
        1 => "once".into(),
        2 => "twice".into(),
        n => format!("{n} times"),
    }
}

fn ordinal(n: i32) -> &'static str {
    match n {
        1 => "1st",
        2 => "2nd",
        3 => "3rd",
        _ => "nth",
    }
}

/// The worker's session dies as its Nth transaction touching an event commits (N = 1, 2, 3, one
/// event each): each event must end up applied once and acknowledged.
async fn crash_between_commits(server: &Server, file: &ExerciseFile) -> Result<Check, LabError> {
    let scenario = Scenario::new(server, "crash-between-commits", file).await?;
    scenario.add_to_catalog(&["sku-1"]).await?;
    let mut worker = scenario.worker("warehouse", 0, 1).await?;
    let mut problems = Vec::new();
    let mut fine = Vec::new();
    for at_commit in 1..=3 {
        let event = OrderEvent::new(6000 + at_commit as u32, 1, "OrderPlaced", "sku-1", 2);
        scenario.deliver("warehouse", &message(&event)).await?;
        scenario
            .client
            .batch_execute(&format!(
                "DELETE FROM crash_plan; INSERT INTO crash_plan VALUES ('{}', {at_commit});
                 ALTER SEQUENCE commits_of_planned_event RESTART",
                event.event_id
            ))
            .await
            .map_err(LabError::db("planning the crash"))?;
        let calls = worker.drain(12).await?;
        let crashed = calls.iter().any(|c| matches!(c, Call::Crashed));
        let applied = scenario.applied("warehouse").await?.get(&event.event_id).copied().unwrap_or(0);
        let pending = scenario.pending("warehouse").await?.contains(&event.event_id);
        let raised = calls.iter().find_map(|c| match c {
            Call::Raised(e) => Some(e.clone()),
            _ => None,
        });
        let when = format!("the crash at the {} commit touching {}", ordinal(at_commit), event.describe());
        if applied == 1 && !pending {
            fine.push(if crashed {
                format!("{when}: applied once")
            } else {
                format!("{when} never came (fewer commits): applied once")
            });
            continue;
        }
        let mut problem = format!("{when}: {} applied {}", event.describe(), times(applied));
        if pending {
            problem += ", its delivery still not acknowledged";
        }
        problem += match applied {
            0 if crashed => {
                ". The crash lost the effect but not the record of it: the inbox row or the \
                             acknowledgement committed before the effect did"
            }
            0 => ". It was never applied",
            1 => ". Acknowledge it (acked = true) once it is applied",
            _ => {
                ". The effect had committed and the acknowledgement had not: redelivered, the event was applied \
                   again. Write the effect, the inbox row and the acknowledgement in one transaction (no COMMIT \
                   between them), and skip an event the inbox already has"
            }
        };
        if let Some(raised) = raised {
            problem += &format!(" (a call raised: {raised})");
        }
        problems.push(problem);
        scenario.client.batch_execute("DELETE FROM crash_plan").await.map_err(LabError::db("clearing the plan"))?;
    }
    scenario.client.batch_execute("DELETE FROM crash_plan").await.map_err(LabError::db("clearing the plan"))?;
    Ok(Check::new(
        "crash-between-commits",
        "the worker crashes at its 1st, 2nd, 3rd commit touching an event: each event applied once",
        problems.is_empty(),
        if problems.is_empty() { fine.join("\n") } else { problems.join("\n") },
    ))
}

/// A relay peeks a real slot, hands the changes to two consumers, restarts before confirming,
/// and reads the slot again with pg_logical_slot_get_changes: every event arrives twice.
async fn slot_redelivery(server: &Server, file: &ExerciseFile) -> Result<Check, LabError> {
    const SLOT: &str = "check_relay";
    const CONSUMERS: [&str; 2] = ["warehouse", "analytics"];
    let scenario = Scenario::new(server, "slot-redelivery", file).await?;
    scenario.add_to_catalog(&["sku-1", "sku-2"]).await?;
    relay::create_slot(&scenario.client, SLOT).await?;
    let writer = scenario.connect().await?;
    let write = async |event: &OrderEvent| -> Result<(), LabError> {
        writer.batch_execute("BEGIN").await.map_err(LabError::db("BEGIN"))?;
        relay::write(&writer, event).await?;
        writer.batch_execute("COMMIT").await.map_err(LabError::db("COMMIT"))
    };
    let events = [
        OrderEvent::new(2001, 1, "OrderPlaced", "sku-1", 2),
        OrderEvent::new(2002, 1, "OrderPlaced", "sku-2", 1),
        OrderEvent::new(2001, 2, "OrderCancelled", "sku-1", 2),
        OrderEvent::new(2003, 1, "OrderPlaced", "sku-2", 4),
    ];
    for event in &events[..3] {
        write(event).await?;
    }
    let relay_session = scenario.connect().await?;
    let first = relay::peek_changes(&relay_session, SLOT).await?;
    ensure(first.messages.len() == 3, || format!("the slot returned {} outbox rows, not 3", first.messages.len()))?;
    let mut workers = Vec::new();
    for consumer in CONSUMERS {
        workers.push(scenario.worker(consumer, 0, 1).await?);
    }
    for (consumer, worker) in CONSUMERS.iter().zip(&mut workers) {
        for m in &first.messages {
            scenario.deliver(consumer, m).await?;
        }
        worker.drain(20).await?;
    }
    // The relay restarts before it confirmed: the slot hands the same transactions on again.
    write(&events[3]).await?;
    let again = relay::get_changes(&relay_session, SLOT).await?;
    ensure(again.messages.len() == 4 && again.messages[..3] == first.messages[..], || {
        format!(
            "the slot should hand the 3 unconfirmed rows on again, then the new one; it returned {}",
            again.messages.len()
        )
    })?;
    for (consumer, worker) in CONSUMERS.iter().zip(&mut workers) {
        for m in &again.messages {
            scenario.deliver(consumer, m).await?;
        }
        worker.drain(30).await?;
    }
    relay_session
        .execute("SELECT pg_drop_replication_slot($1)", &[&SLOT])
        .await
        .map_err(LabError::db(format!("dropping slot {SLOT}")))?;

    // One line per consumer and kind of failure, then why.
    let mut problems = Vec::new();
    for consumer in CONSUMERS {
        let applied = scenario.applied(consumer).await?;
        let pending = scenario.pending(consumer).await?;
        let count = |e: &OrderEvent| applied.get(&e.event_id).copied().unwrap_or(0);
        let listed = |keep: &dyn Fn(&OrderEvent) -> bool| -> String {
            events.iter().filter(|e| keep(e)).map(OrderEvent::describe).collect::<Vec<_>>().join(", ")
        };
        let twice = listed(&|e| count(e) > 1);
        if !twice.is_empty() {
            problems.push(format!(
                "{consumer}: applied more than once: {twice}. The slot handed each on twice (peek, then get after \
                 the relay's restart) and each delivery was applied: skip an event whose (consumer, event_id) is \
                 already in the inbox"
            ));
        }
        let skipped = listed(&|e| count(e) == 0 && !pending.contains(&e.event_id));
        if !skipped.is_empty() {
            problems.push(format!(
                "{consumer}: acknowledged without being applied: {skipped}. Is the inbox looked up by event_id \
                 alone? Another consumer applying an event is not this one applying it: (consumer, event_id)"
            ));
        }
        let waiting = listed(&|e| count(e) == 0 && pending.contains(&e.event_id));
        if !waiting.is_empty() {
            problems.push(format!("{consumer}: still pending after the worker said 'idle': {waiting}"));
        }
    }
    Ok(Check::new(
        "slot-redelivery",
        "a relay restarts before confirming its slot; every event comes twice: each applied once per consumer",
        problems.is_empty(),
        if problems.is_empty() {
            format!(
                "{} events delivered twice to each of {}: each applied once per consumer",
                events.len(),
                CONSUMERS.join(" and ")
            )
        } else {
            problems.join("\n")
        },
    ))
}

/// order-3001 v1 can never be applied (its qty is "two"); its v2 and other streams follow.
async fn poison_event(server: &Server, file: &ExerciseFile) -> Result<Check, LabError> {
    let scenario = Scenario::new(server, "poison-event", file).await?;
    scenario.add_to_catalog(&["sku-1", "sku-2"]).await?;
    let mut poison = OrderEvent::new(3001, 1, "OrderPlaced", "sku-1", 2);
    poison.payload = json!({ "sku": "sku-1", "qty": "two" });
    let behind = OrderEvent::new(3001, 2, "OrderCancelled", "sku-1", 2);
    let others =
        [OrderEvent::new(3002, 1, "OrderPlaced", "sku-2", 1), OrderEvent::new(3003, 1, "OrderPlaced", "sku-1", 3)];
    for event in [&poison, &others[0], &behind, &others[1]] {
        scenario.deliver("warehouse", &message(event)).await?;
    }
    let mut worker = scenario.worker("warehouse", 0, 1).await?;
    const CALLS: usize = 30;
    let calls = worker.drain(CALLS).await?;
    let applied = scenario.applied("warehouse").await?;
    let pending = scenario.pending("warehouse").await?;
    let dead = scenario.dead_letters("warehouse").await?;
    let attempts = scenario.failed_applications().await?;
    let raised = calls.iter().find_map(|c| match c {
        Call::Raised(e) => Some(e.clone()),
        _ => None,
    });

    let mut problems = Vec::new();
    let blocked: Vec<String> =
        others.iter().filter(|e| !applied.contains_key(&e.event_id)).map(OrderEvent::describe).collect();
    if !blocked.is_empty() {
        problems.push(format!(
            "after {CALLS} calls {} still not applied: a poison event held up streams it has nothing to do with{}. \
             Catch the effect's error (BEGIN ... EXCEPTION), count the attempt in failures, and after {ATTEMPTS} \
             attempts move the event to dead_letters",
            blocked.join(" and "),
            raised.map(|e| format!(" (calls raised: {e})")).unwrap_or_default()
        ));
    }
    if dead.contains(&poison.event_id) {
        if attempts != ATTEMPTS {
            problems.push(format!(
                "{} went to dead_letters after {attempts} attempt(s); the policy is {ATTEMPTS}: an event that fails \
                 once for a passing reason (a lock timeout, a deploy) must be tried again",
                poison.describe()
            ));
        }
    } else if blocked.is_empty() {
        problems.push(if pending.contains(&poison.event_id) {
            format!(
                "{} is still pending after {attempts} failed attempts: after {ATTEMPTS} it goes to dead_letters. \
                 Is the count of failures written inside the block whose error undoes it?",
                poison.describe()
            )
        } else {
            format!("{} was acknowledged without a dead letter: it is lost. Keep it in dead_letters", poison.describe())
        });
    }
    match applied.get(&behind.event_id) {
        Some(_) => problems.push(format!(
            "{} was applied after v1 was given up on: the warehouse released 2 units of sku-1 it had never \
             reserved. Park the rest of a dead-lettered event's stream (parked_streams) and skip it when claiming",
            behind.describe()
        )),
        None if !pending.contains(&behind.event_id) => problems.push(format!(
            "{} was acknowledged without being applied: a parked event stays pending until someone fixes its stream",
            behind.describe()
        )),
        None => {}
    }
    for event in &others {
        if let Some(n) = applied.get(&event.event_id).copied().filter(|n| *n != 1) {
            problems.push(format!("{} applied {}", event.describe(), times(n)));
        }
    }
    Ok(Check::new(
        "poison-event",
        format!(
            "an event that always fails: {ATTEMPTS} attempts, a dead letter, the rest of its stream parked, other streams applied"
        ),
        problems.is_empty(),
        if problems.is_empty() {
            format!(
                "{} dead-lettered after {ATTEMPTS} attempts; {} parked; {} applied",
                poison.describe(),
                behind.describe(),
                others.iter().map(OrderEvent::describe).collect::<Vec<_>>().join(" and ")
            )
        } else {
            problems.join("\n")
        },
    ))
}

/// An event for a sku not in the catalog yet: it fails once, the sku is added, it must be applied.
async fn transient_failure(server: &Server, file: &ExerciseFile) -> Result<Check, LabError> {
    let scenario = Scenario::new(server, "transient-failure", file).await?;
    scenario.add_to_catalog(&["sku-1"]).await?;
    let event = OrderEvent::new(4001, 1, "OrderPlaced", "sku-9", 1);
    scenario.deliver("warehouse", &message(&event)).await?;
    let mut worker = scenario.worker("warehouse", 0, 1).await?;
    let first = worker.call().await?;
    let attempted = scenario.failed_applications().await?;
    scenario.add_to_catalog(&["sku-9"]).await?;
    worker.drain(10).await?;
    let applied = scenario.applied("warehouse").await?.get(&event.event_id).copied().unwrap_or(0);
    let dead = scenario.dead_letters("warehouse").await?.contains(&event.event_id);
    let pending = scenario.pending("warehouse").await?.contains(&event.event_id);
    let mut problems = Vec::new();
    if attempted != 1 {
        problems.push(format!(
            "the first call did not try {} (it returned {first:?}): take the oldest pending delivery",
            event.describe()
        ));
    }
    if dead {
        problems.push(format!(
            "{} failed once (sku-9 was not in the catalog yet) and went to dead_letters: the policy gives an event \
             {ATTEMPTS} attempts",
            event.describe()
        ));
    }
    if applied != 1 {
        problems.push(format!("{} applied {} once sku-9 was in the catalog", event.describe(), times(applied)));
    }
    if pending {
        problems.push(format!("{} is still pending", event.describe()));
    }
    Ok(Check::new(
        "transient-failure",
        "an event that fails once, then can be applied: retried and applied, no dead letter",
        problems.is_empty(),
        if problems.is_empty() {
            format!("{} failed once, was retried and applied once", event.describe())
        } else {
            problems.join("\n")
        },
    ))
}

/// Two workers. The first takes order-5001 v1 and is held in its effect by a scripted delay; the
/// second must neither apply order-5001 v2 before v1 nor wait for the first.
async fn competing_workers(server: &Server, file: &ExerciseFile) -> Result<Check, LabError> {
    let scenario = Scenario::new(server, "competing-workers", file).await?;
    scenario.add_to_catalog(&["sku-1", "sku-2", "sku-3"]).await?;
    // Streams on both sides of the kit's stream_partition(stream, 2), so partitioned workers both
    // have work; the held stream first.
    let mut by_partition: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
    for order in 5001..5100u32 {
        let p: i32 = scenario
            .client
            .query_one("SELECT stream_partition($1, 2)", &[&format!("order-{order}")])
            .await
            .map_err(LabError::db("stream_partition"))?
            .get(0);
        by_partition[p as usize].push(order);
    }
    let held_order = by_partition[0][0];
    let held = OrderEvent::new(held_order, 1, "OrderPlaced", "sku-1", 2);
    let next = OrderEvent::new(held_order, 2, "OrderCancelled", "sku-1", 2);
    let others: Vec<OrderEvent> = by_partition[0][1..4]
        .iter()
        .chain(&by_partition[1][..3])
        .enumerate()
        .map(|(i, order)| OrderEvent::new(*order, 1, "OrderPlaced", ["sku-2", "sku-3"][i % 2], 1))
        .collect();
    for event in [&held, &next].into_iter().chain(&others) {
        scenario.deliver("warehouse", &message(event)).await?;
    }

    // The scripted delay: held's effect waits until the script lets go of this lock.
    let locker = scenario.connect().await?;
    locker
        .execute("SELECT pg_advisory_lock(delay_key($1))", &[&held.event_id])
        .await
        .map_err(LabError::db("holding the delay lock"))?;
    let mut workers = [scenario.worker("warehouse", 0, 2).await?, scenario.worker("warehouse", 1, 2).await?];
    let watcher = scenario.connect().await?;

    // Find the worker that takes held: worker 0 first (it owns held's stream in the kit's
    // partitioning), then worker 1; call it until it blocks on the delay or has nothing to do.
    let mut holder = None;
    'search: for w in [0, 1] {
        for _ in 0..20 {
            let task = workers[w].spawn()?;
            match wait_blocked_or_done(&watcher, workers[w].pid, &task, "advisory").await? {
                Blocked::Yes => {
                    holder = Some((w, task));
                    break 'search;
                }
                Blocked::No => {
                    let (client, call) = task.await??;
                    workers[w].client = Some(client);
                    if matches!(&call, Call::Returned(Some(o)) if o == "idle") || !matches!(call, Call::Returned(_)) {
                        break;
                    }
                }
            }
        }
    }
    let Some((h, holder_task)) = holder else {
        locker.execute("SELECT pg_advisory_unlock_all()", &[]).await.map_err(LabError::db("releasing the delay"))?;
        return Ok(Check::new(
            "competing-workers",
            "two workers, one held in a stream's v1: no inversion, and the other works on",
            false,
            format!(
                "neither worker ever applied {}: both said 'idle' (or failed) while it was pending. Each worker \
                 must take the pending deliveries of its own streams",
                held.describe()
            ),
        ));
    };
    let other = 1 - h;
    // The other worker while the holder is held: until idle, or until it waits for a lock.
    let mut other_waited = None;
    for _ in 0..20 {
        let task = workers[other].spawn()?;
        match wait_blocked_or_done(&watcher, workers[other].pid, &task, "").await? {
            Blocked::Yes => {
                other_waited = Some(task);
                break;
            }
            Blocked::No => {
                let (client, call) = task.await??;
                workers[other].client = Some(client);
                if matches!(&call, Call::Returned(Some(o)) if o == "idle") || !matches!(call, Call::Returned(_)) {
                    break;
                }
            }
        }
    }
    let waited = other_waited.is_some();
    let during_hold = scenario.effect_order("warehouse").await?;
    locker.execute("SELECT pg_advisory_unlock_all()", &[]).await.map_err(LabError::db("releasing the delay"))?;
    let (client, _) = holder_task.await??;
    workers[h].client = Some(client);
    if let Some(task) = other_waited {
        let (client, _) = task.await??;
        workers[other].client = Some(client);
    }
    for _ in 0..40 {
        let a = workers[0].call().await?;
        let b = workers[1].call().await?;
        let idle = |c: &Call| matches!(c, Call::Returned(Some(o)) if o == "idle");
        if idle(&a) && idle(&b) {
            break;
        }
    }

    let order = scenario.effect_order("warehouse").await?;
    let applied = scenario.applied("warehouse").await?;
    let pending = scenario.pending("warehouse").await?;
    let mut problems = Vec::new();
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for (stream, version, event_type) in &order {
        let before = last.entry(stream.as_str()).or_insert(0);
        if *version < *before {
            problems.push(format!(
                "{stream} v{version} {event_type} was applied after v{before}: worker {other} took v{before} while \
                 worker {h} was still applying v{version} (held by a scripted delay). FOR UPDATE SKIP LOCKED skips \
                 the locked row and takes the next one, of the same stream. Give each stream one owner: \
                 stream_partition(stream_id, p_workers) = p_worker"
            ));
        }
        *before = (*before).max(*version);
    }
    if waited {
        problems.push(format!(
            "while worker {h} was held applying {}, worker {other} waited for a lock instead of working on other \
             streams ({} event(s) applied during the hold): the workers take turns. Let each own its streams",
            held.describe(),
            during_hold.len()
        ));
    }
    for event in [&held, &next].into_iter().chain(&others) {
        let n = applied.get(&event.event_id).copied().unwrap_or(0);
        if n != 1 {
            problems.push(format!("{} applied {}", event.describe(), times(n)));
        } else if pending.contains(&event.event_id) {
            problems.push(format!("{} applied but still pending", event.describe()));
        }
    }
    Ok(Check::new(
        "competing-workers",
        "two workers, one held in a stream's v1: no inversion, and the other works on",
        problems.is_empty(),
        if problems.is_empty() {
            format!(
                "worker {other} applied {} event(s) of other streams while worker {h} was held on {}; {} then came \
                 after it; every event applied once",
                during_hold.len(),
                held.describe(),
                next.describe()
            )
        } else {
            problems.join("\n")
        },
    ))
}

enum Blocked {
    Yes,
    No,
}

/// Waits until the call on session `pid` finishes (No) or waits for a lock (Yes); with `event`
/// non-empty, only a wait for that lock type counts (`advisory`: the scripted delay).
async fn wait_blocked_or_done(watcher: &Client, pid: i32, task: &CallTask, event: &str) -> Result<Blocked, LabError> {
    let started = Instant::now();
    while started.elapsed() < STAGE_TIMEOUT {
        if task.is_finished() {
            return Ok(Blocked::No);
        }
        let waiting: bool = watcher
            .query_one(
                "SELECT coalesce(bool_or(wait_event_type = 'Lock' AND ($2 = '' OR wait_event = $2)), false)
                   FROM pg_stat_activity WHERE pid = $1",
                &[&pid, &event],
            )
            .await
            .map_err(LabError::db("watching a worker"))?
            .get(0);
        if waiting {
            return Ok(Blocked::Yes);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err(LabError::Exercise(format!(
        "a call of process_next neither returned nor waited for a lock within {} s: does it sleep or loop? \
         One call takes one delivery, applies it and returns",
        STAGE_TIMEOUT.as_secs()
    )))
}
