//! Aggregate load against stream length, with and without a snapshot: where snapshots start to
//! pay.
//!
//! Without: `fold_account` (measure.sql) folds every event of the stream through the upcaster.
//! With: the reference solution's `load_account`, with a snapshot of the current state version
//! taken [`TAIL`] events behind the head, the average distance under a policy that snapshots
//! every [`POLICY_THRESHOLD`] events. Both must return the golden state; the events each folded
//! come from the fold's own counter, so they are exact; the times are this machine's.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::bank::{long_stream_id, Balance, Bank};
use crate::error::{ensure, LabError};

/// The reference policy: a load that folded this many events or more writes a snapshot.
pub const POLICY_THRESHOLD: usize = 100;
/// How far behind the head the measured snapshot is: half the threshold, the average tail.
pub const TAIL: usize = POLICY_THRESHOLD / 2;
/// Loads per measurement; the median is reported.
pub const LOADS: usize = 5;

/// One stream length's loads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadRow {
    pub stream_length: usize,
    pub folded_without: u64,
    pub median_ms_without: f64,
    /// None when the stream is shorter than the tail: the policy would hold no snapshot of it.
    pub folded_with: Option<u64>,
    pub median_ms_with: Option<f64>,
}

impl LoadRow {
    pub fn snapshot_pays(&self) -> bool {
        self.median_ms_with.is_some_and(|with| with < self.median_ms_without)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotReport {
    pub policy_threshold: usize,
    pub tail: usize,
    pub loads: usize,
    pub rows: Vec<LoadRow>,
    /// The shortest stream whose load was faster with the snapshot, in this run (timed: it may
    /// move by a row from run to run).
    pub pays_from: Option<usize>,
}

async fn folded(client: &Client) -> Result<u64, LabError> {
    let text: Option<String> = client
        .query_one("SELECT nullif(current_setting('replay_clock.folded', true), '')", &[])
        .await
        .map_err(LabError::db("reading the fold counter"))?
        .get(0);
    Ok(text.and_then(|t| t.parse().ok()).unwrap_or(0))
}

/// Runs `sql` (returning state, version) [`LOADS`] times; the median time, the events one load
/// folded, and the state it returned.
async fn time_loads(client: &Client, sql: &str, stream_id: &str) -> Result<(f64, u64, Balance), LabError> {
    let statement = client.prepare(sql).await.map_err(LabError::db(format!("preparing {sql}")))?;
    let mut times = Vec::new();
    let mut per_load = 0;
    let mut state = None;
    for _ in 0..LOADS {
        let before = folded(client).await?;
        let started = Instant::now();
        let row =
            client.query_one(&statement, &[&stream_id]).await.map_err(LabError::db(format!("loading {stream_id}")))?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        per_load = folded(client).await? - before;
        let value: serde_json::Value = row.get(0);
        state = Some(Balance {
            currency: value["currency"].as_str().unwrap_or("NULL").to_string(),
            balance_minor: value["balance_minor"].as_i64().unwrap_or(i64::MIN),
            version: row.get(1),
        });
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], per_load, state.expect("at least one load")))
}

pub async fn run(client: &Client, bank: &Bank, lengths: &[usize]) -> Result<SnapshotReport, LabError> {
    let mut rows = Vec::new();
    for &length in lengths {
        let stream_id = long_stream_id(length);
        let golden = bank.state_of(&stream_id, length, true).expect("the long stream is planned");
        let (median_ms_without, folded_without, state) =
            time_loads(client, "SELECT state, version FROM fold_account($1, NULL)", &stream_id).await?;
        ensure(state == golden, || format!("folding {stream_id} gave {state:?}, not the golden {golden:?}"))?;
        let (mut median_ms_with, mut folded_with) = (None, None);
        if length > TAIL {
            client
                .execute(
                    "WITH taken AS (SELECT state, version FROM fold_account($1, $2))
                     INSERT INTO account_snapshots (stream_id, schema_version, stream_version, state)
                     SELECT $1, account_state_version(), version, state FROM taken",
                    &[&stream_id, &((length - TAIL) as i64)],
                )
                .await
                .map_err(LabError::db(format!("taking a snapshot of {stream_id}")))?;
            let (ms, n, state) = time_loads(client, "SELECT state, version FROM load_account($1)", &stream_id).await?;
            ensure(state == golden, || {
                format!("loading {stream_id} from its snapshot gave {state:?}, not {golden:?}")
            })?;
            median_ms_with = Some(ms);
            folded_with = Some(n);
        }
        rows.push(LoadRow { stream_length: length, folded_without, median_ms_without, folded_with, median_ms_with });
    }
    let pays_from = rows.iter().find(|r| r.snapshot_pays()).map(|r| r.stream_length);
    Ok(SnapshotReport { policy_threshold: POLICY_THRESHOLD, tail: TAIL, loads: LOADS, rows, pays_from })
}
