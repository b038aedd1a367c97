//! The `labs` command as a user meets it: exit codes, one-line errors, and Ctrl-C leaving
//! nothing behind (no server process, no temporary directory, no container).

use std::process::{Command, Output};
use std::time::Duration;

fn labs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_labs")).args(args).output().expect("the labs binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unknown_activity_lists_the_valid_ones() {
    let out = labs(&["run", "no-such-lab"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unknown activity 'no-such-lab'; the activities are: log-sleuth, mythbusting"), "{}", stderr(&out));
}

#[test]
fn a_draft_activity_says_so_with_exit_code_3() {
    let out = labs(&["run", "mythbusting"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("'mythbusting' is a draft"), "{}", stderr(&out));
}

#[test]
fn a_bad_labs_pg_value_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_labs")).args(["run", "log-sleuth"]).env("LABS_PG", "kubernetes").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("LABS_PG is set to an invalid value: unknown PostgreSQL backend 'kubernetes'"), "{}", stderr(&out));
}

#[test]
fn list_as_json_has_every_activity_with_its_minutes() {
    let out = labs(&["list", "--json"]);
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["log-sleuth", "mythbusting", "schema-sketch", "wal-race", "outage", "reflection-wall"]);
    assert!(list[0]["minutes"].as_u64().unwrap() > 0);
}

#[test]
fn generate_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    assert!(labs(&["sleuth", "generate", "--seed", "3", "--difficulty", "easy", "--out", out_dir]).status.success());
    let again = labs(&["sleuth", "generate", "--seed", "3", "--difficulty", "easy", "--out", out_dir]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already exists; pass --force"), "{}", stderr(&again));
}

/// Sends Ctrl-C (SIGINT) to `labs run log-sleuth` at several moments, from the server's start
/// to the end of the lab, and checks what is left.
fn interrupt_at_several_moments(backend: &str, moments_ms: &[u64], check_clean: impl Fn(u32, &std::path::Path)) {
    for &ms in moments_ms {
        let tmp = tempfile::tempdir().unwrap();
        // Like /tmp: a server run as `nobody` (when the tests run as root) must reach its directory.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_labs"))
            .args(["run", "log-sleuth", "--pg", backend])
            .env("TMPDIR", tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        // Either interrupted (130) or it had already finished (0); never a crash.
        assert!(matches!(out.status.code(), Some(0) | Some(130)), "after {ms} ms: {:?} {}", out.status, stderr(&out));
        check_clean(pid, tmp.path());
    }
}

#[test]
fn ctrl_c_leaves_no_local_server_or_directory() {
    interrupt_at_several_moments("local", &[100, 400, 800, 1300], |_, tmp| {
        let left: Vec<_> = std::fs::read_dir(tmp).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    });
}

#[test]
fn ctrl_c_leaves_no_container() {
    if matches!(std::env::var("LABS_PG").as_deref(), Ok("local") | Ok("url")) {
        eprintln!("skipped: LABS_PG says this machine runs without containers");
        return;
    }
    interrupt_at_several_moments("container", &[300, 1500, 3000], |pid, _| {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=io.github.es-workshop.labs.run={pid}")])
            .output()
            .expect("docker CLI");
        assert!(out.stdout.is_empty(), "containers left by pid {pid}: {}", String::from_utf8_lossy(&out.stdout));
    });
}

/// Bad race options: one clear line and a non-zero exit, before any server starts.
#[test]
fn bad_wal_race_options_get_one_line_and_a_non_zero_exit() {
    let out = labs(&["run", "wal-race", "--strategies", "copy,teleport"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).trim(), "error: unknown strategy 'teleport'; the strategies are: row-per-tx, row-per-tx-async, rows-one-tx, multi-row, pipelined, copy, store-append, store-bulk, unlogged, extra-indexes, global-counter, advisory-lock");
    let out = labs(&["run", "wal-race", "--seconds", "-1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).trim(), "error: --seconds must be above 0 and at most 600, not -1");
    let out = labs(&["run", "wal-race", "--writers", "0"]);
    assert_eq!(out.status.code(), Some(2), "clap rejects zero writers: {}", stderr(&out));
    assert!(stderr(&out).contains("0 is not in 1..=64"), "{}", stderr(&out));
    let out = labs(&["run", "log-sleuth", "--quick"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("are options of `labs run wal-race`, not of log-sleuth"), "{}", stderr(&out));
}

/// Ctrl-C during the race: the points finished so far are reported and written, exit 130,
/// and the server and its directory are gone.
#[test]
fn ctrl_c_during_the_race_reports_what_was_measured() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out_dir = tmp.path().join("results");
    let mut child = Command::new(env!("CARGO_BIN_EXE_labs"))
        .args(["run", "wal-race", "--pg", "local", "--strategies", "multi-row,copy", "--writers", "1,2", "--seconds", "0.5", "--out"])
        .arg(&out_dir)
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Not a terminal: each finished point is one line on stderr. Interrupt after the first.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let finished = line.starts_with("multi-row") && line.contains("B/event");
        seen.push(line);
        if finished {
            break;
        }
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{seen:?} {rest:?}");
    assert!(stdout.contains("(INTERRUPTED: the points measured so far)"), "{stdout}");
    assert!(stdout.contains("multi-row         yes           1"), "{stdout}");
    assert!(out_dir.join("results.json").exists() && out_dir.join("throughput.svg").exists());
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n != "results").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
