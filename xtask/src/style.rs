//! The parts every activity chapter has, in the order ../shared/style.md gives them: a check
//! that lists what a chapter lacks, so a new or forked activity cannot ship half-written.

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

/// The debrief's own parts (`### ` inside "Reveal and debrief"), in order.
pub const DEBRIEF: [&str; 3] = ["The lesson", "The evidence", "What to change next sprint"];

/// What a chapter lacks, in words a writer can act on. `minutes` is the activity's
/// declaration in course.toml, which the chapter must repeat as its first line of text.
pub fn chapter_problems(text: &str, minutes: u32) -> Vec<String> {
    let mut problems = Vec::new();
    let headings = |prefix: &str| -> Vec<String> {
        let mut in_code = false;
        let mut out = Vec::new();
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
            } else if !in_code {
                if let Some(h) = line.strip_prefix(prefix) {
                    out.push(h.trim().to_string());
                }
            }
        }
        out
    };
    let sections = headings("## ");
    check_order(&sections, &PARTS, "section", &mut problems);
    let debrief_at = text.find("\n## Reveal and debrief");
    let after_debrief = debrief_at.map(|i| &text[i + 1..]).unwrap_or("");
    let debrief_end = after_debrief[3..].find("\n## ").map(|i| i + 3).unwrap_or(after_debrief.len());
    let debrief: Vec<String> = after_debrief[..debrief_end]
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().to_string())
        .collect();
    if debrief_at.is_some() {
        check_order(&debrief, &DEBRIEF, "debrief part", &mut problems);
    }
    let declared = format!("{minutes} minutes (set in course.toml).");
    if !text.lines().take(5).any(|l| l.trim() == declared) {
        problems.push(format!("no line `{declared}` under the title (course.toml declares {minutes} minutes)"));
    }
    if !text.contains("class=\"facilitator\"") {
        problems.push("no facilitator note (```admonish ... class=\"facilitator\"```)".into());
    }
    problems
}

fn check_order(found: &[String], wanted: &[&str], what: &str, problems: &mut Vec<String>) {
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

    #[test]
    fn headings_inside_code_blocks_do_not_count() {
        let mut text = chapter(&PARTS[..6], &DEBRIEF);
        text += "\n```markdown\n## Sources\n```\n";
        assert_eq!(chapter_problems(&text, 15), vec!["missing section `Sources`"]);
    }
}
