//! Subscriptions: a named consumer that reads all streams behind the watermark and feeds a
//! projection, exactly once for the projection's writes in this database.
//!
//! - The checkpoint lives in `subscriptions` and is updated in the same transaction as the
//!   projection's writes: both commit or neither does, so a crash never re-applies or loses a batch.
//! - One active instance per subscription: each batch starts with `pg_try_advisory_xact_lock`.
//!   Competing instances of the same subscription take turns, batch by batch; the one that does
//!   not get the lock stands by. Nothing is held between batches, so a dead instance blocks no one.
//! - LISTEN/NOTIFY is a hint that wakes a waiting consumer early; it polls anyway, because a
//!   notification can arrive before the watermark lets its events through, and writers need not
//!   notify at all.

use std::time::Duration;

use futures_util::stream::poll_fn;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, Transaction};

use super::read::{Checkpoint, RecordedEvent};
use super::StoreError;

/// Advisory locks in the two-key space (class, hash of the name) never collide with the
/// one-key stream locks of `append_to_stream`: PostgreSQL keeps the two key spaces apart.
const SUBSCRIPTION_LOCK_CLASS: i32 = 3;

/// A named subscription, how much it reads at a time, and through what.
#[derive(Clone, Debug)]
pub struct Subscription {
    pub name: String,
    pub batch_size: i32,
    pub reader: Reader,
}

/// How a subscription reads all streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// The store's typed reader (read.rs): the reference.
    Store,
    /// Whatever `read_all_after` function the database has: the contract as written in SQL,
    /// or a replacement under test (the harness swaps in a position reader to show it skips).
    ContractFunction,
}

/// What one call of [`Subscription::process_batch`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Batch {
    /// Projected this many events and stored the checkpoint after the last one.
    Processed(usize),
    /// Nothing past the checkpoint is readable yet.
    CaughtUp,
    /// Another instance of this subscription holds it right now.
    Standby,
}

impl Subscription {
    pub fn new(name: impl Into<String>) -> Subscription {
        Subscription { name: name.into(), batch_size: 500, reader: Reader::Store }
    }

    /// Registers the subscription (once; later calls leave its checkpoint alone).
    pub async fn create(&self, client: &Client) -> Result<(), StoreError> {
        client
            .execute("INSERT INTO subscriptions (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", &[&self.name])
            .await
            .map_err(|source| StoreError::Database {
                context: format!("creating subscription {}", self.name),
                source,
            })?;
        Ok(())
    }

    /// The stored checkpoint (None: nothing processed yet).
    pub async fn checkpoint(&self, client: &Client) -> Result<Option<Checkpoint>, StoreError> {
        let row = client
            .query_opt("SELECT checkpoint FROM subscriptions WHERE name = $1", &[&self.name])
            .await
            .map_err(StoreError::db(format!("reading subscription {}", self.name)))?;
        row.and_then(|r| r.get::<_, Option<String>>(0)).map(|text| text.parse()).transpose()
    }

    /// Reads the next batch and hands it to `project` inside one transaction that also stores
    /// the new checkpoint. An error from `project` rolls back both.
    pub async fn process_batch(
        &self,
        client: &mut Client,
        project: impl AsyncFnOnce(&Transaction<'_>, &[RecordedEvent]) -> Result<(), tokio_postgres::Error>,
    ) -> Result<Batch, StoreError> {
        let db = |context: &'static str| {
            move |source| StoreError::Database { context: format!("subscription {}: {context}", self.name), source }
        };
        let tx = client.transaction().await.map_err(db("BEGIN"))?;
        // No row lock and no write before the read: this transaction has no transaction id
        // until the projection writes, so it does not hold back its own watermark.
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1, hashtext($2))", &[&SUBSCRIPTION_LOCK_CLASS, &self.name])
            .await
            .map_err(db("taking the subscription's lock"))?
            .get(0);
        if !locked {
            return Ok(Batch::Standby);
        }
        // A fresh statement after the lock: it sees the checkpoint the previous holder committed.
        let checkpoint: Option<String> = tx
            .query_opt("SELECT checkpoint FROM subscriptions WHERE name = $1", &[&self.name])
            .await
            .map_err(db("reading the checkpoint"))?
            .ok_or_else(|| StoreError::NoSubscription(self.name.clone()))?
            .get(0);
        // The table keeps the contract's text form; parsed here, written back from the type.
        let after: Checkpoint = checkpoint.as_deref().map(str::parse).transpose()?.unwrap_or(Checkpoint::START);
        let events: Vec<RecordedEvent> = match self.reader {
            Reader::Store => super::read::read_all_after(&tx, after, self.batch_size).await?,
            Reader::ContractFunction => tx
                .query(super::read::READ_ALL_SQL, &[&checkpoint, &self.batch_size])
                .await
                .map_err(db("reading events"))?
                .iter()
                .map(RecordedEvent::from_contract_row)
                .collect::<Result<_, _>>()?,
        };
        let Some(last) = events.last() else {
            return Ok(Batch::CaughtUp);
        };
        project(&tx, &events).await.map_err(db("projecting"))?;
        // Compare-and-set: had another instance moved the checkpoint (it cannot while we hold
        // the lock), this fails loudly instead of applying a batch twice.
        let moved = tx
            .execute(
                "UPDATE subscriptions SET checkpoint = $2, updated_at = clock_timestamp()
                 WHERE name = $1 AND checkpoint IS NOT DISTINCT FROM $3",
                &[&self.name, &last.checkpoint.to_string(), &checkpoint],
            )
            .await
            .map_err(db("storing the checkpoint"))?;
        if moved != 1 {
            return Err(StoreError::CheckpointMoved(self.name.clone()));
        }
        tx.commit().await.map_err(db("COMMIT"))?;
        Ok(Batch::Processed(events.len()))
    }
}

/// A connection that LISTENs for the store's wake-ups. Each notification sends `()` on the
/// receiver; the receiver closes when the connection ends.
pub async fn listen(
    config: &tokio_postgres::Config,
) -> Result<(Client, mpsc::UnboundedReceiver<()>), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (wake, wakeups) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(_) = message {
                if wake.send(()).is_err() {
                    break;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {}", super::NOTIFY_CHANNEL)).await?;
    Ok((client, wakeups))
}

/// Waits for a wake-up or the poll interval, whichever comes first; drains extra wake-ups so
/// a burst of notifications costs one extra read, not one each.
pub async fn wait_for_events(wakeups: &mut mpsc::UnboundedReceiver<()>, poll_interval: Duration) {
    tokio::select! {
        _ = wakeups.recv() => while wakeups.try_recv().is_ok() {},
        _ = tokio::time::sleep(poll_interval) => {}
    }
}
