//! # Exercise (activity 1, Log Sleuth): a consumer that never skips an event
//!
//! `poll` is the consumer's read. The consumer in `cargo labs check log-sleuth` calls it again
//! and again while two writers append; it hands each returned event to its projection and then
//! moves its checkpoint to the last event returned (that event's `transaction_id` and `position`).
//!
//! As written, `poll` trusts the global position: `WHERE position > $1`. The position comes from
//! an identity column, taken when a row is inserted, not when its transaction commits. A writer
//! that takes position 7 and commits after the writer that took position 8 makes 7 appear behind
//! a checkpoint that has already moved past it, and this consumer never sees it.
//!
//! Your task: change `poll` (only this file) until `cargo labs check log-sleuth` passes.
//!
//! Hints, one at a time:
//! 1. Every row knows the transaction that wrote it: `transaction_id` (xid8, filled by
//!    `pg_current_xact_id()`). `pg_snapshot_xmin(pg_current_snapshot())` is the oldest transaction
//!    still running: no transaction below it can commit anything new.
//! 2. Read only below that watermark, in (transaction_id, position) order, after the checkpoint
//!    pair `after.transaction_id`, `after.position` (a row comparison does this in one condition).
//! 3. The checkpoint's transaction id binds as a `TransactionId` parameter (xid8).

use tokio_postgres::Client;

use super::{Checkpoint, EventRow};

pub async fn poll(client: &Client, after: &Checkpoint) -> Result<Vec<EventRow>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT position, transaction_id, event_id, stream_id, version, type
               FROM events
              WHERE position > $1
              ORDER BY position
              LIMIT 100",
            &[&after.position],
        )
        .await?;
    Ok(rows.iter().map(EventRow::from_row).collect())
}
