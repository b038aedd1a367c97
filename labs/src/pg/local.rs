//! The local backend: throwaway servers made with initdb and run with pg_ctl in a temporary
//! directory (data, sockets, logs, the WAL archive), removed when the lab ends. The operations
//! themselves are in `cluster.rs`, shared with the container backend.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cluster::{Cluster, Host, LocalHost, Ports};
use super::ProviderError;

/// initdb refuses to run as root, so a root user runs the server as this account.
const UNPRIVILEGED_USER: &str = "nobody";

/// Finds a directory holding initdb, pg_ctl and postgres: PATH first, then `pg_config --bindir`,
/// then Debian's /usr/lib/postgresql/<major>/bin (which keeps server binaries off PATH).
pub fn find_local_binaries() -> Result<PathBuf, String> {
    // pg_basebackup too: the standby and the base backup are made with it.
    let complete = |dir: &Path| ["initdb", "pg_ctl", "postgres", "pg_basebackup"].iter().all(|b| dir.join(b).is_file());
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            // A symlinked initdb (/usr/local/bin/initdb -> .../15/bin/initdb) points to the
            // directory that has the whole set.
            let real = std::fs::canonicalize(dir.join("initdb")).ok().and_then(|p| p.parent().map(Path::to_path_buf));
            if let Some(real) = real.filter(|r| complete(r)) {
                return Ok(real);
            }
            if complete(&dir) {
                return Ok(dir);
            }
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
    debian.pop().ok_or_else(|| {
        "initdb, pg_ctl, postgres and pg_basebackup are not on PATH, and pg_config does not point to them".to_string()
    })
}

/// Makes the temporary directory and starts the primary in it with `settings`.
pub(super) async fn start(settings: &[(String, String)]) -> Result<Cluster, ProviderError> {
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
    let host = Host::Local(LocalHost { dir, bin, run_as });
    let standby = free_port().map_err(|e| fail("finding a free port", e.to_string()))?;
    // A free port can be taken by someone else between our probe and the start: try a few.
    let mut last = String::new();
    for attempt in 0..3 {
        let port = free_port().map_err(|e| fail("finding a free port", e.to_string()))?;
        let result = if attempt == 0 {
            host.init_primary(port, settings).await
        } else {
            host.sh("set the port", &format!("printf 'port = {port}\\n' >> \"$ROOT/primary/postgresql.conf\"")).await?;
            host.start(super::cluster::Node::Primary).await
        };
        match result {
            Ok(()) => {
                return Ok(Cluster {
                    host,
                    image: None,
                    primary: Ports { inside: port, published: port },
                    standby: Ports { inside: standby, published: standby },
                    standby_running: false,
                    primary_running: true,
                    frozen: Vec::new(),
                    paused_conninfo: None,
                })
            }
            // initdb itself failing is not a port problem: report it at once.
            Err(e) if attempt == 0 && !host_has_cluster(&host) => return Err(e),
            Err(e) => last = e.to_string(),
        }
    }
    Err(fail("starting the server", last))
}

fn host_has_cluster(host: &Host) -> bool {
    Path::new(&host.root()).join("primary").join("PG_VERSION").exists()
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
