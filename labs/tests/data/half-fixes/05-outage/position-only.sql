-- Positions only: the orders that took a lost order's position. Recovery also assigns the lost
-- transactions' ids again; an order whose position is fresh but whose transaction id a lost
-- order had is missed.
-- fails: transaction-id-reissued
SELECT (e.data->>'order')::int AS order_no, e.event_id, e.position, e.transaction_id
  FROM events AS e
 WHERE EXISTS (SELECT 1 FROM shipped AS s WHERE s.position = e.position AND s.event_id <> e.event_id)
