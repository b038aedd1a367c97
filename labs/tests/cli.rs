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
    let out = labs(&["run", "wal-race"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("'wal-race' is a draft"), "{}", stderr(&out));
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
