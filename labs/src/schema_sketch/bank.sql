-- The bank's helpers, installed before the transfer function (yours or the reference one):
-- an account's state folded from its stream, and the transfer's event ids.
-- The check verifies balances with its own fold (labs/src/schema_sketch/bank.rs), not this one.

-- ANCHOR: account_state
CREATE TYPE account_state AS (
    opened        boolean,  -- an AccountOpened event is in the stream
    balance_cents bigint,   -- deposits and transfers in, minus withdrawals and transfers out
    version       bigint    -- the stream's version this state was read at (0: no stream)
);

-- The account named p_name, from its stream 'account-' || p_name, read now. Each call is a
-- new statement: under READ COMMITTED it sees what has committed by then, and nothing locks.
CREATE FUNCTION load_account(p_name text) RETURNS account_state
LANGUAGE sql STABLE AS $$
    SELECT coalesce(bool_or(type = 'AccountOpened'), false),
           coalesce(sum(CASE
               WHEN type IN ('Deposited', 'TransferReceived') THEN (data->>'amount_cents')::bigint
               WHEN type IN ('Withdrawn', 'TransferSent') THEN -(data->>'amount_cents')::bigint
               ELSE 0 END), 0)::bigint,
           coalesce(max(version), 0)::bigint
      FROM events
     WHERE stream_id = 'account-' || p_name
$$;
-- ANCHOR_END: account_state

-- A transfer's two events get ids derived from its id: a resent transfer is the same events,
-- which append_to_stream stores once (an idempotent retry).
CREATE FUNCTION transfer_event_id(p_transfer_id uuid, p_side text) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$
    SELECT md5(p_transfer_id::text || '/' || p_side)::uuid
$$;
