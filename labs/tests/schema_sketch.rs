//! Activity 3, Schema Sketch: the day at the bank, `labs schema verify` on the reference and
//! the flawed fixture schemas, and the transfer exercise's check.

use std::path::{Path, PathBuf};

use labs::pg::{ProviderConfig, Server};
use labs::schema_sketch::{check, scenario};
use labs::store::conformance::{verify, verify_with, VerifyOptions, VerifyReport, CHECK_IDS};

mod common;
use common::exercises::{exercise, half_fixes};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn fresh_server() -> Server {
    let config = ProviderConfig::from_env(None).expect("LABS_PG is valid");
    Server::start(&config, &[]).await.expect("a PostgreSQL server for the lab (see `labs doctor`)")
}

/// Verifies a schema file (path relative to the repository) on a fresh server.
async fn verify_file(relative: &str) -> VerifyReport {
    let sql = std::fs::read_to_string(root().join(relative)).unwrap();
    let server = fresh_server().await;
    let report = verify(&server, &sql, relative).await.unwrap();
    server.shutdown().await.unwrap();
    report
}

fn failing(report: &VerifyReport) -> Vec<&str> {
    report.checks.iter().filter(|c| !c.passed).map(|c| c.id).collect()
}

fn check<'r>(report: &'r VerifyReport, id: &str) -> &'r labs::store::conformance::Check {
    report.checks.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no check {id}:\n{report}"))
}

/// Counts under random load vary from run to run; the checks' verdicts and reasons do not.
fn assert_verify_snapshot(name: &str, report: &VerifyReport) {
    let mut settings = insta::Settings::clone_current();
    // Which readers missed what under random load varies, and whether a reader saw anything
    // wrong besides the scripted skip: the lines go, the summary above them stays.
    settings.add_filter(r"\n +reader \d: \d+ missed, \d+ twice, \d+ out of stream order", "");
    settings.add_filter(r"\d+ of (\d+) acknowledged appends", "[N] of $1 acknowledged appends");
    settings.add_filter(r"\d+ appends failed, e\.g\. .*", "[N] appends failed, e.g. [an error]");
    settings.add_filter(r"only after \d+ ms", "only after [N] ms");
    settings.add_filter(r"the same \d+ events in batches", "the same [N] events in batches");
    settings.add_filter(r"(\d) of 3 readers skipped events here", "[N] of 3 readers skipped events here");
    settings.bind(|| insta::assert_snapshot!(name, report.to_string()));
}

#[tokio::test]
async fn the_day_at_the_bank_rejects_the_overdraft_reports_the_conflict_and_replays_to_the_same_balances() {
    let server = fresh_server().await;
    let report = scenario::run(&server).await.unwrap();
    server.shutdown().await.unwrap();

    let balances: Vec<(&str, i64)> = report.balances.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(balances, vec![("alice", 4_500), ("bob", 2_000), ("carol", 4_500)]);
    assert_eq!(report.balances, report.loaded_balances);
    assert!(report.replay_matches);
    let counts: Vec<(&str, usize)> = report.streams.iter().map(|(k, v)| (k.as_str(), v.events)).collect();
    assert_eq!(counts, vec![("account-alice", 4), ("account-bob", 4), ("account-carol", 3)]);
    let outcomes: Vec<&str> = report.steps.iter().map(|s| s.outcome.as_str()).collect();
    assert!(outcomes.contains(&"wrong expected version for stream account-bob: expected 3, actual 4"), "{outcomes:#?}");
    assert_eq!(
        outcomes.iter().filter(|o| o.starts_with("rejected: ")).count(),
        2,
        "the overdraft, and teller 2 after reloading"
    );
    // Each stream replays in version order.
    for stream in report.streams.keys() {
        let versions: Vec<i64> = report.replay.iter().filter(|e| &e.stream_id == stream).map(|e| e.version).collect();
        assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>(), "{stream}");
    }
    insta::assert_snapshot!("run_text", report.to_string());
}

#[tokio::test]
async fn the_reference_schema_passes_every_conformance_check() {
    let report = verify_file("labs/src/store/schema.sql").await;
    assert!(report.passed, "{report}");
    // `--json` lists every check by its stable id, in order.
    let json = serde_json::to_value(&report).unwrap();
    let ids: Vec<&str> = json["checks"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, CHECK_IDS.to_vec());
    assert!(check(&report, "contract").notes[0].contains("lock_streams(text[]) is defined"), "{report}");
    assert!(
        check(&report, "concurrent-readers").notes.is_empty(),
        "the reference does not serialise appends: {report}"
    );
    assert_verify_snapshot("verify_reference", &report);
}

/// A reader that returns events only once they are 250 ms old skips a transaction held open
/// longer: concurrent-readers fails and says so. It is not blamed for lost writes or stored
/// duplicates: every other check waits for late events first.
#[tokio::test]
async fn a_reader_that_waits_for_events_to_settle_fails_for_that_and_nothing_else() {
    let report = verify_file("fixtures/03-schema-sketch/flawed-settle-delay.sql").await;
    assert_eq!(failing(&report), vec!["concurrent-readers"], "{report}");
    let readers = check(&report, "concurrent-readers");
    assert!(readers.summary.starts_with("read_all_after returned events only after "), "{report}");
    assert!(readers.summary.contains("skips any transaction open longer than that"), "{report}");
    assert!(check(&report, "append-new-stream").notes[0].contains("returned them only after"), "{report}");
    for c in &report.checks {
        assert!(!c.summary.contains("not stored") && !c.summary.contains("stored twice"), "{report}");
    }
    assert_verify_snapshot("verify_settle_delay", &report);
}

/// One lock for every append: positions follow commit order, a plain position reader is safe,
/// and verify gives a verdict (no step waits on an append that waits for the script).
#[tokio::test]
async fn a_schema_that_serialises_every_append_passes_with_a_note() {
    let report = verify_file("fixtures/03-schema-sketch/serialising-appends.sql").await;
    assert!(report.passed, "{report}");
    let notes = &check(&report, "concurrent-readers").notes;
    assert!(notes.iter().any(|n| n.contains("serialises every append")), "{report}");
    assert_verify_snapshot("verify_serialising", &report);
}

/// Behind the watermark but with a position checkpoint: the late commit is caught by the
/// watermark, the transfer straddling another transaction's position is not.
#[tokio::test]
async fn a_position_checkpoint_behind_the_watermark_fails_on_the_transfer() {
    let report = verify_file("fixtures/03-schema-sketch/flawed-position-checkpoint.sql").await;
    assert_eq!(failing(&report), vec!["concurrent-readers"], "{report}");
    let summary = &check(&report, "concurrent-readers").summary;
    assert!(summary.contains("between two positions of a transfer that committed first"), "{report}");
    assert_verify_snapshot("verify_position_checkpoint", &report);
}

/// A check that does not finish gets a verdict anyway, naming what it waited for, and the
/// checks after it still run.
#[tokio::test]
async fn a_check_that_runs_out_of_time_says_what_it_was_waiting_for() {
    let hanging = labs::store::SCHEMA_SQL.replace(
        "PERFORM pg_advisory_xact_lock(stream_key);\n\n    -- Both reads",
        "PERFORM pg_advisory_xact_lock(stream_key);\n    PERFORM pg_sleep(600) WHERE p_stream_id = 'c9-hot';\n\n    -- Both reads",
    );
    assert_ne!(hanging, labs::store::SCHEMA_SQL, "the schema's lock line moved: update this test");
    let server = fresh_server().await;
    let options = VerifyOptions { check_deadline: std::time::Duration::from_secs(8), ..VerifyOptions::default() };
    let report = verify_with(&server, &hanging, "hanging.sql", &options).await.unwrap();
    server.shutdown().await.unwrap();
    let race = check(&report, "conflicts-under-race");
    assert!(!race.passed);
    assert_eq!(
        race.summary,
        "no verdict within 8 s: the check was waiting for 8 writers racing 10 rounds on c9-hot with the same expected version",
        "{report}"
    );
    assert_eq!(report.checks.last().unwrap().id, "replay-in-order", "the checks after it ran: {report}");
}

#[tokio::test]
async fn a_reader_that_trusts_positions_fails_for_skipping_events() {
    let report = verify_file("fixtures/03-schema-sketch/flawed-naive-position.sql").await;
    assert_eq!(failing(&report), vec!["concurrent-readers"], "{report}");
    assert_verify_snapshot("verify_naive_position", &report);
}

#[tokio::test]
async fn an_append_that_swallows_conflicts_fails_for_silent_conflicts_and_lost_writes() {
    let report = verify_file("fixtures/03-schema-sketch/flawed-silent-conflict.sql").await;
    assert_eq!(failing(&report), vec!["conflict-detected", "concurrent-readers", "conflicts-under-race"], "{}", report);
    assert_verify_snapshot("verify_silent_conflict", &report);
}

#[tokio::test]
async fn a_store_without_event_identity_fails_the_retry_checks() {
    let report = verify_file("fixtures/03-schema-sketch/flawed-no-idempotency.sql").await;
    assert_eq!(failing(&report), vec!["idempotent-retry", "reused-id-rejected"], "{report}");
    assert_verify_snapshot("verify_no_idempotency", &report);
}

#[tokio::test]
async fn malformed_sql_is_reported_with_the_servers_error_and_its_line_and_column() {
    let server = fresh_server().await;
    let sql = "CREATE TABLE events (id bigint);\n\nCREATE FUNCTON oops() RETURNS int LANGUAGE sql AS 'SELECT 1';\n";
    let report = verify(&server, sql, "bad.sql").await.unwrap();
    let missing = verify(&server, "CREATE TABLE unrelated (id int);", "empty.sql").await.unwrap();
    server.shutdown().await.unwrap();
    assert!(!report.passed);
    assert_eq!(report.checks.len(), 1, "nothing else runs on a schema that does not load");
    let summary = &report.checks[0].summary;
    assert!(summary.starts_with("bad.sql:3:8: syntax error at or near \"FUNCTON\" (SQLSTATE 42601)"), "{summary}");
    assert_eq!(failing(&missing), vec!["contract"]);
    assert!(
        missing.checks[1].summary.contains("append_to_stream(text,bigint,uuid[],text[],jsonb[],jsonb[])"),
        "{}",
        missing.to_string()
    );
}

/// `labs check` must be able to fail: the given transfer overdraws in the scripted race, the
/// solution passes every check.
#[tokio::test]
async fn the_check_fails_the_given_transfer_and_passes_the_solution() {
    let given = exercise("exercises/03-schema-sketch/transfer.sql");
    let server = fresh_server().await;
    let report = check::check(&server, &given).await.unwrap();
    server.shutdown().await.unwrap();
    assert!(!report.passed, "{report}");
    let race = report.checks.iter().find(|c| c.id == "withdrawal-race").unwrap();
    assert!(!race.passed, "the scripted race must catch the given transfer:\n{report}");
    assert!(race.detail.contains("alice is at -60.00"), "{}", race.detail);

    let solution = exercise("exercises/03-schema-sketch/transfer.solution.sql");
    let server = fresh_server().await;
    let report = check::check(&server, &solution).await.unwrap();
    server.shutdown().await.unwrap();
    assert!(report.passed, "{report}");
}

/// Every plausible half-fix fails the check written to defeat it, on every run.
#[tokio::test]
async fn the_check_fails_every_half_fix_for_its_reason() {
    for (file, fails) in half_fixes("03-schema-sketch") {
        let server = fresh_server().await;
        let report = check::check(&server, &file).await.unwrap();
        server.shutdown().await.unwrap();
        assert!(!report.passed, "{} passed the check:\n{report}", file.shown);
        let check = report.checks.iter().find(|c| c.id == fails).unwrap_or_else(|| panic!("no check {fails}"));
        assert!(!check.passed, "{}: check {fails} passed:\n{report}", file.shown);
    }
}

/// A transfer file with a syntax error: the first check fails at its line and column.
#[tokio::test]
async fn a_transfer_that_does_not_load_is_reported_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("transfer.sql");
    std::fs::write(&path, "-- mine\nCREATE OR REPLACE FUNCTION transfer(p uuid) RETURN text AS $$ $$;\n").unwrap();
    let file = labs::lab::ExerciseFile::read(path, "transfer.sql".into()).unwrap();
    let server = fresh_server().await;
    let report = check::check(&server, &file).await.unwrap();
    server.shutdown().await.unwrap();
    assert!(!report.passed);
    assert_eq!(report.checks[0].id, "loads");
    assert!(report.checks[0].detail.starts_with("transfer.sql:2:"), "{}", report.checks[0].detail);
}
