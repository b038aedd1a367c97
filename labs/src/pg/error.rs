//! The provider's one error type. Each variant says what happened, where, and what to do next;
//! callers branch on the variant (a missing capability is not a failed statement).

use std::path::PathBuf;

use super::{Backend, Capability, Node, SUPPORTED_MAJORS};

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
         so initdb and pg_ctl are on PATH or pg_config finds them, or set LABS_PG_BIN to their directory;\n\
         - or point DATABASE_URL at a server you own and use --pg url."
    )]
    NothingAvailable { docker: String, local: String },
    #[error("no Docker engine answered at {socket}: {reason}. Start Docker (or Podman, see the setup page), or use --pg local")]
    DockerUnavailable { socket: String, reason: String },
    #[error("the Docker engine at {socket} failed to {action}: {reason}")]
    Docker { socket: String, action: String, reason: String },
    #[error("--pg container: could not start image {image}: {reason}\nRun `cargo xtask prepare` while online, or set LABS_PG_IMAGE to an image you have (docker images)")]
    ContainerStart { image: String, reason: String },
    #[error("--pg container: {action} failed: {source}")]
    Container {
        action: &'static str,
        #[source]
        source: testcontainers::TestcontainersError,
    },
    #[error("--pg local: {reason}")]
    LocalUnavailable { reason: String },
    #[error("--pg local: {action} ({path}) failed: {source}")]
    LocalSetup {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{action} failed (script {script}.sh): {detail}")]
    NodeScript { script: &'static str, action: &'static str, detail: String },
    #[error("--pg url: DATABASE_URL is not set. Set it to a server you own, e.g. DATABASE_URL=postgres://me@localhost/postgres")]
    DatabaseUrlMissing,
    #[error(
        "--pg url: DATABASE_URL is not a valid connection string ({source}); e.g. postgres://me@localhost/postgres"
    )]
    DatabaseUrlInvalid {
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("--pg url: could not {action} database {database}: {source}{hint}")]
    UrlDatabase {
        action: &'static str,
        database: String,
        hint: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("this lab needs the '{capability}' capability, which the {backend} backend does not offer (an existing server cannot be crashed, frozen, given a standby or reconfigured); use --pg container or --pg local")]
    MissingCapability { backend: Backend, capability: Capability },
    #[error(
        "PostgreSQL {version} is not supported: the labs run on PostgreSQL {} to {}. \
         Use a server in that range (LABS_PG_BIN for --pg local, LABS_PG_IMAGE for --pg container)",
        SUPPORTED_MAJORS.start(), SUPPORTED_MAJORS.end()
    )]
    UnsupportedVersion { version: String, version_num: u32 },
    #[error("the server at {endpoint} did not accept connections within {seconds} s: {last_error}")]
    NotReady { endpoint: String, seconds: u64, last_error: String },
    #[error("gave up after {seconds} s waiting on the {node} for {waited_for}")]
    Timeout { node: Node, waited_for: &'static str, seconds: u64 },
    #[error("{action} on the {node} failed: {}", db_message(source))]
    Statement {
        action: String,
        node: Node,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("cannot {action}: {state}")]
    WrongState { action: &'static str, state: &'static str },
    #[error("could not connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("could not remove the leftover {what}: {reason}")]
    Leftover { what: String, reason: String },
}

impl ProviderError {
    /// The reason alone, without the advice, for a message that lists several reasons.
    pub(super) fn reason(&self) -> String {
        match self {
            ProviderError::DockerUnavailable { socket, reason } => format!("{reason} at {socket}"),
            ProviderError::LocalUnavailable { reason } => reason.clone(),
            other => other.to_string(),
        }
    }
}

/// The server's message and SQLSTATE when it sent one, else the client's error.
fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
