//! The reference event store every lab builds on. The guarantees live in SQL (`schema.sql`):
//! the events table and the two functions of the store's contract, `append_to_stream` and
//! `read_all_after`. This module is the typed Rust API over them, plus what SQL alone cannot do:
//!
//! - [`append`]: one stream, one or many events, with an [`ExpectedVersion`]; a conflict is a
//!   typed [`StoreError::VersionConflict`], a client retry of the same events is idempotent. A
//!   single event takes a fast path (`fast_append.sql`) that falls back to `append_to_stream`
//!   for anything but a plain success. [`lock_streams`] starts a transaction that appends to
//!   several streams (the order rule in schema.sql).
//! - [`bulk`]: bulk ingestion over COPY, with the same guarantees.
//! - [`read`]: one stream forward, and all streams behind the transaction-id watermark, from a
//!   [`Checkpoint`] that names the cluster its transaction id belongs to.
//! - [`subscription`]: consumers that store their checkpoint in the same transaction as their
//!   projection, wake on LISTEN/NOTIFY, poll anyway, and can run as competing instances.
//! - [`conformance`]: the checks `labs schema verify` runs against any schema that implements
//!   the contract, this one included.
//! - [`bench`]: `labs bench store`, appends and reads against the COPY and INSERT ceilings, and
//!   [`pgbench`], the same appends as prepared statements on the server, decomposed.

pub mod append;
pub mod bench;
pub mod bulk;
pub mod conformance;
pub mod pgbench;
pub mod read;
pub mod subscription;

use std::fmt;

use bytes::BytesMut;
use postgres_types::{FromSql, IsNull, ToSql, Type};
use serde::Serialize;
use uuid::Uuid;

pub use append::{append, lock_streams};
pub use bulk::{append_bulk, StreamAppend};
pub use read::{read_all_after, read_stream, Checkpoint, RecordedEvent};

/// The events table, the contract's functions and the subscriptions table, commented in the file.
pub const SCHEMA_SQL: &str = include_str!("schema.sql");

/// The NOTIFY channel a store's writers may signal after appending. A hint only: consumers poll
/// anyway, because a notification can arrive before the watermark lets its events through.
pub const NOTIFY_CHANNEL: &str = "events_appended";

/// Creates the store's tables and functions in the connected database.
pub async fn install(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(SCHEMA_SQL).await
}

/// What the writer believes the stream's version is; the append fails when it is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "version")]
pub enum ExpectedVersion {
    /// No check: for events that do not depend on the stream's state.
    Any,
    /// The stream must not exist yet (version 0).
    NoStream,
    /// The stream must be at exactly this version.
    Exact(i64),
}

impl ExpectedVersion {
    /// The contract's encoding: NULL any, 0 no stream, N exactly N.
    pub fn to_sql_value(self) -> Option<i64> {
        match self {
            ExpectedVersion::Any => None,
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(n) => Some(n),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(n) => write!(f, "{n}"),
        }
    }
}

/// An event to append. The id is the client's: the same id sent again is the same event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub data: serde_json::Value,
    pub metadata: serde_json::Value,
}

impl NewEvent {
    pub fn new(event_id: Uuid, event_type: impl Into<String>, data: serde_json::Value) -> NewEvent {
        NewEvent { event_id, event_type: event_type.into(), data, metadata: serde_json::json!({}) }
    }
}

/// Errors a caller branches on: a conflict is retried after reloading, a reused id is a bug in
/// the client, anything else is the database's.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("wrong expected version for stream {stream_id}: expected {expected}, actual {actual}")]
    VersionConflict { stream_id: String, expected: ExpectedVersion, actual: i64 },
    #[error("event {event_id} is already stored with other content, stream or place: {detail}")]
    EventIdReused { event_id: Uuid, detail: String },
    #[error("no events to append to stream {0}")]
    Empty(String),
    #[error("bulk append: stream {0} appears twice; put all its events in one StreamAppend")]
    StreamRepeated(String),
    #[error("bad checkpoint: {0}")]
    BadCheckpoint(String),
    /// The order rule (schema.sql): a transaction that has written already appended to a stream
    /// it had not locked first.
    #[error(
        "stream {stream_id} was not locked before this transaction's first write: start the transaction with \
         store::lock_streams(every stream it appends to), before anything in it writes"
    )]
    StreamNotLocked { stream_id: String },
    /// The stored transaction ids, or a checkpoint, belong to another cluster (a dump and
    /// restore, a logical replica, pg_upgrade): reading or writing on would skip events.
    #[error("{message} ({hint})")]
    OtherCluster { message: String, hint: String },
    #[error("subscription {0} does not exist: create it first")]
    NoSubscription(String),
    #[error("subscription {0}: its checkpoint moved while this instance held the subscription's lock")]
    CheckpointMoved(String),
    #[error("{context}: {}", server_message(source))]
    Database {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// `labs bench store` could not run a tool it needs (pgbench), or write its scripts.
    #[error("labs bench store: {0}")]
    Bench(String),
    /// `labs schema verify` and `labs bench store` start their own servers.
    #[error(transparent)]
    Provider(#[from] crate::pg::ProviderError),
}

/// The server's message and SQLSTATE (`message (SQLSTATE 23505)`), or the client's error when the
/// server said nothing (a lost connection).
pub fn server_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The contract's SQLSTATEs (schema.sql).
pub const SQLSTATE_VERSION_CONFLICT: &str = "ES409";
pub const SQLSTATE_EVENT_ID_REUSED: &str = "ES422";
/// The reference store's own: a stream locked after the transaction's first write.
pub const SQLSTATE_STREAM_NOT_LOCKED: &str = "ES428";
/// The reference store's own: transaction ids or a checkpoint from another cluster.
pub const SQLSTATE_OTHER_CLUSTER: &str = "ES421";

impl StoreError {
    /// `map_err(StoreError::db("what the store was doing"))`. The store's own SQLSTATEs become
    /// their typed errors, whatever statement raised them.
    pub fn db(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::from_db(source, context, ExpectedVersion::Any, &[])
    }

    /// Turns the server's error into the typed one, reading the contract's SQLSTATEs and the
    /// JSON in their DETAIL.
    pub fn from_db(
        source: tokio_postgres::Error,
        context: impl Into<String>,
        expected: ExpectedVersion,
        event_ids: &[Uuid],
    ) -> StoreError {
        if let Some(db) = source.as_db_error() {
            let detail: serde_json::Value = db.detail().and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default();
            match db.code().code() {
                SQLSTATE_VERSION_CONFLICT => {
                    return StoreError::VersionConflict {
                        stream_id: detail["stream_id"].as_str().unwrap_or_default().to_string(),
                        expected,
                        actual: detail["actual"].as_i64().unwrap_or(-1),
                    }
                }
                SQLSTATE_EVENT_ID_REUSED => {
                    let event_id = detail["event_id"].as_str().and_then(|s| s.parse().ok()).unwrap_or_default();
                    return StoreError::EventIdReused { event_id, detail: db.message().to_string() };
                }
                SQLSTATE_STREAM_NOT_LOCKED => {
                    let stream_id = detail["stream_id"].as_str().unwrap_or("(every stream)").to_string();
                    return StoreError::StreamNotLocked { stream_id };
                }
                SQLSTATE_OTHER_CLUSTER => {
                    return StoreError::OtherCluster {
                        message: db.message().to_string(),
                        hint: db.hint().unwrap_or_default().to_string(),
                    }
                }
                // An id stored by another append, met past the first event of this one.
                "23505" if db.constraint() == Some("events_event_id_key") => {
                    let event_id = db
                        .detail()
                        .and_then(|d| d.split('(').nth(2))
                        .and_then(|s| s.split(')').next())
                        .and_then(|s| s.parse().ok())
                        .or_else(|| event_ids.first().copied())
                        .unwrap_or_default();
                    return StoreError::EventIdReused { event_id, detail: db.detail().unwrap_or_default().to_string() };
                }
                _ => {}
            }
        }
        StoreError::Database { context: context.into(), source }
    }

    /// Whether reloading the stream and deciding again can succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::VersionConflict { .. })
    }
}

/// A cluster's system identifier (`pg_control_system()`): chosen by initdb, shared by the
/// physical standbys made from it, different after a dump and restore, a logical migration or
/// pg_upgrade. Transaction ids compare only under one. 0 is no cluster (the start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct SystemIdentifier(pub i64);

impl fmt::Display for SystemIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A PostgreSQL 64-bit transaction id (`xid8`, from `pg_current_xact_id()`): it never wraps
/// around, so it can be stored and compared for ever.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct TransactionId(pub u64);

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

// tokio-postgres has no xid8 mapping; its binary form is an unsigned 64-bit big-endian integer.
impl<'a> FromSql<'a> for TransactionId {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let bytes: [u8; 8] = raw.try_into().map_err(|_| format!("xid8 must be 8 bytes, got {}", raw.len()))?;
        Ok(TransactionId(u64::from_be_bytes(bytes)))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::XID8
    }
}

impl ToSql for TransactionId {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0.to_be_bytes());
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::XID8
    }
    postgres_types::to_sql_checked!();
}
