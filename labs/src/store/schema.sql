-- The reference event store: one events table, two functions every writer and reader goes
-- through, and the subscriptions' checkpoints. Every lab builds on it; activity 3 (Schema
-- Sketch) verifies attendees' own schemas against the same contract (`labs schema verify`).

-- ANCHOR: events
CREATE TABLE events (
    -- Global position: the order of appends, NOT the order of commits. Two writers can take
    -- positions 1 and 2 and commit 2 first; a reader that trusts `position > checkpoint` then
    -- skips 1 for ever (activity 1, Log Sleuth).
    position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction's id. Readers stay behind pg_snapshot_xmin(pg_current_snapshot()):
    -- every transaction below it has finished, so no event below it can still appear.
    transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    -- Unique: a client retry of the same event is caught here instead of stored twice.
    event_id       uuid NOT NULL UNIQUE,
    stream_id      text NOT NULL,
    version        bigint NOT NULL CHECK (version >= 1),
    type           text NOT NULL,
    data           jsonb NOT NULL,
    metadata       jsonb NOT NULL DEFAULT '{}',
    -- clock_timestamp(), not now(): now() is the transaction's start, which would make a
    -- slow transaction's events look older than ones committed before them.
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Optimistic concurrency's backstop: two writers can never both claim a stream version.
    -- It is also the index that reads one stream and finds its current version.
    UNIQUE (stream_id, version)
);

-- The watermark reader's index: it reads in (transaction_id, position) order.
CREATE INDEX events_transaction_order ON events (transaction_id, position);
-- ANCHOR_END: events

-- ANCHOR: append
-- append_to_stream(stream_id, expected_version, event_ids, types, data, metadata) -> bigint
--
--   expected_version  NULL: any version; 0: the stream must not exist yet;
--                     N: the stream must be at exactly version N.
--   metadata          may be NULL (every event gets '{}').
--   returns           the stream's version after the append.
--   errors            SQLSTATE ES409 when the stream is not at the expected version, with DETAIL
--                     a JSON object {stream_id, expected, actual}; ES422 when an event id is
--                     already stored with other content, stream or place; 22023 on bad arguments.
--
-- All events go in one statement of the caller's transaction: all or none. A retry of an
-- append that already committed (same event ids, same content) returns the original version
-- and writes nothing, so a client that lost the acknowledgement can simply send it again.
CREATE FUNCTION append_to_stream(
    p_stream_id        text,
    p_expected_version bigint,
    p_event_ids        uuid[],
    p_types            text[],
    p_data             jsonb[],
    p_metadata         jsonb[]
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n                integer := coalesce(cardinality(p_event_ids), 0);
    current_version  bigint;
    original_stream  text;
    original_version bigint;
    matching         integer;
BEGIN
    IF p_stream_id IS NULL OR n = 0 OR cardinality(p_types) IS DISTINCT FROM n
       OR cardinality(p_data) IS DISTINCT FROM n
       OR (p_metadata IS NOT NULL AND cardinality(p_metadata) <> n) THEN
        RAISE EXCEPTION 'append_to_stream: a stream id and the same number (at least one) of event ids, types and data'
            USING ERRCODE = '22023';
    END IF;
    IF p_expected_version < 0 THEN
        RAISE EXCEPTION 'append_to_stream: expected_version is NULL (any), 0 (no stream) or a version, not %', p_expected_version
            USING ERRCODE = '22023';
    END IF;

    -- One appender per stream at a time, until commit, so the version read below cannot move
    -- before the insert. An advisory lock on the stream's hash: no streams table to update (no
    -- extra row, no extra WAL), and appends to other streams never wait. A hash collision only
    -- makes two streams wait for each other. Without this lock two writers both read version 3:
    -- the unique (stream_id, version) would still stop the second, but as a bare 23505 instead
    -- of this function's ES409 with the actual version.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_stream_id, 0));

    -- Both reads in one statement (taken after the lock, so a retry racing its still
    -- uncommitted original waits for it, then sees it): is this a retry, whose first event is
    -- already stored? And the stream's version, by a backward scan of the (stream_id, version)
    -- index: one row read, however long the stream.
    SELECT o.stream_id, o.version,
           (SELECT coalesce(max(e.version), 0) FROM events e WHERE e.stream_id = p_stream_id)
      INTO original_stream, original_version, current_version
      FROM (SELECT) AS one LEFT JOIN events o ON o.event_id = p_event_ids[1];
    IF original_version IS NOT NULL THEN
        SELECT count(*) INTO matching
        FROM unnest(p_event_ids, p_types, p_data, p_metadata) WITH ORDINALITY AS a(event_id, type, data, metadata, n)
        JOIN events e ON e.event_id = a.event_id
        WHERE e.stream_id = p_stream_id
          AND e.version = original_version + a.n - 1
          AND e.type = a.type AND e.data = a.data AND e.metadata = coalesce(a.metadata, '{}');
        IF original_stream = p_stream_id AND matching = n THEN
            RETURN original_version + n - 1;
        END IF;
        RAISE EXCEPTION 'event % is already stored (stream %, version %) with other content', p_event_ids[1], original_stream, original_version
            USING ERRCODE = 'ES422',
                  DETAIL = json_build_object('event_id', p_event_ids[1], 'stream_id', original_stream, 'version', original_version)::text;
    END IF;

    IF p_expected_version IS NOT NULL AND p_expected_version <> current_version THEN
        RAISE EXCEPTION 'wrong expected version for stream %: expected %, actual %', p_stream_id, p_expected_version, current_version
            USING ERRCODE = 'ES409',
                  DETAIL = json_build_object('stream_id', p_stream_id, 'expected', p_expected_version, 'actual', current_version)::text;
    END IF;

    -- An event id stored earlier in another append (not this one's first) still fails here,
    -- on the unique event_id, and aborts the whole append: nothing is half-written.
    INSERT INTO events (event_id, stream_id, version, type, data, metadata)
    SELECT a.event_id, p_stream_id, current_version + a.n, a.type, a.data, coalesce(a.metadata, '{}')
    FROM unnest(p_event_ids, p_types, p_data, p_metadata) WITH ORDINALITY AS a(event_id, type, data, metadata, n);
    RETURN current_version + n;
END
$$;
-- ANCHOR_END: append

-- ANCHOR: read_all
-- read_all_after(after, max_count) -> rows (checkpoint, event_id, stream_id, version, type, data, metadata)
--
--   after      NULL: from the start; otherwise a checkpoint this function returned.
--   returns    up to max_count events, each with the checkpoint to resume after it.
--
-- The checkpoint is the pair (transaction_id, position) written as 'xid:position'. Only events of
-- transactions below the snapshot's xmin are returned: every one of those has finished, so no
-- event can later appear before the checkpoint. The cost: readers wait for the oldest
-- transaction still open anywhere in the cluster that has written something.
-- One statement, so the watermark and the rows come from the same snapshot.
-- The Rust reader (labs/src/store/read.rs) runs this same query with typed columns and builds
-- the checkpoint text itself: formatting it here, row by row, about doubles the read's cost.
CREATE FUNCTION read_all_after(p_after text, p_max_count integer)
RETURNS TABLE (checkpoint text, event_id uuid, stream_id text, version bigint, type text, data jsonb, metadata jsonb)
LANGUAGE sql STABLE AS $$
    SELECT e.transaction_id::text || ':' || e.position, e.event_id, e.stream_id, e.version, e.type, e.data, e.metadata
    FROM events e
    WHERE (e.transaction_id, e.position) > (split_part(coalesce(p_after, '0:0'), ':', 1)::xid8,
                                            split_part(coalesce(p_after, '0:0'), ':', 2)::bigint)
      AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY e.transaction_id, e.position
    LIMIT p_max_count
$$;
-- ANCHOR_END: read_all

-- ANCHOR: subscriptions
-- One row per subscription: where its projection is. A consumer updates it in the same
-- transaction as the projection's own writes, so both commit together or not at all.
CREATE TABLE subscriptions (
    name       text PRIMARY KEY,
    checkpoint text,                -- NULL: nothing processed yet
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- ANCHOR_END: subscriptions
