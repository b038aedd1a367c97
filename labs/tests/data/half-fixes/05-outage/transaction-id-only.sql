-- Transaction ids only: the orders that took a lost transaction's id. The identity's sequence
-- restarts from what the surviving WAL logged too; an order whose transaction id is fresh (other
-- traffic used up the lost ones first) but whose position a lost order had is missed.
-- fails: position-reissued
SELECT (e.data->>'order')::int AS order_no, e.event_id, e.position, e.transaction_id
  FROM events AS e
 WHERE EXISTS (SELECT 1 FROM shipped AS s
                WHERE s.transaction_id = e.transaction_id AND s.event_id <> e.event_id)
