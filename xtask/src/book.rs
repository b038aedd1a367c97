//! `cargo xtask book`: builds the book with the mdBook 0.4 library, in two editions.
//!
//! The full edition (target/book) is the facilitator's; the attendee edition
//! (target/book-attendee) has no facilitator notes and no solution pages. Both run mdBook's
//! default preprocessors (so `{{#include}}` works), then our `course` preprocessor (run sheet,
//! attendee edits, README links), then mdbook-admonish in-process.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use labs::course::Course;
use mdbook::book::{Book, BookItem};
use mdbook::preprocess::{Preprocessor, PreprocessorContext};
use mdbook::{Config, MDBook};
use walkdir::WalkDir;

use crate::markdown::{self, LinkEdit};
use crate::{poll, rel, run_sheet};

/// Expands to one line naming the cohort (cohort.toml): title, date, variant, length.
pub const COHORT_DIRECTIVE: &str = "{{#cohort}}";

/// Pinned in xtask/Cargo.toml (`=1.20.0`); names the CSS copy, so an upgrade refreshes it.
const ADMONISH_VERSION: &str = "1.20.0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edition {
    Full,
    Attendee,
}

impl Edition {
    pub fn default_out(self, root: &Path) -> PathBuf {
        root.join("target").join(match self {
            Edition::Full => "book",
            Edition::Attendee => "book-attendee",
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Edition::Full => "full edition",
            Edition::Attendee => "attendee edition",
        }
    }
}

pub fn run(root: &Path, attendee: bool, out: Option<PathBuf>) -> Result<()> {
    let edition = if attendee { Edition::Attendee } else { Edition::Full };
    let out = out.unwrap_or_else(|| edition.default_out(root));
    let started = Instant::now();
    build(root, edition, &out)?;
    let index = std::fs::canonicalize(out.join("index.html")).unwrap_or(out.join("index.html"));
    println!("Built the {} in {:.1} s: file://{}", edition.name(), started.elapsed().as_secs_f64(), index.display());
    Ok(())
}

/// Builds one edition into `out`. Fails on anything mdBook only logs (a missing include),
/// and on output a reader would see broken (an unexpanded `{{#…}}`).
pub fn build(root: &Path, edition: Edition, out: &Path) -> Result<()> {
    let course = crate::load_course(root)?;
    let book_dir = root.join("book");
    let src = book_dir.join("src");
    if !src.join("SUMMARY.md").is_file() {
        bail!(
            "{} is missing: the book's table of contents must exist before the book can be built",
            rel(root, &src.join("SUMMARY.md"))
        );
    }
    let missing = missing_includes(root, &src)?;
    if !missing.is_empty() {
        bail!(
            "{} include(s) are broken:\n  {}\nFix the path (it is relative to the page) or the line range, or create the file \
             (an insta snapshot appears when its test first runs: cargo test -p labs, then review it)",
            missing.len(),
            missing.join("\n  ")
        );
    }
    ensure_admonish_css(&book_dir)?;

    let mut config = Config::from_disk(book_dir.join("book.toml")).context("could not read book/book.toml")?;
    config.update_from_env();
    // mdBook would also start an external `mdbook-admonish` process for a [preprocessor.admonish]
    // table (a warning when it is not installed, a second pass of another version when it is).
    // Load without the table, then hand it back for the in-process preprocessor to read.
    let admonish =
        config.get_mut("preprocessor").and_then(|p| p.as_table_mut()).and_then(|p| p.remove("admonish")).context(
            "book/book.toml has no [preprocessor.admonish] table; mdbook-admonish needs its assets_version there",
        )?;
    // The title is course data: one place to change it.
    config.book.title = Some(course.course.title.clone());
    config.build.build_dir = out.to_path_buf();
    let mut book = MDBook::load_with_config(&book_dir, config)
        .context("could not load the book (book/src/SUMMARY.md and its chapters)")?;
    book.config.set("preprocessor.admonish", admonish)?;
    let bank = crate::load_bank(root)?;
    let cohort = crate::load_cohort(root)?;
    book.with_preprocessor(CoursePreprocessor { course, cohort, bank, edition });
    book.with_preprocessor(mdbook_admonish::Admonish);

    let errors_before = LOGGED_ERRORS.load(Ordering::SeqCst);
    book.build().with_context(|| format!("building the {} failed", edition.name()))?;
    let logged = LOGGED_ERRORS.load(Ordering::SeqCst) - errors_before;
    if logged > 0 {
        bail!("mdBook reported {logged} error(s) while building the {} (above); fix them and rebuild", edition.name());
    }
    let problems = check_output(out)?;
    if !problems.is_empty() {
        bail!("the {} has problems:\n  {}", edition.name(), problems.join("\n  "));
    }
    Ok(())
}

/// `course`: expands the run sheet, points README links at index pages, and for the attendee
/// edition removes facilitator notes and solution pages (and the links to them).
struct CoursePreprocessor {
    course: Course,
    cohort: labs::course::Cohort,
    bank: labs::mythbusting::Bank,
    edition: Edition,
}

impl Preprocessor for CoursePreprocessor {
    fn name(&self) -> &str {
        "course"
    }

    fn run(&self, ctx: &PreprocessorContext, mut book: Book) -> mdbook::errors::Result<Book> {
        let src = ctx.root.join(&ctx.config.book.src);
        let mut figure_errors: Vec<String> = Vec::new();
        let mut removed = match self.edition {
            Edition::Attendee => remove_solution_pages(&mut book.sections),
            Edition::Full => HashSet::new(),
        };
        // Activities this cohort does not run leave the book (both editions).
        for activity in self.course.activities.iter().filter(|a| !self.cohort.runs(&a.id)) {
            removed.extend(remove_pages_under(&mut book.sections, Path::new(&activity.folder())));
        }
        // mdBook's index preprocessor turns README.md into index.md, but leaves links to
        // README.md pointing at a README.html that is never written.
        let mut output_path: HashMap<PathBuf, PathBuf> = HashMap::new();
        for item in book.iter() {
            if let BookItem::Chapter(ch) = item {
                if let (Some(source), Some(path)) = (&ch.source_path, &ch.path) {
                    output_path.insert(source.clone(), path.clone());
                }
            }
        }
        book.for_each_mut(|item| {
            let BookItem::Chapter(ch) = item else { return };
            let Some(page) = ch.path.clone() else { return }; // a draft chapter has no page
            let dir = page.parent().unwrap_or(Path::new(""));
            // The run sheet, the activity cards and the preparation counts (run_sheet.rs).
            let chapter_link = |a: &labs::course::Activity| {
                let chapter = output_path.get(&Path::new(&a.folder()).join("README.md"))?;
                Some(relative_link(dir, chapter))
            };
            let cards = output_path.get(Path::new(run_sheet::CARDS_PAGE)).map(|p| relative_link(dir, p));
            ch.content = run_sheet::expand(&ch.content, &self.course, &self.cohort, &chapter_link, cards.as_deref());
            // Figures quoted from the labs' saved runs (figures.rs): read, never retyped.
            match crate::figures::expand(&ch.content, &src.join(dir)) {
                Ok(content) => ch.content = content,
                Err(e) => figure_errors.push(format!("{}: {e}", page.display())),
            }
            if ch.content.contains(COHORT_DIRECTIVE) {
                ch.content = ch.content.replace(COHORT_DIRECTIVE, &run_sheet::cohort_line(&self.course, &self.cohort));
            }
            if ch.content.contains(poll::DIRECTIVE) {
                ch.content = ch.content.replace(poll::DIRECTIVE, &poll::render(&self.bank, &self.cohort.poll));
            }
            if self.edition == Edition::Attendee {
                ch.content = markdown::strip_facilitator_blocks(&ch.content);
            }
            ch.content = markdown::edit_links(&ch.content, |dest| {
                let (file, fragment) = dest.split_once('#').map_or((dest, None), |(f, frag)| (f, Some(frag)));
                if file.contains(':') || !file.ends_with(".md") {
                    return LinkEdit::Keep;
                }
                let Some(target) = normalize(&dir.join(file)) else { return LinkEdit::Keep };
                if removed.contains(&target) {
                    return LinkEdit::Unlink;
                }
                match output_path.get(&target) {
                    Some(path) if *path != target => {
                        let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
                        LinkEdit::Retarget(format!("{}{fragment}", relative_link(dir, path)))
                    }
                    _ => LinkEdit::Keep,
                }
            });
        });
        if !figure_errors.is_empty() {
            return Err(anyhow::anyhow!("{}", figure_errors.join("\n")));
        }
        Ok(book)
    }
}

/// Removes every chapter whose source lies under `folder` (a skipped activity); returns their paths.
fn remove_pages_under(items: &mut Vec<BookItem>, folder: &Path) -> HashSet<PathBuf> {
    let mut removed = HashSet::new();
    items.retain(|item| match item {
        BookItem::Chapter(ch) => {
            let under = ch.source_path.as_ref().is_some_and(|p| p.starts_with(folder));
            if under {
                removed.extend(sources(item));
            }
            !under
        }
        _ => true,
    });
    for item in items.iter_mut() {
        if let BookItem::Chapter(ch) = item {
            removed.extend(remove_pages_under(&mut ch.sub_items, folder));
        }
    }
    removed
}

/// The source paths of a chapter and of every chapter under it.
fn sources(item: &BookItem) -> Vec<PathBuf> {
    let BookItem::Chapter(ch) = item else { return Vec::new() };
    let mut out: Vec<PathBuf> = ch.source_path.iter().cloned().collect();
    out.extend(ch.sub_items.iter().flat_map(sources));
    out
}

/// Removes every chapter named solution.md (the answer keys); returns their paths.
fn remove_solution_pages(items: &mut Vec<BookItem>) -> HashSet<PathBuf> {
    let mut removed = HashSet::new();
    items.retain(|item| match item {
        BookItem::Chapter(ch) => {
            let is_solution =
                ch.source_path.as_ref().is_some_and(|p| p.file_name().is_some_and(|n| n == "solution.md"));
            if is_solution {
                removed.extend(ch.path.iter().chain(ch.source_path.iter()).cloned());
            }
            !is_solution
        }
        _ => true,
    });
    for item in items.iter_mut() {
        if let BookItem::Chapter(ch) = item {
            removed.extend(remove_solution_pages(&mut ch.sub_items));
        }
    }
    removed
}

/// `a/./b/../c` → `a/c`; None if it leaves the book.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            // The guard climbs one level; a `..` with nothing left to climb leaves the book.
            Component::ParentDir if !out.pop() => return None,
            Component::Normal(part) => out.push(part),
            _ => {}
        }
    }
    Some(out)
}

/// The link from a page in `from_dir` to `to` (both relative to book/src), with `/` separators.
fn relative_link(from_dir: &Path, to: &Path) -> String {
    let from: Vec<_> = from_dir.components().collect();
    let to_parts: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to_parts).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); from.len() - common];
    parts.extend(to_parts[common..].iter().map(|c| c.as_os_str().to_string_lossy().into_owned()));
    parts.join("/")
}

/// Every `{{#include}}` in book/src whose file does not exist, as `file:line: directive: reason`.
/// mdBook itself only logs these and leaves the directive in the page.
pub fn missing_includes(root: &Path, src: &Path) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for page in markdown_files(src)? {
        let text = std::fs::read_to_string(&page).with_context(|| format!("could not read {}", page.display()))?;
        let dir = page.parent().unwrap_or(src);
        for include in markdown::includes(&text) {
            let file = dir.join(include.path());
            if !file.is_file() {
                missing.push(format!(
                    "{}:{}: {}: no file {}",
                    rel(root, &page),
                    include.line,
                    include.text,
                    include.path()
                ));
            } else if let Some(problem) = snapshot_header_problem(&file, &include.target) {
                missing.push(format!("{}:{}: {}: {problem}", rel(root, &page), include.line, include.text));
            }
        }
    }
    Ok(missing)
}

/// An insta snapshot starts with a header between two `---` lines. A page that includes one
/// with a line range must start right after that header, or the book shows header lines (or
/// loses output) the day insta's header changes length.
fn snapshot_header_problem(file: &Path, target: &str) -> Option<String> {
    if file.extension().is_none_or(|e| e != "snap") {
        return None;
    }
    let start: usize = target.split(':').nth(1)?.parse().ok()?;
    let text = std::fs::read_to_string(file).ok()?;
    let second_rule = text.lines().enumerate().filter(|(_, l)| l.trim_end() == "---").nth(1)?.0;
    let first_output_line = second_rule + 2; // 1-based line after the header
    (start != first_output_line).then(|| {
        format!("the snapshot's output starts at line {first_output_line}, not {start}: use :{first_output_line}:")
    })
}

/// The Markdown files under `dir`, in path order.
pub fn markdown_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.with_context(|| format!("could not list {}", dir.display()))?;
        if entry.file_type().is_file() && entry.path().extension().is_some_and(|e| e == "md") {
            files.push(entry.into_path());
        }
    }
    Ok(files)
}

/// What a reader would see broken in the output, and what would break under file://.
fn check_output(out: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for entry in WalkDir::new(out).sort_by_file_name() {
        let entry = entry?;
        if entry.path().extension().is_some_and(|e| e == "html") {
            let html = std::fs::read_to_string(entry.path())?;
            if let Some(i) = html.find("{{#") {
                let snippet: String = html[i..].chars().take_while(|c| *c != '\n').take(80).collect();
                let page = entry.path().strip_prefix(out).unwrap_or(entry.path()).display().to_string();
                problems.push(format!("{page}: unexpanded directive `{snippet}`"));
            }
        }
    }
    // Browsers refuse fetch() on file://; mdBook 0.4.52 loads the index as a <script>. Guard upgrades.
    let searcher = std::fs::read_to_string(out.join("searcher.js")).unwrap_or_default();
    if !out.join("searchindex.js").is_file() || searcher.contains("fetch(") || !searcher.contains("searchindex.js") {
        problems.push(
            "search: searchindex.js is missing or not loaded as a script; search would not work from file://".into(),
        );
    }
    Ok(problems)
}

/// Copies mdbook-admonish's CSS, from the pinned crate's own source, to book/theme/.
///
/// mdBook copies `additional-css` files from inside the book directory into the output, so the
/// file has to live under book/ (target/ would be written outside the output). It is generated
/// rather than committed so it always matches the preprocessor's version, and gitignored
/// (book/theme/.gitignore). Only when it is missing or from another version do we pay for
/// `cargo metadata` to find the crate.
fn ensure_admonish_css(book_dir: &Path) -> Result<()> {
    let target = book_dir.join("theme").join("mdbook-admonish.css");
    let stamp = format!("/* mdbook-admonish {ADMONISH_VERSION} assets, copied by `cargo xtask book` from the crate's source. Generated: do not edit or commit. */\n");
    if std::fs::read_to_string(&target).is_ok_and(|css| css.starts_with(&stamp)) {
        return Ok(());
    }
    let output = crate::command_output(crate::cargo(&crate::repo_root()).args(["metadata", "--format-version", "1"]))?;
    if !output.status.success() {
        bail!("`cargo metadata` failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata printed something that is not JSON")?;
    let package = metadata["packages"]
        .as_array()
        .and_then(|packages| packages.iter().find(|p| p["name"] == "mdbook-admonish"))
        .context("cargo metadata does not list mdbook-admonish; is it still a dependency in xtask/Cargo.toml?")?;
    if package["version"] != ADMONISH_VERSION {
        bail!(
            "xtask uses mdbook-admonish {}, but xtask/src/book.rs expects {ADMONISH_VERSION}: update ADMONISH_VERSION and \
             assets_version in book/book.toml together",
            package["version"]
        );
    }
    let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap_or_default());
    let css_path = manifest.parent().unwrap_or(Path::new("")).join("src/bin/assets/mdbook-admonish.css");
    let css = std::fs::read_to_string(&css_path)
        .with_context(|| format!("could not read mdbook-admonish's CSS at {}", css_path.display()))?;
    std::fs::create_dir_all(target.parent().unwrap())?;
    std::fs::write(&target, format!("{stamp}{css}"))
        .with_context(|| format!("could not write {}", target.display()))?;
    Ok(())
}

/// mdBook reports some problems (a missing include, a bad link in SUMMARY) only through the `log`
/// crate and carries on; we print warnings and errors, and count errors to fail the build.
static LOGGED_ERRORS: AtomicUsize = AtomicUsize::new(0);

struct BuildLog;

impl log::Log for BuildLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if record.level() == log::Level::Error {
            LOGGED_ERRORS.fetch_add(1, Ordering::SeqCst);
        }
        eprintln!("{} ({}): {}", record.level(), record.target(), record.args());
    }
    fn flush(&self) {}
}

pub fn install_logger() {
    static LOGGER: BuildLog = BuildLog;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_snapshot_include_must_start_right_after_the_header() {
        let dir = std::env::temp_dir().join(format!("xtask-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let snap = dir.join("labs__run.snap");
        std::fs::write(&snap, "---\nsource: labs/tests/x.rs\nexpression: text\n---\nfirst output line\n").unwrap();
        assert_eq!(snapshot_header_problem(&snap, "labs__run.snap:5:"), None);
        let problem = snapshot_header_problem(&snap, "labs__run.snap:4:").expect("line 4 is the header's end");
        assert!(problem.contains("starts at line 5, not 4"), "{problem}");
        assert_eq!(
            snapshot_header_problem(&dir.join("notes.txt"), "notes.txt:4:"),
            None,
            "only .snap files have the header"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
    use super::*;
    use mdbook::book::Chapter;

    #[test]
    fn relative_links_climb_only_as_far_as_needed() {
        assert_eq!(relative_link(Path::new(""), Path::new("01-log-sleuth/index.md")), "01-log-sleuth/index.md");
        assert_eq!(relative_link(Path::new("01-log-sleuth"), Path::new("01-log-sleuth/solution.md")), "solution.md");
        assert_eq!(relative_link(Path::new("02-x"), Path::new("01-log-sleuth/index.md")), "../01-log-sleuth/index.md");
    }

    #[test]
    fn solution_pages_are_removed_at_any_depth() {
        let chapter = |name: &str, path: &str| Chapter::new(name, String::new(), path, vec![]);
        let mut lab = chapter("Log Sleuth", "01-log-sleuth/README.md");
        lab.sub_items.push(BookItem::Chapter(chapter("Solution", "01-log-sleuth/solution.md")));
        lab.sub_items.push(BookItem::Chapter(chapter("More", "01-log-sleuth/more.md")));
        let mut items = vec![BookItem::Chapter(chapter("Intro", "introduction.md")), BookItem::Chapter(lab)];
        let removed = remove_solution_pages(&mut items);
        assert_eq!(removed, HashSet::from([PathBuf::from("01-log-sleuth/solution.md")]));
        let BookItem::Chapter(lab) = &items[1] else { panic!() };
        assert_eq!(lab.sub_items.len(), 1);
    }

    const TEST_COHORT: &str = "[cohort]\ntitle = \"Scratch cohort\"\ndate = \"2026-01-02\"\nvariant = \"core\"\npoll = [\"identity-gap-free\"]\n";

    /// A skipped activity leaves both editions, with the links to it, and the run sheet keeps
    /// its minutes as open lab time.
    #[test]
    fn a_skipped_activity_leaves_the_book() {
        let root = scratch_root("skip");
        let first = crate::test_course().activities[0].id.clone();
        std::fs::write(root.join("cohort.toml"), format!("{TEST_COHORT}skip = [\"{first}\"]\n")).unwrap();
        let out = root.join("target/book");
        build(&root, Edition::Full, &out).unwrap();
        assert!(!out.join("01-log-sleuth/index.html").exists(), "the skipped chapter was built");
        let intro = std::fs::read_to_string(out.join("introduction.html")).unwrap();
        assert!(
            intro.contains("the first lab") && !intro.contains("01-log-sleuth/index.html"),
            "a link to the skipped chapter survived"
        );
        let sheet = std::fs::read_to_string(out.join("run-sheet.html")).unwrap();
        assert!(sheet.contains("Open lab time (Activity 1:") && sheet.contains("Scratch cohort"), "{sheet}");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A scratch repository: the test course, the real book.toml, a small book using every feature.
    fn scratch_root(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("xtask-book-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let real = crate::repo_root();
        let course = crate::test_course();
        let write = |path: &str, text: &str| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("course.toml", crate::TEST_COURSE);
        write("cohort.toml", TEST_COHORT);
        write("book/book.toml", &std::fs::read_to_string(real.join("book/book.toml")).unwrap());
        for asset in ["book/theme/timer.js", "book/theme/timer.css", "book/theme/print.css", "book/theme/layout.css"] {
            write(asset, &std::fs::read_to_string(real.join(asset)).unwrap());
        }
        let mut summary = String::from("# Summary\n\n[Introduction](introduction.md)\n\n- [Run sheet](run-sheet.md)\n");
        for a in &course.activities {
            if a.number == 1 {
                summary.push_str(&format!(
                    "- [{}]({}/README.md)\n  - [Solution]({}/solution.md)\n",
                    a.title,
                    a.folder(),
                    a.folder()
                ));
            } else {
                summary.push_str(&format!("- [{}]()\n", a.title));
            }
        }
        write("book/src/SUMMARY.md", &summary);
        write(
            "book/src/introduction.md",
            "# Introduction\n\nStart with [the first lab](01-log-sleuth/README.md#the-lab).\n",
        );
        write("book/src/run-sheet.md", "# Run sheet\n\n{{#run-sheet}}\n");
        write("fixtures/01-log-sleuth/output.txt", "first line not shown\nline 2 of the saved output\n");
        write(
            "book/src/01-log-sleuth/README.md",
            "# Log Sleuth\n\n```admonish tip title=\"Facilitator: Ask\" class=\"facilitator\"\nAsk: who has lost an event?\n```\n\n\
             ```admonish note title=\"Everyone\"\nEvents have a `position`.\n```\n\n## The lab\n\n\
             ```text\n{{#include ../../../fixtures/01-log-sleuth/output.txt:2:}}\n```\n\n\
             Stuck? See [the solution](solution.md).\n",
        );
        write("book/src/01-log-sleuth/solution.md", "# Solution\n\nThe answer.\n");
        root
    }

    #[test]
    fn both_editions_build_and_the_attendee_edition_has_no_facilitator_material() {
        let root = scratch_root("editions");
        let (full, attendee) = (root.join("out/full"), root.join("out/attendee"));
        build(&root, Edition::Full, &full).unwrap();
        build(&root, Edition::Attendee, &attendee).unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();

        let chapter = read(full.join("01-log-sleuth/index.html"));
        assert!(chapter.contains("Ask: who has lost an event?") && chapter.contains("facilitator"));
        assert!(
            chapter.contains("line 2 of the saved output") && !chapter.contains("first line not shown"),
            "the include ran with its range"
        );
        assert!(full.join("01-log-sleuth/solution.html").is_file());
        let sheet = read(full.join("run-sheet.html"));
        assert!(
            sheet.contains(r#"<a href="01-log-sleuth/index.html">Activity 1: "#),
            "run sheet links the ready chapter"
        );
        assert!(
            sheet.contains(r#"<div id="segment-timer""#) && sheet.contains("timer.js"),
            "the run sheet has its timer"
        );
        assert!(
            read(full.join("introduction.html")).contains(r#"href="01-log-sleuth/index.html#the-lab""#),
            "README links retargeted"
        );

        let chapter = read(attendee.join("01-log-sleuth/index.html"));
        assert!(!chapter.contains("Ask: who") && !chapter.contains("facilitator"));
        assert!(chapter.contains("Events have a") && chapter.contains("Stuck? See the solution."));
        assert!(!attendee.join("01-log-sleuth/solution.html").exists());
        assert!(!read(attendee.join("searchindex.js")).contains("The answer"));
        for out in [&full, &attendee] {
            assert_eq!(crate::links::check(out).unwrap(), Vec::<String>::new());
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_include_fails_the_build_with_file_and_line() {
        let root = scratch_root("include");
        std::fs::remove_file(root.join("fixtures/01-log-sleuth/output.txt")).unwrap();
        let err = build(&root, Edition::Full, &root.join("out")).unwrap_err().to_string();
        std::fs::remove_dir_all(&root).unwrap();
        assert!(
            err.contains(
                "book/src/01-log-sleuth/README.md:14: {{#include ../../../fixtures/01-log-sleuth/output.txt:2:}}"
            ),
            "{err}"
        );
    }
}
