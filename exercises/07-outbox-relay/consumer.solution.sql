-- Reference solution, activity 7 (Outbox Relay): the consumer. Left out of the attendee bundle.
--
-- One call is one transaction (no COMMIT inside): the inbox row, the effect and the
-- acknowledgement commit together or not at all, so a crash at the commit leaves the delivery
-- pending and untouched, and its redelivery finds no inbox row. A delivery whose event is in the
-- inbox is only acknowledged. A failed effect is undone by its block's savepoint while the
-- failure count, outside the block, commits; the 3rd failure dead-letters the event and parks
-- its stream. Each stream has one owner, the worker of its partition, which takes its streams'
-- deliveries in arrival order: one worker held on a stream's v1 holds only that partition.

CREATE OR REPLACE PROCEDURE process_next(
    p_consumer text,
    p_worker   integer,
    p_workers  integer,
    INOUT outcome text DEFAULT NULL
)
LANGUAGE plpgsql AS $$
DECLARE
    d        deliveries;
    attempts integer;
    error    text;
BEGIN
    -- This worker's streams only, oldest delivery first, none of a parked stream.
    SELECT * INTO d
      FROM deliveries AS pending
     WHERE pending.consumer = p_consumer AND NOT pending.acked
       AND stream_partition(pending.stream_id, p_workers) = p_worker
       AND NOT EXISTS (SELECT FROM parked_streams p
                        WHERE p.consumer = p_consumer AND p.stream_id = pending.stream_id)
     ORDER BY pending.delivery_id
     LIMIT 1;
    IF NOT FOUND THEN
        outcome := 'idle';
        RETURN;
    END IF;

    -- Applied before (a redelivery): only the checkpoint moves.
    IF EXISTS (SELECT FROM inbox i WHERE i.consumer = p_consumer AND i.event_id = d.event_id) THEN
        UPDATE deliveries SET acked = true WHERE delivery_id = d.delivery_id;
        outcome := 'duplicate';
        RETURN;
    END IF;

    BEGIN
        PERFORM apply_order_event(p_consumer, d);
        INSERT INTO inbox (consumer, event_id) VALUES (p_consumer, d.event_id);
    EXCEPTION WHEN OTHERS THEN
        -- The block's savepoint has undone the effect; what follows commits.
        GET STACKED DIAGNOSTICS error = MESSAGE_TEXT;
        INSERT INTO failures AS f (consumer, event_id, attempts, last_error)
             VALUES (p_consumer, d.event_id, 1, error)
        ON CONFLICT (consumer, event_id)
             DO UPDATE SET attempts = f.attempts + 1, last_error = excluded.last_error
          RETURNING f.attempts INTO attempts;
        IF attempts < 3 THEN
            outcome := 'failed';
            RETURN;
        END IF;
        INSERT INTO dead_letters (consumer, event_id, stream_id, version, type, data, error)
             VALUES (p_consumer, d.event_id, d.stream_id, d.version, d.type, d.data, error);
        INSERT INTO parked_streams (consumer, stream_id, dead_letter)
             VALUES (p_consumer, d.stream_id, d.event_id)
        ON CONFLICT DO NOTHING;
        UPDATE deliveries SET acked = true WHERE delivery_id = d.delivery_id;
        outcome := 'dead-lettered';
        RETURN;
    END;

    UPDATE deliveries SET acked = true WHERE delivery_id = d.delivery_id;
    outcome := 'applied';
END
$$;
