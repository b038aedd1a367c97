-- The watermark and the pair, but the rows come in position order: the checkpoint (the last
-- row's pair) is then not the largest pair returned, and the next read returns rows again.
-- fails: late-consumer
SELECT position, transaction_id, event_id, stream_id, version, type
  FROM events
 WHERE (transaction_id, position) > ($1, $2)
   AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY position
 LIMIT 100
