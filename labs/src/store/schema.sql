-- The reference event store: one events table, two functions every writer and reader goes
-- through (append_to_stream, read_all_after), lock_streams for transactions that append to
-- several streams, the cluster the transaction ids belong to (and store_rebase to move it), and
-- the subscriptions' checkpoints. Every lab builds on it; activity 3 (Schema Sketch) verifies
-- attendees' own schemas against the same contract (`labs schema verify`). The single-event
-- append also has a fast path, fast_append.sql beside this file, that falls back to
-- append_to_stream for everything but a plain success.

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

-- ANCHOR: clusters
-- The cluster the events' transaction ids belong to. A transaction id counts one cluster's
-- transactions: a promoted physical standby and pg_upgrade carry the counter on, but a dump and
-- restore or a logical replica copies the ids into a cluster with a counter of its own, usually
-- far behind them. New events would then sort before the old ones and every consumer would skip
-- them, silently. So the store records where its ids come from, refuses to read or write
-- elsewhere (store_check_cluster), and moves only through store_rebase() below.
-- One row per cluster the store has lived on; the newest (highest seq) is where it lives now.
CREATE TABLE store_clusters (
    seq                       integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- pg_control_system().system_identifier: set by initdb, shared by physical standbys.
    system_identifier         bigint NOT NULL,
    since                     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- How the events came from the previous cluster (NULL on the first): true when every stored
    -- id was already below this cluster's counter, so every checkpoint kept its meaning; false
    -- when they were stamped '0' (store_rebase explains).
    kept_transaction_ids      boolean,
    -- Where the events ended, in read order, when the store moved: a checkpoint there can be
    -- rebased, whatever happened to the ids. And the highest position then.
    moved_last_transaction_id xid8,
    moved_last_position       bigint,
    moved_max_position        bigint
);
INSERT INTO store_clusters (system_identifier) SELECT system_identifier FROM pg_control_system();

-- store_check_cluster() -> this cluster's system identifier, or SQLSTATE ES421 when the stored
-- transaction ids are not this cluster's: the store was recorded on another cluster, or an
-- event carries an id this cluster has not handed out yet (copied in from elsewhere). In one
-- cluster's history neither can happen: every row a snapshot sees was written by a transaction
-- below that snapshot's xmax. Readers run it on every read, writers once per session.
CREATE FUNCTION store_check_cluster() RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    here   bigint := (SELECT system_identifier FROM pg_control_system());
    home   bigint := (SELECT c.system_identifier FROM store_clusters c ORDER BY c.seq DESC LIMIT 1);
    newest xid8   := (SELECT max(e.transaction_id) FROM events e);
    next   xid8   := pg_snapshot_xmax(pg_current_snapshot());
BEGIN
    IF home IS DISTINCT FROM here THEN
        RAISE EXCEPTION 'the store''s events were written on cluster %, and this is cluster %: their transaction ids do not compare with this cluster''s', home, here
            USING ERRCODE = 'ES421',
                  DETAIL = json_build_object('events_cluster', home, 'this_cluster', here)::text,
                  HINT = 'The store was restored, replicated or upgraded into another cluster. Stop its writers and consumers, then run SELECT * FROM store_rebase(); on this cluster (labs/src/store/schema.sql says what it does).';
    END IF;
    IF newest >= next THEN
        RAISE EXCEPTION 'events carry transaction ids up to %, and this cluster has not handed out % yet: they were copied from another cluster', newest, next
            USING ERRCODE = 'ES421',
                  DETAIL = json_build_object('newest_stored', newest::text, 'next_here', next::text, 'this_cluster', here)::text,
                  HINT = 'Stop the store''s writers and consumers, then run SELECT * FROM store_rebase(); on this cluster (labs/src/store/schema.sql says what it does).';
    END IF;
    RETURN here;
END
$$;
-- ANCHOR_END: clusters

-- ANCHOR: order
-- Per-stream order, for transactions that append to several streams too.
--
-- The promise: read_all_after returns each stream's events in version order, and never a
-- stream's version N+1 while its version N is not yet readable.
--
-- read_all_after returns events in (transaction_id, position) order, and a transaction gets its
-- id at its first write, not when it appends to a given stream. Hence the rule:
--
--     a transaction holds the lock of every stream it appends to from before it has an id.
--
-- append_to_stream takes its stream's lock, then inserts (the insert assigns the id). A
-- transaction that has already written (it has an id) may append only to a stream it locked
-- before that first write, with lock_streams(), or to one it has appended to already; anything
-- else is refused with ES428, before it writes.
--
-- Why the rule keeps the promise. Let e1 (version N) and e2 (version N+1) be events of one
-- stream, written by transactions T1 and T2.
-- - T1 = T2: one id, and e2 was inserted after e1, at a higher position.
-- - T1 <> T2: T2 chose version N+1 after it saw e1 committed, under the stream's lock, which
--   T1 held from before e1's insert until T1 ended. So T2 got the lock after T1 ended and, by
--   the rule, its id after that; T1 had its id before it inserted e1. Ids are handed out in
--   increasing order: T1's id < T2's id.
-- Either way (T1's id, e1's position) < (T2's id, e2's position): the read order is the
-- version order. And e2 is behind the watermark only when T2's id is below the oldest running
-- one; T1's is lower still, so T1 has ended, and e1 (committed, or T2 would not have seen it)
-- is readable too.
--
-- Without the rule, a transfer appends to alice (it gets its id), then waits for bob's lock
-- while a younger transaction appends bob's version 2 and commits; the transfer appends bob's
-- version 3 under its older id, and readers get bob 1, 3, 2.
--
-- The cost: a transaction that appends to several streams names them first, in one statement,
-- and holds their locks from its start instead of from each append.

-- lock_streams(stream_ids) takes the lock of every stream a transaction is about to append to,
-- in one order (sorted by key), so two transactions over the same streams cannot deadlock. Call
-- it first, before the transaction writes anything; ES428 otherwise.
CREATE FUNCTION lock_streams(p_stream_ids text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    stream_key bigint;
    -- ',key,key,': the streams this transaction locked before it had an id.
    locked     text := coalesce(nullif(current_setting('store.locked_streams', true), ''), ',');
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'lock_streams: this transaction has already written (transaction id %), so a lock taken now comes after its id and readers could get these streams out of version order', pg_current_xact_id_if_assigned()
            USING ERRCODE = 'ES428',
                  DETAIL = json_build_object('transaction_id', pg_current_xact_id_if_assigned()::text)::text,
                  HINT = 'Call lock_streams(ARRAY[...every stream the transaction appends to...]) first, before anything in the transaction writes.';
    END IF;
    IF coalesce(current_setting('store.cluster', true), '') = '' THEN
        PERFORM set_config('store.cluster', store_check_cluster()::text, false);
    END IF;
    FOR stream_key IN SELECT DISTINCT hashtextextended(s, 0) FROM unnest(p_stream_ids) AS s WHERE s IS NOT NULL ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(stream_key);
        locked := locked || stream_key || ',';
    END LOOP;
    -- Transaction-local (is_local): the record ends with the locks, at commit or rollback.
    PERFORM set_config('store.locked_streams', locked, true);
END
$$;
-- ANCHOR_END: order

-- ANCHOR: append
-- append_to_stream(stream_id, expected_version, event_ids, types, data, metadata) -> bigint
--
--   expected_version  NULL: any version; 0: the stream must not exist yet;
--                     N: the stream must be at exactly version N.
--   metadata          may be NULL (every event gets '{}').
--   returns           the stream's version after the append.
--   errors            SQLSTATE ES409 when the stream is not at the expected version, with DETAIL
--                     a JSON object {stream_id, expected, actual}; ES422 when an event id is
--                     already stored with other content, stream or place; ES428 when the
--                     transaction has written before without locking this stream first (the
--                     order rule above); ES421 when the stored ids are another cluster's;
--                     22023 on bad arguments.
--
-- All events go in one statement of the caller's transaction: all or none. A retry of an
-- append that already committed (same event ids, same content) returns the original version
-- and writes nothing, so a client that lost the acknowledgement can simply send it again.
-- A transaction that appends to several streams starts with lock_streams().
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
    stream_key       bigint  := hashtextextended(p_stream_id, 0);
    own_id           xid8    := pg_current_xact_id_if_assigned();
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

    -- The cluster guard, once per session: a session never changes cluster, so the answer is
    -- kept in a session setting (a cache only: setting it by hand skips the guard).
    IF coalesce(current_setting('store.cluster', true), '') = '' THEN
        PERFORM set_config('store.cluster', store_check_cluster()::text, false);
    END IF;

    -- ANCHOR: order_rule
    -- The order rule (above): a transaction with an id appends only to a stream it locked
    -- before it got the id, with lock_streams or an earlier append to the same stream (then the
    -- stream's newest event is its own). Checked before waiting for the lock.
    IF own_id IS NOT NULL
       AND position(',' || stream_key || ',' IN coalesce(current_setting('store.locked_streams', true), '')) = 0
       AND own_id IS DISTINCT FROM (SELECT e.transaction_id FROM events e WHERE e.stream_id = p_stream_id ORDER BY e.version DESC LIMIT 1) THEN
        RAISE EXCEPTION 'append_to_stream: stream % was not locked before this transaction''s first write (transaction id %): appended now, it could reach readers out of version order', p_stream_id, own_id
            USING ERRCODE = 'ES428',
                  DETAIL = json_build_object('stream_id', p_stream_id, 'transaction_id', own_id::text)::text,
                  HINT = 'Start the transaction with SELECT lock_streams(ARRAY[...every stream it appends to...]), before anything in it writes.';
    END IF;
    -- ANCHOR_END: order_rule

    -- One appender per stream at a time, until commit, so the version read below cannot move
    -- before the insert. An advisory lock on the stream's hash: no streams table to update (no
    -- extra row, no extra WAL), and appends to other streams never wait. A hash collision only
    -- makes two streams wait for each other. Without this lock two writers both read version 3:
    -- the unique (stream_id, version) would still stop the second, but as a bare 23505 instead
    -- of this function's ES409 with the actual version.
    PERFORM pg_advisory_xact_lock(stream_key);

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
--   errors     ES421 when the checkpoint was taken on another cluster, or the stored ids are
--              another cluster's (store_check_cluster); 22023 on a malformed checkpoint.
--
-- The checkpoint is the pair (transaction_id, position) and the cluster both belong to, written
-- 'xid:position:system_identifier'. Only events of transactions below the snapshot's xmin are
-- returned: every one of those has finished, so no event can later appear before the
-- checkpoint. The cost: readers wait for the oldest transaction still open anywhere in the
-- cluster that has written something.
-- One statement, so the watermark and the rows come from the same snapshot. The cluster check
-- is a call with no column in it: PostgreSQL runs it once, before reading any row.
-- The Rust reader (labs/src/store/read.rs) runs this same query with typed columns and builds
-- the checkpoint text itself: formatting it here, row by row, about doubles the read's cost.

-- store_reader_check(transaction_id, position, cluster): true when a reader may resume from this
-- checkpoint here; ES421 when it was taken on another cluster (store_rebase_checkpoint turns it
-- into this cluster's), or when the stored ids are not this cluster's. '0', 0, 0 is the start.
CREATE FUNCTION store_reader_check(p_transaction_id xid8, p_position bigint, p_cluster bigint) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    here bigint := store_check_cluster();
BEGIN
    IF p_cluster IS DISTINCT FROM here AND NOT (p_cluster = 0 AND p_transaction_id = '0' AND p_position = 0) THEN
        RAISE EXCEPTION 'checkpoint %:%:% was taken on cluster %, and the store now lives on cluster %: resuming from it could skip events', p_transaction_id, p_position, p_cluster, p_cluster, here
            USING ERRCODE = 'ES421',
                  DETAIL = json_build_object('checkpoint_cluster', p_cluster, 'this_cluster', here)::text,
                  HINT = format('Rebase it: SELECT store_rebase_checkpoint(%L) gives the same place in this cluster''s order, or says why the consumer must start again from the beginning.', p_transaction_id || ':' || p_position || ':' || p_cluster);
    END IF;
    RETURN true;
END
$$;

-- A checkpoint's text form, 'transaction_id:position:system_identifier', parsed; NULL is the
-- start ('0', 0, 0). 22023 when it is not one.
CREATE FUNCTION store_parse_checkpoint(p_checkpoint text, OUT transaction_id xid8, OUT "position" bigint, OUT cluster bigint)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    parts text[] := string_to_array(p_checkpoint, ':');
BEGIN
    IF p_checkpoint IS NULL THEN
        transaction_id := '0';
        position := 0;
        cluster := 0;
        RETURN;
    END IF;
    IF cardinality(parts) IS DISTINCT FROM 3 OR parts[1] !~ '^[0-9]{1,20}$' OR parts[2] !~ '^[0-9]{1,19}$'
       OR parts[3] !~ '^-?[0-9]{1,19}$' THEN
        RAISE EXCEPTION 'checkpoint ''%'' is not ''transaction_id:position:system_identifier'' as read_all_after returns it', p_checkpoint
            USING ERRCODE = '22023';
    END IF;
    transaction_id := parts[1]::xid8;
    position := parts[2]::bigint;
    cluster := parts[3]::bigint;
END
$$;

CREATE FUNCTION read_all_after(p_after text, p_max_count integer)
RETURNS TABLE (checkpoint text, event_id uuid, stream_id text, version bigint, type text, data jsonb, metadata jsonb)
LANGUAGE sql STABLE AS $$
    SELECT e.transaction_id::text || ':' || e.position || ':' || (SELECT system_identifier FROM pg_control_system()),
           e.event_id, e.stream_id, e.version, e.type, e.data, e.metadata
    FROM events e
    WHERE store_reader_check((store_parse_checkpoint(p_after)).transaction_id, (store_parse_checkpoint(p_after)).position,
                             (store_parse_checkpoint(p_after)).cluster)
      AND (e.transaction_id, e.position) > ((store_parse_checkpoint(p_after)).transaction_id,
                                            (store_parse_checkpoint(p_after)).position)
      AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY e.transaction_id, e.position
    LIMIT p_max_count
$$;
-- ANCHOR_END: read_all

-- ANCHOR: rebase
-- Moving the store to another cluster: store_rebase(), run once on the new cluster after the
-- data is there and before writers and consumers start. Before it, both are refused there.
--
-- The safe move, written down before it starts: stop the writers on the old cluster, let every
-- consumer reach the end of the events, move the data (pg_dump and restore, or logical
-- replication), run store_rebase() on the new cluster, then start consumers and writers.
--
-- store_rebase() looks at the stored ids:
-- - all below this cluster's counter (pg_upgrade carries the counter on; a restore into a
--   cluster that is already ahead): every future transaction id sorts after every stored one.
--   The ids stay, and every checkpoint keeps its place; only its cluster changes.
-- - some at or above it (the usual dump and restore, or logical replica): future ids would sort
--   before stored ones. Every stored event gets transaction id '0': they keep their position
--   order, which is each stream's version order (a stream's next version is inserted only
--   after its previous one committed, under the stream's lock), and they sort before every
--   event this cluster writes. A checkpoint at the end of the events becomes ('0', the highest
--   position); one in the middle cannot be mapped, because the old order is gone: its consumer
--   starts again from the beginning. On a large table the UPDATE rewrites every row once.
-- It records the new cluster, moves the position sequence past the highest position (logical
-- replication does not copy sequences), rebases every subscription it can, and returns one row
-- per subscription (checkpoint_after NULL: that one starts again from the beginning, or stays
-- refused until it is reset).
CREATE FUNCTION store_rebase()
RETURNS TABLE (subscription text, checkpoint_before text, checkpoint_after text)
LANGUAGE plpgsql AS $$
DECLARE
    here         bigint := (SELECT system_identifier FROM pg_control_system());
    home         bigint := (SELECT c.system_identifier FROM store_clusters c ORDER BY c.seq DESC LIMIT 1);
    last_id      xid8;
    last_pos     bigint;
    max_position bigint;
    kept         boolean;
    position_seq text := pg_get_serial_sequence('events', 'position');
    sub          record;
BEGIN
    -- Appends are refused here until this commits (store_check_cluster); the lock also waits
    -- for anything that writes to the table without the store.
    LOCK TABLE events IN EXCLUSIVE MODE;
    SELECT e.transaction_id, e.position INTO last_id, last_pos
      FROM events e ORDER BY e.transaction_id DESC, e.position DESC LIMIT 1;
    -- No id yet in this transaction: every id from now on is at or above this snapshot's xmax.
    kept := last_id IS NULL OR last_id < pg_snapshot_xmax(pg_current_snapshot());
    IF home IS NOT DISTINCT FROM here AND kept THEN
        RAISE NOTICE 'store_rebase: nothing to do, the stored transaction ids are this cluster''s (%)', here;
        RETURN;
    END IF;
    SELECT max(e.position) INTO max_position FROM events e;
    IF NOT kept THEN
        UPDATE events SET transaction_id = '0' WHERE transaction_id <> '0';
    END IF;
    IF max_position > coalesce(pg_sequence_last_value(position_seq::regclass), 0) THEN
        PERFORM setval(position_seq, max_position);
    END IF;
    INSERT INTO store_clusters (system_identifier, kept_transaction_ids, moved_last_transaction_id, moved_last_position, moved_max_position)
    VALUES (here, kept, last_id, last_pos, max_position);
    PERFORM set_config('store.cluster', here::text, false);
    FOR sub IN SELECT s.name, s.checkpoint FROM subscriptions s WHERE s.checkpoint IS NOT NULL ORDER BY s.name FOR UPDATE LOOP
        subscription := sub.name;
        checkpoint_before := sub.checkpoint;
        BEGIN
            checkpoint_after := store_rebase_checkpoint(sub.checkpoint);
            UPDATE subscriptions s SET checkpoint = checkpoint_after, updated_at = clock_timestamp() WHERE s.name = sub.name;
        EXCEPTION WHEN SQLSTATE 'ES421' THEN
            -- Left as it was: the subscription refuses to resume, and says why.
            checkpoint_after := NULL;
        END;
        RETURN NEXT;
    END LOOP;
END
$$;

-- store_rebase_checkpoint(checkpoint) -> the same place in this cluster's order, for a
-- checkpoint taken before the store moved here (kept elsewhere than in subscriptions, which
-- store_rebase rebases itself). ES421 when there is no such place: the consumer was not at the
-- end when the ids were stamped '0', or the store never lived where the checkpoint was taken.
CREATE FUNCTION store_rebase_checkpoint(p_checkpoint text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    here     bigint := store_check_cluster();
    xid      xid8;
    pos      bigint;
    cluster  bigint;
    from_seq integer;
    move     record;
BEGIN
    SELECT c.transaction_id, c.position, c.cluster INTO xid, pos, cluster FROM store_parse_checkpoint(p_checkpoint) c;
    IF cluster = here OR (cluster = 0 AND xid = '0' AND pos = 0) THEN
        RETURN xid || ':' || pos || ':' || here;
    END IF;
    SELECT max(c.seq) INTO from_seq FROM store_clusters c WHERE c.system_identifier = cluster;
    IF from_seq IS NULL THEN
        RAISE EXCEPTION 'checkpoint % was taken on cluster %, where this store has never lived', p_checkpoint, cluster
            USING ERRCODE = 'ES421',
                  HINT = 'It belongs to another store. Start its consumer again from the beginning (read_all_after(NULL, ...)).';
    END IF;
    FOR move IN SELECT * FROM store_clusters c WHERE c.seq > from_seq ORDER BY c.seq LOOP
        IF NOT move.kept_transaction_ids THEN
            IF xid = move.moved_last_transaction_id AND pos = move.moved_last_position THEN
                xid := '0';
                pos := move.moved_max_position;
            ELSE
                RAISE EXCEPTION 'checkpoint % is not where the events ended (%:%) when the store moved to cluster %: their order was replaced by position order then, and this place has no equivalent in it', p_checkpoint, move.moved_last_transaction_id, move.moved_last_position, move.system_identifier
                    USING ERRCODE = 'ES421',
                          HINT = 'Rebuild the consumer from the beginning (read_all_after(NULL, ...)). Next time, let every consumer reach the end before the move.';
            END IF;
        END IF;
    END LOOP;
    RETURN xid || ':' || pos || ':' || here;
END
$$;
-- ANCHOR_END: rebase

-- ANCHOR: subscriptions
-- One row per subscription: where its projection is. A consumer updates it in the same
-- transaction as the projection's own writes, so both commit together or not at all.
CREATE TABLE subscriptions (
    name       text PRIMARY KEY,
    checkpoint text,                -- NULL: nothing processed yet
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- ANCHOR_END: subscriptions
