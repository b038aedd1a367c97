//! `labs check two-nodes`: the attendee's partitioned table and archive step against a real
//! server. First the store's own conformance checks (`labs schema verify`) on the table, then
//! the retention scenario (retention.rs), judged:
//!
//! - `position-in-partition`: a backfill COPied into a month's partition gets positions (an
//!   identity column on the parent fails it before PostgreSQL 17);
//! - `event-id-unique`, `stream-version-unique`: the keys no month can hold, tried across months
//!   (UNIQUE (event_id, recorded_at) and friends fail them);
//! - `archive-runs`: the ARCHIVE part runs as psql would run it (CONCURRENTLY inside BEGIN, a
//!   DEFAULT partition, a lock_timeout shorter than the open batch fail it);
//! - `appends-during-archive`: an append while the archive waits does not queue (a plain DETACH
//!   fails it);
//! - `month-removed`, `archive-complete`: the month leaves whole, and the archive holds it (a
//!   DELETE, a detach without DROP, a COPY of the wrong rows fail them);
//! - `lagging-subscription`, `reader-no-skip`: a month a subscription has not finished stays, and
//!   every subscription reads every event once (an archive without the guard fails them).

use super::retention::{self, ExerciseParts, Outcome, Probe, SetupFailure};
use crate::error::LabError;
use crate::lab::{Check, CheckReport, ExerciseFile};
use crate::pg::Server;
use crate::store::conformance;

/// The database the scenario runs in; `labs schema verify`'s checks use the server's default.
pub const DATABASE: &str = "retention";

const PASSED_MEANS: &str = "the table keeps every key across months, numbers backfilled rows, and the archive removes \
     a month whole, without blocking appends and without taking anything a subscription has not read.";

pub async fn check(server: &Server, file: &ExerciseFile) -> Result<CheckReport, LabError> {
    let report = |checks| CheckReport::new("two-nodes", file, checks, PASSED_MEANS);
    let parts = match ExerciseParts::parse(&file.sql, &file.shown) {
        Ok(parts) => parts,
        Err(why) => {
            return Ok(report(vec![Check::new("loads", format!("{} loads", file.shown), false, why.to_string())]))
        }
    };
    let (outcome, verify) = match prepare_and_play(server, file, &parts).await? {
        Ok(played) => played,
        Err(failed) => return Ok(report(vec![failed])),
    };
    let mut checks = vec![
        Check::new(
            "loads",
            format!("{} loads, with the monthly partitions and the store's functions", file.shown),
            true,
            "the SCHEMA part, six monthly partitions and append_to_stream, read_all_after, subscriptions",
        ),
        Check::new(
            "partitioned-by-month",
            "events is partitioned by month of recorded_at",
            true,
            "BY RANGE (recorded_at)",
        ),
    ];
    checks.extend(verify);
    checks.extend(judge(&outcome, &file.shown));
    Ok(report(checks))
}

/// Sets up the default database for `labs schema verify` and the scenario's own, runs both.
/// `Err(check)`: the file could not be set up, and that check says why.
pub async fn prepare_and_play(
    server: &Server,
    file: &ExerciseFile,
    parts: &ExerciseParts,
) -> Result<Result<(Outcome, Vec<Check>), Check>, LabError> {
    let admin = server.connect().await?;
    let months = retention::months(&admin).await?;
    admin.batch_execute(&format!("CREATE DATABASE {DATABASE}")).await.map_err(LabError::db("CREATE DATABASE"))?;
    let mut config = server.config();
    config.dbname(DATABASE);
    let client = retention::connect(&config).await?;
    match retention::set_up(&client, file, parts, &months).await? {
        Ok(()) => {}
        Err(SetupFailure::Load(why)) => {
            return Ok(Err(Check::new("loads", format!("{} loads", file.shown), false, why)))
        }
        Err(SetupFailure::NotByMonth(why)) => {
            return Ok(Err(Check::new(
                "partitioned-by-month",
                "events is partitioned by month of recorded_at",
                false,
                why,
            )))
        }
        Err(SetupFailure::Contract(why)) => {
            return Ok(Err(Check::new(
                "loads",
                format!("{} loads, with the monthly partitions and the store's functions", file.shown),
                false,
                why,
            )))
        }
    }
    drop(client);

    // The store's promises, on the same table in the server's default database.
    let full =
        format!("{}\n{}\n{}", parts.schema, retention::partitions_ddl(&months), retention::store_contract_sql()?);
    let verified = conformance::verify(server, &full, &file.shown).await?;
    let verify = verified
        .checks
        .iter()
        // Loading was judged above, on the attendee's own text and lines.
        .filter(|c| c.id != "loads")
        .map(|c| {
            let mut detail = c.summary.clone();
            for line in &c.details {
                detail.push('\n');
                detail.push_str(line);
            }
            Check::new(c.id, format!("labs schema verify: {}", c.id), c.passed, detail)
        })
        .collect();

    let outcome = retention::play(&config, &file.shown, parts, months).await?;
    Ok(Ok((outcome, verify)))
}

/// The scenario's verdicts.
pub fn judge(o: &Outcome, shown: &str) -> Vec<Check> {
    let oldest = o.oldest();
    let second = o.second();
    let mut checks = Vec::new();

    checks.push(Check::new(
        "position-in-partition",
        "a month of history COPied straight into its partition gets positions",
        o.backfill_into_partitions_refused.is_none(),
        match &o.backfill_into_partitions_refused {
            None => format!(
                "{} months of {} events, each COPied into its own partition",
                o.months.iter().filter(|m| m.offset < 0).count(),
                retention::HISTORY_PER_MONTH
            ),
            Some(why) => format!(
                "{why}\nA backfill or a restore writes into the partition directly. Before PostgreSQL 17 an identity \
                 column on the parent numbers only rows inserted through the parent: give position a sequence as its \
                 DEFAULT, which every partition inherits."
            ),
        },
    ));

    let (passed, detail) = match &o.id_in_another_month {
        Probe::Refused(why) => (true, format!("refused: {why}")),
        Probe::Stored => (
            false,
            "stored: the id now names two events, one four months ago and one in stream retried-elsewhere. A unique \
             key that includes recorded_at is unique per month; keep event ids in a table that is not partitioned."
                .to_string(),
        ),
    };
    checks.push(Check::new(
        "event-id-unique",
        "an event id stored four months ago, sent again this month in another stream, is refused",
        passed,
        detail,
    ));

    let (passed, detail) = match &o.version_in_another_month {
        Probe::Refused(why) => (true, format!("refused: {why}")),
        Probe::Stored => (
            false,
            "stored: account-1 now has two version 2s, four months apart. The store's backstop, unique (stream_id, \
             version), must hold across months: keep it in a table that is not partitioned."
                .to_string(),
        ),
    };
    checks.push(Check::new(
        "stream-version-unique",
        "a second version 2 of account-1 (stored four months ago), inserted this month, is refused",
        passed,
        detail,
    ));

    let run = &o.archive;
    let archive_runs = run.error.is_none() && !run.left_open;
    let mut detail = match (&run.error, run.left_open) {
        (Some(error), _) => o.undated(error),
        (None, true) => format!(
            "{shown}: the ARCHIVE part ended inside a transaction block; psql would roll it back when it exits: end it \
             with COMMIT"
        ),
        (None, false) => format!("{} statements ran, one at a time", run.statements_run),
    };
    if run.detach_pending {
        detail.push_str(
            "\nA partition of events is left DETACH PENDING: a DETACH … CONCURRENTLY was cancelled in its second \
             step, waiting for the open batch. `ALTER TABLE events DETACH PARTITION … FINALIZE` completes it; a \
             lock_timeout longer than your longest reader's transaction lets it finish the first time.",
        );
    }
    checks.push(Check::new(
        "archive-runs",
        "the ARCHIVE part runs for the oldest month, statement by statement, as psql runs it",
        archive_runs,
        detail,
    ));

    let probe = &o.append_during_archive;
    let appends_ok = probe.committed && !probe.waited_on_lock;
    let detail = if appends_ok {
        if run.waited_on_lock {
            "the archive waited for the open batch; the append went through meanwhile".to_string()
        } else {
            "the append went through; the archive did not wait for the open batch".to_string()
        }
    } else if probe.waited_on_lock {
        format!(
            "the append queued behind the archive's lock until the batch subscription projection held open \
             committed{}. A plain DETACH PARTITION takes ACCESS EXCLUSIVE on events: it waits for every reader, and \
             every append and read waits for it. DETACH … CONCURRENTLY takes SHARE UPDATE EXCLUSIVE.",
            probe.error.as_ref().map(|e| format!(" (then: {e})")).unwrap_or_default()
        )
    } else {
        format!("the append failed: {}", probe.error.clone().unwrap_or_default())
    };
    checks.push(Check::new(
        "appends-during-archive",
        "an append while the archive waits for an open batch goes through without queueing",
        appends_ok,
        detail,
    ));

    let after = &o.oldest_after;
    let later_intact = o.later_months_rows == o.later_months_expected;
    let removed = !after.table_exists && after.rows_in_events == 0 && later_intact;
    let detail = if !later_intact {
        format!(
            "the later months hold {} events after the archive, not {}: it removed more than the oldest month",
            o.later_months_rows, o.later_months_expected
        )
    } else if after.attached && run.detach_pending {
        format!(
            "{} is still a partition of events, left DETACH PENDING (see archive-runs)",
            o.undated(&oldest.partition)
        )
    } else if after.attached && after.rows_in_events > 0 {
        format!(
            "the month is still in events ({} rows): the ARCHIVE part did not remove it (see archive-runs)",
            after.rows_in_events
        )
    } else if after.attached {
        format!(
            "{} is still a partition of events ({} kB, {} rows visible): DELETE leaves dead rows that hold the space \
             until VACUUM; DETACH the partition and DROP it",
            o.undated(&oldest.partition),
            after.bytes / 1024,
            after.rows_in_events
        )
    } else if after.table_exists {
        format!(
            "{} is detached but still stored ({} kB): DROP it once COPY has written it out",
            o.undated(&oldest.partition),
            after.bytes / 1024
        )
    } else if after.rows_in_events > 0 {
        format!("{} rows of that month are still in events", after.rows_in_events)
    } else {
        format!("its partition is gone; the later months keep their {} events", o.later_months_rows)
    };
    checks.push(Check::new(
        "month-removed",
        format!("the oldest month ({}) leaves events whole, and nothing else does", oldest.label()),
        removed,
        detail,
    ));

    let complete = o.archived_found == retention::HISTORY_PER_MONTH;
    let detail = if run.copies == 0 {
        "no COPY … TO STDOUT ran: nothing was archived before the month left".to_string()
    } else {
        format!(
            "COPY … TO STDOUT wrote {} lines holding {} of the month's {} events",
            run.copied_lines,
            o.archived_found,
            retention::HISTORY_PER_MONTH
        )
    };
    checks.push(Check::new(
        "archive-complete",
        "the archive (what COPY … TO STDOUT wrote) holds every event of the oldest month",
        complete,
        detail,
    ));

    let second_after = &o.second_after;
    let kept = second_after.attached && second_after.rows_in_events == retention::HISTORY_PER_MONTH as i64;
    let refused = o.lagging_archive.error.is_some();
    let (passed, detail) = if !archive_runs {
        (false, "not judged: the archive step must first run cleanly on a month every subscription has read (see archive-runs)".to_string())
    } else if refused && kept {
        (true, format!("refused: {}", o.undated(o.lagging_archive.error.as_deref().unwrap_or_default())))
    } else {
        (
            false,
            format!(
                "the archive ran on that month ({} of its {} events left in events) while subscriptions audit and \
                 projection had not read it to its end: they will never see the rest. Check every subscription's \
                 checkpoint first (the schema defines assert_read_by_every_subscription) and refuse.",
                second_after.rows_in_events,
                retention::HISTORY_PER_MONTH
            ),
        )
    };
    checks.push(Check::new(
        "lagging-subscription",
        format!("the next month ({}), which two subscriptions have not finished, is not archived", second.label()),
        passed,
        detail,
    ));

    let skipped: usize = o.tallies.iter().map(|t| t.missed + t.twice).sum();
    let detail = o
        .tallies
        .iter()
        .map(|t| {
            let mut line =
                format!("{}: {} delivered, {} missed, {} twice", t.subscription, t.delivered, t.missed, t.twice);
            if !t.missed_examples.is_empty() {
                line.push_str(&format!(" (missed e.g. {})", t.missed_examples.join(", ")));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n");
    checks.push(Check::new(
        "reader-no-skip",
        "every subscription reads every event once, across both archives",
        skipped == 0,
        detail,
    ));
    checks
}
