//! Activity 7, Outbox Relay: the transactional outbox, the relays that read it, the consumers
//! that must apply what they deliver exactly once, and the replication slot someone must watch.
//!
//! - [`relay`]: the writer (the store's append, then the outbox row, in one transaction) and
//!   the three relays: a cursor on the outbox id, the xid8 watermark, a logical replication slot.
//! - [`relays`]: part A of `labs run outbox-relay`, the three relays side by side while one
//!   writer holds its transaction open.
//! - [`idle_slot`]: part B, a slot nobody reads: WAL kept, then (capped) the slot lost.
//! - [`check`]: `labs check outbox-relay`, the attendee's consumer
//!   (`exercises/07-outbox-relay/consumer.sql`) under scripted crashes, redeliveries from a
//!   slot, poison events and competing workers.

pub mod check;
pub mod idle_slot;
pub mod relay;
pub mod relays;

use std::fmt;

use serde::Serialize;

use crate::error::LabError;
use crate::lab::{CheckReport, Ctx, Exercise, ExerciseFile, Lab, Report};
use crate::pg::Capability;

/// `labs run outbox-relay` and `labs check outbox-relay`.
pub struct OutboxRelay;

/// `labs run outbox-relay` takes no flags of its own.
#[derive(clap::Args)]
pub struct RunArgs {}

impl Lab for OutboxRelay {
    const ID: &'static str = "outbox-relay";
    /// `wal_level = logical`: the slot relay, the idle slot, and the check's redelivery.
    const NEEDS: &'static [Capability] = &[Capability::Logical];
    type Args = RunArgs;
    type Report = LabReport;

    async fn run(&self, _: RunArgs, ctx: &Ctx) -> Result<LabReport, LabError> {
        ctx.with_server(Self::NEEDS, async |server| run(server).await).await
    }

    fn exercise(&self) -> Option<Exercise> {
        Some(EXERCISE)
    }

    async fn check(&self, file: &ExerciseFile, ctx: &Ctx) -> Result<CheckReport, LabError> {
        ctx.with_server(Self::NEEDS, async |server| check::check(server, file).await).await
    }
}

pub const EXERCISE: Exercise = Exercise {
    file: "07-outbox-relay/consumer.sql",
    template: include_str!("../../../exercises/07-outbox-relay/consumer.sql"),
    task: "the consumer: each event applied once, each stream in order, a poison event parked",
};

/// Both parts of the lab on one fresh server: part A first (it drops its slot), then part B
/// (which caps what slots may keep, server-wide).
pub async fn run(server: &crate::pg::Server) -> Result<LabReport, LabError> {
    let relays = relays::run(server).await?;
    let idle_slot = idle_slot::run(server).await?;
    Ok(LabReport { lab: "outbox-relay", relays, idle_slot })
}

/// What `labs run outbox-relay` prints.
#[derive(Clone, Debug, Serialize)]
pub struct LabReport {
    pub lab: &'static str,
    pub relays: relays::RelayRace,
    pub idle_slot: idle_slot::IdleSlot,
}

impl fmt::Display for LabReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "OUTBOX RELAY: orders go to the event store and the outbox in one transaction.")?;
        writeln!(f)?;
        write!(f, "{}", self.relays)?;
        writeln!(f)?;
        write!(f, "{}", self.idle_slot)
    }
}

impl Report for LabReport {}
