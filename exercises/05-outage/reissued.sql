-- Exercise, activity 5 (Outage): which orders took a position or a transaction id that the
-- warehouse already saw on another order?
--
-- `labs check outage` stages two real recoveries. Orders come in with synchronous_commit = off
-- (some are declined and rolled back); a consumer ships each committed order to the warehouse;
-- the server crashes with its WAL writer frozen and recovers without the last orders. Then new
-- orders come, and recovery hands the lost orders' positions and transaction ids out again. The
-- check then runs this query, once per recovery, over two tables:
--
--   events   the store as it is now (each order is one OrderPlaced event):
--              position bigint, transaction_id xid8, event_id uuid, stream_id text,
--              version bigint, type text, data jsonb (the order's number: data->>'order'), ...
--   shipped  the warehouse's records: what the consumer read for each order it shipped
--            before the crash:
--              order_no int, event_id uuid, transaction_id xid8, position bigint
--
--   returns  order_no int, event_id uuid, position bigint, transaction_id xid8
--            (these four columns, in this order, the values the store has now): one row for
--            each order in the store whose position, or whose transaction id, a shipped order
--            with a different event id held. Every other order must not be returned.
--
-- As written it compares positions: the lab's report counts new orders whose position was
-- already shipped, so that is where most people start.
--
-- Your task: change the query until `labs check outage` passes. Save; run it again.
--
-- Hints, one at a time:
-- 1. Positions are not the only counter that recovery rewinds. The next transaction id comes
--    from the WAL that survived, so the lost transactions' ids are assigned again.
-- 2. An order that survived the crash holds its own position and transaction id, and so does
--    its shipment: that is not a reissue. The event id is the one identity that recovery
--    never reissues (the client made it).
-- 3. An order can take one lost order's position and another lost order's transaction id.
--    Return it once: ask whether such a shipment EXISTS instead of joining every match.
-- 4. "Behind the consumer's checkpoint" is not the same thing: a declined order took its
--    position and transaction id and rolled back, so no shipment holds them.

SELECT (e.data->>'order')::int AS order_no, e.event_id, e.position, e.transaction_id
  FROM events AS e
  JOIN shipped AS s ON s.position = e.position
 WHERE s.event_id <> e.event_id
