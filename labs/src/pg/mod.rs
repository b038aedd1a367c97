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
    /// Stop the server at once, as a crash would (`pg_ctl stop -m immediate`, SIGQUIT).
    Crash,
    /// Start it again after a crash; it runs crash recovery.
    Restart,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::Crash => "crash",
            Capability::Restart => "restart",
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
                Ok(v) if !v.trim().is_empty() => v
                    .trim()
                    .parse()
                    .map_err(|reason| ProviderError::BadSetting { setting: "LABS_PG", reason })?,
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
    #[error("this lab needs to {capability} the server, which the {backend} backend cannot do; use --pg container or --pg local")]
    MissingCapability { backend: Backend, capability: Capability },
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

enum ServerKind {
    Container(container::ContainerServer),
    Local(local::LocalServer),
    Url(url::UrlDatabase),
}

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
        let inner = match backend {
            Backend::Container => ServerKind::Container(container::ContainerServer::start(&config.image).await?),
            Backend::Local => ServerKind::Local(local::LocalServer::start().await?),
            Backend::Url => {
                let url = config.database_url.as_deref().ok_or(ProviderError::DatabaseUrlMissing)?;
                ServerKind::Url(url::UrlDatabase::create(url).await?)
            }
            Backend::Auto => unreachable!("resolve_backend never returns auto"),
        };
        let server = Server { inner };
        server.wait_ready().await?;
        Ok(server)
    }

    /// The backend actually in use (never `auto`).
    pub fn backend(&self) -> Backend {
        match self.inner {
            ServerKind::Container(_) => Backend::Container,
            ServerKind::Local(_) => Backend::Local,
            ServerKind::Url(_) => Backend::Url,
        }
    }

    /// One line for people: which backend, where.
    pub fn describe(&self) -> String {
        match &self.inner {
            ServerKind::Container(c) => format!("container {} on {}", c.image(), self.endpoint()),
            ServerKind::Local(l) => format!("local server from {} on {}", l.bin_dir().display(), self.endpoint()),
            ServerKind::Url(u) => format!("database {} on {}", u.database(), self.endpoint()),
        }
    }

    /// The local backend's temporary directory (data, socket, log), removed on shutdown.
    pub fn local_directory(&self) -> Option<&std::path::Path> {
        match &self.inner {
            ServerKind::Local(l) => Some(l.directory()),
            _ => None,
        }
    }

    pub fn capabilities(&self) -> &'static [Capability] {
        capabilities_of(self.backend())
    }

    /// Connection settings for this lab's database.
    pub fn config(&self) -> tokio_postgres::Config {
        match &self.inner {
            ServerKind::Container(c) => c.config(),
            ServerKind::Local(l) => l.config(),
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
        let c = self.config();
        let host = match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(other) => format!("{other:?}"),
            None => "?".into(),
        };
        format!("{host}:{}", c.get_ports().first().copied().unwrap_or(5432))
    }

    /// A new session. The connection task runs in the background until the client is dropped.
    pub async fn connect(&self) -> Result<Client, ProviderError> {
        let (client, connection) = self
            .config()
            .connect(NoTls)
            .await
            .map_err(|source| ProviderError::Connect { endpoint: self.endpoint(), source })?;
        tokio::spawn(async move {
            // A connection error surfaces on the client's next query; nothing to report here.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Stops the server at once, as a crash would: no checkpoint, no flush of unwritten WAL.
    pub async fn crash(&mut self) -> Result<(), ProviderError> {
        match &mut self.inner {
            ServerKind::Container(c) => c.crash().await,
            ServerKind::Local(l) => l.crash().await,
            ServerKind::Url(_) => Err(ProviderError::MissingCapability { backend: Backend::Url, capability: Capability::Crash }),
        }
    }

    /// Starts the server again after [`Server::crash`] and waits until it accepts connections
    /// (crash recovery has then finished). The port may change with containers: reconnect.
    pub async fn restart(&mut self) -> Result<(), ProviderError> {
        match &mut self.inner {
            ServerKind::Container(c) => c.restart().await?,
            ServerKind::Local(l) => l.restart().await?,
            ServerKind::Url(_) => {
                return Err(ProviderError::MissingCapability { backend: Backend::Url, capability: Capability::Restart })
            }
        }
        self.wait_ready().await
    }

    /// Removes the server and everything it wrote (container, temporary directory, database).
    /// Dropping a `Server` does the same on a best-effort basis; this reports errors.
    pub async fn shutdown(self) -> Result<(), ProviderError> {
        match self.inner {
            ServerKind::Container(c) => c.remove().await,
            ServerKind::Local(l) => l.stop().await,
            ServerKind::Url(u) => u.drop_database().await,
        }
    }

    async fn wait_ready(&self) -> Result<(), ProviderError> {
        let started = Instant::now();
        let mut last_error = String::new();
        while started.elapsed() < READY_TIMEOUT {
            match self.config().connect(NoTls).await {
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
        Err(ProviderError::NotReady { endpoint: self.endpoint(), seconds: READY_TIMEOUT.as_secs(), last_error })
    }
}

fn capabilities_of(backend: Backend) -> &'static [Capability] {
    match backend {
        Backend::Container | Backend::Local => &[Capability::Crash, Capability::Restart],
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
