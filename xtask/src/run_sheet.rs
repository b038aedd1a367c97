//! The facilitator's pages, rendered from course.toml and cohort.toml so timing lives in one
//! place: the run sheet (one table per hour, a row per slot, changeovers included), its segment
//! timer, the activity cards (what the room does, what remote people do and with which tool
//! action, the fallback, in words) and the preparation counts. The book's directives and the
//! facilitator bundle both use them.

use labs::course::{Activity, Cohort, Course, PrintPer, RemoteIn, Slot, SlotKind, Status, CORE};

/// Where the run sheet's tables and timer go in a page.
pub const RUN_SHEET_DIRECTIVE: &str = "{{#run-sheet}}";
/// Where the activity cards go.
pub const CARDS_DIRECTIVE: &str = "{{#activity-cards}}";
/// The page that holds the activity cards, which the run sheet links to.
pub const CARDS_PAGE: &str = "activity-cards.md";
/// Where the preparation counts (people, groups, rooms, printouts) go.
pub const PREPARATION_DIRECTIVE: &str = "{{#preparation-counts}}";

/// What a changeover row says when time is short, whatever the activity.
const CHANGEOVER_FALLBACK: &str = "Running late: start anyway; latecomers join at the next phase.";

/// One line naming the cohort and its variant, above the table.
pub fn cohort_line(course: &Course, cohort: &Cohort) -> String {
    let variant = match course.variants.iter().find(|v| v.id == cohort.variant) {
        Some(v) => v.title.clone(),
        None if cohort.variant == CORE => "Core".to_string(),
        None => cohort.variant.clone(),
    };
    let skipped = if cohort.skip.is_empty() { String::new() } else { format!("; not run: {}", cohort.skip.join(", ")) };
    format!(
        "**{}**, {}. {variant}, {} minutes{skipped} (set in `cohort.toml`).",
        cohort.title,
        cohort.date,
        course.session_minutes(&cohort.variant)
    )
}

/// Expands every directive of this module in a page. `chapter_link` gives the link to a ready
/// activity's chapter, and `cards_link` to the cards page, as seen from the page (None: no link).
pub fn expand(
    content: &str,
    course: &Course,
    cohort: &Cohort,
    chapter_link: &dyn Fn(&Activity) -> Option<String>,
    cards_link: Option<&str>,
) -> String {
    let mut content = content.to_string();
    if content.contains(RUN_SHEET_DIRECTIVE) {
        let sheet = format!(
            "{}\n\n{}\n{}",
            cohort_line(course, cohort),
            render(course, cohort, chapter_link, cards_link),
            timer(course, cohort)
        );
        content = content.replace(RUN_SHEET_DIRECTIVE, &sheet);
    }
    if content.contains(CARDS_DIRECTIVE) {
        content = content.replace(CARDS_DIRECTIVE, &cards(course, cohort, chapter_link));
    }
    if content.contains(PREPARATION_DIRECTIVE) {
        content = content.replace(PREPARATION_DIRECTIVE, &preparation(course, cohort));
    }
    content
}

/// A slot's start, as minutes from the session start, with the slot.
fn timed<'a>(slots: &'a [Slot<'a>]) -> Vec<(u32, &'a Slot<'a>)> {
    let mut start = 0;
    slots
        .iter()
        .map(|s| {
            let at = start;
            start += s.minutes;
            (at, s)
        })
        .collect()
}

/// The three texts of a slot's row: in the room, remote, if it breaks.
fn row_texts(slot: &Slot) -> [String; 3] {
    match slot.kind {
        SlotKind::Segment(s) => {
            let text = |field: &Option<String>| field.clone().unwrap_or_default();
            [text(&s.room), text(&s.remote), text(&s.fallback)]
        }
        SlotKind::Changeover(a) => {
            [a.card.changeover_room.clone(), a.card.changeover_remote.clone(), CHANGEOVER_FALLBACK.to_string()]
        }
        SlotKind::Activity(a) => [
            a.card.room.clone(),
            format!("**{}.** {}", capitalise(a.card.remote_in.describe()), a.card.remote),
            a.card.fallback.clone(),
        ],
        SlotKind::Skipped(_) => [
            "Open lab: pairs finish or rerun an earlier lab; take questions.".into(),
            "The same, in the main room; questions in the chat.".into(),
            "Use these minutes as buffer.".into(),
        ],
        SlotKind::Buffer => [
            "Questions, or pairs finish the lab they liked best.".into(),
            "Questions in the chat; the producer reads them out.".into(),
            "Behind schedule: these minutes absorb it.".into(),
        ],
    }
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// The run sheet: one table per hour of the session (each prints on one landscape page), a row
/// per slot with what the room does, what remote people do and the fallback, in words.
pub fn render(
    course: &Course,
    cohort: &Cohort,
    chapter_link: &dyn Fn(&Activity) -> Option<String>,
    cards_link: Option<&str>,
) -> String {
    let slots = course.run_sheet_for(cohort);
    let rows = timed(&slots);
    let total: u32 = slots.iter().map(|s| s.minutes).sum();
    let hours = total.div_ceil(60).max(1);
    let mut out = String::new();
    for hour in 0..hours {
        let in_hour: Vec<&(u32, &Slot)> = rows.iter().filter(|(start, _)| start / 60 == hour).collect();
        if in_hour.is_empty() {
            continue;
        }
        let end = (hour * 60 + 60).min(total);
        out.push_str(&format!(
            "<div class=\"run-sheet-hour\">\n\n**{} to {}**: {}, {}\n\n\
             | Start | Min | Segment | In the room | Remote | If it breaks |\n\
             |------:|----:|---------|-------------|--------|--------------|\n",
            clock(hour * 60),
            clock(end),
            cohort.title,
            cohort.date
        ));
        for (start, slot) in in_hour {
            let title = segment_cell(slot, chapter_link, cards_link);
            let [room, remote, fallback] = row_texts(slot);
            out.push_str(&format!(
                "| {} | {} | {title} | {} | {} | {} |\n",
                clock(*start),
                slot.minutes,
                cell(&room),
                cell(&remote),
                cell(&fallback)
            ));
        }
        if hour + 1 == hours {
            out.push_str(&format!("| {} | **{total}** | **Total** | | | |\n", clock(total)));
        }
        out.push_str("\n</div>\n\n");
    }
    out
}

/// The Segment cell: an activity links to its chapter (a draft says so), a changeover to its card.
fn segment_cell(slot: &Slot, chapter_link: &dyn Fn(&Activity) -> Option<String>, cards_link: Option<&str>) -> String {
    match slot.kind {
        SlotKind::Activity(a) => {
            let title = cell(&slot.title);
            let linked = match (a.status, chapter_link(a)) {
                (Status::Ready, Some(link)) => format!("[{title}]({link})"),
                (Status::Ready, None) => title,
                (Status::Draft, _) => format!("{title} (draft)"),
            };
            match cards_link {
                Some(cards) => format!("{linked} ([card]({cards}#{}))", card_anchor(a)),
                None => linked,
            }
        }
        SlotKind::Changeover(a) => format!("↳ *{}*", cell(&format!("Changeover: {}", short_title(a)))),
        _ => cell(&slot.title),
    }
}

/// "WAL Race": the name people say (the card's `name`).
fn short_title(a: &Activity) -> String {
    a.card.name.clone()
}

/// The anchor of an activity's card on the cards page.
fn card_anchor(a: &Activity) -> String {
    format!("card-{}", a.id)
}

/// The segment timer under the table (book/theme/timer.js drives it): one option per slot,
/// changeovers included, its value the slot's length in seconds, so the timer follows course.toml.
pub fn timer(course: &Course, cohort: &Cohort) -> String {
    let slots = course.run_sheet_for(cohort);
    let mut out = String::from("<div id=\"segment-timer\" aria-live=\"polite\">\n<select aria-label=\"Segment\">\n");
    for (start, slot) in timed(&slots) {
        let title = match slot.kind {
            SlotKind::Changeover(a) => format!("Changeover: {}", short_title(a)),
            _ => slot.title.clone(),
        };
        out.push_str(&format!(
            "<option value=\"{}\">{} {} ({} min)</option>\n",
            slot.minutes * 60,
            clock(start),
            html(&title),
            slot.minutes
        ));
    }
    out.push_str(
        "</select>\n<span class=\"timer-display\">--:--</span>\n\
         <button type=\"button\" data-action=\"start\">Start</button>\n\
         <button type=\"button\" data-action=\"reset\">Reset</button>\n\
         <button type=\"button\" data-action=\"next\">Next segment</button>\n\
         <span class=\"timer-state\"></span>\n</div>\n",
    );
    out
}

/// One card per activity of the session, in order: its slot, the changeover, what each side
/// does, the fallback, the materials and the demos with their time limits.
pub fn cards(course: &Course, cohort: &Cohort, chapter_link: &dyn Fn(&Activity) -> Option<String>) -> String {
    let slots = course.run_sheet_for(cohort);
    let mut out = String::new();
    for (start, slot) in timed(&slots) {
        let SlotKind::Activity(a) = slot.kind else { continue };
        let card = &a.card;
        let changeover_start = start.saturating_sub(card.changeover);
        let chapter = match chapter_link(a) {
            Some(link) if a.status == Status::Ready => format!(" [The chapter]({link})."),
            _ if a.status == Status::Draft => " The chapter is a draft.".to_string(),
            _ => String::new(),
        };
        out.push_str(&format!(
            "<div class=\"activity-card\" id=\"{}\">\n\n### {} to {}: {}\n\n",
            card_anchor(a),
            clock(start),
            clock(start + slot.minutes),
            a.heading()
        ));
        out.push_str(&format!(
            "{} minutes; groups: **{}**; remote people in the **{}**.{chapter}\n\n",
            slot.minutes,
            match card.groups {
                labs::course::Groups::Everyone => "everyone",
                labs::course::Groups::Pairs => "the pairs",
                labs::course::Groups::Tables => "the tables",
            },
            card.remote_in.describe()
        ));
        out.push_str(&format!(
            "- **Changeover ({} min, from {}).** Room: {} Remote: {}\n",
            card.changeover,
            clock(changeover_start),
            card.changeover_room,
            card.changeover_remote
        ));
        out.push_str(&format!("- **In the room.** {}\n", card.room));
        let remote_action = match card.remote_in {
            RemoteIn::MainRoom => "They stay in the main room and see the shared screen.",
            RemoteIn::BreakoutRooms => {
                "A breakout room may show neither the shared screen nor the main chat (check it in the dry \
                 run): post the instructions before the rooms open, and send the time left to every room."
            }
        };
        out.push_str(&format!("- **Remote.** {} {remote_action}\n", card.remote));
        out.push_str(&format!("- **If it breaks.** {}\n", card.fallback));
        out.push_str(&format!("- **Materials.** {}\n", a.materials));
        for demo in &a.demos {
            for d in demo.expand(&cohort.poll) {
                out.push_str(&format!(
                    "- **Demo** ({}, at most {} s): `cargo labs {}`\n",
                    d.phase, d.within_seconds, d.run
                ));
            }
        }
        out.push_str("\n</div>\n\n");
    }
    out
}

/// The preparation counts for this cohort: people, groups, breakout rooms, and every printout of
/// the session's activities with its number of copies.
pub fn preparation(course: &Course, cohort: &Cohort) -> String {
    let expected = cohort.expected;
    let in_session: Vec<&Activity> = course.activities.iter().filter(|a| course.in_session(cohort, &a.id)).collect();
    let breakouts: Vec<&Activity> =
        in_session.iter().copied().filter(|a| a.card.remote_in == RemoteIn::BreakoutRooms).collect();
    let pairs = |people: u32| people.div_ceil(2);
    let mut out = format!(
        "From `cohort.toml`: **{} in the room, {} remote** (`expected`). Pairs are formed at the welcome and \
         kept; a table is two pairs.\n\n\
         | | In the room | Remote |\n|---|---:|---:|\n\
         | People | {} | {} |\n| Pairs | {} | {} |\n| Tables | {} | {} |\n\n",
        expected.room,
        expected.remote,
        expected.room,
        expected.remote,
        pairs(expected.room),
        pairs(expected.remote),
        pairs(expected.room).div_ceil(2),
        pairs(expected.remote).div_ceil(2),
    );
    if breakouts.is_empty() {
        out.push_str("No activity of this session sends remote people to breakout rooms.\n\n");
    } else {
        out.push_str("Breakout rooms to create before the day, named so the producer can assign them in one go:\n\n");
        for a in &breakouts {
            let (rooms, unit) = match a.card.groups {
                labs::course::Groups::Tables => (pairs(expected.remote).div_ceil(2), "table"),
                _ => (pairs(expected.remote), "pair"),
            };
            out.push_str(&format!(
                "- {}: {rooms} rooms, one per remote {unit} (`{unit} 1` to `{unit} {rooms}`).\n",
                a.heading()
            ));
        }
        out.push('\n');
    }
    out.push_str(
        "Printouts for the room (the facilitator bundle's `print/`, A4 or Letter), with one spare in ten:\n\n\
         | Printout | For | Copies |\n|---|---|---:|\n",
    );
    out.push_str(&format!(
        "| Lab quick reference (`print/quick-reference-*.pdf`) | {} | {} |\n",
        PrintPer::Pair.describe(),
        PrintPer::Pair.copies(expected.room)
    ));
    for a in &in_session {
        for print in &a.prints {
            let stem = print.page.trim_end_matches(".html").replace('/', "-");
            out.push_str(&format!(
                "| {} (`print/{stem}-*.pdf`) | {} | {} |\n",
                short_title(a),
                print.per.describe(),
                print.per.copies(expected.room)
            ));
        }
    }
    let sticky_folded = !in_session.iter().any(|a| a.id == "reflection-wall");
    if sticky_folded {
        out.push_str(&format!(
            "| Sticky notes for the short reflection in the close | one per person, and pens | {} |\n",
            PrintPer::Person.copies(expected.room)
        ));
    }
    out
}

fn html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// Minutes from the session start as hh:mm.
fn clock(minutes: u32) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Text safe inside a table cell: one line, pipes escaped (GFM honours `\|` in code spans too).
fn cell(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::{test_cohort as cohort, test_course as course};

    /// The data rows of every table in `render`'s output, split into cells.
    fn rows(tables: &str) -> Vec<Vec<String>> {
        tables
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| Start"))
            .map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect())
            .collect()
    }

    fn chapters(a: &Activity) -> Option<String> {
        Some(format!("{}/README.md", a.folder()))
    }

    #[test]
    fn start_times_accumulate_changeovers_included_and_the_total_is_the_session() {
        let course = course();
        let table = render(&course, &cohort(), &chapters, None);
        let rows = rows(&table);
        let slots = course.run_sheet_for(&cohort());
        assert_eq!(rows.len(), slots.len() + 1);
        let mut start = 0;
        for (row, slot) in rows.iter().zip(&slots) {
            assert_eq!(row[0], clock(start), "{row:?}");
            assert_eq!(row[1], slot.minutes.to_string());
            start += slot.minutes;
        }
        assert!(rows.iter().any(|r| r[2].starts_with("↳ *Changeover")), "{table}");
        let session = course.session_minutes(&cohort().variant);
        let total = rows.last().unwrap();
        assert_eq!(total[0], clock(session));
        assert_eq!(total[1], format!("**{session}**"));
    }

    #[test]
    fn every_row_says_in_words_what_the_room_and_remote_people_do_and_the_fallback() {
        let course = course();
        let table = render(&course, &cohort(), &chapters, None);
        for row in rows(&table).iter().filter(|r| r[2] != "**Total**") {
            for (column, text) in ["room", "remote", "fallback"].iter().zip(&row[3..6]) {
                assert!(!text.is_empty() && !text.contains("see the chapter"), "{column} of {row:?}");
            }
        }
        let sleuth = course.activity("log-sleuth").unwrap();
        let row = table.lines().find(|l| l.contains(&sleuth.heading())).unwrap();
        assert!(row.contains(&cell(&sleuth.card.room)) && row.contains(&cell(&sleuth.card.fallback)), "{row}");
        assert!(row.contains(&format!("**Main room.** {}", cell(&sleuth.card.remote))), "{row}");
    }

    #[test]
    fn ready_activities_link_to_their_chapter_and_drafts_do_not() {
        let course = course();
        let table = render(&course, &cohort(), &chapters, Some("cards.md"));
        for a in &course.activities {
            let row = table.lines().find(|l| l.contains(&cell(&a.heading()))).unwrap();
            let link = format!("]({}/README.md)", a.folder());
            assert_eq!(row.contains(&link), a.status == Status::Ready, "{row}");
            assert!(row.contains(&format!("(cards.md#card-{})", a.id)), "{row}");
        }
    }

    #[test]
    fn a_two_hour_session_is_two_tables_each_of_its_hour() {
        let course = course();
        let cohort = cohort();
        let table = render(&course, &cohort, &chapters, None);
        assert_eq!(table.matches("<div class=\"run-sheet-hour\">").count(), 2, "{table}");
        let second = table.split("<div class=\"run-sheet-hour\">").nth(2).unwrap();
        assert!(second.contains("**01:00 to 01:20**: Test cohort, 2026-01-01"), "{second}");
        assert!(rows(second).iter().all(|r| r[0].starts_with("01:")), "{second}");
    }

    #[test]
    fn the_timer_has_one_option_per_slot_in_seconds() {
        let course = course();
        let timer = timer(&course, &cohort());
        let slots = course.run_sheet_for(&cohort());
        assert_eq!(timer.matches("<option").count(), slots.len());
        let first = &slots[0];
        assert!(
            timer.contains(&format!(
                "<option value=\"{}\">00:00 {} ({} min)</option>",
                first.minutes * 60,
                html(&first.title),
                first.minutes
            )),
            "{timer}"
        );
        assert!(timer.contains("Changeover: WAL Race"), "{timer}");
        assert!(!timer.contains("\n\n"), "a blank line would end the HTML block in markdown");
    }

    #[test]
    fn cards_hold_the_changeover_the_three_texts_and_each_poll_demo() {
        let course = course();
        let mut cohort = cohort();
        cohort.poll = vec!["myth-a".into(), "myth-b".into()];
        let cards = cards(&course, &cohort, &chapters);
        for a in &course.activities {
            assert!(cards.contains(&format!("id=\"card-{}\"", a.id)), "{}", a.id);
            for text in [&a.card.changeover_room, &a.card.room, &a.card.remote, &a.card.fallback, &a.materials] {
                assert!(cards.contains(text.as_str()), "{}: {text}", a.id);
            }
        }
        assert!(cards.contains("`cargo labs run wal-race --myth myth-a`"), "{cards}");
        assert!(cards.contains("`cargo labs run wal-race --myth myth-b`"), "{cards}");
        assert!(cards.contains("A breakout room may show neither the shared screen nor the main chat"), "{cards}");
    }

    #[test]
    fn preparation_counts_follow_the_expected_people_and_the_session() {
        let course = course();
        let mut cohort = cohort();
        cohort.expected = labs::course::Expected { room: 16, remote: 8 };
        let text = preparation(&course, &cohort);
        assert!(text.contains("| Pairs | 8 | 4 |") && text.contains("| Tables | 4 | 2 |"), "{text}");
        // The outage sends remote tables to breakout rooms: two rooms of two pairs.
        assert!(text.contains("'Oh No!' Outage: 2 rooms, one per remote table"), "{text}");
        assert!(text.contains("| WAL Race (`print/04-wal-race-bet-sheet-*.pdf`) | one per table | 5 |"), "{text}");
        cohort.skip = vec!["wal-race".into()];
        assert!(!preparation(&course, &cohort).contains("bet-sheet"), "a skipped activity needs no printout");
    }

    #[test]
    fn the_half_day_and_a_skipped_activity_come_from_the_same_data() {
        // The frozen test kit (labs/tests/data/kit): the repository's own course may change.
        let kit = labs::settings::Kit::at(crate::repo_root().join("labs/tests/data/kit"));
        let settings = labs::settings::Settings::load_from(kit).unwrap();
        let (course, mut cohort) = (settings.course, settings.cohort);
        cohort.variant = "half-day".into();
        cohort.skip = vec!["outage".into()];
        let table = render(&course, &cohort, &chapters, None);
        let total = rows(&table).last().unwrap().clone();
        assert_eq!(total[1], format!("**{}**", course.session_minutes("half-day")));
        assert!(table.contains("| Coffee break |"), "{table}");
        assert!(table.contains("Open lab time (Activity 5:"), "{table}");
        assert!(!table.contains("05-outage/README.md"), "a skipped activity must not link to its chapter");
        assert!(cohort_line(&course, &cohort).contains("Half day, 240 minutes; not run: outage"));
    }

    #[test]
    fn cells_stay_on_one_line_and_pipes_do_not_split_them() {
        assert_eq!(cell("a | b\n  c"), "a \\| b c");
    }
}
