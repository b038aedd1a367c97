//! Activity 3, Schema Sketch: the day at the bank, `labs schema verify` on the reference and
//! the flawed fixture schemas, and the transfer exercise's check.

use std::path::{Path, PathBuf};

use labs::pg::{ProviderConfig, Server};
use labs::schema_sketch::{check, scenario};
use labs::store::conformance::{verify, VerifyReport};

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
    report.checks.iter().filter(|c| !c.passed).map(|c| c.name).collect()
}

/// Counts under random load vary from run to run; the checks' verdicts and reasons do not.
fn assert_verify_snapshot(name: &str, report: &VerifyReport) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(
        r"reader (\d): \d+ missed, \d+ twice, \d+ out of stream order",
        "reader $1: [N] missed, [N] twice, [N] out of stream order",
    );
    settings.add_filter(r"\d+ of (\d+) acknowledged appends", "[N] of $1 acknowledged appends");
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
    assert_eq!(report.checks.len(), 10);
    assert_verify_snapshot("verify_reference", &report);
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
    assert_eq!(failing(&report), vec!["conflict-detected", "concurrent-readers", "conflicts-under-race"], "{report}");
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
