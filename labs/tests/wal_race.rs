//! Activity 4, WAL Race: the strategies, a short real race and the facts that hold on any
//! machine, and the saved result set the book shows.

use labs::pg::{ProviderConfig, Server};
use labs::wal_race::race::{self, RaceOptions};
use labs::wal_race::report::{median_wal_per_event, strategies_text};
use labs::wal_race::strategy::{Strategy, ALL};
use labs::wal_race::{read_results, renderings, write_results};

fn saved_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(labs::wal_race::SAVED)
}
use std::sync::atomic::AtomicBool;

#[test]
fn strategies() {
    insta::assert_snapshot!("strategies", strategies_text());
}

async fn short_race() -> labs::wal_race::RaceReport {
    let config = ProviderConfig::from_env(None).expect("LABS_PG is valid");
    let server = Server::start(&config, &[]).await.expect("a PostgreSQL server (see `labs doctor`)");
    let options = RaceOptions { strategies: ALL.to_vec(), writers: vec![1, 2], seconds: 0.25 };
    let report = race::run(&server, &options, &AtomicBool::new(false), |_| {}).await.unwrap();
    server.shutdown().await.unwrap();
    report
}

#[tokio::test]
async fn a_short_race_has_every_point_and_the_facts_that_hold_on_any_machine() {
    let report = short_race().await;
    assert!(!report.interrupted);
    assert_eq!(report.points.len(), ALL.len() * 2);
    for p in &report.points {
        assert!(
            p.events > 0 && p.events_per_second > 0.0,
            "{} at {} writers wrote nothing",
            p.strategy.id(),
            p.writers
        );
        assert!(!p.waits.is_empty(), "{} at {}: no wait samples", p.strategy.id(), p.writers);
    }
    let wal = |s: Strategy| median_wal_per_event(&report, s).unwrap();
    // Bytes move little between durable ways of writing the same rows...
    assert!(
        wal(Strategy::Copy) < wal(Strategy::RowPerTx),
        "copy {} vs row-per-tx {}",
        wal(Strategy::Copy),
        wal(Strategy::RowPerTx)
    );
    assert!(wal(Strategy::RowPerTx) < 2.0 * wal(Strategy::Copy));
    // ...indexes inflate them, an unlogged table writes almost none.
    assert!(
        wal(Strategy::ExtraIndexes) > 1.3 * wal(Strategy::MultiRow),
        "extra indexes {} vs {}",
        wal(Strategy::ExtraIndexes),
        wal(Strategy::MultiRow)
    );
    assert!(wal(Strategy::Unlogged) < 0.05 * wal(Strategy::MultiRow), "unlogged {}", wal(Strategy::Unlogged));
    // Batching beats one commit per event by far, on any disk that honours fsync.
    let best =
        |s: Strategy| report.points.iter().filter(|p| p.strategy == s).map(|p| p.events_per_second).fold(0.0, f64::max);
    assert!(
        best(Strategy::Copy) > 10.0 * best(Strategy::RowPerTx),
        "copy {} vs row-per-tx {}",
        best(Strategy::Copy),
        best(Strategy::RowPerTx)
    );
    assert!(report.strategies.iter().all(|s| s.bottleneck.is_some()));

    // The shape of the report, with what is measured redacted.
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"(?m)^(\S+ +(?:yes|NO) +\d+) .*$", "$1 [measured]");
    settings.add_filter(r"(?m)^(\S+) {2,}(?:still scaling|scales to|flat from).*$", "$1 [wall]");
    settings.add_filter(r"(?m)^PostgreSQL .*$", "[server, machine and settings]");
    settings.add_filter(
        r"(?m)^(Fastest: |Fastest durable strategy other than copy: |Durable strategies: ).*$",
        "$1[measured]",
    );
    settings.add_filter(
        r"(?m)^(  (?:Scales longest|Slowest durable at the most writers|Fastest durable at the most writers):) .*$",
        "$1 [measured]",
    );
    settings.bind(|| insta::assert_snapshot!("short_race_text", report.to_string()));

    // Every rendering: JSON reads back the same, CSV has a row a point, SVGs inline cleanly.
    let dir = tempfile::tempdir().unwrap();
    write_results(&report, dir.path(), "labs run wal-race (test)").unwrap();
    let again = read_results(dir.path()).unwrap();
    let (a, b) = (serde_json::to_string_pretty(&again).unwrap(), serde_json::to_string_pretty(&report).unwrap());
    if a != b {
        let diff: Vec<(&str, &str)> = a.lines().zip(b.lines()).filter(|(x, y)| x != y).take(5).collect();
        panic!("results.json does not read back the same: {diff:?}");
    }
    let csv = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), report.points.len() + 1);
    for svg in ["throughput.svg", "wal-per-event.svg"] {
        let text = std::fs::read_to_string(dir.path().join(svg)).unwrap();
        assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
        assert!(!text.contains("\n\n"), "{svg} has a blank line: markdown would end the inline HTML there");
    }
    let throughput = std::fs::read_to_string(dir.path().join("throughput.svg")).unwrap();
    assert_eq!(throughput.matches("<polyline").count(), ALL.len());
}

/// The saved result set is what the lab writes from its results.json: no file of it was
/// edited by hand, and the book's charts and table cannot drift from the data.
#[test]
fn the_saved_result_set_is_exactly_what_the_lab_renders_from_its_data() {
    let dir = saved_dir();
    let report = read_results(&dir).unwrap();
    assert!(!report.interrupted, "the saved set must be a complete race");
    assert_eq!(report.writers, vec![1, 2, 4, 8, 16], "the saved set is a default race");
    assert_eq!(report.strategies.len(), ALL.len());
    let command = labs::wal_race::saved_command(&dir).expect("PROVENANCE.md names its command");
    let fresh = labs::wal_race::race::summarize(ALL, &report.points);
    assert_eq!(
        serde_json::to_value(&fresh).unwrap(),
        serde_json::to_value(&report.strategies).unwrap(),
        "the saved walls are not this build's: run `labs run wal-race --saved --out fixtures/04-wal-race/saved`"
    );
    for (name, text) in renderings(&report, &command) {
        let saved = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(saved == text, "{name} differs from what the lab renders from results.json: run `labs run wal-race --saved --out fixtures/04-wal-race/saved`");
    }
}
