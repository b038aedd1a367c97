-- The lab's own measuring helpers, loaded after the reference solution (they call its upcast).

-- The account's state folded from its first event up to p_until (NULL: all): an aggregate load
-- without any snapshot, and the state a snapshot taken at p_until holds.
CREATE FUNCTION fold_account(p_stream_id text, p_until bigint)
RETURNS TABLE (state jsonb, version bigint)
LANGUAGE plpgsql AS $$
DECLARE
    folded_state   jsonb := '{}';
    folded_version bigint := 0;
    e record;
BEGIN
    FOR e IN SELECT ev.version, ev.type, ev.data, ev.metadata FROM events ev
              WHERE ev.stream_id = p_stream_id AND (p_until IS NULL OR ev.version <= p_until)
              ORDER BY ev.version
    LOOP
        folded_state := account_apply(folded_state, e.type, upcast((e.metadata->>'schema_version')::integer, e.data));
        folded_version := e.version;
    END LOOP;
    RETURN QUERY SELECT folded_state, folded_version;
END
$$;
