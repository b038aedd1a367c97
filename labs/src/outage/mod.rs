//! Activity 5, Outage: a flash-sale burst of orders into the reference store, a consumer that
//! ships them downstream, then a failure that costs the node its recent WAL. The report
//! reconciles what clients were told, what each copy of the data kept, and what the warehouse
//! already did.
//!
//! Which orders are at risk is decided by the script, not by luck: the burst has two phases,
//! and the failure is set up between them (the WAL writer frozen, the standby's receiver
//! paused, the WAL segment archived). Each scenario runs twice on fresh servers: as configured
//! (the risky setting) and safe (synchronous commit, or a synchronous standby).
//!
//! `labs check outage` ([`check`]) judges the attendee's detection query,
//! `exercises/05-outage/reissued.sql`, on two scripted recoveries.

pub mod burst;
pub mod check;

use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::error::LabError;
use crate::lab::{CheckReport, Ctx, Exercise, ExerciseFile, Lab};
use crate::pg::Capability;

/// `labs run outage`.
pub struct Outage;

/// Options of `labs run outage`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Which failure to stage.
    #[arg(long, value_enum, default_value_t = Scenario::FrozenWalWriter)]
    pub scenario: Scenario,
    /// List the scenarios and exit (no server).
    #[arg(long)]
    pub list: bool,
}

/// What `labs run outage` prints: the scenarios, or one scenario's reconciliation.
#[derive(Serialize)]
#[serde(untagged)]
pub enum OutageReport {
    Scenarios { scenarios: Vec<ScenarioInfo> },
    Reconciliation(Report),
}

/// A scenario as `--list` shows it.
#[derive(Serialize)]
pub struct ScenarioInfo {
    pub id: Scenario,
    pub failure: &'static str,
    pub as_configured: &'static str,
    pub safe: &'static str,
}

impl fmt::Display for OutageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutageReport::Scenarios { .. } => f.write_str(&scenarios_text()),
            OutageReport::Reconciliation(report) => write!(f, "{report}"),
        }
    }
}

impl crate::lab::Report for OutageReport {}

impl Lab for Outage {
    const ID: &'static str = "outage";
    /// Every scenario's needs together; each scenario asks only for its own.
    const NEEDS: &'static [Capability] = &[
        Capability::Crash,
        Capability::Restart,
        Capability::FreezeWalWriter,
        Capability::Standby,
        Capability::Archive,
    ];
    type Args = RunArgs;
    type Report = OutageReport;

    async fn run(&self, args: RunArgs, ctx: &Ctx) -> Result<OutageReport, LabError> {
        if args.list {
            let scenarios = ALL
                .iter()
                .map(|&s| ScenarioInfo {
                    id: s,
                    failure: s.failure(),
                    as_configured: s.setting(Variant::AsConfigured),
                    safe: s.setting(Variant::Safe),
                })
                .collect();
            return Ok(OutageReport::Scenarios { scenarios });
        }
        let scenario = args.scenario;
        ctx.require(scenario.needs()).await?;
        // The two runs are independent (a fresh server each, counts decided by the script), so
        // they run side by side: most of a run is waiting on fsync, pg_basebackup and starts.
        let one = async |variant: Variant| {
            let name = if variant == Variant::Safe { "safe" } else { "as-configured" };
            ctx.progress(format_args!("outage {}: {name} run starts ({})", scenario.id(), scenario.setting(variant)));
            let run =
                ctx.with_server(scenario.needs(), async |server| burst::run(server, scenario, variant).await).await?;
            ctx.progress(format_args!("outage {}: {name} run done in {:.1} s", scenario.id(), run.seconds));
            Ok::<_, LabError>(run)
        };
        let (configured, safe) = tokio::join!(one(Variant::AsConfigured), one(Variant::Safe));
        Ok(OutageReport::Reconciliation(Report::new(scenario, vec![configured?, safe?])))
    }

    fn exercise(&self) -> Option<Exercise> {
        Some(EXERCISE)
    }

    async fn check(&self, file: &ExerciseFile, ctx: &Ctx) -> Result<CheckReport, LabError> {
        ctx.require(check::NEEDS).await?;
        // Two recoveries on two fresh servers, side by side: most of each is waiting on fsync,
        // the crash and the restart.
        let one = async |history: check::History| {
            ctx.progress(format_args!("outage check: {history}: {}", history.describe()));
            ctx.with_server(check::NEEDS, async |server| check::history(server, history, file).await).await
        };
        let (bumped, burned) = tokio::join!(one(check::History::IdentityBumped), one(check::History::XidsBurned));
        Ok(check::verdict(file, &[bumped?, burned?]))
    }
}

pub const EXERCISE: Exercise = Exercise {
    file: "05-outage/reissued.sql",
    template: include_str!("../../../exercises/05-outage/reissued.sql"),
    task: "after recovery: the orders whose position or transaction id was reissued",
};

id_enum! {
    pub enum Scenario {
        FrozenWalWriter = "frozen-wal-writer",
        AsyncFailover = "async-failover",
        UnarchivedWal = "unarchived-wal",
    }
}

pub const ALL: &[Scenario] = Scenario::ALL;

/// The two runs of a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    AsConfigured,
    Safe,
}

impl Scenario {
    pub fn failure(self) -> &'static str {
        match self {
            Scenario::FrozenWalWriter => {
                "the sale runs with synchronous_commit = off; the WAL writer stops flushing (frozen, standing in for an OS crash that loses unflushed writes); the server crashes and recovers"
            }
            Scenario::AsyncFailover => {
                "an asynchronous standby falls behind (its WAL receiver paused); the primary crashes; the standby is promoted"
            }
            Scenario::UnarchivedWal => {
                "WAL archiving is on and a base backup was taken before the sale; the primary's disk is lost; the node is rebuilt from the base backup plus the archived WAL"
            }
        }
    }

    pub fn setting(self, variant: Variant) -> &'static str {
        match (self, variant) {
            (Scenario::FrozenWalWriter, Variant::AsConfigured) => "synchronous_commit = off",
            (Scenario::FrozenWalWriter, Variant::Safe) => "synchronous_commit = on",
            (Scenario::AsyncFailover, Variant::AsConfigured) => "asynchronous standby",
            (Scenario::AsyncFailover, Variant::Safe) => "synchronous standby (synchronous_standby_names = '*')",
            (Scenario::UnarchivedWal, Variant::AsConfigured) => "archive only",
            (Scenario::UnarchivedWal, Variant::Safe) => "archive + synchronous standby",
        }
    }

    pub fn needs(self) -> &'static [Capability] {
        match self {
            Scenario::FrozenWalWriter => &[Capability::FreezeWalWriter, Capability::Crash, Capability::Restart],
            Scenario::AsyncFailover => &[Capability::Standby, Capability::Crash, Capability::Restart],
            Scenario::UnarchivedWal => &[Capability::Archive, Capability::Standby, Capability::Crash],
        }
    }
}

/// The scenarios for people (`labs run outage --list`).
pub fn scenarios_text() -> String {
    let mut out = String::new();
    for s in ALL {
        let _ = writeln!(
            out,
            "{}\n  {}\n  as configured: {}; safe: {}\n",
            s.id(),
            s.failure(),
            s.setting(Variant::AsConfigured),
            s.setting(Variant::Safe)
        );
    }
    out
}

/// What one run counted. `None`: that copy does not exist in this scenario.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Orders whose append returned success to the client.
    pub acknowledged: usize,
    /// Of those, in the primary's own data directory after it recovered.
    pub durable_on_primary: Option<usize>,
    /// Of those, on the standby (promoted) after the failure.
    pub on_standby: Option<usize>,
    /// Of those, in a node rebuilt from the base backup plus the WAL archive.
    pub in_archive: Option<usize>,
    /// Of those, on the node that serves clients after recovery.
    pub serving: usize,
    /// Acknowledged, and not on the serving node.
    pub lost: usize,
    /// Orders the consumer shipped downstream before the failure.
    pub shipped: usize,
    /// Shipped, but their events are not on the serving node.
    pub shipped_but_missing: usize,
    /// Orders placed on the serving node after recovery.
    pub new_after_recovery: usize,
    /// Of those, how many a consumer resuming from its checkpoint reads.
    pub new_seen_by_consumer: usize,
    /// Of those, how many got a position at or below the last one the consumer had shipped:
    /// positions handed out again after the lost ones.
    pub new_with_reused_position: usize,
}

/// One run of a scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub variant: Variant,
    pub setting: String,
    pub counts: Counts,
    /// What the lab did, in order.
    pub steps: Vec<String>,
    /// Wall time of the burst's second phase, the one the setting affects.
    pub phase_two_ms: u64,
    pub seconds: f64,
}

/// The reconciliation report of one scenario: both runs.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub lab: &'static str,
    pub scenario: Scenario,
    pub failure: String,
    pub orders_before_failure_point: usize,
    pub orders_after_failure_point: usize,
    pub runs: Vec<Run>,
}

impl Report {
    pub fn new(scenario: Scenario, runs: Vec<Run>) -> Report {
        Report {
            lab: "outage",
            scenario,
            failure: scenario.failure().to_string(),
            orders_before_failure_point: burst::PHASE_ONE_ORDERS,
            orders_after_failure_point: burst::PHASE_TWO_ORDERS,
            runs,
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "OUTAGE: {}", self.scenario.id());
        let _ = writeln!(out, "{}.", self.failure);
        let _ = writeln!(
            out,
            "The flash sale: {} writers place {} orders before the failure point and {} after it; a consumer ships each order downstream.\n",
            burst::WRITERS,
            self.orders_before_failure_point,
            self.orders_after_failure_point
        );
        for run in &self.runs {
            let _ = writeln!(out, "{} ({}):", label(run.variant), run.setting);
            for (n, step) in run.steps.iter().enumerate() {
                let _ = writeln!(out, "  {}. {step}", n + 1);
            }
            out.push('\n');
        }
        let _ = writeln!(out, "RECONCILIATION");
        let header: Vec<String> = self.runs.iter().map(|r| label(r.variant).to_string()).collect();
        let _ = writeln!(out, "  {:<58}{}", "", header.iter().map(|h| format!("{h:>15}")).collect::<String>());
        let rows: [(&str, CountOf); 11] = [
            ("orders acknowledged to clients", |c| Some(c.acknowledged)),
            ("durable on the primary after recovery", |c| c.durable_on_primary),
            ("present on the standby (promoted)", |c| c.on_standby),
            ("present in the archive (base backup + WAL)", |c| c.in_archive),
            ("on the node serving after recovery", |c| Some(c.serving)),
            ("acknowledged, now gone from the serving node", |c| Some(c.lost)),
            ("shipped downstream before the failure", |c| Some(c.shipped)),
            ("shipped, but the order no longer exists", |c| Some(c.shipped_but_missing)),
            ("new orders placed after recovery", |c| Some(c.new_after_recovery)),
            ("  of which a consumer resuming from its checkpoint reads", |c| Some(c.new_seen_by_consumer)),
            ("  of which got a position already shipped before", |c| Some(c.new_with_reused_position)),
        ];
        for (name, get) in rows {
            let cells: String = self
                .runs
                .iter()
                .map(|r| match get(&r.counts) {
                    Some(n) => format!("{n:>15}"),
                    None => format!("{:>15}", "-"),
                })
                .collect();
            let _ = writeln!(out, "  {name:<58}{cells}");
        }
        let _ = writeln!(out, "  ('-': that copy does not exist in this scenario)");
        out
    }
}

/// One row of the reconciliation: a count, or `None` where that copy does not exist.
type CountOf = fn(&Counts) -> Option<usize>;

fn label(variant: Variant) -> &'static str {
    match variant {
        Variant::AsConfigured => "AS CONFIGURED",
        Variant::Safe => "SAFE",
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}
