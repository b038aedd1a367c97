//! The PostgreSQL provider: every backend gives a working server, crash and restart keep what
//! was committed, a backend without a capability says so instead of pretending, and however a
//! run ends nothing is left behind (the reaper and the leftover sweep).
//!
//! Container tests need a Docker engine with the image (LABS_PG_IMAGE, default postgres:15);
//! local tests need PostgreSQL's server binaries (LABS_PG_BIN, PATH or pg_config; see `labs
//! doctor`). Where one cannot run, the test says "skipped: …" (and fails under CI).
//! Run the local ones on another major with LABS_PG_BIN, e.g. /opt/labs-pg18/bin.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{config, exclusive, runs_here, say, shared, with_server};
use labs::pg::{
    clean_leftovers, find_leftovers, find_local_binaries_async, reap_all, Backend, Capability, LeftoverKind, Node,
    ProviderError, Server, ServerVersion, CONTAINER_OWNER_LABEL, SUPPORTED_MAJORS,
};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Commits a row, crashes the server (immediate stop: no checkpoint), restarts it, and expects
/// the row back: a committed transaction is durable with fsync and synchronous_commit on.
async fn crash_and_restart_keep_committed_rows(backend: Backend) {
    with_server(backend, &[Capability::Crash, Capability::Restart], async |server| {
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
    })
    .await;
}

#[tokio::test]
async fn local_crash_and_restart_keep_committed_rows() {
    crash_and_restart_keep_committed_rows(Backend::Local).await;
}

#[tokio::test]
async fn container_crash_and_restart_keep_committed_rows() {
    crash_and_restart_keep_committed_rows(Backend::Container).await;
}

/// Shutdown stops the servers and removes the local directory.
#[tokio::test]
async fn local_shutdown_removes_the_directory_and_the_server() {
    if !runs_here(Backend::Local).await {
        return;
    }
    let _shared = shared().await;
    let server = Server::start(&config(Backend::Local), &[]).await.unwrap();
    let directory = server.local_directory().expect("a local server has a directory");
    let postmaster = postmaster_pid(&directory.join("primary")).expect("a running primary has a pid file");
    server.shutdown().await.unwrap();
    assert!(!directory.exists(), "{} outlived the server", directory.display());
    assert!(process_gone(postmaster), "postmaster {postmaster} outlived shutdown");
}

#[tokio::test]
async fn two_servers_never_collide() {
    if !runs_here(Backend::Local).await {
        return;
    }
    let _shared = shared().await;
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

/// The server reports a version in the supported range, the one its binaries say they are.
#[tokio::test]
async fn local_server_runs_the_binaries_found_and_reports_their_version() {
    let Some(bin) = find_local_binaries_async().await.ok() else {
        assert!(!runs_here(Backend::Local).await, "binaries not found, yet the local backend runs");
        return;
    };
    let postgres = tokio::process::Command::new(bin.join("postgres")).arg("--version").output().await.unwrap();
    let binaries_say = String::from_utf8_lossy(&postgres.stdout).trim().to_string();
    with_server(Backend::Local, &[], async |server| {
        let version = server.version().clone();
        assert!(SUPPORTED_MAJORS.contains(&version.major()), "{version}");
        let client = server.connect().await.unwrap();
        let num: String = client.query_one("SHOW server_version_num", &[]).await.unwrap().get(0);
        assert_eq!(num.parse::<u32>().unwrap(), server.server_version_num());
        // "postgres (PostgreSQL) 18.6" and server_version "18.6" (Debian's add "(Debian …)").
        let number = version.text.split_whitespace().next().unwrap();
        assert_eq!(binaries_say.split_whitespace().nth(2), Some(number), "{binaries_say} vs {version}");
    })
    .await;
}

/// A server outside 14..=18 is refused with one line naming its version and the range.
#[test]
fn unsupported_versions_are_refused_by_name() {
    for (num, text) in [(130011, "13.11"), (190000, "19devel")] {
        let err = ServerVersion { num, text: text.into() }.check_supported().expect_err(text);
        let message = err.to_string();
        assert!(matches!(err, ProviderError::UnsupportedVersion { .. }), "{message}");
        assert!(message.contains(text) && message.contains("14 to 18"), "{message}");
        assert_eq!(message.lines().count(), 1, "{message}");
    }
    for (num, text) in [(140000, "14.0"), (150014, "15.14"), (180006, "18.6")] {
        ServerVersion { num, text: text.into() }.check_supported().unwrap();
    }
}

/// The url backend: a fresh database per run, dropped afterwards; no server control.
#[tokio::test]
async fn url_backend_uses_a_fresh_database_and_refuses_to_crash() {
    with_server(Backend::Local, &[], async |host| {
        let mut url = config(Backend::Url);
        url.database_url = Some(host.url());

        match Server::start(&url, &[Capability::Crash]).await {
            Err(ProviderError::MissingCapability { backend: Backend::Url, capability: Capability::Crash }) => {}
            Err(other) => panic!("expected a missing-capability error, got: {other}"),
            Ok(_) => panic!("the url backend claimed it can crash a server it does not own"),
        }

        let lab = Server::start(&url, &[]).await.unwrap();
        assert_eq!(lab.version(), host.version());
        let database = lab.config().get_dbname().unwrap().to_string();
        assert!(database.starts_with("labs_"), "{database}");
        lab.connect().await.unwrap().batch_execute("CREATE TABLE scratch (x int)").await.unwrap();
        lab.shutdown().await.unwrap();

        let admin = host.connect().await.unwrap();
        let left: i64 =
            admin.query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&database]).await.unwrap().get(0);
        assert_eq!(left, 0, "the lab's database outlived the run");
    })
    .await;
}

#[tokio::test]
async fn url_backend_without_database_url_says_how_to_set_it() {
    let mut url = config(Backend::Url);
    url.database_url = None;
    let err = Server::start(&url, &[]).await.err().expect("no DATABASE_URL must be an error");
    assert!(err.to_string().contains("DATABASE_URL is not set"), "{err}");
}

/// The url backend offers none of the server-control capabilities (logical included: it
/// needs a restart), and says which is missing.
#[tokio::test]
async fn url_backend_refuses_every_server_control_capability() {
    with_server(Backend::Local, &[], async |host| {
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
    })
    .await;
}

async fn count(server: &Server, node: Node, table: &str) -> i64 {
    let client = server.connect_to(node).await.unwrap();
    client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0)
}

/// Freeze: async commits made while the WAL writer is frozen are lost in a crash; made while
/// it is frozen and then thawed, they are flushed and survive.
async fn frozen_wal_writer_decides_what_a_crash_loses(backend: Backend) {
    let needs = [Capability::FreezeWalWriter, Capability::Crash, Capability::Restart];
    with_server(backend, &needs, async |server| {
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
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Frozen through the crash: these commits never reach the disk.
        server.freeze_wal_writer().await.unwrap();
        for n in 21..=50 {
            client.execute("INSERT INTO t VALUES ($1)", &[&n]).await.unwrap();
        }
        drop(client);
        server.crash().await.unwrap();
        server.restart().await.unwrap();
        assert_eq!(count(server, Node::Primary, "t").await, 20, "exactly the commits made while frozen are gone");
    })
    .await;
}

/// Standby: it streams, a paused receiver receives nothing more, resuming catches up, a
/// synchronous standby makes a commit wait, and a promoted standby takes writes.
async fn standby_streams_pauses_resumes_and_promotes(backend: Backend) {
    with_server(backend, &[Capability::Standby, Capability::Crash], async |server| {
        let primary = server.connect().await.unwrap();
        primary.batch_execute("CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 5)").await.unwrap();
        server.start_standby().await.unwrap();
        assert_eq!(count(server, Node::Standby, "t").await, 5);
        match server.start_standby().await {
            Err(e @ ProviderError::WrongState { .. }) => assert!(e.to_string().contains("already"), "{e}"),
            other => panic!("a second standby must be refused as a wrong state, got {:?}", other.err()),
        }

        server.pause_standby_receiver().await.unwrap();
        primary.batch_execute("INSERT INTO t SELECT generate_series(6, 10)").await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(count(server, Node::Standby, "t").await, 5, "a paused receiver still received");
        server.resume_standby_receiver().await.unwrap();
        server.wait_standby_caught_up().await.unwrap();
        assert_eq!(count(server, Node::Standby, "t").await, 10);

        server.set_synchronous_standby(true).await.unwrap();
        server.pause_standby_receiver().await.unwrap();
        let waiting = server.connect().await.unwrap();
        let pid: i32 = waiting.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
        let insert = tokio::spawn(async move { waiting.execute("INSERT INTO t VALUES (11)", &[]).await.map(|_| ()) });
        let mut waited_for_standby = false;
        for _ in 0..200 {
            let event: Option<String> = primary
                .query_one("SELECT wait_event FROM pg_stat_activity WHERE pid = $1", &[&pid])
                .await
                .unwrap()
                .get(0);
            if event.as_deref() == Some("SyncRep") {
                waited_for_standby = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(waited_for_standby, "the commit did not wait for the synchronous standby");
        assert!(!insert.is_finished());
        primary.query_one("SELECT pg_cancel_backend($1)", &[&pid]).await.unwrap();
        insert.await.unwrap().expect("a cancelled wait still reports the commit as done");

        server.crash().await.unwrap();
        server.promote_standby().await.unwrap();
        let standby = server.connect_to(Node::Standby).await.unwrap();
        standby.batch_execute("INSERT INTO t VALUES (12)").await.expect("the promoted standby takes writes");
        assert_eq!(count(server, Node::Standby, "t").await, 11, "rows 1..10 and 12; 11 never reached it");
    })
    .await;
}

/// Archive: a restore from the base backup plus the archive has what was archived, and not
/// what was committed after the last archived segment.
async fn restore_from_archive_stops_at_the_last_archived_segment(backend: Backend) {
    with_server(backend, &[Capability::Archive, Capability::Crash], async |server| {
        let client = server.connect().await.unwrap();
        client.batch_execute("CREATE TABLE t (n int)").await.unwrap();
        server.take_base_backup().await.unwrap();
        client.batch_execute("INSERT INTO t SELECT generate_series(1, 100)").await.unwrap();
        let segment = server.switch_wal_and_wait_archived().await.unwrap();
        let archived = server.archived_segments().await.unwrap();
        assert!(archived.contains(&segment), "{segment} is not in the archive: {archived:?}");
        client.batch_execute("INSERT INTO t SELECT generate_series(101, 150)").await.unwrap();
        drop(client);
        match server.restore_primary_from_archive().await {
            Err(ProviderError::WrongState { .. }) => {}
            other => panic!("restoring over a running primary must be refused, got {:?}", other.err()),
        }
        server.crash().await.unwrap();
        server.restore_primary_from_archive().await.unwrap();
        assert_eq!(count(server, Node::Primary, "t").await, 100);
    })
    .await;
}

/// Logical: wal_level is logical, and a slot with the core test_decoding plugin decodes a
/// committed transaction (and nothing of one that rolled back).
async fn logical_slot_decodes_a_commit(backend: Backend) {
    with_server(backend, &[Capability::Logical], async |server| {
        let client = server.connect().await.unwrap();
        let wal_level: String = client.query_one("SHOW wal_level", &[]).await.unwrap().get(0);
        assert_eq!(wal_level, "logical");
        client.batch_execute("CREATE TABLE orders (id int PRIMARY KEY, note text)").await.unwrap();
        client.query_one("SELECT pg_create_logical_replication_slot('relay', 'test_decoding')", &[]).await.unwrap();
        client
            .batch_execute(
                "BEGIN; INSERT INTO orders VALUES (1, 'kept'); COMMIT; \
                 BEGIN; INSERT INTO orders VALUES (2, 'undone'); ROLLBACK;",
            )
            .await
            .unwrap();
        let changes: Vec<String> = client
            .query("SELECT data FROM pg_logical_slot_get_changes('relay', NULL, NULL)", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(changes.len(), 3, "{changes:#?}");
        assert!(changes[0].starts_with("BEGIN"), "{changes:#?}");
        assert_eq!(changes[1], "table public.orders: INSERT: id[integer]:1 note[text]:'kept'");
        assert!(changes[2].starts_with("COMMIT"), "{changes:#?}");
    })
    .await;
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
async fn local_logical_slot_decodes_a_commit() {
    logical_slot_decodes_a_commit(Backend::Local).await;
}

#[tokio::test]
async fn container_frozen_wal_writer_decides_what_a_crash_loses() {
    frozen_wal_writer_decides_what_a_crash_loses(Backend::Container).await;
}

#[tokio::test]
async fn container_standby_streams_pauses_resumes_and_promotes() {
    standby_streams_pauses_resumes_and_promotes(Backend::Container).await;
}

#[tokio::test]
async fn container_restore_from_archive_stops_at_the_last_archived_segment() {
    restore_from_archive_stops_at_the_last_archived_segment(Backend::Container).await;
}

#[tokio::test]
async fn container_logical_slot_decodes_a_commit() {
    logical_slot_decodes_a_commit(Backend::Container).await;
}

// ---------------------------------------------------------------------------------------------
// The reaper: a start abandoned half-way, a server dropped without shutdown, a killed owner.

/// The pid in a node's postmaster.pid, if it has one.
fn postmaster_pid(node_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(node_dir.join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
}

/// Gone: no such process, or a zombie that only waits for its parent to collect it.
fn process_gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    if unsafe { libc::kill(pid, 0) } != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) == Some("Z"))
        .unwrap_or(false)
}

async fn wait_until_gone(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if process_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    process_gone(pid)
}

/// The local server directories whose owner file names `pid`.
fn directories_owned_by(pid: u32) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("labs-pg-")))
        .filter(|p| {
            std::fs::read_to_string(p.join("labs-owner"))
                .is_ok_and(|text| text.lines().any(|line| line == format!("pid={pid}")))
        })
        .collect()
}

/// The containers labelled with owner `pid`, as the docker command line sees them (an observer
/// independent of the provider's own Docker client).
async fn containers_owned_by(pid: u32) -> Vec<String> {
    let out = tokio::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={CONTAINER_OWNER_LABEL}={pid}")])
        .output()
        .await
        .expect("the docker command line, to watch containers");
    assert!(out.status.success(), "docker ps: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// Polls a server's start, and drops it half-way: once `reached` says the start is far enough
/// in (a resource exists). A start that finishes first is shut down and tried again.
async fn abandon_start_when<F>(backend: Backend, reached: impl Fn() -> F) -> Vec<String>
where
    F: std::future::Future<Output = bool>,
{
    let config = config(backend);
    for _attempt in 0..5 {
        let start = Server::start(&config, &[Capability::Crash]);
        tokio::pin!(start);
        let finished = loop {
            tokio::select! {
                server = &mut start => break Some(server.unwrap()),
                _ = tokio::time::sleep(Duration::from_millis(5)) => {
                    if reached().await {
                        break None;
                    }
                }
            }
        };
        match finished {
            None => return reap_all().await,
            Some(server) => {
                say("the start finished before the test could abandon it; trying again");
                server.shutdown().await.unwrap();
            }
        }
    }
    panic!("five starts finished before the test could abandon one");
}

/// A start dropped after the postmaster began (pg_ctl still waiting for it): `reap_all` stops
/// the postmaster and removes the directory.
#[tokio::test]
async fn local_start_abandoned_half_way_leaves_nothing_after_reap_all() {
    if !runs_here(Backend::Local).await {
        return;
    }
    let _alone = exclusive().await;
    let me = std::process::id();
    let before = directories_owned_by(me);
    assert!(before.is_empty(), "left over by an earlier test: {before:?}");
    // What the start had made when it was abandoned: its directory and its postmaster.
    let seen: std::sync::Arc<std::sync::Mutex<Vec<(PathBuf, i32)>>> = Default::default();
    let lines = abandon_start_when(Backend::Local, || {
        let seen = seen.clone();
        async move {
            let running: Vec<(PathBuf, i32)> = directories_owned_by(me)
                .into_iter()
                .filter_map(|d| postmaster_pid(&d.join("primary")).map(|pid| (d, pid)))
                .collect();
            *seen.lock().unwrap() = running.clone();
            !running.is_empty()
        }
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "one abandoned directory with a postmaster: {seen:?}");
    let (directory, postmaster) = seen[0].clone();
    assert!(!directory.exists(), "{} is still there after reap_all: {lines:?}", directory.display());
    assert!(wait_until_gone(postmaster, Duration::from_secs(2)).await, "postmaster {postmaster} still runs");
    // The dropped start already sent SIGQUIT; reap_all either waited for the postmaster to end
    // or found it gone.
    let stopped = format!("stopped the local server in {} and removed it", directory.display());
    let removed = format!("removed {}", directory.display());
    assert!(lines == vec![stopped.clone()] || lines == vec![removed], "{lines:?}");
    assert!(directories_owned_by(me).is_empty(), "{lines:?}");
    assert!(reap_all().await.is_empty(), "a second reap_all found more to remove");
}

/// A start dropped once its container exists: `reap_all` removes it by its owner label.
#[tokio::test]
async fn container_start_abandoned_half_way_leaves_nothing_after_reap_all() {
    if !runs_here(Backend::Container).await {
        return;
    }
    let _alone = exclusive().await;
    let me = std::process::id();
    assert!(containers_owned_by(me).await.is_empty(), "left over by an earlier test");
    let lines =
        abandon_start_when(Backend::Container, || async move { !containers_owned_by(me).await.is_empty() }).await;
    assert_eq!(lines.iter().filter(|l| l.starts_with("removed container ")).count(), 1, "{lines:?}");
    assert!(containers_owned_by(me).await.is_empty(), "a container outlived reap_all: {lines:?}");
    assert!(reap_all().await.is_empty(), "a second reap_all found more to remove");
}

/// An image that cannot be had: the error names it and what to do, and nothing of the failed
/// start is left for `reap_all` (no registry entry, so no wait for a container to appear).
#[tokio::test]
async fn container_start_with_a_missing_image_names_it_and_leaves_nothing() {
    if !runs_here(Backend::Container).await {
        return;
    }
    let _alone = exclusive().await;
    let mut config = config(Backend::Container);
    config.image = "labs-test-no-such-image:0".into();
    let err = Server::start(&config, &[]).await.err().expect("an image that does not exist cannot start");
    assert!(matches!(err, ProviderError::ContainerStart { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("labs-test-no-such-image:0") && message.contains("LABS_PG_IMAGE"), "{message}");
    let reaping = Instant::now();
    assert_eq!(reap_all().await, Vec::<String>::new());
    assert!(reaping.elapsed() < Duration::from_millis(500), "reap_all waited for a container never created");
    assert!(containers_owned_by(std::process::id()).await.is_empty());
}

/// Dropping a server that was not shut down only signals: the postmaster goes (SIGQUIT), the
/// directory stays for `reap_all`, which then removes it.
#[tokio::test]
async fn local_server_dropped_without_shutdown_is_signalled_then_reaped() {
    if !runs_here(Backend::Local).await {
        return;
    }
    let _alone = exclusive().await;
    let mut server = Server::start(&config(Backend::Local), &[Capability::FreezeWalWriter]).await.unwrap();
    // A frozen WAL writer must not hold the stop up: the drop lets it go.
    server.freeze_wal_writer().await.unwrap();
    let directory = server.local_directory().unwrap();
    let postmaster = postmaster_pid(&directory.join("primary")).unwrap();
    drop(server);
    assert!(directory.exists(), "drop removed the directory itself (it must only signal)");
    assert!(wait_until_gone(postmaster, Duration::from_secs(10)).await, "postmaster {postmaster} ignored the drop");
    let lines = reap_all().await;
    assert_eq!(lines, vec![format!("removed {}", directory.display())]);
    assert!(!directory.exists());
}

/// Not a test: the child process of the leftover tests. It starts a server of the backend in
/// LABS_TEST_LEFTOVER_BACKEND, says where, and waits to be killed.
#[tokio::test]
#[ignore = "the child process of the leftover tests, which run it; not a test on its own"]
async fn leftover_owner_child_process() {
    let Ok(backend) = std::env::var("LABS_TEST_LEFTOVER_BACKEND") else {
        say("skipped: run by the leftover tests as their child process (LABS_TEST_LEFTOVER_BACKEND)");
        return;
    };
    let backend: Backend = backend.parse().unwrap();
    let server = Server::start(&config(backend), &[]).await.unwrap();
    let directory = server.local_directory().map(|d| d.display().to_string()).unwrap_or_else(|| "-".into());
    println!("leftover-ready {} {directory}", server.url());
    tokio::time::sleep(Duration::from_secs(600)).await;
    drop(server);
}

/// A labs process killed outright (SIGKILL) leaves its server behind. While it lives,
/// `clean_leftovers` leaves that server alone; once it is gone, `clean_leftovers` removes it
/// (postmaster, directory, container) and `find_leftovers` no longer lists it.
async fn leftovers_of_a_killed_process_are_removed_and_a_live_ones_kept(backend: Backend) {
    if !runs_here(backend).await {
        return;
    }
    let _alone = exclusive().await;
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "leftover_owner_child_process", "--ignored", "--nocapture", "--test-threads=1"])
        .env("LABS_TEST_LEFTOVER_BACKEND", backend.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let child_pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // libtest writes "test leftover_owner_child_process ... " before it on the same line.
            if let Some((_, rest)) = line.split_once("leftover-ready ") {
                return rest.to_string();
            }
        }
        panic!("the child ended without starting its server");
    })
    .await
    .expect("the child's server within 120 s");
    let (url, directory) = ready.split_once(' ').unwrap();
    let directory = (directory != "-").then(|| PathBuf::from(directory));
    let answers = |url: String| async move {
        match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                client.simple_query("SELECT 1").await.is_ok()
            }
            Err(_) => false,
        }
    };

    // Alive: never touched.
    clean_leftovers().await.unwrap();
    assert!(answers(url.to_string()).await, "clean_leftovers stopped the server of a live process");
    if let Some(directory) = &directory {
        assert!(directory.exists(), "clean_leftovers removed the directory of a live process");
    }
    if backend == Backend::Container {
        assert_eq!(containers_owned_by(child_pid).await.len(), 1);
    }
    assert!(!find_leftovers().await.unwrap().iter().any(|l| l.owner.pid == child_pid));

    // Killed outright: its server stays behind until the sweep.
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert!(answers(url.to_string()).await, "the server went with its owner; nothing to sweep");
    let found: Vec<_> = find_leftovers().await.unwrap().into_iter().filter(|l| l.owner.pid == child_pid).collect();
    let postmaster = directory.as_ref().and_then(|d| postmaster_pid(&d.join("primary")));
    match backend {
        Backend::Local => {
            let directory = directory.clone().unwrap();
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!(found[0].kind, LeftoverKind::LocalDirectory { path: directory });
        }
        _ => {
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(matches!(found[0].kind, LeftoverKind::Container { .. }), "{found:?}");
        }
    }
    let removed = clean_leftovers().await.unwrap();
    assert!(
        removed.iter().any(|l| l.contains(&format!("labs process {child_pid} is gone"))),
        "nothing removed for {child_pid}: {removed:?}"
    );
    assert!(!answers(url.to_string()).await, "the leftover server still answers");
    if let Some(directory) = &directory {
        assert!(!directory.exists(), "{} is still there", directory.display());
    }
    if let Some(postmaster) = postmaster {
        assert!(wait_until_gone(postmaster, Duration::from_secs(2)).await, "postmaster {postmaster} still runs");
    }
    assert!(containers_owned_by(child_pid).await.is_empty(), "the leftover container is still there");
    assert!(!find_leftovers().await.unwrap().iter().any(|l| l.owner.pid == child_pid));
}

#[tokio::test]
async fn local_leftovers_of_a_killed_process_are_removed_and_a_live_ones_kept() {
    leftovers_of_a_killed_process_are_removed_and_a_live_ones_kept(Backend::Local).await;
}

#[tokio::test]
async fn container_leftovers_of_a_killed_process_are_removed_and_a_live_ones_kept() {
    leftovers_of_a_killed_process_are_removed_and_a_live_ones_kept(Backend::Container).await;
}
