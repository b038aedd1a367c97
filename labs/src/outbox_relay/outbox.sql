-- The transactional outbox: what this service publishes to other services, written in the same
-- transaction as the change it announces. In the lab each writer calls the reference store's
-- append_to_stream first and inserts the outbox row after it, so both commit or neither does.
-- A relay reads this table (or the WAL, through a replication slot) and hands each row to the
-- consumers. Debezium's outbox router expects the same roles under other names: id (event_id
-- here), aggregatetype, aggregateid, type, payload.

-- ANCHOR: outbox
CREATE TABLE outbox (
    -- The naive relay's cursor (`WHERE id > last`). Handed out at INSERT, so two transactions
    -- can take 1 and 2 and commit 2 first: NOT commit order.
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction, for the watermark relay, as events.transaction_id in the store.
    transaction_id    xid8   NOT NULL DEFAULT pg_current_xact_id(),
    -- The consumers' deduplication key: every relay delivers at least once.
    event_id          uuid   NOT NULL UNIQUE,
    aggregate_type    text   NOT NULL,
    -- The stream the event belongs to: consumers must keep each aggregate's order.
    aggregate_id      text   NOT NULL,
    aggregate_version bigint NOT NULL,
    type              text   NOT NULL,
    payload           jsonb  NOT NULL
);

-- The watermark relay reads in (transaction_id, id) order.
CREATE INDEX outbox_transaction_order ON outbox (transaction_id, id);
-- ANCHOR_END: outbox
