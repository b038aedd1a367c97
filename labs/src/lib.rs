//! The workshop's labs: one module per activity, a PostgreSQL provider every lab gets its
//! server from, and the reference event store the labs build on.
//!
//! Dependencies point one way: activity modules use `pg` and `store`; `pg` and `store` know
//! nothing of the activities; the `labs` binary (main.rs) is the only place that prints.

pub mod course;
pub mod log_sleuth;
pub mod mythbusting;
pub mod outage;
pub mod pg;
pub mod reflection_wall;
pub mod rng;
pub mod schema_sketch;
pub mod store;
pub mod wal_race;
