-- The receiver is never checked: money moves to an account nobody opened.
-- fails: unknown-account

CREATE OR REPLACE FUNCTION transfer(
    p_transfer_id  uuid,
    p_from         text,
    p_to           text,
    p_amount_cents bigint
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    sender   account_state := load_account(p_from);
    receiver account_state := load_account(p_to);
BEGIN
    IF p_amount_cents <= 0 THEN
        RETURN 'the amount must be positive';
    ELSIF NOT sender.opened THEN
        RETURN format('there is no account named %s', p_from);
    ELSIF p_from = p_to THEN
        RETURN 'a transfer needs two different accounts';
    ELSIF sender.balance_cents < p_amount_cents THEN
        RETURN format('%s has %s, the overdraft rule forbids going below 0.00',
                      p_from, to_char(sender.balance_cents / 100.0, 'FM999999990.00'));
    END IF;

    PERFORM lock_streams(ARRAY['account-' || p_from, 'account-' || p_to]);
    -- The rule was checked at sender.version: the debit is valid only there.
    PERFORM append_to_stream('account-' || p_from, sender.version,
        ARRAY[transfer_event_id(p_transfer_id, 'sent')], ARRAY['TransferSent'],
        ARRAY[jsonb_build_object('transfer_id', p_transfer_id, 'to', p_to, 'amount_cents', p_amount_cents)], NULL);
    PERFORM append_to_stream('account-' || p_to, NULL,
        ARRAY[transfer_event_id(p_transfer_id, 'received')], ARRAY['TransferReceived'],
        ARRAY[jsonb_build_object('transfer_id', p_transfer_id, 'from', p_from, 'amount_cents', p_amount_cents)], NULL);
    RETURN NULL;
END
$$;
