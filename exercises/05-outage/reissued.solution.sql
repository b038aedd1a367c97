-- The reference solution to reissued.sql (facilitators; not in the attendee bundle).
--
-- - Both counters: after recovery the sequence behind the identity column and the transaction id
--   counter both restart from what the surviving WAL says, so either can be handed out again.
-- - A different event id: a surviving order matches its own shipment on both counters. The event
--   id is made by the client, so recovery cannot hand it to another order.
-- - EXISTS, not a join: an order can hold one lost order's position and another's transaction
--   id; a join would return it twice.
-- - Equality with a shipment, not "at or behind the checkpoint": positions and ids that a
--   rolled-back order took were never shipped, so reusing them collides with nothing downstream.

SELECT (e.data->>'order')::int AS order_no, e.event_id, e.position, e.transaction_id
  FROM events AS e
 WHERE EXISTS (SELECT 1
                 FROM shipped AS s
                WHERE (s.position = e.position OR s.transaction_id = e.transaction_id)
                  AND s.event_id <> e.event_id)
 ORDER BY e.position
