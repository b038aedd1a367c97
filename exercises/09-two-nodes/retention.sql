-- Exercise, activity 9 (Two Nodes, One Truth): a partitioned events table and its archive step.
--
-- The events table below is partitioned by month of recorded_at, so that the oldest month can
-- leave the table whole instead of row by row. `labs check two-nodes` takes this file in two
-- parts:
--
-- SCHEMA, loaded as one script into a fresh database. Then the lab creates one partition per
--   month, from four months ago to next month, named events_YYYY_MM (as a partition manager
--   such as pg_partman would), and adds the store's store_clusters, store_check_cluster,
--   lock_streams, append_to_stream, read_all_after and subscriptions from
--   labs/src/store/schema.sql, unchanged. It runs the checks of
--   `labs schema verify`, backfills four months of history by COPYing each month straight into
--   its partition, and tries a retried event id and a second writer of one stream version,
--   each in another month than the first.
-- ARCHIVE, run one statement at a time in one session, outside any transaction block, the way
--   psql runs a file, with :"partition" (the oldest month's partition, an identifier),
--   :'partition' (its name as a literal), :'month_start' and :'month_end' filled in. The lab
--   runs it while subscription "projection" holds a batch open and a writer appends, keeps what
--   COPY ... TO STDOUT writes as the archive, then runs it again for the next month while
--   subscription "audit" has not finished reading that month.
--
-- As written, PostgreSQL accepts it and most of the store's checks pass. The check shows what
-- it loses; the task: change it until `labs check two-nodes` passes. Save; run it again.
-- `psql -v partition=events_2026_01 -f retention.sql` runs the same statements the same way.
--
-- Hints, one at a time:
-- 1. UNIQUE (event_id, recorded_at) is unique per month: a retry that lands in another month
--    is stored twice. A key the partitions cannot hold needs a table that is not partitioned,
--    filled in the same transaction (a row trigger on events fires for every partition).
-- 2. Before PostgreSQL 17, an identity column on the parent numbers only rows inserted through
--    the parent: a COPY into a partition fails with a null position. A sequence used as the
--    column's DEFAULT is inherited by every partition.
-- 3. DELETE leaves the month's partition full of dead rows until VACUUM. DETACH PARTITION then
--    DROP TABLE removes it at once. A plain DETACH takes ACCESS EXCLUSIVE on events: every
--    append and read queues behind it. DETACH ... CONCURRENTLY does not, but it cannot run
--    inside a transaction block, and not at all while the table has a DEFAULT partition.
-- 4. A subscription that has not read the month yet never will once it is gone: the schema
--    below defines a guard for that. Call it first.

-- ==== SCHEMA ====

CREATE TABLE events (
    position       bigint      GENERATED ALWAYS AS IDENTITY,
    transaction_id xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id       uuid        NOT NULL,
    stream_id      text        NOT NULL,
    version        bigint      NOT NULL CHECK (version >= 1),
    type           text        NOT NULL,
    data           jsonb       NOT NULL,
    metadata       jsonb       NOT NULL DEFAULT '{}',
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- PostgreSQL refused PRIMARY KEY (position), UNIQUE (event_id) and UNIQUE (stream_id,
    -- version): "unique constraint on partitioned table must include all partitioning columns".
    -- So each key got recorded_at:
    PRIMARY KEY (position, recorded_at),
    UNIQUE (event_id, recorded_at),
    UNIQUE (stream_id, version, recorded_at)
) PARTITION BY RANGE (recorded_at);

-- The watermark reader's order.
CREATE INDEX events_transaction_order ON events (transaction_id, position);

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

COPY (SELECT * FROM events WHERE recorded_at >= :'month_start' AND recorded_at < :'month_end') TO STDOUT;
DELETE FROM events WHERE recorded_at >= :'month_start' AND recorded_at < :'month_end';
