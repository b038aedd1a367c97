//! The PostgreSQL provider: the one place that knows how to get a server.
//!
//! Labs never start servers themselves. They ask for a [`Server`] with the
//! [`Capability`]s they need and get a fresh one (or a fresh database on an existing
//! server), so their output is deterministic and two runs never collide.
//!
//! Backends, chosen with `--pg` or `LABS_PG`:
//! - `container`: testcontainers, image [`DEFAULT_IMAGE`] unless `LABS_PG_IMAGE` says otherwise;
//!   fsync stays on (durability labs are lies with fsync off); the port is published on loopback only.
//! - `local`: initdb + pg_ctl in a temporary directory, from `LABS_PG_BIN`, the binaries on PATH
//!   or through pg_config.
//! - `url`: an existing server (`DATABASE_URL`); the lab runs in a database it creates and drops.
//! - `auto`: container when a Docker engine answers and has the image, else local, else an error
//!   that says how to get either.
//!
//! Every server runs PostgreSQL 14 to 18 ([`SUPPORTED_MAJORS`]); another is refused at start.
//! However the process ends, `reaper.rs` sees that no server, directory or container is left.
//!
//! **Architecture Invariant:** no blocking call on the async runtime here: processes run through
//! tokio, a blocking search (pg_config) on a blocking thread, and `Drop` only sends signals.

mod cluster;
mod container;
mod docker;
mod error;
pub mod image;
mod local;
mod reaper;
mod scripts;
mod url;

use std::fmt;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

pub use docker::DockerEngine;
pub use error::ProviderError;
pub use local::{find_local_binaries, find_local_binaries_async, BIN_SETTING};
pub use reaper::{clean_leftovers, find_leftovers, reap_all, Leftover, LeftoverKind, Owner, CONTAINER_OWNER_LABEL};
pub use scripts::{NodeScript, NODE_SCRIPTS};

/// The image the container backend uses unless `LABS_PG_IMAGE` names another one.
/// Pinned to one PostgreSQL major: every figure in the book was measured on 15.
pub const DEFAULT_IMAGE: &str = "postgres:15";

/// How long a fresh or restarted server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The PostgreSQL majors the labs run on (each lab's statistics are read for the version in
/// use; 18 moved WAL flush counts from pg_stat_wal to pg_stat_io).
pub const SUPPORTED_MAJORS: RangeInclusive<u32> = 14..=18;

/// A server's version, as it reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServerVersion {
    /// `server_version_num`: 150014 for 15.14, 180006 for 18.6.
    pub num: u32,
    /// `server_version`: "15.14 (Debian 15.14-0+deb12u1)", "18.6".
    pub text: String,
}

impl ServerVersion {
    pub fn major(&self) -> u32 {
        self.num / 10000
    }

    /// Reads the version of the server `client` is connected to.
    pub async fn query(client: &Client) -> Result<ServerVersion, ProviderError> {
        let row = client
            .query_one("SELECT current_setting('server_version_num')::int, current_setting('server_version')", &[])
            .await
            .map_err(|source| ProviderError::Statement {
                action: "reading the server's version".into(),
                node: Node::Primary,
                source,
            })?;
        Ok(ServerVersion { num: row.get::<_, i32>(0).max(0) as u32, text: row.get(1) })
    }

    /// Refuses a server outside [`SUPPORTED_MAJORS`], with one line naming both.
    pub fn check_supported(&self) -> Result<(), ProviderError> {
        if SUPPORTED_MAJORS.contains(&self.major()) {
            Ok(())
        } else {
            Err(ProviderError::UnsupportedVersion { version: self.text.clone(), version_num: self.num })
        }
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgreSQL {}", self.text)
    }
}

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
    type Err = ProviderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Backend as clap::ValueEnum>::from_str(s, true).map_err(|_| ProviderError::BadSetting {
            setting: "LABS_PG",
            reason: format!("unknown PostgreSQL backend '{s}': use auto, container, local or url"),
        })
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
    /// `wal_level = logical` from the start, with replication slots and WAL senders to spare
    /// for a few logical slots and a subscription (logical decoding, `test_decoding`, `pgoutput`).
    Logical,
}

impl Capability {
    pub const ALL: [Capability; 6] = [
        Capability::Crash,
        Capability::Restart,
        Capability::FreezeWalWriter,
        Capability::Standby,
        Capability::Archive,
        Capability::Logical,
    ];
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::Crash => "crash",
            Capability::Restart => "restart",
            Capability::FreezeWalWriter => "freeze-wal-writer",
            Capability::Standby => "standby",
            Capability::Archive => "archive",
            Capability::Logical => "logical",
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
                Ok(v) if !v.trim().is_empty() => v.trim().parse()?,
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

/// A running server (or a fresh database on one) that belongs to one lab run.
///
/// [`Server::shutdown`] removes it. Dropped without that (an error, a panic, a lab's future
/// dropped on Ctrl-C), it only gets signals (its local postmasters SIGQUIT); [`reap_all`]
/// removes the rest, and a later run's [`clean_leftovers`] what a killed process left.
pub struct Server {
    inner: ServerKind,
    version: ServerVersion,
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
    /// the lab `needs`, and then that it runs a supported PostgreSQL ([`SUPPORTED_MAJORS`]).
    pub async fn start(config: &ProviderConfig, needs: &[Capability]) -> Result<Server, ProviderError> {
        let backend = resolve_backend(config).await?;
        for &capability in needs {
            if !capabilities_of(backend).contains(&capability) {
                return Err(ProviderError::MissingCapability { backend, capability });
            }
        }
        let settings = settings_for(needs, backend);
        let unknown = ServerVersion { num: 0, text: String::new() };
        let cluster = match backend {
            Backend::Container => container::start(&config.image, &settings).await?,
            Backend::Local => local::start(&settings).await?,
            Backend::Url => {
                let url = config.database_url.as_deref().ok_or(ProviderError::DatabaseUrlMissing)?;
                let (database, version) = url::UrlDatabase::create(url).await?;
                return Ok(Server { inner: ServerKind::Url(database), version });
            }
            Backend::Auto => unreachable!("resolve_backend never returns auto"),
        };
        let mut server = Server { inner: ServerKind::Cluster(cluster), version: unknown };
        let checked = async {
            server.wait_ready(Node::Primary).await?;
            let version = ServerVersion::query(&server.connect().await?).await?;
            version.check_supported()?;
            Ok(version)
        }
        .await;
        match checked {
            Ok(version) => {
                server.version = version;
                Ok(server)
            }
            Err(e) => {
                // The refusal is what the caller needs to hear; the removal is best effort (and
                // what fails here stays registered for `reap_all`).
                let _ = server.shutdown().await;
                Err(e)
            }
        }
    }

    /// The server's PostgreSQL version (checked at start to be in [`SUPPORTED_MAJORS`]).
    pub fn version(&self) -> &ServerVersion {
        &self.version
    }

    /// `server_version_num`, e.g. 180006 for 18.6: for a lab that reads what a version moved.
    pub fn server_version_num(&self) -> u32 {
        self.version.num
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
        let frozen = if node == Node::Primary { c.take_frozen() } else { Vec::new() };
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
        self.cluster_ref(Capability::FreezeWalWriter)?;
        let client = self.connect().await?;
        let row = client
            .query_one("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'", &[])
            .await
            .map_err(statement("finding the WAL writer", Node::Primary))?;
        let pid: i32 = row.get(0);
        let c = self.cluster(Capability::FreezeWalWriter)?;
        c.host.signal(pid, "STOP").await?;
        c.froze(pid);
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
            alter_system(&client, Node::Primary, setting, value).await?;
        }
        Ok(())
    }

    /// Lets the frozen WAL writer run again; it flushes what it held.
    pub async fn thaw_wal_writer(&mut self) -> Result<(), ProviderError> {
        let c = self.cluster(Capability::FreezeWalWriter)?;
        for pid in c.take_frozen() {
            c.host.signal(pid, "CONT").await?;
        }
        Ok(())
    }

    /// Builds a streaming standby from the primary (pg_basebackup -R), starts it, and waits
    /// until it streams. Asynchronous until [`Server::set_synchronous_standby`].
    pub async fn start_standby(&mut self) -> Result<(), ProviderError> {
        let c = self.cluster(Capability::Standby)?;
        if c.standby_running {
            return Err(ProviderError::WrongState {
                action: "start a standby",
                state: "this lab already has one running",
            });
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
        let target: String = primary
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(statement("reading the primary's WAL position", Node::Primary))?
            .get(0);
        self.wait_for(
            Node::Standby,
            "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
            &[&target],
            "the standby to replay what the primary has written",
        )
        .await
    }

    /// Disconnects the standby's WAL receiver (primary_conninfo emptied and reloaded) and
    /// waits until it is gone: from now on the standby receives nothing. Deterministic, unlike
    /// a network fault: what was replayed before stays, nothing after arrives.
    pub async fn pause_standby_receiver(&mut self) -> Result<(), ProviderError> {
        self.cluster_ref(Capability::Standby)?;
        let standby = self.connect_to(Node::Standby).await?;
        let conninfo: String = standby
            .query_one("SHOW primary_conninfo", &[])
            .await
            .map_err(statement("reading primary_conninfo", Node::Standby))?
            .get(0);
        let c = self.cluster(Capability::Standby)?;
        if conninfo.is_empty() {
            return Err(ProviderError::WrongState {
                action: "pause the standby's WAL receiver",
                state: "it is already paused",
            });
        }
        c.paused_conninfo = Some(conninfo);
        alter_system(&standby, Node::Standby, "primary_conninfo", "").await?;
        self.wait_for(Node::Standby, "SELECT count(*) = 0 FROM pg_stat_wal_receiver", &[], "the WAL receiver to stop")
            .await
    }

    /// Reconnects a paused receiver and waits until it streams again.
    pub async fn resume_standby_receiver(&mut self) -> Result<(), ProviderError> {
        let c = self.cluster(Capability::Standby)?;
        let Some(conninfo) = c.paused_conninfo.take() else {
            return Err(ProviderError::WrongState {
                action: "resume the standby's WAL receiver",
                state: "it is not paused",
            });
        };
        let standby = self.connect_to(Node::Standby).await?;
        alter_system(&standby, Node::Standby, "primary_conninfo", &conninfo).await?;
        self.wait_for(
            Node::Standby,
            "SELECT count(*) = 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'",
            &[],
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
        alter_system(&primary, Node::Primary, "synchronous_standby_names", value).await?;
        if on {
            self.wait_for(
                Node::Primary,
                "SELECT count(*) > 0 FROM pg_stat_replication WHERE sync_state = 'sync'",
                &[],
                "the standby to become synchronous",
            )
            .await
        } else {
            self.wait_for(
                Node::Primary,
                "SELECT current_setting('synchronous_standby_names') = ''",
                &[],
                "synchronous replication to be off",
            )
            .await
        }
    }

    /// Promotes the standby to a primary (pg_promote) and waits until it accepts writes.
    pub async fn promote_standby(&mut self) -> Result<(), ProviderError> {
        self.cluster(Capability::Standby)?;
        let standby = self.connect_to(Node::Standby).await?;
        let promoted: bool = standby
            .query_one("SELECT pg_promote(true, 60)", &[])
            .await
            .map_err(statement("promoting the standby (pg_promote)", Node::Standby))?
            .get(0);
        if !promoted {
            return Err(ProviderError::Timeout {
                node: Node::Standby,
                waited_for: "pg_promote to finish",
                seconds: 60,
            });
        }
        self.wait_for(Node::Standby, "SELECT NOT pg_is_in_recovery()", &[], "the promoted standby to accept writes")
            .await
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
        let segment: String = primary
            .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
            .await
            .map_err(statement("switching to a new WAL segment", Node::Primary))?
            .get(0);
        self.wait_for(
            Node::Primary,
            "SELECT coalesce(last_archived_wal >= $1, false) FROM pg_stat_archiver",
            &[&segment],
            "the archiver to copy the closed segment",
        )
        .await?;
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
            return Err(ProviderError::WrongState {
                action: "restore the primary from the archive",
                state: "the primary is running; crash it before restoring over it",
            });
        }
        c.host.restore_primary_from_archive().await?;
        c.primary_running = true;
        self.wait_ready(Node::Primary).await?;
        self.wait_for(Node::Primary, "SELECT NOT pg_is_in_recovery()", &[], "archive recovery to end").await
    }

    /// Removes the servers and everything they wrote (container, temporary directory, database).
    /// Dropping a `Server` instead only signals its servers; see [`reap_all`].
    pub async fn shutdown(self) -> Result<(), ProviderError> {
        match self.inner {
            ServerKind::Cluster(c) => c.remove().await,
            ServerKind::Url(u) => u.drop_database().await,
        }
    }

    /// Polls `check` (one boolean) on a node until it is true.
    async fn wait_for(
        &self,
        node: Node,
        check: &str,
        params: &[&(dyn ToSql + Sync)],
        waited_for: &'static str,
    ) -> Result<(), ProviderError> {
        let client = self.connect_to(node).await?;
        let started = Instant::now();
        while started.elapsed() < READY_TIMEOUT {
            let row = client.query_one(check, params).await.map_err(|source| ProviderError::Statement {
                action: format!("checking for {waited_for}"),
                node,
                source,
            })?;
            if row.get::<_, bool>(0) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(ProviderError::Timeout { node, waited_for, seconds: READY_TIMEOUT.as_secs() })
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
    if needs.contains(&Capability::Logical) {
        // wal_level needs a restart, so it is set before the first start. Ten slots and senders
        // (the defaults, stated so a lab can count on them): a few logical slots, a
        // subscription's apply worker and tablesync workers, and a standby's pg_basebackup.
        settings.push(("wal_level".into(), "logical".into()));
        settings.push(("max_replication_slots".into(), "10".into()));
        settings.push(("max_wal_senders".into(), "10".into()));
    }
    settings
}

/// ALTER SYSTEM and a reload. (ALTER SYSTEM cannot share a multi-statement query: that is
/// one implicit transaction block, which it refuses.)
async fn alter_system(client: &Client, node: Node, setting: &str, value: &str) -> Result<(), ProviderError> {
    let failed = |source| ProviderError::Statement { action: format!("ALTER SYSTEM SET {setting}"), node, source };
    client
        .batch_execute(&format!("ALTER SYSTEM SET {setting} = '{}'", value.replace('\'', "''")))
        .await
        .map_err(failed)?;
    client.batch_execute("SELECT pg_reload_conf()").await.map_err(|source| ProviderError::Statement {
        action: "reloading the configuration (pg_reload_conf)".into(),
        node,
        source,
    })
}

/// Maps a failed statement to [`ProviderError::Statement`] with what it was doing.
fn statement(action: &'static str, node: Node) -> impl FnOnce(tokio_postgres::Error) -> ProviderError {
    move |source| ProviderError::Statement { action: action.into(), node, source }
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
            DockerEngine::detect().await?;
            Ok(Backend::Container)
        }
        Backend::Local => {
            find_local_binaries_async().await?;
            Ok(Backend::Local)
        }
        Backend::Url => {
            config.database_url.as_ref().ok_or(ProviderError::DatabaseUrlMissing)?;
            Ok(Backend::Url)
        }
        Backend::Auto => {
            let docker = DockerEngine::detect().await;
            let local = find_local_binaries_async().await;
            match (docker, local) {
                // The image is there: the container backend works offline.
                (Ok(engine), _) if engine.has_image(&config.image).await => Ok(Backend::Container),
                // No image yet: local binaries avoid a download in the middle of a lab.
                (Ok(_), Ok(_)) => Ok(Backend::Local),
                // Docker without the image and no binaries: let testcontainers pull it.
                (Ok(_), Err(_)) => Ok(Backend::Container),
                (Err(_), Ok(_)) => Ok(Backend::Local),
                (Err(docker), Err(local)) => {
                    Err(ProviderError::NothingAvailable { docker: docker.reason(), local: local.reason() })
                }
            }
        }
    }
}
