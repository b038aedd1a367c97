//! The server-side half of `labs bench store`: pgbench runs the store's single-event appends
//! and transfers as prepared statements (`-M prepared`), next to a plain single-row INSERT into
//! the same table, on the same server, in one run. No Rust client in the way: what differs is
//! only what each statement asks of the server.
//!
//! One event per transaction, each writer (pgbench client) on ten streams of its own, 1 and 16
//! writers, fsync on. The scripts decompose the fast path (what each of its parts costs) and
//! measure the order rule (schema.sql): the fast path and `append_to_stream` with and without
//! it, and a transfer with `lock_streams` against the same transfer without it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tokio_postgres::Client;

use super::StoreError;
use crate::pg::Server;

/// The writer counts every script runs at.
pub const WRITERS: [usize; 2] = [1, 16];

/// One script: a name for the table and what pgbench runs in each transaction.
#[derive(Clone, Debug)]
struct Script {
    name: &'static str,
    /// Events each transaction appends (a transfer appends two).
    events_per_transaction: u64,
    body: String,
}

/// One script's medians.
#[derive(Clone, Debug, Serialize)]
pub struct ScriptResult {
    pub script: &'static str,
    /// Median events/s at each of [`WRITERS`].
    pub events_per_second: Vec<f64>,
    /// Over the plain INSERT's events/s at the same writers, median of run-by-run ratios.
    pub ratio_to_insert: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PgbenchReport {
    pub pgbench: String,
    pub seconds_per_point: u64,
    pub runs: usize,
    pub writers: Vec<usize>,
    pub scripts: Vec<ScriptResult>,
    /// What the order rule costs, read from the pairs of scripts with and without it.
    pub order_rule_cost: Vec<String>,
    /// The fast path's target: at least 90% of the plain INSERT at 1 and at 16 writers.
    pub fast_path_meets_target: bool,
}

/// The parts of the statement pgbench fills in per transaction: `:client_id` is pgbench's own;
/// `n` counts this client's transactions (`-D n=0`), so the stream and its next version follow.
const HEADER: &str = "\\set s :n % 10\n\\set v (:n / 10) + 1\n\\set n :n + 1\n";
const STREAM: &str = "('pgb-' || :client_id || '-' || :s)";

/// The fast path as one line for pgbench: comments dropped (pgbench would look for variables
/// in them), the parameters replaced by the script's values.
fn fast_path(remove: &[&str]) -> String {
    let mut sql: String = super::append::FAST_APPEND_SQL
        .lines()
        .map(|line| line.split("--").next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    for part in remove {
        assert!(sql.contains(part), "fast_append.sql no longer has `{part}`: update the bench's decomposition");
        sql = sql.replace(part, "");
    }
    sql.replace("$1", STREAM)
        .replace("$2", "(:v - 1)")
        .replace("$3", "gen_random_uuid()")
        .replace("$4", "'Deposited'")
        .replace("$5", "'{\"amount_cents\": 100}'::jsonb")
        .replace("$6", "NULL::jsonb")
}

const WITHOUT_RULE: &str = "AND pg_current_xact_id_if_assigned() IS NULL";
const WITHOUT_LOCK: &str = "AND pg_try_advisory_xact_lock(hashtextextended($1, 0))";

fn scripts() -> Vec<Script> {
    let one = |name, body: String| Script { name, events_per_transaction: 1, body: format!("{HEADER}{body};\n") };
    let transfer = |name, lock: bool, function: &str| {
        let other = "('pgb-' || :client_id || '-x' || :s)";
        let lock = if lock { format!("SELECT lock_streams(ARRAY[{STREAM}, {other}]);\n") } else { String::new() };
        Script {
            name,
            events_per_transaction: 2,
            body: format!(
                "{HEADER}BEGIN;\n{lock}SELECT {function}({STREAM}, NULL, ARRAY[gen_random_uuid()], ARRAY['Deposited'], \
                 ARRAY['{{\"amount_cents\": 100}}'::jsonb], NULL);\nSELECT {function}({other}, NULL, ARRAY[gen_random_uuid()], \
                 ARRAY['Deposited'], ARRAY['{{\"amount_cents\": 100}}'::jsonb], NULL);\nEND;\n"
            ),
        }
    };
    vec![
        one(
            "plain INSERT (ceiling)",
            format!("INSERT INTO events (event_id, stream_id, version, type, data, metadata) VALUES (gen_random_uuid(), {STREAM}, :v, 'Deposited', '{{\"amount_cents\": 100}}', '{{}}')"),
        ),
        one(
            "INSERT ... ON CONFLICT DO NOTHING",
            format!("INSERT INTO events (event_id, stream_id, version, type, data, metadata) VALUES (gen_random_uuid(), {STREAM}, :v, 'Deposited', '{{\"amount_cents\": 100}}', '{{}}') ON CONFLICT DO NOTHING"),
        ),
        one("fast path without its lock and the order rule", fast_path(&[WITHOUT_LOCK, WITHOUT_RULE])),
        one("fast path without the order rule", fast_path(&[WITHOUT_RULE])),
        one("fast path (the store's 1-event append)", fast_path(&[])),
        one(
            "append_to_stream without the order rule",
            format!("SELECT append_to_stream_without_order_rule({STREAM}, :v - 1, ARRAY[gen_random_uuid()], ARRAY['Deposited'], ARRAY['{{\"amount_cents\": 100}}'::jsonb], NULL)"),
        ),
        one(
            "append_to_stream (plpgsql)",
            format!("SELECT append_to_stream({STREAM}, :v - 1, ARRAY[gen_random_uuid()], ARRAY['Deposited'], ARRAY['{{\"amount_cents\": 100}}'::jsonb], NULL)"),
        ),
        transfer("transfer without lock_streams and the rule", false, "append_to_stream_without_order_rule"),
        transfer("transfer: lock_streams, then 2 appends", true, "append_to_stream"),
    ]
}

/// `append_to_stream` as schema.sql has it, renamed, without the lines of the order rule
/// (between its ANCHOR lines): what the rule costs is the difference.
fn append_without_order_rule() -> String {
    let schema = super::SCHEMA_SQL;
    let start = schema.find("CREATE FUNCTION append_to_stream(").expect("schema.sql defines append_to_stream");
    let end = schema[start..].find("$$;\n").expect("append_to_stream ends with $$;") + start + 4;
    let function = &schema[start..end];
    let rule_start = function.find("    -- ANCHOR: order_rule\n").expect("the order rule's ANCHOR in schema.sql");
    let rule_end = function.find("    -- ANCHOR_END: order_rule\n").expect("the order rule's ANCHOR_END in schema.sql")
        + "    -- ANCHOR_END: order_rule\n".len();
    format!("{}{}", &function[..rule_start], &function[rule_end..])
        .replace("CREATE FUNCTION append_to_stream(", "CREATE FUNCTION append_to_stream_without_order_rule(")
}

/// pgbench, next to the server's binaries or on PATH.
async fn find_pgbench(server: &Server) -> Option<PathBuf> {
    let own_major = PathBuf::from(format!("/usr/lib/postgresql/{}/bin/pgbench", server.version().major()));
    if own_major.is_file() {
        return Some(own_major);
    }
    if let Ok(dir) = crate::pg::find_local_binaries_async().await {
        if dir.join("pgbench").is_file() {
            return Some(dir.join("pgbench"));
        }
    }
    let on_path = std::env::var_os("PATH")?;
    std::env::split_paths(&on_path).map(|dir| dir.join("pgbench")).find(|p| p.is_file())
}

/// Runs every script at every writer count, `runs` times, `seconds` a point. None when pgbench
/// is not installed (the report says so).
pub async fn run(
    server: &Server,
    admin: &Client,
    runs: usize,
    seconds: u64,
    progress: &mut impl FnMut(&str),
) -> Result<Option<PgbenchReport>, StoreError> {
    let Some(pgbench) = find_pgbench(server).await else {
        progress("pgbench not found (PostgreSQL's client tools): the server-side comparison is left out");
        return Ok(None);
    };
    let db = |context: &'static str| StoreError::db(context);
    admin
        .batch_execute(&append_without_order_rule())
        .await
        .map_err(db("installing append_to_stream without the order rule, for the bench"))?;
    // pgbench's sessions start as a session does after its first append_to_stream: the cluster
    // guard has passed and says so in store.cluster. Without it every fast-path statement would
    // leave the append to append_to_stream, and insert nothing itself.
    let cluster: i64 =
        admin.query_one("SELECT store_check_cluster()", &[]).await.map_err(db("checking the store's cluster"))?.get(0);
    let dir = tempfile::tempdir().map_err(|e| StoreError::Bench(format!("a temporary directory: {e}")))?;
    let scripts = scripts();
    let mut files = Vec::new();
    for (i, script) in scripts.iter().enumerate() {
        let path = dir.path().join(format!("script-{i}.sql"));
        std::fs::write(&path, &script.body)
            .map_err(|e| StoreError::Bench(format!("writing {}: {e}", path.display())))?;
        files.push(path);
    }
    // events/s per [script][writers] -> one sample per run.
    let mut samples = vec![vec![Vec::new(); WRITERS.len()]; scripts.len()];
    for run in 0..runs {
        let mut order: Vec<usize> = (0..scripts.len()).collect();
        if run % 2 == 1 {
            order.reverse();
        }
        for (w, &writers) in WRITERS.iter().enumerate() {
            for &i in &order {
                progress(&format!(
                    "run {}/{runs}: pgbench, {} ({writers} writer{})",
                    run + 1,
                    scripts[i].name,
                    if writers == 1 { "" } else { "s" }
                ));
                admin.batch_execute("TRUNCATE events").await.map_err(db("TRUNCATE events"))?;
                let _ = admin.batch_execute("CHECKPOINT").await;
                let point = pgbench_point(&pgbench, server, &files[i], writers, seconds, cluster).await?;
                // Every transaction must have appended: a script that inserts nothing would be
                // fast for the wrong reason.
                let stored: i64 =
                    admin.query_one("SELECT count(*) FROM events", &[]).await.map_err(db("counting events"))?.get(0);
                let expected = point.transactions * scripts[i].events_per_transaction;
                if (stored as u64) < expected {
                    return Err(StoreError::Bench(format!(
                        "pgbench ran {} transactions of '{}', but {stored} events are stored, not {expected}",
                        point.transactions, scripts[i].name
                    )));
                }
                samples[i][w].push(point.tps * scripts[i].events_per_transaction as f64);
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let mut results = Vec::new();
    for (i, script) in scripts.iter().enumerate() {
        let events_per_second: Vec<f64> = samples[i].iter().map(|s| median(s.clone()).round()).collect();
        let ratio_to_insert: Vec<f64> = (0..WRITERS.len())
            .map(|w| {
                let ratios: Vec<f64> =
                    samples[i][w].iter().zip(&samples[0][w]).map(|(own, insert)| own / insert).collect();
                (median(ratios) * 1000.0).round() / 1000.0
            })
            .collect();
        results.push(ScriptResult { script: script.name, events_per_second, ratio_to_insert });
    }
    let by_name = |name: &str| results.iter().find(|r| r.script == name).expect("every script has a result");
    let fast = by_name("fast path (the store's 1-event append)");
    let fast_meets = fast.ratio_to_insert.iter().all(|r| *r >= 0.9);
    let index_of = |name: &str| scripts.iter().position(|s| s.name == name).expect("every script has a name");
    let cost = |with: &str, without: &str, what: &str| {
        let (with, without) = (index_of(with), index_of(without));
        let shares: Vec<String> = WRITERS
            .iter()
            .enumerate()
            .map(|(w, writers)| {
                // Run by run: the two points of a pair ran minutes apart at most.
                let ratios: Vec<f64> = samples[with][w].iter().zip(&samples[without][w]).map(|(a, b)| a / b).collect();
                format!("{:.0}% at {writers} writer{}", median(ratios) * 100.0, if *writers == 1 { "" } else { "s" })
            })
            .collect();
        format!("{what} keeps {} of the events/s it has without the rule", shares.join(", "))
    };
    let order_rule_cost = vec![
        cost("fast path (the store's 1-event append)", "fast path without the order rule", "fast path"),
        cost("append_to_stream (plpgsql)", "append_to_stream without the order rule", "append_to_stream"),
        cost("transfer: lock_streams, then 2 appends", "transfer without lock_streams and the rule", "a transfer"),
    ];
    Ok(Some(PgbenchReport {
        pgbench: pgbench.display().to_string(),
        seconds_per_point: seconds,
        runs,
        writers: WRITERS.to_vec(),
        scripts: results,
        order_rule_cost,
        fast_path_meets_target: fast_meets,
    }))
}

/// What one pgbench point did.
struct Point {
    /// Transactions per second, without the connection time.
    tps: f64,
    transactions: u64,
}

async fn pgbench_point(
    pgbench: &Path,
    server: &Server,
    script: &Path,
    writers: usize,
    seconds: u64,
    cluster: i64,
) -> Result<Point, StoreError> {
    let output = tokio::process::Command::new(pgbench)
        .env("PGOPTIONS", format!("-c store.cluster={cluster}"))
        .args(["--no-vacuum", "--protocol=prepared", "--define=n=0"])
        .arg(format!("--client={writers}"))
        .arg(format!("--jobs={}", writers.min(2)))
        .arg(format!("--time={seconds}"))
        .arg("--file")
        .arg(script)
        .arg(server.url())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| StoreError::Bench(format!("running {}: {e}", pgbench.display())))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tps = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok());
    let transactions = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|rest| rest.split('/').next())
        .and_then(|n| n.trim().parse::<u64>().ok());
    match (tps, transactions) {
        (Some(tps), Some(transactions)) if output.status.success() && !stderr.contains("aborted") => {
            Ok(Point { tps, transactions })
        }
        _ => Err(StoreError::Bench(format!(
            "pgbench failed on {} ({}): {}",
            script.display(),
            output.status,
            stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message")
        ))),
    }
}

impl PgbenchReport {
    pub fn render(&self) -> String {
        let mut out = format!(
            "\nOn the server, without a client library: pgbench -M prepared, {} s a point, median of {} runs;\n\
             one event per transaction (two for a transfer), each writer on ten streams of its own\n\n",
            self.seconds_per_point, self.runs
        );
        out += &format!("{:<48}", "script (events/s, ratio to the plain INSERT)");
        for w in &self.writers {
            out += &format!(" {:>20}", format!("{w} writer{}", if *w == 1 { "" } else { "s" }));
        }
        out += "\n";
        for s in &self.scripts {
            out += &format!("{:<48}", s.script);
            for (rate, ratio) in s.events_per_second.iter().zip(&s.ratio_to_insert) {
                out += &format!(" {:>20}", format!("{rate:.0} ({:.0}%)", ratio * 100.0));
            }
            out += "\n";
        }
        out += &format!(
            "\nThe fast path's target, >= 90% of the plain INSERT at 1 and at 16 writers: {}.\n",
            if self.fast_path_meets_target { "met" } else { "NOT met" }
        );
        out += "The order rule's cost (medians of run-by-run ratios):\n";
        for line in &self.order_rule_cost {
            out += &format!("  {line}\n");
        }
        out
    }
}

/// A point is `8 s * scale`, at least one second (pgbench counts whole seconds).
pub fn seconds_per_point(scale: f64) -> u64 {
    ((8.0 * scale).round() as u64).max(1)
}

/// How long the comparison takes, for the progress line.
pub fn estimate(runs: usize, seconds: u64) -> Duration {
    Duration::from_secs(runs as u64 * WRITERS.len() as u64 * scripts().len() as u64 * (seconds + 1))
}
