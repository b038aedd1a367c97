//! Server control shared by the local and container backends.
//!
//! Both backends are the same thing seen from here: a place where PostgreSQL's own tools run
//! (a temporary directory on this machine, or a container whose main process only keeps it
//! alive) and up to two nodes in it, the primary and a streaming standby. Every operation is
//! one of the node scripts (`scripts/*.sh`) run as the server's user: `initdb`, `pg_ctl`,
//! `pg_basebackup`, `kill`. So what a lab shows on one backend it shows on the other.
//!
//! Why the container's main process is not the postmaster: a crash must stop the server and
//! nothing else, so the standby (and the directories a restore needs) outlive it.

use std::fmt;
use std::mem::ManuallyDrop;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use testcontainers::core::ExecCommand;
use testcontainers::{ContainerAsync, GenericImage};

use super::reaper::Registration;
use super::scripts::{self, NodeScript};
use super::ProviderError;

/// The throwaway password of every lab server (loopback only).
pub(super) const PASSWORD: &str = "labs";

pub(super) const CONTAINER_ROOT: &str = "/var/lib/postgresql/labs";

/// Where a backend runs PostgreSQL's tools.
#[allow(clippy::large_enum_variant, reason = "one per server, never in a collection: boxing saves nothing")]
pub(super) enum Host {
    /// This machine: a temporary directory, run as `run_as` when we are root.
    Local(LocalHost),
    /// Inside a container, with the server binaries found in the image (`scripts/find_bin.sh`).
    /// Boxed: testcontainers' handle is large.
    Container(Box<ContainerHost>),
}

/// A node of a lab's cluster; it names its data directory and log under the host's root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    Primary,
    Standby,
}

impl Node {
    pub(super) fn dir(self) -> &'static str {
        match self {
            Node::Primary => "primary",
            Node::Standby => "standby",
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir())
    }
}

/// The local host's directory and binaries. Removing it is the reaper's job (`reaper.rs`):
/// `Server::shutdown`, `reap_all`, or the leftover sweep of a later run.
pub(super) struct LocalHost {
    pub root: PathBuf,
    pub bin: PathBuf,
    /// The binaries' own library directory, when they ship one (see `local::library_dir`).
    pub lib: Option<PathBuf>,
    pub run_as: Option<(u32, u32)>,
}

/// A container and the directory of the server binaries inside it.
pub(super) struct ContainerHost {
    /// Never dropped: testcontainers' `Drop` removes the container synchronously (it blocks
    /// the thread until Docker answers). The provider removes it by id instead, in
    /// `Server::shutdown` or `reap_all`, which never block a runtime thread.
    pub container: ManuallyDrop<ContainerAsync<GenericImage>>,
    pub bin: String,
}

impl Host {
    /// The directory holding the nodes, the base backup and the WAL archive.
    pub(super) fn root(&self) -> String {
        match self {
            Host::Local(l) => l.root.display().to_string(),
            Host::Container(_) => CONTAINER_ROOT.to_string(),
        }
    }

    fn bin(&self) -> String {
        match self {
            Host::Local(l) => l.bin.display().to_string(),
            Host::Container(c) => c.bin.clone(),
        }
    }

    /// The address the nodes listen on: loopback here; every interface inside the container,
    /// whose ports are published on the host's loopback only.
    fn listen(&self) -> &'static str {
        match self {
            Host::Local(_) => "127.0.0.1",
            Host::Container(_) => "*",
        }
    }

    /// Runs a node script as the server's user with `args`, and `BIN`, `ROOT` and `env` in its
    /// environment; returns stdout, or an error carrying stderr. `action` names the step.
    pub(super) async fn run(
        &self,
        script: NodeScript,
        action: &'static str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<String, ProviderError> {
        let fail = |detail: String| ProviderError::NodeScript { script: script.name, action, detail };
        let (bin, root) = (self.bin(), self.root());
        match self {
            Host::Local(LocalHost { root: dir, lib, run_as, .. }) => {
                let mut cmd = std::process::Command::new("sh");
                // `sh -c TEXT NAME ARGS…`: the arguments are $1…, never part of the text.
                cmd.arg("-c").arg(script.text).arg(script.name).args(args);
                cmd.current_dir(dir).env("HOME", dir).env("BIN", &bin).env("ROOT", &root).env_remove("PGDATA");
                cmd.envs(env.iter().copied());
                if let Some(lib) = lib {
                    // A relocatable build's libraries point at a fixed /opt/postgresql/lib: without
                    // this, the standby's WAL receiver loads the system's (older) libpq.
                    let mut path = std::ffi::OsString::from(lib);
                    if let Some(existing) = std::env::var_os("LD_LIBRARY_PATH").filter(|p| !p.is_empty()) {
                        path.push(":");
                        path.push(existing);
                    }
                    cmd.env("LD_LIBRARY_PATH", path);
                }
                // Its own process group: Ctrl-C in the terminal reaches the labs command, which
                // then stops the servers in order, instead of racing their own shutdown.
                cmd.process_group(0)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                if let Some((uid, gid)) = run_as {
                    cmd.uid(*uid).gid(*gid);
                }
                let child =
                    tokio::process::Command::from(cmd).kill_on_drop(true).spawn().map_err(|e| fail(e.to_string()))?;
                // If the lab is abandoned mid-step (Ctrl-C), the whole step goes: the shell and
                // what it runs (pg_basebackup, cp), not only the shell. A postmaster that pg_ctl
                // started is in a session of its own and is stopped by the reaper instead.
                let group = AbandonedGroup(child.id().map(|pid| pid as i32));
                let out = child.wait_with_output().await.map_err(|e| fail(e.to_string()))?;
                std::mem::forget(group);
                if out.status.success() {
                    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
                } else {
                    Err(fail(output_text(&out.stderr, &out.stdout)))
                }
            }
            Host::Container(host) => {
                let container = &host.container;
                let mut argv: Vec<String> = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "env"]
                    .map(String::from)
                    .into();
                argv.push(format!("BIN={bin}"));
                argv.push(format!("ROOT={root}"));
                argv.extend(env.iter().map(|(name, value)| format!("{name}={value}")));
                argv.extend(["sh", "-c", script.text, script.name].map(String::from));
                argv.extend(args.iter().map(|a| a.to_string()));
                let mut exec = container.exec(ExecCommand::new(argv)).await.map_err(|e| fail(e.to_string()))?;
                let stdout = exec.stdout_to_vec().await.map_err(|e| fail(e.to_string()))?;
                let stderr = exec.stderr_to_vec().await.map_err(|e| fail(e.to_string()))?;
                // The streams end when the command exits; its exit code follows a moment later.
                for _ in 0..200 {
                    match exec.exit_code().await.map_err(|e| fail(e.to_string()))? {
                        Some(0) => return Ok(String::from_utf8_lossy(&stdout).into_owned()),
                        Some(_) => return Err(fail(output_text(&stderr, &stdout))),
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err(fail("the command's exit code never arrived".into()))
            }
        }
    }

    /// Creates the primary's cluster and starts it on `port` (inside the host) with `settings`.
    pub(super) async fn init_primary(&self, port: u16, settings: &[(String, String)]) -> Result<(), ProviderError> {
        let root = self.root();
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '{}'\nunix_socket_directories = '{}'\n",
            self.listen(),
            root.replace('\'', "''")
        );
        for (name, value) in settings {
            let value = value.replace("%ROOT%", &root);
            conf.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        let env = [("LABS_PASSWORD", PASSWORD), ("LABS_CONF", conf.as_str())];
        self.run(scripts::INIT_PRIMARY, "initdb", &[], &env).await?;
        self.start(Node::Primary).await
    }

    /// Moves the primary to another port (before a retried start).
    pub(super) async fn set_primary_port(&self, port: u16) -> Result<(), ProviderError> {
        self.run(scripts::SET_PORT, "set the port", &[&port.to_string()], &[]).await.map(|_| ())
    }

    /// Starts a node whose settings are in its postgresql.conf, and waits until it accepts
    /// connections (pg_ctl -w). On failure the error carries the end of the server's log.
    pub(super) async fn start(&self, node: Node) -> Result<(), ProviderError> {
        self.run(scripts::START, "start the server", &[node.dir()], &[]).await.map(|_| ())
    }

    /// Immediate stop, as a crash: SIGQUIT to the postmaster, no checkpoint, no WAL flush.
    /// Processes frozen with SIGSTOP get SIGKILL, so nothing they held is written.
    pub(super) async fn crash(&self, node: Node, frozen: &[i32]) -> Result<(), ProviderError> {
        let mut args = vec![node.dir().to_string()];
        args.extend(frozen.iter().map(i32::to_string));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(scripts::CRASH, "crash", &args, &[]).await.map(|_| ())
    }

    /// Sends `signal` (STOP or CONT) to one server process.
    pub(super) async fn signal(&self, pid: i32, signal: &str) -> Result<(), ProviderError> {
        self.run(scripts::SIGNAL, "signal a server process", &[signal, &pid.to_string()], &[]).await.map(|_| ())
    }

    /// Builds a streaming standby from the running primary with pg_basebackup and starts it on
    /// `port`.
    pub(super) async fn create_standby(&self, primary_port: u16, port: u16) -> Result<(), ProviderError> {
        let args = [primary_port.to_string(), port.to_string()];
        self.run(scripts::CREATE_STANDBY, "pg_basebackup for the standby", &[&args[0], &args[1]], &[]).await?;
        self.start(Node::Standby).await
    }

    /// A plain base backup of the primary into `$ROOT/base`, for restores from the archive.
    pub(super) async fn base_backup(&self, primary_port: u16) -> Result<(), ProviderError> {
        self.run(scripts::BASE_BACKUP, "pg_basebackup", &[&primary_port.to_string()], &[]).await.map(|_| ())
    }

    /// Replaces the primary's data directory by the base backup set to recover from the WAL
    /// archive, and starts it.
    pub(super) async fn restore_primary_from_archive(&self) -> Result<(), ProviderError> {
        self.run(scripts::RESTORE_FROM_ARCHIVE, "restore from the base backup", &[], &[]).await?;
        self.start(Node::Primary).await
    }

    /// The names of the segments in the WAL archive.
    pub(super) async fn archived_segments(&self) -> Result<Vec<String>, ProviderError> {
        let out = self.run(scripts::LIST_ARCHIVE, "list the archive", &[], &[]).await?;
        Ok(out.lines().filter(|l| l.len() == 24).map(str::to_string).collect())
    }
}

/// Kills a process group when dropped: held while a step runs, forgotten once it finished.
struct AbandonedGroup(Option<i32>);

impl Drop for AbandonedGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: signalling a process group this process created (process_group(0)).
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
        }
    }
}

fn output_text(stderr: &[u8], stdout: &[u8]) -> String {
    let text = format!("{} {}", String::from_utf8_lossy(stderr).trim(), String::from_utf8_lossy(stdout).trim());
    text.trim().to_string()
}

/// A node's port inside its host and the port this machine reaches it on (the same for local
/// nodes; Docker's published port for a container's).
#[derive(Clone, Copy, Debug)]
pub(super) struct Ports {
    pub inside: u16,
    pub published: u16,
}

/// The servers of one lab run: the primary, and a standby once a lab asks for one.
pub(super) struct Cluster {
    pub host: Host,
    pub image: Option<String>,
    pub primary: Ports,
    /// Reserved when the host is made (a container publishes its ports at creation).
    pub standby: Ports,
    pub standby_running: bool,
    pub primary_running: bool,
    /// Processes a lab froze with SIGSTOP and has not thawed (mirrored in the registration,
    /// so that an abandoned server's frozen processes can be let go).
    frozen: Vec<i32>,
    /// The standby's primary_conninfo while its receiver is paused.
    pub paused_conninfo: Option<String>,
    /// The host's entry in the reaper's registry: removed by [`Cluster::remove`]; dropped
    /// without it, the reaper's `reap_all` or leftover sweep removes the host.
    pub registration: Registration,
}

impl Cluster {
    pub(super) fn new(
        host: Host,
        image: Option<String>,
        primary: Ports,
        standby: Ports,
        registration: Registration,
    ) -> Self {
        Cluster {
            host,
            image,
            primary,
            standby,
            standby_running: false,
            primary_running: true,
            frozen: Vec::new(),
            paused_conninfo: None,
            registration,
        }
    }

    pub(super) fn config(&self, role: Node) -> tokio_postgres::Config {
        let port = match role {
            Node::Primary => self.primary.published,
            Node::Standby => self.standby.published,
        };
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1").port(port).user("postgres").password(PASSWORD).dbname("postgres");
        c.connect_timeout(Duration::from_secs(5));
        c
    }

    pub(super) fn froze(&mut self, pid: i32) {
        self.frozen.push(pid);
        self.registration.set_frozen(&self.frozen);
    }

    /// The frozen processes, which are no longer tracked (thawed or killed by the caller).
    pub(super) fn take_frozen(&mut self) -> Vec<i32> {
        self.registration.set_frozen(&[]);
        std::mem::take(&mut self.frozen)
    }

    /// Stops every server and removes the host (directory or container), then leaves the
    /// reaper's registry. On an error the host stays registered for `reap_all`.
    pub(super) async fn remove(mut self) -> Result<(), ProviderError> {
        let frozen = self.take_frozen();
        match &self.host {
            Host::Local(local) => {
                super::reaper::remove_local_directory(&local.root, &frozen).await?;
            }
            Host::Container(c) => {
                super::reaper::remove_container(c.container.id()).await?;
            }
        }
        self.registration.release();
        Ok(())
    }
}
