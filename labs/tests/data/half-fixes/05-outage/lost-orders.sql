-- The reconciliation query instead: the shipped orders the store no longer has. Those are the
-- lost orders (re-append them from the warehouse's records); the task is the orders IN the store
-- that now hold their positions and transaction ids.
-- fails: one-row-per-order
SELECT s.order_no, s.event_id, s.position, s.transaction_id
  FROM shipped AS s
 WHERE NOT EXISTS (SELECT 1 FROM events AS e WHERE e.event_id = s.event_id)
