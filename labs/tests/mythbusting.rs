//! Activity 2, Mythbusting: the myth bank is whole, the poll exports cleanly, and every
//! demonstration busts its myth on a real server, judged from what it measured.
//!
//! All seven demonstrations run on the local backend; the poll's default three also run in a
//! container (the provider's tests cover each capability on both backends).

mod common;
use common::{config, containers_expected};

use labs::mythbusting::demos::{Demo, ALL};
use labs::mythbusting::{Bank, DemoReport};
use labs::pg::{Backend, Server};

/// The bank with the frozen test kit's poll (labs/tests/data/kit): an instructor's own poll in
/// cohort.toml cannot break these tests; `cargo xtask check` judges it by rules instead.
fn bank() -> Bank {
    let kit = labs::settings::Kit::at(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kit"));
    let settings = labs::settings::Settings::load_from(kit).unwrap();
    Bank::load(&settings).unwrap()
}

#[test]
fn the_bank_has_eight_myths_six_demonstrations_and_a_poll_of_three() {
    let bank = bank();
    assert!(bank.myth.len() >= 8, "{} myths", bank.myth.len());
    assert!(bank.myth.iter().filter(|m| m.demo).count() >= 6);
    assert_eq!(bank.poll.len(), 3);
    for m in &bank.myth {
        assert!(m.source.url.starts_with("https://"), "{}: {}", m.id, m.source.url);
        for sentence in &m.evidence {
            assert!(sentence.trim_end().ends_with(['.', ')', '"']), "{}: not a sentence: {sentence}", m.id);
        }
    }
}

#[test]
fn a_bank_whose_demo_flags_lie_is_rejected() {
    let lying = labs::mythbusting::MYTHS_TOML.replacen("\ndemo = true", "\ndemo = false", 1);
    let err = Bank::parse(&lying, &[]).unwrap_err().to_string();
    assert!(err.contains("says demo = false, but this build has a demonstration"), "{err}");
}

#[test]
fn unknown_and_evidence_only_ids_say_what_is_valid() {
    let bank = bank();
    let err = bank.select(&["teleportation".into()]).unwrap_err().to_string();
    assert!(err.starts_with("unknown myth 'teleportation'; the myths are: replication-no-loss, "), "{err}");
    let evidence_only = bank.myth.iter().find(|m| !m.demo).unwrap();
    let err = bank.select(std::slice::from_ref(&evidence_only.id)).unwrap_err().to_string();
    assert!(err.contains("has no demonstration"), "{err}");
    assert_eq!(bank.select(&[]).unwrap().iter().map(|d| d.id()).collect::<Vec<_>>(), bank.poll);
    let mut poll_without_demos = bank.clone();
    poll_without_demos.poll = vec![evidence_only.id.clone()];
    let err = poll_without_demos.select(&[]).unwrap_err().to_string();
    assert!(err.contains("has a demonstration; name one with --myth"), "{err}");
    let err = Bank::parse(labs::mythbusting::MYTHS_TOML, &["no-such-myth".into()]).unwrap_err().to_string();
    assert!(err.contains("poll names 'no-such-myth', which is not in the bank"), "{err}");
}

#[test]
fn list() {
    insta::assert_snapshot!("list", bank().list_text());
}

/// The CSV a poll tool imports: a header, one row per myth, the poll's first, quoted fields.
#[test]
fn poll_csv() {
    let bank = bank();
    let csv = bank.poll_csv();
    let rows: Vec<&str> = csv.split("\r\n").filter(|r| !r.is_empty()).collect();
    assert_eq!(rows.len(), bank.myth.len() + 1);
    for (n, id) in bank.poll.iter().enumerate() {
        assert!(rows[n + 1].starts_with(&format!("{},{id},", n + 1)), "{}", rows[n + 1]);
    }
    insta::assert_snapshot!("poll_csv", csv);
}

async fn run(demo: Demo, backend: Backend) -> DemoReport {
    let bank = bank();
    let myth = bank.get(demo.id()).unwrap();
    let mut server = Server::start(&config(backend), demo.needs()).await.unwrap();
    let report = demo.run(&mut server, &myth.statement, &myth.verdict).await.unwrap();
    server.shutdown().await.unwrap();
    assert!(report.busted, "{} was not busted:\n{}", demo.id(), report.to_text(myth));
    report
}

fn measured<'a>(report: &'a DemoReport, name: &str) -> &'a serde_json::Value {
    &report
        .measured
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no '{name}' in {:?}", report.measured))
        .value
}

#[tokio::test]
async fn every_demonstration_busts_its_myth_on_the_local_backend() {
    for &demo in ALL {
        let report = run(demo, Backend::Local).await;
        match demo {
            Demo::ReplicationNoLoss => {
                assert_eq!(measured(&report, "orders on the promoted standby"), 0);
                assert_eq!(measured(&report, "orders lost by the failover"), 4);
                assert_eq!(measured(&report, "sync commit still waiting after 1 s"), true);
                assert!(
                    report.server_said.iter().any(|s| s.contains("has already committed locally")),
                    "{:?}",
                    report.server_said
                );
            }
            Demo::AsyncCommitCorrupts => {
                assert_eq!(measured(&report, "acknowledged commits lost"), 200);
                assert_eq!(measured(&report, "amcheck: index consistent with the table"), true);
            }
            Demo::UnloggedFreeSpeedup => {
                assert_eq!(measured(&report, "rows after the crash, unlogged table"), 0);
                assert!(
                    measured(&report, "WAL, unlogged table").as_i64().unwrap() * 100
                        < measured(&report, "WAL, logged table").as_i64().unwrap()
                );
            }
            Demo::IdentityGapFree => {
                assert_eq!(measured(&report, "ids the reader will never see"), &serde_json::json!([1]))
            }
            _ => {}
        }
    }
}

/// The two fully scripted demonstrations print the same every time: the book can show them.
#[tokio::test]
async fn scripted_demonstrations_print_the_same_every_time() {
    let bank = bank();
    for demo in [Demo::IdentityGapFree, Demo::NotifyDurableQueue] {
        let report = run(demo, Backend::Local).await;
        insta::assert_snapshot!(demo.id(), report.to_text(bank.get(demo.id()).unwrap()));
    }
}

#[tokio::test]
async fn the_default_demonstrations_run_in_a_container() {
    if !containers_expected() {
        return;
    }
    let bank = bank();
    for demo in bank.select(&[]).unwrap() {
        run(demo, Backend::Container).await;
    }
}

/// The saved outputs the book shows belong to the bank as it is now: each starts with its
/// myth's current statement, and default.txt has the shipped poll's three, in order.
#[test]
fn saved_outputs_match_the_bank() {
    let bank = bank();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/02-mythbusting/saved");
    let header = |id: &str| format!("MYTH {id}: \"{}\"", bank.get(id).unwrap().statement);
    for &demo in ALL {
        let text = std::fs::read_to_string(dir.join(format!("{}.txt", demo.id()))).unwrap();
        assert!(text.starts_with(&header(demo.id())), "{}.txt is stale: run the command in PROVENANCE.md", demo.id());
        assert!(text.contains("verdict: BUSTED"), "{}.txt", demo.id());
    }
    let default = std::fs::read_to_string(dir.join("default.txt")).unwrap();
    let order: Vec<usize> =
        bank.poll.iter().map(|id| default.find(&header(id)).expect("a poll myth is missing")).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "default.txt is not in the poll's order");
}
