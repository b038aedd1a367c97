-- Joined on the event id: the orders whose position or transaction id the warehouse has seen.
-- A join on event id pairs each order with its OWN shipment, so it finds the survivors (which
-- match themselves) and never an order that took a lost order's values.
-- fails: survivors
SELECT (e.data->>'order')::int AS order_no, e.event_id, e.position, e.transaction_id
  FROM events AS e
  JOIN shipped AS s ON s.event_id = e.event_id
 WHERE s.position = e.position OR s.transaction_id = e.transaction_id
