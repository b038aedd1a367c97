-- Behind the watermark, but the checkpoint is still the position alone, and rows come in
-- position order. An older transaction's events on both sides of a younger one's are read
-- first; the younger one's smaller position then lies behind the checkpoint for ever.
-- fails: interleaved-transactions
SELECT position, transaction_id, event_id, stream_id, version, type
  FROM events
 WHERE position > $2
   AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY position
 LIMIT 100
