//! When xtask is interrupted (SIGINT, SIGTERM, SIGHUP) or a child outlives its time limit, the
//! programs it started are ended and xtask exits non-zero saying so. The real xtask binary runs
//! each time, through its hidden `run-child` task: a shell that records the signals it gets, and
//! the labs binary with a local PostgreSQL server, whose server and directory must be gone after.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only asks whether the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

fn send(child: &Child, signal: libc::c_int) {
    // SAFETY: signalling the xtask process this test started.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
}

/// Waits for `path` to exist (the child got that far), failing after `limit`.
fn wait_for(path: &Path, limit: Duration) {
    let started = Instant::now();
    while !path.exists() {
        assert!(started.elapsed() < limit, "{} did not appear within {limit:?}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for xtask to exit, failing (after killing it) if it takes longer than `limit`.
fn finish(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("xtask did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// A shell that writes its pid, appends each SIGTERM it gets to `got`, and exits on it.
const RECORDER: &str = "trap 'echo TERM >> got; exit 143' TERM; trap 'echo INT >> got' INT; echo $$ > pid.tmp; \
                        mv pid.tmp pid; while true; do sleep 1 & wait $!; done";

#[test]
fn each_signal_ends_the_child_with_sigterm_and_xtask_exits_128_plus_the_signal() {
    for (signal, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM"), (libc::SIGHUP, "SIGHUP")] {
        let dir = tempfile::tempdir().unwrap();
        let xtask = xtask()
            .args(["run-child", "--", "sh", "-c", RECORDER])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for(&dir.path().join("pid"), Duration::from_secs(20));
        let child: u32 = std::fs::read_to_string(dir.path().join("pid")).unwrap().trim().parse().unwrap();
        send(&xtask, signal);
        let out = finish(xtask, Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(128 + signal), "{name}: {stderr}");
        // The child got SIGTERM from xtask, whatever xtask itself got, and nothing else.
        assert_eq!(std::fs::read_to_string(dir.path().join("got")).unwrap(), "TERM\n", "{name}");
        assert!(!alive(child), "{name}: the child (pid {child}) is still running");
        assert!(stderr.contains(&format!("xtask: {name}: ending what xtask started")), "{name}: {stderr}");
        assert!(stderr.contains(&format!("(pid {child}) with SIGTERM")), "{name}: {stderr}");
        assert!(stderr.contains(&format!("xtask: interrupted by {name}")), "{name}: {stderr}");
    }
}

/// xtask's own signal handling must not leak into what it starts: a child with SIGTERM blocked
/// (as an inherited signal mask would leave it) could never clean up.
#[test]
fn children_start_with_no_signal_blocked() {
    let out = xtask()
        .args(["run-child", "--", "grep", "^SigBlk:", "/proc/self/status"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("SigBlk:")).unwrap_or_else(|| panic!("{stdout}"));
    let blocked = u64::from_str_radix(line["SigBlk:".len()..].trim(), 16).unwrap();
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        assert_eq!(blocked >> (signal - 1) & 1, 0, "signal {signal} is blocked in the child: {line}");
    }
}

#[test]
fn a_child_past_its_time_limit_is_ended_and_xtask_fails_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = finish(
        xtask()
            .args(["run-child", "--limit", "2", "--", "sh", "-c", RECORDER])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did not finish within 2 s: ended it with SIGTERM"), "{stderr}");
    let child: u32 = std::fs::read_to_string(dir.path().join("pid")).unwrap().trim().parse().unwrap();
    assert!(!alive(child));
    assert_eq!(std::fs::read_to_string(dir.path().join("got")).unwrap(), "TERM\n");
}

/// The labs binary this workspace built: next to this test's own binary's directory.
fn labs_binary() -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    deps.parent().unwrap().join("labs")
}

/// Processes whose command line mentions `needle` (a test's private directory), from /proc.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok().map(|c| (e.file_name(), c)))
        .map(|(pid, cmdline)| (pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")))
        .filter(|(_, cmdline)| cmdline.contains(needle))
        .map(|(pid, cmdline)| format!("{} {cmdline}", pid.to_string_lossy()))
        .collect()
}

/// SIGTERM to xtask while the labs it started runs a lab on a local server: labs gets SIGTERM,
/// removes its server and directory, and xtask exits 143.
#[test]
fn sigterm_to_xtask_ends_a_running_lab_and_its_local_server_is_gone() {
    let labs = labs_binary();
    assert!(
        labs.is_file(),
        "{} is not built: `cargo test --workspace` builds it, or run `cargo build -p labs` first",
        labs.display()
    );
    if let Err(reason) = labs::pg::find_local_binaries() {
        // CI installs them (.ci/run); elsewhere say so rather than pass in silence.
        assert!(std::env::var_os("CI").is_none(), "no local PostgreSQL binaries on CI: {reason}");
        eprintln!("skipped: no local PostgreSQL binaries ({reason})");
        return;
    }
    // A private TMPDIR, so only this run's server directory can appear in it (and the server's
    // unprivileged user can reach it when we are root).
    let temp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(temp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let xtask = xtask()
        .args(["run-child", "--"])
        .arg(&labs)
        .args(["--pg", "local", "run", "wal-race", "--quick"])
        .env("TMPDIR", temp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The server is up once its directory holds a postmaster.pid.
    let started = Instant::now();
    let server_dir = loop {
        let found = std::fs::read_dir(temp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|dir| walk_has(dir, "postmaster.pid"));
        if let Some(dir) = found {
            break dir;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "no server started within 90 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(2)); // mid-lab: the race is under way
    send(&xtask, libc::SIGTERM);
    let out = finish(xtask, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("with SIGTERM"), "labs needed SIGKILL, so it could not clean up:\n{stderr}");
    assert!(!server_dir.exists(), "{} is left behind:\n{stderr}", server_dir.display());
    let left = processes_mentioning(&temp.path().display().to_string());
    assert!(left.is_empty(), "processes of this run are still running: {left:?}\n{stderr}");
}

fn walk_has(dir: &Path, name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    entries.filter_map(|e| e.ok()).any(|e| {
        let path = e.path();
        e.file_name() == name || (path.is_dir() && walk_has(&path, name))
    })
}
