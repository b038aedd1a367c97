//! The PostgreSQL provider: every backend gives a working server, crash and restart keep what
//! was committed, and a backend without a capability says so instead of pretending.
//!
//! Container tests need a Docker engine with the image (LABS_PG_IMAGE, default postgres:15);
//! they are skipped only when LABS_PG=local or url says this machine has no containers.
//! Local tests need PostgreSQL's server binaries (see `labs doctor`).

mod common;
use common::{config, containers_expected};

use labs::pg::{Backend, Capability, Node, ProviderError, Server};

/// Commits a row, crashes the server (immediate stop: no checkpoint), restarts it, and expects
/// the row back: a committed transaction is durable with fsync and synchronous_commit on.
async fn crash_and_restart_keep_committed_rows(backend: Backend) {
    let mut server = Server::start(&config(backend), &[Capability::Crash, Capability::Restart]).await.unwrap();
    assert_eq!(server.backend(), backend);
    let client = server.connect().await.unwrap();
    let fsync: String = client.query_one("SHOW fsync", &[]).await.unwrap().get(0);
    assert_eq!(fsync, "on", "durability labs need fsync on");
    client.batch_execute("CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 1000);").await.unwrap();
    drop(client);

    server.crash().await.unwrap();
    assert!(server.connect().await.is_err(), "the server still answers after a crash");
    server.restart().await.unwrap();

    let client = server.connect().await.unwrap();
    let n: i64 = client.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 1000);
    drop(client);
    let directory = server.local_directory();
    server.shutdown().await.unwrap();
    if let Some(directory) = directory {
        assert!(!directory.exists(), "{} outlived the server", directory.display());
    }
}

#[tokio::test]
async fn local_crash_and_restart_keep_committed_rows() {
    crash_and_restart_keep_committed_rows(Backend::Local).await;
}

#[tokio::test]
async fn container_crash_and_restart_keep_committed_rows() {
    if !containers_expected() {
        return;
    }
    crash_and_restart_keep_committed_rows(Backend::Container).await;
}

#[tokio::test]
async fn two_servers_never_collide() {
    let config = config(Backend::Local);
    let (a, b) = tokio::join!(Server::start(&config, &[]), Server::start(&config, &[]));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.url(), b.url());
    a.connect().await.unwrap().batch_execute("CREATE TABLE only_in_a (x int)").await.unwrap();
    let exists: bool =
        b.connect().await.unwrap().query_one("SELECT to_regclass('only_in_a') IS NOT NULL", &[]).await.unwrap().get(0);
    assert!(!exists);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// The url backend: a fresh database per run, dropped afterwards; no server control.
#[tokio::test]
async fn url_backend_uses_a_fresh_database_and_refuses_to_crash() {
    let host = Server::start(&config(Backend::Local), &[]).await.unwrap();
    let mut url = config(Backend::Url);
    url.database_url = Some(host.url());

    match Server::start(&url, &[Capability::Crash]).await {
        Err(ProviderError::MissingCapability { backend: Backend::Url, capability: Capability::Crash }) => {}
        Err(other) => panic!("expected a missing-capability error, got: {other}"),
        Ok(_) => panic!("the url backend claimed it can crash a server it does not own"),
    }

    let lab = Server::start(&url, &[]).await.unwrap();
    let database = lab.config().get_dbname().unwrap().to_string();
    assert!(database.starts_with("labs_"), "{database}");
    lab.connect().await.unwrap().batch_execute("CREATE TABLE scratch (x int)").await.unwrap();
    lab.shutdown().await.unwrap();

    let admin = host.connect().await.unwrap();
    let left: i64 =
        admin.query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&database]).await.unwrap().get(0);
    assert_eq!(left, 0, "the lab's database outlived the run");
    drop(admin);
    host.shutdown().await.unwrap();
}

#[tokio::test]
async fn url_backend_without_database_url_says_how_to_set_it() {
    let mut url = config(Backend::Url);
    url.database_url = None;
    let err = Server::start(&url, &[]).await.err().expect("no DATABASE_URL must be an error");
    assert!(err.to_string().contains("DATABASE_URL is not set"), "{err}");
}

/// The url backend offers none of the server-control capabilities, and says which is missing.
#[tokio::test]
async fn url_backend_refuses_every_server_control_capability() {
    let host = Server::start(&config(Backend::Local), &[]).await.unwrap();
    let mut url = config(Backend::Url);
    url.database_url = Some(host.url());
    for capability in Capability::ALL {
        match Server::start(&url, &[capability]).await {
            Err(e @ ProviderError::MissingCapability { backend: Backend::Url, .. }) => {
                assert!(e.to_string().contains(&format!("'{capability}'")), "{e}");
            }
            Err(other) => panic!("{capability}: expected a missing-capability error, got: {other}"),
            Ok(_) => panic!("the url backend claimed it can {capability}"),
        }
    }
    host.shutdown().await.unwrap();
}

async fn count(server: &Server, node: Node, table: &str) -> i64 {
    let client = server.connect_to(node).await.unwrap();
    client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0)
}

/// Freeze: async commits made while the WAL writer is frozen are lost in a crash; made while
/// it is frozen and then thawed, they are flushed and survive.
async fn frozen_wal_writer_decides_what_a_crash_loses(backend: Backend) {
    let needs = [Capability::FreezeWalWriter, Capability::Crash, Capability::Restart];
    let mut server = Server::start(&config(backend), &needs).await.unwrap();
    server.quiet_background_wal_writes().await.unwrap();
    let client = server.connect().await.unwrap();
    client.batch_execute("CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 10)").await.unwrap();
    client.batch_execute("SET synchronous_commit = off").await.unwrap();

    // Frozen, then thawed before the crash: the WAL writer flushes what it held.
    server.freeze_wal_writer().await.unwrap();
    for n in 11..=20 {
        client.execute("INSERT INTO t VALUES ($1)", &[&n]).await.unwrap();
    }
    server.thaw_wal_writer().await.unwrap();
    // The WAL writer flushes within 3 x wal_writer_delay (200 ms by default).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // Frozen through the crash: these commits never reach the disk.
    server.freeze_wal_writer().await.unwrap();
    for n in 21..=50 {
        client.execute("INSERT INTO t VALUES ($1)", &[&n]).await.unwrap();
    }
    drop(client);
    server.crash().await.unwrap();
    server.restart().await.unwrap();
    assert_eq!(count(&server, Node::Primary, "t").await, 20, "exactly the commits made while frozen are gone");
    server.shutdown().await.unwrap();
}

/// Standby: it streams, a paused receiver receives nothing more, resuming catches up, a
/// synchronous standby makes a commit wait, and a promoted standby takes writes.
async fn standby_streams_pauses_resumes_and_promotes(backend: Backend) {
    let needs = [Capability::Standby, Capability::Crash];
    let mut server = Server::start(&config(backend), &needs).await.unwrap();
    let primary = server.connect().await.unwrap();
    primary.batch_execute("CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 5)").await.unwrap();
    server.start_standby().await.unwrap();
    assert_eq!(count(&server, Node::Standby, "t").await, 5);

    server.pause_standby_receiver().await.unwrap();
    primary.batch_execute("INSERT INTO t SELECT generate_series(6, 10)").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(count(&server, Node::Standby, "t").await, 5, "a paused receiver still received");
    server.resume_standby_receiver().await.unwrap();
    server.wait_standby_caught_up().await.unwrap();
    assert_eq!(count(&server, Node::Standby, "t").await, 10);

    server.set_synchronous_standby(true).await.unwrap();
    server.pause_standby_receiver().await.unwrap();
    let waiting = server.connect().await.unwrap();
    let pid: i32 = waiting.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let insert = tokio::spawn(async move { waiting.execute("INSERT INTO t VALUES (11)", &[]).await.map(|_| ()) });
    let mut waited_for_standby = false;
    for _ in 0..200 {
        let event: Option<String> =
            primary.query_one("SELECT wait_event FROM pg_stat_activity WHERE pid = $1", &[&pid]).await.unwrap().get(0);
        if event.as_deref() == Some("SyncRep") {
            waited_for_standby = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(waited_for_standby, "the commit did not wait for the synchronous standby");
    assert!(!insert.is_finished());
    primary.query_one("SELECT pg_cancel_backend($1)", &[&pid]).await.unwrap();
    insert.await.unwrap().expect("a cancelled wait still reports the commit as done");

    server.crash().await.unwrap();
    server.promote_standby().await.unwrap();
    let standby = server.connect_to(Node::Standby).await.unwrap();
    standby.batch_execute("INSERT INTO t VALUES (12)").await.expect("the promoted standby takes writes");
    assert_eq!(count(&server, Node::Standby, "t").await, 11, "rows 1..10 and 12; 11 never reached it");
    server.shutdown().await.unwrap();
}

/// Archive: a restore from the base backup plus the archive has what was archived, and not
/// what was committed after the last archived segment.
async fn restore_from_archive_stops_at_the_last_archived_segment(backend: Backend) {
    let needs = [Capability::Archive, Capability::Crash];
    let mut server = Server::start(&config(backend), &needs).await.unwrap();
    let client = server.connect().await.unwrap();
    client.batch_execute("CREATE TABLE t (n int)").await.unwrap();
    server.take_base_backup().await.unwrap();
    client.batch_execute("INSERT INTO t SELECT generate_series(1, 100)").await.unwrap();
    let segment = server.switch_wal_and_wait_archived().await.unwrap();
    let archived = server.archived_segments().await.unwrap();
    assert!(archived.contains(&segment), "{segment} is not in the archive: {archived:?}");
    client.batch_execute("INSERT INTO t SELECT generate_series(101, 150)").await.unwrap();
    drop(client);
    assert!(server.restore_primary_from_archive().await.is_err(), "restoring over a running primary must be refused");
    server.crash().await.unwrap();
    server.restore_primary_from_archive().await.unwrap();
    assert_eq!(count(&server, Node::Primary, "t").await, 100);
    let directory = server.local_directory();
    server.shutdown().await.unwrap();
    if let Some(directory) = directory {
        assert!(!directory.exists(), "{} outlived the server", directory.display());
    }
}

#[tokio::test]
async fn local_frozen_wal_writer_decides_what_a_crash_loses() {
    frozen_wal_writer_decides_what_a_crash_loses(Backend::Local).await;
}

#[tokio::test]
async fn local_standby_streams_pauses_resumes_and_promotes() {
    standby_streams_pauses_resumes_and_promotes(Backend::Local).await;
}

#[tokio::test]
async fn local_restore_from_archive_stops_at_the_last_archived_segment() {
    restore_from_archive_stops_at_the_last_archived_segment(Backend::Local).await;
}

#[tokio::test]
async fn container_frozen_wal_writer_decides_what_a_crash_loses() {
    if !containers_expected() {
        return;
    }
    frozen_wal_writer_decides_what_a_crash_loses(Backend::Container).await;
}

#[tokio::test]
async fn container_standby_streams_pauses_resumes_and_promotes() {
    if !containers_expected() {
        return;
    }
    standby_streams_pauses_resumes_and_promotes(Backend::Container).await;
}

#[tokio::test]
async fn container_restore_from_archive_stops_at_the_last_archived_segment() {
    if !containers_expected() {
        return;
    }
    restore_from_archive_stops_at_the_last_archived_segment(Backend::Container).await;
}
