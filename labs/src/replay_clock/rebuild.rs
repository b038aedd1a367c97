//! The four rebuilds of the balances read model, each timed, each judged against the golden
//! balances, each while a reader keeps reading the live model as the balance page would.
//!
//! - per-event: the store's subscription with one event per transaction, checkpoint included,
//!   rebuilding the live model in place from a reset checkpoint; over a prefix of the log.
//! - batches: the same subscription, 1,000 events per transaction.
//! - set-based: one `TRUNCATE` and one `INSERT … SELECT … GROUP BY` over the whole log, in one
//!   transaction, in place.
//! - blue-green: the reference solution's `rebuild_balances()`: the new model built beside the
//!   live one, then both renamed in one transaction.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::bank::{self, Bank};
use crate::error::LabError;
use crate::pg::Server;
use crate::store::read::RecordedEvent;
use crate::store::subscription::{Batch, Subscription};

id_enum! {
    /// A way of rebuilding the read model.
    pub enum Strategy {
        PerEvent = "per-event",
        Batches = "batches",
        SetBased = "set-based",
        BlueGreen = "blue-green",
    }
}

impl Strategy {
    /// The table the strategy rebuilds, which its reader reads.
    pub fn table(self) -> &'static str {
        match self {
            Strategy::PerEvent => "balances_per_event",
            Strategy::Batches => "balances_batches",
            Strategy::SetBased => "balances_set_based",
            Strategy::BlueGreen => "balances",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Strategy::PerEvent => "reset the checkpoint, replay one event per transaction, checkpoint in each",
            Strategy::Batches => "reset the checkpoint, replay 1,000 events per transaction, checkpoint in each",
            Strategy::SetBased => "TRUNCATE and one INSERT ... SELECT ... GROUP BY, in one transaction",
            Strategy::BlueGreen => "build a new table beside the live one, then RENAME both in one transaction",
        }
    }

    /// Whether it empties the live model and refills it over many transactions.
    fn in_place_in_steps(self) -> bool {
        matches!(self, Strategy::PerEvent | Strategy::Batches)
    }
}

/// Events per transaction of the batches strategy.
pub const BATCH_SIZE: i32 = 1_000;
/// The pause between two reads of the looping reader: a balance page polled by many users, not
/// a loop that takes a core from the rebuild on a small machine.
const READ_PAUSE: Duration = Duration::from_millis(5);

/// What the reader of the live model saw during one rebuild.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReaderStats {
    pub reads: u64,
    /// Reads that found no row at all.
    pub empty: u64,
    /// Reads that found some rows but not every account.
    pub partial: u64,
    /// Reads that failed (the table missing during a switch, for example).
    pub failed: u64,
    pub longest_read_ms: f64,
    pub first_failure: Option<String>,
}

impl ReaderStats {
    pub fn saw_it_away(&self) -> bool {
        self.empty + self.partial + self.failed > 0
    }
}

/// One strategy's run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StrategyResult {
    pub strategy: Strategy,
    /// Events replayed.
    pub events: usize,
    /// Set when the strategy ran over the first `events` of a longer log.
    pub prefix_of: Option<usize>,
    pub seconds: f64,
    pub events_per_second: f64,
    /// At the measured rate, the whole log (only for a prefix run): an estimate, not a measurement.
    pub estimated_full_seconds: Option<f64>,
    /// Whether the rebuilt model equals the golden balances (of the prefix, for a prefix run).
    pub golden: bool,
    /// The first difference, when it is not golden.
    pub difference: Option<String>,
    /// Rows a read found right after the in-place reset committed (None: the strategy has no
    /// such moment).
    pub rows_after_reset: Option<i64>,
    pub readers: ReaderStats,
}

impl StrategyResult {
    /// Whether a reader of the live model could find it empty or half-built.
    pub fn took_the_model_away(&self) -> bool {
        self.readers.saw_it_away() || self.rows_after_reset == Some(0)
    }
}

/// SQL of the projection that both subscription strategies run on each batch: the batch's
/// events, through the upcaster, added to the model. Grouped first so one statement never
/// touches an account's row twice.
fn project_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} AS b (account, currency, balance_minor, version)
         SELECT e.stream_id,
                max(u.data->>'currency'),
                sum(CASE e.type WHEN 'Deposited' THEN 1 ELSE -1 END * (u.data->>'amount_minor')::bigint),
                max(e.version)
           FROM unnest($1::text[], $2::bigint[], $3::text[], $4::jsonb[], $5::jsonb[])
                AS e(stream_id, version, type, data, metadata)
          CROSS JOIN LATERAL (SELECT upcast((e.metadata->>'schema_version')::integer, e.data) AS data) u
          WHERE e.stream_id LIKE 'account-%'
          GROUP BY e.stream_id
         ON CONFLICT (account) DO UPDATE
            SET currency = coalesce(b.currency, excluded.currency),
                balance_minor = b.balance_minor + excluded.balance_minor,
                version = excluded.version"
    )
}

/// The set-based rebuild in place: the same query as the reference `rebuild_balances()`.
fn set_based_sql(table: &str) -> String {
    format!(
        "TRUNCATE {table};
         INSERT INTO {table} (account, currency, balance_minor, version)
         SELECT e.stream_id,
                max(u.data->>'currency'),
                sum(CASE e.type WHEN 'Deposited' THEN 1 ELSE -1 END * (u.data->>'amount_minor')::bigint),
                max(e.version)
           FROM events e
          CROSS JOIN LATERAL (SELECT upcast((e.metadata->>'schema_version')::integer, e.data) AS data) u
          WHERE e.stream_id LIKE 'account-%'
          GROUP BY e.stream_id"
    )
}

/// Fills each strategy's live model with the golden balances: the previous release's model,
/// complete, which readers are reading when the rebuild starts.
pub async fn prepare(client: &Client, bank: &Bank) -> Result<(), LabError> {
    let golden = bank.golden(None);
    let accounts: Vec<&str> = golden.keys().map(String::as_str).collect();
    let currencies: Vec<&str> = golden.values().map(|b| b.currency.as_str()).collect();
    let balances: Vec<i64> = golden.values().map(|b| b.balance_minor).collect();
    let versions: Vec<i64> = golden.values().map(|b| b.version).collect();
    client
        .execute(
            "INSERT INTO balances (account, currency, balance_minor, version)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])",
            &[&accounts, &currencies, &balances, &versions],
        )
        .await
        .map_err(LabError::db("filling the live read model"))?;
    for strategy in Strategy::ALL.iter().filter(|s| **s != Strategy::BlueGreen) {
        let table = strategy.table();
        client
            .batch_execute(&format!(
                "CREATE TABLE {table} (LIKE balances INCLUDING ALL); INSERT INTO {table} SELECT * FROM balances"
            ))
            .await
            .map_err(LabError::db(format!("creating {table}")))?;
    }
    Ok(())
}

/// A reader looping on `table` until `stop`: what the balance page sees.
async fn watch(client: Client, table: &'static str, accounts: i64, stop: Arc<AtomicBool>) -> ReaderStats {
    let mut stats = ReaderStats::default();
    let sql = format!("SELECT count(*) FROM {table}");
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let result = client.query_one(&sql, &[]).await;
        stats.longest_read_ms = stats.longest_read_ms.max(started.elapsed().as_secs_f64() * 1000.0);
        stats.reads += 1;
        match result {
            Ok(row) => match row.get::<_, i64>(0) {
                0 => stats.empty += 1,
                n if n != accounts => stats.partial += 1,
                _ => {}
            },
            Err(e) => {
                stats.failed += 1;
                stats.first_failure.get_or_insert_with(|| crate::store::server_message(&e));
            }
        }
        tokio::time::sleep(READ_PAUSE).await;
    }
    stats
}

/// Runs one strategy with a reader on its live table; `progress` gets (events replayed, of).
pub async fn run(
    server: &Server,
    bank: &Bank,
    strategy: Strategy,
    per_event_prefix: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<StrategyResult, LabError> {
    let total = bank.events();
    let accounts = bank.accounts.len() as i64;
    let mut client = server.connect().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(watch(server.connect().await?, strategy.table(), accounts, stop.clone()));
    // Let the reader see the complete model before the rebuild starts.
    tokio::time::sleep(READ_PAUSE * 4).await;

    let started = Instant::now();
    let mut rows_after_reset = None;
    let events = match strategy {
        Strategy::PerEvent | Strategy::Batches => {
            let limit = if strategy == Strategy::PerEvent { per_event_prefix.min(total) } else { total };
            let batch_size = if strategy == Strategy::PerEvent { 1 } else { BATCH_SIZE };
            let subscription = Subscription { batch_size, ..Subscription::new(format!("rebuild-{strategy}")) };
            let table = strategy.table();
            // The reset: the model emptied and the checkpoint back to the start, together.
            let tx = client.transaction().await.map_err(LabError::db("BEGIN the reset"))?;
            tx.batch_execute(&format!(
                "TRUNCATE {table};
                 INSERT INTO subscriptions (name) VALUES ('{}') ON CONFLICT (name) DO UPDATE SET checkpoint = NULL",
                subscription.name
            ))
            .await
            .map_err(LabError::db(format!("resetting {table}")))?;
            tx.commit().await.map_err(LabError::db("COMMIT the reset"))?;
            // A read at this moment, by the script: what a reader finds once the reset committed.
            let reader_now = server.connect().await?;
            rows_after_reset = Some(
                reader_now
                    .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                    .await
                    .map_err(LabError::db("reading after the reset"))?
                    .get(0),
            );
            let project = project_sql(table);
            let mut replayed = 0;
            while replayed < limit {
                let batch = subscription
                    .process_batch(&mut client, async |tx, events: &[RecordedEvent]| {
                        let streams: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
                        let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
                        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
                        let data: Vec<&serde_json::Value> = events.iter().map(|e| &e.data).collect();
                        let metadata: Vec<&serde_json::Value> = events.iter().map(|e| &e.metadata).collect();
                        tx.execute(&project, &[&streams, &versions, &types, &data, &metadata]).await.map(|_| ())
                    })
                    .await?;
                match batch {
                    Batch::Processed(n) => replayed += n,
                    Batch::CaughtUp => break,
                    Batch::Standby => {
                        return Err(LabError::Script(format!("{} was held by another instance", subscription.name)))
                    }
                }
                if replayed % 100 < batch_size as usize || replayed == limit {
                    progress(replayed, limit);
                }
            }
            replayed
        }
        Strategy::SetBased => {
            let tx = client.transaction().await.map_err(LabError::db("BEGIN the set-based rebuild"))?;
            tx.batch_execute(&set_based_sql(strategy.table())).await.map_err(LabError::db("the set-based rebuild"))?;
            tx.commit().await.map_err(LabError::db("COMMIT the set-based rebuild"))?;
            progress(total, total);
            total
        }
        Strategy::BlueGreen => {
            client.batch_execute("CALL rebuild_balances()").await.map_err(LabError::db("CALL rebuild_balances()"))?;
            progress(total, total);
            total
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(READ_PAUSE * 4).await;
    stop.store(true, Ordering::SeqCst);
    let readers = reader.await?;

    let prefix = strategy.in_place_in_steps() && events < total;
    let golden = bank.golden(prefix.then_some(events));
    let model = bank::read_model(&client, strategy.table()).await?;
    let difference = bank::differences(&model, &golden).map(|(n, first)| format!("{n} accounts differ; {first}"));
    let events_per_second = events as f64 / seconds.max(1e-9);
    Ok(StrategyResult {
        strategy,
        events,
        prefix_of: prefix.then_some(total),
        seconds,
        events_per_second,
        estimated_full_seconds: prefix.then(|| total as f64 / events_per_second),
        golden: difference.is_none(),
        difference,
        rows_after_reset,
        readers,
    })
}
