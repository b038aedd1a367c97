-- Half-fix: exactly once and stream owners, but no poison policy: the effect's error leaves the call. The
-- oldest delivery of the partition fails on every call, and every stream behind it waits for ever.
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

    PERFORM apply_order_event(p_consumer, d);
    INSERT INTO inbox (consumer, event_id) VALUES (p_consumer, d.event_id);

    UPDATE deliveries SET acked = true WHERE delivery_id = d.delivery_id;
    outcome := 'applied';
END
$$;
