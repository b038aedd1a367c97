//! The fork matrix: cohort.toml files an instructor might write, each tried in a temporary copy
//! of the kit. Every valid one must load, build the book and pass the browser gate; every invalid
//! one must fail with a line that names the field to fix. No labs run here: what a cohort
//! changes is the book, its printable pages and the rules, so the matrix stays fast.
//!
//! The valid cohorts are derived from the kit itself (its variants, its myth bank, its
//! activities), so an instructor's fork that renames or removes an activity still gets a
//! meaningful matrix; the one fixed example (issue 20's) runs when the kit has its ids.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use labs::course::{Cohort, Course, Status};
use serde::Serialize;
use walkdir::WalkDir;

use crate::book::{self, Edition};
use crate::browser;

/// The name of the fork that is issue 20's example.
const ISSUE_20: &str = "issue 20's example";

/// A cohort.toml to try, and what must come of it.
pub struct Fork {
    pub name: String,
    pub cohort: Cohort,
    /// None: it must pass. Some(field): it must fail with a line naming `field` of cohort.toml.
    pub fails_on: Option<&'static str>,
}

/// The cohort.toml text for `cohort`, as an instructor would write it.
pub fn cohort_toml(cohort: &Cohort) -> String {
    #[derive(Serialize)]
    struct File<'a> {
        cohort: &'a Cohort,
    }
    toml::to_string(&File { cohort }).expect("a cohort serializes")
}

/// The matrix for this kit: its cohort.toml as it is, then forks of it.
pub fn forks(course: &Course, shipped: &Cohort, myth_ids: &[String]) -> (Vec<Fork>, Vec<String>) {
    let mut forks = Vec::new();
    let mut notes = Vec::new();
    let valid = |name: String, cohort: Cohort| Fork { name, cohort, fails_on: None };
    forks.push(valid("cohort.toml as it is".into(), shipped.clone()));

    match course.variants.first() {
        Some(variant) => forks.push(valid(
            format!("variant = \"{}\"", variant.id),
            Cohort { variant: variant.id.clone(), ..shipped.clone() },
        )),
        None => notes.push("no half-day fork: course.toml has no [[variant]]".to_string()),
    }

    let other_poll: Vec<String> = myth_ids.iter().filter(|id| !shipped.poll.contains(id)).take(3).cloned().collect();
    if other_poll.is_empty() {
        notes.push("no other-poll fork: the shipped poll uses every myth of the bank".to_string());
    } else {
        forks.push(valid(format!("poll = {:?}", other_poll), Cohort { poll: other_poll, ..shipped.clone() }));
    }

    // Two activities with printable pages if there are, so the fork also drops pages the
    // browser gate and the handouts would otherwise look for.
    let mut skippable: Vec<&str> = course.activities.iter().map(|a| a.id.as_str()).collect();
    skippable.sort_by_key(|id| {
        let folder = course.activity(id).map(|a| a.folder()).unwrap_or_default();
        !browser::PRINTABLE.iter().any(|page| Path::new(page).starts_with(&folder))
    });
    let two: Vec<String> = skippable.iter().take(2).map(|s| s.to_string()).collect();
    if two.len() == 2 && course.activities.len() > 2 {
        forks.push(valid(format!("skip = {:?}", two), Cohort { skip: two, ..shipped.clone() }));
    } else {
        notes.push("no two-skipped fork: the course has fewer than three activities".to_string());
    }

    // Issue 20's example, as an instructor tried it.
    let example_poll = ["async-commit-corrupts", "update-less-wal", "idle-slot-harmless"];
    let has_example_ids = course.variants.iter().any(|v| v.id == "half-day")
        && course.activity("wal-race").is_some()
        && example_poll.iter().all(|id| myth_ids.iter().any(|m| m == id));
    if has_example_ids {
        forks.push(valid(
            format!("{ISSUE_20} (half-day, 2027-02-10, three other myths, wal-race skipped)"),
            Cohort {
                title: shipped.title.clone(),
                date: "2027-02-10".into(),
                variant: "half-day".into(),
                poll: example_poll.iter().map(|s| s.to_string()).collect(),
                skip: vec!["wal-race".into()],
                core: None,
                expected: shipped.expected,
            },
        ));
    } else {
        notes.push("no issue-20 fork: the kit lacks the half-day variant, wal-race or one of its myths".to_string());
    }

    let invalid =
        |name: &str, field: &'static str, cohort: Cohort| Fork { name: name.into(), cohort, fails_on: Some(field) };
    let mut poll = shipped.poll.clone();
    poll.push("no-such-myth".into());
    forks.push(invalid("an unknown myth in the poll", "poll", Cohort { poll, ..shipped.clone() }));
    let mut skip = shipped.skip.clone();
    skip.push("no-such-activity".into());
    forks.push(invalid("an unknown activity in skip", "skip", Cohort { skip, ..shipped.clone() }));
    forks.push(invalid(
        "a date that is not YYYY-MM-DD",
        "date",
        Cohort { date: "2027-13-40".into(), ..shipped.clone() },
    ));
    forks.push(invalid(
        "a day that does not exist (2027-02-29)",
        "date",
        Cohort { date: "2027-02-29".into(), ..shipped.clone() },
    ));
    forks.push(invalid("an unknown variant", "variant", Cohort { variant: "full-week".into(), ..shipped.clone() }));
    (forks, notes)
}

/// Copies the kit at `root` into `to`: everything but target/ and .git/ (a few MB), so the book
/// finds every file it includes, as in a fresh clone.
pub fn copy_kit(root: &Path, to: &Path) -> Result<()> {
    let walker = WalkDir::new(root).into_iter().filter_entry(|e| {
        let relative = e.path().strip_prefix(root).unwrap_or(e.path());
        !(relative == Path::new("target") || relative == Path::new(".git"))
    });
    for entry in walker {
        let entry = entry.with_context(|| format!("could not list {}", root.display()))?;
        let relative = entry.path().strip_prefix(root)?;
        let target = to.join(relative);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).with_context(|| format!("could not create {}", target.display()))?;
        } else if entry.file_type().is_file() {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("could not copy {} to {}", entry.path().display(), target.display()))?;
        }
    }
    Ok(())
}

/// What one fork came to: its lines for the report, and whether it did what it must.
pub struct Tried {
    pub lines: Vec<String>,
    pub ok: bool,
}

/// Writes the fork's cohort.toml into the kit copy at `kit` and judges it: the rules, then for a
/// valid one the book and (with `chromium`) the browser gate.
pub fn try_fork(kit: &Path, fork: &Fork, chromium: Option<&Path>) -> Result<Tried> {
    let started = Instant::now();
    std::fs::write(kit.join("cohort.toml"), cohort_toml(&fork.cohort)).context("could not write cohort.toml")?;
    let loaded = crate::load_settings(kit).and_then(|settings| crate::load_bank(kit).map(|_| settings));
    let mut lines = Vec::new();
    let ok = match (&loaded, fork.fails_on) {
        (Err(e), Some(field)) => {
            let message = format!("{e:#}");
            let named = message.lines().find(|l| l.contains("cohort.toml") && l.contains(field));
            match named {
                Some(line) => {
                    lines.push(format!("fails as it must: {}", line.trim()));
                    true
                }
                None => {
                    lines.push(format!("fails, but no line names cohort.toml's `{field}`:\n{}", indent(&message)));
                    false
                }
            }
        }
        (Ok(_), Some(field)) => {
            lines.push(format!("PASSES, but a cohort with a bad `{field}` must be refused"));
            false
        }
        (Err(e), None) => {
            lines.push(format!("is refused:\n{}", indent(&format!("{e:#}"))));
            false
        }
        (Ok(settings), None) => {
            let out = kit.join("target/book");
            match book::build(kit, Edition::Full, &out) {
                Err(e) => {
                    lines.push(format!("the book does not build:\n{}", indent(&format!("{e:#}"))));
                    false
                }
                Ok(()) => {
                    let (printables, left_out) = browser::printables_for(&settings.course, &settings.cohort);
                    let skipped_chapters: Vec<String> = settings
                        .course
                        .activities
                        .iter()
                        .filter(|a| !settings.cohort.runs(&a.id) && a.status == Status::Ready)
                        .map(|a| format!("{}/index.html", a.folder()))
                        .filter(|page| out.join(page).exists())
                        .collect();
                    let mut ok = skipped_chapters.is_empty();
                    if !ok {
                        lines.push(format!("skipped chapters are still in the book: {}", skipped_chapters.join(", ")));
                    }
                    match chromium {
                        Some(chromium) => {
                            let problems = browser::check(&out, chromium, &printables)?;
                            if problems.is_empty() {
                                let note = if left_out.is_empty() {
                                    String::new()
                                } else {
                                    format!(", {} left out with their activity", left_out.len())
                                };
                                lines.push(format!(
                                    "book and browser gate pass ({} printable pages{note})",
                                    printables.len()
                                ));
                            } else {
                                lines.push(format!("the browser gate fails:\n{}", indent(&problems.join("\n"))));
                                ok = false;
                            }
                        }
                        None => lines.push("the book builds (browser gate not run for this fork)".into()),
                    }
                    ok
                }
            }
        }
    };
    if let Some(last) = lines.last_mut() {
        last.push_str(&format!(" [{:.1} s]", started.elapsed().as_secs_f64()));
    }
    if !ok {
        lines.push(format!("its cohort.toml:\n{}", indent(&cohort_toml(&fork.cohort))));
    }
    Ok(Tried { lines, ok })
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("      {l}")).collect::<Vec<_>>().join("\n")
}

/// Which valid forks also get the browser gate (the book build and the rules run for all).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum InBrowser {
    All,
    /// One fork that changes the most pages: issue 20's example when the kit has its ids, else
    /// the first fork after the shipped cohort (whose book the check's own browser step opens).
    One,
}

/// The whole matrix in one temporary copy of the kit. Fails listing every fork that did not do
/// what it must.
pub fn run(root: &Path, in_browser: InBrowser) -> Result<()> {
    let settings = crate::load_settings(root)?;
    let bank = crate::load_bank(root)?;
    let myth_ids: Vec<String> = bank.myth.iter().map(|m| m.id.clone()).collect();
    let (forks, notes) = forks(&settings.course, &settings.cohort, &myth_ids);
    for note in notes {
        println!("note: {note}");
    }
    let dir = tempfile::Builder::new().prefix("xtask-fork-").tempdir()?;
    let kit: PathBuf = dir.path().join("kit");
    copy_kit(root, &kit)?;
    let chromium = browser::find_chromium();
    let valid: Vec<&Fork> = forks.iter().filter(|f| f.fails_on.is_none()).collect();
    let in_browser_one = valid.iter().find(|f| f.name.starts_with(ISSUE_20)).or(valid.get(1)).map(|f| f.name.clone());
    let mut failed = Vec::new();
    for fork in &forks {
        let browse = fork.fails_on.is_none()
            && (in_browser == InBrowser::All || in_browser_one.as_deref() == Some(fork.name.as_str()));
        let browser = chromium.as_deref().filter(|_| browse);
        let tried = try_fork(&kit, fork, browser)?;
        println!("{}:", fork.name);
        for line in &tried.lines {
            println!("  {line}");
        }
        if !tried.ok {
            failed.push(fork.name.clone());
        }
    }
    if !failed.is_empty() {
        bail!("{} of {} cohort(s) did not do what they must: {}", failed.len(), forks.len(), failed.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kit with the frozen test course and cohort and the bank from the repository: enough for
    /// the cohort rules (no book).
    fn rules_kit() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let frozen = crate::test_kit();
        for file in ["course.toml", "cohort.toml"] {
            std::fs::copy(frozen.join(file), dir.path().join(file)).unwrap();
        }
        let bank = dir.path().join(labs::mythbusting::BANK_FILE);
        std::fs::create_dir_all(bank.parent().unwrap()).unwrap();
        std::fs::copy(crate::repo_root().join(labs::mythbusting::BANK_FILE), &bank).unwrap();
        dir
    }

    fn matrix(kit: &Path) -> (Vec<Fork>, Vec<String>) {
        let settings = crate::load_settings(kit).unwrap();
        let ids: Vec<String> = crate::load_bank(kit).unwrap().myth.iter().map(|m| m.id.clone()).collect();
        forks(&settings.course, &settings.cohort, &ids)
    }

    #[test]
    fn the_matrix_has_the_shipped_cohort_three_forks_issue_20s_example_and_bad_ones() {
        let kit = rules_kit();
        let (forks, notes) = matrix(kit.path());
        assert!(notes.is_empty(), "{notes:?}");
        let valid: Vec<&Fork> = forks.iter().filter(|f| f.fails_on.is_none()).collect();
        assert_eq!(valid.len(), 5, "{:?}", valid.iter().map(|f| &f.name).collect::<Vec<_>>());
        let shipped = &valid[0].cohort;
        assert!(valid.iter().any(|f| f.cohort.variant == "half-day" && f.cohort.skip == shipped.skip));
        assert!(valid.iter().any(|f| f.cohort.poll.iter().all(|id| !shipped.poll.contains(id))));
        assert!(valid.iter().any(|f| f.cohort.skip.len() == 2));
        let example = valid.iter().find(|f| f.name.starts_with(ISSUE_20)).expect("issue 20's example");
        assert_eq!(
            cohort_toml(&example.cohort).lines().skip(2).take(4).collect::<Vec<_>>(),
            vec![
                "date = \"2027-02-10\"",
                "variant = \"half-day\"",
                "poll = [\"async-commit-corrupts\", \"update-less-wal\", \"idle-slot-harmless\"]",
                "skip = [\"wal-race\"]"
            ]
        );
        let fields: Vec<&str> = forks.iter().filter_map(|f| f.fails_on).collect();
        assert_eq!(fields, vec!["poll", "skip", "date", "date", "variant"]);
    }

    /// Each bad cohort is refused with a line naming cohort.toml and the field; the good ones
    /// pass the same rules.
    #[test]
    fn bad_cohorts_are_refused_naming_the_field_and_good_ones_load() {
        let kit = rules_kit();
        let (forks, _) = matrix(kit.path());
        for fork in forks.iter().filter(|f| f.fails_on.is_some()) {
            let tried = try_fork(kit.path(), fork, None).unwrap();
            assert!(tried.ok, "{}: {:?}", fork.name, tried.lines);
            let field = fork.fails_on.unwrap();
            assert!(
                tried.lines[0].starts_with("fails as it must: ") && tried.lines[0].contains(field),
                "{:?}",
                tried.lines
            );
        }
        for fork in forks.iter().filter(|f| f.fails_on.is_none()) {
            std::fs::write(kit.path().join("cohort.toml"), cohort_toml(&fork.cohort)).unwrap();
            let cohort = crate::load_cohort(kit.path()).unwrap_or_else(|e| panic!("{}: {e:#}", fork.name));
            assert_eq!(cohort.poll, fork.cohort.poll);
        }
    }

    /// The judge can fail: a cohort that must be refused but loads is reported, with its file.
    #[test]
    fn a_bad_cohort_that_loads_is_a_failure_of_the_matrix() {
        let kit = rules_kit();
        let (forks, _) = matrix(kit.path());
        let shipped = forks[0].cohort.clone();
        let wrongly_expected = Fork { name: "claims a bad date".into(), cohort: shipped, fails_on: Some("date") };
        let tried = try_fork(kit.path(), &wrongly_expected, None).unwrap();
        assert!(!tried.ok);
        assert!(
            tried.lines[0].starts_with("PASSES, but a cohort with a bad `date` must be refused"),
            "{:?}",
            tried.lines
        );
        assert!(tried.lines.last().unwrap().starts_with("its cohort.toml:"), "{:?}", tried.lines);
    }

    #[test]
    fn the_kit_copy_leaves_out_target_and_git() {
        let from = tempfile::tempdir().unwrap();
        for file in ["course.toml", "book/src/SUMMARY.md", "target/debug/labs", ".git/HEAD", "labs/target.rs"] {
            let path = from.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, file).unwrap();
        }
        let to = tempfile::tempdir().unwrap();
        copy_kit(from.path(), to.path()).unwrap();
        for (file, copied) in [
            ("course.toml", true),
            ("book/src/SUMMARY.md", true),
            ("labs/target.rs", true),
            ("target/debug/labs", false),
            (".git/HEAD", false),
        ] {
            assert_eq!(to.path().join(file).exists(), copied, "{file}");
        }
    }
}
