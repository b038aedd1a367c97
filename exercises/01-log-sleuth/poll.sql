-- Exercise, activity 1 (Log Sleuth): a consumer that never skips an event.
--
-- This file is the consumer's read. `labs check log-sleuth` runs it again and again while
-- writers append to the `events` table; after each read the consumer hands the rows to its
-- projection and moves its checkpoint to the LAST row returned: that row's transaction_id ($1)
-- and position ($2).
--
--   $1  xid8    the checkpoint's transaction id (0 before the first event)
--   $2  bigint  the checkpoint's position (0 before the first event)
--   returns     position, transaction_id, event_id, stream_id, version, type
--               (these six columns, in this order), at most 100 rows
--
-- As written it trusts the global position. `position` comes from an identity column: it is
-- taken when a row is INSERTed, not when its transaction COMMITs. A writer that takes position
-- 7 and commits after the writer that took position 8 makes 7 appear behind a checkpoint that
-- has already moved past it, and this consumer never sees it.
--
-- Your task: change the query until `labs check log-sleuth` passes. Save; run it again.
--
-- Hints, one at a time:
-- 1. Every row knows the transaction that wrote it: `transaction_id` (xid8, filled by
--    pg_current_xact_id()). pg_snapshot_xmin(pg_current_snapshot()) is the oldest transaction
--    still running: no transaction below it can commit anything new.
-- 2. Reading only below that watermark is not enough while the checkpoint is a position alone:
--    a transaction can hold an OLDER id than rows you have already read and a SMALLER position.
--    Order by, and resume after, the pair (transaction_id, position): a row comparison,
--    (a, b) > ($1, $2), does it in one condition.
-- 3. The table: events(position bigint, transaction_id xid8, event_id uuid, stream_id text,
--    version bigint, type text, data jsonb, recorded_at timestamptz).

SELECT position, transaction_id, event_id, stream_id, version, type
  FROM events
 WHERE position > $2
 ORDER BY position
 LIMIT 100
