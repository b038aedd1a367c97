//! The parts every activity chapter has, in the order ../shared/style.md gives them: a check
//! that lists what a chapter lacks, so a new or forked activity cannot ship half-written.

use crate::markdown;

/// The chapter's sections (`## `), in order.
pub const PARTS: [&str; 7] = [
    "The hook",
    "Timing",
    "In the room and remote",
    "Steps for the facilitator",
    "The lab",
    "Reveal and debrief",
    "Sources",
];

/// The section that holds the debrief's own parts.
const DEBRIEF_SECTION: &str = PARTS[5];

/// The debrief's own parts (`### ` inside "Reveal and debrief"), in order.
pub const DEBRIEF: [&str; 3] = ["The lesson", "The evidence", "What to change next sprint"];

/// What a chapter lacks, in words a writer can act on. `minutes` is the activity's
/// declaration in course.toml, which the chapter must repeat as its first line of text.
///
/// Headings are read with pulldown-cmark (as mdBook renders them), so a `## Sources` inside a
/// code block or an admonition is not a section, and a setext heading is one.
pub fn chapter_problems(text: &str, minutes: u32) -> Vec<String> {
    let mut problems = Vec::new();
    let headings = markdown::headings(text);
    let sections: Vec<&str> = headings.iter().filter(|h| h.level == 2).map(|h| h.text.as_str()).collect();
    check_order(&sections, &PARTS, "section", &mut problems);
    // The debrief's parts are the `###` headings between its `##` and the next heading above `###`.
    // Without the section there is nothing to look inside: the missing section is the one problem.
    if let Some(at) = headings.iter().position(|h| h.level == 2 && h.text == DEBRIEF_SECTION) {
        let debrief: Vec<&str> = headings[at + 1..]
            .iter()
            .take_while(|h| h.level > 2)
            .filter(|h| h.level == 3)
            .map(|h| h.text.as_str())
            .collect();
        check_order(&debrief, &DEBRIEF, "debrief part", &mut problems);
    }
    let declared = format!("{minutes} minutes (set in course.toml).");
    if !text.lines().take(5).any(|l| l.trim() == declared) {
        problems.push(format!("no line `{declared}` under the title (course.toml declares {minutes} minutes)"));
    }
    if !markdown::has_facilitator_block(text) {
        problems.push("no facilitator note (```admonish ... class=\"facilitator\"```)".into());
    }
    problems
}

fn check_order(found: &[&str], wanted: &[&str], what: &str, problems: &mut Vec<String>) {
    let mut last: Option<usize> = None;
    for part in wanted {
        match found.iter().position(|h| h == part) {
            None => problems.push(format!("missing {what} `{part}`")),
            Some(i) => {
                if last.is_some_and(|l| i < l) {
                    problems.push(format!("{what} `{part}` is out of order (style.md: {})", wanted.join(", ")));
                }
                last = Some(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chapter(sections: &[&str], debrief: &[&str]) -> String {
        let mut text = String::from("# Title\n\n15 minutes (set in course.toml).\n\n```admonish tip title=\"Facilitator: Ask\" class=\"facilitator\"\nAsk.\n```\n");
        for s in sections {
            text += &format!("\n## {s}\n\nText.\n");
            if *s == "Reveal and debrief" {
                for d in debrief {
                    text += &format!("\n### {d}\n\nText.\n");
                }
            }
        }
        text
    }

    #[test]
    fn a_complete_chapter_has_no_problems() {
        assert_eq!(chapter_problems(&chapter(&PARTS, &DEBRIEF), 15), Vec::<String>::new());
    }

    #[test]
    fn missing_and_misordered_parts_are_named() {
        let text = chapter(
            &["The hook", "In the room and remote", "Timing", "The lab", "Reveal and debrief", "Sources"],
            &["The lesson"],
        );
        let problems = chapter_problems(&text, 15);
        assert!(
            problems.iter().any(|p| p.starts_with("section `In the room and remote` is out of order")),
            "{problems:?}"
        );
        assert!(problems.contains(&"missing section `Steps for the facilitator`".to_string()), "{problems:?}");
        assert!(problems.contains(&"missing debrief part `The evidence`".to_string()), "{problems:?}");
        assert!(problems.contains(&"missing debrief part `What to change next sprint`".to_string()), "{problems:?}");
        assert_eq!(
            chapter_problems(&chapter(&PARTS, &DEBRIEF), 10),
            vec!["no line `10 minutes (set in course.toml).` under the title (course.toml declares 10 minutes)"]
        );
    }

    /// The chapter this check exists to catch: no "Reveal and debrief" at all. One problem names
    /// the section (its parts are not listed one by one), and the check does not panic.
    #[test]
    fn a_chapter_without_its_debrief_is_named_not_a_panic() {
        let without: Vec<&str> = PARTS.iter().copied().filter(|p| *p != DEBRIEF_SECTION).collect();
        let text = chapter(&without, &[]);
        assert_eq!(chapter_problems(&text, 15), vec!["missing section `Reveal and debrief`"]);
        // Even when the chapter ends right after a heading, or is nothing but its title.
        assert_eq!(
            chapter_problems("# Title\n\n15 minutes (set in course.toml).\n\n## The hook", 15).len(),
            7,
            "six missing sections and no facilitator note"
        );
        assert!(chapter_problems("", 15).contains(&"missing section `Reveal and debrief`".to_string()));
    }

    #[test]
    fn debrief_parts_end_at_the_next_section_and_setext_headings_count() {
        // "The evidence" under Sources is not the debrief's.
        let mut text = chapter(&PARTS, &["The lesson", "What to change next sprint"]);
        text += "\n### The evidence\n\nToo late.\n";
        assert_eq!(chapter_problems(&text, 15), vec!["missing debrief part `The evidence`"]);
        let setext = chapter(&PARTS, &DEBRIEF).replace("\n## Sources\n", "\nSources\n-------\n");
        assert_eq!(chapter_problems(&setext, 15), Vec::<String>::new());
    }

    #[test]
    fn headings_inside_code_blocks_do_not_count() {
        let mut text = chapter(&PARTS[..6], &DEBRIEF);
        text += "\n```markdown\n## Sources\n```\n";
        assert_eq!(chapter_problems(&text, 15), vec!["missing section `Sources`"]);
    }
}
