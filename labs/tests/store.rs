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
    SELECT e.transaction_id::text || ':' || e.position, e.event_id, e.stream_id, e.version, e.type, e.data, e.metadata
    FROM events e WHERE e.position > split_part(coalesce(p_after, '0:0'), ':', 2)::bigint
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
/// conflict. Subscriptions project every event into `projection` with their checkpoint, in the
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
                let stream = format!("account-{}", rng.below(STREAMS));
                let event = deposit(((w as u128 + 1) << 32) | n as u128, 1 + rng.below(100) as i64);
                loop {
                    let version =
                        read_stream(&client, &stream, 1, i64::MAX).await.unwrap().last().map_or(0, |e| e.version);
                    let expected =
                        if version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version) };
                    client.batch_execute("BEGIN").await.unwrap();
                    match append(&client, &stream, expected, std::slice::from_ref(&event)).await {
                        Ok(_) => {
                            tokio::time::sleep(Duration::from_micros(rng.below(2_000) as u64)).await;
                            client.batch_execute("COMMIT").await.unwrap();
                            ok.push(event.event_id);
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
    assert_eq!(result.acknowledged, 6 * 30 + 1);
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

/// A transaction id is assigned at a transaction's first write, not when it appends to a given
/// stream. A transfer that appends to one stream, then waits for another stream's lock while a
/// younger transaction appends there, commits that stream's later version under the OLDER id:
/// the watermark reader then returns it before the earlier version. Nothing is skipped, but a
/// consumer that needs each stream in order must check versions (the chapter says so).
#[tokio::test]
async fn multi_stream_transactions_can_reach_readers_out_of_stream_order() {
    let server = fresh_store().await;
    let setup = server.connect().await.unwrap();
    append(&setup, "account-bob", ExpectedVersion::NoStream, &[deposit(1, 1)]).await.unwrap();
    let mut transfer = server.connect().await.unwrap();
    let mut teller = server.connect().await.unwrap();
    let teller_tx = teller.transaction().await.unwrap();
    let transfer_tx = transfer.transaction().await.unwrap();
    // The transfer writes first (older transaction id)...
    append(&transfer_tx, "account-alice", ExpectedVersion::Any, &[deposit(2, 1)]).await.unwrap();
    // ...the teller appends bob's version 2 under a younger id and holds bob's lock...
    append(&teller_tx, "account-bob", ExpectedVersion::Exact(1), &[deposit(3, 1)]).await.unwrap();
    let credit = async move {
        // ...the transfer waits for bob's lock, then appends bob's version 3 under its older id.
        append(&transfer_tx, "account-bob", ExpectedVersion::Any, &[deposit(4, 1)]).await.unwrap();
        transfer_tx.commit().await.unwrap();
    };
    let teller_commits = async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        teller_tx.commit().await.unwrap();
    };
    tokio::join!(credit, teller_commits);
    let bob: Vec<i64> = store::read_all_after(&setup, store::Checkpoint::START, 100)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.stream_id == "account-bob")
        .map(|e| e.version)
        .collect();
    assert_eq!(bob, vec![1, 3, 2], "the watermark order is transaction-id order, not each stream's order");
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
    assert_eq!(err.to_string(), "bad checkpoint: checkpoint 'not-a-checkpoint' is not 'xid:position'");
    server.shutdown().await.unwrap();
}
