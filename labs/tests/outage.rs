//! Activity 5, Outage: what a scenario loses is decided by the scenario. As configured, exactly
//! the orders placed after the failure point are gone (and were shipped); safe, nothing
//! acknowledged is lost. The counts add up, and the report's shape is pinned.

mod common;
use common::{config, containers_expected};

use labs::outage::burst::{NEW_ORDERS_AFTER_RECOVERY, PHASE_ONE_ORDERS, PHASE_TWO_ORDERS};
use labs::outage::{Report, Run, Scenario, Variant, ALL};
use labs::pg::{Backend, Server};

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
