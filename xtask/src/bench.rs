//! `cargo xtask bench`: the benchmarks behind the issues' speed and memory targets, rerunnable
//! in one go on a shared machine. Every figure is the median of several runs; compare runs made
//! in the same invocation, not across machines.
//!
//! - `labs sleuth audit` on a generated log of one million lines: lines/s and peak memory
//!   (target: at least 300,000 lines/s on one core, under 64 MiB).
//! - `labs run log-sleuth` wall time including a fresh server, local and container backends
//!   (targets: under 5 s and under 10 s with the image present).
//! - `labs run mythbusting` (the poll's demonstrations), each `labs run outage` scenario and
//!   `labs run outbox-relay` and `labs run two-nodes`, local and container (target: each under
//!   30 s, so they can run live in the room).
//! - `labs run replay-clock`: wall time (target under 30 s) and each rebuild strategy's events/s.
//! - `labs bench store`: the reference store's append shapes and readers as ratios to a plain
//!   COPY, a plain INSERT and the position reader, plus WAL bytes per event (issue 3's targets).
//! - Edit to verdict: `labs check log-sleuth` on an edited SQL file, fresh server included, local
//!   and container (targets: under 5 s and under 10 s), for a failing and a passing file.
//! - The attendee bundle: its size, the cold build of the release `labs`, and the time from an
//!   unzipped bundle (image present, no toolchain on PATH) to the first lab's output (target:
//!   under 1 minute).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{cargo, children, describe, minutes, run_command_within};

/// Seed and size of the benchmark log: 250,000 payments of four events, plus planted anomalies.
const SEED: &str = "7";
const PAYMENTS: &str = "250000";

pub fn run(root: &Path, runs: usize) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    run_command_within(cargo(root).args(["build", "--release", "--quiet", "-p", "labs"]), minutes(60))?;
    let binary = crate::cargo_target_dir(root).join("release/labs");
    // Every labs run below reads this kit (see check.rs's labs_command for why).
    let labs = || {
        let mut cmd = Command::new(&binary);
        cmd.env("LABS_HOME", root);
        cmd
    };
    let dir = root.join("target/bench");
    let log = dir.join("million/incident.jsonl");
    if !log.exists() {
        run_command_within(
            labs()
                .args(["sleuth", "generate", "--seed", SEED, "--payments", PAYMENTS, "--force", "--out"])
                .arg(dir.join("million")),
            minutes(30),
        )?;
    }
    let lines = count_lines(&log)?;

    let mut results = Vec::new();
    let audit: Vec<Sample> =
        (0..runs).map(|_| measure(labs().args(["sleuth", "audit"]).arg(&log))).collect::<Result<_>>()?;
    let audit_median = median(audit.iter().map(|s| s.wall));
    let peak = audit.iter().map(|s| s.max_rss_kib).max().unwrap_or(0);
    results.push(serde_json::json!({
        "benchmark": "labs sleuth audit, 1M-line log",
        "lines": lines,
        "median_seconds": audit_median.as_secs_f64(),
        "lines_per_second": (lines as f64 / audit_median.as_secs_f64()).round() as u64,
        "peak_memory_mib": (peak as f64 / 1024.0 * 10.0).round() / 10.0,
        "runs": runs,
    }));

    for backend in ["local", "container"] {
        let samples: Result<Vec<Sample>> =
            (0..runs).map(|_| measure(labs().args(["run", "log-sleuth", "--pg", backend]))).collect();
        match samples {
            Ok(samples) => results.push(serde_json::json!({
                "benchmark": format!("labs run log-sleuth --pg {backend} (fresh server included)"),
                "median_seconds": median(samples.iter().map(|s| s.wall)).as_secs_f64(),
                "runs": runs,
            })),
            Err(e) => results.push(serde_json::json!({
                "benchmark": format!("labs run log-sleuth --pg {backend}"),
                "skipped": format!("{e:#}"),
            })),
        }
    }

    // Edit to verdict (issue 12): the attendee saves poll.sql and runs `labs check log-sleuth`.
    // No compiler: the check reads the file. Measured for the shipped (failing) exercise and for
    // a solved one, each a freshly written file, fresh server included.
    let edited = dir.join("edited");
    std::fs::create_dir_all(&edited)?;
    // The shipped file fails the check (exit 1); the solution passes (exit 0).
    for (what, source, target, exit) in [
        ("failing", "exercises/01-log-sleuth/poll.sql", None, 1),
        ("passing", "exercises/01-log-sleuth/poll.solution.sql", Some(5.0), 0),
    ] {
        for backend in ["local", "container"] {
            let file = edited.join(format!("poll-{what}.sql"));
            let limit = target.map(|t: f64| if backend == "container" { t * 2.0 } else { t });
            let samples: Result<Vec<Sample>> = (0..runs)
                .map(|_| {
                    std::fs::copy(root.join(source), &file)?;
                    measure_expecting(
                        labs().args(["check", "log-sleuth", "--file"]).arg(&file).args(["--pg", backend]),
                        exit,
                    )
                })
                .collect();
            let name = format!("edit to verdict: labs check log-sleuth ({what} file) --pg {backend}");
            results.push(match samples {
                Ok(samples) => {
                    let median = median(samples.iter().map(|s| s.wall)).as_secs_f64();
                    match limit {
                        Some(t) => serde_json::json!({ "benchmark": name, "median_seconds": median, "runs": runs, "target_seconds": t, "meets_target": median < t }),
                        None => serde_json::json!({ "benchmark": name, "median_seconds": median, "runs": runs }),
                    }
                }
                Err(e) => serde_json::json!({ "benchmark": name, "skipped": format!("{e:#}") }),
            });
        }
    }

    results.extend(attendee_bundle(root, &dir)?);

    // The live demos of activities 2, 5 and 7 (issue 5's target: each under 30 s, so they run in the
    // room), on both backends, fresh servers included. At most 3 runs each: about 5 minutes.
    let live_runs = runs.min(3);
    let live: [&[&str]; 6] = [
        &["run", "mythbusting"],
        &["run", "outage", "--scenario", "frozen-wal-writer"],
        &["run", "outage", "--scenario", "async-failover"],
        &["run", "outage", "--scenario", "unarchived-wal"],
        &["run", "outbox-relay"],
        &["run", "two-nodes"],
    ];
    for backend in ["local", "container"] {
        for args in live {
            let samples: Result<Vec<Sample>> =
                (0..live_runs).map(|_| measure(labs().args(args).args(["--pg", backend]))).collect();
            let name = format!("labs {} --pg {backend}", args.join(" "));
            results.push(match samples {
                Ok(samples) => {
                    let median = median(samples.iter().map(|s| s.wall)).as_secs_f64();
                    serde_json::json!({ "benchmark": name, "median_seconds": median, "runs": live_runs, "target_seconds": 30, "meets_target": median < 30.0 })
                }
                Err(e) => serde_json::json!({ "benchmark": name, "skipped": format!("{e:#}") }),
            });
        }
    }

    // Activity 8's lab (issue 16): its wall time, fresh server included, and each rebuild
    // strategy's events/s, medians of at most 3 runs per backend.
    for backend in ["local", "container"] {
        results.extend(replay_clock(&labs, backend, runs.min(3)));
    }

    // The reference store: one fresh server (local binaries: no container overhead in the
    // figures), every append shape and reader against its ceiling in the same run.
    println!("$ labs --pg local bench store --runs {runs} --json");
    let store = children::output(
        labs().args(["--pg", "local", "bench", "store", "--json", "--runs"]).arg(runs.to_string()),
        None,
    )?;
    if store.status.success() {
        let report: serde_json::Value = serde_json::from_slice(&store.stdout).context("labs bench store --json")?;
        for shape in report["shapes"].as_array().cloned().unwrap_or_default() {
            let mut row = shape.clone();
            row["benchmark"] =
                format!("store: {} ({} writers)", shape["shape"].as_str().unwrap_or_default(), shape["writers"]).into();
            results.push(row);
        }
    } else {
        results.push(serde_json::json!({
            "benchmark": "labs bench store",
            "skipped": String::from_utf8_lossy(&store.stderr).trim().to_string(),
        }));
    }

    println!("\n{:<62} result (median)", "benchmark");
    for r in &results {
        let name = r["benchmark"].as_str().unwrap_or_default();
        let figure = if let Some(skipped) = r.get("skipped") {
            format!("skipped: {}", skipped.as_str().unwrap_or_default().lines().next().unwrap_or_default())
        } else if let Some(eps) = r.get("events_per_second") {
            let ratio = match (r["ratio_to_ceiling"].as_f64(), r["ceiling"].as_str()) {
                (Some(x), Some(c)) => format!(", {:.0}% of {c}", x * 100.0),
                _ => String::new(),
            };
            let target = match (r["target"].as_f64(), r["meets_target"].as_bool()) {
                (Some(t), Some(met)) => format!(" (target {:.0}%: {})", t * 100.0, if met { "met" } else { "NOT met" }),
                _ => String::new(),
            };
            format!("{eps} events/s, {} B WAL/event{ratio}{target}", r["wal_bytes_per_event"])
        } else if let Some(mb) = r.get("size_mb") {
            format!(
                "{:.1} MB (labs itself {:.1} MB)",
                mb.as_f64().unwrap_or(0.0),
                r["labs_binary_mb"].as_f64().unwrap_or(0.0)
            )
        } else if let Some(eps) = r.get("rebuild_events_per_second") {
            format!("{eps} events/s")
        } else if let Some(lps) = r.get("lines_per_second") {
            format!(
                "{:.2} s, {} lines/s, peak {} MiB",
                r["median_seconds"].as_f64().unwrap_or(0.0),
                lps,
                r["peak_memory_mib"]
            )
        } else if let Some(met) = r["meets_target"].as_bool() {
            let target = r["target_seconds"].as_f64().unwrap_or(0.0);
            format!(
                "{:.2} s (target {target:.0} s: {})",
                r["median_seconds"].as_f64().unwrap_or(0.0),
                if met { "met" } else { "NOT met" }
            )
        } else {
            format!("{:.2} s", r["median_seconds"].as_f64().unwrap_or(0.0))
        };
        println!("{name:<62} {figure}");
    }
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("results.json");
    std::fs::write(&out, serde_json::to_string_pretty(&results)? + "\n")?;
    println!("\nwritten to {}", crate::rel(root, &out));
    Ok(())
}

/// The attendee bundle (issue 12): the cold build time of the release `labs` (in a target
/// directory of its own, emptied first), the bundle's size, and from the unzipped bundle to the
/// first lab's output with no toolchain on PATH, on the container backend when the image is
/// there, else local.
fn attendee_bundle(root: &Path, dir: &Path) -> Result<Vec<serde_json::Value>> {
    let mut results = Vec::new();
    let cold = dir.join("cold-target");
    let _ = std::fs::remove_dir_all(&cold);
    let started = Instant::now();
    run_command_within(
        cargo(root)
            .args(["build", "--release", "--quiet", "-p", "labs", "--bin", "labs"])
            .env("CARGO_TARGET_DIR", &cold),
        minutes(60),
    )?;
    results.push(serde_json::json!({
        "benchmark": "cold build of the release labs binary (its own target directory)",
        "median_seconds": started.elapsed().as_secs_f64(),
        "runs": 1,
    }));
    let _ = std::fs::remove_dir_all(&cold);
    let out = dir.join("handouts");
    crate::handouts::build(root, &out, crate::bundle::Profile::Release)?;
    let zip = out.join("attendee.zip");
    let binary_bytes = std::fs::metadata(crate::cargo_target_dir(root).join("release/labs"))?.len();
    results.push(serde_json::json!({
        "benchmark": "attendee.zip (release labs inside)",
        "size_mb": std::fs::metadata(&zip)?.len() as f64 / 1e6,
        "labs_binary_mb": binary_bytes as f64 / 1e6,
    }));
    let settings = crate::load_settings(root)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let image = labs::pg::ProviderConfig::from_env(None)?.image;
    let has_image = runtime.block_on(async {
        match labs::pg::DockerEngine::detect().await {
            Ok(engine) => engine.has_image(&image).await,
            Err(_) => false,
        }
    });
    let backend = if has_image { "container" } else { "local" };
    let seconds = crate::bundle::attendee_bundle_runs(root, &zip, backend, &settings.course, &settings.cohort)?;
    results.push(serde_json::json!({
        "benchmark": format!("unzipped bundle to the first lab's output, no toolchain (--pg {backend})"),
        "median_seconds": seconds,
        "runs": 1,
        "target_seconds": 60,
        "meets_target": seconds < 60.0,
    }));
    Ok(results)
}

/// `labs run replay-clock --json` `runs` times: the lab's median wall time and, per strategy,
/// the median events/s it reported.
fn replay_clock(labs: &dyn Fn() -> Command, backend: &str, runs: usize) -> Vec<serde_json::Value> {
    let name = format!("labs run replay-clock --pg {backend} (fresh server included)");
    let mut walls = Vec::new();
    let mut rates: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for _ in 0..runs {
        let mut cmd = labs();
        cmd.args(["run", "replay-clock", "--json", "--pg", backend]);
        println!("$ {}", describe(&cmd));
        let started = Instant::now();
        let output = match children::output(cmd.stderr(Stdio::null()), None) {
            Ok(output) if output.status.success() => output,
            Ok(output) => {
                return vec![serde_json::json!({ "benchmark": name, "skipped": format!("exit {}", output.status) })]
            }
            Err(e) => return vec![serde_json::json!({ "benchmark": name, "skipped": e.to_string() })],
        };
        walls.push(started.elapsed());
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        for s in report["strategies"].as_array().cloned().unwrap_or_default() {
            let strategy = s["strategy"].as_str().unwrap_or_default().to_string();
            rates.entry(strategy).or_default().push(s["events_per_second"].as_f64().unwrap_or(0.0));
        }
    }
    let median_wall = median(walls.into_iter()).as_secs_f64();
    let mut rows = vec![serde_json::json!({
        "benchmark": name, "median_seconds": median_wall, "runs": runs, "target_seconds": 30, "meets_target": median_wall < 30.0,
    })];
    for (strategy, mut values) in rates {
        values.sort_by(f64::total_cmp);
        rows.push(serde_json::json!({
            "benchmark": format!("replay-clock rebuild: {strategy} (--pg {backend})"),
            "rebuild_events_per_second": values[values.len() / 2].round() as u64,
            "runs": runs,
        }));
    }
    rows
}

struct Sample {
    wall: Duration,
    max_rss_kib: i64,
}

/// Runs a command to completion with its output discarded; wall time and the child's own peak RSS.
fn measure(cmd: &mut Command) -> Result<Sample> {
    measure_expecting(cmd, 0)
}

/// Times `cmd`, which must exit with `expected` (1 for a check that must fail: its verdict is
/// what is timed, not an error).
fn measure_expecting(cmd: &mut Command, expected: i32) -> Result<Sample> {
    println!("$ {}", describe(cmd));
    let started = Instant::now();
    // stderr goes to a file, not a pipe: a pipe nobody reads during the run could fill and block it.
    let stderr_path = std::env::temp_dir().join(format!("xtask-bench-{}.stderr", std::process::id()));
    let stderr_file = std::fs::File::create(&stderr_path)?;
    let name = describe(cmd);
    // Registered like every child, so an interrupt ends it; no time limit: it is being measured.
    let child = children::Running::spawn(cmd.stdout(Stdio::null()).stderr(stderr_file), name)?;
    let mut status = 0;
    // SAFETY: wait4 on our own child's pid, which std has not waited for; rusage is plain data.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.pid() as i32, &mut status, 0, &mut usage) };
    // Reaped above: dropping it only takes it off the list of running children.
    drop(child);
    let wall = started.elapsed();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr_path);
    if pid < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != expected {
        bail!("`{}` did not exit with {expected}: {}", describe(cmd), stderr.trim());
    }
    Ok(Sample { wall, max_rss_kib: usage.ru_maxrss })
}

/// Counts lines in small chunks. Reading the whole log at once would leave this process with a
/// 250 MB resident set, which Linux carries into each child's peak RSS (it survives exec).
fn count_lines(path: &Path) -> Result<usize> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut lines = 0;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buf[..n].iter().filter(|b| **b == b'\n').count();
    }
}

fn median(values: impl Iterator<Item = Duration>) -> Duration {
    let mut v: Vec<Duration> = values.collect();
    v.sort();
    v[v.len() / 2]
}
