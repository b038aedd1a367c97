-- The currency filled in with the house currency instead of carried over: every legacy JPY and
-- KWD payload becomes EUR.
-- fails: upcast-exact

-- 1. The upcaster: any payload, as schema version 2. Numeric arithmetic (jsonb numbers are
--    numeric, so 19.99 is exactly 19.99), scaled by the currency's own minor digits, every field
--    kept. A pure function of the stored payload: replay and load call the same one.
CREATE FUNCTION upcast(p_schema_version integer, p_data jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN p_schema_version = 1 THEN jsonb_build_object(
            'amount_minor', ((p_data->>'amount')::numeric
                             * power(10::numeric, (SELECT c.minor_digits FROM currencies c WHERE c.code = p_data->>'ccy')))::bigint,
            'currency', 'EUR')
        ELSE p_data
    END
$$;

-- 2. Snapshots: keyed by stream AND by the version of the code that computed the state. A
--    snapshot of another state version is not used: the load folds from the first event and
--    writes a snapshot of the current version beside it.
CREATE TABLE account_snapshots (
    stream_id      text    NOT NULL,
    schema_version integer NOT NULL,  -- account_state_version() of the code that wrote it
    stream_version bigint  NOT NULL,  -- the last event folded into state
    state          jsonb   NOT NULL,
    PRIMARY KEY (stream_id, schema_version)
);

CREATE FUNCTION load_account(p_stream_id text)
RETURNS TABLE (state jsonb, version bigint)
LANGUAGE plpgsql AS $$
DECLARE
    state_version  integer := account_state_version();
    loaded_state   jsonb := '{}';
    loaded_version bigint := 0;
    folded         integer := 0;
    e record;
BEGIN
    SELECT s.state, s.stream_version INTO loaded_state, loaded_version
      FROM account_snapshots s
     WHERE s.stream_id = p_stream_id AND s.schema_version = state_version;
    IF NOT FOUND THEN
        loaded_state := '{}';
        loaded_version := 0;
    END IF;
    FOR e IN SELECT ev.version, ev.type, ev.data, ev.metadata FROM events ev
              WHERE ev.stream_id = p_stream_id AND ev.version > loaded_version
              ORDER BY ev.version
    LOOP
        loaded_state := account_apply(loaded_state, e.type, upcast((e.metadata->>'schema_version')::integer, e.data));
        loaded_version := e.version;
        folded := folded + 1;
    END LOOP;
    IF folded >= 100 THEN
        -- Never move a snapshot backwards: a slower concurrent load may have folded fewer events.
        INSERT INTO account_snapshots AS s (stream_id, schema_version, stream_version, state)
        VALUES (p_stream_id, state_version, loaded_version, loaded_state)
        ON CONFLICT (stream_id, schema_version) DO UPDATE
           SET stream_version = excluded.stream_version, state = excluded.state
         WHERE s.stream_version < excluded.stream_version;
    END IF;
    RETURN QUERY SELECT loaded_state, loaded_version;
END
$$;

-- 3. The rebuild, blue/green: the new model is built beside the live one, which readers keep
--    reading; then one transaction switches the names. A reader sees the old model or the new
--    one: the renames take an ACCESS EXCLUSIVE lock, so a read during the switch waits for it
--    and then reads the new table.
CREATE PROCEDURE rebuild_balances()
LANGUAGE plpgsql AS $$
BEGIN
    DROP TABLE IF EXISTS balances_next;
    CREATE TABLE balances_next (LIKE balances INCLUDING ALL);
    INSERT INTO balances_next (account, currency, balance_minor, version)
    SELECT e.stream_id,
           max(u.data->>'currency'),
           sum(CASE e.type WHEN 'Deposited' THEN 1 ELSE -1 END * (u.data->>'amount_minor')::bigint),
           max(e.version)
      FROM events e
     CROSS JOIN LATERAL (SELECT upcast((e.metadata->>'schema_version')::integer, e.data) AS data) u
     WHERE e.stream_id LIKE 'account-%'
     GROUP BY e.stream_id;
    COMMIT;
    -- The switch: one short transaction.
    ALTER TABLE balances RENAME TO balances_previous;
    ALTER TABLE balances_next RENAME TO balances;
    DROP TABLE balances_previous;
    COMMIT;
END
$$;
