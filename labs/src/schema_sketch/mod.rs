//! Activity 3, Safe Sandbox: Schema Sketch. A bank on the reference event store.
//!
//! - [`bank`]: accounts as streams, the overdraft rule, and the replay that rebuilds balances.
//! - [`scenario`]: `labs run schema-sketch`, a scripted day of transfers with a rejected
//!   overdraft and two tellers racing on one account.
//! - [`exercise`] (the attendee's file) and [`solution`]: the transfer's command handler,
//!   checked by `labs check schema-sketch` ([`check`]).
//!
//! `labs schema verify` (an attendee's own schema against the store's contract) lives with the
//! store, in `store::conformance`.

pub mod bank;
pub mod check;
pub mod exercise;
pub mod scenario;
pub mod solution;
