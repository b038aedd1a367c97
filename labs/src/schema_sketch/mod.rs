//! Activity 3, Safe Sandbox: Schema Sketch. A bank on the reference event store.
//!
//! - [`bank`]: accounts as streams, the transfer called as a service calls it (retrying on a
//!   version conflict), and the replay that rebuilds balances. The transfer itself is SQL: the
//!   attendee's `exercises/03-schema-sketch/transfer.sql`, or its reference solution.
//! - [`scenario`]: `labs run schema-sketch`, a scripted day of transfers with a rejected
//!   overdraft and two tellers racing on one account.
//! - [`check`]: `labs check schema-sketch`, scripted races that each defeat one half-fix.
//!
//! `labs schema verify` (an attendee's own schema against the store's contract) lives with the
//! store, in `store::conformance`.

pub mod bank;
pub mod check;
pub mod scenario;

use crate::error::LabError;
use crate::lab::{CheckReport, Ctx, Exercise, ExerciseFile, Lab};
use crate::pg::Capability;

/// `labs run schema-sketch` and `labs check schema-sketch`.
pub struct SchemaSketch;

/// `labs run schema-sketch` takes no flags of its own.
#[derive(clap::Args)]
pub struct RunArgs {}

impl Lab for SchemaSketch {
    const ID: &'static str = "schema-sketch";
    const NEEDS: &'static [Capability] = &[];
    type Args = RunArgs;
    type Report = scenario::LabReport;

    async fn run(&self, _: RunArgs, ctx: &Ctx) -> Result<scenario::LabReport, LabError> {
        ctx.with_server(Self::NEEDS, async |server| scenario::run(server).await).await
    }

    fn exercise(&self) -> Option<Exercise> {
        Some(EXERCISE)
    }

    async fn check(&self, file: &ExerciseFile, ctx: &Ctx) -> Result<CheckReport, LabError> {
        ctx.with_server(Self::NEEDS, async |server| check::check(server, file).await).await
    }
}

pub const EXERCISE: Exercise = Exercise {
    file: "03-schema-sketch/transfer.sql",
    template: include_str!("../../../exercises/03-schema-sketch/transfer.sql"),
    task: "the transfer as a SQL function: never overdraw, under concurrency",
};
