//! The course's structure and timing, read from `course.toml` at the repository root: the one
//! place each activity declares its minutes. The labs, the run sheet and the checks share it.

use serde::{Deserialize, Serialize};

use crate::pg::Capability;
use crate::settings::{locate, SettingsError};

/// The core variant: `[course]`'s session and each activity's own minutes.
pub const CORE: &str = "core";

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Course {
    pub course: CourseInfo,
    #[serde(rename = "activity")]
    pub activities: Vec<Activity>,
    #[serde(rename = "segment")]
    pub segments: Vec<Segment>,
    /// Longer variants of the same flow (the half day).
    #[serde(rename = "variant", default)]
    pub variants: Vec<Variant>,
}

/// A longer run of the same course: the core's segments plus those marked for it, and its own
/// minutes for the activities it gives more time.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub id: String,
    pub title: String,
    pub session_minutes: u32,
    /// Activity id to minutes in this variant; the core's minutes where an activity is not listed.
    #[serde(default)]
    pub minutes: std::collections::BTreeMap<String, u32>,
}

/// One cohort's settings (`cohort.toml`): what an instructor changes when forking the kit.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cohort {
    pub title: String,
    /// YYYY-MM-DD.
    pub date: String,
    /// "core" (the 90 minutes) or a `[[variant]]` id of course.toml.
    pub variant: String,
    /// The poll's myths, in order (ids in fixtures/02-mythbusting/myths.toml).
    pub poll: Vec<String>,
    /// Activities this cohort does not run: their slots become open lab time, their chapters
    /// and fixtures leave the book and the handouts.
    #[serde(default)]
    pub skip: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct CohortFile {
    cohort: Cohort,
}

impl Cohort {
    /// Parses and checks a cohort against the course; every problem names its field and line.
    pub fn parse(text: &str, course: &Course) -> Result<Cohort, SettingsError> {
        let cohort =
            toml::from_str::<CohortFile>(text).map_err(|e| SettingsError::parse("cohort.toml", text, &e))?.cohort;
        let at = |needle: &str| locate("cohort.toml", text, needle);
        let mut problems = Vec::new();
        let d: Vec<&str> = cohort.date.split('-').collect();
        let date_ok = d.len() == 3
            && d[0].len() == 4
            && d[1].len() == 2
            && d[2].len() == 2
            && d.iter().all(|p| p.chars().all(|c| c.is_ascii_digit()))
            && (1..=12).contains(&d[1].parse::<u32>().unwrap_or(0))
            && (1..=31).contains(&d[2].parse::<u32>().unwrap_or(0));
        if !date_ok {
            problems.push(format!("{}: date = \"{}\" is not YYYY-MM-DD", at("date"), cohort.date));
        }
        if cohort.variant != CORE && !course.variants.iter().any(|v| v.id == cohort.variant) {
            let ids: Vec<&str> = std::iter::once(CORE).chain(course.variants.iter().map(|v| v.id.as_str())).collect();
            problems.push(format!(
                "{}: variant = \"{}\" is not one of: {}",
                at("variant"),
                cohort.variant,
                ids.join(", ")
            ));
        }
        for id in &cohort.skip {
            if course.activity(id).is_none() {
                let ids: Vec<&str> = course.activities.iter().map(|a| a.id.as_str()).collect();
                problems.push(format!(
                    "{}: skip names unknown activity '{id}'; the activities are: {}",
                    at("skip"),
                    ids.join(", ")
                ));
            }
        }
        if cohort.skip.len() == course.activities.len() {
            problems.push(format!("{}: skip leaves no activity to run", at("skip")));
        }
        if cohort.poll.is_empty() && !cohort.skip.iter().any(|s| s == "mythbusting") {
            problems.push(format!(
                "{}: poll is empty: list the myths the poll uses (see `labs run mythbusting --list`)",
                at("poll")
            ));
        }
        if problems.is_empty() {
            Ok(cohort)
        } else {
            Err(SettingsError::Invalid { file: "cohort.toml".into(), problems })
        }
    }

    pub fn runs(&self, activity: &str) -> bool {
        !self.skip.iter().any(|s| s == activity)
    }
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
    /// What the facilitator needs ready for it: printouts, the poll, a projector.
    #[serde(default)]
    pub materials: String,
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
    pub materials: Option<String>,
    pub fallback: Option<String>,
    /// Only in these variants (e.g. ["half-day"]); in every variant when absent.
    pub variants: Option<Vec<String>>,
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
    /// Parses and checks the course; every problem names its field and line in course.toml.
    pub fn parse(text: &str) -> Result<Course, SettingsError> {
        let course: Course = toml::from_str(text).map_err(|e| SettingsError::parse("course.toml", text, &e))?;
        let problems = course.problems();
        if !problems.is_empty() {
            let problems = problems
                .into_iter()
                .map(|(needle, problem)| match needle {
                    Some(needle) => format!("{}: {problem}", locate("course.toml", text, &needle)),
                    None => problem,
                })
                .collect();
            return Err(SettingsError::Invalid { file: "course.toml".into(), problems });
        }
        Ok(course)
    }

    pub fn activity(&self, id: &str) -> Option<&Activity> {
        self.activities.iter().find(|a| a.id == id)
    }

    /// Every segment of the core variant with its resolved title and minutes, in order.
    pub fn run_sheet(&self) -> Vec<(String, u32, &Segment)> {
        self.run_sheet_of(CORE)
    }

    /// Every segment of `variant` ("core" or a `[[variant]]` id), in order.
    pub fn run_sheet_of(&self, variant: &str) -> Vec<(String, u32, &Segment)> {
        let overrides = self.variants.iter().find(|v| v.id == variant).map(|v| &v.minutes);
        self.segments
            .iter()
            .filter(|s| s.variants.as_ref().is_none_or(|only| only.iter().any(|v| v == variant)))
            .map(|s| match s.activity.as_deref().and_then(|id| self.activity(id)) {
                Some(a) => {
                    let minutes = overrides.and_then(|m| m.get(&a.id)).copied().unwrap_or(a.minutes);
                    (format!("Activity {}: {}", a.number, a.title), minutes, s)
                }
                None => (s.title.clone().unwrap_or_default(), s.minutes.unwrap_or(0), s),
            })
            .collect()
    }

    /// The run sheet as `cohort` runs it: its variant, and a skipped activity's slot kept (the
    /// session still adds up) as open lab time.
    pub fn run_sheet_for(&self, cohort: &Cohort) -> Vec<(String, u32, &Segment, bool)> {
        self.run_sheet_of(&cohort.variant)
            .into_iter()
            .map(|(title, minutes, s)| match s.activity.as_deref() {
                Some(id) if !cohort.runs(id) => {
                    (format!("Open lab time ({title}: not run with this cohort)"), minutes, s, false)
                }
                _ => (title, minutes, s, true),
            })
            .collect()
    }

    /// The session length of a variant.
    pub fn session_minutes(&self, variant: &str) -> u32 {
        self.variants.iter().find(|v| v.id == variant).map_or(self.course.session_minutes, |v| v.session_minutes)
    }

    /// What does not add up, each with the text that finds its line in course.toml (the
    /// field that is wrong) and what to fix.
    fn problems(&self) -> Vec<(Option<String>, String)> {
        let mut problems: Vec<(Option<String>, String)> = Vec::new();
        let mut add = |needle: Option<String>, problem: String| problems.push((needle, problem));
        for (i, a) in self.activities.iter().enumerate() {
            let at = Some(format!("id = \"{}\"", a.id));
            if a.materials.trim().is_empty() {
                add(
                    at.clone(),
                    format!(
                        "activity '{}' says no `materials` (the run sheet's Materials column; \"none\" if none)",
                        a.id
                    ),
                );
            }
            if a.number as usize != i + 1 {
                add(at.clone(), format!("activity '{}' has number {} but is listed as #{}", a.id, a.number, i + 1));
            }
            let used = self.segments.iter().filter(|s| s.activity.as_deref() == Some(a.id.as_str())).count();
            if used != 1 {
                add(at, format!("activity '{}' appears {used} times in the run sheet; it must appear once", a.id));
            }
        }
        for s in &self.segments {
            match (&s.activity, &s.id) {
                (Some(id), None) => {
                    let at = Some(format!("activity = \"{id}\""));
                    if self.activity(id).is_none() {
                        add(at.clone(), format!("run sheet segment names unknown activity '{id}'"));
                    }
                    if s.minutes.is_some() || s.title.is_some() {
                        add(
                            at,
                            format!(
                                "run sheet segment for '{id}' repeats minutes or title; they come from [[activity]]"
                            ),
                        );
                    }
                }
                (None, Some(id)) => {
                    let at = Some(format!("id = \"{id}\""));
                    if s.minutes.unwrap_or(0) == 0 || s.title.is_none() {
                        add(at.clone(), format!("run sheet segment '{id}' needs a title and minutes"));
                    }
                    if s.materials.as_deref().is_none_or(|m| m.trim().is_empty()) {
                        add(at, format!("run sheet segment '{id}' says no `materials` (\"none\" if none)"));
                    }
                }
                _ => add(None, "each run sheet segment has either `activity` or `id`, not both or neither".into()),
            }
        }
        let total: u32 = self.run_sheet().iter().map(|(_, m, _)| m).sum();
        if total != self.course.session_minutes {
            add(
                Some("session_minutes".into()),
                format!(
                    "the run sheet adds up to {total} minutes, but session_minutes is {}",
                    self.course.session_minutes
                ),
            );
        }
        for v in &self.variants {
            let at = Some(format!("id = \"{}\"", v.id));
            if v.id == CORE {
                add(at.clone(), "a [[variant]] cannot be called \"core\": that is [course] itself".into());
            }
            for id in v.minutes.keys() {
                if self.activity(id).is_none() {
                    add(at.clone(), format!("variant '{}' gives minutes to unknown activity '{id}'", v.id));
                }
            }
            let total: u32 = self.run_sheet_of(&v.id).iter().map(|(_, m, _)| m).sum();
            if total != v.session_minutes {
                add(
                    at,
                    format!(
                        "the {} run sheet adds up to {total} minutes, but its session_minutes is {}",
                        v.id, v.session_minutes
                    ),
                );
            }
        }
        for s in &self.segments {
            for v in s.variants.iter().flatten() {
                if !self.variants.iter().any(|known| &known.id == v) {
                    add(Some(format!("\"{v}\"")), format!("a run sheet segment is marked for unknown variant '{v}'"));
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The frozen test kit (labs/tests/data/kit/README.md): a fork's own files cannot break these.
    const COURSE_TOML: &str = include_str!("../tests/data/kit/course.toml");
    const COHORT_TOML: &str = include_str!("../tests/data/kit/cohort.toml");

    fn shipped() -> Course {
        Course::parse(COURSE_TOML).unwrap()
    }

    #[test]
    fn the_shipped_course_adds_up() {
        let course = Course::parse(COURSE_TOML).unwrap();
        assert_eq!(course.activities.len(), COURSE_TOML.matches("[[activity]]").count());
        let total: u32 = course.run_sheet().iter().map(|(_, m, _)| m).sum();
        assert_eq!(total, course.course.session_minutes);
    }

    #[test]
    fn a_run_sheet_that_does_not_add_up_is_rejected() {
        let broken = COURSE_TOML.replace("session_minutes = 90", "session_minutes = 60");
        let err = Course::parse(&broken).unwrap_err().to_string();
        assert!(err.contains("adds up to 90 minutes, but session_minutes is 60"), "{err}");
    }

    #[test]
    fn the_repository_course_and_cohort_are_valid() {
        let course = Course::parse(include_str!("../../course.toml")).unwrap();
        Cohort::parse(include_str!("../../cohort.toml"), &course).unwrap();
    }

    #[test]
    fn errors_name_the_line_of_the_field() {
        let broken = COURSE_TOML.replacen("[[segment]]\nactivity = \"outage\"\n", "", 1);
        let line = broken.lines().position(|l| l == "id = \"outage\"").unwrap() + 1;
        let err = Course::parse(&broken).unwrap_err().to_string();
        assert!(err.contains(&format!("course.toml:{line}: activity 'outage' appears 0 times")), "{err}");
    }

    #[test]
    fn every_variant_adds_up_and_the_shipped_cohort_is_valid() {
        let course = shipped();
        for v in &course.variants {
            let total: u32 = course.run_sheet_of(&v.id).iter().map(|(_, m, _)| m).sum();
            assert_eq!(total, v.session_minutes, "{}", v.id);
        }
        Cohort::parse(COHORT_TOML, &course).unwrap();
    }

    #[test]
    fn a_half_day_that_does_not_add_up_is_rejected() {
        let broken = COURSE_TOML.replace("session_minutes = 210", "session_minutes = 200");
        let err = Course::parse(&broken).unwrap_err().to_string();
        assert!(err.contains("the half-day run sheet adds up to 210 minutes, but its session_minutes is 200"), "{err}");
    }

    #[test]
    fn bad_cohort_settings_are_named() {
        let course = shipped();
        let bad =
            "[cohort]\ntitle = \"x\"\ndate = \"27/11/2026\"\nvariant = \"weekend\"\npoll = []\nskip = [\"juggling\"]\n";
        let err = Cohort::parse(bad, &course).unwrap_err().to_string();
        assert!(err.contains("date = \"27/11/2026\" is not YYYY-MM-DD"), "{err}");
        assert!(err.contains("variant = \"weekend\" is not one of: core, half-day"), "{err}");
        assert!(err.contains("skip names unknown activity 'juggling'"), "{err}");
        assert!(err.contains("poll is empty"), "{err}");
    }

    #[test]
    fn a_skipped_activity_keeps_its_minutes_as_open_lab_time() {
        let course = shipped();
        let mut cohort = Cohort::parse(COHORT_TOML, &course).unwrap();
        cohort.variant = CORE.into();
        cohort.skip = vec!["outage".into()];
        let sheet = course.run_sheet_for(&cohort);
        let total: u32 = sheet.iter().map(|(_, m, _, _)| m).sum();
        assert_eq!(total, course.course.session_minutes);
        let slot = sheet.iter().find(|(_, _, s, _)| s.activity.as_deref() == Some("outage")).unwrap();
        assert!(slot.0.starts_with("Open lab time (Activity 5:") && !slot.3, "{}", slot.0);
    }

    #[test]
    fn a_segment_without_materials_is_named() {
        let broken = COURSE_TOML.replacen("materials = \"None.\"\n", "", 1);
        let err = Course::parse(&broken).unwrap_err().to_string();
        assert!(err.contains("run sheet segment 'break' says no `materials`"), "{err}");
    }

    #[test]
    fn an_activity_missing_from_the_run_sheet_is_rejected() {
        let broken = COURSE_TOML.replacen("[[segment]]\nactivity = \"outage\"\n", "", 1);
        let err = Course::parse(&broken).unwrap_err().to_string();
        assert!(err.contains("'outage' appears 0 times"), "{err}");
    }
}
