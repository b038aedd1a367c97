-- Exercise, activity 3 (Schema Sketch): a transfer that never overdraws an account.
--
-- `labs check schema-sketch` loads the reference event store (append_to_stream, read_all_after),
-- the bank's helpers, then this file, and calls transfer() the way a service would: each call
-- in its own transaction; when it fails with SQLSTATE ES409 (wrong expected version: someone
-- else wrote to the stream first) the caller rolls back, waits a moment and calls it again.
--
-- What you have:
--   load_account(name) -> (opened boolean, balance_cents bigint, version bigint)
--       the account 'account-' || name as its stream says now, and the version it was read at
--   append_to_stream(stream_id, expected_version, event_ids uuid[], types text[], data jsonb[], metadata jsonb[])
--       expected_version: NULL any; 0 no stream yet; N exactly N, else it raises ES409
--   lock_streams(stream_ids text[])
--       takes the locks of every stream the transaction appends to, in one fixed order, before
--       anything is written. The store refuses (ES428) an append to a second stream that was
--       not locked before the transaction's first write: that append could reach readers out of
--       its stream's order (labs/src/store/schema.sql explains why).
--   transfer_event_id(transfer_id, side) -> uuid: the same ids every time for one transfer
--
-- As written it looks right and passes any test that calls it once: it loads both accounts,
-- checks the overdraft rule, locks both streams and appends the debit and the credit. Under
-- concurrency it overdraws accounts; the check shows you how, every time.
--
-- Your task: change it until `labs check schema-sketch` passes. Save; run the check again.
--
-- Hints, one at a time:
-- 1. The overdraft rule was checked against the sender's balance at sender.version. What
--    should the debit's append say about that version?
-- 2. A conflict is not a refusal: let ES409 reach the caller, which reloads and decides again.
--    Catching it and returning a reason refuses transfers the account could afford.
-- 3. Keep lock_streams as it is: one call with both streams, after the decision. Locking the
--    sender alone while deciding, then the receiver, makes two opposite transfers (alice -> bob,
--    bob -> alice) wait for each other for ever: "deadlock detected".

CREATE OR REPLACE FUNCTION transfer(
    p_transfer_id  uuid,    -- the request's id
    p_from         text,    -- account names; their streams are 'account-' || name
    p_to           text,
    p_amount_cents bigint
) RETURNS text              -- NULL: both sides written; otherwise why it was refused (nothing written)
LANGUAGE plpgsql AS $$
DECLARE
    sender   account_state := load_account(p_from);
    receiver account_state := load_account(p_to);
BEGIN
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

    -- Both streams' locks, in one call, before anything is written (the store's order rule).
    PERFORM lock_streams(ARRAY['account-' || p_from, 'account-' || p_to]);
    PERFORM append_to_stream('account-' || p_from, NULL,
        ARRAY[transfer_event_id(p_transfer_id, 'sent')], ARRAY['TransferSent'],
        ARRAY[jsonb_build_object('transfer_id', p_transfer_id, 'to', p_to, 'amount_cents', p_amount_cents)], NULL);
    PERFORM append_to_stream('account-' || p_to, NULL,
        ARRAY[transfer_event_id(p_transfer_id, 'received')], ARRAY['TransferReceived'],
        ARRAY[jsonb_build_object('transfer_id', p_transfer_id, 'from', p_from, 'amount_cents', p_amount_cents)], NULL);
    RETURN NULL;
END
$$;
