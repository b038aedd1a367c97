-- The reader's own transaction id as the watermark: pg_current_xact_id() gives the read a
-- new id each time, above every transaction still running, so nothing is held back.
-- fails: out-of-order-commit
SELECT position, transaction_id, event_id, stream_id, version, type
  FROM events
 WHERE (transaction_id, position) > ($1, $2)
   AND transaction_id < pg_current_xact_id()
 ORDER BY transaction_id, position
 LIMIT 100
