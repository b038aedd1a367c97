-- The consumer's side of the outbox, as `labs check outbox-relay` sets it up before it loads the
-- attendee's exercises/07-outbox-relay/consumer.sql. The exercise's header documents every
-- table and function here: keep the two in step.

-- ANCHOR: deliveries
-- What the relay handed to each consumer, in arrival order. At least once: a relay that restarts
-- before confirming hands the same event on again, as a new delivery with the same event_id.
CREATE TABLE deliveries (
    delivery_id bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer    text    NOT NULL,
    event_id    uuid    NOT NULL,
    stream_id   text    NOT NULL,
    version     bigint  NOT NULL,
    type        text    NOT NULL,
    data        jsonb   NOT NULL,
    -- The consumer's checkpoint: true once it is done with this delivery.
    acked       boolean NOT NULL DEFAULT false
);
CREATE INDEX deliveries_pending ON deliveries (consumer, delivery_id) WHERE NOT acked;
-- ANCHOR_END: deliveries

-- ANCHOR: bookkeeping
-- The inbox: one row per event a consumer has applied.
CREATE TABLE inbox (
    consumer   text        NOT NULL,
    event_id   uuid        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (consumer, event_id)
);

-- Failed attempts to apply an event.
CREATE TABLE failures (
    consumer   text    NOT NULL,
    event_id   uuid    NOT NULL,
    attempts   integer NOT NULL,
    last_error text,
    PRIMARY KEY (consumer, event_id)
);

-- Events given up on after the last attempt, kept whole so they can be fixed and replayed.
CREATE TABLE dead_letters (
    consumer  text   NOT NULL,
    event_id  uuid   NOT NULL,
    stream_id text   NOT NULL,
    version   bigint NOT NULL,
    type      text   NOT NULL,
    data      jsonb  NOT NULL,
    error     text,
    PRIMARY KEY (consumer, event_id)
);

-- Streams whose event was dead-lettered: the rest of each waits until someone fixes it.
CREATE TABLE parked_streams (
    consumer    text NOT NULL,
    stream_id   text NOT NULL,
    dead_letter uuid NOT NULL,
    PRIMARY KEY (consumer, stream_id)
);
-- ANCHOR_END: bookkeeping

-- The effect: stock each consumer has reserved, per sku. An increment, so applying an event
-- twice shows.
CREATE TABLE catalog (sku text PRIMARY KEY);
CREATE TABLE stock (
    consumer text    NOT NULL,
    sku      text    NOT NULL,
    reserved integer NOT NULL,
    PRIMARY KEY (consumer, sku)
);
-- Every application of an event, in order: what the check reads to count and to order them.
CREATE SEQUENCE effect_order;
CREATE TABLE effect_log (
    applied   bigint NOT NULL DEFAULT nextval('effect_order'),
    consumer  text   NOT NULL,
    event_id  uuid   NOT NULL,
    stream_id text   NOT NULL,
    version   bigint NOT NULL,
    type      text   NOT NULL
);
-- Failed applications, counted outside any transaction (a sequence is not rolled back), so the
-- check sees attempts whose transaction rolled back.
CREATE SEQUENCE failed_applications;

-- The key of the check's scripted delay for one event.
CREATE FUNCTION delay_key(p_event_id uuid) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT hashtextextended('delay:' || p_event_id::text, 0) $$;

-- ANCHOR: apply
-- apply_order_event(consumer, delivery): the consumer's effect. OrderPlaced reserves data.qty
-- units of data.sku, OrderCancelled releases them. Raises (SQLSTATE 22023) for an event it
-- cannot apply: an unknown sku, a qty that is not a whole number.
CREATE FUNCTION apply_order_event(p_consumer text, p_delivery deliveries) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_sku text := p_delivery.data ->> 'sku';
    v_qty integer;
BEGIN
    -- The check's scripted delay: waits while the check holds this event's lock.
    PERFORM pg_advisory_xact_lock_shared(delay_key(p_delivery.event_id));
    IF jsonb_typeof(p_delivery.data -> 'qty') IS DISTINCT FROM 'number'
       OR (p_delivery.data ->> 'qty') !~ '^[0-9]+$' THEN
        PERFORM nextval('failed_applications');
        RAISE EXCEPTION '% v% %: qty is %, not a whole number', p_delivery.stream_id, p_delivery.version,
            p_delivery.type, coalesce(p_delivery.data -> 'qty', 'null'::jsonb)
            USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT FROM catalog c WHERE c.sku = v_sku) THEN
        PERFORM nextval('failed_applications');
        RAISE EXCEPTION '% v% %: unknown sku %', p_delivery.stream_id, p_delivery.version, p_delivery.type, v_sku
            USING ERRCODE = '22023';
    END IF;
    v_qty := (p_delivery.data ->> 'qty')::integer;
    IF p_delivery.type = 'OrderCancelled' THEN
        v_qty := -v_qty;
    END IF;
    INSERT INTO stock AS s (consumer, sku, reserved) VALUES (p_consumer, v_sku, v_qty)
        ON CONFLICT (consumer, sku) DO UPDATE SET reserved = s.reserved + excluded.reserved;
    INSERT INTO effect_log (consumer, event_id, stream_id, version, type)
        VALUES (p_consumer, p_delivery.event_id, p_delivery.stream_id, p_delivery.version, p_delivery.type);
END
$$;
-- ANCHOR_END: apply

-- ANCHOR: partition
-- stream_partition(stream_id, partitions) -> 0 .. partitions - 1: which worker owns a stream.
CREATE FUNCTION stream_partition(p_stream_id text, p_partitions integer) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT (((hashtextextended(p_stream_id, 0) % p_partitions) + p_partitions) % p_partitions)::integer
$$;
-- ANCHOR_END: partition

-- The check's crash points: the worker's session dies at the commit of the Nth transaction that
-- wrote an inbox row, a delivery's acknowledgement or an effect of the planned event. A deferred
-- constraint trigger runs at commit, before the commit is durable; terminating the session
-- there aborts that transaction, as a crash of the worker would.
CREATE TABLE crash_plan (
    event_id  uuid    NOT NULL,
    at_commit integer NOT NULL
);
CREATE SEQUENCE commits_of_planned_event;

CREATE FUNCTION crash_point() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    touched uuid := CASE TG_OP WHEN 'DELETE' THEN OLD.event_id ELSE NEW.event_id END;
    planned crash_plan;
BEGIN
    SELECT * INTO planned FROM crash_plan LIMIT 1;
    IF NOT FOUND OR touched IS DISTINCT FROM planned.event_id
       OR current_setting('labs.counted_commit', true) = 'yes' THEN
        RETURN NULL;
    END IF;
    -- Counted once per transaction (the setting is local to it).
    PERFORM set_config('labs.counted_commit', 'yes', true);
    IF nextval('commits_of_planned_event') = planned.at_commit THEN
        PERFORM pg_terminate_backend(pg_backend_pid());
        PERFORM pg_sleep(10);
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER crash_point AFTER INSERT ON inbox
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION crash_point();
CREATE CONSTRAINT TRIGGER crash_point AFTER UPDATE OR DELETE ON deliveries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION crash_point();
CREATE CONSTRAINT TRIGGER crash_point AFTER INSERT ON effect_log
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION crash_point();
