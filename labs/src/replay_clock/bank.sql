-- Replay Clock's bank: what the attendee's file (exercises/08-replay-clock/replay.sql) builds on.
-- Loaded after the reference store (events, append_to_stream, read_all_after, subscriptions).
--
-- Events of the `account-…` streams: Deposited, Withdrawn, FeeCharged. Their metadata says which
-- payload shape they were written in, {"schema_version": 1} or {"schema_version": 2}:
--   v1 (before the release that moved to minor units): {"amount": 19.99, "ccy": "EUR"}
--   v2:                                                {"amount_minor": 1999, "currency": "EUR"}
-- The stored events are never changed: a v1 event stays v1 for ever, and code reads it through
-- the attendee's upcast(schema_version, data), which returns the v2 shape.

-- ISO 4217 minor units: how many digits after the decimal point a currency's amounts have.
CREATE TABLE currencies (
    code         text PRIMARY KEY,
    minor_digits integer NOT NULL
);
INSERT INTO currencies (code, minor_digits) VALUES ('EUR', 2), ('JPY', 0), ('KWD', 3);

-- The read model the balance page reads: one row per account.
CREATE TABLE balances (
    account       text PRIMARY KEY,  -- the account's stream id
    currency      text,
    balance_minor bigint NOT NULL,   -- in the currency's minor unit (cents for EUR)
    version       bigint NOT NULL    -- the last stream version it reflects
);

-- ANCHOR: release
-- The version of the account aggregate's state, as this release of the code computes it. A
-- release that changes how events fold into the state bumps it; state computed by another
-- version is not this release's state.
CREATE OR REPLACE FUNCTION account_state_version() RETURNS integer
LANGUAGE sql STABLE AS $$ SELECT 2 $$;

-- Folds one event, its payload already in the v2 shape, into the account's state
-- {"currency": …, "balance_minor": …}. Starts from '{}'. It also counts, per session, the
-- events it folds (setting replay_clock.folded), so a lab or a check can tell how many events
-- a load read: the one measure of whether a snapshot was used.
CREATE OR REPLACE FUNCTION account_apply(p_state jsonb, p_type text, p_data jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    sign integer := CASE p_type WHEN 'Deposited' THEN 1 WHEN 'Withdrawn' THEN -1 WHEN 'FeeCharged' THEN -1 END;
BEGIN
    IF sign IS NULL THEN
        RAISE EXCEPTION 'account_apply: unknown event type %', p_type;
    END IF;
    PERFORM set_config('replay_clock.folded',
        (coalesce(nullif(current_setting('replay_clock.folded', true), ''), '0')::bigint + 1)::text, false);
    RETURN jsonb_build_object(
        'currency', coalesce(p_state->>'currency', p_data->>'currency'),
        'balance_minor', coalesce((p_state->>'balance_minor')::bigint, 0) + sign * (p_data->>'amount_minor')::bigint);
END
$$;
-- ANCHOR_END: release
