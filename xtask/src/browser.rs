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
        // A copy of the page that measures its tables once laid out (see TABLE_WIDTHS), opened
        // at a laptop's window size.
        let html = std::fs::read_to_string(page).with_context(|| format!("reading {}", page.display()))?;
        let copy = page
            .with_file_name(format!(".layout-{}", page.file_name().and_then(|n| n.to_str()).unwrap_or("page.html")));
        std::fs::write(&copy, with_layout_probe(&html))?;
        let output = children::output(
            headless(chromium)
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg(format!("--window-size={},{}", LAPTOP.0, LAPTOP.1))
                .arg("--dump-dom")
                .arg(format!("file://{}", copy.display())),
            Some(PAGE_LIMIT),
        );
        let _ = std::fs::remove_file(&copy);
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
        problems.extend(wide_tables(&dom).into_iter().map(|t| format!("{name}: {t}")));
        if name == "run-sheet.html" {
            match dom.split("class=\"timer-display\">").nth(1).and_then(|rest| rest.split('<').next()) {
                Some(shown) if shown.len() == 5 && shown.as_bytes()[2] == b':' && shown != "--:--" => {}
                other => problems.push(format!("{name}: the segment timer did not run (it shows {other:?})")),
            }
            // One landscape page per hour of the session: each hour's table fits its page.
            let hours = dom.matches("class=\"run-sheet-hour\"").count();
            for paper in Paper::ALL {
                let pdf = profile.path().join("run-sheet.pdf");
                match print_pdf_oriented(chromium, page, paper, Orientation::Landscape, &pdf) {
                    Ok(pages) if pages != hours => problems.push(format!(
                        "{name}: prints on {pages} landscape {} pages for {hours} hour(s); each hour must fit one page \
                         (shorten the run sheet's texts in course.toml, or the print CSS in book/theme/timer.css)",
                        paper.name()
                    )),
                    Ok(_) => {}
                    Err(e) => problems.push(format!("{name}: {e:#}")),
                }
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

/// The window the layout gate lays pages out in: a laptop screen.
pub const LAPTOP: (u32, u32) = (1400, 900);

/// Measures, once the page is laid out, every table of the main column that is wider than the
/// column (so part of it is cut off or needs sideways scrolling), and writes what it found into
/// the page, where `--dump-dom` shows it.
const TABLE_WIDTHS: &str = r#"<script>
window.addEventListener("load", () => {
  const main = document.querySelector("main");
  const found = [];
  if (main) {
    const column = main.getBoundingClientRect().width;
    main.querySelectorAll("table").forEach((table) => {
      const width = Math.max(table.scrollWidth, table.getBoundingClientRect().width);
      if (width > column + 1) {
        const header = table.querySelector("th, td");
        found.push(`${Math.round(width)}|${Math.round(column)}|${header ? header.textContent.trim().slice(0, 40) : ""}`);
      }
    });
  }
  const report = document.createElement("template");
  report.id = "layout-report";
  report.setAttribute("data-wide-tables", found.join(";;"));
  document.body.appendChild(report);
});
</script>"#;

/// The page with the table probe added at the end of its body.
fn with_layout_probe(html: &str) -> String {
    match html.rfind("</body>") {
        Some(at) => format!("{}{TABLE_WIDTHS}{}", &html[..at], &html[at..]),
        None => format!("{html}{TABLE_WIDTHS}"),
    }
}

/// The tables the probe found wider than the main column, in words.
fn wide_tables(dom: &str) -> Vec<String> {
    let Some(report) = dom.split("data-wide-tables=\"").nth(1).and_then(|r| r.split('"').next()) else {
        return vec!["the layout probe did not run (no table widths reported)".into()];
    };
    report
        .split(";;")
        .filter(|t| !t.is_empty())
        .map(|t| {
            let mut parts = t.splitn(3, '|');
            let (width, column, header) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
            format!(
                "a table (first cell \"{}\") is {} px wide in a {} px column at {}x{}: shorten its cells or \
                 split it, so it reads without scrolling sideways",
                header.replace("&amp;", "&"),
                width.unwrap_or("?"),
                column.unwrap_or("?"),
                LAPTOP.0,
                LAPTOP.1
            )
        })
        .collect()
}

/// Which way the paper goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Orientation {
    Portrait,
    Landscape,
}

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
    print_pdf_oriented(chromium, page, paper, Orientation::Portrait, pdf)
}

/// [`print_pdf`] on paper turned `orientation`.
pub fn print_pdf_oriented(
    chromium: &Path,
    page: &Path,
    paper: Paper,
    orientation: Orientation,
    pdf: &Path,
) -> Result<usize> {
    let html = std::fs::read_to_string(page).with_context(|| format!("reading {}", page.display()))?;
    let turn = match orientation {
        Orientation::Portrait => "",
        Orientation::Landscape => " landscape",
    };
    // The run sheet's hours ask for their own named page (landscape, book/theme/timer.css): give
    // it this paper too, so the page count is the one a printer would give.
    let style = format!(
        "<style>@page {{ size: {paper}{turn}; margin: 12mm; }} @page run-sheet-hour {{ size: {paper}{turn}; }}</style></head>",
        paper = paper.css()
    );
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
        // A run sheet whose one hour is far too long for one landscape page.
        let rows = "<tr><td>00:00</td><td>5</td><td>a row</td></tr>".repeat(200);
        std::fs::write(
            dir.path().join("run-sheet.html"),
            format!(
                "<html><body><main><div class=\"run-sheet-hour\"><table>{rows}</table></div></main>\
                 <span class=\"timer-display\">--:--</span></body></html>"
            ),
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
        for paper in ["a4", "letter"] {
            assert!(
                problems.iter().any(|p| p.starts_with("run-sheet.html: prints on ")
                    && p.contains(&format!("landscape {paper} pages for 1 hour(s)"))),
                "{problems:?}"
            );
        }
        assert_eq!(problems.iter().filter(|p| p.ends_with(": missing")).count(), PRINTABLE.len(), "{problems:?}");
    }

    /// The layout gate can fail: a table wider than its 600 px column is reported, a narrow one is not.
    #[test]
    fn a_table_wider_than_its_column_is_reported_and_a_narrow_one_is_not() {
        let Some(chromium) = find_chromium() else {
            eprintln!("skipped: no chromium on PATH (CI installs it)");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let page = |cells: &str| {
            format!(
                "<html><body><main style=\"width:600px\"><table><tr><th>Start</th>{cells}</tr></table></main></body></html>"
            )
        };
        std::fs::write(dir.path().join("wide.html"), page(&"<td>nowrap_cell_of_some_width</td>".repeat(30))).unwrap();
        std::fs::write(dir.path().join("narrow.html"), page("<td>short</td><td>cells</td>")).unwrap();
        let problems = check(dir.path(), &chromium, &PRINTABLE).unwrap();
        let wide: Vec<&String> = problems.iter().filter(|p| p.contains("px wide in a")).collect();
        assert_eq!(wide.len(), 1, "{problems:?}");
        assert!(wide[0].starts_with("wide.html: a table (first cell \"Start\") is "), "{}", wide[0]);
        assert!(wide[0].contains("px wide in a 600 px column at 1400x900"), "{}", wide[0]);
    }

    #[test]
    fn a_page_whose_probe_did_not_run_is_reported() {
        assert_eq!(wide_tables("<html><body></body></html>").len(), 1);
        assert!(wide_tables("<template id=\"layout-report\" data-wide-tables=\"\"></template>").is_empty());
        let one = wide_tables("<template data-wide-tables=\"2000|750|Start\"></template>");
        assert!(one[0].contains("is 2000 px wide in a 750 px column"), "{one:?}");
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
