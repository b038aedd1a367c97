//! `labs check outage`: the attendee's detection query, `exercises/05-outage/reissued.sql`,
//! run against real recoveries.
//!
//! Each history runs on a fresh server of its own, and the script decides what happens. The
//! categories the check needs are there on every run, whatever values the server's counters
//! restart from:
//! 1. Eight orders with synchronous_commit on: durable, shipped, they survive.
//! 2. The WAL writer is frozen. Then 60 order attempts run with synchronous_commit off, and every
//!    third one is declined and rolled back. The consumer ships the 40 that committed. The server
//!    crashes and recovers without them. The 60 attempts took more positions than the 32 that a
//!    sequence logs ahead, so the identity hands out lost positions again, and the transaction id
//!    counter restarts at the first lost id.
//! 3. New orders come in three steps, with two fixes between them:
//!    - `identity-bumped`: the operator restarts the identity past the shipped positions; later,
//!      other traffic burns transaction ids past the shipped ones;
//!    - `xids-burned`: the same two fixes, in the other order.
//!
//! The declined orders leave holes: positions and transaction ids that were taken before the
//! crash and that no shipment holds. Every third value is a hole, so any three consecutive new
//! orders whose counters run through lost values include an order that takes a hole and one
//! that takes a shipped value, and at least one that takes shipped values on both counters.
//! After the first fix, each history's second step holds orders whose reissued counter is the
//! one left unfixed, while the other counter is fresh.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

use super::burst::order_placed;
use crate::error::{ensure, LabError};
use crate::lab::{Check, CheckReport, ExerciseFile};
use crate::pg::{Capability, Server};
use crate::store::{self, Checkpoint, ExpectedVersion, TransactionId};

/// What the check asks of the provider: one server it can freeze, crash and restart, per history.
pub const NEEDS: &[Capability] = &[Capability::FreezeWalWriter, Capability::Crash, Capability::Restart];

/// The first order's number. Orders are numbered from here, so that in the report an order's
/// number never looks like a position.
pub const FIRST_ORDER: usize = 101;
/// Orders placed with synchronous_commit on before the failure: they survive.
pub const DURABLE_ORDERS: usize = 8;
/// Order attempts after the WAL writer froze, synchronous_commit off. More than the 32 values a
/// sequence logs ahead (sequence.c, SEQ_LOG_VALS), so recovery hands lost positions out again.
pub const LOST_ATTEMPTS: usize = 60;
/// Every this-many-th attempt is declined and rolled back: it takes a position and a transaction
/// id that no shipment will hold.
pub const DECLINED_EVERY: usize = 3;
/// New orders after recovery, per step: three, so each step that runs through lost values meets a
/// hole and a shipped value (see the module's comment).
const NEW_ORDERS_PER_STEP: [usize; 3] = [3, 3, 2];
/// The first new order's number; the ones before the crash are 101 to 168.
pub const FIRST_NEW_ORDER: usize = 1001;
/// A query that takes longer than this on tables of about a hundred rows waits for something.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

id_enum! {
    /// The two scripted recoveries. Both counters only go up, so only the order of the two fixes
    /// decides which counter stays reissued while the other is fresh.
    pub enum History {
        IdentityBumped = "identity-bumped",
        XidsBurned = "xids-burned",
    }
}

impl History {
    /// One line: what happens after recovery.
    pub fn describe(self) -> &'static str {
        match self {
            History::IdentityBumped => {
                "new orders; the operator restarts the identity past the shipped positions; new orders; other traffic burns transaction ids past the shipped ones; new orders"
            }
            History::XidsBurned => {
                "new orders; other traffic burns transaction ids past the shipped ones; new orders; the operator restarts the identity past the shipped positions; new orders"
            }
        }
    }
}

/// The warehouse's record of one shipped order: what the consumer read when it shipped it.
#[derive(Clone, Debug)]
pub struct Shipment {
    pub order_no: i32,
    pub event_id: Uuid,
    pub transaction_id: TransactionId,
    pub position: i64,
}

/// An order in the store after the history, and what the script knows about it.
#[derive(Clone, Debug)]
pub struct StoredOrder {
    pub order_no: i32,
    pub event_id: Uuid,
    pub position: i64,
    pub transaction_id: TransactionId,
    /// Shipped before the crash, and still in the store.
    pub survived: bool,
    /// The shipped order, another one, that held this position.
    pub position_was: Option<i32>,
    /// The shipped order, another one, that held this transaction id.
    pub transaction_id_was: Option<i32>,
}

impl StoredOrder {
    /// What the query must say about it.
    pub fn reissued(&self) -> bool {
        self.position_was.is_some() || self.transaction_id_was.is_some()
    }

    /// The check's categories, one per order.
    pub fn kind(&self) -> Kind {
        match (self.survived, self.position_was, self.transaction_id_was) {
            (true, _, _) => Kind::Survivor,
            (false, Some(_), Some(_)) => Kind::BothReissued,
            (false, Some(_), None) => Kind::PositionReissued,
            (false, None, Some(_)) => Kind::TransactionIdReissued,
            (false, None, None) => Kind::NotReissued,
        }
    }
}

/// Which check an order belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    BothReissued,
    PositionReissued,
    TransactionIdReissued,
    NotReissued,
    Survivor,
}

/// A row of the attendee's query; any column may be NULL.
#[derive(Clone, Debug)]
pub struct ReturnedRow {
    pub order_no: Option<i32>,
    pub event_id: Option<Uuid>,
    pub position: Option<i64>,
    pub transaction_id: Option<TransactionId>,
}

/// One history: what the warehouse shipped, what the store holds now, what the query returned.
#[derive(Clone, Debug)]
pub struct HistoryResult {
    pub history: History,
    pub shipped: Vec<Shipment>,
    pub orders: Vec<StoredOrder>,
    pub returned: Vec<ReturnedRow>,
}

/// The columns, in order, that the query returns.
const COLUMNS: [(&str, Type); 4] =
    [("order_no", Type::INT4), ("event_id", Type::UUID), ("position", Type::INT8), ("transaction_id", Type::XID8)];

/// The warehouse's records, as the attendee's query sees them (the answer key shows the file).
const SHIPPED_TABLE: &str = include_str!("shipped.sql");

/// Both histories side by side, on the two servers given (fresh, each able to freeze, crash and
/// restart), then the verdict.
pub async fn check(
    identity_bumped: &mut Server,
    xids_burned: &mut Server,
    file: &ExerciseFile,
) -> Result<CheckReport, LabError> {
    let (bumped, burned) = tokio::join!(
        history(identity_bumped, History::IdentityBumped, file),
        history(xids_burned, History::XidsBurned, file)
    );
    Ok(verdict(file, &[bumped?, burned?]))
}

/// Prepares the attendee's query and checks its columns. A mistake comes back as
/// [`LabError::Exercise`] at the file's line and column.
async fn prepare(client: &Client, file: &ExerciseFile) -> Result<Statement, LabError> {
    let statement = client.prepare(&file.sql).await.map_err(|e| LabError::Exercise(file.locate(&e, 0)))?;
    let got: Vec<String> = statement.columns().iter().map(|c| format!("{} {}", c.name(), c.type_())).collect();
    let want: Vec<String> = COLUMNS.iter().map(|(name, ty)| format!("{name} {ty}")).collect();
    if got != want {
        return Err(LabError::Exercise(format!(
            "{}: the query must return ({}), in that order; it returns ({})",
            file.shown,
            want.join(", "),
            got.join(", ")
        )));
    }
    if !statement.params().is_empty() {
        return Err(LabError::Exercise(format!(
            "{}: the query takes {} parameter(s) ($1 …), and the check passes none: read the consumer's \
             checkpoint from the shipped table instead",
            file.shown,
            statement.params().len()
        )));
    }
    Ok(statement)
}

async fn sql(client: &Client, statement: &str, what: &str) -> Result<(), LabError> {
    client.batch_execute(statement).await.map_err(LabError::db(what.to_string()))
}

async fn place(client: &Client, order: usize) -> Result<(), LabError> {
    let (stream, event) = order_placed(order, 0);
    store::append(client, &stream, ExpectedVersion::NoStream, &[event]).await?;
    Ok(())
}

/// An order appended, then rolled back (declined): its position and transaction id are taken,
/// and nobody ever sees the order.
async fn decline(client: &Client, order: usize) -> Result<(), LabError> {
    sql(client, "BEGIN", "declining an order").await?;
    place(client, order).await?;
    sql(client, "ROLLBACK", "declining an order").await
}

/// The consumer: reads behind the watermark from `after` and ships every order it reads.
async fn ship(client: &Client, after: Checkpoint, shipped: &mut Vec<Shipment>) -> Result<Checkpoint, LabError> {
    let events = store::read_all_after(client, after, 10_000).await?;
    let mut checkpoint = after;
    for event in events {
        let order_no = event
            .data
            .get("order")
            .and_then(|o| o.as_i64())
            .ok_or_else(|| LabError::Script(format!("event {} has no order number in its data", event.event_id)))?;
        shipped.push(Shipment {
            order_no: order_no as i32,
            event_id: event.event_id,
            transaction_id: event.checkpoint.transaction_id,
            position: event.checkpoint.position,
        });
        checkpoint = event.checkpoint;
    }
    Ok(checkpoint)
}

/// Stages one history on a fresh server, then runs the attendee's query on it.
pub async fn history(server: &mut Server, history: History, file: &ExerciseFile) -> Result<HistoryResult, LabError> {
    let setup = server.connect().await?;
    store::install(&setup).await.map_err(LabError::db("installing the reference store"))?;
    sql(&setup, SHIPPED_TABLE, "creating the shipped table").await?;
    // A query that cannot run fails now, before a recovery is staged for it.
    prepare(&setup, file).await?;
    drop(setup);

    let shipped = ship_then_crash(server).await?;
    new_orders_after_recovery(server, history, &shipped).await?;
    let client = server.connect().await?;
    load_shipped(&client, &shipped).await?;
    let orders = stored_orders(&client, &shipped).await?;
    expect_every_kind(history, &orders, &shipped)?;
    let returned = run_query(server, file).await?;
    Ok(HistoryResult { history, shipped, orders, returned })
}

/// Durable orders, then orders with synchronous_commit off while the WAL writer is frozen, every
/// third one declined; the consumer ships every order that committed; then the crash and crash
/// recovery. Returns what the consumer shipped.
async fn ship_then_crash(server: &mut Server) -> Result<Vec<Shipment>, LabError> {
    // Nothing but the script flushes WAL: what the crash loses is decided here, not by timing.
    server.quiet_background_wal_writes().await?;
    let writer = server.connect().await?;
    let consumer = server.connect().await?;
    let mut shipped = Vec::new();
    for order in FIRST_ORDER..FIRST_ORDER + DURABLE_ORDERS {
        place(&writer, order).await?;
    }
    let checkpoint = ship(&consumer, Checkpoint::START, &mut shipped).await?;

    server.freeze_wal_writer().await?;
    sql(&writer, "SET synchronous_commit = off", "the order service's setting").await?;
    for attempt in 1..=LOST_ATTEMPTS {
        let order = FIRST_ORDER + DURABLE_ORDERS - 1 + attempt;
        if attempt % DECLINED_EVERY == 0 {
            decline(&writer, order).await?;
        } else {
            place(&writer, order).await?;
        }
    }
    // Other sessions see an asynchronous commit at once: the consumer ships orders whose WAL is
    // still in memory.
    ship(&consumer, checkpoint, &mut shipped).await?;
    let committed = DURABLE_ORDERS + LOST_ATTEMPTS - LOST_ATTEMPTS / DECLINED_EVERY;
    ensure(shipped.len() == committed, || {
        format!("the consumer shipped {} orders before the crash; {committed} had committed", shipped.len())
    })?;
    drop((writer, consumer));
    server.crash().await?;
    server.restart().await?;
    Ok(shipped)
}

/// New orders in three steps, with the history's two fixes between them.
async fn new_orders_after_recovery(server: &Server, history: History, shipped: &[Shipment]) -> Result<(), LabError> {
    let last_position = shipped.iter().map(|s| s.position).max().unwrap_or(0);
    let last_transaction = shipped.iter().map(|s| s.transaction_id).max().unwrap_or_default();
    // The operator's fix for positions: the next order takes a position no shipment holds.
    let bump = format!("ALTER TABLE events ALTER COLUMN position RESTART WITH {}", last_position + 1);
    // Other traffic: one transaction id per transaction, until the next one is past every shipped
    // id. A DO block may COMMIT only when it is sent alone.
    let burn =
        format!("DO $$ BEGIN WHILE pg_current_xact_id() <= '{last_transaction}'::xid8 LOOP COMMIT; END LOOP; END $$");
    let fixes = match history {
        History::IdentityBumped => [bump, burn],
        History::XidsBurned => [burn, bump],
    };
    let orders = server.connect().await?;
    // A session of its own, asynchronous: the burn then waits for no flush per transaction id.
    let other_traffic = server.connect().await?;
    sql(&other_traffic, "SET synchronous_commit = off", "the other traffic's setting").await?;
    let mut order = FIRST_NEW_ORDER;
    for (step, count) in NEW_ORDERS_PER_STEP.into_iter().enumerate() {
        for _ in 0..count {
            place(&orders, order).await?;
            order += 1;
        }
        if let Some(fix) = fixes.get(step) {
            sql(&other_traffic, fix, "after recovery").await?;
        }
    }
    Ok(())
}

/// The warehouse's records, loaded once every new order is in: loading them takes a transaction
/// id, which must not shift the history.
async fn load_shipped(client: &Client, shipped: &[Shipment]) -> Result<(), LabError> {
    let rows: Vec<String> = shipped
        .iter()
        .map(|s| format!("({}, '{}', '{}', {})", s.order_no, s.event_id, s.transaction_id, s.position))
        .collect();
    let insert =
        format!("INSERT INTO shipped (order_no, event_id, transaction_id, position) VALUES {}", rows.join(",\n"));
    sql(client, &insert, "loading the shipped table").await
}

/// The store's orders now, each with what the script knows: shipped and survived, or which lost
/// order's position and transaction id it took.
async fn stored_orders(client: &Client, shipped: &[Shipment]) -> Result<Vec<StoredOrder>, LabError> {
    let rows = client
        .query("SELECT (data->>'order')::int, event_id, position, transaction_id FROM events ORDER BY position", &[])
        .await
        .map_err(LabError::db("reading the store after recovery"))?;
    Ok(rows
        .iter()
        .map(|row| {
            let event_id: Uuid = row.get(1);
            let position: i64 = row.get(2);
            let transaction_id: TransactionId = row.get(3);
            let other = |held: &dyn Fn(&Shipment) -> bool| {
                shipped.iter().find(|s| held(s) && s.event_id != event_id).map(|s| s.order_no)
            };
            StoredOrder {
                order_no: row.get(0),
                event_id,
                position,
                transaction_id,
                survived: shipped.iter().any(|s| s.event_id == event_id),
                position_was: other(&|s| s.position == position),
                transaction_id_was: other(&|s| s.transaction_id == transaction_id),
            }
        })
        .collect())
}

/// The script must have produced what the checks judge; if the server behaved otherwise, the
/// check cannot give a verdict and says so, instead of passing a query it never tested.
fn expect_every_kind(history: History, orders: &[StoredOrder], shipped: &[Shipment]) -> Result<(), LabError> {
    let count = |kind: Kind| orders.iter().filter(|o| o.kind() == kind).count();
    let needed: &[(Kind, &str)] = match history {
        History::IdentityBumped => &[
            (Kind::BothReissued, "took a lost order's position and a lost order's transaction id"),
            (Kind::TransactionIdReissued, "took a lost order's transaction id with a fresh position"),
            (Kind::NotReissued, "took neither"),
        ],
        History::XidsBurned => &[
            (Kind::BothReissued, "took a lost order's position and a lost order's transaction id"),
            (Kind::PositionReissued, "took a lost order's position with a fresh transaction id"),
            (Kind::NotReissued, "took neither"),
        ],
    };
    for (kind, what) in needed {
        ensure(count(*kind) > 0, || {
            format!(
                "{history}: after the scripted recovery no new order {what}; the check cannot judge the query \
                 on this server. This is a bug in the check, or a PostgreSQL that restarts its counters \
                 differently: please report it with `labs doctor`'s output"
            )
        })?;
    }
    ensure(count(Kind::Survivor) == DURABLE_ORDERS, || {
        format!("{history}: {} of the {DURABLE_ORDERS} durable orders survived the crash", count(Kind::Survivor))
    })?;
    // The holes, behind the consumer's checkpoint, defeat "behind the checkpoint and not shipped".
    let last_position = shipped.iter().map(|s| s.position).max().unwrap_or(0);
    let last_transaction = shipped.iter().map(|s| s.transaction_id).max().unwrap_or_default();
    ensure(
        orders.iter().any(|o| {
            o.kind() == Kind::NotReissued && (o.position <= last_position || o.transaction_id <= last_transaction)
        }),
        || format!("{history}: no new order took a position or transaction id that a declined order had taken"),
    )
}

/// Runs the attendee's query on its own session, under a statement timeout.
async fn run_query(server: &Server, file: &ExerciseFile) -> Result<Vec<ReturnedRow>, LabError> {
    let client = server.connect().await?;
    sql(&client, &format!("SET statement_timeout = '{}s'", QUERY_TIMEOUT.as_secs()), "setting a statement timeout")
        .await?;
    let statement = prepare(&client, file).await?;
    let rows = client.query(&statement, &[]).await.map_err(|e| {
        let cancelled = e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED);
        LabError::Exercise(if cancelled {
            format!(
                "{}: the query did not return within {} s, on tables of about a hundred rows. Does it wait \
                 (pg_sleep, a lock) or join every row with every other several times?",
                file.shown,
                QUERY_TIMEOUT.as_secs()
            )
        } else {
            file.locate(&e, 0)
        })
    })?;
    Ok(rows
        .iter()
        .map(|row| ReturnedRow {
            order_no: row.get(0),
            event_id: row.get(1),
            position: row.get(2),
            transaction_id: row.get(3),
        })
        .collect())
}

/// What a check says about one order, in words a facilitator can read out.
fn described(order: &StoredOrder, h: &HistoryResult) -> String {
    let last_position = h.shipped.iter().map(|s| s.position).max().unwrap_or(0);
    let last_transaction = h.shipped.iter().map(|s| s.transaction_id).max().unwrap_or_default();
    let position = match order.position_was {
        Some(n) => format!("position {} was order {n}'s, shipped and then lost", order.position),
        None if order.survived => format!("position {} is its own, shipped before the crash", order.position),
        None if order.position <= last_position => {
            format!("no shipment has position {} (a declined order took it and rolled back)", order.position)
        }
        None => format!("position {} is past every shipped one", order.position),
    };
    let transaction = match order.transaction_id_was {
        Some(n) => format!("transaction id {} was order {n}'s, shipped and then lost", order.transaction_id),
        None if order.survived => format!("transaction id {} is its own", order.transaction_id),
        None if order.transaction_id <= last_transaction => format!(
            "no shipment has transaction id {} (a declined order took it and rolled back)",
            order.transaction_id
        ),
        None => format!("transaction id {} is past every shipped one", order.transaction_id),
    };
    format!("{}: order {}: {position}; {transaction}", h.history, order.order_no)
}

/// How many rows the query returned for each event id.
fn returned_counts(h: &HistoryResult) -> HashMap<Uuid, usize> {
    let mut counts = HashMap::new();
    for row in &h.returned {
        if let Some(id) = row.event_id {
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    counts
}

/// At most this many offending orders are listed per check.
const SHOWN: usize = 4;

fn listed(lines: Vec<String>) -> String {
    let more = lines.len().saturating_sub(SHOWN);
    let mut out = lines.into_iter().take(SHOWN).collect::<Vec<_>>().join("\n");
    if more > 0 {
        let _ = write!(out, "\n… and {more} more");
    }
    out
}

/// One check over both histories: every order of `kind` must be returned, or must not be.
fn category(
    histories: &[HistoryResult],
    id: &'static str,
    name: &str,
    kind: Kind,
    must_return: bool,
    advice: &str,
) -> Check {
    let mut wrong = Vec::new();
    let mut per_history = Vec::new();
    for h in histories {
        let counts = returned_counts(h);
        let orders: Vec<&StoredOrder> = h.orders.iter().filter(|o| o.kind() == kind).collect();
        if !orders.is_empty() {
            let numbers: Vec<String> = orders.iter().map(|o| o.order_no.to_string()).collect();
            per_history.push(format!("{}: {}", h.history, numbers.join(", ")));
        }
        for order in orders {
            if counts.contains_key(&order.event_id) != must_return {
                wrong.push(described(order, h));
            }
        }
    }
    let total: usize = histories.iter().map(|h| h.orders.iter().filter(|o| o.kind() == kind).count()).sum();
    let passed = wrong.is_empty();
    let detail = if passed {
        let verb = if must_return { "all returned" } else { "none returned" };
        format!("{total} such orders, {verb} (orders {})", per_history.join("; "))
    } else {
        let verb = if must_return { "not returned" } else { "returned" };
        format!("{} of {total} such orders {verb}:\n{}\n{advice}", wrong.len(), listed(wrong))
    };
    Check::new(id, name, passed, detail)
}

/// Each row is an order in the store, once, with the store's own values.
fn one_row_per_order(histories: &[HistoryResult]) -> Check {
    let mut wrong = Vec::new();
    for h in histories {
        let stored: BTreeMap<Uuid, &StoredOrder> = h.orders.iter().map(|o| (o.event_id, o)).collect();
        let lost: BTreeMap<Uuid, &Shipment> = h.shipped.iter().map(|s| (s.event_id, s)).collect();
        let counts = returned_counts(h);
        let mut reported_twice = std::collections::BTreeSet::new();
        for row in &h.returned {
            let Some(id) = row.event_id else {
                wrong.push(format!("{}: a row with no event_id", h.history));
                continue;
            };
            let Some(order) = stored.get(&id) else {
                wrong.push(match lost.get(&id) {
                    Some(s) => format!(
                        "{}: order {} is a lost order (shipped, gone from the store): return the orders in the \
                         store that took lost orders' positions or transaction ids, not the lost orders",
                        h.history, s.order_no
                    ),
                    None => format!("{}: a row with event id {id}, which no order in the store has", h.history),
                });
                continue;
            };
            if counts[&id] > 1 && reported_twice.insert(id) {
                wrong.push(format!(
                    "{}: order {} returned {} times: its position and its transaction id were two different \
                     lost orders', and each match made a row. Ask whether such a shipment EXISTS",
                    h.history, order.order_no, counts[&id]
                ));
            }
            let mut differs = Vec::new();
            if row.order_no != Some(order.order_no) {
                differs.push(format!("order_no {} (the store's: {})", shown(row.order_no), order.order_no));
            }
            if row.position != Some(order.position) {
                differs.push(format!("position {} (the store's: {})", shown(row.position), order.position));
            }
            if row.transaction_id != Some(order.transaction_id) {
                differs.push(format!(
                    "transaction_id {} (the store's: {})",
                    shown(row.transaction_id),
                    order.transaction_id
                ));
            }
            if !differs.is_empty() {
                wrong.push(format!(
                    "{}: order {}'s row has {}: return the values from events, not from shipped",
                    h.history,
                    order.order_no,
                    differs.join(", ")
                ));
            }
        }
    }
    let rows: usize = histories.iter().map(|h| h.returned.len()).sum();
    let passed = wrong.is_empty();
    let detail = if passed {
        format!("{rows} rows, each an order in the store, once, with the store's values")
    } else {
        listed(wrong)
    };
    Check::new("one-row-per-order", "each row is an order in the store, once, with the store's values", passed, detail)
}

fn shown<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or("NULL".to_string(), |v| v.to_string())
}

/// The checks, over both histories.
pub fn verdict(file: &ExerciseFile, histories: &[HistoryResult]) -> CheckReport {
    let checks = vec![
        category(
            histories,
            "both-reissued",
            "an order that took a lost order's position and a lost order's transaction id: returned",
            Kind::BothReissued,
            true,
            "These orders hold values the warehouse already saw on another order. Return an order when a \
             shipment with another event id has its position or its transaction id.",
        ),
        category(
            histories,
            "position-reissued",
            "an order that took a lost order's position, its transaction id fresh: returned",
            Kind::PositionReissued,
            true,
            "Recovery restarts the sequence behind position from the last value the surviving WAL logged, \
             so the lost orders' positions are handed out again: compare positions too.",
        ),
        category(
            histories,
            "transaction-id-reissued",
            "an order that took a lost order's transaction id, its position fresh: returned",
            Kind::TransactionIdReissued,
            true,
            "Recovery restarts the transaction id counter after the last transaction the surviving WAL \
             holds, so the lost transactions' ids are assigned again: compare transaction ids too.",
        ),
        category(
            histories,
            "not-reissued",
            "a new order whose position and transaction id no shipment held: not returned",
            Kind::NotReissued,
            false,
            "Return an order only when a shipment with another event id holds its position or its \
             transaction id. Placed after the crash, unshipped, or behind the consumer's checkpoint is not \
             enough: declined orders took values that no shipment holds.",
        ),
        category(
            histories,
            "survivors",
            "an order that survived the crash (shipped, still in the store): not returned",
            Kind::Survivor,
            false,
            "A surviving order matches its own shipment on both counters. Compare event ids: the one \
             identity that recovery never hands out again.",
        ),
        one_row_per_order(histories),
    ];
    CheckReport::new(
        "outage",
        file,
        checks,
        "the query finds every order whose position or transaction id the warehouse saw on a lost order, and nothing else.",
    )
}
