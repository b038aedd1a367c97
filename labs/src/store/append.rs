//! Appending to one stream through the contract's `append_to_stream` (schema.sql), where the
//! version check, the per-stream lock, the order rule and the idempotent retry live; a single
//! event first tries the fast path (`fast_append.sql`), which appends only when all of that is
//! certain and otherwise leaves the decision to `append_to_stream`.

use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::{ExpectedVersion, NewEvent, StoreError};

/// The contract's append, as the server runs it. Public so the conformance checks call an
/// attendee's function exactly as the store calls its own.
pub const APPEND_SQL: &str = "SELECT append_to_stream($1, $2, $3, $4, $5, $6)";

/// The single-event fast path: one statement that appends when the expected version matches,
/// the stream's lock is free and the transaction has written nothing yet, and otherwise returns
/// no row (the file says why that keeps every guarantee).
pub const FAST_APPEND_SQL: &str = include_str!("fast_append.sql");

/// Appends `events` to `stream_id` in one statement: all of them or none. Returns the stream's
/// version after the append. Run it on a `Transaction` to append to several streams atomically
/// (a transfer debits one account and credits another), after [`lock_streams`] with all of them.
///
/// Sending the same events again after a lost acknowledgement returns the same version and
/// writes nothing; reusing an event id for other content is [`StoreError::EventIdReused`].
pub async fn append(
    client: &impl GenericClient,
    stream_id: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<i64, StoreError> {
    if let [event] = events {
        if let Some(version) = append_fast(client, stream_id, expected, event).await? {
            return Ok(version);
        }
    }
    append_with_function(client, stream_id, expected, events).await
}

/// The fast path alone: `Some(version)` when it appended, `None` when it left the decision to
/// `append_to_stream` (a conflict, a retry, a busy stream, a transaction that has written, a
/// session whose cluster is not checked yet). [`append`] calls `append_to_stream` then.
pub async fn append_fast(
    client: &impl GenericClient,
    stream_id: &str,
    expected: ExpectedVersion,
    event: &NewEvent,
) -> Result<Option<i64>, StoreError> {
    let expected_value = expected.to_sql_value();
    // Typed parameters: parse, bind and execute in one round trip.
    let row = client
        .query_typed(
            FAST_APPEND_SQL,
            &[
                (&stream_id, Type::TEXT),
                (&expected_value, Type::INT8),
                (&event.event_id, Type::UUID),
                (&event.event_type, Type::TEXT),
                (&event.data, Type::JSONB),
                (&event.metadata, Type::JSONB),
            ],
        )
        .await
        .map_err(|e| StoreError::from_db(e, format!("appending to {stream_id}"), expected, &[event.event_id]))?;
    Ok(row.first().map(|r| r.get(0)))
}

/// The single-event append for a session that appends many times: the fast path prepared once
/// on the session's connection, so the server plans it once instead of at every call (what
/// drivers with a statement cache do). [`append`] sends the statement unprepared, in one round
/// trip, and the server plans it every time.
pub struct Appender {
    fast: tokio_postgres::Statement,
}

impl Appender {
    /// Prepares the fast path on `client`'s connection. Use the appender only with that
    /// connection (or a transaction on it): a prepared statement lives in one session.
    pub async fn prepare(client: &impl GenericClient) -> Result<Appender, StoreError> {
        let types = [Type::TEXT, Type::INT8, Type::UUID, Type::TEXT, Type::JSONB, Type::JSONB];
        let fast = client
            .prepare_typed(FAST_APPEND_SQL, &types)
            .await
            .map_err(StoreError::db("preparing the fast path (fast_append.sql)"))?;
        Ok(Appender { fast })
    }

    /// [`append`] of one event through the prepared fast path, falling back to
    /// `append_to_stream` as `append` does.
    pub async fn append(
        &self,
        client: &impl GenericClient,
        stream_id: &str,
        expected: ExpectedVersion,
        event: &NewEvent,
    ) -> Result<i64, StoreError> {
        let expected_value = expected.to_sql_value();
        let rows = client
            .query(
                &self.fast,
                &[&stream_id, &expected_value, &event.event_id, &event.event_type, &event.data, &event.metadata],
            )
            .await
            .map_err(|e| StoreError::from_db(e, format!("appending to {stream_id}"), expected, &[event.event_id]))?;
        match rows.first() {
            Some(row) => Ok(row.get(0)),
            None => append_with_function(client, stream_id, expected, std::slice::from_ref(event)).await,
        }
    }
}

/// Every append through `append_to_stream`, the contract's function.
pub async fn append_with_function(
    client: &impl GenericClient,
    stream_id: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<i64, StoreError> {
    if events.is_empty() {
        return Err(StoreError::Empty(stream_id.to_string()));
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let data: Vec<&serde_json::Value> = events.iter().map(|e| &e.data).collect();
    let metadata: Vec<&serde_json::Value> = events.iter().map(|e| &e.metadata).collect();
    let expected_value = expected.to_sql_value();
    let row = client
        .query_typed_one(
            APPEND_SQL,
            &[
                (&stream_id, Type::TEXT),
                (&expected_value, Type::INT8),
                (&ids, Type::UUID_ARRAY),
                (&types, Type::TEXT_ARRAY),
                (&data, Type::JSONB_ARRAY),
                (&metadata, Type::JSONB_ARRAY),
            ],
        )
        .await
        .map_err(|e| StoreError::from_db(e, format!("appending to {stream_id}"), expected, &ids))?;
    Ok(row.get(0))
}

/// Takes the locks of every stream a transaction is about to append to, in one order (so two
/// transactions over the same streams cannot deadlock). Call it first in the transaction, before
/// anything writes: the order rule of schema.sql refuses an append to a stream locked after the
/// transaction's first write ([`StoreError::StreamNotLocked`]), and this call too once the
/// transaction has written.
pub async fn lock_streams(client: &impl GenericClient, stream_ids: &[&str]) -> Result<(), StoreError> {
    let named = stream_ids.join(", ");
    match client.query_typed("SELECT lock_streams($1)", &[(&stream_ids, Type::TEXT_ARRAY)]).await {
        Ok(_) => Ok(()),
        Err(e) => Err(match StoreError::db(format!("locking streams {named}"))(e) {
            StoreError::StreamNotLocked { .. } => StoreError::StreamNotLocked { stream_id: named },
            other => other,
        }),
    }
}

/// Sends a wake-up to subscribed consumers. Call it in the appending transaction, if at all:
/// every notifying transaction takes one cluster-wide lock at commit, so notifying on every
/// append serialises the commits that group commit would otherwise batch.
pub async fn notify_appended(client: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
    client.execute("SELECT pg_notify($1, '')", &[&super::NOTIFY_CHANNEL]).await.map(|_| ())
}
