-- Every order the warehouse has not shipped: all the orders placed since the crash. Those placed
-- once both counters were past every shipped value collide with nothing.
-- fails: not-reissued
SELECT (e.data->>'order')::int AS order_no, e.event_id, e.position, e.transaction_id
  FROM events AS e
 WHERE NOT EXISTS (SELECT 1 FROM shipped AS s WHERE s.event_id = e.event_id)
