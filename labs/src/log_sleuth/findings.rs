//! What the audit reports, and what an answer key lists: the same type, so a generated
//! incident's key and the audit of that incident can be compared field by field.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The same event_id again, with the same content: a retry stored twice or a redelivery.
    DuplicateEvent,
    /// The same event_id again, with different content: two different events under one id.
    ConflictingDuplicate,
    /// A stream skips versions: an event was lost or never written.
    VersionGap,
    /// Two different events claim the same version of one stream: a lost optimistic-concurrency check.
    VersionConflict,
    /// A stream's version appears after a higher one in log order.
    OutOfOrder,
    /// The global position goes backwards from one line to the next.
    PositionRegression,
}

impl FindingKind {
    pub const ALL: [FindingKind; 6] = [
        FindingKind::DuplicateEvent,
        FindingKind::ConflictingDuplicate,
        FindingKind::VersionGap,
        FindingKind::VersionConflict,
        FindingKind::OutOfOrder,
        FindingKind::PositionRegression,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::DuplicateEvent => "duplicate_event",
            FindingKind::ConflictingDuplicate => "conflicting_duplicate",
            FindingKind::VersionGap => "version_gap",
            FindingKind::VersionConflict => "version_conflict",
            FindingKind::OutOfOrder => "out_of_order",
            FindingKind::PositionRegression => "position_regression",
        }
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One anomaly, at one line (1-based) of one log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub line: u64,
    pub stream_id: String,
    pub event_id: String,
    /// duplicates: where the event_id first appeared; version_conflict: where the version was first claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_line: Option<u64>,
    /// version_conflict and out_of_order: the version at this line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// out_of_order: the highest version of the stream already seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_version: Option<u64>,
    /// version_gap: the first and last missing version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_to: Option<u64>,
    /// position_regression: this line's position and the previous line's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_position: Option<i64>,
}

impl Finding {
    pub fn new(kind: FindingKind, line: u64, stream_id: &str, event_id: &str) -> Finding {
        Finding {
            kind,
            line,
            stream_id: stream_id.to_string(),
            event_id: event_id.to_string(),
            first_line: None,
            version: None,
            after_version: None,
            missing_from: None,
            missing_to: None,
            position: None,
            previous_position: None,
        }
    }

    /// One sentence for people, without the file and line (the caller prefixes those).
    pub fn explain(&self) -> String {
        let short = short_id(&self.event_id);
        match self.kind {
            FindingKind::DuplicateEvent => format!(
                "event {short} in {} is the same event as line {} again",
                self.stream_id,
                self.first_line.unwrap_or(0)
            ),
            FindingKind::ConflictingDuplicate => format!(
                "event {short} in {} reuses the id of line {} with different content",
                self.stream_id,
                self.first_line.unwrap_or(0)
            ),
            FindingKind::VersionGap => {
                let (from, to) = (self.missing_from.unwrap_or(0), self.missing_to.unwrap_or(0));
                let missing = if from == to {
                    format!("version {from} is missing")
                } else {
                    format!("versions {from}-{to} are missing")
                };
                format!("{} skips: {missing} before event {short}", self.stream_id)
            }
            FindingKind::VersionConflict => format!(
                "{} version {} is claimed again by event {short} (first claimed at line {})",
                self.stream_id,
                self.version.unwrap_or(0),
                self.first_line.unwrap_or(0)
            ),
            FindingKind::OutOfOrder => format!(
                "{} version {} appears after version {} (event {short})",
                self.stream_id,
                self.version.unwrap_or(0),
                self.after_version.unwrap_or(0)
            ),
            FindingKind::PositionRegression => format!(
                "position {} comes after position {} (event {short} in {})",
                self.position.unwrap_or(0),
                self.previous_position.unwrap_or(0),
                self.stream_id
            ),
        }
    }
}

/// The first 8 characters of an event id: enough to find it in the log.
fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
