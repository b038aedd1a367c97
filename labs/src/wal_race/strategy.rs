//! The racing strategies: how each one writes events, and what it promises about durability.

use futures_util::future::try_join_all;
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

use crate::error::LabError;
use crate::rng::Rng;
use crate::store::{self, ExpectedVersion, NewEvent, StreamAppend};

id_enum! {
    #[derive(PartialOrd, Ord)]
    pub enum Strategy {
        RowPerTx = "row-per-tx",
        RowPerTxAsync = "row-per-tx-async",
        RowsOneTx = "rows-one-tx",
        MultiRow = "multi-row",
        Pipelined = "pipelined",
        Copy = "copy",
        StoreAppend = "store-append",
        StoreBulk = "store-bulk",
        Unlogged = "unlogged",
        ExtraIndexes = "extra-indexes",
        GlobalCounter = "global-counter",
        AdvisoryLock = "advisory-lock",
    }
}

pub const ALL: &[Strategy] = Strategy::ALL;

/// Every event's type.
const KIND: &str = "PaymentCaptured";

/// Rows per transaction of the batching strategies.
const BATCH: usize = 100;
/// Rows per COPY and per bulk append.
const COPY_ROWS: usize = 1_000;

impl Strategy {
    /// One line, as the output and the book describe it.
    pub fn describe(self) -> &'static str {
        match self {
            Strategy::RowPerTx => "one INSERT per transaction: every event waits for a WAL flush (concurrent writers can share one)",
            Strategy::RowPerTxAsync => {
                "the same with synchronous_commit=off: COMMIT returns before the flush; a crash loses the last ~3 x wal_writer_delay of acknowledged commits"
            }
            Strategy::RowsOneTx => "100 single-row INSERTs in one transaction: one flush per 100 events, but 100 round trips",
            Strategy::MultiRow => "one INSERT ... VALUES with 100 rows per transaction",
            Strategy::Pipelined => "100 prepared single-row INSERTs sent without waiting for each reply, in one transaction",
            Strategy::Copy => "binary COPY of 1,000 rows per transaction",
            Strategy::StoreAppend => "the reference store's append_to_stream, one event per transaction, expected version checked",
            Strategy::StoreBulk => "the reference store's bulk path: 1,000 events over 10 streams per transaction (COPY plus checks)",
            Strategy::Unlogged => "multi-row INSERT into an UNLOGGED table: no WAL for the rows; emptied after a crash, not replicated",
            Strategy::ExtraIndexes => "multi-row INSERT into the same table with two more B-tree indexes and a GIN index on the data",
            Strategy::GlobalCounter => "every event takes the next number from one counter row (the gapless-sequence anti-pattern)",
            Strategy::AdvisoryLock => "every append takes the same advisory lock first: appends run one at a time",
        }
    }

    /// Whether an acknowledged event survives a crash.
    pub fn durable(self) -> bool {
        !matches!(self, Strategy::RowPerTxAsync | Strategy::Unlogged)
    }

    /// The table the strategy writes to.
    pub fn table(self) -> &'static str {
        match self {
            Strategy::StoreAppend | Strategy::StoreBulk => "events",
            Strategy::Unlogged => "race_unlogged",
            Strategy::ExtraIndexes => "race_indexed",
            _ => "race_events",
        }
    }
}

/// Every table the race writes, created once per race. `race_events` has the reference store's
/// columns and indexes, so the strategies differ in how they write, not in what.
pub const SETUP_SQL: &str = "
CREATE TABLE race_events (
    position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id       uuid NOT NULL UNIQUE,
    stream_id      text NOT NULL,
    version        bigint NOT NULL,
    type           text NOT NULL,
    data           jsonb NOT NULL,
    metadata       jsonb NOT NULL DEFAULT '{}',
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (stream_id, version)
);
CREATE INDEX ON race_events (transaction_id, position);
CREATE UNLOGGED TABLE race_unlogged (LIKE race_events INCLUDING ALL);
CREATE TABLE race_indexed (LIKE race_events INCLUDING ALL);
CREATE INDEX ON race_indexed (type, recorded_at);
CREATE INDEX ON race_indexed (stream_id, recorded_at);
CREATE INDEX ON race_indexed USING gin (data jsonb_path_ops);
CREATE TABLE race_counter (id int PRIMARY KEY, value bigint NOT NULL);
INSERT INTO race_counter VALUES (1, 0);
";

/// One writer's session and where it is in its own streams: event n goes to stream
/// `w<writer>-<n / 100>` as version `n % 100 + 1`, so versions never collide between writers.
pub struct Writer {
    pub client: Client,
    writer: usize,
    next: u64,
    rng: Rng,
    single: Option<Statement>,
    multi: Option<Statement>,
}

/// A payload of a realistic size (about 200 bytes of JSON).
fn payload(n: u64) -> serde_json::Value {
    serde_json::json!({
        "amount_cents": n % 100_000,
        "currency": "EUR",
        "merchant_id": format!("m-{:06}", n % 997),
        "card_fingerprint": format!("{:016x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        "channel": "ecommerce",
        "note": "flash sale order, captured on first attempt",
    })
}

const INSERT_ONE: &str =
    "INSERT INTO race_events (event_id, stream_id, version, type, data) VALUES ($1, $2, $3, $4, $5)";

impl Writer {
    pub async fn new(client: Client, writer: usize, strategy: Strategy) -> Result<Writer, tokio_postgres::Error> {
        if strategy == Strategy::RowPerTxAsync {
            // For this session only: its commits return before their WAL is flushed.
            client.batch_execute("SET synchronous_commit = off").await?;
        }
        let single = match strategy {
            Strategy::RowPerTx | Strategy::RowPerTxAsync | Strategy::RowsOneTx | Strategy::Pipelined => {
                Some(client.prepare(INSERT_ONE).await?)
            }
            _ => None,
        };
        let multi = match strategy {
            Strategy::MultiRow | Strategy::Unlogged | Strategy::ExtraIndexes => {
                Some(client.prepare(&multi_row_sql(strategy.table())).await?)
            }
            _ => None,
        };
        Ok(Writer { client, writer, next: 0, rng: Rng(writer as u64 * 7919 + 1), single, multi })
    }

    /// The next event of this writer: (id, stream, version, payload).
    fn event(&mut self) -> (Uuid, String, i64, serde_json::Value) {
        let n = self.next;
        self.next += 1;
        let id = Uuid::from_u64_pair(self.rng.next(), self.rng.next());
        (id, format!("w{}-{}", self.writer, n / BATCH as u64), (n % BATCH as u64) as i64 + 1, payload(n))
    }

    /// Writes one unit of the strategy (one transaction) and returns how many events it wrote.
    pub async fn unit(&mut self, strategy: Strategy) -> Result<u64, LabError> {
        match strategy {
            Strategy::RowPerTx | Strategy::RowPerTxAsync => {
                let (id, stream, version, data) = self.event();
                let statement = self.single.clone().expect("prepared in new()");
                self.client.execute(&statement, &[&id, &stream, &version, &"PaymentCaptured", &data]).await?;
                Ok(1)
            }
            Strategy::RowsOneTx => {
                let statement = self.single.clone().expect("prepared in new()");
                self.client.batch_execute("BEGIN").await?;
                for _ in 0..BATCH {
                    let (id, stream, version, data) = self.event();
                    self.client.execute(&statement, &[&id, &stream, &version, &"PaymentCaptured", &data]).await?;
                }
                self.client.batch_execute("COMMIT").await?;
                Ok(BATCH as u64)
            }
            Strategy::Pipelined => {
                let statement = self.single.clone().expect("prepared in new()");
                let rows: Vec<_> = (0..BATCH).map(|_| self.event()).collect();
                let params: Vec<[&(dyn ToSql + Sync); 5]> = rows
                    .iter()
                    .map(|(id, stream, version, data)| [id as &(dyn ToSql + Sync), stream, version, &KIND, data])
                    .collect();
                let transaction = self.client.transaction().await?;
                // Issued together: tokio-postgres sends them all before reading any reply.
                try_join_all(params.iter().map(|p| transaction.execute(&statement, p))).await?;
                transaction.commit().await?;
                Ok(BATCH as u64)
            }
            Strategy::MultiRow | Strategy::Unlogged | Strategy::ExtraIndexes => {
                let statement = self.multi.clone().expect("prepared in new()");
                let rows: Vec<_> = (0..BATCH).map(|_| self.event()).collect();
                let kind = "PaymentCaptured";
                let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(BATCH * 5);
                for (id, stream, version, data) in &rows {
                    params.extend([id as &(dyn ToSql + Sync), stream, version, &kind, data]);
                }
                self.client.execute(&statement, &params).await?;
                Ok(BATCH as u64)
            }
            Strategy::Copy => {
                let rows: Vec<_> = (0..COPY_ROWS).map(|_| self.event()).collect();
                let sink = self
                    .client
                    .copy_in("COPY race_events (event_id, stream_id, version, type, data) FROM STDIN (FORMAT binary)")
                    .await?;
                let writer =
                    BinaryCopyInWriter::new(sink, &[Type::UUID, Type::TEXT, Type::INT8, Type::TEXT, Type::JSONB]);
                pin_mut!(writer);
                for (id, stream, version, data) in &rows {
                    writer.as_mut().write(&[id, stream, version, &"PaymentCaptured", data]).await?;
                }
                writer.finish().await?;
                Ok(COPY_ROWS as u64)
            }
            Strategy::StoreAppend => {
                let (id, stream, version, data) = self.event();
                let expected =
                    if version == 1 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version - 1) };
                store::append(&self.client, &stream, expected, &[NewEvent::new(id, "PaymentCaptured", data)]).await?;
                Ok(1)
            }
            Strategy::StoreBulk => {
                let mut appends: Vec<StreamAppend> = Vec::new();
                for _ in 0..COPY_ROWS {
                    let (id, stream, version, data) = self.event();
                    if version == 1 {
                        appends.push(StreamAppend {
                            stream_id: stream,
                            expected: ExpectedVersion::NoStream,
                            events: Vec::new(),
                        });
                    }
                    appends.last_mut().expect("each stream starts at version 1").events.push(NewEvent::new(
                        id,
                        "PaymentCaptured",
                        data,
                    ));
                }
                store::append_bulk(&mut self.client, &appends).await?;
                Ok(COPY_ROWS as u64)
            }
            Strategy::GlobalCounter => {
                let (id, stream, version, data) = self.event();
                // The number comes from one row every writer updates: each waits for the
                // previous holder of that row lock to commit.
                self.client
                    .execute(
                        "WITH next AS (UPDATE race_counter SET value = value + 1 WHERE id = 1 RETURNING value)
                         INSERT INTO race_events (event_id, stream_id, version, type, data, metadata)
                         SELECT $1, $2, $3, $4, $5, jsonb_build_object('sequence', next.value) FROM next",
                        &[&id, &stream, &version, &"PaymentCaptured", &data],
                    )
                    .await?;
                Ok(1)
            }
            Strategy::AdvisoryLock => {
                let (id, stream, version, data) = self.event();
                // One lock for every append, held until commit (key 1 of class 4: nothing else
                // in the labs uses it).
                self.client
                    .execute(
                        "INSERT INTO race_events (event_id, stream_id, version, type, data)
                         SELECT $1, $2, $3, $4, $5 FROM (SELECT pg_advisory_xact_lock(4, 1)) AS serialized",
                        &[&id, &stream, &version, &"PaymentCaptured", &data],
                    )
                    .await?;
                Ok(1)
            }
        }
    }
}

fn multi_row_sql(table: &str) -> String {
    let values: Vec<String> = (0..BATCH)
        .map(|i| format!("(${}, ${}, ${}, ${}, ${})", i * 5 + 1, i * 5 + 2, i * 5 + 3, i * 5 + 4, i * 5 + 5))
        .collect();
    format!("INSERT INTO {table} (event_id, stream_id, version, type, data) VALUES {}", values.join(", "))
}
