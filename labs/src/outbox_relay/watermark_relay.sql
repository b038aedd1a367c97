-- The watermark relay's read: the next outbox rows after its cursor ($1 transaction id, $2 id),
-- only of transactions older than every transaction still in progress, in the order no later
-- commit can come before. The watermark and the rows come from one statement: one snapshot.
SELECT id, event_id, aggregate_id, aggregate_version, type, payload, transaction_id
  FROM outbox
 WHERE (transaction_id, id) > ($1, $2)
   AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY transaction_id, id
 LIMIT 100
