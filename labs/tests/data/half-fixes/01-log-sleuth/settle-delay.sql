-- Wait for events to "settle": only rows older than 200 ms. Any transaction that stays open
-- longer than that still commits behind the checkpoint; the check sees the events come late.
-- fails: out-of-order-commit
SELECT position, transaction_id, event_id, stream_id, version, type
  FROM events
 WHERE position > $2
   AND recorded_at < clock_timestamp() - interval '200 milliseconds'
 ORDER BY position
 LIMIT 100
