-- The pair checkpoint, but no watermark: a transaction that commits late with a smaller id
-- sorts before rows already read.
-- fails: out-of-order-commit
SELECT position, transaction_id, event_id, stream_id, version, type
  FROM events
 WHERE (transaction_id, position) > ($1, $2)
 ORDER BY transaction_id, position
 LIMIT 100
