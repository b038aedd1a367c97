//! Server control shared by the local and container backends.
//!
//! Both backends are the same thing seen from here: a place where PostgreSQL's own tools run
//! (a temporary directory on this machine, or a container whose main process only keeps it
//! alive) and up to two nodes in it, the primary and a streaming standby. Every operation is
//! a short shell script run as the server's user, written once: `initdb`, `pg_ctl`,
//! `pg_basebackup`, `kill`. So what a lab shows on one backend it shows on the other.
//!
//! Why the container's main process is not the postmaster: a crash must stop the server and
//! nothing else, so the standby (and the directories a restore needs) outlive it.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use testcontainers::core::ExecCommand;
use testcontainers::{ContainerAsync, GenericImage};

use super::ProviderError;

/// The throwaway password of every lab server (loopback only).
pub(super) const PASSWORD: &str = "labs";

/// Where a backend runs PostgreSQL's tools.
#[allow(clippy::large_enum_variant, reason = "one per server, never in a collection: boxing saves nothing")]
pub(super) enum Host {
    /// This machine: a temporary directory, run as `run_as` when we are root.
    Local(LocalHost),
    /// Inside a container; the PostgreSQL 15 binaries at Debian's path (both images have them).
    Container { container: ContainerAsync<GenericImage> },
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

/// The local host's directory and binaries. Dropping it stops any server still running in the
/// directory, then removes the directory.
pub(super) struct LocalHost {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub run_as: Option<(u32, u32)>,
}

pub(super) const CONTAINER_ROOT: &str = "/var/lib/postgresql/labs";
const CONTAINER_BIN: &str = "/usr/lib/postgresql/15/bin";

impl Host {
    /// The directory holding the nodes, the base backup and the WAL archive.
    pub(super) fn root(&self) -> String {
        match self {
            Host::Local(l) => l.dir.path().display().to_string(),
            Host::Container { .. } => CONTAINER_ROOT.to_string(),
        }
    }

    fn bin(&self) -> String {
        match self {
            Host::Local(l) => l.bin.display().to_string(),
            Host::Container { .. } => CONTAINER_BIN.to_string(),
        }
    }

    /// The address the nodes listen on: loopback here; every interface inside the container,
    /// whose ports are published on the host's loopback only.
    fn listen(&self) -> &'static str {
        match self {
            Host::Local(_) => "127.0.0.1",
            Host::Container { .. } => "*",
        }
    }

    /// Runs `script` with `sh -e` as the server's user; returns stdout, or an error carrying
    /// stderr. `action` names the step in that error.
    pub(super) async fn sh(&self, action: &'static str, script: &str) -> Result<String, ProviderError> {
        let script = format!("set -e\nBIN='{}'\nROOT='{}'\n{script}", self.bin(), self.root());
        let fail = |detail: String| ProviderError::Control { action, detail };
        match self {
            Host::Local(LocalHost { dir, run_as, .. }) => {
                let mut cmd = std::process::Command::new("sh");
                cmd.arg("-c").arg(&script).current_dir(dir.path()).env("HOME", dir.path()).env_remove("PGDATA");
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
                // started is in a session of its own and is stopped with the host instead.
                let group = AbandonedGroup(child.id().map(|pid| pid as i32));
                let out = child.wait_with_output().await.map_err(|e| fail(e.to_string()))?;
                std::mem::forget(group);
                if out.status.success() {
                    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
                } else {
                    Err(fail(output_text(&out.stderr, &out.stdout)))
                }
            }
            Host::Container { container } => {
                let argv = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "sh", "-c", &script];
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
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '{}'\nunix_socket_directories = '{}'\n",
            self.listen(),
            self.root()
        );
        for (name, value) in settings {
            let value = value.replace("%ROOT%", &self.root());
            conf.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        // --no-sync only skips initdb's final flush of a throwaway cluster; the server runs
        // with fsync on, which every durability lab depends on.
        let script = format!(
            r#"umask 077
printf '%s\n' '{PASSWORD}' > "$ROOT/pwfile"
"$BIN/initdb" -D "$ROOT/primary" -U postgres --encoding=UTF8 --locale=C --no-sync \
  --auth-local=trust --auth-host=scram-sha-256 --pwfile="$ROOT/pwfile" >/dev/null
rm -f "$ROOT/pwfile"
# Password logins from any address, and replication from the standby's.
printf 'host all all all scram-sha-256\nhost replication all all scram-sha-256\n' >> "$ROOT/primary/pg_hba.conf"
mkdir -p "$ROOT/archive"
cat >> "$ROOT/primary/postgresql.conf" <<'LABS_CONF'
{conf}LABS_CONF
"#
        );
        self.sh("initdb", &script).await?;
        self.start(Node::Primary).await
    }

    /// Starts a node whose settings are in its postgresql.conf, and waits until it accepts
    /// connections (pg_ctl -w). On failure the error carries the end of the server's log.
    pub(super) async fn start(&self, role: Node) -> Result<(), ProviderError> {
        let d = role.dir();
        let script = format!(
            r#"if ! "$BIN/pg_ctl" -D "$ROOT/{d}" -l "$ROOT/{d}.log" -w -t 60 start >/dev/null; then
  tail -n 8 "$ROOT/{d}.log" >&2; exit 1
fi"#
        );
        self.sh("start the server", &script).await.map(|_| ())
    }

    /// Immediate stop, as a crash: SIGQUIT to the postmaster, no checkpoint, no WAL flush.
    /// Processes frozen with SIGSTOP cannot act on SIGQUIT; they get SIGKILL, which runs none
    /// of their code, so nothing they held is written.
    pub(super) async fn crash(&self, role: Node, frozen: &[i32]) -> Result<(), ProviderError> {
        let d = role.dir();
        let kills: String = frozen.iter().map(|pid| format!("kill -KILL {pid} 2>/dev/null || true\n")).collect();
        let script = format!(
            r#"pidfile="$ROOT/{d}/postmaster.pid"
[ -f "$pidfile" ] || {{ echo "the {d} server is not running" >&2; exit 1; }}
kill -QUIT "$(head -n 1 "$pidfile")"
{kills}i=0
while [ -f "$pidfile" ]; do
  i=$((i + 1)); [ "$i" -le 400 ] || {{ echo "the {d} server was still running 20 s after SIGQUIT" >&2; exit 1; }}
  sleep 0.05
done"#
        );
        self.sh("crash", &script).await.map(|_| ())
    }

    /// Sends `signal` (STOP or CONT) to one server process.
    pub(super) async fn signal(&self, pid: i32, signal: &str) -> Result<(), ProviderError> {
        self.sh("signal a server process", &format!("kill -{signal} {pid}")).await.map(|_| ())
    }

    /// Builds a streaming standby from the running primary with pg_basebackup (-R writes its
    /// primary_conninfo and standby.signal) and starts it on `port`.
    pub(super) async fn create_standby(&self, primary_port: u16, port: u16) -> Result<(), ProviderError> {
        let script = format!(
            r#""$BIN/pg_basebackup" -h "$ROOT" -p {primary_port} -U postgres -D "$ROOT/standby" -X stream -R -c fast
cat >> "$ROOT/standby/postgresql.conf" <<'LABS_CONF'
port = {port}
archive_mode = off
LABS_CONF
"#
        );
        self.sh("pg_basebackup for the standby", &script).await?;
        self.start(Node::Standby).await
    }

    /// A plain base backup of the primary into `$ROOT/base`, for restores from the archive.
    pub(super) async fn base_backup(&self, primary_port: u16) -> Result<(), ProviderError> {
        let script = format!(
            r#"rm -rf "$ROOT/base"; "$BIN/pg_basebackup" -h "$ROOT" -p {primary_port} -U postgres -D "$ROOT/base" -X stream -c fast"#
        );
        self.sh("pg_basebackup", &script).await.map(|_| ())
    }

    /// The primary's disk is gone: its data directory is replaced by the base backup, set to
    /// recover from the WAL archive (recovery.signal + restore_command), and started. Recovery
    /// replays every archived segment, then ends and the node becomes a primary again.
    pub(super) async fn restore_primary_from_archive(&self) -> Result<(), ProviderError> {
        let script = r#"[ -d "$ROOT/base" ] || { echo "no base backup was taken" >&2; exit 1; }
[ ! -f "$ROOT/primary/postmaster.pid" ] || { echo "the primary is still running; crash it first" >&2; exit 1; }
rm -rf "$ROOT/primary"
cp -a "$ROOT/base" "$ROOT/primary"
printf "restore_command = 'cp \"%s/archive/%%f\" \"%%p\"'\n" "$ROOT" >> "$ROOT/primary/postgresql.conf"
touch "$ROOT/primary/recovery.signal""#;
        self.sh("restore from the base backup", script).await?;
        self.start(Node::Primary).await
    }

    /// The names of the segments in the WAL archive.
    pub(super) async fn archived_segments(&self) -> Result<Vec<String>, ProviderError> {
        let out = self.sh("list the archive", r#"ls "$ROOT/archive""#).await?;
        Ok(out.lines().filter(|l| l.len() == 24).map(str::to_string).collect())
    }

    /// Stops whatever nodes still run (immediate: nothing is kept). For removal.
    pub(super) async fn stop_all(&self) -> Result<(), ProviderError> {
        self.sh("stop", STOP_ALL).await.map(|_| ())
    }
}

/// Stops every node that has a pid file; used on shutdown and, synchronously, on drop.
const STOP_ALL: &str = r#"for d in "$ROOT/primary" "$ROOT/standby"; do
  [ -f "$d/postmaster.pid" ] || continue
  pm=$(sed -n '1p' "$d/postmaster.pid")
  # A process frozen by a lab would hold the shutdown up: let every child of this server run.
  for s in /proc/[0-9]*/status; do
    if grep -qs "^PPid:[[:space:]]*$pm\$" "$s"; then p=${s%/status}; kill -CONT "${p#/proc/}" 2>/dev/null || true; fi
  done
  "$BIN/pg_ctl" -D "$d" -m immediate -w -t 20 stop >/dev/null 2>&1 || kill -KILL "$pm" 2>/dev/null || true
done"#;

impl Drop for LocalHost {
    fn drop(&mut self) {
        // Best effort, for a lab abandoned half-way: no server may outlive its directory.
        // (A container is removed with everything in it.)
        let LocalHost { dir, bin, run_as } = self;
        {
            let script = format!("BIN='{}'\nROOT='{}'\n{STOP_ALL}", bin.display(), dir.path().display());
            let mut cmd = std::process::Command::new("sh");
            cmd.arg("-c").arg(script).current_dir(dir.path());
            if let Some((uid, gid)) = run_as {
                cmd.uid(*uid).gid(*gid);
            }
            let _ = cmd.output();
        }
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
    /// Processes a lab froze with SIGSTOP and has not thawed.
    pub frozen: Vec<i32>,
    /// The standby's primary_conninfo while its receiver is paused.
    pub paused_conninfo: Option<String>,
}

impl Cluster {
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
}
