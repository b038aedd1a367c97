//! The `labs` command as a user meets it: exit codes, one-line errors, and Ctrl-C leaving
//! nothing behind (no server process, no temporary directory, no container).

mod common;

use std::process::{Command, Output};
use std::time::Duration;

fn labs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_labs")).args(args).output().expect("the labs binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The activities of the course this build reads (the repository's course.toml).
fn activity_ids() -> Vec<String> {
    labs::settings::Settings::compiled_in().course.activities.iter().map(|a| a.id.clone()).collect()
}

#[test]
fn an_unknown_activity_lists_the_valid_ones() {
    let listed = activity_ids().join(", ");
    for args in [&["run", "no-such-lab"][..], &["check", "no-such-lab"][..]] {
        let out = labs(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: bad usage is exit 2");
        assert!(
            stderr(&out).contains(&format!("unknown activity 'no-such-lab'; the activities are: {listed}")),
            "{}",
            stderr(&out)
        );
    }
}

/// Bad input is answered before any server starts, with the valid choices and exit code 2; a
/// flag another lab takes is refused by name.
#[test]
fn unknown_myths_and_scenarios_list_the_valid_ones() {
    let out = labs(&["run", "mythbusting", "--myth", "teleportation"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("error: unknown myth 'teleportation'; the myths are: replication-no-loss,"),
        "{}",
        stderr(&out)
    );
    let out = labs(&["run", "outage", "--scenario", "meteor"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("[possible values: frozen-wal-writer, async-failover, unarchived-wal]"),
        "{}",
        stderr(&out)
    );
    let out = labs(&["run", "log-sleuth", "--scenario", "meteor"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unexpected argument '--scenario'"), "{}", stderr(&out));
    let out = labs(&["run", "wal-race", "--strategies", "teleport"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("[possible values: row-per-tx,"), "{}", stderr(&out));
}

/// An activity without an exercise is exit code 3, and says so.
#[test]
fn an_activity_without_an_exercise_is_exit_3() {
    let out = labs(&["check", "wal-race"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("has no exercise"), "{}", stderr(&out));
}

/// An exercise file that cannot be read is exit code 4 (could not run), naming the file.
#[test]
fn a_missing_exercise_file_is_named() {
    let out = labs(&["check", "log-sleuth", "--file", "/nonexistent/poll.sql"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("/nonexistent/poll.sql"), "{}", stderr(&out));
}

/// The url backend cannot crash, freeze or fail over a server it does not own: it says which
/// capability is missing and exits non-zero, before connecting anywhere.
#[test]
fn a_backend_without_a_needed_capability_says_which() {
    let unreachable = "postgres://nobody@127.0.0.1:1/none";
    let out = Command::new(env!("CARGO_BIN_EXE_labs"))
        .args(["run", "outage", "--pg", "url"])
        .env("DATABASE_URL", unreachable)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("needs the 'freeze-wal-writer' capability, which the url backend does not offer"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_labs"))
        .args(["run", "mythbusting", "--pg", "url", "--myth", "replication-no-loss"])
        .env("DATABASE_URL", unreachable)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("needs the 'standby' capability, which the url backend does not offer"),
        "{}",
        stderr(&out)
    );
}

/// The poll's questions for a poll tool, without a server.
#[test]
fn poll_csv_needs_no_server() {
    let out = Command::new(env!("CARGO_BIN_EXE_labs"))
        .args(["run", "mythbusting", "--poll-csv"])
        .env("LABS_PG", "url")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("number,id,question,"));
}

#[test]
fn a_bad_labs_pg_value_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_labs"))
        .args(["run", "log-sleuth"])
        .env("LABS_PG", "kubernetes")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("LABS_PG is set to an invalid value: unknown PostgreSQL backend 'kubernetes'"),
        "{}",
        stderr(&out)
    );
}

/// `labs list --json` holds what the text shows: every activity, its minutes in the cohort's
/// variant, its status and its exercise.
#[test]
fn list_as_json_has_every_activity_with_its_minutes() {
    let out = labs(&["list", "--json"]);
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<String> =
        list["activities"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, activity_ids());
    let text = String::from_utf8_lossy(&labs(&["list"]).stdout).into_owned();
    for a in list["activities"].as_array().unwrap() {
        let minutes = a["minutes"].as_u64().unwrap();
        assert!(minutes > 0, "{a}");
        let id = a["id"].as_str().unwrap();
        let row = text.lines().find(|l| l.split_whitespace().nth(1) == Some(id)).unwrap();
        assert!(row.contains(a["status"].as_str().unwrap()), "{row}");
        assert!(row.split_whitespace().any(|w| w == minutes.to_string()), "{row} lacks {minutes} minutes");
        if let Some(exercise) = a["exercise"].as_str() {
            assert!(text.contains(exercise), "{exercise} is missing from the text");
        }
    }
    // "today" follows the cohort's session: in the core, exactly the chosen activities.
    let settings = labs::settings::Settings::compiled_in();
    let today: Vec<&str> = list["activities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["in_session"] == true)
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = settings
        .course
        .activities
        .iter()
        .filter(|a| settings.course.in_session(&settings.cohort, &a.id))
        .map(|a| a.id.as_str())
        .collect();
    assert_eq!(today, expected);
    assert!((!today.is_empty() && today.len() < settings.course.activities.len()) || settings.cohort.variant != "core");
}

#[test]
fn generate_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    assert!(labs(&["sleuth", "generate", "--seed", "3", "--difficulty", "easy", "--out", out_dir]).status.success());
    let again = labs(&["sleuth", "generate", "--seed", "3", "--difficulty", "easy", "--out", out_dir]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("already exists; pass --force"), "{}", stderr(&again));
}

/// Sends Ctrl-C (SIGINT) to `labs run log-sleuth` at several moments, from the server's start
/// to the end of the lab, and checks what is left.
fn interrupt_at_several_moments(backend: &str, moments_ms: &[u64], check_clean: impl Fn(u32, &std::path::Path)) {
    interrupt_lab_at_several_moments(&["run", "log-sleuth"], backend, moments_ms, check_clean);
}

/// Sends Ctrl-C to a lab at several moments and checks what is left.
fn interrupt_lab_at_several_moments(
    lab: &[&str],
    backend: &str,
    moments_ms: &[u64],
    check_clean: impl Fn(u32, &std::path::Path),
) {
    signal_lab_at_several_moments(lab, backend, libc::SIGINT, moments_ms, check_clean);
}

/// The exit code a shell reports for a process ended by `signal`: 128 + its number.
fn exit_code_of(signal: i32) -> i32 {
    128 + signal
}

/// Sends `signal` to a lab at several moments and checks what is left.
fn signal_lab_at_several_moments(
    lab: &[&str],
    backend: &str,
    signal: i32,
    moments_ms: &[u64],
    check_clean: impl Fn(u32, &std::path::Path),
) {
    for &ms in moments_ms {
        let tmp = tempfile::tempdir().unwrap();
        // Like /tmp: a server run as `nobody` (when the tests run as root) must reach its directory.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_labs"))
            .args(lab)
            .args(["--pg", backend])
            .env("TMPDIR", tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        // Either ended by the signal (128 + its number) or it had already finished (0); never a
        // crash, and never killed by the signal's default action (no exit code at all).
        let expected = exit_code_of(signal);
        assert!(
            matches!(out.status.code(), Some(0)) || out.status.code() == Some(expected),
            "signal {signal} after {ms} ms: {:?} {}",
            out.status,
            stderr(&out)
        );
        if out.status.code() == Some(expected) {
            assert!(stderr(&out).contains("nothing of this run is left running"), "{}", stderr(&out));
        }
        // Printed with the test's output if the check below fails: which moment left something.
        println!("signal {signal} after {ms} ms: exit {:?}", out.status.code());
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

/// The outage lab crashes, freezes, backs up and restores: Ctrl-C in any of those steps leaves
/// no server, standby or directory behind.
#[test]
fn ctrl_c_during_an_outage_leaves_nothing_behind() {
    interrupt_lab_at_several_moments(
        &["run", "outage", "--scenario", "unarchived-wal"],
        "local",
        &[1500, 2500, 3500, 5000, 7000],
        |_, tmp| {
            let left: Vec<_> = std::fs::read_dir(tmp).unwrap().map(|e| e.unwrap().path()).collect();
            assert!(left.is_empty(), "left behind: {left:?}");
        },
    );
}

/// The same in containers: the primary and the standby run inside one container per run, and
/// both runs' containers go.
#[test]
fn ctrl_c_during_an_outage_leaves_no_container() {
    if !common::containers_expected() {
        return;
    }
    interrupt_lab_at_several_moments(
        &["run", "outage", "--scenario", "async-failover"],
        "container",
        &[2500, 6000, 10000],
        |pid, _| {
            let out = Command::new("docker")
                .args(["ps", "-aq", "--filter", &format!("label=io.github.es-workshop.labs.run={pid}")])
                .output()
                .expect("docker CLI");
            assert!(out.stdout.is_empty(), "containers left by pid {pid}: {}", String::from_utf8_lossy(&out.stdout));
        },
    );
}

#[test]
fn ctrl_c_leaves_no_container() {
    if !common::containers_expected() {
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

/// Bad race options: clap's one clear line and exit 2, before any server starts.
#[test]
fn bad_wal_race_options_get_one_line_and_a_non_zero_exit() {
    let out = labs(&["run", "wal-race", "--strategies", "copy,teleport"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("invalid value 'teleport' for '--strategies <STRATEGIES>'"), "{}", stderr(&out));
    assert!(stderr(&out).contains("row-per-tx, row-per-tx-async, rows-one-tx"), "{}", stderr(&out));
    let out = labs(&["run", "wal-race", "--seconds", "-1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("must be a number of seconds above 0 and at most 600, not -1"), "{}", stderr(&out));
    let out = labs(&["run", "wal-race", "--writers", "0"]);
    assert_eq!(out.status.code(), Some(2), "clap rejects zero writers: {}", stderr(&out));
    assert!(stderr(&out).contains("0 is not in 1..=64"), "{}", stderr(&out));
    let out = labs(&["run", "log-sleuth", "--quick"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unexpected argument '--quick'"), "{}", stderr(&out));
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
        .args([
            "run",
            "wal-race",
            "--pg",
            "local",
            "--strategies",
            "multi-row,copy",
            "--writers",
            "1,2",
            "--seconds",
            "0.5",
            "--out",
        ])
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
    let left: Vec<_> =
        std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n != "results").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn nothing_left_in(tmp: &std::path::Path) {
    let left: Vec<_> = std::fs::read_dir(tmp).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn no_container_of(pid: u32) {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=io.github.es-workshop.labs.run={pid}")])
        .output()
        .expect("docker CLI");
    assert!(out.stdout.is_empty(), "containers left by pid {pid}: {}", String::from_utf8_lossy(&out.stdout));
}

/// SIGTERM (`timeout`, CI runners, IDE stop buttons) and SIGHUP (a closed terminal) take the same
/// path as Ctrl-C: during the server's start, mid-lab and during teardown, nothing is left, and
/// the exit code says which signal (143, 129).
#[test]
fn sigterm_and_sighup_leave_no_local_server_or_directory() {
    for signal in [libc::SIGTERM, libc::SIGHUP] {
        signal_lab_at_several_moments(&["run", "log-sleuth"], "local", signal, &[150, 900, 1500], |_, tmp| {
            nothing_left_in(tmp)
        });
    }
}

#[test]
fn sigterm_and_sighup_leave_no_container() {
    if !common::containers_expected() {
        return;
    }
    for signal in [libc::SIGTERM, libc::SIGHUP] {
        signal_lab_at_several_moments(&["run", "log-sleuth"], "container", signal, &[300, 1800, 3500], |pid, _| {
            no_container_of(pid)
        });
    }
}

/// A run killed outright (SIGKILL) cannot clean up: its server and directory stay, owned by a
/// process that is gone. `labs clean` removes them, and so does the next lab run; a live run's
/// are never touched.
#[test]
fn what_a_killed_run_leaves_is_removed_by_labs_clean_or_the_next_run_and_a_live_run_is_left_alone() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out_dir = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    // Starts a race and returns once its server is up.
    let start_race = |out: String| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_labs"))
            .args(["run", "wal-race", "--quick", "--pg", "local", "--out", &out])
            .env("TMPDIR", tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        for line in lines.by_ref() {
            if line.unwrap().contains("server ready") {
                break;
            }
        }
        // Keep reading its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        child
    };
    let servers = || -> Vec<std::path::PathBuf> {
        let mut dirs: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("labs-pg-"))
            .collect();
        dirs.sort();
        dirs
    };
    let mut live = start_race(out_dir("live"));
    let live_dir = servers();
    assert_eq!(live_dir.len(), 1, "{live_dir:?}");
    let mut killed = start_race(out_dir("killed"));
    killed.kill().unwrap();
    killed.wait().unwrap();
    let killed_dir: Vec<_> = servers().into_iter().filter(|d| !live_dir.contains(d)).collect();
    assert_eq!(killed_dir.len(), 1, "SIGKILL leaves the run's directory: {killed_dir:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_labs")).arg("clean").env("TMPDIR", tmp.path()).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains(killed_dir[0].to_str().unwrap()), "{said}");
    assert!(!killed_dir[0].exists(), "labs clean left {}", killed_dir[0].display());
    assert_eq!(servers(), live_dir, "the live run's directory must stay");

    // Now the live run is killed too: the next lab run removes what it left, and says so.
    live.kill().unwrap();
    live.wait().unwrap();
    let next = Command::new(env!("CARGO_BIN_EXE_labs"))
        .args(["run", "log-sleuth", "--pg", "local"])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert!(next.status.success(), "{}", stderr(&next));
    assert!(stderr(&next).contains("cleaned up after a labs process that was killed"), "{}", stderr(&next));
    assert!(servers().is_empty(), "left behind: {:?}", servers());
    nothing_left_in_but(tmp.path(), &["live", "killed"]);
}

fn nothing_left_in_but(tmp: &std::path::Path, allowed: &[&str]) {
    let left: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !allowed.iter().any(|a| p.file_name().unwrap() == *a))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
