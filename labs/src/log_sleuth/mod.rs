//! Activity 1, Event-Driven Detective: Log Sleuth.
//!
//! - [`audit`]: `labs sleuth audit`, the anomalies in a JSON-lines event log.
//! - [`generate`]: `labs sleuth generate`, a fresh incident log and its answer key.
//! - [`scenario`]: `labs run log-sleuth`, two writers commit out of order against a real server;
//!   a consumer that trusts positions skips an event, one behind the xid8 watermark does not.
//! - [`exercise`] (the attendee's file) and [`solution`]: the consumer's `poll`, checked by
//!   `labs check log-sleuth`.

pub mod audit;
pub mod exercise;
pub mod findings;
pub mod generate;
pub mod scenario;
pub mod solution;

use tokio_postgres::Row;
use uuid::Uuid;

use crate::store::TransactionId;

/// An event as a consumer reads it.
#[derive(Clone, Debug)]
pub struct EventRow {
    pub position: i64,
    pub transaction_id: TransactionId,
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: i64,
    pub event_type: String,
}

impl EventRow {
    /// From a row of `SELECT position, transaction_id, event_id, stream_id, version, type`.
    pub fn from_row(row: &Row) -> EventRow {
        EventRow {
            position: row.get(0),
            transaction_id: row.get(1),
            event_id: row.get(2),
            stream_id: row.get(3),
            version: row.get(4),
            event_type: row.get(5),
        }
    }
}

/// Where a consumer is: the last event it processed. Starts before everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub transaction_id: TransactionId,
    pub position: i64,
}

impl Checkpoint {
    pub fn after(event: &EventRow) -> Checkpoint {
        Checkpoint { transaction_id: event.transaction_id, position: event.position }
    }
}

/// The consumers the lab can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// `WHERE position > checkpoint`: what most ad-hoc event stores do first.
    Naive,
    /// Behind the xid8 watermark: the reference solution.
    Watermark,
    /// The attendee's `exercise.rs`.
    Exercise,
}

impl Reader {
    pub fn name(self) -> &'static str {
        match self {
            Reader::Naive => "naive",
            Reader::Watermark => "watermark",
            Reader::Exercise => "exercise",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Reader::Naive => "WHERE position > checkpoint ORDER BY position",
            Reader::Watermark => "WHERE (transaction_id, position) > checkpoint AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())",
            Reader::Exercise => "your poll() in labs/src/log_sleuth/exercise.rs",
        }
    }

    pub async fn poll(
        self,
        client: &tokio_postgres::Client,
        after: &Checkpoint,
    ) -> Result<Vec<EventRow>, tokio_postgres::Error> {
        match self {
            Reader::Naive => naive_poll(client, after).await,
            Reader::Watermark => solution::poll(client, after).await,
            Reader::Exercise => exercise::poll(client, after).await,
        }
    }
}

/// The broken reader the lab demonstrates, kept here so `labs run` shows it whatever the
/// attendee does to `exercise.rs`.
async fn naive_poll(
    client: &tokio_postgres::Client,
    after: &Checkpoint,
) -> Result<Vec<EventRow>, tokio_postgres::Error> {
    const SQL: &str = "SELECT position, transaction_id, event_id, stream_id, version, type
                         FROM events WHERE position > $1 ORDER BY position LIMIT 100";
    Ok(client.query(SQL, &[&after.position]).await?.iter().map(EventRow::from_row).collect())
}
