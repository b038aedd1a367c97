-- Exercise, activity 7 (Outbox Relay): a consumer that applies every event exactly once.
--
-- A relay reads the outbox and hands each event to the consumers: every relay does so at least
-- once (a relay that restarts before confirming hands the same event on again). You write the
-- consumer's worker: one call of process_next takes one delivery, applies it and records that
-- it is done.
--
-- `labs check outbox-relay` loads the reference store, the outbox and the consumer's tables
-- below, then this file, and calls the procedure the way a worker loop would, in autocommit:
--     CALL process_next('warehouse', 0, 2, NULL);   -- consumer, this worker, workers in all
-- again and again, until it returns outcome 'idle'. A call that raises an error is logged and
-- the worker calls again.
--
-- What you have (the chapter shows the tables; in a checkout: labs/src/outbox_relay/consumer.sql):
--   deliveries (delivery_id, consumer, event_id, stream_id, version, type, data, acked)
--       what the relay handed to each consumer, in arrival order; the same event_id can arrive
--       twice. acked is the consumer's checkpoint: true once it is done with the delivery.
--   apply_order_event(consumer, delivery deliveries)
--       the effect: OrderPlaced reserves data.qty of data.sku, OrderCancelled releases them.
--       Not idempotent: applied twice, it reserves twice. Raises (SQLSTATE 22023) for an event
--       it cannot apply (an unknown sku, a qty that is not a whole number).
--   inbox (consumer, event_id)                    primary key (consumer, event_id)
--   failures (consumer, event_id, attempts, last_error)
--   dead_letters (consumer, event_id, stream_id, version, type, data, error)
--   parked_streams (consumer, stream_id, dead_letter)
--   stream_partition(stream_id, partitions) -> 0 .. partitions - 1
--
-- The rules the check holds the consumer to:
--   1. Every event is applied exactly once per consumer, even when it is delivered twice and
--      even when the worker crashes at any of its commits.
--   2. An event that fails is tried again. After 3 failed attempts it goes to dead_letters, and
--      the rest of THAT stream parks (stays pending, unapplied) while other streams go on.
--   3. Two workers never apply one stream's events out of order, and neither waits for the other.
--
-- outcome: 'idle' when there was nothing to take; otherwise a word for what the call did
-- ('applied', 'duplicate', 'failed', 'dead-lettered', ...): the check only reads 'idle'.
--
-- As written it looks like a textbook worker and passes a test that delivers each event once
-- to one worker. The check breaks it four ways; read why each time.
--
-- Your task: change it until `labs check outbox-relay` passes. Save; run the check again.
--
-- Hints, one at a time:
-- 1. A COMMIT between the effect and the acknowledgement is a window: a crash there applies
--    the event again when it comes back. What must commit together?
-- 2. The relay will hand an event on twice whatever you do. Where does the consumer remember,
--    in the same transaction as the effect, that it has applied an event?
-- 3. An error in apply_order_event aborts everything the call wrote, including a failure count
--    written beside it. A BEGIN ... EXCEPTION block undoes only what is inside it.
-- 4. FOR UPDATE SKIP LOCKED hands the next row to the second worker, even the next event of the
--    stream the first worker is still applying. Who owns a stream?

CREATE OR REPLACE PROCEDURE process_next(
    p_consumer text,                    -- whose deliveries: 'warehouse', 'analytics'
    p_worker   integer,                 -- this worker: 0 .. p_workers - 1
    p_workers  integer,                 -- how many workers this consumer runs
    INOUT outcome text DEFAULT NULL     -- what this call did; 'idle': nothing to take
)
LANGUAGE plpgsql AS $$
DECLARE
    d deliveries;
BEGIN
    -- Take the oldest delivery no other worker is busy with.
    SELECT * INTO d
      FROM deliveries
     WHERE consumer = p_consumer AND NOT acked
     ORDER BY delivery_id
     LIMIT 1
       FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        outcome := 'idle';
        RETURN;
    END IF;

    -- The effect, saved.
    PERFORM apply_order_event(p_consumer, d);
    COMMIT;

    -- Then the checkpoint: this delivery is done.
    UPDATE deliveries SET acked = true WHERE delivery_id = d.delivery_id;
    COMMIT;
    outcome := 'applied';
END
$$;
