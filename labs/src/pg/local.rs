//! The local backend: a throwaway cluster made with initdb and run with pg_ctl in a temporary
//! directory. The directory (data, socket, log) is removed when the server is shut down or dropped.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::ProviderError;

const PASSWORD: &str = "labs";
/// initdb refuses to run as root, so a root user runs the server as this account.
const UNPRIVILEGED_USER: &str = "nobody";

/// Finds a directory holding initdb, pg_ctl and postgres: PATH first, then `pg_config --bindir`,
/// then Debian's /usr/lib/postgresql/<major>/bin (which keeps server binaries off PATH).
pub fn find_local_binaries() -> Result<PathBuf, String> {
    let complete = |dir: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|b| dir.join(b).is_file());
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|d| complete(d)) {
            return Ok(dir);
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && complete(&dir) {
            return Ok(dir);
        }
    }
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|d| complete(d)).collect())
        .unwrap_or_default();
    // Highest major last; versions compare numerically ("9.6" < "15").
    debian.sort_by_key(|d| {
        d.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('.').next().and_then(|m| m.parse::<u32>().ok()))
            .unwrap_or(0)
    });
    debian.pop().ok_or_else(|| "initdb, pg_ctl and postgres are not on PATH, and pg_config does not point to them".to_string())
}

pub(super) struct LocalServer {
    /// Removed on drop, after the server has stopped.
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// uid and gid to run as when we are root.
    run_as: Option<(u32, u32)>,
    running: bool,
}

impl LocalServer {
    pub(super) async fn start() -> Result<Self, ProviderError> {
        let bin = find_local_binaries().map_err(ProviderError::LocalUnavailable)?;
        let fail = |step: &str, detail: String| ProviderError::LocalServer { step: step.into(), detail };
        let dir = tempfile::Builder::new()
            .prefix("labs-pg-")
            .tempdir()
            .map_err(|e| fail("creating a temporary directory", e.to_string()))?;
        let run_as = if unsafe { libc::geteuid() } == 0 { Some(unprivileged_ids()?) } else { None };
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| fail("handing the temporary directory to the server's user", e.to_string()))?;
        }
        let mut server = LocalServer { dir, bin, port: 0, run_as, running: false };
        let pwfile = server.dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{PASSWORD}\n")).map_err(|e| fail("writing the password file", e.to_string()))?;
        if let Some((uid, gid)) = run_as {
            let _ = std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid));
        }
        let data = server.data_dir();
        // --no-sync only skips initdb's final flush of a throwaway cluster; the server itself
        // runs with fsync on, which the durability labs depend on.
        let mut initdb = server.tool("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--encoding=UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .process_group(0);
        // Killed on drop: if this start is ever abandoned, initdb does not outlive its directory.
        let out = tokio::process::Command::from(initdb)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| fail("running initdb", e.to_string()))?;
        check(&out, "initdb")?;
        // A free port can be taken by someone else between our probe and pg_ctl: try a few.
        let mut last = String::new();
        for _ in 0..3 {
            server.port = free_port().map_err(|e| fail("finding a free port", e.to_string()))?;
            match server.pg_ctl_start().await {
                Ok(()) => return Ok(server),
                Err(e) => last = e.to_string(),
            }
        }
        Err(fail("starting the server", last))
    }

    pub(super) fn directory(&self) -> &Path {
        self.dir.path()
    }

    pub(super) fn bin_dir(&self) -> &Path {
        &self.bin
    }

    pub(super) fn config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1").port(self.port).user("postgres").password(PASSWORD).dbname("postgres");
        c.connect_timeout(Duration::from_secs(5));
        c
    }

    pub(super) async fn crash(&mut self) -> Result<(), ProviderError> {
        let out = tokio::process::Command::from(self.stop_command())
            .output()
            .await
            .map_err(|e| ProviderError::Control { action: "crash", detail: e.to_string() })?;
        check(&out, "pg_ctl stop -m immediate").map_err(|e| ProviderError::Control { action: "crash", detail: e.to_string() })?;
        self.running = false;
        Ok(())
    }

    pub(super) async fn restart(&mut self) -> Result<(), ProviderError> {
        self.pg_ctl_start().await.map_err(|e| ProviderError::Control { action: "restart", detail: e.to_string() })
    }

    pub(super) async fn stop(mut self) -> Result<(), ProviderError> {
        if self.running {
            let out = tokio::process::Command::from(self.stop_command())
                .output()
                .await
                .map_err(|e| ProviderError::Control { action: "stop", detail: e.to_string() })?;
            self.running = false;
            check(&out, "pg_ctl stop").map_err(|e| ProviderError::Control { action: "stop", detail: e.to_string() })?;
        }
        Ok(()) // the directory goes with `self.dir`
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn pg_ctl_start(&mut self) -> Result<(), ProviderError> {
        let dir = self.dir.path();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}'",
            self.port,
            dir.display()
        );
        let mut cmd = self.tool("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            // Its own process group: Ctrl-C in the terminal reaches the labs command, which stops
            // the server and removes the directory, instead of racing the server's own shutdown.
            .process_group(0);
        let out = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| ProviderError::LocalServer { step: "running pg_ctl start".into(), detail: e.to_string() })?;
        if let Err(e) = check(&out, "pg_ctl start") {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(ProviderError::LocalServer { step: "pg_ctl start".into(), detail: format!("{e}\nserver log:\n{}", tail.join("\n")) });
        }
        self.running = true;
        Ok(())
    }

    fn stop_command(&self) -> Command {
        let mut cmd = self.tool("pg_ctl");
        cmd.arg("-D").arg(self.data_dir()).args(["-m", "immediate", "-w", "stop"]);
        cmd
    }

    /// A PostgreSQL tool, run as the unprivileged user when we are root.
    fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        cmd.current_dir(self.dir.path()).env("HOME", self.dir.path()).env_remove("PGDATA");
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        // Best effort: an interrupted lab must not leave a server running on a deleted directory.
        // The pid file, not `running`, decides: a start interrupted half-way may have a server up.
        if self.running || self.data_dir().join("postmaster.pid").exists() {
            let _ = self.stop_command().output();
        }
    }
}

fn check(out: &Output, what: &str) -> Result<(), ProviderError> {
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    Err(ProviderError::LocalServer {
        step: what.into(),
        detail: format!("{} {}", stderr.trim(), stdout.trim()).trim().to_string(),
    })
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn unprivileged_ids() -> Result<(u32, u32), ProviderError> {
    let name = std::ffi::CString::new(UNPRIVILEGED_USER).expect("no NUL in a constant");
    // SAFETY: getpwnam returns a pointer to static storage or NULL; we copy the two ids out at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(ProviderError::LocalUnavailable(format!(
            "running as root, and there is no '{UNPRIVILEGED_USER}' user to run the server as (initdb refuses root); run the labs as an ordinary user"
        )));
    }
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok((uid, gid))
}
