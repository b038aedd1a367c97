//! The built book in a real browser: Debian's chromium, headless, from the local files (no
//! server, no network), as an attendee opens the offline handout. Every page must load without
//! a console error or a missing asset; chapters must show rendered admonitions; the run sheet's
//! timer must have run; the printable pages must print.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use labs::course::{Cohort, Course};
use walkdir::WalkDir;

use crate::children;

/// How long chromium may take to open or print one page; a hung one is ended (SIGTERM, SIGKILL).
const PAGE_LIMIT: Duration = Duration::from_secs(120);

/// Debian's chromium on PATH (the package is `chromium`).
pub fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Pages meant to be printed: each must give a PDF (those of activities the cohort runs:
/// [`printables_for`]).
pub const PRINTABLE: [&str; 5] = [
    "quick-reference.html",
    "03-schema-sketch/template.html",
    "04-wal-race/bet-sheet.html",
    "05-outage/role-cards.html",
    "06-reflection-wall/sticky-template.html",
];

/// The printable pages of the activities `cohort` runs, and those it leaves out with the
/// activity they belong to (a skipped activity's chapter is not in the book).
pub fn printables_for(course: &Course, cohort: &Cohort) -> (Vec<&'static str>, Vec<(&'static str, String)>) {
    let mut kept = Vec::new();
    let mut left_out = Vec::new();
    for page in PRINTABLE {
        let skipped = course
            .activities
            .iter()
            .find(|a| !cohort.runs(&a.id) && Path::new(page).starts_with(a.folder()))
            .map(|a| a.id.clone());
        match skipped {
            Some(id) => left_out.push((page, id)),
            None => kept.push(page),
        }
    }
    (kept, left_out)
}

fn headless(chromium: &Path) -> Command {
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless=new",
        // As root (CI), chromium refuses to start with its sandbox.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--allow-file-access-from-files",
        "--enable-logging=stderr",
        "--log-level=0",
        // Let scripts run (the timer, search) before the DOM is dumped.
        "--virtual-time-budget=3000",
    ]);
    cmd
}

/// Console messages chromium logged for a page: `CONSOLE` lines on stderr.
fn console_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(|l| l.split_once("] ").map_or(l, |(_, m)| m).to_string())
        .collect()
}

/// Opens every page of the built book at `out` and prints each of `printables`; returns what is
/// wrong, page by page.
pub fn check(out: &Path, chromium: &Path, printables: &[&str]) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut pages: Vec<PathBuf> = WalkDir::new(out)
        .into_iter()
        .filter_map(|e| e.ok())
        .map(|e| e.into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "html"))
        .collect();
    pages.sort();
    let profile = tempfile::tempdir()?;
    for page in &pages {
        let name = page.strip_prefix(out)?.display().to_string();
        let output = children::output(
            headless(chromium)
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg("--dump-dom")
                .arg(format!("file://{}", page.display())),
            Some(PAGE_LIMIT),
        );
        let output = match output {
            Ok(output) => output,
            Err(e) => {
                problems.push(format!("{name}: {e:#}"));
                continue;
            }
        };
        let dom = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() || dom.trim().is_empty() {
            problems.push(format!("{name}: chromium could not open it: {}", stderr.lines().last().unwrap_or("")));
            continue;
        }
        for message in console_lines(&stderr) {
            problems.push(format!("{name}: console: {message}"));
        }
        let is_chapter = name.ends_with("/index.html") && name.chars().next().is_some_and(|c| c.is_ascii_digit());
        if is_chapter && !dom.contains("class=\"admonition") {
            problems
                .push(format!("{name}: no rendered admonition (mdbook-admonish did not run, or its CSS is missing)"));
        }
        if name == "run-sheet.html" {
            match dom.split("class=\"timer-display\">").nth(1).and_then(|rest| rest.split('<').next()) {
                Some(shown) if shown.len() == 5 && shown.as_bytes()[2] == b':' && shown != "--:--" => {}
                other => problems.push(format!("{name}: the segment timer did not run (it shows {other:?})")),
            }
        }
    }
    for &printable in printables {
        let page = out.join(printable);
        if !page.exists() {
            problems.push(format!("{printable}: missing"));
            continue;
        }
        for paper in Paper::ALL {
            let pdf = profile.path().join("page.pdf");
            match print_pdf(chromium, &page, paper, &pdf) {
                Ok(pages) if printable == ONE_PAGE && pages != 1 => {
                    problems.push(format!("{printable}: prints on {pages} {} pages; it must fit on one", paper.name()))
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("{printable}: {e:#}")),
            }
        }
    }
    Ok(problems)
}

/// The page that must print on a single sheet.
pub const ONE_PAGE: &str = "quick-reference.html";

/// The paper sizes the printable pages must print well on.
#[derive(Clone, Copy, Debug)]
pub enum Paper {
    A4,
    Letter,
}

impl Paper {
    pub const ALL: [Paper; 2] = [Paper::A4, Paper::Letter];
    pub fn name(self) -> &'static str {
        match self {
            Paper::A4 => "a4",
            Paper::Letter => "letter",
        }
    }
    fn css(self) -> &'static str {
        match self {
            Paper::A4 => "A4",
            Paper::Letter => "letter",
        }
    }
}

/// Prints `page` to `pdf` on `paper` and returns the number of pages. The paper size is set with
/// CSS `@page` in a copy of the page next to it (so its relative assets load), removed after.
pub fn print_pdf(chromium: &Path, page: &Path, paper: Paper, pdf: &Path) -> Result<usize> {
    let html = std::fs::read_to_string(page).with_context(|| format!("reading {}", page.display()))?;
    let style = format!("<style>@page {{ size: {}; margin: 12mm; }}</style></head>", paper.css());
    let copy = page.with_file_name(format!(
        ".print-{}-{}",
        paper.name(),
        page.file_name().and_then(|n| n.to_str()).unwrap_or("page.html")
    ));
    std::fs::write(&copy, html.replacen("</head>", &style, 1))?;
    let profile = tempfile::tempdir()?;
    let _ = std::fs::remove_file(pdf);
    let output = children::output(
        headless(chromium)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--no-pdf-header-footer")
            .arg(format!("--print-to-pdf={}", pdf.display()))
            .arg(format!("file://{}", copy.display())),
        Some(PAGE_LIMIT),
    );
    let _ = std::fs::remove_file(&copy);
    let output = output?;
    let bytes = std::fs::read(pdf).unwrap_or_default();
    if !output.status.success() || !bytes.starts_with(b"%PDF") || bytes.len() < 1_000 {
        bail!("did not print to a {} PDF ({} bytes)", paper.name(), bytes.len());
    }
    Ok(pdf_pages(&bytes))
}

/// Counts the page objects of a PDF (`/Type /Page`, not `/Pages`).
fn pdf_pages(bytes: &[u8]) -> usize {
    let text = String::from_utf8_lossy(bytes);
    text.match_indices("/Type")
        .filter(|(i, _)| {
            let rest = text[i + 5..].trim_start();
            rest.starts_with("/Page") && !rest.starts_with("/Pages")
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gate can fail: a page with a script error and a run sheet whose timer never ran.
    #[test]
    fn a_script_error_and_a_dead_timer_are_reported() {
        let Some(chromium) = find_chromium() else {
            eprintln!("skipped: no chromium on PATH (CI installs it)");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("index.html"),
            "<html><body><p>ok</p><script>definitelyNotDefined()</script></body></html>",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("run-sheet.html"),
            "<html><body><span class=\"timer-display\">--:--</span></body></html>",
        )
        .unwrap();
        let problems = check(dir.path(), &chromium, &PRINTABLE).unwrap();
        assert!(
            problems.iter().any(|p| p.starts_with("index.html: console:") && p.contains("definitelyNotDefined")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("run-sheet.html: the segment timer did not run")),
            "{problems:?}"
        );
        assert_eq!(problems.iter().filter(|p| p.ends_with(": missing")).count(), PRINTABLE.len(), "{problems:?}");
    }

    #[test]
    fn a_skipped_activity_takes_its_printable_pages_with_it() {
        let settings = labs::settings::Settings::load_from(labs::settings::Kit::at(crate::test_kit())).unwrap();
        let (course, mut cohort) = (settings.course, settings.cohort);
        let (kept, left_out) = printables_for(&course, &cohort);
        assert_eq!((kept.len(), left_out.len()), (PRINTABLE.len(), 0));
        cohort.skip = vec!["wal-race".into(), "outage".into()];
        let (kept, left_out) = printables_for(&course, &cohort);
        assert_eq!(
            left_out,
            vec![
                ("04-wal-race/bet-sheet.html", "wal-race".to_string()),
                ("05-outage/role-cards.html", "outage".into())
            ]
        );
        assert!(kept.contains(&"quick-reference.html") && kept.len() == PRINTABLE.len() - 2, "{kept:?}");
    }

    #[test]
    fn console_lines_are_the_messages_chromium_logged() {
        let stderr = "[1127/052301.123:INFO:CONSOLE(12)] \"Uncaught ReferenceError: x is not defined\", source: file:///b/t.js (12)\n\
                      [1127/052301.200:WARNING:sandbox] something else\n";
        assert_eq!(
            console_lines(stderr),
            vec!["\"Uncaught ReferenceError: x is not defined\", source: file:///b/t.js (12)"]
        );
    }
}
