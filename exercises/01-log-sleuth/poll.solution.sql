-- The reference solution to poll.sql (facilitators; not in the attendee bundle).
--
-- - transaction_id < pg_snapshot_xmin(pg_current_snapshot()): every transaction below the oldest
--   one still running has committed or aborted, so no event below the watermark can still
--   appear. Watermark and rows come from one statement, hence one snapshot.
-- - (transaction_id, position) > ($1, $2) with ORDER BY transaction_id, position: the checkpoint
--   is the pair, because positions are not in transaction-id order. A transaction with a
--   smaller id can hold a larger position than one with a larger id.
--
-- The price: the consumer waits for the oldest open writing transaction in the whole cluster.

SELECT position, transaction_id, event_id, stream_id, version, type
  FROM events
 WHERE (transaction_id, position) > ($1, $2)
   AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY transaction_id, position
 LIMIT 100
