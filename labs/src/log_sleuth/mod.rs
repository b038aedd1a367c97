//! Activity 1, Event-Driven Detective: Log Sleuth.
//!
//! - [`audit`]: `labs sleuth audit`, the anomalies in a JSON-lines event log.
//! - [`generate`]: `labs sleuth generate`, a fresh incident log and its answer key.
//! - [`scenario`]: `labs run log-sleuth`, two writers commit out of order against a real server;
//!   a consumer that trusts positions skips an event, one behind the xid8 watermark does not.
//!   `labs check log-sleuth` judges the attendee's read, `exercises/01-log-sleuth/poll.sql`.

pub mod audit;
pub mod findings;
pub mod generate;
pub mod scenario;

use tokio_postgres::types::Type;
use tokio_postgres::{Client, Row, Statement};
use uuid::Uuid;

use crate::error::LabError;
use crate::lab::{CheckReport, Ctx, Exercise, ExerciseFile, Lab};
use crate::pg::Capability;
use crate::store::{Checkpoint, TransactionId};

/// `labs run log-sleuth` and `labs check log-sleuth`.
pub struct LogSleuth;

/// `labs run log-sleuth` takes no flags of its own.
#[derive(clap::Args)]
pub struct RunArgs {}

impl Lab for LogSleuth {
    const ID: &'static str = "log-sleuth";
    const NEEDS: &'static [Capability] = &[];
    type Args = RunArgs;
    type Report = scenario::LabReport;

    async fn run(&self, _: RunArgs, ctx: &Ctx) -> Result<scenario::LabReport, LabError> {
        ctx.with_server(Self::NEEDS, async |server| {
            scenario::run(server, &[Reader::naive(), Reader::watermark()]).await
        })
        .await
    }

    fn exercise(&self) -> Option<Exercise> {
        Some(EXERCISE)
    }

    async fn check(&self, file: &ExerciseFile, ctx: &Ctx) -> Result<CheckReport, LabError> {
        let reader = Reader::exercise(file);
        ctx.with_server(Self::NEEDS, async |server| scenario::check(server, &reader, file).await).await
    }
}

pub const EXERCISE: Exercise = Exercise {
    file: "01-log-sleuth/poll.sql",
    template: include_str!("../../../exercises/01-log-sleuth/poll.sql"),
    task: "the consumer's read: never skip, never repeat an event",
};

/// An event as a consumer reads it: the six columns every reader returns.
#[derive(Clone, Debug)]
pub struct EventRow {
    pub position: i64,
    pub transaction_id: TransactionId,
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: i64,
    pub event_type: String,
}

impl EventRow {
    fn from_row(row: &Row) -> EventRow {
        EventRow {
            position: row.get(0),
            transaction_id: row.get(1),
            event_id: row.get(2),
            stream_id: row.get(3),
            version: row.get(4),
            event_type: row.get(5),
        }
    }

    /// Where a consumer is after this event.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint { transaction_id: self.transaction_id, position: self.position, ..Checkpoint::START }
    }
}

/// The columns, in order, that every reader returns.
const COLUMNS: [(&str, Type); 6] = [
    ("position", Type::INT8),
    ("transaction_id", Type::XID8),
    ("event_id", Type::UUID),
    ("stream_id", Type::TEXT),
    ("version", Type::INT8),
    ("type", Type::TEXT),
];

/// A consumer's read: SQL taking the checkpoint ($1 xid8, $2 bigint) and returning [`COLUMNS`].
#[derive(Clone, Debug)]
pub struct Reader {
    pub name: &'static str,
    /// One line for the timeline's header.
    pub describe: String,
    sql: String,
    /// The attendee's file, whose errors are reported at its line and column.
    file: Option<ExerciseFile>,
}

/// The reference read, shown by `labs run log-sleuth`; the same SQL as the exercise's solution.
const WATERMARK_SQL: &str = include_str!("../../../exercises/01-log-sleuth/poll.solution.sql");
/// The broken read the lab demonstrates, kept here so `labs run` shows it whatever the
/// attendee does to their exercise file.
const NAIVE_SQL: &str = "SELECT position, transaction_id, event_id, stream_id, version, type
  FROM events WHERE position > $2 ORDER BY position LIMIT 100";

impl Reader {
    /// `WHERE position > checkpoint`: what most ad-hoc event stores do first.
    pub fn naive() -> Reader {
        Reader {
            name: "naive",
            describe: "WHERE position > checkpoint ORDER BY position".into(),
            sql: NAIVE_SQL.into(),
            file: None,
        }
    }

    /// Behind the xid8 watermark: the reference solution.
    pub fn watermark() -> Reader {
        Reader {
            name: "watermark",
            describe: "WHERE (transaction_id, position) > checkpoint AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())".into(),
            sql: WATERMARK_SQL.into(),
            file: None,
        }
    }

    /// The attendee's read.
    pub fn exercise(file: &ExerciseFile) -> Reader {
        Reader {
            name: "exercise",
            describe: format!("your read in {}", file.shown),
            sql: file.sql.clone(),
            file: Some(file.clone()),
        }
    }

    /// Prepares the read on a consumer's session, checking it takes the checkpoint and returns
    /// the six columns. An attendee's mistake comes back as [`LabError::Exercise`] with its
    /// line and column.
    pub async fn prepare(&self, client: &Client) -> Result<Statement, LabError> {
        let statement = match client.prepare_typed(&self.sql, &[Type::XID8, Type::INT8]).await {
            Ok(statement) => statement,
            Err(e) => {
                return Err(match &self.file {
                    Some(file) => LabError::Exercise(file.locate(&e, 0)),
                    None => LabError::db(format!("preparing the {} read", self.name))(e),
                })
            }
        };
        let got: Vec<String> = statement.columns().iter().map(|c| format!("{} {}", c.name(), c.type_())).collect();
        let want: Vec<String> = COLUMNS.iter().map(|(name, ty)| format!("{name} {ty}")).collect();
        if got != want {
            let whose = self.file.as_ref().map_or(self.name.to_string(), |f| f.shown.clone());
            return Err(LabError::Exercise(format!(
                "{whose}: the read must return ({}), in that order; it returns ({})",
                want.join(", "),
                got.join(", ")
            )));
        }
        Ok(statement)
    }

    pub async fn poll(
        client: &Client,
        statement: &Statement,
        after: Checkpoint,
    ) -> Result<Vec<EventRow>, tokio_postgres::Error> {
        Ok(client
            .query(statement, &[&after.transaction_id, &after.position])
            .await?
            .iter()
            .map(EventRow::from_row)
            .collect())
    }
}
