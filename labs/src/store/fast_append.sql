-- The fast path of the single-event append: one statement, no plpgsql. It appends only when
-- the common case is certain, and otherwise inserts nothing and returns no row; the caller then
-- calls append_to_stream (schema.sql), which waits for a busy stream and is the one place that
-- explains a conflict (ES409), recognises a retry, refuses a reused id (ES422), a late lock
-- (ES428) or another cluster's ids (ES421). Whatever this statement does, the caller sees
-- exactly what append_to_stream alone would have given it: the same version, or the same error.
--
-- Parameters: $1 stream_id, $2 expected_version (NULL any, 0 no stream, N exactly N), $3 event
-- id, $4 type, $5 data, $6 metadata (NULL: '{}'). Returns the stream's new version, or no row.
--
-- Why it keeps every guarantee of append_to_stream:
-- - The version: it inserts at the version it reads, only when that is the expected one; the
--   unique (stream_id, version) stops any version taken meanwhile (this statement's snapshot
--   is older than its lock), and ON CONFLICT turns that into no row, never a success.
-- - The order rule (schema.sql): it takes the stream's lock before the insert gives the
--   transaction its id, and only runs in a transaction that has no id yet.
-- - Retries and reused ids: an event id already stored is a conflict on the unique event_id,
--   so no row, and append_to_stream tells a retry (the original version) from a reused id.
-- - The cluster guard: it runs only in a session where append_to_stream has run the guard.
-- Why it is faster: no plpgsql call and its per-call setup, no unnest, and the retry lookup
-- only when the insert says there may be one.
INSERT INTO events (event_id, stream_id, version, type, data, metadata)
SELECT $3, $1, stream.version + 1, $4, $5, coalesce($6, '{}')
  FROM (SELECT coalesce(max(e.version), 0) AS version FROM events e WHERE e.stream_id = $1) AS stream
 WHERE ($2 IS NULL OR stream.version = $2)
   -- The stream's lock, as append_to_stream takes it, but never waited for: a busy stream
   -- takes the slow path, which waits.
   AND pg_try_advisory_xact_lock(hashtextextended($1, 0))
   -- The order rule: this transaction gets its id from the insert below, after the lock.
   AND pg_current_xact_id_if_assigned() IS NULL
   -- The cluster guard has passed in this session (append_to_stream records it there).
   AND current_setting('store.cluster', true) <> ''
   -- What append_to_stream answers with 22023.
   AND $1 IS NOT NULL AND $3 IS NOT NULL AND $4 IS NOT NULL AND $5 IS NOT NULL
-- A version or an event id already taken: insert nothing, and let append_to_stream say why. No
-- row comes back, so the caller never reports a success that did not happen.
ON CONFLICT DO NOTHING
RETURNING version
