//! Appending to one stream through the contract's `append_to_stream` (schema.sql), where the
//! version check, the per-stream lock and the idempotent retry live.

use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::{ExpectedVersion, NewEvent, StoreError};

/// The contract's append, as the server runs it. Public so the conformance checks call an
/// attendee's function exactly as the store calls its own.
pub const APPEND_SQL: &str = "SELECT append_to_stream($1, $2, $3, $4, $5, $6)";

/// Appends `events` to `stream_id` in one statement: all of them or none. Returns the stream's
/// version after the append. Run it on a `Transaction` to append to several streams atomically
/// (a transfer debits one account and credits another).
///
/// Sending the same events again after a lost acknowledgement returns the same version and
/// writes nothing; reusing an event id for other content is [`StoreError::EventIdReused`].
pub async fn append(
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
    // Typed parameters: parse, bind and execute in one round trip instead of two.
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

/// Sends a wake-up to subscribed consumers. Call it in the appending transaction, if at all:
/// every notifying transaction takes one cluster-wide lock at commit, so notifying on every
/// append serialises the commits that group commit would otherwise batch.
pub async fn notify_appended(client: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
    client.execute("SELECT pg_notify($1, '')", &[&super::NOTIFY_CHANNEL]).await.map(|_| ())
}
