//! Activity 9, Two Nodes, One Truth: what happens to the store's guarantees when one table,
//! one node, one transaction-id space is no longer the whole story. Real servers only:
//!
//! - [`retention`] and [`layouts`] (Part A): the events table partitioned by month; the keys a
//!   month cannot hold; the oldest month archived with `DETACH … CONCURRENTLY` and COPY while a
//!   subscription holds a batch open; the next month refused while a subscription still reads
//!   it. What each layout costs a reader, from EXPLAIN. The same scenario judges the attendee's
//!   exercise ([`check`]).
//! - [`standby`] (Part B): the watermark reader on a hot standby, with replay paused and after
//!   promotion; what the standby refuses a subscription.
//! - [`replica`] (Part C): a logical replica in a second database, with the publisher's
//!   transaction ids copied across, and with the subscriber's own stamped at apply.
//!
//! Sharding is not simulated here: the chapter teaches it from Citus's own documentation and
//! issues.

pub mod check;
pub mod layouts;
pub mod replica;
pub mod retention;
pub mod script;
pub mod standby;

use std::fmt;

use serde::Serialize;

use crate::error::LabError;
use crate::lab::{Check, Ctx, Exercise, ExerciseFile, Lab};
use crate::pg::{Capability, Server};

/// `labs run two-nodes` and `labs check two-nodes`.
pub struct TwoNodes;

/// `labs run two-nodes` takes no flags of its own.
#[derive(clap::Args)]
pub struct RunArgs {}

pub const EXERCISE: Exercise = Exercise {
    file: "09-two-nodes/retention.sql",
    template: include_str!("../../../exercises/09-two-nodes/retention.sql"),
    task: "a month-partitioned events table that keeps its keys, and an archive step that takes a month whole",
};

/// The reference answer, which `labs run two-nodes` plays; the same file as the exercise's
/// solution.
pub const SOLUTION_SQL: &str = include_str!("../../../exercises/09-two-nodes/retention.solution.sql");
const SOLUTION_SHOWN: &str = "exercises/09-two-nodes/retention.solution.sql";

impl Lab for TwoNodes {
    const ID: &'static str = "two-nodes";
    /// A streaming standby (Part B) and wal_level = logical with slots to spare (Part C).
    const NEEDS: &'static [Capability] = &[Capability::Standby, Capability::Logical];
    type Args = RunArgs;
    type Report = TwoNodesReport;

    async fn run(&self, _: RunArgs, ctx: &Ctx) -> Result<TwoNodesReport, LabError> {
        // Two fresh servers, started side by side: one for Parts A and C (logical decoding),
        // one for Part B (its standby). Most of each part is waiting on fsync, so they run at once.
        ctx.require(Self::NEEDS).await?;
        let (logical, standby) =
            tokio::join!(ctx.start_server(&[Capability::Logical]), ctx.start_server(&[Capability::Standby]));
        let (logical, mut standby) = match (logical, standby) {
            (Ok(a), Ok(b)) => (a, b),
            (Ok(started), Err(e)) | (Err(e), Ok(started)) => {
                let _ = started.shutdown().await;
                return Err(e);
            }
            (Err(e), Err(_)) => return Err(e),
        };
        let report = play(&logical, &mut standby, |line| ctx.progress(line)).await;
        for server in [logical, standby] {
            if let Err(e) = server.shutdown().await {
                ctx.progress(format_args!("warning: a server was not removed cleanly: {e}"));
            }
        }
        report
    }

    fn exercise(&self) -> Option<Exercise> {
        Some(EXERCISE)
    }

    async fn check(&self, file: &ExerciseFile, ctx: &Ctx) -> Result<crate::lab::CheckReport, LabError> {
        // The exercise needs a plain server: no standby, no logical decoding.
        ctx.with_server(&[], async |server| check::check(server, file).await).await
    }
}

/// Plays the three parts and gathers the report: Parts A then C on `logical` (a fresh server
/// with [`Capability::Logical`]), at the same time as Part B on `standby` (a fresh server with
/// [`Capability::Standby`]: Part B builds its standby, then promotes it). `progress` hears where
/// each is.
pub async fn play(logical: &Server, standby: &mut Server, progress: impl Fn(&str)) -> Result<TwoNodesReport, LabError> {
    let parts_a_and_c = async {
        progress("A. partitions and retention: the reference table, its history, two archives");
        let partitions = partitions(logical).await?;
        progress("C. a logical replica: two subscriptions in databases of the same cluster");
        let replica = replica::run(logical).await?;
        progress("A and C: done");
        Ok::<_, LabError>((partitions, replica))
    };
    let part_b = async {
        progress("B. readers on a hot standby: pg_basebackup, a held writer, paused replay, promotion");
        let report = standby::run(standby).await;
        progress("B: done");
        report
    };
    let (a_and_c, b) = tokio::join!(parts_a_and_c, part_b);
    let (partitions, replica) = a_and_c?;
    Ok(TwoNodesReport { postgres_major: logical.version().major(), partitions, standby: b?, replica })
}

/// Part A with the reference solution: the scenario, its verdicts, and the layouts compared.
pub async fn partitions(server: &Server) -> Result<PartitionsReport, LabError> {
    let file = ExerciseFile { shown: SOLUTION_SHOWN.into(), path: SOLUTION_SHOWN.into(), sql: SOLUTION_SQL.into() };
    let parts =
        retention::ExerciseParts::parse(SOLUTION_SQL, SOLUTION_SHOWN).map_err(|e| LabError::Script(e.to_string()))?;
    let (outcome, verify) = match check::prepare_and_play(server, &file, &parts).await? {
        Ok(played) => played,
        Err(failed) => {
            return Err(LabError::Script(format!("the reference solution failed {}: {}", failed.id, failed.detail)))
        }
    };
    let checks = check::judge(&outcome, SOLUTION_SHOWN);
    let mut config = server.config();
    config.dbname(check::DATABASE);
    let layouts = layouts::compare(&retention::connect(&config).await?).await?;
    Ok(PartitionsReport { layouts, verify, outcome, checks })
}

/// What `labs run two-nodes` prints.
#[derive(Clone, Debug, Serialize)]
pub struct TwoNodesReport {
    pub postgres_major: u32,
    pub partitions: PartitionsReport,
    pub standby: standby::StandbyReport,
    pub replica: replica::ReplicaReport,
}

impl crate::lab::Report for TwoNodesReport {}

/// Part A's findings.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionsReport {
    pub layouts: Vec<layouts::Layout>,
    /// `labs schema verify`'s checks on the partitioned table.
    pub verify: Vec<Check>,
    pub outcome: retention::Outcome,
    /// `labs check two-nodes`' verdicts on the reference.
    pub checks: Vec<Check>,
}

impl fmt::Display for TwoNodesReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Two nodes, one truth (PostgreSQL {})", self.postgres_major)?;
        writeln!(f)?;
        write!(f, "{}", self.partitions)?;
        writeln!(f)?;
        write!(f, "{}", self.standby)?;
        writeln!(f)?;
        write!(f, "{}", self.replica)
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for PartitionsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.outcome;
        let past = o.months.iter().filter(|m| m.offset < 0).count();
        writeln!(f, "A. Partitions and retention (database {})", check::DATABASE)?;
        writeln!(
            f,
            "   events partitioned by month of recorded_at ({SOLUTION_SHOWN}): {} monthly partitions, {} to {};",
            o.months.len(),
            o.months[0].label(),
            o.months[o.months.len() - 1].label()
        )?;
        writeln!(
            f,
            "   {past} months of history ({} events each) COPied straight into their partitions, {} appends this month.",
            retention::HISTORY_PER_MONTH,
            retention::LIVE_APPENDS
        )?;
        writeln!(f)?;
        writeln!(f, "   Partitions each read scans (EXPLAIN's plan), after the archive below:")?;
        writeln!(f, "     {:<34}{:<20}read_all_after", "layout", "reading one stream")?;
        for l in &self.layouts {
            writeln!(
                f,
                "     {:<34}{:<20}{} of {}",
                l.name,
                format!("{} of {}", l.read_stream_scans, l.partitions),
                l.read_all_scans,
                l.partitions
            )?;
        }
        for l in &self.layouts {
            writeln!(f, "   ALTER TABLE {} ADD UNIQUE (event_id): {}", l.table, l.unique_event_id)?;
        }
        writeln!(f)?;
        writeln!(f, "   The keys a month cannot hold live in event_keys, a table that is not partitioned:")?;
        let probe = |p: &retention::Probe| match p {
            retention::Probe::Refused(why) => format!("refused: {why}"),
            retention::Probe::Stored => "stored".to_string(),
        };
        writeln!(
            f,
            "     an event id from {}, sent again this month: {}",
            o.oldest().label(),
            probe(&o.id_in_another_month)
        )?;
        writeln!(f, "     a second account-1 v2, this month: {}", probe(&o.version_in_another_month))?;
        let passing = self.verify.iter().filter(|c| c.passed).count();
        writeln!(f, "   labs schema verify on this table: {passing} of {} checks pass", self.verify.len())?;
        for c in self.verify.iter().filter(|c| !c.passed) {
            writeln!(f, "     FAIL {}: {}", c.id, c.detail.lines().next().unwrap_or_default())?;
        }
        writeln!(f)?;
        let run = &o.archive;
        writeln!(
            f,
            "   Archiving the oldest month ({}) while subscription projection holds a batch open:",
            o.oldest().label()
        )?;
        match &run.error {
            None => writeln!(f, "     the ARCHIVE part ran: {} statements, one at a time", run.statements_run)?,
            Some(error) => writeln!(f, "     the ARCHIVE part failed: {}", o.undated(error))?,
        }
        writeln!(f, "     it waited for the open batch (a lock wait): {}", yes(run.waited_on_lock))?;
        let append = &o.append_during_archive;
        writeln!(
            f,
            "     an append during that wait: {}",
            match (append.committed, append.waited_on_lock) {
                (true, false) => "committed without queueing behind the archive".to_string(),
                (true, true) => "committed, after queueing behind the archive".to_string(),
                (false, _) => format!("failed: {}", append.error.clone().unwrap_or_default()),
            }
        )?;
        writeln!(
            f,
            "     COPY … TO STDOUT wrote {} lines, holding {} of the month's {} events",
            run.copied_lines,
            o.archived_found,
            retention::HISTORY_PER_MONTH
        )?;
        let after = &o.oldest_after;
        writeln!(
            f,
            "     afterwards: table {}, rows of that month in events {}; the later months keep their {} events",
            if after.table_exists { "still there" } else { "gone" },
            after.rows_in_events,
            o.later_months_rows
        )?;
        writeln!(
            f,
            "   Archiving the next month ({}), which audit and projection have not finished:",
            o.second().label()
        )?;
        match &o.lagging_archive.error {
            Some(error) => writeln!(f, "     refused: {}", o.undated(error))?,
            None => writeln!(f, "     it ran")?,
        }
        writeln!(
            f,
            "     the month keeps {} of its {} events",
            o.second_after.rows_in_events,
            retention::HISTORY_PER_MONTH
        )?;
        writeln!(f, "   Subscriptions, read to the end afterwards:")?;
        for t in &o.tallies {
            writeln!(
                f,
                "     {:<12}{} delivered, {} missed, {} twice",
                t.subscription, t.delivered, t.missed, t.twice
            )?;
        }
        let passing = self.checks.iter().filter(|c| c.passed).count();
        writeln!(
            f,
            "   `labs check two-nodes` on this reference: {passing} of {} of its own checks pass",
            self.checks.len()
        )?;
        for c in self.checks.iter().filter(|c| !c.passed) {
            writeln!(f, "     FAIL {}: {}", c.id, c.detail.lines().next().unwrap_or_default())?;
        }
        Ok(())
    }
}

impl fmt::Display for standby::StandbyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "B. Readers on a hot standby (database {}, a streaming standby from pg_basebackup)",
            standby::DATABASE
        )?;
        writeln!(
            f,
            "   A writer appends #{} and holds its transaction open; #{} commits after it. read_all_after from the start:",
            self.held_position, self.later_position
        )?;
        writeln!(f, "     on the primary: {}", self.primary_read)?;
        writeln!(f, "     on the standby: {}", self.standby_read)?;
        writeln!(
            f,
            "     the same watermark, pg_snapshot_xmin(pg_current_snapshot()), on both: {}",
            yes(self.same_watermark)
        )?;
        writeln!(
            f,
            "     running transactions the snapshot lists, pg_snapshot_xip(): {} on the primary, {} on the standby",
            self.xip_on_primary, self.xip_on_standby
        )?;
        writeln!(f, "   The held writer commits; the standby's reader goes on: {}", self.standby_after_commit)?;
        writeln!(
            f,
            "   Replay paused (pg_wal_replay_pause), {} orders committed on the primary:",
            self.committed_while_paused
        )?;
        writeln!(
            f,
            "     the standby's reader gets: {} ({} bytes of WAL received, not replayed)",
            self.read_while_paused, self.replay_lag_bytes
        )?;
        writeln!(f, "     replay resumed (pg_wal_replay_resume), it gets: {}", self.read_after_resume)?;
        writeln!(f, "   What a subscription also does, tried on the standby:")?;
        for (tried, answer) in &self.refusals {
            writeln!(f, "     {tried}: {answer}")?;
        }
        writeln!(
            f,
            "   Promoted (pg_promote); orders appended on it; the same reader goes on: {}",
            self.read_after_promotion
        )?;
        writeln!(
            f,
            "     their positions jump ahead of the last replayed one (a sequence logs values in advance): {}",
            yes(self.positions_jumped)
        )?;
        writeln!(f, "     subscription orders-projection there: {}", self.subscription_after_promotion)?;
        writeln!(
            f,
            "   The standby's reader over the whole part: {} orders owed, {} missed, {} twice.",
            self.owed, self.missed, self.twice
        )
    }
}

impl fmt::Display for replica::ReplicaReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "C. A logical replica, in another database of the same cluster (publisher: database {})",
            replica::PUBLISHER
        )?;
        writeln!(f, "   CREATE SUBSCRIPTION to the same cluster, default create_slot = true, cut after 1 s:")?;
        writeln!(f, "     {}", self.same_cluster_create_slot)?;
        writeln!(
            f,
            "   so each slot is made first (pg_create_logical_replication_slot), then CREATE SUBSCRIPTION … WITH (create_slot = false)."
        )?;
        writeln!(
            f,
            "   order-1 is appended and held open; order-2 commits; the subscriptions are disabled (apply lag);"
        )?;
        writeln!(f, "   order-1 commits; they are enabled again; order-3 to order-5 follow.")?;
        writeln!(f, "   The publisher's commit order: {}", self.commit_order.join(", "))?;
        for r in &self.replicas {
            let list = |v: &[String]| if v.is_empty() { "nothing".to_string() } else { v.join(", ") };
            writeln!(f, "   {} ({}):", r.replica.database(), r.replica.describe())?;
            writeln!(f, "     while order-1 is held open:        {}", list(&r.while_held))?;
            writeln!(
                f,
                "     during the apply lag:              {} (apply worker in pg_stat_subscription: {})",
                list(&r.during_lag),
                if r.worker_during_lag { "running" } else { "none" }
            )?;
            writeln!(f, "     once the subscription caught up:   {}", list(&r.after_catch_up))?;
            writeln!(f, "     after three more orders:           {}", list(&r.after_more))?;
            if r.missed.is_empty() {
                writeln!(
                    f,
                    "     delivered {} of {}{}",
                    r.delivered.len(),
                    self.commit_order.len(),
                    if r.in_commit_order { ", in the publisher's commit order" } else { ", in another order" }
                )?;
            } else {
                writeln!(
                    f,
                    "     delivered {} of {}; never: {}",
                    r.delivered.len(),
                    self.commit_order.len(),
                    r.missed.join(", ")
                )?;
            }
            match r.lag_bytes {
                Some(bytes) => writeln!(f, "     lag at the end (pg_stat_subscription.latest_end_lsn): {bytes} bytes")?,
                None => writeln!(f, "     lag at the end: no worker reported a position")?,
            }
        }
        Ok(())
    }
}
