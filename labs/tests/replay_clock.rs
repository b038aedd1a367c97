//! Activity 8, Replay Clock: the four rebuilds against golden balances, the readers of the live
//! model, the snapshot loads, and the check of the attendee's upcaster, snapshot policy and rebuild.

mod common;
use common::exercises::{exercise, half_fixes};
use common::{config, containers_expected};

use labs::lab::ExerciseFile;
use labs::pg::{Backend, Server};
use labs::replay_clock::rebuild::Strategy;
use labs::replay_clock::{self, check, Progress, ReplayReport};

async fn server(backend: Backend) -> Server {
    Server::start(&config(backend), &[]).await.expect("a PostgreSQL server for the lab (see `labs doctor`)")
}

async fn run_lab(backend: Backend) -> ReplayReport {
    let server = server(backend).await;
    let report = replay_clock::run(&server, &replay_clock::lab_plan(), 1_000, &Progress::quiet()).await.unwrap();
    server.shutdown().await.unwrap();
    check_invariants(&report);
    report
}

/// What must hold on every run, whatever the machine's speed.
fn check_invariants(report: &ReplayReport) {
    let by = |s: Strategy| report.strategies.iter().find(|r| r.strategy == s).unwrap();
    for s in &report.strategies {
        assert!(s.golden, "{}: {:?}", s.strategy, s.difference);
        assert!(s.readers.reads > 0, "{}: the reader never read", s.strategy);
    }
    // In place in steps: a read right after the reset finds the model empty, on every run.
    for s in [Strategy::PerEvent, Strategy::Batches] {
        assert_eq!(by(s).rows_after_reset, Some(0), "{s}");
        assert!(by(s).took_the_model_away(), "{s}");
    }
    // In one transaction, or built beside and switched: no reader ever finds it empty or partial.
    for s in [Strategy::SetBased, Strategy::BlueGreen] {
        let r = &by(s).readers;
        assert_eq!((r.empty, r.partial, r.failed), (0, 0, 0), "{s}: {r:?}");
        assert!(!by(s).took_the_model_away(), "{s}");
    }
    // The per-event strategy replays a prefix, and says so.
    let per_event = by(Strategy::PerEvent);
    assert_eq!(per_event.events, 1_000);
    assert_eq!(per_event.prefix_of, Some(report.events));
    assert!(per_event.estimated_full_seconds.is_some());
    // Robust orderings only: a commit per event is slower than a commit per 1,000, which is
    // slower than one statement over the whole log (by an order of magnitude or more).
    assert!(per_event.events_per_second < by(Strategy::Batches).events_per_second);
    assert!(by(Strategy::Batches).events_per_second < by(Strategy::SetBased).events_per_second);
    assert!(by(Strategy::Batches).events_per_second < by(Strategy::BlueGreen).events_per_second);
    // Snapshots: a load folds the whole stream without one, the tail with one.
    for row in &report.snapshots.rows {
        assert_eq!(row.folded_without, row.stream_length as u64);
        if row.stream_length > report.snapshots.tail {
            assert_eq!(row.folded_with, Some(report.snapshots.tail as u64));
        } else {
            assert_eq!(row.folded_with, None);
        }
    }
    assert!(report.legacy_events > 0 && report.legacy_events < report.events / 10);
    assert!((150_000..=250_000).contains(&report.events), "about 200k events, not {}", report.events);
}

#[tokio::test]
async fn the_lab_on_the_local_backend() {
    let report = run_lab(Backend::Local).await;
    assert_text(&report);
}

#[tokio::test]
async fn the_lab_in_a_container_says_the_same() {
    if !containers_expected() {
        return;
    }
    let report = run_lab(Backend::Container).await;
    assert_text(&report);
}

/// One snapshot for both backends: the text, with times redacted, is byte-identical.
fn assert_text(report: &ReplayReport) {
    insta::with_settings!({filters => vec![
        (r"\d[\d,]* reads: [\d,]+ empty, [\d,]+ partial, [\d,]+ failed", "[reads]"),
        (r"about [\d,]+ s \([\d,]+ min\)", "about [time]"),
        // Padding included: a right-aligned figure's width varies with its value.
        (r" +\d[\d,]*(\.\d+)? ?(s|ms)\b", " [time]"),
        (r" +\d[\d,]*/s\b", " [rate]"),
        (r"paid from [\d,]+ events on", "paid from [length] events on"),
        (r"no snapshot made a load faster\.", "the snapshot paid from [length] events on (timed: it can move a row between runs)."),
    ]}, {
        insta::assert_snapshot!("run_text", report.to_string());
    });
}

async fn check_file(file: &ExerciseFile) -> labs::lab::CheckReport {
    let server = server(Backend::Local).await;
    let report = check::check(&server, file).await.unwrap();
    server.shutdown().await.unwrap();
    report
}

/// `labs check` must be able to fail: the shipped exercise fails, the solution passes everything.
#[tokio::test]
async fn the_check_fails_the_shipped_exercise_and_passes_the_solution() {
    let report = check_file(&exercise("exercises/08-replay-clock/replay.sql")).await;
    assert!(!report.passed, "the shipped exercise passed:\n{report}");
    let failed: Vec<&str> = report.checks.iter().filter(|c| !c.passed).map(|c| c.id).collect();
    for id in ["upcast-exact", "snapshot-schema", "load-golden", "rebuild-golden", "switch-readers"] {
        assert!(failed.contains(&id), "the shipped exercise passed {id}:\n{report}");
    }
    let report = check_file(&exercise("exercises/08-replay-clock/replay.solution.sql")).await;
    assert!(report.passed, "the solution failed:\n{report}");
    assert_eq!(report.checks.len(), 7, "{report}");
}

/// Every plausible half-fix fails the check it is written to defeat, on every run, with a reason.
#[tokio::test]
async fn the_check_fails_every_half_fix_for_its_reason() {
    for (file, fails) in half_fixes("08-replay-clock") {
        let report = check_file(&file).await;
        assert!(!report.passed, "{} passed the check:\n{report}", file.shown);
        let check =
            report.checks.iter().find(|c| c.id == fails).unwrap_or_else(|| panic!("no check {fails}:\n{report}"));
        assert!(!check.passed, "{}: check {fails} passed:\n{report}", file.shown);
        assert!(!check.detail.is_empty(), "{}: check {fails} says nothing", file.shown);
    }
}

/// A file that does not load, or lacks a piece: one message naming the file, line and column.
#[tokio::test]
async fn a_broken_exercise_is_reported_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("CREATE FUNCTION upcast(p_schema_version integer, p_data jsonb) RETURNS jsonb\nLANGUAGE sql AS $$ SELEC p_data $$;", "broken.sql:2:"),
        ("CREATE FUNCTION upcast(p_schema_version integer, p_data jsonb) RETURNS jsonb\nLANGUAGE sql AS $$ SELECT p_data $$;", "does not define the function load_account(text)"),
    ];
    for (sql, expected) in cases {
        let path = dir.path().join("broken.sql");
        std::fs::write(&path, sql).unwrap();
        let file = ExerciseFile::read(path, "broken.sql".into()).unwrap();
        let report = check_file(&file).await;
        assert!(!report.passed);
        assert_eq!(report.checks.len(), 1, "{report}");
        assert_eq!(report.checks[0].id, "loads");
        assert!(report.checks[0].detail.contains(expected), "{report}");
    }
}

/// The chapter's saved run is exactly what this code renders from its JSON: a change of the
/// report's text fails here until the run is saved again (see its PROVENANCE.md).
#[test]
fn the_saved_run_is_what_the_code_renders_from_its_json() {
    let dir = common::exercises::repo().join(replay_clock::SAVED);
    let json = std::fs::read_to_string(dir.join("run.json")).expect("the saved run.json");
    let report: ReplayReport = serde_json::from_str(&json).expect("a replay-clock report");
    check_invariants(&report);
    for (name, text) in report.renderings() {
        let saved = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(saved == text, "{name} differs from what the code renders from run.json: save the run again");
    }
    let provenance = std::fs::read_to_string(dir.join("PROVENANCE.md")).unwrap();
    assert!(provenance.contains(&report.server_version), "PROVENANCE.md does not name {}", report.server_version);
}
