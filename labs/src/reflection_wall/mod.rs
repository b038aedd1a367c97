//! Activity 6, PostgreSQL & Me: Reflection Wall. Each participant posts one pain and one change
//! for next sprint; `labs run reflection-wall` prints the menu of changes, each tied to the lab
//! that showed why, so a sticky can point at evidence rather than opinion.
//!
//! Only labs that exist are cited: an item names the activity and the command that shows it.

use std::fmt;

use serde::Serialize;

use crate::error::LabError;
use crate::lab::{Ctx, Lab, Report};
use crate::pg::Capability;

/// `labs run reflection-wall`: the menu, without a server.
pub struct ReflectionWall;

/// `labs run reflection-wall` takes no flags of its own.
#[derive(clap::Args)]
pub struct RunArgs {}

/// The prompt and the menu: JSON for a board, text for people.
#[derive(Serialize)]
pub struct Menu {
    pub prompt: &'static str,
    pub menu: &'static [Change],
}

impl fmt::Display for Menu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&menu_text())
    }
}

impl Report for Menu {}

impl Lab for ReflectionWall {
    const ID: &'static str = "reflection-wall";
    const NEEDS: &'static [Capability] = &[];
    type Args = RunArgs;
    type Report = Menu;

    async fn run(&self, _: RunArgs, _: &Ctx) -> Result<Menu, LabError> {
        Ok(Menu { prompt: PROMPT, menu: MENU })
    }
}

/// One change a team can make next sprint.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// Short id for a board or a vote: `watermark-reads`.
    pub id: &'static str,
    /// The change, as a sticky would say it.
    pub change: &'static str,
    /// The pain it removes, in the words the labs use.
    pub pain: &'static str,
    /// The activity whose lab shows it.
    pub activity: &'static str,
    /// The command that shows it.
    pub evidence: &'static str,
    /// What to check in your own system first.
    pub first_step: &'static str,
}

/// The menu, grouped by the activity that showed each change, in course order.
pub const MENU: &[Change] = &[
    Change {
        id: "watermark-reads",
        change: "Read all events behind the xid8 watermark, with (transaction_id, position) as the checkpoint",
        pain: "a consumer that skips an event committed out of order, for ever",
        activity: "log-sleuth",
        evidence: "cargo labs run log-sleuth",
        first_step: "grep the consumers for `id > last_seen` or `position > checkpoint` over a sequence",
    },
    Change {
        id: "idempotent-consumers",
        change: "Give every event a client-chosen unique id and make consumers ignore one they have applied",
        pain: "a retried append or a redelivery counted twice",
        activity: "log-sleuth",
        evidence: "cargo labs sleuth audit fixtures/01-log-sleuth/incident-1.jsonl",
        first_step: "check that the events table has a UNIQUE constraint on the event id",
    },
    Change {
        id: "expected-version",
        change: "Append with the expected version the decision was made on; on a conflict, reload and decide again",
        pain: "two writers deciding on the same state, one overdraft",
        activity: "schema-sketch",
        evidence: "cargo labs check schema-sketch --solution",
        first_step: "find command handlers that append with 'any' after reading state",
    },
    Change {
        id: "loud-conflicts",
        change: "Make a version conflict a typed error; remove ON CONFLICT DO NOTHING from version inserts",
        pain: "appends acknowledged and silently lost",
        activity: "schema-sketch",
        evidence: "cargo labs schema verify fixtures/03-schema-sketch/flawed-silent-conflict.sql",
        first_step: "grep the append path for ON CONFLICT",
    },
    Change {
        id: "idempotent-retries",
        change: "Make a resent append return its original result instead of an error or a second copy",
        pain: "a client that lost the acknowledgement cannot tell whether its append happened",
        activity: "schema-sketch",
        evidence: "cargo labs schema verify fixtures/03-schema-sketch/flawed-no-idempotency.sql",
        first_step: "send the same append twice in a test and count the rows",
    },
    Change {
        id: "checkpoint-with-projection",
        change: "Store each projection's checkpoint in the same transaction as the projection's writes",
        pain: "a crash between applying a batch and saving the checkpoint: applied twice, or lost",
        activity: "schema-sketch",
        evidence: "cargo test -p labs --test store racing_writers",
        first_step: "find where each consumer saves its checkpoint, and in which transaction",
    },
    Change {
        id: "idle-transaction-timeout",
        change: "Set idle_in_transaction_session_timeout for application roles and alert on the oldest open writing transaction",
        pain: "one forgotten transaction anywhere in the cluster stalls every watermark reader",
        activity: "schema-sketch",
        evidence: "cargo labs bench store --only read-watermark (its last lines)",
        first_step: "SELECT max(now() - xact_start) FROM pg_stat_activity WHERE backend_xid IS NOT NULL",
    },
    Change {
        id: "batch-appends",
        change: "Batch appends: many events per transaction, COPY for bulk ingestion",
        pain: "throughput capped by one WAL flush per event",
        activity: "wal-race",
        evidence: "cargo labs run wal-race --quick",
        first_step: "count commits per second against events per second on the ingestion path",
    },
    Change {
        id: "synchronous-commit-per-transaction",
        change: "Decide synchronous_commit per transaction (SET LOCAL), never server-wide, and write down what may be lost",
        pain: "a fast path that loses acknowledged events in a crash, chosen by accident",
        activity: "wal-race",
        evidence: "cargo labs run wal-race --strategies row-per-tx,row-per-tx-async",
        first_step: "SHOW synchronous_commit on every role and database",
    },
    Change {
        id: "no-global-counter",
        change: "Drop gapless counters and store-wide append locks from the write path",
        pain: "every writer queueing for one row or one lock",
        activity: "wal-race",
        evidence: "cargo labs run wal-race --strategies global-counter,advisory-lock,row-per-tx",
        first_step: "look for a single-row UPDATE or a constant advisory lock key in the append path",
    },
    Change {
        id: "index-budget",
        change: "Keep the events table to the indexes its reads need; build the rest in projections",
        pain: "WAL and CPU per event inflated by indexes nobody reads on the hot table",
        activity: "wal-race",
        evidence: "cargo labs run wal-race --strategies multi-row,extra-indexes",
        first_step: "pg_stat_user_indexes: indexes on the events table with idx_scan = 0",
    },
    Change {
        id: "table-not-notify",
        change: "Treat LISTEN/NOTIFY as a wake-up hint only; consumers catch up by reading the events table",
        pain: "events missed for good by a listener that was disconnected",
        activity: "mythbusting",
        evidence: "cargo labs run mythbusting --myth notify-durable-queue",
        first_step: "find consumers whose only input is a NOTIFY payload",
    },
    Change {
        id: "know-your-failover-loss",
        change: "Write down what a failover may lose: async standby lag, or the commit wait of a synchronous one; alert on replay lag",
        pain: "acknowledged commits missing on the promoted standby, and a second history on the old primary",
        activity: "mythbusting",
        evidence: "cargo labs run mythbusting --myth replication-no-loss",
        first_step: "SHOW synchronous_standby_names; SELECT application_name, sync_state, replay_lag FROM pg_stat_replication",
    },
    Change {
        id: "reconcile-after-recovery",
        change: "After any crash with async commit, failover or restore, move consumer checkpoints back and reconcile downstream by event id before writes reopen",
        pain: "orders shipped for events that no longer exist, and new events a consumer skips behind its old checkpoint",
        activity: "outage",
        evidence: "cargo labs run outage --scenario async-failover",
        first_step: "list every consumer whose checkpoint lives outside the database it reads",
    },
    Change {
        id: "rehearse-restore",
        change: "Archive WAL continuously (archive_timeout or pg_receivewal) and rehearse a restore from base backup plus archive",
        pain: "synchronously committed events gone with the disk, because their WAL was never archived",
        activity: "outage",
        evidence: "cargo labs run outage --scenario unarchived-wal",
        first_step: "SELECT last_archived_wal, last_archived_time, failed_count FROM pg_stat_archiver",
    },
    Change {
        id: "watch-every-slot",
        change: "Alert on every replication slot (wal_status, WAL held back, safe_wal_size), cap them with max_slot_wal_keep_size, drop the ones nobody reads",
        pain: "a slot nobody reads keeps WAL until the disk fills, or, capped, is lost and its consumer must start again from a copy",
        activity: "outbox-relay",
        evidence: "cargo labs run outbox-relay",
        first_step: "SELECT slot_name, active, wal_status, safe_wal_size, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) FROM pg_replication_slots",
    },
    Change {
        id: "consumer-inbox",
        change: "Record every applied event in an inbox keyed by (consumer, event_id), in the transaction of the effect and the checkpoint",
        pain: "an event a relay hands on twice, or a worker that crashed between its commits, applied twice",
        activity: "outbox-relay",
        evidence: "cargo labs check outbox-relay --solution",
        first_step: "find consumers whose effect and acknowledgement commit in separate transactions, or that keep no record of applied events",
    },
    Change {
        id: "park-poison-streams",
        change: "Give a failing event a few attempts, then a dead letter, and park the rest of its stream while the other streams go on",
        pain: "one malformed event stops every consumer, or is skipped and its stream's next event applied on a state that misses it",
        activity: "outbox-relay",
        evidence: "cargo labs check outbox-relay --solution",
        first_step: "find what each consumer does with an event that fails every time: retry for ever, skip it, or stop",
    },
    Change {
        id: "one-owner-per-stream",
        change: "Split competing consumers by stream hash, one worker per partition; keep SKIP LOCKED for work whose order does not matter",
        pain: "two workers apply one stream's events out of order",
        activity: "outbox-relay",
        evidence: "cargo labs check outbox-relay --solution",
        first_step: "grep the consumers for SKIP LOCKED and check whether the rows they claim belong to ordered streams",
    },
    Change {
        id: "rebuild-beside",
        change: "Rebuild a read model beside the live one, then switch the names in one transaction",
        pain: "a read model found empty or half-built while its projection replays from zero",
        activity: "replay-clock",
        evidence: "cargo labs run replay-clock",
        first_step: "find the runbook step that truncates a projection's table or resets its checkpoint",
    },
    Change {
        id: "batch-replays",
        change: "Replay in batches or in set-based SQL, never one transaction and checkpoint per event",
        pain: "a rebuild that takes hours because every event waits for its own commit",
        activity: "replay-clock",
        evidence: "cargo labs run replay-clock",
        first_step: "time a rebuild of your largest projection and count the commits it makes",
    },
    Change {
        id: "upcast-never-update",
        change: "Read old event shapes through one upcaster shared by projections and aggregate loads; never UPDATE events",
        pain: "history rewritten by a migration, or amounts rounded and currencies dropped on the way to the new shape",
        activity: "replay-clock",
        evidence: "cargo labs check replay-clock --solution",
        first_step: "grep the migrations for UPDATE or DELETE on the events table",
    },
    Change {
        id: "versioned-snapshots",
        change: "Key snapshots by stream and by the version of the code that computed them; snapshot long streams only",
        pain: "a stale balance served from a snapshot taken before the fold changed",
        activity: "replay-clock",
        evidence: "cargo labs check replay-clock --solution",
        first_step: "SELECT stream_id, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC LIMIT 10",
    },
];

/// The sticky prompt, exactly as the chapter and the wall use it.
pub const PROMPT: &str =
    "What's one event sourcing pain I've hit with PostgreSQL, and what change will I try next sprint?";

/// The menu as text, one block per activity.
pub fn menu_text() -> String {
    let mut out = format!("{PROMPT}\n\nA menu of next-sprint changes, each shown by a lab:\n");
    let mut current = "";
    for c in MENU {
        if c.activity != current {
            current = c.activity;
            out += &format!("\n{current}\n");
        }
        out += &format!("  {}: {}\n", c.id, c.change);
        out += &format!("      pain: {}\n", c.pain);
        out += &format!("      shown by: {}\n", c.evidence);
        out += &format!("      first step: {}\n", c.first_step);
    }
    out
}
