//! Activity 5, Outage: what a scenario loses is decided by the scenario. As configured, exactly
//! the orders placed after the failure point are gone (and were shipped); safe, nothing
//! acknowledged is lost. The counts add up, and the report's shape is pinned.
//!
//! `labs check outage`: the shipped detection query fails, the solution passes with the same
//! verdict on every run and backend, and every half-fix fails the check written against it.

mod common;
use common::exercises::{exercise, half_fixes};
use common::{config, containers_expected};

use labs::lab::{CheckReport, ExerciseFile};
use labs::outage::burst::{NEW_ORDERS_AFTER_RECOVERY, PHASE_ONE_ORDERS, PHASE_TWO_ORDERS};
use labs::outage::check;
use labs::outage::{Report, Run, Scenario, Variant, ALL};
use labs::pg::{Backend, Server};
use labs::LabError;

async fn run(scenario: Scenario, backend: Backend) -> Report {
    let mut runs: Vec<Run> = Vec::new();
    for variant in [Variant::AsConfigured, Variant::Safe] {
        let mut server = Server::start(&config(backend), scenario.needs()).await.unwrap();
        runs.push(labs::outage::burst::run(&mut server, scenario, variant).await.unwrap());
        let directory = server.local_directory();
        server.shutdown().await.unwrap();
        if let Some(directory) = directory {
            assert!(!directory.exists(), "{} outlived the run", directory.display());
        }
    }
    let report = Report::new(scenario, runs);
    check_invariants(&report);
    report
}

fn check_invariants(report: &Report) {
    let all = PHASE_ONE_ORDERS + PHASE_TWO_ORDERS;
    for run in &report.runs {
        let c = &run.counts;
        let context = format!("{} {:?}: {c:?}", report.scenario.id(), run.variant);
        assert_eq!(c.acknowledged, all, "{context}");
        assert_eq!(c.serving + c.lost, c.acknowledged, "the counts do not add up: {context}");
        assert_eq!(c.shipped, all, "{context}");
        assert!(c.shipped_but_missing <= c.lost, "{context}");
        assert_eq!(c.new_after_recovery, NEW_ORDERS_AFTER_RECOVERY, "{context}");
        match run.variant {
            Variant::Safe => {
                assert_eq!(c.lost, 0, "the safe setting lost acknowledged orders: {context}");
                assert_eq!(c.new_seen_by_consumer, NEW_ORDERS_AFTER_RECOVERY, "{context}");
                assert_eq!(c.new_with_reused_position, 0, "{context}");
            }
            Variant::AsConfigured => {
                // Exactly the orders after the failure point: decided by the script, not by luck.
                assert_eq!(c.lost, PHASE_TWO_ORDERS, "{context}");
                assert_eq!(c.shipped_but_missing, PHASE_TWO_ORDERS, "{context}");
                // Reused transaction ids put the old checkpoint ahead of every new order.
                assert_eq!(c.new_seen_by_consumer, 0, "{context}");
                // And the lost orders' positions are handed out again.
                assert_eq!(c.new_with_reused_position, NEW_ORDERS_AFTER_RECOVERY, "{context}");
            }
        }
    }
    let configured = &report.runs[0].counts;
    match report.scenario {
        Scenario::FrozenWalWriter => assert_eq!(configured.durable_on_primary, Some(PHASE_ONE_ORDERS)),
        Scenario::AsyncFailover => {
            // The old primary kept everything: two histories.
            assert_eq!(configured.durable_on_primary, Some(PHASE_ONE_ORDERS + PHASE_TWO_ORDERS));
            assert_eq!(configured.on_standby, Some(PHASE_ONE_ORDERS));
        }
        Scenario::UnarchivedWal => {
            assert_eq!(configured.in_archive, Some(PHASE_ONE_ORDERS));
            assert_eq!(report.runs[1].counts.on_standby, Some(PHASE_ONE_ORDERS + PHASE_TWO_ORDERS));
        }
    }
}

#[tokio::test]
async fn every_scenario_on_the_local_backend() {
    for &scenario in ALL {
        let report = run(scenario, Backend::Local).await;
        // Deterministic by construction: the whole report is pinned (no timings in the text).
        insta::assert_snapshot!(scenario.id(), report.to_string());
    }
}

#[tokio::test]
async fn async_failover_in_a_container() {
    if !containers_expected() {
        return;
    }
    let report = run(Scenario::AsyncFailover, Backend::Container).await;
    insta::assert_snapshot!("async-failover", report.to_string());
}

#[test]
fn every_scenario_id_reads_back() {
    for &s in ALL {
        assert_eq!(Scenario::from_id(s.id()), Some(s));
    }
    assert_eq!(Scenario::from_id("meteor"), None);
}

/// `labs check outage` on `file`: two fresh servers, one per history, removed afterwards
/// whatever the check returned.
async fn check_on(backend: Backend, file: &ExerciseFile) -> Result<CheckReport, LabError> {
    let mut identity_bumped = Server::start(&config(backend), check::NEEDS).await.unwrap();
    let mut xids_burned = Server::start(&config(backend), check::NEEDS).await.unwrap();
    let directories = [identity_bumped.local_directory(), xids_burned.local_directory()];
    let report = check::check(&mut identity_bumped, &mut xids_burned, file).await;
    identity_bumped.shutdown().await.unwrap();
    xids_burned.shutdown().await.unwrap();
    for directory in directories.into_iter().flatten() {
        assert!(!directory.exists(), "{} outlived the check", directory.display());
    }
    report
}

fn failing(report: &CheckReport) -> Vec<&str> {
    report.checks.iter().filter(|c| !c.passed).map(|c| c.id).collect()
}

/// The shipped query compares positions only: it misses exactly the orders that took a lost
/// transaction's id with a fresh position, and passes everything else.
fn assert_the_shipped_query_fails_for_transaction_ids(report: &CheckReport) {
    assert!(!report.passed, "the shipped exercise passed the check:\n{report}");
    assert_eq!(failing(report), vec!["transaction-id-reissued"], "{report}");
    let missed = &report.checks.iter().find(|c| c.id == "transaction-id-reissued").unwrap().detail;
    assert!(missed.contains("identity-bumped: order 10"), "{missed}");
    assert!(missed.contains("shipped and then lost"), "{missed}");
    assert!(missed.contains("compare transaction ids too"), "{missed}");
}

/// `labs check` must be able to fail: the shipped query fails, the solution passes every
/// check. The solution's verdict names, per history, the orders of each kind: pinned, so the
/// same recoveries happen on every run.
#[tokio::test]
async fn the_check_fails_the_shipped_exercise_and_passes_the_solution() {
    let given = exercise("exercises/05-outage/reissued.sql");
    let report = check_on(Backend::Local, &given).await.unwrap();
    assert_the_shipped_query_fails_for_transaction_ids(&report);

    let solution = exercise("exercises/05-outage/reissued.solution.sql");
    let report = check_on(Backend::Local, &solution).await.unwrap();
    assert!(report.passed, "the solution failed the check:\n{report}");
    insta::assert_snapshot!("check_solution", report.to_string());
}

/// The same verdicts in containers: the same failing check for the shipped query, and the
/// solution's report identical to the local backend's.
#[tokio::test]
async fn the_check_gives_the_same_verdicts_in_a_container() {
    if !containers_expected() {
        return;
    }
    let given = exercise("exercises/05-outage/reissued.sql");
    let report = check_on(Backend::Container, &given).await.unwrap();
    assert_the_shipped_query_fails_for_transaction_ids(&report);

    let solution = exercise("exercises/05-outage/reissued.solution.sql");
    let report = check_on(Backend::Container, &solution).await.unwrap();
    assert!(report.passed, "the solution failed the check in a container:\n{report}");
    insta::assert_snapshot!("check_solution", report.to_string());
}

/// Every plausible half-fix fails the check written to defeat it, with a reason: a check that
/// blessed one would teach the wrong lesson.
#[tokio::test]
async fn the_check_fails_every_half_fix_for_its_reason() {
    for (file, fails) in half_fixes("05-outage") {
        let report = check_on(Backend::Local, &file).await.unwrap();
        assert!(!report.passed, "{} passed the check:\n{report}", file.shown);
        let check = report.checks.iter().find(|c| c.id == fails).unwrap_or_else(|| panic!("no check {fails}"));
        assert!(!check.passed, "{}: check {fails} passed:\n{report}", file.shown);
        assert!(!check.detail.is_empty(), "{}: check {fails} says nothing", file.shown);
    }
}

/// A query that cannot be judged: one message naming the file (and the line and column where
/// the server points at one), no verdict, no leftover server.
#[tokio::test]
async fn a_broken_exercise_is_reported_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let select = "SELECT (e.data->>'order')::int AS order_no, e.event_id, e.position, e.transaction_id";
    let cases = [
        (format!("-- mine\n{select}\n  FROM events AS e\n WHER e.position > 0"), "reissued.sql:4:"),
        (
            "SELECT e.event_id, e.position FROM events AS e".to_string(),
            "must return (order_no int4, event_id uuid, position int8, transaction_id xid8)",
        ),
        (format!("{select} FROM events AS e WHERE e.position > $1"), "parameter"),
        (format!("{select}\n  FROM events AS e\n WHERE pg_sleep(30)::text = ''"), "did not return within 5 s"),
    ];
    for (sql, expected) in cases {
        let path = dir.path().join("reissued.sql");
        std::fs::write(&path, &sql).unwrap();
        let file = ExerciseFile::read(path, "reissued.sql".into()).unwrap();
        let err = check_on(Backend::Local, &file).await.unwrap_err();
        assert!(matches!(err, LabError::Exercise(_)), "{sql}: {err:?}");
        let message = err.to_string();
        assert!(message.starts_with("reissued.sql"), "{message}");
        assert!(message.contains(expected), "{sql}: {message}");
    }
}

/// The answer key lists every half-fix with the check it fails, so a facilitator can explain
/// each verdict.
#[test]
fn the_answer_key_lists_every_half_fix_with_its_check() {
    let key = std::fs::read_to_string(common::exercises::repo().join("book/src/05-outage/solution.md")).unwrap();
    for (file, fails) in half_fixes("05-outage") {
        let row = key
            .lines()
            .find(|l| l.starts_with(&format!("| `{}`", file.shown)))
            .unwrap_or_else(|| panic!("solution.md's half-fix table has no row for {}", file.shown));
        assert!(row.contains(&format!("| `{fails}` |")), "{}: its row does not name `{fails}`:\n{row}", file.shown);
    }
}
