//! Reading: one stream forward, and all streams in an order no later commit can precede.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use super::{StoreError, SystemIdentifier, TransactionId};

/// The contract's read, as the server runs it (see `read_all_after` in schema.sql).
pub const READ_ALL_SQL: &str =
    "SELECT checkpoint, event_id, stream_id, version, type, data, metadata FROM read_all_after($1, $2)";

/// An event as it was stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordedEvent {
    /// Where a reader of all streams resumes after this event.
    pub checkpoint: Checkpoint,
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: i64,
    pub event_type: String,
    pub data: serde_json::Value,
    pub metadata: serde_json::Value,
}

impl RecordedEvent {
    /// From a row of the contract's read, `read_all_after` in SQL: (checkpoint, event_id,
    /// stream_id, version, type, data, metadata). Its checkpoint is text, parsed here: the
    /// contract's edge.
    pub fn from_contract_row(row: &Row) -> Result<RecordedEvent, StoreError> {
        Ok(RecordedEvent {
            checkpoint: row.get::<_, &str>(0).parse()?,
            event_id: row.get(1),
            stream_id: row.get(2),
            version: row.get(3),
            event_type: row.get(4),
            data: row.get(5),
            metadata: row.get(6),
        })
    }

    /// From a row of `transaction_id, position, event_id, stream_id, version, type, data,
    /// metadata, cluster`.
    fn from_typed_row(row: &Row) -> RecordedEvent {
        RecordedEvent {
            checkpoint: Checkpoint {
                transaction_id: row.get(0),
                position: row.get(1),
                cluster: SystemIdentifier(row.get(8)),
            },
            event_id: row.get(2),
            stream_id: row.get(3),
            version: row.get(4),
            event_type: row.get(5),
            data: row.get(6),
            metadata: row.get(7),
        }
    }
}

/// The reference store's checkpoint: the last event read, as (transaction id, position), and the
/// cluster whose transaction id it is. Written `xid:position:system_identifier`, the text form
/// `read_all_after` takes and returns and the `subscriptions` table stores; everywhere else it is
/// this type. A checkpoint is refused on another cluster (`OtherCluster`): transaction ids only
/// compare within one cluster's history (schema.sql, `store_check_cluster`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Checkpoint {
    pub transaction_id: TransactionId,
    pub position: i64,
    pub cluster: SystemIdentifier,
}

impl Checkpoint {
    /// Before every event, on any cluster.
    pub const START: Checkpoint =
        Checkpoint { transaction_id: TransactionId(0), position: 0, cluster: SystemIdentifier(0) };
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.transaction_id, self.position, self.cluster)
    }
}

impl FromStr for Checkpoint {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Checkpoint, StoreError> {
        let bad = |why: String| StoreError::BadCheckpoint(why);
        let parts: Vec<&str> = s.split(':').collect();
        let [xid, position, cluster] = parts[..] else {
            return Err(bad(format!("checkpoint '{s}' is not 'transaction_id:position:system_identifier'")));
        };
        Ok(Checkpoint {
            transaction_id: TransactionId(
                xid.parse().map_err(|_| bad(format!("checkpoint '{s}': '{xid}' is not a transaction id")))?,
            ),
            position: position.parse().map_err(|_| bad(format!("checkpoint '{s}': '{position}' is not a position")))?,
            cluster: SystemIdentifier(
                cluster
                    .parse()
                    .map_err(|_| bad(format!("checkpoint '{s}': '{cluster}' is not a system identifier")))?,
            ),
        })
    }
}

/// `read_all_after` of schema.sql with typed columns: the same filter, order and cluster check
/// (`store_reader_check`, run once before any row: it has no column in it), but the checkpoint is
/// built here. Formatting it as text on the server for every row about doubled the read's server
/// time (EXPLAIN ANALYZE, 100,000 rows), and the reader's rate is the store's to keep. A test
/// (tests/store.rs) checks that both return the same events in the same order with the same
/// checkpoints.
pub const READ_ALL_TYPED_SQL: &str = "
    SELECT e.transaction_id, e.position, e.event_id, e.stream_id, e.version, e.type, e.data, e.metadata,
           (SELECT system_identifier FROM pg_control_system())
    FROM events e
    WHERE store_reader_check($1, $2, $3)
      AND (e.transaction_id, e.position) > ($1, $2)
      AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY e.transaction_id, e.position
    LIMIT $4";

/// Up to `max_count` events after `after` ([`Checkpoint::START`]: from the start), behind the
/// watermark. [`StoreError::OtherCluster`] when `after` was taken on another cluster, or the
/// stored transaction ids are another cluster's.
pub async fn read_all_after(
    client: &impl GenericClient,
    after: Checkpoint,
    max_count: i32,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = client
        .query(READ_ALL_TYPED_SQL, &[&after.transaction_id, &after.position, &after.cluster.0, &(max_count as i64)])
        .await
        .map_err(StoreError::db("reading all streams"))?;
    Ok(rows.iter().map(RecordedEvent::from_typed_row).collect())
}

/// One stream's events from `from_version` on, in version order: what a command handler loads
/// before deciding. Uses the unique (stream_id, version) index.
pub async fn read_stream(
    client: &impl GenericClient,
    stream_id: &str,
    from_version: i64,
    max_count: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = client
        .query(
            "SELECT transaction_id, position, event_id, stream_id, version, type, data, metadata,
                    (SELECT system_identifier FROM pg_control_system())
             FROM events WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3",
            &[&stream_id, &from_version, &max_count],
        )
        .await
        .map_err(StoreError::db(format!("reading stream {stream_id}")))?;
    Ok(rows.iter().map(RecordedEvent::from_typed_row).collect())
}
