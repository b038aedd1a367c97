//! The PostgreSQL provider: the one place that knows how to get a server.
//!
//! Labs never start servers themselves. They ask for a [`Server`] with the
//! [`Capability`]s they need and get a fresh one (or a fresh database on an existing
//! server), so their output is deterministic and two runs never collide.
//!
//! Backends, chosen with `--pg` or `LABS_PG`:
//! - `container`: testcontainers, image [`DEFAULT_IMAGE`] unless `LABS_PG_IMAGE` says otherwise;
//!   fsync stays on (durability labs are lies with fsync off); the port is published on loopback only.
//! - `local`: initdb + pg_ctl in a temporary directory, from binaries on PATH or through pg_config.
//! - `url`: an existing server (`DATABASE_URL`); the lab runs in a database it creates and drops.
//! - `auto`: container when a Docker engine answers and has the image, else local, else an error
//!   that says how to get either.

mod cluster;
mod container;
mod docker;
mod local;
mod url;

use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::{Client, NoTls};

pub use docker::DockerEngine;
pub use local::find_local_binaries;

/// The image the container backend uses unless `LABS_PG_IMAGE` names another one.
/// Pinned to one PostgreSQL major: every figure in the book was measured on 15.
pub const DEFAULT_IMAGE: &str = "postgres:15";

/// How long a fresh or restarted server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Which way to get a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Container if a Docker engine answers and has the image, else local binaries.
    Auto,
    /// A throwaway container (testcontainers).
    Container,
    /// initdb + pg_ctl in a temporary directory.
    Local,
    /// An existing server from DATABASE_URL; the lab uses a database it creates and drops.
    Url,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::Container => "container",
            Backend::Local => "local",
            Backend::Url => "url",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Backend as clap::ValueEnum>::from_str(s, true)
            .map_err(|_| format!("unknown PostgreSQL backend '{s}': use auto, container, local or url"))
    }
}

/// What a lab may need to do to its server beyond running SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// Stop the server at once, as a crash would (immediate stop: SIGQUIT to the postmaster).
    Crash,
    /// Start it again after a crash; it runs crash recovery.
    Restart,
    /// Freeze and thaw the WAL writer (SIGSTOP, SIGCONT). A crash while it is frozen loses the
    /// WAL it had not flushed, as an operating-system crash loses unflushed writes.
    FreezeWalWriter,
    /// A streaming standby built from the primary with pg_basebackup: pause its WAL receiver,
    /// promote it, make it synchronous.
    Standby,
    /// WAL archiving from the first moment, a base backup, and a restore from both.
    Archive,
}

impl Capability {
    pub const ALL: [Capability; 5] =
        [Capability::Crash, Capability::Restart, Capability::FreezeWalWriter, Capability::Standby, Capability::Archive];
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::Crash => "crash",
            Capability::Restart => "restart",
            Capability::FreezeWalWriter => "freeze-wal-writer",
            Capability::Standby => "standby",
            Capability::Archive => "archive",
        })
    }
}

/// Where and how to get servers: the `--pg` choice plus the environment.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub backend: Backend,
    /// Image for the container backend (`LABS_PG_IMAGE`).
    pub image: String,
    /// Server for the url backend (`DATABASE_URL`).
    pub database_url: Option<String>,
}

impl ProviderConfig {
    /// `backend` from the command line wins over `LABS_PG`; both default to auto.
    pub fn from_env(backend: Option<Backend>) -> Result<Self, ProviderError> {
        let backend = match backend {
            Some(b) => b,
            None => match std::env::var("LABS_PG") {
                Ok(v) if !v.trim().is_empty() => {
                    v.trim().parse().map_err(|reason| ProviderError::BadSetting { setting: "LABS_PG", reason })?
                }
                _ => Backend::Auto,
            },
        };
        let image = std::env::var("LABS_PG_IMAGE")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_IMAGE.to_string());
        let database_url = std::env::var("DATABASE_URL").ok().filter(|v| !v.trim().is_empty());
        Ok(ProviderConfig { backend, image, database_url })
    }
}

/// Errors a caller can branch on: each says what happened and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{setting} is set to an invalid value: {reason}")]
    BadSetting { setting: &'static str, reason: String },
    #[error(
        "no PostgreSQL server available: no Docker engine answered ({docker}) and no PostgreSQL \
         binaries were found ({local}).\n\
         Fix one of these, then run `labs doctor`:\n\
         - start Docker (or Podman with its socket, and DOCKER_HOST=unix://$XDG_RUNTIME_DIR/podman/podman.sock);\n\
         - install PostgreSQL's server binaries (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@15), \
         so initdb and pg_ctl are on PATH or pg_config finds them;\n\
         - or point DATABASE_URL at a server you own and use --pg url."
    )]
    NothingAvailable { docker: String, local: String },
    #[error("--pg container: no Docker engine answered ({0}). Start Docker (or Podman, see the setup page), or use --pg local")]
    DockerUnavailable(String),
    #[error("--pg container: could not start image {image}: {reason}\nRun `cargo xtask prepare` while online, or set LABS_PG_IMAGE to an image you have (docker images)")]
    ContainerStart { image: String, reason: String },
    #[error("--pg local: {0}")]
    LocalUnavailable(String),
    #[error("--pg local: {step} failed: {detail}")]
    LocalServer { step: String, detail: String },
    #[error("--pg url: DATABASE_URL is not set. Set it to a server you own, e.g. DATABASE_URL=postgres://me@localhost/postgres")]
    DatabaseUrlMissing,
    #[error("--pg url: {0}")]
    Url(String),
    #[error("this lab needs the '{capability}' capability, which the {backend} backend does not offer (an existing server cannot be crashed, frozen or given a standby); use --pg container or --pg local")]
    MissingCapability { backend: Backend, capability: Capability },
    #[error("{0}")]
    Replication(String),
    #[error("the server at {endpoint} did not accept connections within {seconds} s: {last_error}")]
    NotReady { endpoint: String, seconds: u64, last_error: String },
    #[error("server control failed ({action}): {detail}")]
    Control { action: &'static str, detail: String },
    #[error("could not connect to {endpoint}: {source}")]
    Connect { endpoint: String, source: tokio_postgres::Error },
}

/// A running server (or a fresh database on one) that belongs to one lab run.
pub struct Server {
    inner: ServerKind,
}

#[allow(clippy::large_enum_variant, reason = "one per lab run, never in a collection: boxing saves nothing")]
enum ServerKind {
    Cluster(cluster::Cluster),
    Url(url::UrlDatabase),
}

/// Which node of a lab's cluster a statement goes to.
pub use cluster::Node;

impl Server {
    /// Gets a fresh server from the configured backend, checking first that it can do what
    /// the lab `needs`.
    pub async fn start(config: &ProviderConfig, needs: &[Capability]) -> Result<Server, ProviderError> {
        let backend = resolve_backend(config).await?;
        for &capability in needs {
            if !capabilities_of(backend).contains(&capability) {
                return Err(ProviderError::MissingCapability { backend, capability });
            }
        }
        let settings = settings_for(needs, backend);
        let inner = match backend {
            Backend::Container => ServerKind::Cluster(container::start(&config.image, &settings).await?),
            Backend::Local => ServerKind::Cluster(local::start(&settings).await?),
            Backend::Url => {
                let url = config.database_url.as_deref().ok_or(ProviderError::DatabaseUrlMissing)?;
                ServerKind::Url(url::UrlDatabase::create(url).await?)
            }
            Backend::Auto => unreachable!("resolve_backend never returns auto"),
        };
        let server = Server { inner };
        server.wait_ready(Node::Primary).await?;
        Ok(server)
    }

    /// The backend actually in use (never `auto`).
    pub fn backend(&self) -> Backend {
        match &self.inner {
            ServerKind::Cluster(c) if c.image.is_some() => Backend::Container,
            ServerKind::Cluster(_) => Backend::Local,
            ServerKind::Url(_) => Backend::Url,
        }
    }

    /// One line for people: which backend, where.
    pub fn describe(&self) -> String {
        match &self.inner {
            ServerKind::Cluster(c) => match &c.image {
                Some(image) => format!("container {image} on {}", self.endpoint()),
                None => format!("local server in {} on {}", c.host.root(), self.endpoint()),
            },
            ServerKind::Url(u) => format!("database {} on {}", u.database(), self.endpoint()),
        }
    }

    /// The local backend's temporary directory (data, sockets, logs, archive), removed on shutdown.
    pub fn local_directory(&self) -> Option<std::path::PathBuf> {
        match &self.inner {
            ServerKind::Cluster(c) if c.image.is_none() => Some(c.host.root().into()),
            _ => None,
        }
    }

    pub fn capabilities(&self) -> &'static [Capability] {
        capabilities_of(self.backend())
    }

    /// Connection settings for this lab's database on the primary.
    pub fn config(&self) -> tokio_postgres::Config {
        self.node_config(Node::Primary)
    }

    /// Connection settings for one node (the standby's are meaningful once it exists).
    pub fn node_config(&self, node: Node) -> tokio_postgres::Config {
        match &self.inner {
            ServerKind::Cluster(c) => c.config(node),
            ServerKind::Url(u) => u.config(),
        }
    }

    /// A `postgres://` URL for tools such as psql (the password is the throwaway one).
    pub fn url(&self) -> String {
        let c = self.config();
        let host = match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "localhost".into(),
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        let user = c.get_user().unwrap_or("postgres");
        let db = c.get_dbname().unwrap_or("postgres");
        match c.get_password() {
            Some(p) => format!("postgres://{user}:{}@{host}:{port}/{db}", String::from_utf8_lossy(p)),
            None => format!("postgres://{user}@{host}:{port}/{db}"),
        }
    }

    fn endpoint(&self) -> String {
        endpoint_of(&self.config())
    }

    /// A new session on the primary. The connection task runs in the background until the
    /// client is dropped.
    pub async fn connect(&self) -> Result<Client, ProviderError> {
        self.connect_to(Node::Primary).await
    }

    /// A new session on one node.
    pub async fn connect_to(&self, node: Node) -> Result<Client, ProviderError> {
        let config = self.node_config(node);
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|source| ProviderError::Connect { endpoint: endpoint_of(&config), source })?;
        tokio::spawn(async move {
            // A connection error surfaces on the client's next query; nothing to report here.
            let _ = connection.await;
        });
        Ok(client)
    }

    fn cluster(&mut self, capability: Capability) -> Result<&mut cluster::Cluster, ProviderError> {
        match &mut self.inner {
            ServerKind::Cluster(c) => Ok(c),
            ServerKind::Url(_) => Err(ProviderError::MissingCapability { backend: Backend::Url, capability }),
        }
    }

    fn cluster_ref(&self, capability: Capability) -> Result<&cluster::Cluster, ProviderError> {
        match &self.inner {
            ServerKind::Cluster(c) => Ok(c),
            ServerKind::Url(_) => Err(ProviderError::MissingCapability { backend: Backend::Url, capability }),
        }
    }

    /// Stops the primary at once, as a crash would: no checkpoint, no flush of unwritten WAL.
    /// A frozen WAL writer is killed without running, so what it held is lost.
    pub async fn crash(&mut self) -> Result<(), ProviderError> {
        self.crash_node(Node::Primary).await
    }

    /// Crashes one node (the standby too can crash).
    pub async fn crash_node(&mut self, node: Node) -> Result<(), ProviderError> {
        let c = self.cluster(Capability::Crash)?;
        let frozen = if node == Node::Primary { std::mem::take(&mut c.frozen) } else { Vec::new() };
        c.host.crash(node, &frozen).await?;
        match node {
            Node::Primary => c.primary_running = false,
            Node::Standby => c.standby_running = false,
        }
        Ok(())
    }

    /// Starts the primary again after [`Server::crash`] and waits until it accepts connections
    /// (crash recovery has then finished). Reconnect: old sessions are gone.
    pub async fn restart(&mut self) -> Result<(), ProviderError> {
        self.restart_node(Node::Primary).await
    }

    /// Starts a crashed node again.
    pub async fn restart_node(&mut self, node: Node) -> Result<(), ProviderError> {
        let c = self.cluster(Capability::Restart)?;
        c.host.start(node).await?;
        match node {
            Node::Primary => c.primary_running = true,
            Node::Standby => c.standby_running = true,
        }
        self.wait_ready(node).await
    }

    /// Freezes the primary's WAL writer (SIGSTOP). Commits with synchronous_commit = off then
    /// stay in shared memory until a backend flushes for its own reasons (a synchronous commit,
    /// full WAL buffers, a dirty page written out): a crash now loses them, as an OS crash
    /// loses what the WAL writer had not flushed. Returns its process id.
    pub async fn freeze_wal_writer(&mut self) -> Result<i32, ProviderError> {
        let client = self.connect().await?;
        let row = client
            .query_one("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'", &[])
            .await
            .map_err(|e| ProviderError::Control { action: "find the WAL writer", detail: e.to_string() })?;
        let pid: i32 = row.get(0);
        let c = self.cluster(Capability::FreezeWalWriter)?;
        c.host.signal(pid, "STOP").await?;
        c.frozen.push(pid);
        Ok(pid)
    }

    /// Stops every other process from flushing WAL during a lab, so that what a crash with a
    /// frozen WAL writer loses is decided by the lab's script: no autovacuum, no background
    /// writer page writes (each would flush WAL up to its page first), no timed checkpoint.
    /// All reloadable; part of the freeze capability, since it changes server-wide settings.
    pub async fn quiet_background_wal_writes(&self) -> Result<(), ProviderError> {
        self.cluster_ref(Capability::FreezeWalWriter)?;
        let client = self.connect().await?;
        for (setting, value) in [
            ("autovacuum", "off"),
            ("bgwriter_lru_maxpages", "0"),
            ("checkpoint_timeout", "1h"),
            ("max_wal_size", "4GB"),
        ] {
            alter_system(&client, setting, value).await?;
        }
        Ok(())
    }

    /// Lets the frozen WAL writer run again; it flushes what it held.
    pub async fn thaw_wal_writer(&mut self) -> Result<(), ProviderError> {
        let c = self.cluster(Capability::FreezeWalWriter)?;
        for pid in std::mem::take(&mut c.frozen) {
            c.host.signal(pid, "CONT").await?;
        }
        Ok(())
    }

    /// Builds a streaming standby from the primary (pg_basebackup -R), starts it, and waits
    /// until it streams. Asynchronous until [`Server::set_synchronous_standby`].
    pub async fn start_standby(&mut self) -> Result<(), ProviderError> {
        let c = self.cluster(Capability::Standby)?;
        if c.standby_running {
            return Err(ProviderError::Replication("this lab already has a standby".into()));
        }
        c.host.create_standby(c.primary.inside, c.standby.inside).await?;
        c.standby_running = true;
        self.wait_ready(Node::Standby).await?;
        self.wait_standby_caught_up().await
    }

    /// Waits until the standby has replayed everything the primary has written so far.
    pub async fn wait_standby_caught_up(&self) -> Result<(), ProviderError> {
        self.cluster_ref(Capability::Standby)?;
        let primary = self.connect().await?;
        let target: String =
            primary.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.map_err(replication)?.get(0);
        let check = format!("SELECT coalesce(pg_last_wal_replay_lsn() >= '{target}'::pg_lsn, false)");
        self.wait_for(Node::Standby, &check, "the standby to replay what the primary has written").await
    }

    /// Disconnects the standby's WAL receiver (primary_conninfo emptied and reloaded) and
    /// waits until it is gone: from now on the standby receives nothing. Deterministic, unlike
    /// a network fault: what was replayed before stays, nothing after arrives.
    pub async fn pause_standby_receiver(&mut self) -> Result<(), ProviderError> {
        let standby = self.connect_to(Node::Standby).await?;
        let conninfo: String = standby.query_one("SHOW primary_conninfo", &[]).await.map_err(replication)?.get(0);
        let c = self.cluster(Capability::Standby)?;
        if conninfo.is_empty() {
            return Err(ProviderError::Replication("the standby's receiver is already paused".into()));
        }
        c.paused_conninfo = Some(conninfo);
        alter_system(&standby, "primary_conninfo", "").await?;
        self.wait_for(Node::Standby, "SELECT count(*) = 0 FROM pg_stat_wal_receiver", "the WAL receiver to stop").await
    }

    /// Reconnects a paused receiver and waits until it streams again.
    pub async fn resume_standby_receiver(&mut self) -> Result<(), ProviderError> {
        let c = self.cluster(Capability::Standby)?;
        let Some(conninfo) = c.paused_conninfo.take() else {
            return Err(ProviderError::Replication("the standby's receiver is not paused".into()));
        };
        let standby = self.connect_to(Node::Standby).await?;
        alter_system(&standby, "primary_conninfo", &conninfo).await?;
        self.wait_for(
            Node::Standby,
            "SELECT count(*) = 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'",
            "the WAL receiver to stream",
        )
        .await
    }

    /// Makes every standby synchronous (`synchronous_standby_names = '*'`) or none. With it on,
    /// a commit on the primary returns only once the standby has flushed it (synchronous_commit
    /// = on), and waits for as long as the standby does not answer.
    pub async fn set_synchronous_standby(&mut self, on: bool) -> Result<(), ProviderError> {
        self.cluster(Capability::Standby)?;
        let primary = self.connect().await?;
        let value = if on { "*" } else { "" };
        alter_system(&primary, "synchronous_standby_names", value).await?;
        if on {
            self.wait_for(
                Node::Primary,
                "SELECT count(*) > 0 FROM pg_stat_replication WHERE sync_state = 'sync'",
                "the standby to become synchronous",
            )
            .await
        } else {
            self.wait_for(
                Node::Primary,
                "SELECT current_setting('synchronous_standby_names') = ''",
                "synchronous replication to be off",
            )
            .await
        }
    }

    /// Promotes the standby to a primary (pg_promote) and waits until it accepts writes.
    pub async fn promote_standby(&mut self) -> Result<(), ProviderError> {
        self.cluster(Capability::Standby)?;
        let standby = self.connect_to(Node::Standby).await?;
        let promoted: bool = standby.query_one("SELECT pg_promote(true, 60)", &[]).await.map_err(replication)?.get(0);
        if !promoted {
            return Err(ProviderError::Replication("pg_promote did not finish within 60 s".into()));
        }
        self.wait_for(Node::Standby, "SELECT NOT pg_is_in_recovery()", "the promoted standby to accept writes").await
    }

    /// Takes a base backup of the primary (archiving has been on since the server started).
    pub async fn take_base_backup(&mut self) -> Result<(), ProviderError> {
        let c = self.cluster(Capability::Archive)?;
        c.host.base_backup(c.primary.inside).await
    }

    /// Closes the current WAL segment (pg_switch_wal) and waits until the archiver has copied
    /// it: everything committed so far is then in the archive. Returns the segment's name.
    pub async fn switch_wal_and_wait_archived(&mut self) -> Result<String, ProviderError> {
        self.cluster(Capability::Archive)?;
        let primary = self.connect().await?;
        let segment: String =
            primary.query_one("SELECT pg_walfile_name(pg_switch_wal())", &[]).await.map_err(replication)?.get(0);
        let check = format!("SELECT coalesce(last_archived_wal >= '{segment}', false) FROM pg_stat_archiver");
        self.wait_for(Node::Primary, &check, "the archiver to copy the closed segment").await?;
        Ok(segment)
    }

    /// The segments in the WAL archive.
    pub async fn archived_segments(&self) -> Result<Vec<String>, ProviderError> {
        self.cluster_ref(Capability::Archive)?.host.archived_segments().await
    }

    /// The primary's disk is lost: its data directory is replaced by the base backup, which
    /// recovers from the archived WAL and becomes a primary again. Crash it first.
    pub async fn restore_primary_from_archive(&mut self) -> Result<(), ProviderError> {
        let c = self.cluster(Capability::Archive)?;
        if c.primary_running {
            return Err(ProviderError::Replication("the primary is running; crash it before restoring over it".into()));
        }
        c.host.restore_primary_from_archive().await?;
        c.primary_running = true;
        self.wait_ready(Node::Primary).await?;
        self.wait_for(Node::Primary, "SELECT NOT pg_is_in_recovery()", "archive recovery to end").await
    }

    /// Removes the servers and everything they wrote (container, temporary directory, database).
    /// Dropping a `Server` does the same on a best-effort basis; this reports errors.
    pub async fn shutdown(self) -> Result<(), ProviderError> {
        match self.inner {
            ServerKind::Cluster(c) => match c.host {
                cluster::Host::Container { container } => container::remove(container).await,
                host @ cluster::Host::Local(_) => host.stop_all().await,
            },
            ServerKind::Url(u) => u.drop_database().await,
        }
    }

    /// Polls `check` (one boolean) on a node until it is true.
    async fn wait_for(&self, node: Node, check: &str, what: &str) -> Result<(), ProviderError> {
        let client = self.connect_to(node).await?;
        let started = Instant::now();
        while started.elapsed() < READY_TIMEOUT {
            if client.query_one(check, &[]).await.map_err(replication)?.get::<_, bool>(0) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(ProviderError::Replication(format!("gave up waiting {} s for {what}", READY_TIMEOUT.as_secs())))
    }

    async fn wait_ready(&self, node: Node) -> Result<(), ProviderError> {
        let config = self.node_config(node);
        let started = Instant::now();
        let mut last_error = String::new();
        while started.elapsed() < READY_TIMEOUT {
            match config.connect(NoTls).await {
                Ok((client, connection)) => {
                    let task = tokio::spawn(connection);
                    let ready = client.simple_query("SELECT 1").await;
                    drop(client);
                    let _ = task.await;
                    match ready {
                        Ok(_) => return Ok(()),
                        Err(e) => last_error = e.to_string(),
                    }
                }
                Err(e) => last_error = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(ProviderError::NotReady { endpoint: endpoint_of(&config), seconds: READY_TIMEOUT.as_secs(), last_error })
    }
}

/// Server settings a lab's needs imply, fixed when the server is created.
fn settings_for(needs: &[Capability], backend: Backend) -> Vec<(String, String)> {
    let mut settings = Vec::new();
    if needs.contains(&Capability::Archive) {
        let archive = match backend {
            Backend::Container => format!("{}/archive", cluster::CONTAINER_ROOT),
            _ => "%ROOT%/archive".to_string(), // replaced by the local host's directory
        };
        settings.push(("archive_mode".into(), "on".into()));
        // Never overwrite a segment already archived (the documentation's example does the same).
        settings.push(("archive_command".into(), format!("test ! -f '{archive}/%f' && cp '%p' '{archive}/%f'")));
    }
    settings
}

/// ALTER SYSTEM and a reload. (ALTER SYSTEM cannot share a multi-statement query: that is
/// one implicit transaction block, which it refuses.)
async fn alter_system(client: &Client, setting: &str, value: &str) -> Result<(), ProviderError> {
    client
        .batch_execute(&format!("ALTER SYSTEM SET {setting} = '{}'", value.replace('\'', "''")))
        .await
        .map_err(replication)?;
    client.batch_execute("SELECT pg_reload_conf()").await.map_err(replication)
}

fn replication(e: tokio_postgres::Error) -> ProviderError {
    ProviderError::Replication(match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    })
}

fn endpoint_of(c: &tokio_postgres::Config) -> String {
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(other) => format!("{other:?}"),
        None => "?".into(),
    };
    format!("{host}:{}", c.get_ports().first().copied().unwrap_or(5432))
}

/// What a backend can do to its servers.
pub fn capabilities_of(backend: Backend) -> &'static [Capability] {
    match backend {
        Backend::Container | Backend::Local => &Capability::ALL,
        Backend::Url | Backend::Auto => &[],
    }
}

/// Turns `auto` into a concrete backend, and checks that a concrete choice can work at all.
pub async fn resolve_backend(config: &ProviderConfig) -> Result<Backend, ProviderError> {
    match config.backend {
        Backend::Container => {
            DockerEngine::detect().await.map_err(ProviderError::DockerUnavailable)?;
            Ok(Backend::Container)
        }
        Backend::Local => {
            find_local_binaries().map_err(ProviderError::LocalUnavailable)?;
            Ok(Backend::Local)
        }
        Backend::Url => {
            config.database_url.as_ref().ok_or(ProviderError::DatabaseUrlMissing)?;
            Ok(Backend::Url)
        }
        Backend::Auto => {
            let docker = DockerEngine::detect().await;
            let local = find_local_binaries();
            match (docker, local) {
                // The image is there: the container backend works offline.
                (Ok(engine), _) if engine.has_image(&config.image).await => Ok(Backend::Container),
                // No image yet: local binaries avoid a download in the middle of a lab.
                (Ok(_), Ok(_)) => Ok(Backend::Local),
                // Docker without the image and no binaries: let testcontainers pull it.
                (Ok(_), Err(_)) => Ok(Backend::Container),
                (Err(_), Ok(_)) => Ok(Backend::Local),
                (Err(docker), Err(local)) => Err(ProviderError::NothingAvailable { docker, local }),
            }
        }
    }
}

// ---- TEMPORARY until the provider branch lands (reaper, leftovers, async binary search) ----
/// Removes every server this process started that is still registered. (Provider branch.)
pub async fn reap_all() -> Vec<String> {
    Vec::new()
}
/// Removes leftovers of killed labs processes. (Provider branch.)
pub async fn clean_leftovers() -> Result<Vec<String>, ProviderError> {
    Ok(Vec::new())
}
/// Lists leftovers of killed labs processes. (Provider branch.)
pub async fn find_leftovers() -> Result<Vec<String>, ProviderError> {
    Ok(Vec::new())
}
