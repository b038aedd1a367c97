-- Half-fix: the attempt is counted inside the block, before the effect. When the effect raises, the
-- block's savepoint undoes the count with it: the event is never given up on, and its
-- partition waits behind it for ever.
-- fails: poison-event

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
        -- Count this attempt; the effect follows.
        INSERT INTO failures AS f (consumer, event_id, attempts)
             VALUES (p_consumer, d.event_id, 1)
        ON CONFLICT (consumer, event_id) DO UPDATE SET attempts = f.attempts + 1
          RETURNING f.attempts INTO attempts;
        PERFORM apply_order_event(p_consumer, d);
        INSERT INTO inbox (consumer, event_id) VALUES (p_consumer, d.event_id);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS error = MESSAGE_TEXT;
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
