//! The reference event store every lab builds on: the schema (`schema.sql`) and the Rust types
//! that read and write it.

use std::fmt;

use bytes::BytesMut;
use postgres_types::{FromSql, IsNull, ToSql, Type};

/// The events table with its indexes, commented in the file.
pub const SCHEMA_SQL: &str = include_str!("schema.sql");

/// Creates the events table in the connected database.
pub async fn install(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(SCHEMA_SQL).await
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
