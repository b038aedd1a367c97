-- Right condition, but as a join: an order that took one lost order's position and ANOTHER lost
-- order's transaction id matches two shipments, and comes back twice.
-- fails: one-row-per-order
SELECT (e.data->>'order')::int AS order_no, e.event_id, e.position, e.transaction_id
  FROM events AS e
  JOIN shipped AS s ON (s.position = e.position OR s.transaction_id = e.transaction_id)
                   AND s.event_id <> e.event_id
