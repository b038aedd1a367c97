-- Pessimistic: the sender's stream is locked while the transfer decides, then the receiver's.
-- No overdraft, no conflict; but the locks are taken in request order (sender, then
-- receiver), one call each: two opposite transfers each hold one stream's lock and wait for
-- the other's.
-- fails: opposite-transfers

CREATE OR REPLACE FUNCTION transfer(
    p_transfer_id  uuid,
    p_from         text,
    p_to           text,
    p_amount_cents bigint
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    sender   account_state;
    receiver account_state;
BEGIN
    -- Hold the sender's stream still while deciding, so nothing can change under the rule...
    PERFORM lock_streams(ARRAY['account-' || p_from]);
    sender := load_account(p_from);
    receiver := load_account(p_to);
    IF p_amount_cents <= 0 THEN
        RETURN 'the amount must be positive';
    ELSIF NOT sender.opened THEN
        RETURN format('there is no account named %s', p_from);
    ELSIF NOT receiver.opened THEN
        RETURN format('there is no account named %s', p_to);
    ELSIF p_from = p_to THEN
        RETURN 'a transfer needs two different accounts';
    ELSIF sender.balance_cents < p_amount_cents THEN
        RETURN format('%s has %s, the overdraft rule forbids going below 0.00',
                      p_from, to_char(sender.balance_cents / 100.0, 'FM999999990.00'));
    END IF;

    -- ...then the receiver's: the two locks in request order.
    PERFORM lock_streams(ARRAY['account-' || p_to]);
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
