//! The outbox's two sides: a writer that appends to the reference store and writes the outbox row
//! in the same transaction, and the three relays that read it (a position cursor, the xid8
//! watermark, a logical replication slot).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;
use tokio_postgres::{Client, GenericClient};
use uuid::Uuid;

use crate::error::LabError;
use crate::store::{self, ExpectedVersion, NewEvent, TransactionId};

/// The outbox table (outbox.sql).
pub const OUTBOX_SQL: &str = include_str!("outbox.sql");

/// The logical decoding output plugin every slot of this activity uses: in core, and its text
/// output reads in SQL (`pg_logical_slot_peek_changes`).
pub const PLUGIN: &str = "test_decoding";

/// Installs the reference store and the outbox in the connected database.
pub async fn install(client: &Client) -> Result<(), LabError> {
    store::install(client).await.map_err(LabError::db("installing the reference store"))?;
    client.batch_execute(OUTBOX_SQL).await.map_err(LabError::db("creating the outbox table"))
}

/// One order event as the service writes it: to its stream in the store, and to the outbox.
#[derive(Clone, Debug)]
pub struct OrderEvent {
    pub event_id: Uuid,
    pub stream: String,
    pub version: i64,
    pub event_type: String,
    pub payload: serde_json::Value,
}

impl OrderEvent {
    /// `OrderPlaced` or `OrderCancelled` for `qty` units of `sku`; the id is derived from the
    /// order number and version, so a rerun writes the same ids.
    pub fn new(order: u32, version: i64, event_type: &str, sku: &str, qty: i64) -> OrderEvent {
        OrderEvent {
            event_id: Uuid::from_u128((0x0b0c_u128 << 112) | (u128::from(order) << 16) | version as u128),
            stream: format!("order-{order}"),
            version,
            event_type: event_type.to_string(),
            payload: json!({ "sku": sku, "qty": qty }),
        }
    }

    /// `order-1001 v1 OrderPlaced`.
    pub fn describe(&self) -> String {
        format!("{} v{} {}", self.stream, self.version, self.event_type)
    }
}

/// Appends `event` to its stream through the store, then writes its outbox row, in the caller's
/// transaction. The append comes first: it takes the stream's lock before this transaction's
/// first write (the store refuses a transaction that already wrote). Returns the outbox id.
pub async fn write(client: &impl GenericClient, event: &OrderEvent) -> Result<i64, LabError> {
    let expected =
        if event.version == 1 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(event.version - 1) };
    let stored = NewEvent::new(event.event_id, &event.event_type, event.payload.clone());
    store::append(client, &event.stream, expected, &[stored]).await?;
    let row = client
        .query_one(
            "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, type, payload)
             VALUES ($1, 'order', $2, $3, $4, $5) RETURNING id",
            &[&event.event_id, &event.stream, &event.version, &event.event_type, &event.payload],
        )
        .await
        .map_err(LabError::db(format!("writing the outbox row of {}", event.describe())))?;
    Ok(row.get(0))
}

/// An outbox row as a relay hands it on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    pub id: i64,
    pub event_id: Uuid,
    pub stream: String,
    pub version: i64,
    pub event_type: String,
    pub payload: serde_json::Value,
}

/// The ways of reading the outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelayKind {
    /// `WHERE id > last ORDER BY id`: what most hand-rolled relays do first.
    Naive,
    /// Behind `pg_snapshot_xmin(pg_current_snapshot())`, in `(transaction_id, id)` order.
    Watermark,
    /// Logical decoding through a replication slot: transactions in commit order.
    Slot,
}

impl RelayKind {
    pub const ALL: [RelayKind; 3] = [RelayKind::Naive, RelayKind::Watermark, RelayKind::Slot];

    pub fn name(self) -> &'static str {
        match self {
            RelayKind::Naive => "naive",
            RelayKind::Watermark => "watermark",
            RelayKind::Slot => "slot",
        }
    }

    /// One line: how it reads.
    pub fn how(self) -> &'static str {
        match self {
            RelayKind::Naive => "SELECT ... FROM outbox WHERE id > $last ORDER BY id",
            RelayKind::Watermark => {
                "WHERE (transaction_id, id) > $last AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
            }
            RelayKind::Slot => "pg_logical_slot_peek_changes (test_decoding), then pg_replication_slot_advance",
        }
    }
}

const NAIVE_SQL: &str = "SELECT id, event_id, aggregate_id, aggregate_version, type, payload
    FROM outbox WHERE id > $1 ORDER BY id LIMIT 100";

/// The watermark relay's read (watermark_relay.sql; the chapter runs the same file).
const WATERMARK_SQL: &str = include_str!("watermark_relay.sql");

/// Where a relay resumes; saved after it has handed a batch on.
#[derive(Clone, Debug, PartialEq)]
enum Cursor {
    Id(i64),
    Watermark(TransactionId, i64),
    /// A slot keeps its own position on the server (confirmed_flush_lsn): the relay confirms it
    /// with pg_replication_slot_advance after handing a batch on.
    Slot {
        confirm_up_to: Option<String>,
    },
}

/// A relay: a session, a cursor, and for the slot relay the slot's name.
pub struct Relay {
    pub kind: RelayKind,
    client: Client,
    slot: String,
    /// Saved: where a restarted relay resumes.
    saved: Cursor,
    /// After the last poll, not yet saved.
    pending: Option<Cursor>,
}

impl Relay {
    /// A relay on its own session. The slot relay's slot must exist ([`create_slot`]).
    pub fn new(kind: RelayKind, client: Client, slot: &str) -> Relay {
        let saved = match kind {
            RelayKind::Naive => Cursor::Id(0),
            RelayKind::Watermark => Cursor::Watermark(TransactionId(0), 0),
            RelayKind::Slot => Cursor::Slot { confirm_up_to: None },
        };
        Relay { kind, client, slot: slot.to_string(), saved, pending: None }
    }

    /// Reads what the relay would hand on now, from its saved cursor. Call [`Relay::save`] once the
    /// batch has been handed on; a relay that crashes before that reads the same batch again.
    pub async fn poll(&mut self) -> Result<Vec<Message>, LabError> {
        let what = format!("the {} relay's poll", self.kind.name());
        let (messages, next) = match &self.saved {
            Cursor::Id(last) => {
                let rows = self.client.query(NAIVE_SQL, &[last]).await.map_err(LabError::db(what))?;
                let messages: Vec<Message> = rows.iter().map(message_of).collect();
                let next = messages.last().map_or(*last, |m| m.id);
                (messages, Cursor::Id(next))
            }
            Cursor::Watermark(xid, id) => {
                let rows = self.client.query(WATERMARK_SQL, &[xid, id]).await.map_err(LabError::db(what))?;
                let next = rows.last().map_or(Cursor::Watermark(*xid, *id), |r| Cursor::Watermark(r.get(6), r.get(0)));
                (rows.iter().map(message_of).collect(), next)
            }
            Cursor::Slot { .. } => {
                let changes = peek_changes(&self.client, &self.slot).await?;
                let confirm_up_to = changes.commit_lsn.clone();
                (changes.messages, Cursor::Slot { confirm_up_to })
            }
        };
        self.pending = Some(next);
        Ok(messages)
    }

    /// Saves the cursor of the last poll: the batch has been handed on. For the slot relay, the
    /// slot's confirmed position moves past the transactions it decoded.
    pub async fn save(&mut self) -> Result<(), LabError> {
        let Some(next) = self.pending.take() else { return Ok(()) };
        if let Cursor::Slot { confirm_up_to: Some(lsn) } = &next {
            self.client
                .execute("SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)", &[&self.slot, lsn])
                .await
                .map_err(LabError::db(format!("confirming slot {} up to {lsn}", self.slot)))?;
        }
        self.saved = next;
        Ok(())
    }

    /// Forgets the last poll without saving it: a relay that crashed after handing the batch on.
    pub fn crash(&mut self) {
        self.pending = None;
    }

    /// The slot relay's lag: WAL written since the slot's confirmed position, in bytes.
    pub async fn slot_lag_bytes(&self) -> Result<Option<i64>, LabError> {
        if self.kind != RelayKind::Slot {
            return Ok(None);
        }
        let row = self
            .client
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
                   FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.slot],
            )
            .await
            .map_err(LabError::db(format!("reading slot {}'s lag", self.slot)))?;
        Ok(row.get(0))
    }
}

fn message_of(row: &tokio_postgres::Row) -> Message {
    Message {
        id: row.get(0),
        event_id: row.get(1),
        stream: row.get(2),
        version: row.get(3),
        event_type: row.get(4),
        payload: row.get(5),
    }
}

/// Creates a logical replication slot with [`PLUGIN`]. It waits for every transaction already
/// holding a transaction id to end (the slot needs a consistent starting point): create it before
/// any writer opens one.
pub async fn create_slot(client: &Client, slot: &str) -> Result<(), LabError> {
    client
        .execute("SELECT pg_create_logical_replication_slot($1, $2)", &[&slot, &PLUGIN])
        .await
        .map_err(LabError::db(format!("creating the logical replication slot {slot}")))?;
    Ok(())
}

/// What one read of a slot returned: the outbox inserts, in commit order, and the end of the
/// last transaction read (to confirm it).
pub struct Changes {
    pub messages: Vec<Message>,
    pub commit_lsn: Option<String>,
}

/// Decoded transactions of `slot` that are not confirmed yet, without confirming them.
pub async fn peek_changes(client: &Client, slot: &str) -> Result<Changes, LabError> {
    read_changes(client, slot, false).await
}

/// The same, confirming everything read (`pg_logical_slot_get_changes`).
pub async fn get_changes(client: &Client, slot: &str) -> Result<Changes, LabError> {
    read_changes(client, slot, true).await
}

async fn read_changes(client: &Client, slot: &str, consume: bool) -> Result<Changes, LabError> {
    // skip-empty-xacts: transactions that wrote nothing decodable (the slot's own bookkeeping).
    let sql = if consume {
        "SELECT lsn::text, data FROM pg_logical_slot_get_changes($1, NULL, NULL, 'include-xids', '0', 'skip-empty-xacts', '1')"
    } else {
        "SELECT lsn::text, data FROM pg_logical_slot_peek_changes($1, NULL, NULL, 'include-xids', '0', 'skip-empty-xacts', '1')"
    };
    let rows = client.query(sql, &[&slot]).await.map_err(LabError::db(format!("reading slot {slot}")))?;
    let mut messages = Vec::new();
    let mut commit_lsn = None;
    for row in &rows {
        let lsn: String = row.get(0);
        let data: &str = row.get(1);
        if data == "COMMIT" {
            // The COMMIT line carries the end of the commit record: confirming up to it
            // confirms the whole transaction.
            commit_lsn = Some(lsn);
        } else if let Some(columns) = data.strip_prefix("table public.outbox: INSERT: ") {
            messages.push(decoded_message(columns).map_err(|why| {
                LabError::Script(format!("slot {slot} returned an outbox insert the relay cannot read ({why}): {data}"))
            })?);
        }
    }
    Ok(Changes { messages, commit_lsn })
}

/// What the relay could not read in a change test_decoding returned; the lab's error says it.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct UnreadableChange(String);

fn decoded_message(columns: &str) -> Result<Message, UnreadableChange> {
    let values = parse_test_decoding_columns(columns)?;
    let text = |name: &str| -> Result<&str, UnreadableChange> {
        values.get(name).and_then(|v| v.as_deref()).ok_or_else(|| UnreadableChange(format!("no column {name}")))
    };
    let number = |name: &str| -> Result<i64, UnreadableChange> {
        text(name)?.parse().map_err(|_| UnreadableChange(format!("column {name} is not a number")))
    };
    Ok(Message {
        id: number("id")?,
        event_id: text("event_id")?.parse().map_err(|_| UnreadableChange("event_id is not a uuid".into()))?,
        stream: text("aggregate_id")?.to_string(),
        version: number("aggregate_version")?,
        event_type: text("type")?.to_string(),
        payload: serde_json::from_str(text("payload")?).map_err(|e| UnreadableChange(format!("payload: {e}")))?,
    })
}

/// test_decoding's columns, `name[type]:value ...`, as name -> value (None for null). A value is
/// either a quoted literal (`'it''s'`) or a bare word (numbers, booleans, `null`).
pub fn parse_test_decoding_columns(text: &str) -> Result<BTreeMap<String, Option<String>>, UnreadableChange> {
    let mut columns = BTreeMap::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let open = rest.find('[').ok_or_else(|| UnreadableChange(format!("expected name[type] at '{rest}'")))?;
        let name = rest[..open].to_string();
        let close =
            rest[open..].find("]:").ok_or_else(|| UnreadableChange(format!("expected ]: after {name}")))? + open;
        rest = &rest[close + 2..];
        let value = if let Some(quoted) = rest.strip_prefix('\'') {
            let mut value = String::new();
            let mut chars = quoted.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if chars.peek().is_some_and(|(_, next)| *next == '\'') {
                        value.push('\'');
                        chars.next();
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    value.push(c);
                }
            }
            let end = end.ok_or_else(|| UnreadableChange(format!("unterminated value of {name}")))?;
            rest = &quoted[end..];
            Some(value)
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            let word = &rest[..end];
            rest = &rest[end..];
            (word != "null").then(|| word.to_string())
        };
        columns.insert(name, value);
        rest = rest.trim_start();
    }
    Ok(columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_decoding_columns_read_back_with_quotes_and_nulls() {
        let line = "id[bigint]:1 transaction_id[xid8]:'727' event_id[uuid]:'00000000-0000-0000-0000-000000000001' \
                    aggregate_id[text]:'order-1001' note[text]:null aggregate_version[bigint]:1 \
                    payload[jsonb]:'{\"sku\": \"sku-7\", \"note\": \"it''s\"}'";
        let columns = parse_test_decoding_columns(line).unwrap();
        assert_eq!(columns["id"].as_deref(), Some("1"));
        assert_eq!(columns["transaction_id"].as_deref(), Some("727"));
        assert_eq!(columns["aggregate_id"].as_deref(), Some("order-1001"));
        assert_eq!(columns["note"], None);
        assert_eq!(columns["payload"].as_deref(), Some("{\"sku\": \"sku-7\", \"note\": \"it's\"}"));
        assert!(parse_test_decoding_columns("id[bigint]:1 name[text]:'open").is_err());
    }
}
