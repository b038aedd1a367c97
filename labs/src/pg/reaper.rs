//! The reaper: however a labs process ends, no server, directory or container it started is
//! left behind.
//!
//! Three layers, each for a way a run can end:
//! - `Server::shutdown` removes what the server made (the normal end).
//! - A process-wide registry holds every temporary directory and container from the moment it
//!   exists (before initdb runs, before the container is created). [`reap_all`] removes every
//!   entry still there: the caller runs it after dropping a lab's future on SIGINT, SIGTERM or
//!   SIGHUP, or after an error. Dropping a server that was not shut down only sends signals
//!   (SIGQUIT to its postmasters, SIGCONT to what a lab froze); it never waits.
//! - Owner marks, for a process that was killed outright (SIGKILL, a crash, a power cut): every
//!   directory holds an owner file and every container carries labels with the labs process's
//!   id and start time. [`clean_leftovers`] removes what belongs to a process that is gone
//!   (`kill(pid, 0)` fails with ESRCH, or the pid now belongs to a process that started later);
//!   what belongs to a live process is never touched.
//!
//! Why not testcontainers' way. Its `watchdog` feature installs its own SIGINT/SIGTERM/SIGQUIT
//! handler that removes the containers it registered once they were created, then re-raises
//! the signal: it knows nothing of local directories and servers, misses SIGHUP and a container
//! whose creation was under way, and takes the signal away from the labs command, which must
//! finish or abandon its step and report first. Ryuk, the other testcontainers' reaper, is a
//! privileged sidecar container holding a connection to the test process and removing labelled
//! resources when it drops: it needs its own image from a registry (the workshop machines have
//! none), the Docker socket mounted into a container, and cannot stop a server on this
//! machine. Here the labs process reaps what it registered itself on every end it sees, and
//! the next run (or `labs clean`) reaps by owner marks what a killed one could not: nothing
//! to pull, the same path for both backends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::docker::{ContainerSummary, DockerEngine};
use super::ProviderError;

/// The label every lab container carries: the id of the labs process that created it.
/// `docker ps -a --filter label=io.github.es-workshop.labs.run` lists them.
pub const CONTAINER_OWNER_LABEL: &str = "io.github.es-workshop.labs.run";
/// The owner process's start time (see [`Owner`]), when this platform tells it.
pub(super) const CONTAINER_STARTED_LABEL: &str = "io.github.es-workshop.labs.run-started";
/// Which registry entry of the owner process a container belongs to.
pub(super) const CONTAINER_SERVER_LABEL: &str = "io.github.es-workshop.labs.server";
/// Local servers live in `<temp dir>/labs-pg-*`.
pub(super) const LOCAL_DIRECTORY_PREFIX: &str = "labs-pg-";
/// The owner file in every local server's directory.
pub(super) const OWNER_FILE: &str = "labs-owner";

/// How long a postmaster may take to exit after SIGQUIT before it gets SIGKILL. PostgreSQL
/// itself SIGKILLs children that ignore an immediate stop after 5 s.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `reap_all` looks for a container whose creation was under way when its start was
/// abandoned: Docker may finish creating it after the request's future was dropped, later on a
/// loaded machine (1.5 s was seen to be too short on 2 busy cores).
const CREATION_GRACE: Duration = Duration::from_secs(5);
/// How long `reap_all` waits for a container to disappear from the engine's list once removed:
/// a removal cut short by the signal goes on in the engine, and "nothing is left" must be true
/// when the process says it.
const REMOVAL_WAIT: Duration = Duration::from_secs(20);

/// The process that owns a directory or container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub pid: u32,
    /// The process's start time in clock ticks after boot (Linux), to tell a reused pid from
    /// the owner; `None` where the platform does not tell it cheaply.
    pub started: Option<u64>,
}

impl Owner {
    /// This labs process.
    pub fn this_process() -> Owner {
        static THIS: OnceLock<Owner> = OnceLock::new();
        *THIS.get_or_init(|| {
            let pid = std::process::id();
            Owner { pid, started: process_start_time(pid) }
        })
    }

    /// Whether the owner still runs. Errs on the side of "alive": a pid that exists (even one
    /// this user may not signal) is alive unless its start time proves it is another process.
    pub fn is_alive(&self) -> bool {
        let Ok(pid) = i32::try_from(self.pid) else { return true };
        if pid <= 0 {
            // kill(0, …) and kill(-n, …) address process groups: never a dead owner.
            return true;
        }
        if !process_exists(pid) {
            return false;
        }
        match (self.started, process_start_time(self.pid)) {
            (Some(recorded), Some(now)) => recorded == now,
            _ => true,
        }
    }

    fn file_text(&self) -> String {
        let mut text = String::from(
            "# This directory belongs to the labs process below; once that process is gone,\n\
             # `labs clean` (or the next labs run) stops its servers and removes it.\n",
        );
        text.push_str(&format!("pid={}\n", self.pid));
        if let Some(started) = self.started {
            text.push_str(&format!("started={started}\n"));
        }
        text
    }

    fn parse_file(text: &str) -> Option<Owner> {
        let mut pid = None;
        let mut started = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("pid", value)) => pid = value.trim().parse::<u32>().ok(),
                Some(("started", value)) => started = value.trim().parse::<u64>().ok(),
                _ => {}
            }
        }
        pid.map(|pid| Owner { pid, started })
    }

    fn from_labels(labels: &BTreeMap<String, String>) -> Option<Owner> {
        let pid = labels.get(CONTAINER_OWNER_LABEL)?.parse().ok()?;
        let started = labels.get(CONTAINER_STARTED_LABEL).and_then(|s| s.parse().ok());
        Some(Owner { pid, started })
    }

    /// The labels a container of this owner carries.
    pub(super) fn labels(&self) -> Vec<(&'static str, String)> {
        let mut labels = vec![(CONTAINER_OWNER_LABEL, self.pid.to_string())];
        if let Some(started) = self.started {
            labels.push((CONTAINER_STARTED_LABEL, started.to_string()));
        }
        labels
    }
}

/// A process's start time in clock ticks after boot: field 22 of /proc/<pid>/stat (Linux only;
/// elsewhere `None`, and a live pid counts as the owner).
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Writes the owner file of this process into a fresh local server directory. Synchronous
/// (a few bytes), so that no await separates the directory's creation from its mark.
pub(super) fn mark_directory(root: &Path) -> Result<(), ProviderError> {
    let path = root.join(OWNER_FILE);
    std::fs::write(&path, Owner::this_process().file_text()).map_err(|source| ProviderError::LocalSetup {
        action: "writing the owner file",
        path,
        source,
    })
}

// ---------------------------------------------------------------------------------------------
// The registry of this process's live resources.

enum Resource {
    LocalDirectory {
        root: PathBuf,
        frozen: Vec<i32>,
    },
    /// `server` is the value of [`CONTAINER_SERVER_LABEL`]; `id` is known once Docker created it.
    Container {
        server: String,
        id: Option<String>,
    },
}

static REGISTRY: Mutex<BTreeMap<u64, Resource>> = Mutex::new(BTreeMap::new());
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

fn registry() -> MutexGuard<'static, BTreeMap<u64, Resource>> {
    // A panic elsewhere while holding the lock leaves a map that is still consistent.
    REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One resource's registry entry. [`Registration::release`] removes it once the resource is
/// gone; dropping it instead (a server abandoned or never shut down) sends the cheap signals
/// and leaves the entry for [`reap_all`].
pub(super) struct Registration {
    key: u64,
}

impl Registration {
    fn register(resource: Resource) -> Registration {
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        registry().insert(key, resource);
        Registration { key }
    }

    /// Registers a local server directory that was just created.
    pub(super) fn local_directory(root: PathBuf) -> Registration {
        Registration::register(Resource::LocalDirectory { root, frozen: Vec::new() })
    }

    /// Registers a container about to be created; returns the value of its server label.
    pub(super) fn container() -> (Registration, String) {
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        let server = format!("{}-{key}", Owner::this_process().pid);
        registry().insert(key, Resource::Container { server: server.clone(), id: None });
        (Registration { key }, server)
    }

    pub(super) fn container_created(&self, container_id: &str) {
        if let Some(Resource::Container { id, .. }) = registry().get_mut(&self.key) {
            *id = Some(container_id.to_string());
        }
    }

    /// The processes a lab froze (SIGSTOP) on this local host, to be let go on removal.
    pub(super) fn set_frozen(&self, pids: &[i32]) {
        if let Some(Resource::LocalDirectory { frozen, .. }) = registry().get_mut(&self.key) {
            *frozen = pids.to_vec();
        }
    }

    /// The resource is gone: forget it.
    pub(super) fn release(self) {
        registry().remove(&self.key);
        std::mem::forget(self);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Only signals here, never a wait: this may run on a runtime thread, mid-unwind, or while
        // a lab's future is dropped on Ctrl-C. The entry stays for `reap_all` or the sweep.
        if let Some(Resource::LocalDirectory { root, frozen }) = registry().get(&self.key) {
            for node in ["primary", "standby"] {
                if let Some(pid) = read_postmaster_pid_now(&root.join(node).join("postmaster.pid")) {
                    if is_postgres_now(pid) {
                        signal(pid, libc::SIGQUIT);
                    }
                }
            }
            for &pid in frozen {
                signal(pid, libc::SIGCONT);
            }
        }
        // A container needs a request to Docker: left to `reap_all` or the leftover sweep.
    }
}

/// Removes every resource of this process still registered: stops the local servers through
/// their pid files (immediate stop), removes their directories, and removes every container
/// labelled with this process's id, including one whose start was abandoned half-way. Returns
/// one line per thing removed (or that could not be), for the caller to print.
///
/// Safe to call at any moment: after a lab's future was dropped mid-start, twice, or with
/// nothing registered (then it returns at once and asks Docker nothing).
pub async fn reap_all() -> Vec<String> {
    let (directories, containers): (Vec<_>, Vec<_>) = {
        let registry = registry();
        let mut directories = Vec::new();
        let mut containers = Vec::new();
        for (&key, resource) in registry.iter() {
            match resource {
                Resource::LocalDirectory { root, frozen } => directories.push((key, root.clone(), frozen.clone())),
                Resource::Container { server, .. } => containers.push((key, server.clone())),
            }
        }
        (directories, containers)
    };
    let mut lines = Vec::new();
    for (key, root, frozen) in directories {
        match remove_local_directory(&root, &frozen).await {
            Ok(line) => {
                registry().remove(&key);
                lines.extend(line);
            }
            Err(e) => lines.push(format!("could not remove {}: {e}", root.display())),
        }
    }
    if !containers.is_empty() {
        match reap_containers(&containers).await {
            Ok(removed) => lines.extend(removed),
            Err(e) => lines.push(format!("could not remove this run's containers: {e}")),
        }
    }
    lines
}

async fn reap_containers(registered: &[(u64, String)]) -> Result<Vec<String>, ProviderError> {
    let engine = match DockerEngine::detect().await {
        Ok(engine) => engine,
        // No engine: there is nothing left of ours to remove there. (The registration stays.)
        Err(e) => return Err(e),
    };
    let filter = format!("{CONTAINER_OWNER_LABEL}={}", Owner::this_process().pid);
    let mut lines = Vec::new();
    let mut found: Vec<String> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let started = Instant::now();
    loop {
        let listed = engine.list_containers(&filter).await?;
        if listed.is_empty() {
            // Done once every registered server was seen (and is gone now), or when one whose
            // creation may have been under way has had its grace.
            let missing = registered.iter().any(|(_, server)| !found.contains(server));
            if !missing || started.elapsed() >= CREATION_GRACE {
                break;
            }
        } else if started.elapsed() >= REMOVAL_WAIT {
            // Still listed: a removal the engine has not finished. Say so rather than claim
            // that nothing is left.
            for container in listed {
                lines.push(format!(
                    "container {} was still being removed after {} s",
                    short_id(&container.id),
                    REMOVAL_WAIT.as_secs()
                ));
            }
            break;
        }
        for container in &listed {
            if let Some(server) = container.labels.get(CONTAINER_SERVER_LABEL) {
                if !found.contains(server) {
                    found.push(server.clone());
                }
            }
            let short = short_id(&container.id);
            match engine.remove_container(&container.id).await {
                Ok(true) => lines.push(format!("removed container {short} ({})", container.image)),
                // Gone, or a removal already under way (a shutdown the signal cut short): the
                // next listing tells when it is gone.
                Ok(false) => {}
                Err(e) if !failed.contains(&container.id) => {
                    failed.push(container.id.clone());
                    lines.push(format!("could not remove container {short}: {e}"));
                }
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut registry = registry();
    for (key, _) in registered {
        registry.remove(key);
    }
    Ok(lines)
}

/// Removes one container by id (force: a running one is killed). Missing is not an error.
pub(super) async fn remove_container(id: &str) -> Result<(), ProviderError> {
    DockerEngine::detect().await?.remove_container(id).await.map(|_| ())
}

/// Removes whatever containers carry this server label: after a failed start, whose container
/// may or may not have been created.
pub(super) async fn remove_server_containers(server: &str) -> Result<(), ProviderError> {
    let engine = DockerEngine::detect().await?;
    for container in engine.list_containers(&format!("{CONTAINER_SERVER_LABEL}={server}")).await? {
        engine.remove_container(&container.id).await?;
    }
    Ok(())
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

// ---------------------------------------------------------------------------------------------
// Local servers: stopped through the pid files PostgreSQL writes, with no /proc scan.

/// Stops the servers in a local directory (immediate stop) and removes it. Returns the line
/// to print, or `None` when the directory was already gone.
pub(super) async fn remove_local_directory(root: &Path, frozen: &[i32]) -> Result<Option<String>, ProviderError> {
    let stopped = stop_local_servers(root, frozen).await;
    match tokio::fs::remove_dir_all(root).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ProviderError::LocalSetup {
                action: "removing the server's directory",
                path: root.to_path_buf(),
                source,
            })
        }
    }
    Ok(Some(if stopped > 0 {
        format!("stopped the local server in {} and removed it", root.display())
    } else {
        format!("removed {}", root.display())
    }))
}

/// SIGQUIT (PostgreSQL's immediate stop) to every postmaster with a pid file in `root`, SIGCONT
/// to the processes a lab froze so they can act on it, then waits until the pid files are gone
/// (the postmaster removes its own after its children exit), and SIGKILLs one that outstays
/// [`STOP_TIMEOUT`]. Returns how many servers were running.
async fn stop_local_servers(root: &Path, frozen: &[i32]) -> usize {
    let mut running = Vec::new();
    for node in ["primary", "standby"] {
        let pidfile = root.join(node).join("postmaster.pid");
        let Ok(text) = tokio::fs::read_to_string(&pidfile).await else { continue };
        let Some(pid) = parse_postmaster_pid(&text) else { continue };
        if process_exists(pid) && is_postgres(pid).await {
            signal(pid, libc::SIGQUIT);
            running.push((pid, pidfile));
        }
    }
    for &pid in frozen {
        signal(pid, libc::SIGCONT);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for (pid, pidfile) in &running {
        while tokio::fs::try_exists(pidfile).await.unwrap_or(false) && process_exists(*pid) {
            if Instant::now() >= deadline {
                signal(*pid, libc::SIGKILL);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    running.len()
}

fn parse_postmaster_pid(text: &str) -> Option<i32> {
    text.lines().next()?.trim().parse().ok().filter(|pid: &i32| *pid > 1)
}

fn read_postmaster_pid_now(pidfile: &Path) -> Option<i32> {
    parse_postmaster_pid(&std::fs::read_to_string(pidfile).ok()?)
}

fn signal(pid: i32, signal: libc::c_int) {
    if pid > 1 {
        // SAFETY: a positive pid addresses one process; failure (already gone) is fine.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Whether a process runs: `kill(pid, 0)` succeeds, or fails only because this user may not
/// signal it (EPERM); ESRCH means gone. A zombie, which only waits for its parent to collect
/// it, does not run.
fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    let exists =
        unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
    if !exists {
        return false;
    }
    // Linux tells a zombie apart; elsewhere a zombie counts as running until reaped.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()) != Some("Z"),
        Err(_) => true,
    }
}

/// Whether `pid` is a PostgreSQL server process, so a stale pid file (after a reboot, say)
/// never gets an unrelated process signalled. Linux: /proc/<pid>/comm; elsewhere `ps`.
async fn is_postgres(pid: i32) -> bool {
    if let Some(answer) = is_postgres_by_proc(pid) {
        return answer;
    }
    match tokio::process::Command::new("ps").args(["-o", "comm=", "-p", &pid.to_string()]).output().await {
        Ok(out) if out.status.success() => {
            let comm = String::from_utf8_lossy(&out.stdout);
            let name = comm.trim().rsplit('/').next().unwrap_or("");
            name == "postgres" || name == "postmaster"
        }
        _ => false,
    }
}

/// As [`is_postgres`] without starting a process (for `Drop`): where /proc is missing, the
/// pid file written by our own server moments ago is trusted.
fn is_postgres_now(pid: i32) -> bool {
    is_postgres_by_proc(pid).unwrap_or(true)
}

fn is_postgres_by_proc(pid: i32) -> Option<bool> {
    if !Path::new("/proc/self/comm").exists() {
        return None;
    }
    Some(match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => matches!(comm.trim(), "postgres" | "postmaster"),
        Err(_) => false,
    })
}

// ---------------------------------------------------------------------------------------------
// Leftovers of processes that are gone.

/// Something a labs process made and did not remove, whose owner is gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Leftover {
    pub owner: Owner,
    #[serde(flatten)]
    pub kind: LeftoverKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LeftoverKind {
    /// A local server's temporary directory (its servers may still run).
    LocalDirectory { path: PathBuf },
    /// A container, running or not.
    Container { id: String, image: String },
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            LeftoverKind::LocalDirectory { path } => {
                write!(f, "local server directory {} (labs process {} is gone)", path.display(), self.owner.pid)
            }
            LeftoverKind::Container { id, image } => {
                write!(f, "container {} ({image}) (labs process {} is gone)", short_id(id), self.owner.pid)
            }
        }
    }
}

/// The leftovers on this machine whose labs process is gone, without removing anything (for
/// `labs doctor`): directories `labs-pg-*` in the temporary directory with an owner file, and
/// containers with the owner label. Directories this user cannot read, and containers when no
/// Docker engine answers, are not looked at.
pub async fn find_leftovers() -> Result<Vec<Leftover>, ProviderError> {
    let mut leftovers = Vec::new();
    let temp = std::env::temp_dir();
    if let Ok(mut entries) = tokio::fs::read_dir(&temp).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            if !entry.file_name().to_string_lossy().starts_with(LOCAL_DIRECTORY_PREFIX) {
                continue;
            }
            let path = entry.path();
            let Ok(text) = tokio::fs::read_to_string(path.join(OWNER_FILE)).await else { continue };
            if let Some(owner) = Owner::parse_file(&text).filter(|o| !o.is_alive()) {
                leftovers.push(Leftover { owner, kind: LeftoverKind::LocalDirectory { path } });
            }
        }
    }
    if let Ok(engine) = DockerEngine::detect().await {
        for container in engine.list_containers(CONTAINER_OWNER_LABEL).await? {
            let ContainerSummary { id, image, labels } = container;
            if let Some(owner) = Owner::from_labels(&labels).filter(|o| !o.is_alive()) {
                leftovers.push(Leftover { owner, kind: LeftoverKind::Container { id, image } });
            }
        }
    }
    Ok(leftovers)
}

/// Finds the leftovers of labs processes that are gone ([`find_leftovers`]) and removes them:
/// stops a directory's servers through their pid files, removes the directory; removes the
/// containers. Returns one line per thing removed. A leftover whose process is alive is never
/// touched (each owner is checked again just before its removal).
pub async fn clean_leftovers() -> Result<Vec<String>, ProviderError> {
    let mut lines = Vec::new();
    let mut failures = Vec::new();
    for leftover in find_leftovers().await? {
        if leftover.owner.is_alive() {
            continue;
        }
        let result = match &leftover.kind {
            LeftoverKind::LocalDirectory { path } => remove_local_directory(path, &[])
                .await
                .map(|line| line.map(|_| format!("removed the {leftover}, after stopping any server in it"))),
            LeftoverKind::Container { id, .. } => match DockerEngine::detect().await {
                Ok(engine) => {
                    engine.remove_container(id).await.map(|removed| removed.then(|| format!("removed the {leftover}")))
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(line) => lines.extend(line),
            Err(e) => failures.push(format!("{leftover}: {e}")),
        }
    }
    if failures.is_empty() {
        Ok(lines)
    } else {
        let mut what = failures.join("; ");
        if !lines.is_empty() {
            what.push_str(&format!(" (removed {} other leftovers)", lines.len()));
        }
        Err(ProviderError::Leftover {
            what,
            reason: "remove it by hand (docker rm -f, rm -rf) or run `labs clean` as the user who made it".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_file_round_trips_and_tells_a_dead_owner() {
        let me = Owner::this_process();
        assert_eq!(Owner::parse_file(&me.file_text()), Some(me));
        assert!(me.is_alive());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!Owner { pid, started: None }.is_alive(), "a waited-for child still counts as alive");
        // The same pid with another start time is a reused pid: not the owner.
        if let Some(started) = me.started {
            assert!(!Owner { pid: me.pid, started: Some(started + 1) }.is_alive());
        }
        // pid 0 would address a process group: never taken for a dead owner.
        assert!(Owner { pid: 0, started: None }.is_alive());
    }

    #[test]
    fn postmaster_pid_is_the_first_line() {
        assert_eq!(parse_postmaster_pid("4242\n/tmp/x/primary\n1700000000\n"), Some(4242));
        assert_eq!(parse_postmaster_pid("\n"), None);
        assert_eq!(parse_postmaster_pid("1\n"), None, "pid 1 is never ours to signal");
    }
}
