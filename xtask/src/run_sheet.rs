//! The minute-by-minute run sheet, rendered as a Markdown table from course.toml. The book's
//! `{{#run-sheet}}` and the facilitator handout both use it, so timing lives in one place.

use labs::course::{Activity, Cohort, Course, Status, CORE};

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

/// Renders the table for the cohort's variant. `chapter_link` gives the link to a ready
/// activity's chapter, as seen from the page the table goes into (None: no link).
pub fn render(course: &Course, cohort: &Cohort, chapter_link: &dyn Fn(&Activity) -> Option<String>) -> String {
    let mut out = String::from(
        "| Start | Min | Segment | Facilitator | In the room | Remote | Materials | Fallback |\n\
         |------:|----:|---------|-------------|-------------|--------|-----------|----------|\n",
    );
    let mut start = 0;
    for (title, minutes, segment, runs) in course.run_sheet_for(cohort) {
        let activity = segment.activity.as_deref().and_then(|id| course.activity(id));
        let cells: [String; 6] = match activity {
            Some(_) if !runs => [
                cell(&title),
                "Open lab: pairs finish or rerun an earlier lab; take questions.".into(),
                "Finish an earlier lab with your pair.".into(),
                "The same, in breakout rooms.".into(),
                "None.".into(),
                "Use these minutes as buffer.".into(),
            ],
            Some(activity) => {
                let link = (activity.status == Status::Ready).then(|| chapter_link(activity)).flatten();
                let (segment_cell, see) = match (&link, activity.status) {
                    (Some(link), _) => (format!("[{}]({link})", cell(&title)), format!("[see the chapter]({link})")),
                    (None, Status::Ready) => (cell(&title), "see the chapter".to_string()),
                    (None, Status::Draft) => (format!("{} (draft)", cell(&title)), "chapter in draft".to_string()),
                };
                [
                    segment_cell,
                    format!("Lab: {}", cell(&activity.lab)),
                    see.clone(),
                    see.clone(),
                    cell(&activity.materials),
                    see,
                ]
            }
            None => {
                let text = |field: &Option<String>| cell(field.as_deref().unwrap_or(""));
                [
                    cell(&title),
                    text(&segment.facilitator),
                    text(&segment.room),
                    text(&segment.remote),
                    text(&segment.materials),
                    text(&segment.fallback),
                ]
            }
        };
        out.push_str(&format!("| {} | {minutes} | {} |\n", clock(start), cells.join(" | ")));
        start += minutes;
    }
    out.push_str(&format!("| {} | **{start}** | **Total** | | | | | |\n", clock(start)));
    out
}

/// The segment timer under the table (book/theme/timer.js drives it): one option per segment,
/// its value the segment's length in seconds, so the timer follows course.toml.
pub fn timer(course: &Course, cohort: &Cohort) -> String {
    let mut out = String::from("<div id=\"segment-timer\" aria-live=\"polite\">\n<select aria-label=\"Segment\">\n");
    let mut start = 0;
    for (title, minutes, _, _) in course.run_sheet_for(cohort) {
        out.push_str(&format!(
            "<option value=\"{}\">{} {} ({minutes} min)</option>\n",
            minutes * 60,
            clock(start),
            html(&title)
        ));
        start += minutes;
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

    fn rows(table: &str) -> Vec<Vec<String>> {
        table
            .lines()
            .skip(2)
            .map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect())
            .collect()
    }

    #[test]
    fn start_times_accumulate_and_the_total_is_the_session() {
        let course = course();
        let table = render(&course, &cohort(), &|a| Some(format!("{}/README.md", a.folder())));
        let rows = rows(&table);
        assert_eq!(rows.len(), course.segments.len() + 1);
        assert_eq!(rows[0][0], "00:00");
        let first_minutes: u32 = rows[0][1].parse().unwrap();
        assert_eq!(rows[1][0], clock(first_minutes));
        let total = rows.last().unwrap();
        assert_eq!(total[0], clock(course.course.session_minutes));
        assert_eq!(total[1], format!("**{}**", course.course.session_minutes));
    }

    #[test]
    fn ready_activities_link_to_their_chapter_and_drafts_do_not() {
        let course = course();
        let table = render(&course, &cohort(), &|a| Some(format!("{}/README.md", a.folder())));
        for a in &course.activities {
            let row = table.lines().find(|l| l.contains(&a.title.replace('|', "\\|"))).unwrap();
            let link = format!("]({}/README.md)", a.folder());
            assert_eq!(row.contains(&link), a.status == Status::Ready, "{row}");
            assert!(row.contains(&format!("Lab: {}", cell(&a.lab))), "{row}");
        }
    }

    #[test]
    fn the_timer_has_one_option_per_segment_in_seconds() {
        let course = course();
        let timer = timer(&course, &cohort());
        assert_eq!(timer.matches("<option").count(), course.segments.len());
        let (title, minutes, _) = course.run_sheet().into_iter().next().unwrap();
        assert!(
            timer.contains(&format!(
                "<option value=\"{}\">00:00 {} ({minutes} min)</option>",
                minutes * 60,
                html(&title)
            )),
            "{timer}"
        );
        assert!(!timer.contains("\n\n"), "a blank line would end the HTML block in markdown");
    }

    #[test]
    fn the_half_day_and_a_skipped_activity_come_from_the_same_data() {
        // The frozen test kit (labs/tests/data/kit): the repository's own course may change.
        let kit = labs::settings::Kit::at(crate::repo_root().join("labs/tests/data/kit"));
        let settings = labs::settings::Settings::load_from(kit).unwrap();
        let (course, mut cohort) = (settings.course, settings.cohort);
        cohort.variant = "half-day".into();
        cohort.skip = vec!["outage".into()];
        let table = render(&course, &cohort, &|a| Some(format!("{}/README.md", a.folder())));
        let total = rows(&table).last().unwrap().clone();
        assert_eq!(total[1], "**210**");
        assert!(table.contains("| Lab clinic |") && table.contains("| Coffee break |"), "{table}");
        assert!(table.contains("Open lab time (Activity 5:"), "{table}");
        assert!(!table.contains("05-outage/README.md"), "a skipped activity must not link to its chapter");
        assert!(cohort_line(&course, &cohort).contains("Half day, 210 minutes; not run: outage"));
    }

    #[test]
    fn cells_stay_on_one_line_and_pipes_do_not_split_them() {
        assert_eq!(cell("a | b\n  c"), "a \\| b c");
    }
}
