-- The guard, then COPY and DELETE: the rows go, the partition stays, full of dead rows until
-- VACUUM.
-- fails: month-removed

-- ==== SCHEMA ====

-- One sequence for every month. A partition created with PARTITION OF inherits this default,
-- so a row COPied straight into a partition (a backfill) is numbered too. An identity column
-- on the parent numbers only rows inserted through the parent before PostgreSQL 17.
CREATE SEQUENCE events_position_seq AS bigint;

CREATE TABLE events (
    position       bigint      NOT NULL DEFAULT nextval('events_position_seq'),
    transaction_id xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id       uuid        NOT NULL,
    stream_id      text        NOT NULL,
    version        bigint      NOT NULL CHECK (version >= 1),
    type           text        NOT NULL,
    data           jsonb       NOT NULL,
    metadata       jsonb       NOT NULL DEFAULT '{}',
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Every unique key of a partitioned table must contain the partition key. This one is
    -- unique anyway: the sequence never repeats.
    PRIMARY KEY (position, recorded_at)
) PARTITION BY RANGE (recorded_at);
ALTER SEQUENCE events_position_seq OWNED BY events.position;

-- The watermark reader's order, and one stream in version order (append_to_stream finds a
-- stream's version through it). Both are probed in every month: a month prunes nothing here.
CREATE INDEX events_transaction_order ON events (transaction_id, position);
CREATE INDEX events_stream_version ON events (stream_id, version);
-- append_to_stream looks a retry up by its first event id.
CREATE INDEX events_event_id ON events (event_id);

-- The keys no month can hold: one small row per event in a table that is not partitioned.
-- It keeps every id and every (stream, version) for ever, archived months included, so a
-- retry or a second writer is refused whatever month the first copy landed in.
CREATE TABLE event_keys (
    event_id  uuid   PRIMARY KEY,
    stream_id text   NOT NULL,
    version   bigint NOT NULL,
    UNIQUE (stream_id, version)
);

CREATE FUNCTION event_keys_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_keys (event_id, stream_id, version) VALUES (NEW.event_id, NEW.stream_id, NEW.version);
    RETURN NULL;
END
$$;

-- A row trigger: PostgreSQL clones it onto every partition, so it fires for rows inserted
-- through events and for rows inserted into a partition directly.
CREATE TRIGGER events_keys AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION event_keys_insert();

-- Refuses to archive a month that a subscription has not read to its end: once the month
-- leaves events, that subscription would never see the rest of it.
CREATE FUNCTION assert_read_by_every_subscription(p_partition regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    last_xid      xid8;
    last_position bigint;
    behind        text;
BEGIN
    EXECUTE format('SELECT transaction_id, position FROM %s ORDER BY transaction_id DESC, position DESC LIMIT 1',
                   p_partition)
       INTO last_xid, last_position;
    IF last_xid IS NULL THEN
        RETURN;  -- an empty month
    END IF;
    SELECT string_agg(name, ', ' ORDER BY name) INTO behind
      FROM subscriptions
     WHERE checkpoint IS NULL
        OR (split_part(checkpoint, ':', 1)::xid8, split_part(checkpoint, ':', 2)::bigint)
           < (last_xid, last_position);
    IF behind IS NOT NULL THEN
        RAISE EXCEPTION 'cannot archive %: subscription % has not read it to its end', p_partition, behind
            USING HINT = 'Archive it once every subscription has read past it.';
    END IF;
END
$$;

-- ==== ARCHIVE ====

-- The month the subscriptions have all read past: nothing archived is still owed to anyone.
SELECT assert_read_by_every_subscription(:'partition');

-- DETACH ... CONCURRENTLY takes only SHARE UPDATE EXCLUSIVE on events: appends and reads go
-- on. It then waits for the transactions already using events; lock_timeout bounds that wait
-- (if it fires in the second step, `DETACH PARTITION ... FINALIZE` completes the detach).
COPY (SELECT * FROM events WHERE recorded_at >= :'month_start' AND recorded_at < :'month_end') TO STDOUT;
DELETE FROM events WHERE recorded_at >= :'month_start' AND recorded_at < :'month_end';
