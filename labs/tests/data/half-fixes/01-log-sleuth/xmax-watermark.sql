-- pg_snapshot_xmax instead of xmin: xmax is one past the highest completed transaction id, so
-- transactions still running below it pass the filter, and commit later behind the checkpoint.
-- fails: out-of-order-commit
SELECT position, transaction_id, event_id, stream_id, version, type
  FROM events
 WHERE (transaction_id, position) > ($1, $2)
   AND transaction_id < pg_snapshot_xmax(pg_current_snapshot())
 ORDER BY transaction_id, position
 LIMIT 100
