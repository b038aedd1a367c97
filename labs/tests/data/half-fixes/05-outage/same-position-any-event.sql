-- The same position or transaction id as a shipment, without comparing event ids: a surviving
-- order matches its own shipment on both counters, so every survivor is flagged too.
-- fails: survivors
SELECT (e.data->>'order')::int AS order_no, e.event_id, e.position, e.transaction_id
  FROM events AS e
 WHERE EXISTS (SELECT 1 FROM shipped AS s
                WHERE s.position = e.position OR s.transaction_id = e.transaction_id)
