//! The reference event store against a real server: typed conflicts, idempotent retries, the
//! bulk path, wake-ups, and the concurrency harness: writers racing on overlapping streams
//! while competing subscriptions project everything they read. The same harness run with a
//! reader that trusts positions must find skipped events, so it is shown to be able to fail.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use labs::pg::{ProviderConfig, Server};
use labs::rng::Rng;
use labs::store::subscription::{self, Batch, Subscription};
use labs::store::{self, append, append_bulk, read_stream, ExpectedVersion, NewEvent, StoreError, StreamAppend};
use serde_json::json;
use uuid::Uuid;

async fn fresh_store() -> Server {
    let config = ProviderConfig::from_env(None).expect("LABS_PG is valid");
    let server = Server::start(&config, &[]).await.expect("a PostgreSQL server (see `labs doctor`)");
    store::install(&server.connect().await.unwrap()).await.unwrap();
    server
}

fn deposit(n: u128, cents: i64) -> NewEvent {
    NewEvent::new(Uuid::from_u128(n), "Deposited", json!({ "amount_cents": cents }))
}

#[tokio::test]
async fn a_wrong_expected_version_is_a_typed_conflict_naming_stream_expected_and_actual() {
    let server = fresh_store().await;
    let client = server.connect().await.unwrap();
    assert_eq!(
        append(&client, "account-1", ExpectedVersion::NoStream, &[deposit(1, 100), deposit(2, 200)]).await.unwrap(),
        2
    );
    let err = append(&client, "account-1", ExpectedVersion::Exact(1), &[deposit(3, 300)]).await.unwrap_err();
    match &err {
        StoreError::VersionConflict { stream_id, expected, actual } => {
            assert_eq!((stream_id.as_str(), *expected, *actual), ("account-1", ExpectedVersion::Exact(1), 2));
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    assert!(err.is_conflict());
    assert_eq!(err.to_string(), "wrong expected version for stream account-1: expected 1, actual 2");
    let err = append(&client, "account-1", ExpectedVersion::NoStream, &[deposit(4, 1)]).await.unwrap_err();
    assert!(matches!(err, StoreError::VersionConflict { actual: 2, .. }), "{err:?}");
    assert_eq!(append(&client, "account-1", ExpectedVersion::Any, &[deposit(5, 1)]).await.unwrap(), 3);
    assert_eq!(read_stream(&client, "account-1", 1, 100).await.unwrap().len(), 3, "rejected appends wrote nothing");
    server.shutdown().await.unwrap();
}

/// The acknowledgement of a committed append is lost; the client sends the same batch again.
#[tokio::test]
async fn a_batch_resent_after_a_lost_acknowledgement_is_stored_once() {
    let server = fresh_store().await;
    let mut client = server.connect().await.unwrap();
    let batch = [deposit(10, 1), deposit(11, 2), deposit(12, 3)];
    let first = append(&client, "account-2", ExpectedVersion::NoStream, &batch).await.unwrap();
    let again = append(&client, "account-2", ExpectedVersion::NoStream, &batch).await.unwrap();
    assert_eq!((first, again), (3, 3), "the retry returns the original version");
    assert_eq!(read_stream(&client, "account-2", 1, 100).await.unwrap().len(), 3);

    // The same id with other content is the client's bug, not a retry.
    let err = append(&client, "account-2", ExpectedVersion::Any, &[deposit(10, 999)]).await.unwrap_err();
    assert!(matches!(err, StoreError::EventIdReused { event_id, .. } if event_id == Uuid::from_u128(10)), "{err:?}");
    // ...also when the reused id is not the first of its batch.
    let err = append(&client, "account-3", ExpectedVersion::Any, &[deposit(20, 1), deposit(11, 2)]).await.unwrap_err();
    assert!(matches!(err, StoreError::EventIdReused { event_id, .. } if event_id == Uuid::from_u128(11)), "{err:?}");
    assert!(read_stream(&client, "account-3", 1, 100).await.unwrap().is_empty(), "all or nothing");

    // The bulk path: the same bulk twice yields one copy and the same versions.
    let bulk = vec![
        StreamAppend {
            stream_id: "account-4".into(),
            expected: ExpectedVersion::NoStream,
            events: vec![deposit(30, 1), deposit(31, 2)],
        },
        StreamAppend {
            stream_id: "account-2".into(),
            expected: ExpectedVersion::Exact(3),
            events: vec![deposit(32, 3)],
        },
    ];
    assert_eq!(append_bulk(&mut client, &bulk).await.unwrap(), vec![2, 4]);
    assert_eq!(append_bulk(&mut client, &bulk).await.unwrap(), vec![2, 4]);
    assert_eq!(read_stream(&client, "account-4", 1, 100).await.unwrap().len(), 2);
    assert_eq!(read_stream(&client, "account-2", 1, 100).await.unwrap().len(), 4);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_bulk_with_one_stale_stream_writes_nothing() {
    let server = fresh_store().await;
    let mut client = server.connect().await.unwrap();
    append(&client, "account-5", ExpectedVersion::NoStream, &[deposit(40, 1)]).await.unwrap();
    let bulk = vec![
        StreamAppend {
            stream_id: "account-6".into(),
            expected: ExpectedVersion::NoStream,
            events: vec![deposit(41, 1)],
        },
        StreamAppend {
            stream_id: "account-5".into(),
            expected: ExpectedVersion::NoStream,
            events: vec![deposit(42, 1)],
        },
    ];
    let err = append_bulk(&mut client, &bulk).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::VersionConflict { stream_id, actual: 1, .. } if stream_id == "account-5"),
        "{err:?}"
    );
    assert!(
        read_stream(&client, "account-6", 1, 10).await.unwrap().is_empty(),
        "the other stream was not written either"
    );
    let repeated = vec![bulk[0].clone(), bulk[0].clone()];
    assert!(matches!(append_bulk(&mut client, &repeated).await, Err(StoreError::StreamRepeated(_))));
    server.shutdown().await.unwrap();
}

/// A consumer waiting with a long poll interval wakes on the bulk path's NOTIFY.
#[tokio::test]
async fn a_notification_wakes_a_waiting_subscription_before_its_poll_interval() {
    let server = fresh_store().await;
    let mut client = server.connect().await.unwrap();
    let (_listener, mut wakeups) = subscription::listen(&server.config()).await.unwrap();
    let ledger = Subscription::new("ledger");
    ledger.create(&client).await.unwrap();
    assert_eq!(ledger.process_batch(&mut client, async |_, _| Ok(())).await.unwrap(), Batch::CaughtUp);
    let mut writer = server.connect().await.unwrap();
    let started = Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let bulk = [StreamAppend {
            stream_id: "account-7".into(),
            expected: ExpectedVersion::Any,
            events: vec![deposit(50, 1)],
        }];
        append_bulk(&mut writer, &bulk).await.unwrap();
    });
    subscription::wait_for_events(&mut wakeups, Duration::from_secs(30)).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woke after {:?}: the poll interval, not the notification",
        started.elapsed()
    );
    assert_eq!(ledger.process_batch(&mut client, async |_, _| Ok(())).await.unwrap(), Batch::Processed(1));
    server.shutdown().await.unwrap();
}

/// The position-trusting reader, swapped in for the harness's run that must fail.
const NAIVE_READ_ALL: &str = "
CREATE OR REPLACE FUNCTION read_all_after(p_after text, p_max_count integer)
RETURNS TABLE (checkpoint text, event_id uuid, stream_id text, version bigint, type text, data jsonb, metadata jsonb)
LANGUAGE sql STABLE AS $$
    SELECT e.transaction_id::text || ':' || e.position || ':' || (SELECT system_identifier FROM pg_control_system()),
           e.event_id, e.stream_id, e.version, e.type, e.data, e.metadata
    FROM events e WHERE e.position > split_part(coalesce(p_after, '0:0:0'), ':', 2)::bigint
    ORDER BY e.position LIMIT p_max_count
$$;";

const PROJECTION: &str =
    "CREATE TABLE projection (seq bigserial, subscription text, event_id uuid, stream_id text, version bigint)";

struct HarnessResult {
    acknowledged: usize,
    conflicts: usize,
    /// Per subscription: (missing, delivered twice, out of stream order).
    per_subscription: BTreeMap<String, (usize, usize, usize)>,
    unacknowledged_stored: usize,
}

/// Writers append to overlapping streams with expected versions from what they loaded,
/// holding each transaction open a random moment (commits land out of order), and retry on a
/// conflict; one transaction in four is a transfer that appends to two streams. Subscriptions project every event into `projection` with their checkpoint, in the
/// same transaction: "ledger" runs as two competing instances, "audit" as one.
async fn harness(server: &Server, naive_reader: bool) -> HarnessResult {
    const WRITERS: u64 = 6;
    const APPENDS_PER_WRITER: u64 = 30;
    const STREAMS: usize = 4;
    let setup = server.connect().await.unwrap();
    setup.batch_execute(PROJECTION).await.unwrap();
    if naive_reader {
        setup.batch_execute(NAIVE_READ_ALL).await.unwrap();
    }
    let instances = [("ledger", 1), ("ledger", 2), ("audit", 1)];
    let writers_done = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    for (name, _) in instances {
        // The reference reads through the store's reader; the position reader is swapped in
        // as the database's read_all_after function.
        let reader = if naive_reader { subscription::Reader::ContractFunction } else { subscription::Reader::Store };
        let subscription = Subscription { name: name.to_string(), batch_size: 20, reader };
        subscription.create(&setup).await.unwrap();
        let mut client = server.connect().await.unwrap();
        let (_listener, mut wakeups) = subscription::listen(&server.config()).await.unwrap();
        let stop = stop.clone();
        consumers.push(tokio::spawn(async move {
            let _listener = _listener;
            while !stop.load(Ordering::SeqCst) {
                let name = subscription.name.clone();
                let batch = subscription
                    .process_batch(&mut client, async |tx, events| {
                        for e in events {
                            tx.execute(
                                "INSERT INTO projection (subscription, event_id, stream_id, version) VALUES ($1, $2, $3, $4)",
                                &[&name, &e.event_id, &e.stream_id, &e.version],
                            )
                            .await?;
                        }
                        Ok(())
                    })
                    .await
                    .unwrap();
                if batch != Batch::Processed(20) {
                    subscription::wait_for_events(&mut wakeups, Duration::from_millis(2)).await;
                }
            }
        }));
    }

    // Scripted first, so a reader that trusts positions is caught on every run: a writer takes
    // a position and holds its transaction while others commit after it.
    let late = server.connect().await.unwrap();
    late.batch_execute("BEGIN").await.unwrap();
    append(&late, "account-late", ExpectedVersion::NoStream, &[deposit(1 << 40, 1)]).await.unwrap();
    let mut acknowledged: HashSet<Uuid> = HashSet::new();
    let mut conflicts = 0;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = server.connect().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(w + 100);
            let mut ok = Vec::new();
            let mut conflicts = 0;
            for n in 0..APPENDS_PER_WRITER {
                // One transaction in four is a transfer: two streams, both locked first.
                let first = rng.below(STREAMS);
                let mut streams = vec![format!("account-{first}")];
                if rng.below(4) == 0 {
                    streams.push(format!("account-{}", (first + 1 + rng.below(STREAMS - 1)) % STREAMS));
                }
                let events: Vec<NewEvent> = (0..streams.len() as u128)
                    .map(|i| deposit(((w as u128 + 1) << 32) | (n as u128) << 1 | i, 1 + rng.below(100) as i64))
                    .collect();
                loop {
                    let mut expected = Vec::new();
                    for stream in &streams {
                        let version =
                            read_stream(&client, stream, 1, i64::MAX).await.unwrap().last().map_or(0, |e| e.version);
                        expected.push(if version == 0 {
                            ExpectedVersion::NoStream
                        } else {
                            ExpectedVersion::Exact(version)
                        });
                    }
                    client.batch_execute("BEGIN").await.unwrap();
                    if streams.len() > 1 {
                        let names: Vec<&str> = streams.iter().map(String::as_str).collect();
                        store::lock_streams(&client, &names).await.unwrap();
                    }
                    let mut appended = Ok(0);
                    for ((stream, expected), event) in streams.iter().zip(&expected).zip(&events) {
                        appended = append(&client, stream, *expected, std::slice::from_ref(event)).await;
                        if appended.is_err() {
                            break;
                        }
                    }
                    match appended {
                        Ok(_) => {
                            tokio::time::sleep(Duration::from_micros(rng.below(2_000) as u64)).await;
                            client.batch_execute("COMMIT").await.unwrap();
                            ok.extend(events.iter().map(|e| e.event_id));
                            break;
                        }
                        Err(e) if e.is_conflict() => {
                            conflicts += 1;
                            client.batch_execute("ROLLBACK").await.unwrap();
                        }
                        Err(e) => panic!("writer {w}: {e}"),
                    }
                }
            }
            (ok, conflicts)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    late.batch_execute("COMMIT").await.unwrap();
    acknowledged.insert(Uuid::from_u128(1 << 40));
    for t in tasks {
        let (ok, c) = t.await.unwrap();
        acknowledged.extend(ok);
        conflicts += c;
    }
    writers_done.store(true, Ordering::SeqCst);

    // Let the subscriptions catch up: until each has projected every acknowledged event, or
    // until nothing has moved for 3 s (a reader that skipped will never catch up).
    let mut last_count = -1i64;
    let mut last_progress = Instant::now();
    loop {
        let count: i64 = setup.query_one("SELECT count(*) FROM projection", &[]).await.unwrap().get(0);
        if count >= 2 * acknowledged.len() as i64 || last_progress.elapsed() > Duration::from_secs(3) {
            break;
        }
        if count != last_count {
            last_count = count;
            last_progress = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in consumers {
        c.await.unwrap();
    }

    let stored: HashSet<Uuid> =
        setup.query("SELECT event_id FROM events", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    let unacknowledged_stored = stored.difference(&acknowledged).count();
    let mut per_subscription = BTreeMap::new();
    for name in ["ledger", "audit"] {
        let rows = setup
            .query("SELECT event_id, stream_id, version FROM projection WHERE subscription = $1 ORDER BY seq", &[&name])
            .await
            .unwrap();
        let mut seen: HashMap<Uuid, usize> = HashMap::new();
        let mut last: HashMap<String, i64> = HashMap::new();
        let mut disorder = 0;
        for r in &rows {
            *seen.entry(r.get(0)).or_default() += 1;
            let stream: String = r.get(1);
            let version: i64 = r.get(2);
            let previous = last.insert(stream, version).unwrap_or(0);
            if version != previous + 1 {
                disorder += 1;
            }
        }
        let missing = acknowledged.iter().filter(|id| !seen.contains_key(id)).count();
        let twice = seen.values().filter(|n| **n > 1).count();
        per_subscription.insert(name.to_string(), (missing, twice, disorder));
    }
    HarnessResult { acknowledged: acknowledged.len(), conflicts, per_subscription, unacknowledged_stored }
}

#[tokio::test]
async fn racing_writers_and_competing_subscriptions_lose_nothing_and_see_nothing_twice() {
    let server = fresh_store().await;
    let result = harness(&server, false).await;
    server.shutdown().await.unwrap();
    assert!(result.acknowledged > 6 * 30 + 1, "no transfer (two events) was acknowledged: {}", result.acknowledged);
    assert!(result.conflicts > 0, "writers on four shared streams must have conflicted: the harness did not race");
    assert_eq!(result.unacknowledged_stored, 0, "an event whose append failed is stored");
    for (name, (missing, twice, disorder)) in &result.per_subscription {
        assert_eq!(
            (*missing, *twice, *disorder),
            (0, 0, 0),
            "subscription {name}: (missing, twice, out of stream order)"
        );
    }
}

#[tokio::test]
async fn the_same_harness_catches_a_reader_that_trusts_positions() {
    let server = fresh_store().await;
    let result = harness(&server, true).await;
    server.shutdown().await.unwrap();
    let missing: usize = result.per_subscription.values().map(|r| r.0).sum();
    assert!(missing > 0, "the position reader skipped nothing: the harness cannot fail");
    assert!(result.per_subscription.values().all(|r| r.1 == 0), "skips, not duplicates, are this reader's failure");
}

/// bob's versions in the order the watermark reader returns them, from the start.
async fn read_versions(client: &tokio_postgres::Client, stream: &str) -> Vec<i64> {
    store::read_all_after(client, store::Checkpoint::START, 100)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.stream_id == stream)
        .map(|e| e.version)
        .collect()
}

/// Waits until the session `pid` waits for a lock (up to 10 s).
async fn wait_until_waiting_for_a_lock(watcher: &tokio_postgres::Client, pid: i32) {
    let started = Instant::now();
    loop {
        let waiting: bool = watcher
            .query_one(
                "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if waiting {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "session {pid} never waited for a lock");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The interleaving that used to give bob 1, 3, 2. A transaction gets its id at its first
/// write: the transfer appended to alice, then waited for bob's lock while a younger teller
/// appended bob's version 2, and then appended bob's version 3 under its OLDER id, so the
/// watermark reader returned version 3 first. Now the store refuses that second append (the
/// order rule, schema.sql), and a transfer that locks both streams first reaches readers in
/// version order, with a reader polling throughout.
#[tokio::test]
async fn a_transfer_reaches_readers_in_each_streams_version_order() {
    let server = fresh_store().await;
    let setup = server.connect().await.unwrap();
    append(&setup, "account-bob", ExpectedVersion::NoStream, &[deposit(1, 1)]).await.unwrap();

    // The old script: the transfer appends to alice, the teller to bob, the transfer to bob.
    let mut transfer = server.connect().await.unwrap();
    let mut teller = server.connect().await.unwrap();
    let teller_tx = teller.transaction().await.unwrap();
    let transfer_tx = transfer.transaction().await.unwrap();
    append(&transfer_tx, "account-alice", ExpectedVersion::Any, &[deposit(2, 1)]).await.unwrap();
    append(&teller_tx, "account-bob", ExpectedVersion::Exact(1), &[deposit(3, 1)]).await.unwrap();
    let refused = append(&transfer_tx, "account-bob", ExpectedVersion::Any, &[deposit(4, 1)]).await.unwrap_err();
    assert!(matches!(&refused, StoreError::StreamNotLocked { stream_id } if stream_id == "account-bob"), "{refused:?}");
    assert!(refused.to_string().contains("lock_streams"), "the error says what to do: {refused}");
    drop(transfer_tx);
    teller_tx.commit().await.unwrap();
    assert_eq!(read_versions(&setup, "account-bob").await, vec![1, 2]);
    // lock_streams too comes too late once the transaction has written.
    let late = transfer.transaction().await.unwrap();
    append(&late, "account-alice", ExpectedVersion::Any, &[deposit(5, 1)]).await.unwrap();
    let err = store::lock_streams(&late, &["account-alice", "account-bob"]).await.unwrap_err();
    assert!(matches!(err, StoreError::StreamNotLocked { .. }), "{err:?}");
    drop(late);

    // The transfer that locks both streams first: the teller waits for it, and bob's versions
    // follow the transaction ids. A reader polls all along and must never see bob out of order.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (client, stop) = (server.connect().await.unwrap(), stop.clone());
        tokio::spawn(async move {
            let (mut after, mut seen) = (store::Checkpoint::START, Vec::new());
            loop {
                let stopping = stop.load(Ordering::SeqCst);
                for e in store::read_all_after(&client, after, 10).await.unwrap() {
                    after = e.checkpoint;
                    if e.stream_id == "account-bob" {
                        seen.push(e.version);
                    }
                }
                if stopping {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let transfer_tx = transfer.transaction().await.unwrap();
    store::lock_streams(&transfer_tx, &["account-alice", "account-bob"]).await.unwrap();
    append(&transfer_tx, "account-alice", ExpectedVersion::Any, &[deposit(6, 1)]).await.unwrap();
    let teller_pid: i32 = teller.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let teller_append = tokio::spawn(async move {
        let tx = teller.transaction().await.unwrap();
        let version = append(&tx, "account-bob", ExpectedVersion::Any, &[deposit(7, 1)]).await.unwrap();
        tx.commit().await.unwrap();
        version
    });
    wait_until_waiting_for_a_lock(&setup, teller_pid).await;
    assert_eq!(append(&transfer_tx, "account-bob", ExpectedVersion::Any, &[deposit(8, 1)]).await.unwrap(), 3);
    transfer_tx.commit().await.unwrap();
    assert_eq!(teller_append.await.unwrap(), 4, "the teller appended after the transfer");
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::SeqCst);
    assert_eq!(reader.await.unwrap(), vec![1, 2, 3, 4], "what the polling reader saw of bob");
    assert_eq!(read_versions(&setup, "account-bob").await, vec![1, 2, 3, 4]);
    server.shutdown().await.unwrap();
}

/// The Rust reader runs read_all_after's query with typed columns: both must return the same
/// events, in the same order, with the same checkpoints, and resume the same way.
#[tokio::test]
async fn the_typed_reader_and_the_sql_function_read_the_same() {
    let server = fresh_store().await;
    let mut client = server.connect().await.unwrap();
    for s in 0..5u128 {
        let events: Vec<NewEvent> = (0..7).map(|i| deposit(1_000 + s * 10 + i, 1)).collect();
        append(&client, &format!("account-{s}"), ExpectedVersion::NoStream, &events).await.unwrap();
    }
    let bulk: Vec<StreamAppend> = (0..3u128)
        .map(|s| StreamAppend {
            stream_id: format!("bulk-{s}"),
            expected: ExpectedVersion::Any,
            events: vec![deposit(2_000 + s, 1)],
        })
        .collect();
    append_bulk(&mut client, &bulk).await.unwrap();
    let mut after = store::Checkpoint::START;
    let mut typed = Vec::new();
    loop {
        let batch = store::read_all_after(&client, after, 4).await.unwrap();
        let Some(last) = batch.last() else { break };
        after = last.checkpoint;
        typed.extend(batch);
    }
    let function: Vec<store::RecordedEvent> = client
        .query(store::read::READ_ALL_SQL, &[&None::<String>, &1_000i32])
        .await
        .unwrap()
        .iter()
        .map(|row| store::RecordedEvent::from_contract_row(row).unwrap())
        .collect();
    assert_eq!(typed.len(), 38);
    assert_eq!(typed, function);
    let err = "not-a-checkpoint".parse::<store::Checkpoint>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad checkpoint: checkpoint 'not-a-checkpoint' is not 'transaction_id:position:system_identifier'"
    );
    // The text form names the cluster, and reads back as the same checkpoint.
    let last = typed.last().unwrap().checkpoint;
    assert_eq!(last.to_string().parse::<store::Checkpoint>().unwrap(), last);
    let cluster: i64 = client.query_one("SELECT system_identifier FROM pg_control_system()", &[]).await.unwrap().get(0);
    assert_eq!(last.cluster, store::SystemIdentifier(cluster));
    let malformed = client.query(store::read::READ_ALL_SQL, &[&"12:34", &10i32]).await.unwrap_err();
    assert_eq!(malformed.code().map(|c| c.code()), Some("22023"), "{malformed}");
    server.shutdown().await.unwrap();
}

/// The single-event fast path appends on its own only when the outcome is a plain success;
/// everything else falls to append_to_stream, and `append` gives the same answers as before.
#[tokio::test]
async fn the_fast_path_appends_only_plain_successes_and_leaves_the_rest_to_append_to_stream() {
    use labs::store::append::append_fast;
    let server = fresh_store().await;
    let client = server.connect().await.unwrap();
    // A fresh session has not run the cluster guard: the first append goes the slow way.
    assert_eq!(append_fast(&client, "account-f", ExpectedVersion::NoStream, &deposit(1, 1)).await.unwrap(), None);
    assert_eq!(append(&client, "account-f", ExpectedVersion::NoStream, &[deposit(1, 1)]).await.unwrap(), 1);
    // Now it appends by itself.
    assert_eq!(append_fast(&client, "account-f", ExpectedVersion::Exact(1), &deposit(2, 1)).await.unwrap(), Some(2));
    assert_eq!(append_fast(&client, "account-f", ExpectedVersion::Any, &deposit(3, 1)).await.unwrap(), Some(3));
    assert_eq!(append_fast(&client, "account-g", ExpectedVersion::NoStream, &deposit(4, 1)).await.unwrap(), Some(1));
    // A stale version, a retry and a reused id: nothing written, no row...
    assert_eq!(append_fast(&client, "account-f", ExpectedVersion::Exact(1), &deposit(5, 1)).await.unwrap(), None);
    assert_eq!(append_fast(&client, "account-f", ExpectedVersion::Exact(1), &deposit(2, 1)).await.unwrap(), None);
    assert_eq!(append_fast(&client, "account-f", ExpectedVersion::Any, &deposit(2, 999)).await.unwrap(), None);
    // ...and append answers as append_to_stream does.
    let stale = append(&client, "account-f", ExpectedVersion::Exact(1), &[deposit(5, 1)]).await.unwrap_err();
    assert!(matches!(stale, StoreError::VersionConflict { actual: 3, .. }), "{stale:?}");
    assert_eq!(append(&client, "account-f", ExpectedVersion::Exact(1), &[deposit(2, 1)]).await.unwrap(), 2, "a retry");
    let reused = append(&client, "account-f", ExpectedVersion::Any, &[deposit(2, 999)]).await.unwrap_err();
    assert!(matches!(reused, StoreError::EventIdReused { .. }), "{reused:?}");
    // A transaction that has written already: the fast path steps aside, the order rule decides.
    let mut session = server.connect().await.unwrap();
    append(&session, "account-warm", ExpectedVersion::Any, &[deposit(6, 1)]).await.unwrap();
    let tx = session.transaction().await.unwrap();
    assert_eq!(append_fast(&tx, "account-f", ExpectedVersion::Any, &deposit(7, 1)).await.unwrap(), Some(4));
    assert_eq!(append_fast(&tx, "account-g", ExpectedVersion::Any, &deposit(8, 1)).await.unwrap(), None);
    let err = append(&tx, "account-g", ExpectedVersion::Any, &[deposit(8, 1)]).await.unwrap_err();
    assert!(matches!(err, StoreError::StreamNotLocked { .. }), "{err:?}");
    drop(tx);
    // A stream another transaction holds: the fast path does not wait, append does.
    let mut holder = server.connect().await.unwrap();
    let held = holder.transaction().await.unwrap();
    store::lock_streams(&held, &["account-f"]).await.unwrap();
    assert_eq!(append_fast(&client, "account-f", ExpectedVersion::Any, &deposit(9, 1)).await.unwrap(), None);
    let waiting = tokio::spawn({
        let session = session;
        async move { append(&session, "account-f", ExpectedVersion::Any, &[deposit(9, 1)]).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "the append waits for the stream's lock");
    held.commit().await.unwrap();
    assert_eq!(waiting.await.unwrap(), 4);
    assert_eq!(read_stream(&client, "account-f", 1, 100).await.unwrap().len(), 4);
    // The same, prepared once for a session that appends many times.
    let appender = store::append::Appender::prepare(&client).await.unwrap();
    assert_eq!(appender.append(&client, "account-h", ExpectedVersion::NoStream, &deposit(10, 1)).await.unwrap(), 1);
    assert_eq!(appender.append(&client, "account-h", ExpectedVersion::NoStream, &deposit(10, 1)).await.unwrap(), 1);
    let stale = appender.append(&client, "account-h", ExpectedVersion::NoStream, &deposit(11, 1)).await.unwrap_err();
    assert!(matches!(stale, StoreError::VersionConflict { actual: 1, .. }), "{stale:?}");
    assert_eq!(read_stream(&client, "account-h", 1, 100).await.unwrap().len(), 1);
    server.shutdown().await.unwrap();
}

/// The conformance checks of `labs schema verify`, with every append through the store's Rust
/// `append` (the fast path, falling back to append_to_stream): the contract holds on both
/// paths (tests/schema_sketch.rs runs them through append_to_stream).
#[tokio::test]
async fn the_reference_store_passes_every_conformance_check_through_the_fast_path() {
    use labs::store::conformance::{verify_with, AppendPath, VerifyOptions, CHECK_IDS};
    let config = ProviderConfig::from_env(None).expect("LABS_PG is valid");
    let server = Server::start(&config, &[]).await.unwrap();
    let options = VerifyOptions { append_path: AppendPath::StoreFastPath, ..VerifyOptions::default() };
    let report = verify_with(&server, store::SCHEMA_SQL, "schema.sql (fast path)", &options).await.unwrap();
    server.shutdown().await.unwrap();
    assert!(report.passed, "{report}");
    assert_eq!(report.checks.iter().map(|c| c.id).collect::<Vec<_>>(), CHECK_IDS.to_vec());
}

/// A client tool next to the server's binaries: the server's own major first (Debian keeps one
/// bin directory per major, and pg_dump must be at least the server's version), then the
/// provider's local binaries, then PATH.
async fn pg_tool(server: &Server, tool: &str) -> std::path::PathBuf {
    let own_major = std::path::PathBuf::from(format!("/usr/lib/postgresql/{}/bin/{tool}", server.version().major()));
    if own_major.is_file() {
        return own_major;
    }
    match labs::pg::find_local_binaries_async().await {
        Ok(dir) if dir.join(tool).is_file() => dir.join(tool),
        _ => tool.into(),
    }
}

/// pg_dump of `from`'s database, restored into `to`'s (an empty database of a fresh cluster).
async fn dump_and_restore(from: &Server, to: &Server) {
    let dump = tempfile::NamedTempFile::new().unwrap();
    let status = tokio::process::Command::new(pg_tool(from, "pg_dump").await)
        .args(["--format=custom", "--no-owner", "--file"])
        .arg(dump.path())
        .arg(format!("--dbname={}", from.url()))
        .status()
        .await
        .expect("pg_dump runs (PostgreSQL's client tools: see labs doctor)");
    assert!(status.success(), "pg_dump failed: {status}");
    let status = tokio::process::Command::new(pg_tool(to, "pg_restore").await)
        .args(["--no-owner", "--exit-on-error"])
        .arg(format!("--dbname={}", to.url()))
        .arg(dump.path())
        .status()
        .await
        .expect("pg_restore runs");
    assert!(status.success(), "pg_restore failed: {status}");
}

/// Hands out `n` transaction ids, each in its own transaction, so this cluster's counter runs
/// ahead of a fresh one's.
async fn burn_transaction_ids(client: &tokio_postgres::Client, n: u32) {
    client
        .batch_execute(&format!(
            "DO $$ BEGIN FOR i IN 1..{n} LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$"
        ))
        .await
        .unwrap();
}

async fn next_transaction_id(client: &tokio_postgres::Client) -> u64 {
    let next: String =
        client.query_one("SELECT pg_snapshot_xmax(pg_current_snapshot())::text", &[]).await.unwrap().get(0);
    next.parse().unwrap()
}

/// Two servers, or None (with a note) on the url backend, where both would be one cluster.
async fn two_clusters() -> Option<(Server, Server)> {
    let config = ProviderConfig::from_env(None).expect("LABS_PG is valid");
    let first = Server::start(&config, &[]).await.expect("a PostgreSQL server (see `labs doctor`)");
    if first.backend() == labs::pg::Backend::Url {
        eprintln!("skipped: the url backend gives databases of one cluster, and this test needs two clusters");
        first.shutdown().await.unwrap();
        return None;
    }
    let second = Server::start(&config, &[]).await.unwrap();
    Some((first, second))
}

/// The old cluster: 2,000 transaction ids spent (so its counter is ahead of a fresh cluster's),
/// the store, four events, and two subscriptions: `ledger` at the end, `audit` after one event.
/// Returns the checkpoint of the last event.
async fn old_cluster_with_events(server: &Server) -> store::Checkpoint {
    let mut client = server.connect().await.unwrap();
    burn_transaction_ids(&client, 2_000).await;
    store::install(&client).await.unwrap();
    append(&client, "account-1", ExpectedVersion::NoStream, &[deposit(1, 100), deposit(2, 200)]).await.unwrap();
    append(&client, "account-2", ExpectedVersion::NoStream, &[deposit(3, 300)]).await.unwrap();
    append(&client, "account-1", ExpectedVersion::Exact(2), &[deposit(4, 400)]).await.unwrap();
    let ledger = Subscription::new("ledger");
    ledger.create(&client).await.unwrap();
    assert_eq!(ledger.process_batch(&mut client, async |_, _| Ok(())).await.unwrap(), Batch::Processed(4));
    let audit = Subscription { batch_size: 1, ..Subscription::new("audit") };
    audit.create(&client).await.unwrap();
    assert_eq!(audit.process_batch(&mut client, async |_, _| Ok(())).await.unwrap(), Batch::Processed(1));
    store::read_all_after(&client, store::Checkpoint::START, 100).await.unwrap().last().unwrap().checkpoint
}

/// Write, checkpoint, pg_dump into a fresh cluster (whose transaction-id counter is far behind
/// the stored ids), write more, resume. Unguarded, every new event would sort before the
/// consumers' checkpoints and be skipped for good. The store refuses to read or write on the
/// new cluster until `store_rebase()`; then a checkpoint from the old cluster is refused with
/// the way to rebase it, and rebased it resumes with exactly the new events.
#[tokio::test]
async fn a_store_restored_into_another_cluster_refuses_until_rebased_then_resumes_without_a_skip() {
    let Some((old, new)) = two_clusters().await else { return };
    let end = old_cluster_with_events(&old).await;
    dump_and_restore(&old, &new).await;
    old.shutdown().await.unwrap();

    let mut client = new.connect().await.unwrap();
    let next_here = next_transaction_id(&client).await;
    assert!(
        next_here < end.transaction_id.0,
        "the fresh cluster's counter ({next_here}) must be behind the copied ids ({}) for this test to mean anything",
        end.transaction_id
    );
    // Refused: writers, a consumer from the start, a consumer from its checkpoint.
    let write = append(&client, "account-3", ExpectedVersion::NoStream, &[deposit(5, 500)]).await.unwrap_err();
    assert!(matches!(&write, StoreError::OtherCluster { hint, .. } if hint.contains("store_rebase()")), "{write:?}");
    let read = store::read_all_after(&client, store::Checkpoint::START, 10).await.unwrap_err();
    assert!(matches!(read, StoreError::OtherCluster { .. }), "{read:?}");
    assert!(matches!(store::read_all_after(&client, end, 10).await, Err(StoreError::OtherCluster { .. })));
    let via_sql = client.query(store::read::READ_ALL_SQL, &[&end.to_string(), &10i32]).await.unwrap_err();
    assert_eq!(via_sql.code().map(|c| c.code()), Some(store::SQLSTATE_OTHER_CLUSTER));

    // The rebase: the copied ids are ahead of this cluster's, so the events are stamped '0'
    // (position order); `ledger` was at the end and moves with them, `audit` cannot.
    let rebased: Vec<(String, String, Option<String>)> = client
        .query("SELECT subscription, checkpoint_before, checkpoint_after FROM store_rebase()", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let here: i64 = client.query_one("SELECT system_identifier FROM pg_control_system()", &[]).await.unwrap().get(0);
    assert_eq!(rebased.len(), 2);
    assert_eq!(rebased[0].0, "audit");
    assert_eq!(rebased[0].2, None, "audit had read one event of four: it must start again");
    assert_eq!((rebased[1].0.as_str(), rebased[1].1.as_str()), ("ledger", end.to_string().as_str()));
    assert_eq!(rebased[1].2, Some(format!("0:{}:{here}", end.position)));

    // Write more on the new cluster: these ids are below the old checkpoint's.
    append(&client, "account-3", ExpectedVersion::NoStream, &[deposit(5, 500)]).await.unwrap();
    append(&client, "account-1", ExpectedVersion::Exact(3), &[deposit(6, 600)]).await.unwrap();
    let new_ids: Vec<store::TransactionId> = client
        .query("SELECT transaction_id FROM events WHERE transaction_id <> '0' ORDER BY position", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(new_ids.len(), 2);
    assert!(new_ids.iter().all(|id| *id < end.transaction_id), "{new_ids:?} vs {end}: the skip the guard prevents");

    // The old checkpoint, kept outside the store: refused, with the way to rebase it.
    let refused = store::read_all_after(&client, end, 10).await.unwrap_err();
    assert!(refused.to_string().contains("store_rebase_checkpoint"), "{refused}");
    let rebased_end: String =
        client.query_one("SELECT store_rebase_checkpoint($1)", &[&end.to_string()]).await.unwrap().get(0);
    let resumed = store::read_all_after(&client, rebased_end.parse().unwrap(), 10).await.unwrap();
    let resumed_ids: Vec<Uuid> = resumed.iter().map(|e| e.event_id).collect();
    assert_eq!(resumed_ids, vec![Uuid::from_u128(5), Uuid::from_u128(6)], "exactly the new events, nothing skipped");
    // The subscriptions: ledger resumes with the new events; audit refuses and says why.
    let ledger = Subscription::new("ledger");
    assert_eq!(ledger.process_batch(&mut client, async |_, _| Ok(())).await.unwrap(), Batch::Processed(2));
    let audit = Subscription::new("audit");
    let err = audit.process_batch(&mut client, async |_, _| Ok(())).await.unwrap_err();
    assert!(matches!(err, StoreError::OtherCluster { .. }), "{err:?}");
    let mid: String =
        client.query_one("SELECT checkpoint FROM subscriptions WHERE name = 'audit'", &[]).await.unwrap().get(0);
    let err = client.query_one("SELECT store_rebase_checkpoint($1)", &[&mid]).await.unwrap_err();
    assert!(store::server_message(&err).contains("not where the events ended"), "{err}");
    // A consumer from the start reads all six, each stream in version order.
    let all = store::read_all_after(&client, store::Checkpoint::START, 100).await.unwrap();
    let account_1: Vec<i64> = all.iter().filter(|e| e.stream_id == "account-1").map(|e| e.version).collect();
    assert_eq!((all.len(), account_1), (6, vec![1, 2, 3, 4]));
    new.shutdown().await.unwrap();
}

/// The same move into a cluster whose counter is already past the copied ids (as after
/// pg_upgrade, which carries the counter on): the rebase keeps the ids, and every checkpoint,
/// even one in the middle, resumes in place.
#[tokio::test]
async fn a_store_moved_to_a_cluster_ahead_of_its_ids_keeps_every_checkpoint() {
    let Some((old, new)) = two_clusters().await else { return };
    let end = old_cluster_with_events(&old).await;
    burn_transaction_ids(&new.connect().await.unwrap(), 3_000).await;
    dump_and_restore(&old, &new).await;
    old.shutdown().await.unwrap();
    let mut client = new.connect().await.unwrap();
    assert!(next_transaction_id(&client).await > end.transaction_id.0);
    assert!(matches!(
        store::read_all_after(&client, store::Checkpoint::START, 10).await,
        Err(StoreError::OtherCluster { .. })
    ));
    let rebased: Vec<Option<String>> = client
        .query("SELECT checkpoint_after FROM store_rebase()", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(rebased.iter().all(Option::is_some), "every subscription rebased: {rebased:?}");
    let kept: bool = client
        .query_one("SELECT kept_transaction_ids FROM store_clusters ORDER BY seq DESC LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(kept);
    append(&client, "account-3", ExpectedVersion::NoStream, &[deposit(5, 500)]).await.unwrap();
    // audit had read one event: it gets the three others and the new one.
    let audit = Subscription { batch_size: 100, ..Subscription::new("audit") };
    assert_eq!(audit.process_batch(&mut client, async |_, _| Ok(())).await.unwrap(), Batch::Processed(4));
    let rebased_end: String =
        client.query_one("SELECT store_rebase_checkpoint($1)", &[&end.to_string()]).await.unwrap().get(0);
    let after_end = store::read_all_after(&client, rebased_end.parse().unwrap(), 10).await.unwrap();
    assert_eq!(after_end.iter().map(|e| e.event_id).collect::<Vec<_>>(), vec![Uuid::from_u128(5)]);
    new.shutdown().await.unwrap();
}

/// A promoted physical standby replays the primary's history: same system identifier, same
/// counter. Checkpoints taken on the primary resume there without complaint.
#[tokio::test]
async fn a_promoted_standby_continues_from_the_primarys_checkpoints() {
    let config = ProviderConfig::from_env(None).expect("LABS_PG is valid");
    let mut server = match Server::start(&config, &[labs::pg::Capability::Standby]).await {
        Ok(server) => server,
        Err(e @ labs::pg::ProviderError::MissingCapability { .. }) => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("a PostgreSQL server with a standby (see `labs doctor`): {e}"),
    };
    let mut primary = server.connect().await.unwrap();
    store::install(&primary).await.unwrap();
    server.start_standby().await.unwrap();
    append(&primary, "order-1", ExpectedVersion::NoStream, &[deposit(1, 1)]).await.unwrap();
    append(&primary, "order-2", ExpectedVersion::NoStream, &[deposit(2, 1)]).await.unwrap();
    let shipping = Subscription::new("shipping");
    shipping.create(&primary).await.unwrap();
    assert_eq!(shipping.process_batch(&mut primary, async |_, _| Ok(())).await.unwrap(), Batch::Processed(2));
    let outside =
        store::read_all_after(&primary, store::Checkpoint::START, 10).await.unwrap().last().unwrap().checkpoint;
    server.wait_standby_caught_up().await.unwrap();
    server.crash().await.unwrap();
    server.promote_standby().await.unwrap();

    let mut promoted = server.connect_to(labs::pg::Node::Standby).await.unwrap();
    append(&promoted, "order-3", ExpectedVersion::NoStream, &[deposit(3, 1)]).await.unwrap();
    let resumed = store::read_all_after(&promoted, outside, 10).await.unwrap();
    assert_eq!(resumed.iter().map(|e| e.event_id).collect::<Vec<_>>(), vec![Uuid::from_u128(3)]);
    assert_eq!(resumed[0].checkpoint.cluster, outside.cluster, "the same cluster, by its system identifier");
    assert_eq!(shipping.process_batch(&mut promoted, async |_, _| Ok(())).await.unwrap(), Batch::Processed(1));
    server.shutdown().await.unwrap();
}
