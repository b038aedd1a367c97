-- The reference events table. Every lab builds on it; the store issue extends it (append
-- functions, subscriptions), never changes what these columns mean.

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
    UNIQUE (stream_id, version)
);

-- The watermark reader's index: it reads in (transaction_id, position) order.
CREATE INDEX events_transaction_order ON events (transaction_id, position);
