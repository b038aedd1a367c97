//! `cargo xtask handouts`: the offline bundles. attendee.zip holds the attendee edition, the
//! fixtures without answers and HOW-TO-RUN.md; facilitator.zip the full edition, every fixture,
//! the run sheet and HOW-TO-RUN.md. The attendee zip is read back and checked before we say done.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use labs::course::Course;
use walkdir::WalkDir;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::book::{self, Edition};
use crate::{browser, bundle, links, load_course, rel, run_sheet};

pub fn run(root: &Path, out: Option<PathBuf>, profile: bundle::Profile) -> Result<()> {
    build(root, &out.unwrap_or_else(|| root.join("target/handouts")), profile)
}

pub fn build(root: &Path, out: &Path, profile: bundle::Profile) -> Result<()> {
    let course = load_course(root)?;
    let cohort = crate::load_cohort(root)?;
    // Fixtures and printable pages of activities this cohort does not run stay out of both bundles.
    let skipped: Vec<String> = course.activities.iter().filter(|a| !cohort.runs(&a.id)).map(|a| a.folder()).collect();
    let runs = |path: &Path| !path.components().any(|c| skipped.iter().any(|s| c.as_os_str() == s.as_str()));
    for activity in course.activities.iter().filter(|a| !cohort.runs(&a.id)) {
        println!(
            "left out of both bundles: {}'s chapter, fixtures/{}/ and printable pages (cohort.toml skips it)",
            activity.id,
            activity.folder()
        );
    }
    let full = Edition::Full.default_out(root);
    let attendee = Edition::Attendee.default_out(root);
    book::build(root, Edition::Full, &full)?;
    book::build(root, Edition::Attendee, &attendee)?;
    std::fs::create_dir_all(out).with_context(|| format!("could not create {}", out.display()))?;
    let fixtures = root.join("fixtures");
    if !fixtures.is_dir() {
        println!("warning: no fixtures/ directory; the handouts carry no fixtures");
    }
    let how_to_run = crate::how_to_run::render(root, &course, &cohort)?;
    // The printable pages of the activities that run, as PDFs for A4 and Letter.
    let (printables, _) = browser::printables_for(&course, &cohort);

    // The attendee bundle runs without a toolchain: labs itself and the kit it reads.
    let binary = bundle::labs_binary(root, profile)?;
    let kit = bundle::attendee_kit(root, &binary, &course, &cohort)?;

    let attendee_zip = out.join("attendee.zip");
    let mut zip = Bundle::create(&attendee_zip, "attendee")?;
    for file in &kit {
        zip.add_file(&file.name, &file.bytes, file.executable)?;
    }
    zip.add_tree(&attendee, "book", &|_| true)?;
    zip.add_tree(&fixtures, "fixtures", &|path| runs(path) && !path.components().any(|c| c.as_os_str() == "answers"))?;
    zip.add("HOW-TO-RUN.md", how_to_run.as_bytes())?;
    let printed = add_printables(&mut zip, &attendee, &printables, Audience::Attendee)?;
    let attendee_files = zip.finish()?;

    let facilitator_zip = out.join("facilitator.zip");
    let mut zip = Bundle::create(&facilitator_zip, "facilitator")?;
    zip.add_tree(&full, "book", &|_| true)?;
    zip.add_tree(&fixtures, "fixtures", &|path| runs(path))?;
    zip.add("run-sheet.md", run_sheet_page(&course, &cohort).as_bytes())?;
    // Remote materials (poll file, boards, decision doc) that follow this cohort's session.
    for (path, text) in crate::materials::files(&course, &cohort, &crate::load_bank(root)?) {
        zip.add(&format!("materials/{path}"), text.as_bytes())?;
    }
    zip.add("HOW-TO-RUN.md", how_to_run.as_bytes())?;
    add_printables(&mut zip, &full, &printables, Audience::Facilitator)?;
    let facilitator_files = zip.finish()?;

    let problems = facilitator_material_in(&attendee_zip)?;
    if !problems.is_empty() {
        // Never leave a bundle behind that must not be handed out.
        let _ = std::fs::remove_file(&attendee_zip);
        bail!(
            "attendee.zip contained facilitator material, so it was deleted:\n  {}\nRemove it from the attendee edition \
             (class=\"facilitator\" notes, solution.md pages, fixtures/*/answers/), then rerun",
            problems.join("\n  ")
        );
    }
    for (zip, files) in [(&attendee_zip, attendee_files), (&facilitator_zip, facilitator_files)] {
        let size = std::fs::metadata(zip)?.len();
        println!("{}: {files} files, {:.1} MB", rel(root, zip), size as f64 / 1e6);
    }
    match printed {
        Some(n) => println!("printable: {n} PDFs in each bundle's print/ (A4 and Letter)"),
        None => println!(
            "warning: no chromium on PATH, so the bundles have no print/ PDFs; the printable pages still print from the \
             book (apt-get install chromium, then rerun to add them)"
        ),
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Audience {
    Attendee,
    Facilitator,
}

/// Prints each printable page of `book` to A4 and Letter PDFs under print/ (None: no chromium).
fn add_printables(zip: &mut Bundle, book: &Path, pages: &[&str], audience: Audience) -> Result<Option<usize>> {
    let Some(chromium) = browser::find_chromium() else { return Ok(None) };
    let dir = tempfile::tempdir()?;
    let mut count = 0;
    for page in pages {
        let source = book.join(page);
        if !source.is_file() {
            // The attendee edition has no facilitator-only pages; the full one has them all.
            if audience == Audience::Facilitator {
                bail!("{page} is missing from the built book");
            }
            continue;
        }
        let stem = page.trim_end_matches(".html").replace('/', "-");
        for paper in browser::Paper::ALL {
            let pdf = dir.path().join(format!("{stem}-{}.pdf", paper.name()));
            browser::print_pdf(&chromium, &source, paper, &pdf)?;
            zip.add(&format!("print/{stem}-{}.pdf", paper.name()), &std::fs::read(&pdf)?)?;
            count += 1;
        }
    }
    Ok(Some(count))
}

/// A zip whose entries all sit under one top folder, so unzipping makes one directory.
struct Bundle {
    writer: ZipWriter<File>,
    top: String,
    files: usize,
}

impl Bundle {
    fn create(path: &Path, top: &str) -> Result<Bundle> {
        let file = File::create(path).with_context(|| format!("could not create {}", path.display()))?;
        Ok(Bundle { writer: ZipWriter::new(file), top: top.to_string(), files: 0 })
    }

    fn add(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.add_file(name, bytes, false)
    }

    /// Adds a file; a program gets the executable bits, so `./labs` runs right after unzipping.
    fn add_file(&mut self, name: &str, bytes: &[u8], executable: bool) -> Result<()> {
        // No timestamps are set (the zip crate writes 1980-01-01): the same sources give the same zip.
        let mode = if executable { 0o755 } else { 0o644 };
        let options =
            SimpleFileOptions::default().compression_method(CompressionMethod::Deflated).unix_permissions(mode);
        self.writer.start_file(format!("{}/{name}", self.top), options)?;
        self.writer.write_all(bytes)?;
        self.files += 1;
        Ok(())
    }

    /// Adds the files under `dir` as `prefix/…`, those whose relative path `keep` accepts.
    fn add_tree(&mut self, dir: &Path, prefix: &str, keep: &dyn Fn(&Path) -> bool) -> Result<()> {
        if !dir.is_dir() {
            return Ok(());
        }
        for entry in WalkDir::new(dir).sort_by_file_name() {
            let entry = entry.with_context(|| format!("could not list {}", dir.display()))?;
            let relative = entry.path().strip_prefix(dir)?;
            if !entry.file_type().is_file() || !keep(relative) {
                continue;
            }
            let bytes =
                std::fs::read(entry.path()).with_context(|| format!("could not read {}", entry.path().display()))?;
            let name = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            self.add(&format!("{prefix}/{name}"), &bytes)?;
        }
        Ok(())
    }

    fn finish(self) -> Result<usize> {
        self.writer.finish()?;
        Ok(self.files)
    }
}

/// Reads a finished attendee zip back and lists what must not be in it.
fn facilitator_material_in(zip: &Path) -> Result<Vec<String>> {
    let mut archive =
        ZipArchive::new(File::open(zip)?).with_context(|| format!("could not read back {}", zip.display()))?;
    let mut problems = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i)?;
        let name = entry.name().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        problems.extend(facilitator_traces(&name, &String::from_utf8_lossy(&bytes)));
    }
    Ok(problems)
}

/// Why a file with this path and content must not reach attendees (empty: it may).
fn facilitator_traces(name: &str, content: &str) -> Vec<String> {
    let mut traces = Vec::new();
    if name.to_lowercase().contains("solution") {
        traces.push(format!("{name}: a solution (its path says so)"));
    }
    if name.contains("/answers/") || name.starts_with("answers/") {
        traces.push(format!("{name}: an answers/ fixture"));
    }
    if content.contains("class=\"facilitator\"") {
        traces.push(format!("{name}: contains class=\"facilitator\" (a facilitator note)"));
    }
    if content.contains("admonish-facilitator") {
        traces.push(format!("{name}: contains admonish-facilitator"));
    }
    if name.ends_with(".html") {
        let rendered = links::attribute_values(content, "class")
            .into_iter()
            .any(|c| c.split_whitespace().any(|c| c == "facilitator"));
        if rendered {
            traces.push(format!("{name}: an element with the facilitator class (a rendered facilitator note)"));
        }
    }
    traces
}

/// The facilitator's run sheet, activity cards and preparation counts, linking into the bundled book.
fn run_sheet_page(course: &Course, cohort: &labs::course::Cohort) -> String {
    let chapter = |a: &labs::course::Activity| Some(format!("book/{}/index.html", a.folder()));
    format!(
        "# Run sheet: {}\n\n{}\n\nStart times are from the start of the session. Generated from course.toml and \
         cohort.toml; the same tables are in the book's run sheet, activity cards and preparation pages.\n\n{}\n\
         ## Activity cards\n\n{}\n## Preparation counts\n\n{}",
        course.course.title,
        run_sheet::cohort_line(course, cohort),
        run_sheet::render(course, cohort, &chapter, None),
        run_sheet::cards(course, cohort, &chapter),
        run_sheet::preparation(course, cohort)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facilitator_material_is_recognised_by_path_and_content() {
        assert!(facilitator_traces("attendee/book/index.html", "<p>Hello</p>").is_empty());
        assert!(facilitator_traces("attendee/fixtures/01-log-sleuth/events.jsonl", "{}").is_empty());
        assert_eq!(facilitator_traces("attendee/book/01-log-sleuth/solution.html", "").len(), 1);
        assert_eq!(facilitator_traces("attendee/fixtures/01-log-sleuth/answers/key.json", "").len(), 1);
        assert_eq!(facilitator_traces("attendee/book/x.md", "```admonish tip class=\"facilitator\"").len(), 1);
        let rendered = r#"<div id="admonition-ask" class="admonition admonish-tip facilitator" role="note">"#;
        assert_eq!(facilitator_traces("attendee/book/01-log-sleuth/index.html", rendered).len(), 1);
        assert!(facilitator_traces("attendee/book/x.html", r#"<p class="facilitators-guide">"#).is_empty());
    }
}
