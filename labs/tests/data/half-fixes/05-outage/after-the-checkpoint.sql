-- Everything after the consumer's checkpoint (the last shipment's transaction id and position),
-- as the consumer itself would read. The orders that took lost transaction ids sort BEFORE that
-- checkpoint: they are exactly the ones the consumer skips, and this query misses them too (and
-- returns fresh orders that collide with nothing).
-- fails: both-reissued
SELECT (e.data->>'order')::int AS order_no, e.event_id, e.position, e.transaction_id
  FROM events AS e
 WHERE (e.transaction_id, e.position) > (SELECT s.transaction_id, s.position
                                           FROM shipped AS s
                                          ORDER BY s.transaction_id DESC, s.position DESC
                                          LIMIT 1)
