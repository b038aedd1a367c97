//! The PostgreSQL provider: every backend gives a working server, crash and restart keep what
//! was committed, and a backend without a capability says so instead of pretending.
//!
//! Container tests need a Docker engine with the image (LABS_PG_IMAGE, default postgres:15);
//! they are skipped only when LABS_PG=local or url says this machine has no containers.
//! Local tests need PostgreSQL's server binaries (see `labs doctor`).

use labs::pg::{Backend, Capability, ProviderConfig, ProviderError, Server};

fn config(backend: Backend) -> ProviderConfig {
    let mut config = ProviderConfig::from_env(Some(backend)).unwrap();
    config.backend = backend;
    config
}

fn containers_expected() -> bool {
    !matches!(std::env::var("LABS_PG").as_deref(), Ok("local") | Ok("url"))
}

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
    let directory = server.local_directory().map(|d| d.to_path_buf());
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
        eprintln!("skipped: LABS_PG says this machine runs without containers");
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
    let exists: bool = b
        .connect()
        .await
        .unwrap()
        .query_one("SELECT to_regclass('only_in_a') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
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
    let left: i64 = admin.query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&database]).await.unwrap().get(0);
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
