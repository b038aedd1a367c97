-- Unshipped orders at or behind the consumer's checkpoint, on either counter: the runbook's
-- "is the checkpoint past the end?" turned into a list. Declined orders took positions and
-- transaction ids behind the checkpoint and rolled back; no shipment holds those, so an order
-- that takes one again collides with nothing, and this query returns it.
-- fails: not-reissued
SELECT (e.data->>'order')::int AS order_no, e.event_id, e.position, e.transaction_id
  FROM events AS e
 WHERE NOT EXISTS (SELECT 1 FROM shipped AS s WHERE s.event_id = e.event_id)
   AND (e.position <= (SELECT max(position) FROM shipped)
        OR e.transaction_id <= (SELECT max(transaction_id) FROM shipped))
