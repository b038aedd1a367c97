//! HOW-TO-RUN.md, the first page of both handouts: `xtask/templates/HOW-TO-RUN.md` rendered for
//! the cohort. Its commands are README.md's own sections (`{{readme: Prerequisites}}`), copied at
//! build time, so the handout cannot drift from the README; the session line and the activity
//! table come from course.toml and cohort.toml, so it follows the cohort's variant and skips.
//!
//! Placeholders: `{{title}}` (the cohort's title), `{{cohort}}` (title, date, variant, minutes and
//! what is not run), `{{activities}}` (this session's activities), `{{readme: <heading>}}` (the
//! body of README.md's `## <heading>` section).

use std::path::Path;

use anyhow::{bail, Context, Result};
use labs::course::{Cohort, Course, Status};

use crate::{markdown, run_sheet};

/// The template, relative to the kit's root.
pub const TEMPLATE: &str = "xtask/templates/HOW-TO-RUN.md";

/// Renders the kit's template with its README for the cohort.
pub fn render(root: &Path, course: &Course, cohort: &Cohort) -> Result<String> {
    let template =
        std::fs::read_to_string(root.join(TEMPLATE)).with_context(|| format!("could not read {TEMPLATE}"))?;
    let readme = std::fs::read_to_string(root.join("README.md")).context("could not read README.md")?;
    render_text(&template, &readme, course, cohort)
}

fn render_text(template: &str, readme: &str, course: &Course, cohort: &Cohort) -> Result<String> {
    let mut out = String::with_capacity(template.len() * 2);
    let mut problems = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let line = template[..template.len() - rest.len() + open].matches('\n').count() + 1;
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find("}}").map(|c| c + open) else {
            problems.push(format!("{TEMPLATE}:{line}: `{{{{` is never closed with `}}}}`"));
            rest = "";
            break;
        };
        let placeholder = rest[open + 2..close].trim();
        match expand(placeholder, readme, course, cohort) {
            Ok(text) => out.push_str(&text),
            Err(problem) => problems.push(format!("{TEMPLATE}:{line}: {problem}")),
        }
        rest = &rest[close + 2..];
    }
    out.push_str(rest);
    if !problems.is_empty() {
        bail!("HOW-TO-RUN.md cannot be rendered:\n  {}", problems.join("\n  "));
    }
    Ok(out)
}

fn expand(placeholder: &str, readme: &str, course: &Course, cohort: &Cohort) -> Result<String, String> {
    if let Some(heading) = placeholder.strip_prefix("readme:") {
        return readme_section(readme, heading.trim());
    }
    match placeholder {
        "title" => Ok(cohort.title.clone()),
        "cohort" => Ok(run_sheet::cohort_line(course, cohort)),
        "activities" => Ok(activities(course, cohort)),
        other => Err(format!(
            "unknown placeholder `{{{{{other}}}}}`; the template knows {{{{title}}}}, {{{{cohort}}}}, \
             {{{{activities}}}} and {{{{readme: <a ## heading of README.md>}}}}"
        )),
    }
}

/// The body of README.md's `## heading` section: up to the next heading of level 2 or above.
fn readme_section(readme: &str, heading: &str) -> Result<String, String> {
    let headings = markdown::headings(readme);
    let Some(at) = headings.iter().position(|h| h.level == 2 && h.text == heading) else {
        let known: Vec<&str> = headings.iter().filter(|h| h.level == 2).map(|h| h.text.as_str()).collect();
        return Err(format!(
            "README.md has no `## {heading}` section to include (its sections: {}); restore the heading or change \
             the template",
            known.join(", ")
        ));
    };
    let first = headings[at].line; // 1-based line of the heading itself
    let end = headings[at + 1..].iter().find(|h| h.level <= 2).map(|h| h.line - 1);
    let lines: Vec<&str> = readme.lines().collect();
    let body = &lines[first..end.unwrap_or(lines.len()).max(first)];
    Ok(body.join("\n").trim().to_string())
}

/// The activities this cohort runs, in run sheet order, with the minutes of its variant; then
/// one line naming those it does not run.
fn activities(course: &Course, cohort: &Cohort) -> String {
    let mut table =
        String::from("| # | Activity | Minutes | Lab | Run it |\n|--:|----------|--------:|-----|--------|\n");
    let mut not_run = Vec::new();
    for slot in course.run_sheet_for(cohort) {
        let minutes = slot.minutes;
        let a = match slot.kind {
            labs::course::SlotKind::Activity(a) => a,
            labs::course::SlotKind::Skipped(a) => {
                not_run.push(format!("{} ({})", a.title, a.id));
                continue;
            }
            _ => continue,
        };
        let run_it = match (a.status, labs::lab::find(&a.id).and_then(|lab| lab.exercise())) {
            (Status::Draft, _) => "in preparation".to_string(),
            (Status::Ready, Some(exercise)) => format!(
                "`labs run {id}`; your exercise is `{}`, checked by `labs check {id}`",
                exercise.path(),
                id = a.id
            ),
            (Status::Ready, None) => format!("`labs run {}`", a.id),
        };
        table.push_str(&format!(
            "| {} | {} | {minutes} | {} | {run_it} |\n",
            a.number,
            a.title.replace('|', "\\|"),
            a.lab.replace('|', "\\|")
        ));
    }
    match not_run.len() {
        0 => {}
        1 => table.push_str(&format!(
            "\nNot run in this session: {}. Its chapter and fixtures are not in this bundle; its slot is open lab time.\n",
            not_run[0]
        )),
        _ => table.push_str(&format!(
            "\nNot run in this session: {}. Their chapters and fixtures are not in this bundle; their slots are open \
             lab time.\n",
            not_run.join(", ")
        )),
    }
    table.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = "# Kit\n\nIntro.\n\n## Prerequisites\n\n- Rust.\n- `pg_basebackup` on PATH.\n\n\
                          ### A subsection\n\nStays in.\n\n## For attendees\n\n```sh\ncargo labs run log-sleuth\n\
                          ## not a heading, a comment in a code block\n```\n\n## Last\n\nEnd.\n";

    /// The test course, whose longer variant gives log-sleuth and outage more minutes.
    fn course() -> Course {
        Course::parse(crate::TEST_COURSE).expect("the test course is valid")
    }

    #[test]
    fn readme_sections_are_copied_whole_up_to_the_next_section() {
        let template = "# How\n\n{{ readme: Prerequisites }}\n\n--\n\n{{readme: For attendees}}\n";
        let text = render_text(template, README, &course(), &crate::test_cohort()).unwrap();
        assert!(text.contains("- Rust.\n- `pg_basebackup` on PATH.\n\n### A subsection\n\nStays in.\n\n--"), "{text}");
        assert!(
            text.contains("cargo labs run log-sleuth\n## not a heading, a comment in a code block\n```\n"),
            "{text}"
        );
        assert!(!text.contains("End."), "{text}");
    }

    #[test]
    fn the_table_follows_the_cohort_variant_and_skips() {
        let course = course();
        let mut cohort = crate::test_cohort();
        cohort.variant = "long".into();
        cohort.skip = vec!["wal-race".into()];
        let text = render_text("{{title}}\n{{cohort}}\n{{activities}}\n", README, &course, &cohort).unwrap();
        assert!(text.starts_with("Test cohort\n**Test cohort**, 2026-01-01. Long, 80 minutes; not run: wal-race"));
        // log-sleuth has its variant minutes and the exercise the labs registry gives it.
        assert!(
            text.contains(
                "| 1 | Log Sleuth | 30 | find the \\| skipped event | `labs run log-sleuth`; your exercise is \
                 `exercises/01-log-sleuth/poll.sql`, checked by `labs check log-sleuth` |"
            ),
            "{text}"
        );
        assert!(text.contains("| 3 | 'Oh No!' Outage | 15 | lose the recent WAL | in preparation |"), "{text}");
        assert!(!text.contains("| 2 | Throughput Throwdown: WAL Race"), "a skipped activity is in the table:\n{text}");
        assert!(text.contains("Not run in this session: Throughput Throwdown: WAL Race (wal-race)."), "{text}");

        let core = render_text("{{activities}}", README, &course, &crate::test_cohort()).unwrap();
        assert!(
            core.contains("| 1 | Log Sleuth | 30 |") && core.contains("| 2 | Throughput Throwdown: WAL Race | 15 |"),
            "{core}"
        );
        assert!(!core.contains("Not run"), "{core}");
    }

    #[test]
    fn a_missing_section_or_an_unknown_placeholder_names_the_template_line() {
        let template = "# How\n\n{{readme: Install}}\n{{titel}}\n{{title";
        let err = render_text(template, README, &course(), &crate::test_cohort()).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "{TEMPLATE}:3: README.md has no `## Install` section to include (its sections: Prerequisites, For \
                 attendees, Last)"
            )),
            "{err}"
        );
        assert!(err.contains(&format!("{TEMPLATE}:4: unknown placeholder `{{{{titel}}}}`")), "{err}");
        assert!(err.contains(&format!("{TEMPLATE}:5: `{{{{` is never closed")), "{err}");
    }

    /// The shipped template against the shipped README: every section it copies exists, and the
    /// page carries the README's commands (the cohort is the test one, never cohort.toml).
    #[test]
    fn the_shipped_template_renders_with_the_shipped_readme() {
        let root = crate::repo_root();
        let text = render(&root, &crate::test_course(), &crate::test_cohort()).unwrap();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let template = std::fs::read_to_string(root.join(TEMPLATE)).unwrap();
        let sections: Vec<&str> =
            template.split("{{readme:").skip(1).map(|rest| rest.split("}}").next().unwrap().trim()).collect();
        assert!(sections.contains(&"Prerequisites") && sections.len() >= 3, "{sections:?}");
        for section in sections {
            let body = readme_section(&readme, section).unwrap();
            assert!(!body.is_empty() && text.contains(&body), "README's `## {section}` is not in the page verbatim");
        }
        assert!(!text.contains("{{"), "{text}");
    }
}
