//! The course's structure and timing, read from `course.toml` at the repository root: the one
//! place each activity declares its minutes, its changeover and its card. The labs, the run
//! sheet, the rehearsal and the checks share it.
//!
//! A session is a list of [`Slot`]s: the fixed segments of `course.toml` (welcome, breaks,
//! close), and for every activity the cohort runs, a changeover (regroup, hand out, open or close
//! rooms) followed by the activity. Changeovers are minutes of their own, so the session adds up
//! with them or it does not add up.
//!
//! **Invariant:** the 90 minutes hold a *choice* of activities (`[course] core`, or the cohort's
//! own `core`); a longer variant (the half day) holds all of them. Whatever the choice, the slots
//! never add up to more than the session, and the shipped choice adds up to exactly the session.

use std::collections::BTreeMap;

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

/// A longer run of the same course: every activity, the segments marked for it, and its own
/// minutes for the activities and segments it gives more time.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub id: String,
    pub title: String,
    pub session_minutes: u32,
    /// Activity or segment id to minutes in this variant; the core's minutes where one is not listed.
    #[serde(default)]
    pub minutes: BTreeMap<String, u32>,
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
    /// The activities the 90 minutes hold for this cohort, instead of `[course] core`. Their
    /// minutes and changeovers must fit the session; minutes left over become a buffer.
    #[serde(default)]
    pub core: Option<Vec<String>>,
    /// How many people are expected, for the printout counts on the preparation page.
    #[serde(default)]
    pub expected: Expected,
}

/// Expected attendance: the preparation page turns it into pairs, tables, rooms and printouts.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// People in the room.
    #[serde(default)]
    pub room: u32,
    /// People joining remotely.
    #[serde(default)]
    pub remote: u32,
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
        let at = |field: &str| field_line("cohort.toml", text, field);
        let mut problems = Vec::new();
        if !is_calendar_date(&cohort.date) {
            problems.push(format!(
                "{}: date = \"{}\" is not a day of the calendar written YYYY-MM-DD",
                at("date"),
                cohort.date
            ));
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
        let known = course.activities.iter().map(|a| a.id.as_str()).collect::<Vec<_>>().join(", ");
        for id in &cohort.skip {
            if course.activity(id).is_none() {
                problems
                    .push(format!("{}: skip names unknown activity '{id}'; the activities are: {known}", at("skip")));
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
        if let Some(core) = &cohort.core {
            let line = at("core");
            for problem in course.core_problems(core) {
                problems.push(format!("{line}: core: {problem}"));
            }
            for id in core.iter().filter(|id| cohort.skip.contains(id)) {
                problems.push(format!("{line}: core: '{id}' is also in skip; remove it from one of the two"));
            }
            let total: u32 = course.slots(CORE, core, &[]).iter().map(|s| s.minutes).sum();
            if total > course.course.session_minutes {
                problems.push(format!(
                    "{line}: core: these activities and their changeovers take {total} minutes, {} more than the \
                     {}-minute session; drop one ({}), or run the half day (variant = \"half-day\")",
                    total - course.course.session_minutes,
                    course.course.session_minutes,
                    core.iter()
                        .filter_map(|id| course.activity(id))
                        .map(|a| format!("{} {} min + {} changeover", a.id, a.minutes, a.card.changeover))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if problems.is_empty() {
            Ok(cohort)
        } else {
            Err(SettingsError::Invalid { file: "cohort.toml".into(), problems })
        }
    }

    /// Whether the cohort runs this activity at all (in any variant).
    pub fn runs(&self, activity: &str) -> bool {
        !self.skip.iter().any(|s| s == activity)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CourseInfo {
    pub title: String,
    pub session_minutes: u32,
    /// The activities the 90 minutes hold unless the cohort chooses others (`cohort.toml` core).
    pub core: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
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
    /// What the room and remote people do, and what to do when it breaks: the run sheet's row.
    pub card: Card,
    /// The live demos the facilitator runs, which `cargo xtask rehearse` times.
    #[serde(rename = "demo", default)]
    pub demos: Vec<Demo>,
    /// The printouts it needs, and how many: the preparation page counts them.
    #[serde(rename = "print", default)]
    pub prints: Vec<Print>,
}

/// A printable page of the book an activity needs, and for whom one copy is.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Print {
    /// The page, as the built book names it: `04-wal-race/bet-sheet.html`.
    pub page: String,
    /// One copy for each of these.
    pub per: PrintPer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrintPer {
    Person,
    Pair,
    Table,
    /// The sticky template: six stickies to a sheet.
    SixPeople,
}

impl PrintPer {
    /// Copies for `people` in the room (pairs of two, tables of two pairs), one spare in ten.
    pub fn copies(self, people: u32) -> u32 {
        let pairs = people.div_ceil(2);
        let needed = match self {
            PrintPer::Person => people,
            PrintPer::Pair => pairs,
            PrintPer::Table => pairs.div_ceil(2),
            PrintPer::SixPeople => people.div_ceil(6),
        };
        if needed == 0 {
            0
        } else {
            needed + needed.div_ceil(10)
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            PrintPer::Person => "one per person",
            PrintPer::Pair => "one per pair",
            PrintPer::Table => "one per table",
            PrintPer::SixPeople => "one sheet per six people",
        }
    }
}

/// An activity's card: the run sheet's row and the activity card, in words.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Card {
    /// What people call it in the room: "WAL Race".
    pub name: String,
    /// Minutes before the activity to regroup, hand out and open or close rooms: a slot of its own.
    pub changeover: u32,
    /// What the room does in the changeover.
    pub changeover_room: String,
    /// What remote people and the producer do in the changeover, with the tool action.
    pub changeover_remote: String,
    /// Who works together: everyone, the persistent pairs, or the persistent tables.
    pub groups: Groups,
    /// Where remote people are during the activity.
    pub remote_in: RemoteIn,
    /// What the room does, in a sentence or two.
    pub room: String,
    /// What remote people do, and with which action of the meeting tool.
    pub remote: String,
    /// What to do when the demo or a server fails.
    pub fallback: String,
}

/// Who works together during an activity. Pairs are formed at the welcome and kept; a table is
/// two pairs (in the room), a breakout room of three or four (remote), also kept all session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Groups {
    Everyone,
    Pairs,
    Tables,
}

/// Where remote people are during an activity: every trip to breakout rooms and back costs the
/// changeover minutes, and in a room they see neither the shared screen nor the main chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemoteIn {
    MainRoom,
    BreakoutRooms,
}

impl RemoteIn {
    pub fn describe(self) -> &'static str {
        match self {
            RemoteIn::MainRoom => "main room",
            RemoteIn::BreakoutRooms => "breakout rooms",
        }
    }
}

/// A live demo: a `labs` command the facilitator runs on the projector, and the seconds its phase
/// leaves for it. `{myth}` in `run` stands for each myth of the cohort's poll.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Demo {
    /// The arguments after `labs`, e.g. `run outage --scenario frozen-wal-writer`.
    pub run: String,
    /// The phase of the activity it runs in, as the chapter's timing table names it.
    pub phase: String,
    /// The seconds that phase leaves for the command to finish.
    pub within_seconds: u32,
}

impl Demo {
    /// The demo for each myth when `run` holds `{myth}`, else the demo itself.
    pub fn expand(&self, poll: &[String]) -> Vec<Demo> {
        if !self.run.contains("{myth}") {
            return vec![self.clone()];
        }
        poll.iter().map(|m| Demo { run: self.run.replace("{myth}", m), ..self.clone() }).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ready,
    Draft,
}

/// A slot of the run sheet as course.toml lists it: an activity, or a segment of its own
/// (welcome, break, close).
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
    /// Runs only when this activity does not: its short form, folded into the session.
    pub stands_in_for: Option<String>,
}

/// One row of a session as it runs.
#[derive(Debug, Clone, Copy)]
pub enum SlotKind<'a> {
    /// A segment of its own: welcome, break, close.
    Segment(&'a Segment),
    /// The minutes before an activity: regroup, hand out, open or close rooms.
    Changeover(&'a Activity),
    Activity(&'a Activity),
    /// An activity this cohort skips: its minutes (changeover included) become open lab time.
    Skipped(&'a Activity),
    /// Minutes the cohort's choice of activities leaves free in the session.
    Buffer,
}

#[derive(Debug, Clone)]
pub struct Slot<'a> {
    pub kind: SlotKind<'a>,
    pub title: String,
    pub minutes: u32,
}

impl Slot<'_> {
    /// The activity this slot runs or prepares, if any.
    pub fn activity(&self) -> Option<&Activity> {
        match self.kind {
            SlotKind::Changeover(a) | SlotKind::Activity(a) | SlotKind::Skipped(a) => Some(a),
            SlotKind::Segment(_) | SlotKind::Buffer => None,
        }
    }
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
    /// "Activity 4: Throughput Throwdown: WAL Race".
    pub fn heading(&self) -> String {
        format!("Activity {}: {}", self.number, self.title)
    }
}

/// Where a problem in course.toml is: the first line containing `needle` at or after the first
/// line containing `anchor` (the block the field belongs to).
struct At {
    anchor: Option<String>,
    needle: Option<String>,
    /// The needle starts the line (a field of the block), rather than appearing anywhere in it.
    starts: bool,
}

impl At {
    fn line(needle: impl Into<String>) -> At {
        At { anchor: None, needle: Some(needle.into()), starts: false }
    }
    fn field(anchor: impl Into<String>, needle: impl Into<String>) -> At {
        At { anchor: Some(anchor.into()), needle: Some(needle.into()), starts: true }
    }
    fn nowhere() -> At {
        At { anchor: None, needle: None, starts: false }
    }
    fn locate(&self, file: &str, text: &str) -> String {
        let start = match &self.anchor {
            Some(anchor) => text.lines().position(|l| l.contains(anchor.as_str())),
            None => Some(0),
        };
        match (start, &self.needle) {
            (Some(start), Some(needle)) => {
                let found = |l: &str| {
                    if self.starts {
                        l.trim_start().starts_with(needle.as_str())
                    } else {
                        l.contains(needle.as_str())
                    }
                };
                match text.lines().enumerate().skip(start).find(|(_, l)| found(l)) {
                    Some((n, _)) => format!("{file}:{}", n + 1),
                    None => locate(file, text, self.anchor.as_deref().unwrap_or(needle)),
                }
            }
            _ => file.to_string(),
        }
    }
}

/// `file:line` of the line that sets `field` (`field = ...`, comments skipped), or `file`.
/// `YYYY-MM-DD` naming a day that exists (2027-02-29 and 2027-04-31 do not).
fn is_calendar_date(text: &str) -> bool {
    let d: Vec<&str> = text.split('-').collect();
    let widths_ok = d.len() == 3 && d[0].len() == 4 && d[1].len() == 2 && d[2].len() == 2;
    if !widths_ok || !d.iter().all(|p| p.chars().all(|c| c.is_ascii_digit())) {
        return false;
    }
    let numbers: Vec<u32> = d.iter().filter_map(|p| p.parse().ok()).collect();
    let [year, month, day] = numbers[..] else { return false };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

fn field_line(file: &str, text: &str, field: &str) -> String {
    let sets =
        |line: &str| line.trim_start().strip_prefix(field).is_some_and(|rest| rest.trim_start().starts_with('='));
    match text.lines().position(sets) {
        Some(n) => format!("{file}:{}", n + 1),
        None => file.to_string(),
    }
}

impl Course {
    /// Parses and checks the course; every problem names its line and field in course.toml.
    pub fn parse(text: &str) -> Result<Course, SettingsError> {
        let course: Course = toml::from_str(text).map_err(|e| SettingsError::parse("course.toml", text, &e))?;
        let problems = course.problems();
        if !problems.is_empty() {
            let problems =
                problems.into_iter().map(|(at, problem)| format!("{}: {problem}", at.locate("course.toml", text)));
            return Err(SettingsError::Invalid { file: "course.toml".into(), problems: problems.collect() });
        }
        Ok(course)
    }

    pub fn activity(&self, id: &str) -> Option<&Activity> {
        self.activities.iter().find(|a| a.id == id)
    }

    /// The session length of a variant.
    pub fn session_minutes(&self, variant: &str) -> u32 {
        self.variants.iter().find(|v| v.id == variant).map_or(self.course.session_minutes, |v| v.session_minutes)
    }

    /// The activities a variant holds: the core's choice in the core, every activity in a longer variant.
    pub fn chosen<'a>(&'a self, variant: &str, core: &'a [String]) -> Vec<&'a str> {
        if variant == CORE {
            core.iter().map(String::as_str).collect()
        } else {
            self.activities.iter().map(|a| a.id.as_str()).collect()
        }
    }

    /// The slots of `variant` when it holds `core` (for the core variant) and skips `skip`.
    pub fn slots(&self, variant: &str, core: &[String], skip: &[String]) -> Vec<Slot<'_>> {
        let chosen = self.chosen(variant, core);
        let overrides = self.variants.iter().find(|v| v.id == variant).map(|v| &v.minutes);
        let minutes_of = |id: &str, default: u32| overrides.and_then(|m| m.get(id)).copied().unwrap_or(default);
        let mut slots = Vec::new();
        for segment in
            self.segments.iter().filter(|s| s.variants.as_ref().is_none_or(|only| only.iter().any(|v| v == variant)))
        {
            match segment.activity.as_deref().and_then(|id| self.activity(id)) {
                Some(a) if chosen.contains(&a.id.as_str()) => {
                    let minutes = minutes_of(&a.id, a.minutes);
                    if skip.contains(&a.id) {
                        slots.push(Slot {
                            kind: SlotKind::Skipped(a),
                            title: format!("Open lab time ({}: not run with this cohort)", a.heading()),
                            minutes: a.card.changeover + minutes,
                        });
                    } else {
                        slots.push(Slot {
                            kind: SlotKind::Changeover(a),
                            title: format!("Changeover to activity {}", a.number),
                            minutes: a.card.changeover,
                        });
                        slots.push(Slot { kind: SlotKind::Activity(a), title: a.heading(), minutes });
                    }
                }
                Some(_) => {}
                None if segment.activity.is_some() => {}
                None => {
                    let folded = segment.stands_in_for.as_deref().is_some_and(|id| chosen.contains(&id));
                    if !folded {
                        let id = segment.id.as_deref().unwrap_or_default();
                        slots.push(Slot {
                            kind: SlotKind::Segment(segment),
                            title: segment.title.clone().unwrap_or_default(),
                            minutes: minutes_of(id, segment.minutes.unwrap_or(0)),
                        });
                    }
                }
            }
        }
        slots
    }

    /// Every slot of the core variant with the shipped choice of activities, in order.
    pub fn run_sheet(&self) -> Vec<Slot<'_>> {
        self.slots(CORE, &self.course.core, &[])
    }

    /// Every slot of `variant` ("core", with the shipped choice, or a `[[variant]]` id), in order.
    pub fn run_sheet_of(&self, variant: &str) -> Vec<Slot<'_>> {
        self.slots(variant, &self.course.core, &[])
    }

    /// The activities the cohort's core holds: its own choice, else the shipped one.
    pub fn core_of<'a>(&'a self, cohort: &'a Cohort) -> &'a [String] {
        cohort.core.as_deref().unwrap_or(self.course.core.as_slice())
    }

    /// The session as `cohort` runs it: its variant, its choice of activities, a skipped
    /// activity's slot kept as open lab time, and minutes its choice leaves free as a buffer
    /// before the last segment.
    pub fn run_sheet_for(&self, cohort: &Cohort) -> Vec<Slot<'_>> {
        let mut slots = self.slots(&cohort.variant, self.core_of(cohort), &cohort.skip);
        let total: u32 = slots.iter().map(|s| s.minutes).sum();
        let session = self.session_minutes(&cohort.variant);
        if total < session {
            let at = slots.len().saturating_sub(1);
            slots.insert(
                at,
                Slot { kind: SlotKind::Buffer, title: "Buffer and questions".into(), minutes: session - total },
            );
        }
        slots
    }

    /// Whether the activity is in the session `cohort` runs (chosen, and not skipped).
    pub fn in_session(&self, cohort: &Cohort, activity: &str) -> bool {
        cohort.runs(activity) && self.chosen(&cohort.variant, self.core_of(cohort)).contains(&activity)
    }

    /// What is wrong with a choice of activities for the core (unknown, twice, not ready).
    fn core_problems(&self, core: &[String]) -> Vec<String> {
        let mut problems = Vec::new();
        let known = self.activities.iter().map(|a| a.id.as_str()).collect::<Vec<_>>().join(", ");
        if core.is_empty() {
            problems.push("no activity: list the ids the 90 minutes hold (`labs list`)".to_string());
        }
        for (i, id) in core.iter().enumerate() {
            match self.activity(id) {
                None => problems.push(format!("unknown activity '{id}'; the activities are: {known}")),
                Some(a) if a.status == Status::Draft => problems.push(format!(
                    "'{id}' is a draft (no chapter or lab yet): it can run in the half day, not in the core"
                )),
                Some(_) => {}
            }
            if core[..i].contains(id) {
                problems.push(format!("'{id}' is listed twice"));
            }
        }
        problems
    }

    /// What does not add up, each with where it is in course.toml and what to fix.
    fn problems(&self) -> Vec<(At, String)> {
        let mut problems: Vec<(At, String)> = Vec::new();
        let mut add = |at: At, problem: String| problems.push((at, problem));
        for (i, a) in self.activities.iter().enumerate() {
            let anchor = format!("id = \"{}\"", a.id);
            if a.materials.trim().is_empty() {
                add(
                    At::line(&anchor),
                    format!(
                        "activity '{}' says no `materials` (the run sheet's Materials column; \"none\" if none)",
                        a.id
                    ),
                );
            }
            if a.number as usize != i + 1 {
                add(
                    At::line(&anchor),
                    format!("activity '{}' has number {} but is listed as #{}", a.id, a.number, i + 1),
                );
            }
            let used = self.segments.iter().filter(|s| s.activity.as_deref() == Some(a.id.as_str())).count();
            if used != 1 {
                add(
                    At::line(&anchor),
                    format!("activity '{}' appears {used} times in the run sheet; it must appear once", a.id),
                );
            }
            let card = &a.card;
            for (field, text) in [
                ("name", &card.name),
                ("changeover_room", &card.changeover_room),
                ("changeover_remote", &card.changeover_remote),
                ("room", &card.room),
                ("remote", &card.remote),
                ("fallback", &card.fallback),
            ] {
                if text.trim().is_empty() {
                    add(
                        At::field(&anchor, format!("{field} =")),
                        format!(
                            "card.{field} of activity '{}' is empty: the run sheet prints it; say it in words",
                            a.id
                        ),
                    );
                }
            }
            if card.changeover == 0 {
                add(
                    At::field(&anchor, "changeover ="),
                    format!(
                        "card.changeover of activity '{}' is 0: in a hybrid room regrouping, handing out and opening \
                         rooms take time; give it at least 1 minute",
                        a.id
                    ),
                );
            }
            for demo in &a.demos {
                let first = demo.run.split_whitespace().next().unwrap_or("");
                let second = demo.run.split_whitespace().nth(1).unwrap_or("");
                let at = At::field(&anchor, format!("run = \"{}\"", demo.run));
                if !["run", "check", "sleuth", "schema", "bench"].contains(&first) {
                    add(
                        at,
                        format!(
                            "demo.run of activity '{}' is `{}`: it must be the arguments of a `labs` command \
                             (run, check, sleuth, schema, bench), without `labs`",
                            a.id, demo.run
                        ),
                    );
                } else if ["run", "check"].contains(&first) && second != a.id {
                    add(
                        at,
                        format!(
                            "demo.run of activity '{}' runs `{first} {second}`; a demo runs its own lab (`{first} {}`)",
                            a.id, a.id
                        ),
                    );
                }
                if demo.within_seconds == 0 || demo.within_seconds > a.minutes * 60 {
                    add(
                        At::field(&anchor, "within_seconds ="),
                        format!(
                            "demo.within_seconds of activity '{}' is {}: it must be between 1 and the activity's {} s",
                            a.id,
                            demo.within_seconds,
                            a.minutes * 60
                        ),
                    );
                }
            }
        }
        for s in &self.segments {
            match (&s.activity, &s.id) {
                (Some(id), None) => {
                    let at = || At::line(format!("activity = \"{id}\""));
                    if self.activity(id).is_none() {
                        add(at(), format!("run sheet segment names unknown activity '{id}'"));
                    }
                    if s.minutes.is_some() || s.title.is_some() {
                        add(
                            at(),
                            format!(
                                "run sheet segment for '{id}' repeats minutes or title; they come from [[activity]]"
                            ),
                        );
                    }
                }
                (None, Some(id)) => {
                    let anchor = format!("id = \"{id}\"");
                    if s.minutes.unwrap_or(0) == 0 || s.title.is_none() {
                        add(At::line(&anchor), format!("run sheet segment '{id}' needs a title and minutes"));
                    }
                    if s.materials.as_deref().is_none_or(|m| m.trim().is_empty()) {
                        add(
                            At::line(&anchor),
                            format!("run sheet segment '{id}' says no `materials` (\"none\" if none)"),
                        );
                    }
                    for (field, text) in [("room", &s.room), ("remote", &s.remote), ("fallback", &s.fallback)] {
                        if text.as_deref().is_none_or(|t| t.trim().is_empty()) {
                            add(
                                At::line(&anchor),
                                format!("run sheet segment '{id}' says no `{field}`: the run sheet prints it"),
                            );
                        }
                    }
                    if let Some(other) = &s.stands_in_for {
                        if self.activity(other).is_none() {
                            add(
                                At::field(&anchor, "stands_in_for"),
                                format!("run sheet segment '{id}' stands in for unknown activity '{other}'"),
                            );
                        }
                    }
                }
                _ => add(
                    At::nowhere(),
                    "each run sheet segment has either `activity` or `id`, not both or neither".into(),
                ),
            }
        }
        for problem in self.core_problems(&self.course.core) {
            add(At::line("core ="), format!("[course] core: {problem}"));
        }
        let total: u32 = self.run_sheet().iter().map(|s| s.minutes).sum();
        if total != self.course.session_minutes {
            add(
                At::line("session_minutes"),
                format!(
                    "the core run sheet (its activities, their changeovers and the segments) adds up to {total} \
                     minutes, but session_minutes is {}",
                    self.course.session_minutes
                ),
            );
        }
        for v in &self.variants {
            let at = || At::line(format!("id = \"{}\"", v.id));
            if v.id == CORE {
                add(at(), "a [[variant]] cannot be called \"core\": that is [course] itself".into());
            }
            for id in v.minutes.keys() {
                let segment = self.segments.iter().any(|s| s.id.as_deref() == Some(id.as_str()));
                if self.activity(id).is_none() && !segment {
                    add(at(), format!("variant '{}' gives minutes to unknown activity or segment '{id}'", v.id));
                }
            }
            let total: u32 = self.run_sheet_of(&v.id).iter().map(|s| s.minutes).sum();
            if total != v.session_minutes {
                add(
                    at(),
                    format!(
                        "the {} run sheet (changeovers included) adds up to {total} minutes, but its session_minutes is {}",
                        v.id, v.session_minutes
                    ),
                );
            }
        }
        for s in &self.segments {
            for v in s.variants.iter().flatten() {
                if !self.variants.iter().any(|known| &known.id == v) {
                    add(
                        At::line(format!("\"{v}\"")),
                        format!("a run sheet segment is marked for unknown variant '{v}'"),
                    );
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

    fn cohort() -> Cohort {
        Cohort::parse(COHORT_TOML, &shipped()).unwrap()
    }

    fn total(slots: &[Slot]) -> u32 {
        slots.iter().map(|s| s.minutes).sum()
    }

    #[test]
    fn the_shipped_course_adds_up_with_its_changeovers() {
        let course = shipped();
        assert_eq!(course.activities.len(), COURSE_TOML.matches("[[activity]]").count());
        let sheet = course.run_sheet();
        assert_eq!(total(&sheet), course.course.session_minutes);
        // Every activity of the core comes right after its own changeover.
        for (i, slot) in sheet.iter().enumerate() {
            if let SlotKind::Activity(a) = slot.kind {
                assert!(matches!(sheet[i - 1].kind, SlotKind::Changeover(b) if b.id == a.id), "{}", a.id);
                assert_eq!(sheet[i - 1].minutes, a.card.changeover);
            }
        }
        let changeovers = sheet.iter().filter(|s| matches!(s.kind, SlotKind::Changeover(_))).count();
        assert_eq!(changeovers, course.course.core.len());
    }

    #[test]
    fn a_run_sheet_that_does_not_add_up_is_rejected() {
        let broken = COURSE_TOML.replace("session_minutes = 90", "session_minutes = 60");
        let err = Course::parse(&broken).unwrap_err().to_string();
        assert!(err.contains("adds up to 90 minutes, but session_minutes is 60"), "{err}");
    }

    #[test]
    fn a_changeover_counts_in_the_total() {
        // One more minute of changeover and the core no longer fits its 90 minutes.
        let broken = COURSE_TOML.replacen("changeover = 2", "changeover = 3", 1);
        let err = Course::parse(&broken).unwrap_err().to_string();
        assert!(err.contains("adds up to 91 minutes, but session_minutes is 90"), "{err}");
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
    fn a_card_without_remote_text_is_named_with_its_line() {
        let start = COURSE_TOML.find("id = \"wal-race\"").unwrap();
        let remote = start + COURSE_TOML[start..].find("\nremote = ").unwrap() + 1;
        let end = remote + COURSE_TOML[remote..].find('\n').unwrap();
        let broken = format!("{}remote = \"  \"{}", &COURSE_TOML[..remote], &COURSE_TOML[end..]);
        let line = broken[..remote].matches('\n').count() + 1;
        let err = Course::parse(&broken).unwrap_err().to_string();
        assert!(err.contains(&format!("course.toml:{line}: card.remote of activity 'wal-race' is empty")), "{err}");
    }

    #[test]
    fn a_card_is_required_and_a_zero_changeover_is_refused() {
        let start = COURSE_TOML.find("\n[activity.card]\n").unwrap() + 1;
        let end = start + COURSE_TOML[start..].find("\n\n").unwrap();
        let no_card = format!("{}{}", &COURSE_TOML[..start], &COURSE_TOML[end..]);
        let err = Course::parse(&no_card).unwrap_err().to_string();
        assert!(err.contains("missing field `card`"), "{err}");
        let zero = COURSE_TOML.replacen("changeover = 1", "changeover = 0", 1);
        let err = Course::parse(&zero).unwrap_err().to_string();
        assert!(err.contains("is 0: in a hybrid room regrouping"), "{err}");
    }

    #[test]
    fn a_demo_must_run_its_own_lab_within_its_activity() {
        let wrong = COURSE_TOML.replacen("run = \"run log-sleuth\"", "run = \"run outage\"", 1);
        let err = Course::parse(&wrong).unwrap_err().to_string();
        assert!(err.contains("runs `run outage`; a demo runs its own lab (`run log-sleuth`)"), "{err}");
        let slow = COURSE_TOML.replacen("within_seconds = 60", "within_seconds = 6000", 1);
        let err = Course::parse(&slow).unwrap_err().to_string();
        assert!(err.contains("within_seconds of activity 'log-sleuth' is 6000"), "{err}");
    }

    #[test]
    fn every_variant_adds_up_and_holds_every_activity() {
        let course = shipped();
        for v in &course.variants {
            let sheet = course.run_sheet_of(&v.id);
            assert_eq!(total(&sheet), v.session_minutes, "{}", v.id);
            let run: Vec<&str> = sheet
                .iter()
                .filter_map(|s| match s.kind {
                    SlotKind::Activity(a) => Some(a.id.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(run.len(), course.activities.len(), "{}: {run:?}", v.id);
        }
        // A segment that stands in for an activity runs only when that activity does not.
        let folded = course.segments.iter().find(|s| s.stands_in_for.is_some()).unwrap();
        let in_core = course.run_sheet().iter().any(|s| matches!(s.kind, SlotKind::Segment(x) if x.id == folded.id));
        let in_half_day =
            course.run_sheet_of("half-day").iter().any(|s| matches!(s.kind, SlotKind::Segment(x) if x.id == folded.id));
        assert!(in_core && !in_half_day);
    }

    #[test]
    fn a_half_day_that_does_not_add_up_is_rejected() {
        let broken = COURSE_TOML.replace("session_minutes = 240", "session_minutes = 200");
        let err = Course::parse(&broken).unwrap_err().to_string();
        assert!(
            err.contains(
                "the half-day run sheet (changeovers included) adds up to 240 minutes, but its session_minutes is 200"
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_cohort_settings_are_named() {
        let course = shipped();
        let bad =
            "[cohort]\ntitle = \"x\"\ndate = \"27/11/2026\"\nvariant = \"weekend\"\npoll = []\nskip = [\"juggling\"]\n\
                   core = [\"juggling\", \"outbox-relay\", \"outage\", \"outage\"]\n";
        let err = Cohort::parse(bad, &course).unwrap_err().to_string();
        assert!(err.contains("date = \"27/11/2026\" is not a day of the calendar written YYYY-MM-DD"), "{err}");
        assert!(err.contains("variant = \"weekend\" is not one of: core, half-day"), "{err}");
        assert!(err.contains("skip names unknown activity 'juggling'"), "{err}");
        assert!(err.contains("poll is empty"), "{err}");
        assert!(err.contains("cohort.toml:7: core: unknown activity 'juggling'"), "{err}");
        assert!(err.contains("core: 'outbox-relay' is a draft"), "{err}");
        assert!(err.contains("core: 'outage' is listed twice"), "{err}");
    }

    #[test]
    fn each_problem_names_its_file_once() {
        let course = shipped();
        let text = COHORT_TOML.replace("variant = \"core\"", "variant = \"weekend\"");
        let err = Cohort::parse(&text, &course).unwrap_err().to_string();
        assert!(err.starts_with("cohort.toml:") && !err.contains("cohort.toml: cohort.toml"), "{err}");
    }

    #[test]
    fn a_date_must_name_a_day_that_exists() {
        for good in ["2026-12-01", "2028-02-29", "2000-02-29", "2027-04-30"] {
            assert!(is_calendar_date(good), "{good}");
        }
        for bad in ["2027-02-29", "1900-02-29", "2027-02-31", "2027-04-31", "2027-13-01", "2027-00-10", "2027-01-00"] {
            assert!(!is_calendar_date(bad), "{bad}");
        }
        for bad in ["27/11/2026", "2027-1-05", "+027-01-05", "2027-01-05 ", ""] {
            assert!(!is_calendar_date(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_cohort_error_points_at_the_setting_not_at_a_comment_that_mentions_it() {
        let course = shipped();
        let text = COHORT_TOML.replace("variant = \"core\"", "variant = \"weekend\"");
        let line = text.lines().position(|l| l.starts_with("variant =")).unwrap() + 1;
        assert!(text.lines().take(line - 1).any(|l| l.starts_with('#') && l.contains("variant")));
        let err = Cohort::parse(&text, &course).unwrap_err().to_string();
        assert!(err.contains(&format!("cohort.toml:{line}: variant = \"weekend\"")), "{err}");
    }

    #[test]
    fn a_cohort_core_that_overruns_the_session_is_refused_with_the_minutes() {
        let course = shipped();
        let mut all_ready: Vec<String> =
            course.activities.iter().filter(|a| a.status == Status::Ready).map(|a| format!("\"{}\"", a.id)).collect();
        all_ready.sort();
        let text = format!("{COHORT_TOML}core = [{}]\n", all_ready.join(", "));
        let err = Cohort::parse(&text, &course).unwrap_err().to_string();
        assert!(err.contains("core: these activities and their changeovers take"), "{err}");
        assert!(err.contains("more than the 90-minute session"), "{err}");
    }

    #[test]
    fn a_shorter_cohort_core_leaves_a_buffer_and_the_session_still_adds_up() {
        let course = shipped();
        let mut cohort = cohort();
        cohort.variant = CORE.into();
        cohort.core = Some(vec!["log-sleuth".into(), "wal-race".into(), "reflection-wall".into()]);
        let sheet = course.run_sheet_for(&cohort);
        assert_eq!(total(&sheet), course.course.session_minutes);
        let buffer = sheet.iter().find(|s| matches!(s.kind, SlotKind::Buffer)).unwrap();
        assert!(buffer.minutes > 0);
        // The reflection wall runs in full, so its short form in the close does not.
        assert!(!sheet.iter().any(|s| matches!(s.kind, SlotKind::Segment(x) if x.stands_in_for.is_some())));
        assert!(course.in_session(&cohort, "wal-race") && !course.in_session(&cohort, "outage"));
    }

    #[test]
    fn a_skipped_activity_keeps_its_minutes_as_open_lab_time() {
        let course = shipped();
        let mut cohort = cohort();
        cohort.variant = CORE.into();
        cohort.skip = vec!["outage".into()];
        cohort.core = Some(course.course.core.clone());
        // Skipped and still chosen is refused at parse time; here the slot itself is checked.
        let sheet = course.slots(CORE, &course.course.core, &cohort.skip);
        assert_eq!(total(&sheet), course.course.session_minutes);
        let slot = sheet.iter().find(|s| matches!(s.kind, SlotKind::Skipped(a) if a.id == "outage")).unwrap();
        assert!(slot.title.starts_with("Open lab time (Activity 5:"), "{}", slot.title);
        assert!(!sheet.iter().any(|s| matches!(s.kind, SlotKind::Changeover(a) if a.id == "outage")));
    }

    #[test]
    fn a_segment_without_materials_is_named() {
        let close = COURSE_TOML.find("id = \"close\"").unwrap();
        let start = close + COURSE_TOML[close..].find("\nmaterials = ").unwrap() + 1;
        let end = start + COURSE_TOML[start..].find('\n').unwrap() + 1;
        let broken = format!("{}{}", &COURSE_TOML[..start], &COURSE_TOML[end..]);
        let err = Course::parse(&broken).unwrap_err().to_string();
        assert!(err.contains("run sheet segment 'close' says no `materials`"), "{err}");
    }

    #[test]
    fn an_activity_missing_from_the_run_sheet_is_rejected() {
        let broken = COURSE_TOML.replacen("[[segment]]\nactivity = \"outage\"\n", "", 1);
        let err = Course::parse(&broken).unwrap_err().to_string();
        assert!(err.contains("'outage' appears 0 times"), "{err}");
    }

    #[test]
    fn printouts_count_pairs_and_tables_with_a_spare_in_ten() {
        assert_eq!(PrintPer::Pair.copies(16), 8 + 1);
        assert_eq!(PrintPer::Table.copies(16), 4 + 1);
        assert_eq!(PrintPer::Table.copies(17), 5 + 1);
        assert_eq!(PrintPer::SixPeople.copies(13), 3 + 1);
        assert_eq!(PrintPer::Person.copies(25), 25 + 3);
        assert_eq!(PrintPer::Pair.copies(0), 0);
    }

    #[test]
    fn a_poll_demo_expands_to_one_per_myth() {
        let demo = Demo { run: "run mythbusting --myth {myth}".into(), phase: "Myth".into(), within_seconds: 50 };
        let runs: Vec<String> = demo.expand(&["a".into(), "b".into()]).into_iter().map(|d| d.run).collect();
        assert_eq!(runs, ["run mythbusting --myth a", "run mythbusting --myth b"]);
    }
}
