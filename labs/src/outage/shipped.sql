-- The warehouse's records, as `labs check outage` gives them to the attendee's query: for each
-- order the consumer shipped before the crash, what it read from the store. The event id is the
-- order's identity (the client made it); the transaction id and the position are what the store
-- said at the time, and recovery may hand them to other orders.
CREATE TABLE shipped (
    order_no       int PRIMARY KEY,
    event_id       uuid NOT NULL UNIQUE,
    transaction_id xid8 NOT NULL,
    position       bigint NOT NULL
);
