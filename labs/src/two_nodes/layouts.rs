//! Part A's comparison of the two ways to partition an events table: by month of recorded_at
//! (retention is a DETACH) and by hash of stream_id (one stream lives in one partition). The
//! numbers come from the planner itself: EXPLAIN's JSON, parsed, the partitions it would scan.

use serde::Serialize;
use tokio_postgres::Client;

use super::retention::verbatim;
use crate::error::LabError;

/// How many hash partitions the comparison table has.
pub const HASH_PARTITIONS: usize = 4;

/// One layout, as the planner sees it.
#[derive(Clone, Debug, Serialize)]
pub struct Layout {
    pub name: &'static str,
    pub table: &'static str,
    pub partitions: usize,
    /// Reading one stream (`WHERE stream_id = … ORDER BY version`): partitions scanned and the
    /// plan node that gathers them.
    pub read_stream_scans: usize,
    pub read_stream_plan: String,
    /// read_all_after's query: partitions scanned, and the gathering node.
    pub read_all_scans: usize,
    pub read_all_plan: String,
    /// `ADD UNIQUE (event_id)`: the server's answer.
    pub unique_event_id: String,
}

/// The store's one-stream read (store::read_stream), on `table`.
fn read_stream_sql(table: &str) -> String {
    format!(
        "SELECT transaction_id, position, event_id, stream_id, version, type, data, metadata
           FROM {table} WHERE stream_id = 'account-1' AND version >= 1 ORDER BY version LIMIT 100"
    )
}

/// The store's watermark read (store::read::READ_ALL_TYPED_SQL), from the start, on `table`.
fn read_all_sql(table: &str) -> String {
    format!(
        "SELECT e.transaction_id, e.position, e.event_id, e.stream_id, e.version, e.type, e.data, e.metadata
           FROM {table} e
          WHERE (e.transaction_id, e.position) > ('0'::xid8, 0)
            AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY e.transaction_id, e.position
          LIMIT 100"
    )
}

/// Builds the hash-partitioned copy of `events` beside it, then asks the planner about both.
/// Runs in the database the retention scenario used, after it.
pub async fn compare(client: &Client) -> Result<Vec<Layout>, LabError> {
    let mut ddl =
        String::from("CREATE TABLE events_by_stream (LIKE events INCLUDING DEFAULTS) PARTITION BY HASH (stream_id);\n");
    for remainder in 0..HASH_PARTITIONS {
        ddl.push_str(&format!(
            "CREATE TABLE events_by_stream_{remainder} PARTITION OF events_by_stream \
             FOR VALUES WITH (MODULUS {HASH_PARTITIONS}, REMAINDER {remainder});\n"
        ));
    }
    ddl.push_str(
        "ALTER TABLE events_by_stream ADD UNIQUE (stream_id, version);
         CREATE INDEX ON events_by_stream (transaction_id, position);
         INSERT INTO events_by_stream SELECT * FROM events;
         ANALYZE events_by_stream;
         ANALYZE events;",
    );
    client.batch_execute(&ddl).await.map_err(LabError::db("building the hash-partitioned copy"))?;
    let mut layouts = Vec::new();
    for (name, table) in
        [("by month (RANGE on recorded_at)", "events"), ("by stream (HASH on stream_id)", "events_by_stream")]
    {
        let partitions: Vec<String> = client
            .query("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = $1::text::regclass", &[&table])
            .await
            .map_err(LabError::db(format!("listing the partitions of {table}")))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let (read_stream_scans, read_stream_plan) = scans(client, &read_stream_sql(table), &partitions).await?;
        let (read_all_scans, read_all_plan) = scans(client, &read_all_sql(table), &partitions).await?;
        let unique_event_id = match client.batch_execute(&format!("ALTER TABLE {table} ADD UNIQUE (event_id)")).await {
            Ok(()) => "accepted".to_string(),
            Err(e) => format!("refused: {}", verbatim(&e)),
        };
        layouts.push(Layout {
            name,
            table,
            partitions: partitions.len(),
            read_stream_scans,
            read_stream_plan,
            read_all_scans,
            read_all_plan,
            unique_event_id,
        });
    }
    Ok(layouts)
}

/// EXPLAIN (FORMAT JSON) of `query`: how many of `partitions` its plan scans, and the node
/// under the LIMIT that gathers them.
async fn scans(client: &Client, query: &str, partitions: &[String]) -> Result<(usize, String), LabError> {
    let plan: serde_json::Value =
        client.query_one(&format!("EXPLAIN (FORMAT JSON) {query}"), &[]).await.map_err(LabError::db("EXPLAIN"))?.get(0);
    let root = &plan[0]["Plan"];
    let mut relations = Vec::new();
    collect_relations(root, &mut relations);
    relations.sort();
    relations.dedup();
    let scanned = relations.iter().filter(|r| partitions.contains(r)).count();
    let gathering = if root["Node Type"] == "Limit" { &root["Plans"][0] } else { root };
    Ok((scanned, gathering["Node Type"].as_str().unwrap_or("?").to_string()))
}

fn collect_relations(node: &serde_json::Value, out: &mut Vec<String>) {
    if let Some(name) = node["Relation Name"].as_str() {
        out.push(name.to_string());
    }
    if let Some(children) = node["Plans"].as_array() {
        for child in children {
            collect_relations(child, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_are_collected_from_every_level_of_a_plan() {
        let plan = serde_json::json!({
            "Node Type": "Limit",
            "Plans": [{ "Node Type": "Merge Append", "Plans": [
                { "Node Type": "Index Scan", "Relation Name": "events_2026_01" },
                { "Node Type": "Sort", "Plans": [{ "Node Type": "Seq Scan", "Relation Name": "events_2026_02" }] }
            ]}]
        });
        let mut out = Vec::new();
        collect_relations(&plan, &mut out);
        assert_eq!(out, vec!["events_2026_01", "events_2026_02"]);
    }
}
