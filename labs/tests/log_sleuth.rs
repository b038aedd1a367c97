//! Activity 1, Log Sleuth: the audit, the generator, the lab's timeline and the consumer check.

use std::path::{Path, PathBuf};

use labs::log_sleuth::audit::{audit_file, AuditError};
use labs::log_sleuth::findings::FindingKind;
use labs::log_sleuth::generate::{generate, AnswerKey, Difficulty};
use labs::log_sleuth::{scenario, Reader};
use labs::pg::{ProviderConfig, Server};

mod common;
use common::exercises::{exercise, half_fixes};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/01-log-sleuth")
}

/// The three incidents of the chapter: (file stem, seed, difficulty). Regenerate one with
/// `labs sleuth generate --seed <seed> --difficulty <difficulty> --out <dir>`.
const INCIDENTS: [(&str, u64, Difficulty); 3] = [
    ("incident-1", 101, Difficulty::Easy),
    ("incident-2", 202, Difficulty::Medium),
    ("incident-3", 303, Difficulty::Hard),
];

fn audit_text(stem: &str) -> String {
    let path = fixtures().join(format!("{stem}.jsonl"));
    audit_file(&path, |_| {}).unwrap().to_text(&format!("{stem}.jsonl"))
}

#[test]
fn audit_incident_1() {
    insta::assert_snapshot!("audit_incident_1", audit_text("incident-1"));
}

#[test]
fn audit_incident_2() {
    insta::assert_snapshot!("audit_incident_2", audit_text("incident-2"));
}

#[test]
fn audit_incident_3() {
    insta::assert_snapshot!("audit_incident_3", audit_text("incident-3"));
}

#[test]
fn each_fixture_is_what_the_generator_makes_and_the_audit_finds_its_key() {
    for (stem, seed, difficulty) in INCIDENTS {
        let incident = generate(seed, difficulty);
        let log = std::fs::read_to_string(fixtures().join(format!("{stem}.jsonl"))).unwrap();
        assert!(log == incident.jsonl, "{stem}.jsonl differs from `generate --seed {seed}`: regenerate it");
        let key: AnswerKey =
            serde_json::from_str(&std::fs::read_to_string(fixtures().join(format!("answers/{stem}.json"))).unwrap())
                .unwrap();
        assert_eq!(key, incident.key, "answers/{stem}.json differs from the generator's key");
        let audit = audit_file(&fixtures().join(format!("{stem}.jsonl")), |_| {}).unwrap();
        assert_eq!(audit.findings, key.findings, "{stem}: the audit disagrees with the answer key");
    }
}

#[test]
fn the_audit_finds_exactly_what_the_generator_planted_for_many_seeds() {
    let dir = tempfile::tempdir().unwrap();
    for difficulty in [Difficulty::Easy, Difficulty::Medium, Difficulty::Hard] {
        for seed in 1..=25 {
            let incident = generate(seed, difficulty);
            let path = dir.path().join("log.jsonl");
            std::fs::write(&path, &incident.jsonl).unwrap();
            let audit = audit_file(&path, |_| {}).unwrap();
            assert_eq!(audit.findings, incident.key.findings, "seed {seed}, {difficulty:?}");
            assert_eq!(audit.lines, incident.key.lines);
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_bytes_and_another_seed_does_not() {
    assert_eq!(generate(7, Difficulty::Medium).jsonl, generate(7, Difficulty::Medium).jsonl);
    assert_ne!(generate(7, Difficulty::Medium).jsonl, generate(8, Difficulty::Medium).jsonl);
    // Medium plants one anomaly of each kind.
    let kinds: Vec<FindingKind> = generate(7, Difficulty::Medium).key.findings.iter().map(|f| f.kind).collect();
    for kind in FindingKind::ALL {
        assert!(kinds.contains(&kind), "medium has no {kind}");
    }
}

/// A hand-written log, independent of the generator: one anomaly of each kind.
#[test]
fn each_kind_in_a_hand_written_log() {
    let line = |id: &str, stream: &str, version: i64, position: i64, data: &str| {
        format!(
            r#"{{"event_id":"{id}","stream_id":"{stream}","version":{version},"position":{position},"type":"T","recorded_at":"2026-01-01T00:00:00Z","data":{data}}}"#
        )
    };
    let log = [
        line("a1", "a", 1, 1, r#"{"x":1,"y":2}"#),
        line("a2", "a", 2, 2, "{}"),
        line("a1", "a", 1, 3, r#"{"y":2,"x":1}"#), // 3: duplicate (same content, keys reordered)
        line("a2", "a", 2, 4, r#"{"z":1}"#),       // 4: conflicting duplicate
        line("b1", "b", 1, 5, "{}"),
        line("b3", "b", 3, 6, "{}"), // 6: gap (b2 never appears)
        line("c2", "c", 2, 7, "{}"),
        line("c1", "c", 1, 8, "{}"),  // 8: out of order
        line("c2x", "c", 2, 9, "{}"), // 9: version conflict with line 7
        line("d1", "d", 1, 11, "{}"),
        line("e1", "e", 1, 10, "{}"), // 11: position regression
    ]
    .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hand.jsonl");
    std::fs::write(&path, log + "\n").unwrap();
    let audit = audit_file(&path, |_| {}).unwrap();
    let found: Vec<(u64, FindingKind, &str)> =
        audit.findings.iter().map(|f| (f.line, f.kind, f.event_id.as_str())).collect();
    assert_eq!(
        found,
        vec![
            (3, FindingKind::DuplicateEvent, "a1"),
            (4, FindingKind::ConflictingDuplicate, "a2"),
            (6, FindingKind::VersionGap, "b3"),
            (8, FindingKind::OutOfOrder, "c1"),
            (9, FindingKind::VersionConflict, "c2x"),
            (11, FindingKind::PositionRegression, "e1"),
        ]
    );
    let gap = &audit.findings[2];
    assert_eq!((gap.missing_from, gap.missing_to), (Some(2), Some(2)));
    assert_eq!(audit.findings[4].first_line, Some(7));
}

fn audit_error(content: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(&path, content).unwrap();
    let err: AuditError = audit_file(&path, |_| {}).unwrap_err();
    err.to_string().replace(&dir.path().display().to_string(), "DIR")
}

const GOOD: &str = r#"{"event_id":"e1","stream_id":"s","version":1,"position":1,"type":"T","recorded_at":"2026-01-01T00:00:00Z","data":{}}"#;

#[test]
fn a_malformed_line_is_reported_with_file_line_and_column() {
    let err = audit_error(&format!("{GOOD}\n{{\"event_id\": \"e2\", \"version\": oops}}\n"));
    assert!(err.starts_with("DIR/bad.jsonl:2:"), "{err}");
    assert!(err.contains("expected value"), "{err}");
}

#[test]
fn a_missing_field_is_named_with_its_line() {
    let without_stream = GOOD.replace(r#""stream_id":"s","#, "");
    let err = audit_error(&format!("{GOOD}\n{without_stream}\n"));
    assert!(err.starts_with("DIR/bad.jsonl:2: missing field `stream_id`"), "{err}");
}

#[test]
fn a_wrong_type_is_reported_not_skipped() {
    let err = audit_error(&GOOD.replace(r#""version":1"#, r#""version":"1""#));
    assert!(err.starts_with("DIR/bad.jsonl:1:"), "{err}");
    assert!(err.contains("invalid type: string"), "{err}");
}

#[test]
fn an_empty_file_and_a_blank_line_are_errors() {
    assert_eq!(audit_error(""), "DIR/bad.jsonl: the file is empty; expected one JSON event per line");
    let err = audit_error(&format!("{GOOD}\n\n{GOOD}\n"));
    assert!(err.starts_with("DIR/bad.jsonl:2:1: blank line"), "{err}");
}

#[test]
fn a_missing_file_names_the_file() {
    let err = audit_file(Path::new("/nonexistent/log.jsonl"), |_| {}).unwrap_err().to_string();
    assert!(err.starts_with("/nonexistent/log.jsonl: cannot read:"), "{err}");
}

async fn fresh_server() -> Server {
    let config = ProviderConfig::from_env(None).expect("LABS_PG is valid");
    Server::start(&config, &[]).await.expect("a PostgreSQL server for the lab (see `labs doctor`)")
}

/// The lab's timeline: the naive consumer loses the event that commits late, the watermark
/// consumer loses nothing. Positions come from a fresh identity, so the text is stable.
#[tokio::test]
async fn the_lab_shows_the_naive_consumer_skipping_and_the_watermark_consumer_not() {
    let server = fresh_server().await;
    let report = scenario::run(&server, &[Reader::naive(), Reader::watermark()]).await.unwrap();
    server.shutdown().await.unwrap();

    let naive = &report.readers[0];
    let watermark = &report.readers[1];
    assert_eq!(naive.missed_events, 1, "the naive consumer must skip the late commit");
    assert_eq!(naive.missed, vec!["position 2: payment-1002 v1 PaymentAuthorized"]);
    assert_eq!(watermark.missed_events, 0);
    assert_eq!(watermark.duplicates, 0);
    assert_eq!(report.committed, vec![1, 2, 3, 4]);
    insta::assert_snapshot!("run_text", report.to_string());

    let json = serde_json::to_value(&report).unwrap();
    let readers: Vec<(String, u64)> = json["readers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r["missed_events"].as_u64().unwrap()))
        .collect();
    assert_eq!(readers, vec![("naive".to_string(), 1), ("watermark".to_string(), 0)]);
}

/// `labs check` must be able to fail: the exercise as shipped (the naive read) fails the
/// scripted out-of-order commit, the solution passes every check.
#[tokio::test]
async fn the_check_fails_the_shipped_exercise_and_passes_the_solution() {
    let given = exercise("exercises/01-log-sleuth/poll.sql");
    let server = fresh_server().await;
    let report = scenario::check(&server, &Reader::exercise(&given), &given).await.unwrap();
    server.shutdown().await.unwrap();
    assert!(!report.passed, "the shipped exercise passed the check:\n{report}");
    assert!(!report.checks[0].passed, "the scripted out-of-order commit must catch the naive read:\n{report}");
    assert!(report.checks[0].detail.contains("skipped position 2: payment-1002 v1"), "{report}");

    let solution = exercise("exercises/01-log-sleuth/poll.solution.sql");
    let server = fresh_server().await;
    let report = scenario::check(&server, &Reader::exercise(&solution), &solution).await.unwrap();
    server.shutdown().await.unwrap();
    assert!(report.passed, "the solution failed the check:\n{report}");
}

/// Every plausible half-fix fails the check it is written to defeat, on every run, with a
/// reason: a check that blessed one would teach the wrong lesson.
#[tokio::test]
async fn the_check_fails_every_half_fix_for_its_reason() {
    for (file, fails) in half_fixes("01-log-sleuth") {
        let server = fresh_server().await;
        let report = scenario::check(&server, &Reader::exercise(&file), &file).await.unwrap();
        server.shutdown().await.unwrap();
        assert!(!report.passed, "{} passed the check:\n{report}", file.shown);
        let check = report.checks.iter().find(|c| c.id == fails).unwrap_or_else(|| panic!("no check {fails}"));
        assert!(!check.passed, "{}: check {fails} passed:\n{report}", file.shown);
        assert!(!check.detail.is_empty(), "{}: check {fails} says nothing", file.shown);
    }
}

/// A file that is not a valid read: one message naming the file, line and column.
#[tokio::test]
async fn a_broken_exercise_is_reported_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("SELECT position,\n  transaction_id\n FROM events WHERE position > $2 ORDR BY position", "broken.sql:3:"),
        (
            "SELECT position, event_id FROM events WHERE position > $2",
            "must return (position int8, transaction_id xid8",
        ),
    ];
    for (sql, expected) in cases {
        let path = dir.path().join("broken.sql");
        std::fs::write(&path, sql).unwrap();
        let file = labs::lab::ExerciseFile::read(path, "broken.sql".into()).unwrap();
        let server = fresh_server().await;
        let err = scenario::check(&server, &Reader::exercise(&file), &file).await.unwrap_err();
        server.shutdown().await.unwrap();
        assert!(matches!(err, labs::LabError::Exercise(_)), "{err:?}");
        assert!(err.to_string().contains(expected), "{err}");
    }
}
