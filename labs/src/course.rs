//! The course's structure and timing, read from `course.toml` at the repository root: the one
//! place each activity declares its minutes. The labs, the run sheet and the checks share it.

use serde::{Deserialize, Serialize};

use crate::pg::Capability;

/// The file, compiled in, so `labs list` works from any directory.
pub const COURSE_TOML: &str = include_str!("../../course.toml");

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Course {
    pub course: CourseInfo,
    #[serde(rename = "activity")]
    pub activities: Vec<Activity>,
    #[serde(rename = "segment")]
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CourseInfo {
    pub title: String,
    pub session_minutes: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Activity {
    pub number: u32,
    /// The activity's name everywhere: book folder, lab module, test file, fixtures folder.
    pub id: String,
    pub title: String,
    pub minutes: u32,
    pub status: Status,
    pub needs: Vec<Capability>,
    /// One line: what the lab does.
    pub lab: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ready,
    Draft,
}

/// A slot of the run sheet: an activity, or a segment of its own (welcome, break, close).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    pub activity: Option<String>,
    pub id: Option<String>,
    pub title: Option<String>,
    pub minutes: Option<u32>,
    pub facilitator: Option<String>,
    pub room: Option<String>,
    pub remote: Option<String>,
    pub fallback: Option<String>,
}

impl Activity {
    /// `book/src/01-log-sleuth`, `fixtures/01-log-sleuth`.
    pub fn folder(&self) -> String {
        format!("{:02}-{}", self.number, self.id)
    }
    /// `log_sleuth`: the Rust module and test file name.
    pub fn module(&self) -> String {
        self.id.replace('-', "_")
    }
}

impl Course {
    /// The course as compiled into this binary.
    pub fn load() -> Course {
        Course::parse(COURSE_TOML).expect("course.toml is checked by the tests")
    }

    pub fn parse(text: &str) -> Result<Course, String> {
        let course: Course = toml::from_str(text).map_err(|e| format!("course.toml: {e}"))?;
        course.validate()?;
        Ok(course)
    }

    pub fn activity(&self, id: &str) -> Option<&Activity> {
        self.activities.iter().find(|a| a.id == id)
    }

    /// Every segment with its resolved title and minutes, in order.
    pub fn run_sheet(&self) -> Vec<(String, u32, &Segment)> {
        self.segments
            .iter()
            .map(|s| match s.activity.as_deref().and_then(|id| self.activity(id)) {
                Some(a) => (format!("Activity {}: {}", a.number, a.title), a.minutes, s),
                None => (s.title.clone().unwrap_or_default(), s.minutes.unwrap_or(0), s),
            })
            .collect()
    }

    /// Checks the course adds up; each message names what to fix in course.toml.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for (i, a) in self.activities.iter().enumerate() {
            if a.number as usize != i + 1 {
                problems.push(format!("activity '{}' has number {} but is listed as #{}", a.id, a.number, i + 1));
            }
            let used = self.segments.iter().filter(|s| s.activity.as_deref() == Some(a.id.as_str())).count();
            if used != 1 {
                problems.push(format!("activity '{}' appears {used} times in the run sheet; it must appear once", a.id));
            }
        }
        for s in &self.segments {
            match (&s.activity, &s.id) {
                (Some(id), None) => {
                    if self.activity(id).is_none() {
                        problems.push(format!("run sheet segment names unknown activity '{id}'"));
                    }
                    if s.minutes.is_some() || s.title.is_some() {
                        problems.push(format!("run sheet segment for '{id}' repeats minutes or title; they come from [[activity]]"));
                    }
                }
                (None, Some(id)) => {
                    if s.minutes.unwrap_or(0) == 0 || s.title.is_none() {
                        problems.push(format!("run sheet segment '{id}' needs a title and minutes"));
                    }
                }
                _ => problems.push("each run sheet segment has either `activity` or `id`, not both or neither".into()),
            }
        }
        let total: u32 = self.run_sheet().iter().map(|(_, m, _)| m).sum();
        if total != self.course.session_minutes {
            problems.push(format!(
                "the run sheet adds up to {total} minutes, but session_minutes is {}",
                self.course.session_minutes
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("course.toml: {}", problems.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_course_adds_up() {
        let course = Course::parse(COURSE_TOML).unwrap();
        assert_eq!(course.activities.len(), 6);
        let total: u32 = course.run_sheet().iter().map(|(_, m, _)| m).sum();
        assert_eq!(total, course.course.session_minutes);
    }

    #[test]
    fn a_run_sheet_that_does_not_add_up_is_rejected() {
        let broken = COURSE_TOML.replace("session_minutes = 90", "session_minutes = 60");
        let err = Course::parse(&broken).unwrap_err();
        assert!(err.contains("adds up to 90 minutes, but session_minutes is 60"), "{err}");
    }

    #[test]
    fn an_activity_missing_from_the_run_sheet_is_rejected() {
        let broken = COURSE_TOML.replacen("[[segment]]\nactivity = \"outage\"\n", "", 1);
        let err = Course::parse(&broken).unwrap_err();
        assert!(err.contains("'outage' appears 0 times"), "{err}");
    }
}
