//! Bulk ingestion: many streams in one transaction over COPY, with the guarantees of
//! `append_to_stream` (expected versions checked under the same per-stream locks, taken before
//! the transaction's first write, unique event ids, idempotent retries, the watermark column
//! filled in by its default, the cluster guard).
//!
//! Why not call `append_to_stream` in a loop: each call is a round trip and a plpgsql insert.
//! COPY streams rows to the server in one command, the fastest way in (populate.html: "almost
//! always faster than using INSERT"). The checks cost three statements per bulk, not per event.

use std::collections::HashMap;

use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;
use uuid::Uuid;

use super::{ExpectedVersion, NewEvent, StoreError};

/// The events for one stream in a bulk append.
#[derive(Clone, Debug)]
pub struct StreamAppend {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// Appends every stream's events in one transaction: all or none. Returns each stream's version
/// after the append, in the order given. A stream may appear once per bulk.
pub async fn append_bulk(client: &mut Client, appends: &[StreamAppend]) -> Result<Vec<i64>, StoreError> {
    let db = |context: &str| {
        let context = context.to_string();
        move |source| StoreError::Database { context: context.clone(), source }
    };
    let mut seen = std::collections::HashSet::new();
    for a in appends {
        if a.events.is_empty() {
            return Err(StoreError::Empty(a.stream_id.clone()));
        }
        if !seen.insert(a.stream_id.as_str()) {
            return Err(StoreError::StreamRepeated(a.stream_id.clone()));
        }
    }
    let streams: Vec<&str> = appends.iter().map(|a| a.stream_id.as_str()).collect();
    let tx = client.transaction().await.map_err(db("bulk append: BEGIN"))?;

    // The same per-stream locks as append_to_stream, through lock_streams: taken in one order
    // (sorted keys) so two bulks over overlapping streams cannot deadlock, before the COPY gives
    // the transaction its id (the order rule, schema.sql), and after the cluster guard.
    super::append::lock_streams(&tx, &streams).await?;

    // A retried bulk: each stream's first event is already stored. Those streams are checked
    // event by event and skipped; the original versions are returned for them.
    let first_ids: Vec<Uuid> = appends.iter().map(|a| a.events[0].event_id).collect();
    let stored_first: HashMap<Uuid, (String, i64)> = tx
        .query("SELECT event_id, stream_id, version FROM events WHERE event_id = ANY($1)", &[&first_ids])
        .await
        .map_err(db("bulk append: looking for a retry"))?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();

    let current: HashMap<String, i64> = tx
        .query(
            // One backward index probe per stream, however long the streams are.
            "SELECT s, (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = s) FROM unnest($1::text[]) AS s",
            &[&streams],
        )
        .await
        .map_err(db("bulk append: reading stream versions"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    let mut versions = Vec::with_capacity(appends.len());
    let mut to_write: Vec<(&StreamAppend, i64)> = Vec::new();
    for a in appends {
        let n = a.events.len() as i64;
        if let Some((stream, first_version)) = stored_first.get(&a.events[0].event_id) {
            check_retry(&tx, a, stream, *first_version).await?;
            versions.push(first_version + n - 1);
            continue;
        }
        let actual = current.get(&a.stream_id).copied().unwrap_or(0);
        if let Some(expected) = a.expected.to_sql_value() {
            if expected != actual {
                return Err(StoreError::VersionConflict {
                    stream_id: a.stream_id.clone(),
                    expected: a.expected,
                    actual,
                });
            }
        }
        versions.push(actual + n);
        to_write.push((a, actual));
    }

    if !to_write.is_empty() {
        let all_ids: Vec<Uuid> = to_write.iter().flat_map(|(a, _)| a.events.iter().map(|e| e.event_id)).collect();
        let copied = copy_events(&tx, &to_write);
        copied.await.map_err(|e| StoreError::from_db(e, "bulk append: COPY", ExpectedVersion::Any, &all_ids))?;
        // One wake-up per bulk: the cluster-wide NOTIFY lock is taken once, not per event.
        super::append::notify_appended(&tx).await.map_err(db("bulk append: NOTIFY"))?;
    }
    tx.commit().await.map_err(db("bulk append: COMMIT"))?;
    Ok(versions)
}

/// COPYs each stream's events into `events` as versions `base + 1`, `base + 2`, ...: the one
/// COPY of the store, used by the bulk path and, with no checks around it, by the benchmark's
/// plain-COPY ceiling, so the two differ only in the checks.
pub(crate) async fn copy_events(
    tx: &tokio_postgres::Transaction<'_>,
    streams: &[(&StreamAppend, i64)],
) -> Result<(), tokio_postgres::Error> {
    let sink = tx
        .copy_in("COPY events (event_id, stream_id, version, type, data, metadata) FROM STDIN (FORMAT binary)")
        .await?;
    let writer =
        BinaryCopyInWriter::new(sink, &[Type::UUID, Type::TEXT, Type::INT8, Type::TEXT, Type::JSONB, Type::JSONB]);
    pin_mut!(writer);
    for (a, base) in streams {
        for (i, e) in a.events.iter().enumerate() {
            let version = base + i as i64 + 1;
            let row: [&(dyn ToSql + Sync); 6] =
                [&e.event_id, &a.stream_id, &version, &e.event_type, &e.data, &e.metadata];
            writer.as_mut().write(&row).await?;
        }
    }
    writer.as_mut().finish().await.map(|_| ())
}

/// A stream whose first event is stored: the whole append must be stored as sent, in place.
async fn check_retry(
    tx: &tokio_postgres::Transaction<'_>,
    a: &StreamAppend,
    stored_stream: &str,
    first_version: i64,
) -> Result<(), StoreError> {
    let ids: Vec<Uuid> = a.events.iter().map(|e| e.event_id).collect();
    let rows = tx
        .query(
            "SELECT event_id, stream_id, version, type, data, metadata FROM events WHERE event_id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(|source| StoreError::Database { context: "bulk append: checking a retry".into(), source })?;
    let stored: HashMap<Uuid, (String, i64, String, serde_json::Value, serde_json::Value)> =
        rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))).collect();
    for (i, e) in a.events.iter().enumerate() {
        let expected =
            (a.stream_id.clone(), first_version + i as i64, e.event_type.clone(), e.data.clone(), e.metadata.clone());
        if stored.get(&e.event_id) != Some(&expected) {
            return Err(StoreError::EventIdReused {
                event_id: a.events[0].event_id,
                detail: format!(
                    "event {} is stored (stream {stored_stream}, version {first_version}), but this bulk's events for {} differ from what was stored",
                    a.events[0].event_id, a.stream_id
                ),
            });
        }
    }
    Ok(())
}
