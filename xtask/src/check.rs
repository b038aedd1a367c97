//! `cargo xtask check`: the course's full test run. Each step runs even when an earlier one
//! failed (unless it needs that one's output), so one run shows everything that is broken.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use labs::course::{Activity, Cohort, Course, Status};
use labs::pg::Backend;
use mdbook::book::{parse_summary, SummaryItem};

use crate::book::{self, Edition};
use crate::{cargo, command_output, handouts, links, load_course, minutes, run_command, run_command_within, sql};

enum Outcome {
    Passed,
    Skipped(String),
}

struct Row {
    name: String,
    result: Result<Outcome, String>,
    seconds: f64,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
}

impl Report {
    /// Runs one step, announcing it; returns whether it passed.
    fn step(&mut self, name: impl Into<String>, f: impl FnOnce() -> Result<Outcome>) -> bool {
        let name = name.into();
        println!("\n==> {name}");
        let started = Instant::now();
        let result = f().map_err(|e| format!("{e:#}"));
        let seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok(Outcome::Passed) => println!("<== ok: {name} ({seconds:.1} s)"),
            Ok(Outcome::Skipped(reason)) => println!("<== skipped: {name}: {reason}"),
            Err(e) => println!("<== FAILED: {name}\n{e}"),
        }
        let passed = matches!(result, Ok(Outcome::Passed));
        self.rows.push(Row { name, result, seconds });
        passed
    }

    fn skip(&mut self, name: impl Into<String>, reason: &str) {
        self.step(name, || Ok(Outcome::Skipped(reason.to_string())));
    }

    /// The table, then the verdict as the last line.
    fn print_summary(&self) -> bool {
        let width = self.rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
        println!("\n{:width$}  {:8}  {:>7}", "step", "result", "seconds");
        for row in &self.rows {
            let (result, note) = match &row.result {
                Ok(Outcome::Passed) => ("ok", String::new()),
                Ok(Outcome::Skipped(reason)) => ("skipped", format!("  ({reason})")),
                Err(_) => ("FAILED", String::new()),
            };
            println!("{:width$}  {result:8}  {:>7.1}{note}", row.name, row.seconds);
        }
        let passed = self.rows.iter().filter(|r| matches!(r.result, Ok(Outcome::Passed))).count();
        let failed = self.rows.iter().filter(|r| r.result.is_err()).count();
        let skipped = self.rows.len() - passed - failed;
        if skipped > 0 {
            println!("({skipped} skipped)");
        }
        println!("{passed} passed, {failed} failed");
        failed == 0
    }
}

pub fn run(root: &Path, backend: Backend, quick: bool) -> Result<bool> {
    let mut report = Report::default();
    let mut course: Option<Course> = None;
    report.step("course.toml validates", || {
        let loaded = load_course(root)?;
        println!(
            "{} activities, {} run sheet segments, {} minutes",
            loaded.activities.len(),
            loaded.segments.len(),
            loaded.course.session_minutes
        );
        course = Some(loaded);
        Ok(Outcome::Passed)
    });
    let mut cohort: Option<Cohort> = None;
    if let Some(course) = &course {
        report.step("cohort.toml validates (variant, date, poll myths, skipped activities)", || {
            let loaded = crate::load_cohort(root)?;
            let variants: Vec<String> = std::iter::once(format!("core {} min", course.course.session_minutes))
                .chain(course.variants.iter().map(|v| format!("{} {} min", v.id, v.session_minutes)))
                .collect();
            println!(
                "{}, {}: variant {}; every variant adds up ({})",
                loaded.title,
                loaded.date,
                loaded.variant,
                variants.join(", ")
            );
            if !loaded.skip.is_empty() {
                println!(
                    "not run by this cohort: {} (left out of the book, handouts and checks)",
                    loaded.skip.join(", ")
                );
            }
            for line in unsaved_poll_myths(root, course, &loaded)? {
                println!("warning: {line}");
            }
            cohort = Some(loaded);
            Ok(Outcome::Passed)
        });
    }

    report.step("rustfmt: cargo fmt --all -- --check (rustfmt.toml)", || {
        run_command_within(cargo(root).args(["fmt", "--all", "--", "--check"]), minutes(5))
            .context("the tree is not formatted: run `cargo fmt --all`, then review and commit the change")?;
        Ok(Outcome::Passed)
    });

    let full = Edition::Full.default_out(root);
    let attendee = Edition::Attendee.default_out(root);
    let book_built = report.step("the book builds (full and attendee editions)", || {
        book::build(root, Edition::Full, &full)?;
        book::build(root, Edition::Attendee, &attendee)?;
        Ok(Outcome::Passed)
    });

    match &course {
        Some(course) => {
            report.step("SUMMARY.md lists every activity of course.toml, in order", || {
                let src = root.join("book/src");
                let text = std::fs::read_to_string(src.join("SUMMARY.md"))?;
                let problems = summary_problems(&text, course, &|p| src.join(p).is_file());
                if !problems.is_empty() {
                    bail!("book/src/SUMMARY.md:\n  {}", problems.join("\n  "));
                }
                Ok(Outcome::Passed)
            });
        }
        None => report.skip("SUMMARY.md lists every activity of course.toml, in order", "course.toml is invalid"),
    }

    report.step("the provider's node scripts pass shellcheck", || node_scripts(root));

    report.step("external links are recorded in book/external-links.txt", || {
        let n = crate::external_links::check_recorded(root)?;
        println!("{n} external links recorded (check them online with `cargo xtask links --online`)");
        Ok(Outcome::Passed)
    });

    if let Some(course) = &course {
        report.step("every ready chapter has the parts of style.md", || {
            let mut problems = Vec::new();
            for activity in course.activities.iter().filter(|a| a.status == Status::Ready) {
                let path = format!("book/src/{}/README.md", activity.folder());
                let text = std::fs::read_to_string(root.join(&path)).with_context(|| format!("reading {path}"))?;
                problems.extend(
                    crate::style::chapter_problems(&text, activity.minutes).into_iter().map(|p| format!("{path}: {p}")),
                );
            }
            if !problems.is_empty() {
                bail!("{} missing or misplaced part(s):\n  {}", problems.len(), problems.join("\n  "));
            }
            Ok(Outcome::Passed)
        });
    }

    if book_built {
        report.step("internal links resolve (both editions)", || {
            let mut problems = Vec::new();
            for (edition, out) in [(Edition::Full, &full), (Edition::Attendee, &attendee)] {
                problems.extend(links::check(out)?.into_iter().map(|p| format!("{}: {p}", edition.name())));
            }
            if !problems.is_empty() {
                bail!("{} broken internal link(s):\n  {}", problems.len(), problems.join("\n  "));
            }
            Ok(Outcome::Passed)
        });
    } else {
        report.skip("internal links resolve (both editions)", "the book did not build");
    }

    let browser_step = "the book in headless chromium: every page, the timer, the printable pages";
    let chromium = crate::browser::find_chromium();
    match (book_built, &chromium, &course, &cohort) {
        (true, Some(chromium), Some(course), Some(cohort)) => {
            report.step(browser_step, || {
                let (printables, left_out) = crate::browser::printables_for(course, cohort);
                for (page, id) in left_out {
                    println!("not printed: {page} (cohort.toml skips {id})");
                }
                let problems = crate::browser::check(&full, chromium, &printables)?;
                if !problems.is_empty() {
                    bail!("{} problem(s) in the browser:\n  {}", problems.len(), problems.join("\n  "));
                }
                Ok(Outcome::Passed)
            });
        }
        (false, ..) | (_, _, None, _) | (_, _, _, None) => report.skip(browser_step, "the book did not build"),
        // CI installs chromium (.ci/run); elsewhere the step says how to get it.
        (true, None, ..) if std::env::var_os("CI").is_some() => {
            report.step(browser_step, || {
                bail!("chromium is not installed: .ci/run installs Debian's `chromium` package")
            });
        }
        (true, None, ..) => report.skip(browser_step, "no chromium on PATH (apt-get install chromium)"),
    }

    // Other cohorts an instructor might write, in a copy of the kit: the shipped one's book was
    // opened in chromium just above, so here it gets the rules and the book build, and the
    // browser gate runs for one fork that changes the most pages (InBrowser::One).
    let matrix_step = "fork matrix: other cohort.toml files build the book and pass the gates; bad ones are refused";
    if course.is_some() && cohort.is_some() {
        report.step(matrix_step, || {
            crate::fork_matrix::run(root, crate::fork_matrix::InBrowser::One)?;
            Ok(Outcome::Passed)
        });
    } else {
        report.skip(matrix_step, "course.toml or cohort.toml is invalid");
    }

    report.step(format!("SQL blocks in the book run on PostgreSQL (--pg {backend})"), || {
        sql::run(root, backend)?;
        Ok(Outcome::Passed)
    });

    report.step("clippy: cargo clippy --workspace --all-targets -- -D warnings", || {
        run_command_within(
            cargo(root).args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
            minutes(60),
        )
        .context("clippy has findings (above): fix them, or allow one where it is wrong with `#[allow(clippy::…, reason = \"…\")]`")?;
        Ok(Outcome::Passed)
    });

    let test_step = format!("cargo test --workspace --no-fail-fast (LABS_PG={backend})");
    if quick {
        report.skip(test_step, "--quick");
    } else {
        report.step(test_step, || {
            run_command_within(
                cargo(root)
                    // Every test binary runs even after one fails: one run shows all that is broken.
                    .args(["test", "--workspace", "--no-fail-fast"])
                    .env("LABS_PG", backend.to_string())
                    // A changed snapshot is a failure here, not a .snap.new to review.
                    .env("INSTA_UPDATE", "no")
                    .env("RUST_TEST_THREADS", "2"),
                minutes(90),
            )?;
            Ok(Outcome::Passed)
        });
    }

    let pg18_step = "provider tests on PostgreSQL 18 (local backend)";
    if quick {
        report.skip(pg18_step, "--quick");
    } else {
        report.step(pg18_step, || provider_tests_on_18(root));
    }
    if let (Some(course), Some(cohort)) = (&course, &cohort) {
        let labs_step = "every lab runs, and every reference solution passes, on PostgreSQL 18 (local backend)";
        if quick {
            report.skip(labs_step, "--quick");
        } else {
            report.step(labs_step, || labs_on_18(root, course, cohort));
        }
    }

    match (&course, &cohort) {
        (Some(course), Some(cohort)) => {
            for activity in course.activities.iter().filter(|a| a.status == Status::Ready) {
                let name = format!("exercise {}: unsolved fails, solution passes", activity.id);
                if cohort.runs(&activity.id) {
                    report.step(name, || exercise(root, &activity.id, backend));
                } else {
                    report.skip(name, &format!("cohort.toml skips {}", activity.id));
                }
            }
            // The first lab this cohort runs, once through the backend attendees fall back to.
            match course.activities.iter().find(|a| a.status == Status::Ready && cohort.runs(&a.id)) {
                Some(lab) => {
                    report.step(format!("lab {} runs on local PostgreSQL binaries", lab.id), || local_lab(root, lab));
                }
                None => report.skip("a lab runs on local PostgreSQL binaries", "this cohort runs no ready activity"),
            }
        }
        _ => report.skip("exercises and labs", "course.toml or cohort.toml is invalid"),
    }

    let handouts_built = report.step("handouts build and pass their content checks", || {
        handouts::build(root, &root.join("target/handouts"), crate::bundle::Profile::Dev)?;
        Ok(Outcome::Passed)
    });

    let bundle_step = format!("the attendee bundle runs outside the repository with no cargo on PATH (--pg {backend})");
    if let (true, Some(course), Some(cohort)) = (handouts_built, &course, &cohort) {
        report.step(bundle_step, || {
            let zip = root.join("target/handouts/attendee.zip");
            let seconds = crate::bundle::attendee_bundle_runs(root, &zip, &backend.to_string(), course, cohort)?;
            println!("from unzip to the first lab's output: {seconds:.1} s");
            Ok(Outcome::Passed)
        });
    } else {
        report.skip(bundle_step, "the handouts did not build");
    }

    Ok(report.print_summary())
}

/// The provider's node scripts (`labs/src/pg/scripts/*.sh`): the files and the compiled-in
/// `NODE_SCRIPTS` agree, and Debian's shellcheck passes them. CI installs shellcheck (.ci/run);
/// elsewhere a missing one skips the step.
fn node_scripts(root: &Path) -> Result<Outcome> {
    let dir = root.join("labs/src/pg/scripts");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    files.sort();
    let on_disk: Vec<String> =
        files.iter().filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned())).collect();
    let mut compiled: Vec<String> = labs::pg::NODE_SCRIPTS.iter().map(|s| s.name.to_string()).collect();
    compiled.sort();
    if on_disk != compiled {
        bail!(
            "labs/src/pg/scripts/ has {on_disk:?} but NODE_SCRIPTS (labs/src/pg/scripts.rs) lists {compiled:?}: \
             add each script to node_scripts! there, or remove the file"
        );
    }
    let installed =
        crate::children::output(std::process::Command::new("shellcheck").arg("--version"), Some(minutes(1)))
            .is_ok_and(|o| o.status.success());
    if !installed {
        if std::env::var_os("CI").is_some() {
            bail!("shellcheck is not installed: .ci/run installs Debian's `shellcheck` package");
        }
        return Ok(Outcome::Skipped("no shellcheck on PATH (apt-get install shellcheck)".into()));
    }
    run_command_within(std::process::Command::new("shellcheck").arg("--severity=style").args(&files), minutes(5))?;
    println!("{} node scripts pass shellcheck", files.len());
    Ok(Outcome::Passed)
}

/// Poll myths with a demonstration but no saved run to show when the live demo fails, each as
/// one line with the command that records it (the one `saved/PROVENANCE.md` gives).
fn unsaved_poll_myths(root: &Path, course: &Course, cohort: &Cohort) -> Result<Vec<String>> {
    let Some(activity) = course.activity("mythbusting").filter(|a| cohort.runs(&a.id)) else {
        return Ok(Vec::new());
    };
    let bank = crate::load_bank(root)?;
    let saved = format!("fixtures/{}/saved", activity.folder());
    let provenance = std::fs::read_to_string(root.join(&saved).join("PROVENANCE.md")).unwrap_or_default();
    // The recording command PROVENANCE.md shows for one myth, with `<id>` in it.
    let recipe = provenance
        .lines()
        .map(str::trim)
        .find(|l| l.contains("--myth <id>"))
        .map(str::to_string)
        .unwrap_or_else(|| format!("cargo labs --pg local run mythbusting --myth <id> > {saved}/<id>.txt"));
    Ok(cohort
        .poll
        .iter()
        .filter_map(|id| bank.get(id))
        .filter(|myth| myth.demo && !root.join(&saved).join(format!("{}.txt", myth.id)).is_file())
        .map(|myth| {
            format!(
                "poll myth '{id}' has a demonstration but no saved run ({saved}/{id}.txt) to show if the live demo \
                 fails; record one: `{}`",
                recipe.replace("<id>", &myth.id),
                id = myth.id
            )
        })
        .collect())
}

/// Where .ci/run installs PyPI's PostgreSQL 18 build.
const PG18_BIN: &str = "/opt/labs-pg18/bin";

/// The provider's tests on a second major, 18, through LABS_PG_BIN (the container ones stay on
/// the image's major). CI installs it (.ci/run); elsewhere a missing build skips the step.
fn provider_tests_on_18(root: &Path) -> Result<Outcome> {
    if !Path::new(PG18_BIN).join("initdb").is_file() {
        if std::env::var_os("CI").is_some() {
            bail!("no PostgreSQL 18 in {PG18_BIN}: .ci/run installs it");
        }
        return Ok(Outcome::Skipped(format!("no PostgreSQL 18 in {PG18_BIN} (see .ci/run)")));
    }
    // --workspace, not -p labs: the feature set of the test step above, so nothing is rebuilt
    // (-p labs resolved tokio's and others' features anew and recompiled a hundred crates).
    run_command(
        cargo(root)
            .args(["test", "--workspace", "--test", "pg_provider", "--", "--skip", "container"])
            .env("LABS_PG_BIN", PG18_BIN)
            .env("RUST_TEST_THREADS", "2"),
    )?;
    Ok(Outcome::Passed)
}

/// Every ready lab the cohort runs once (its smoke-test flags, `Lab::SMOKE_ARGS`) and every
/// exercise's reference solution on PostgreSQL 18: what moved between majors (pg_stat_wal's
/// counters in 18) shows here.
fn labs_on_18(root: &Path, course: &Course, cohort: &Cohort) -> Result<Outcome> {
    if !Path::new(PG18_BIN).join("initdb").is_file() {
        if std::env::var_os("CI").is_some() {
            bail!("no PostgreSQL 18 in {PG18_BIN}: .ci/run installs it");
        }
        return Ok(Outcome::Skipped(format!("no PostgreSQL 18 in {PG18_BIN} (see .ci/run)")));
    }
    let mut failures = Vec::new();
    for activity in course.activities.iter().filter(|a| a.status == Status::Ready) {
        if !cohort.runs(&activity.id) {
            println!("not run: {} (cohort.toml skips it)", activity.id);
            continue;
        }
        let Some(lab) = labs::lab::find(&activity.id) else { continue };
        let mut run = labs_command(root);
        run.args(["run", &activity.id]).args(lab.smoke_args()).args(["--pg", "local"]).env("LABS_PG_BIN", PG18_BIN);
        let out = command_output(&mut run)?;
        if !out.status.success() {
            failures.push(format!(
                "`labs run {}` on 18 ({}):\n{}",
                activity.id,
                out.status,
                indent(&tail(&combined(&out), 12))
            ));
        }
        if lab.exercise().is_some() {
            let mut check = labs_command(root);
            check.args(["check", &activity.id, "--solution", "--pg", "local"]).env("LABS_PG_BIN", PG18_BIN);
            let out = command_output(&mut check)?;
            if !out.status.success() {
                failures.push(format!(
                    "`labs check {} --solution` on 18 ({}):\n{}",
                    activity.id,
                    out.status,
                    indent(&tail(&combined(&out), 12))
                ));
            }
        }
    }
    if !failures.is_empty() {
        bail!("{} failure(s) on PostgreSQL 18:\n{}", failures.len(), failures.join("\n"));
    }
    Ok(Outcome::Passed)
}

/// A lab once through initdb + pg_ctl, the backend attendees fall back to without Docker.
fn local_lab(root: &Path, first: &Activity) -> Result<Outcome> {
    if first.status != Status::Ready {
        return Ok(Outcome::Skipped(format!("activity {} is a draft", first.id)));
    }
    if let Err(reason) = labs::pg::find_local_binaries() {
        return Ok(Outcome::Skipped(format!("no local PostgreSQL binaries: {reason}")));
    }
    run_command(labs_command(root).args(["run", &first.id, "--pg", "local"]))?;
    Ok(Outcome::Passed)
}

/// The labs binary as a workspace build makes it. `cargo run -p labs` would resolve features for
/// labs alone, a different set from `cargo test --workspace`, and rebuild half the dependency
/// tree (minutes on a 2-core machine); building with `--workspace` reuses the test build.
fn labs_command(root: &Path) -> std::process::Command {
    let binary = crate::cargo_target_dir(root).join("debug/labs");
    if let Err(e) = run_command(cargo(root).args(["build", "--quiet", "--workspace", "--bins"])) {
        // Fall through: running the binary then fails with a message that names it.
        eprintln!("{e:#}");
    }
    let mut labs = std::process::Command::new(binary);
    // This kit, whatever labs would find on its own: it looks beside its binary first, and with
    // CARGO_TARGET_DIR elsewhere that is another checkout's course, cohort and exercises.
    labs.env("LABS_HOME", root);
    labs
}

/// `labs check`'s exit codes (labs::Exit): xtask reads codes, never message text.
const CHECK_FAILED: i32 = 1;
const NO_EXERCISE: i32 = 3;

/// The exercise in the repository must be unsolved (its check fails) and the reference solution
/// must pass the same check: otherwise attendees get a finished exercise or an impossible one.
fn exercise(root: &Path, id: &str, backend: Backend) -> Result<Outcome> {
    let backend = backend.to_string();
    let unsolved = command_output(labs_command(root).args(["check", id, "--pg", &backend]))?;
    let text = combined(&unsolved);
    match unsolved.status.code() {
        Some(NO_EXERCISE) => return Ok(Outcome::Skipped(format!("{id} has no exercise"))),
        Some(0) => bail!(
            "`labs check {id}` passes on the exercise as it is in the repository; the exercise must start \
             unsolved (was the solution copied into the exercise?)\n{}",
            indent(&text)
        ),
        Some(CHECK_FAILED) => {
            println!("as expected, the unsolved exercise fails its check:\n{}", indent(&tail(&text, 8)))
        }
        Some(code) => bail!("`labs check {id}` could not run the check (exit {code}):\n{}", indent(&text)),
        None => bail!("`labs check {id}` was killed ({}):\n{}", unsolved.status, indent(&text)),
    }
    let solved = command_output(labs_command(root).args(["check", id, "--solution", "--pg", &backend]))?;
    let text = combined(&solved);
    if !solved.status.success() {
        bail!(
            "`labs check {id} --solution` failed ({}): the reference solution must pass its own check\n{}",
            solved.status,
            indent(&text)
        );
    }
    println!("the reference solution passes:\n{}", indent(&tail(&text, 4)));
    Ok(Outcome::Passed)
}

fn combined(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// What is wrong with SUMMARY.md against course.toml: every activity listed, in course order,
/// under its title; ready ones link to `<NN-id>/README.md` (which exists), drafts are `[Title]()`.
fn summary_problems(summary: &str, course: &Course, exists: &dyn Fn(&Path) -> bool) -> Vec<String> {
    let summary = match parse_summary(summary) {
        Ok(s) => s,
        Err(e) => return vec![format!("does not parse: {e:#}")],
    };
    fn flatten(items: &[SummaryItem], out: &mut Vec<(String, Option<PathBuf>)>) {
        for item in items {
            if let SummaryItem::Link(link) = item {
                out.push((link.name.clone(), link.location.clone()));
                flatten(&link.nested_items, out);
            }
        }
    }
    let mut entries = Vec::new();
    for part in [&summary.prefix_chapters, &summary.numbered_chapters, &summary.suffix_chapters] {
        flatten(part, &mut entries);
    }
    let mut problems = Vec::new();
    let mut previous: Option<(usize, &str)> = None;
    for activity in &course.activities {
        let chapter = PathBuf::from(format!("{}/README.md", activity.folder()));
        let wanted = match activity.status {
            Status::Ready => format!("- [{}]({})", activity.title, chapter.display()),
            Status::Draft => format!("- [{}]()", activity.title),
        };
        let Some(index) = entries.iter().position(|(name, _)| name.contains(&activity.title)) else {
            problems.push(format!("activity {} '{}' is missing; add `{wanted}`", activity.number, activity.title));
            continue;
        };
        if let Some((before, before_id)) = previous {
            if index < before {
                problems.push(format!(
                    "'{}' comes before '{before_id}', but course.toml has it after; reorder to match course.toml",
                    activity.id
                ));
            }
        }
        previous = Some((index, &activity.id));
        let location = entries[index].1.as_ref().map(|p| PathBuf::from(p.to_string_lossy().trim_start_matches("./")));
        match (activity.status, location) {
            (Status::Ready, Some(path)) if path == chapter => {
                if !exists(&path) {
                    problems.push(format!("'{}' links to {}, which does not exist", activity.id, path.display()));
                }
            }
            (Status::Ready, found) => problems.push(format!(
                "'{}' is ready in course.toml, so its entry must be `{wanted}` (it links to {})",
                activity.id,
                found.map_or("nothing: a draft entry".to_string(), |p| p.display().to_string())
            )),
            (Status::Draft, None) => {}
            (Status::Draft, Some(path)) => problems.push(format!(
                "'{}' is a draft in course.toml but links to {}; make it `{wanted}`, or set status = \"ready\" in course.toml",
                activity.id,
                path.display()
            )),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_course as course;

    /// A SUMMARY.md that matches the course exactly.
    fn good_summary(course: &Course) -> String {
        let mut s = String::from("# Summary\n\n[Introduction](introduction.md)\n\n- [Run sheet](run-sheet.md)\n");
        for a in &course.activities {
            match a.status {
                Status::Ready => s.push_str(&format!(
                    "- [{}]({}/README.md)\n  - [Solution]({}/solution.md)\n",
                    a.title,
                    a.folder(),
                    a.folder()
                )),
                Status::Draft => s.push_str(&format!("- [{}]()\n", a.title)),
            }
        }
        s
    }

    /// A poll myth with a demonstration but no saved run gets one line with the recording
    /// command PROVENANCE.md gives; a poll-only myth, or one with its run saved, gets none.
    #[test]
    fn a_poll_myth_without_a_saved_run_is_one_line_with_the_command_that_records_it() {
        let kit = tempfile::tempdir().unwrap();
        let frozen = crate::test_kit();
        for file in ["course.toml", "cohort.toml"] {
            std::fs::copy(frozen.join(file), kit.path().join(file)).unwrap();
        }
        let repo = crate::repo_root();
        let saved = kit.path().join("fixtures/02-mythbusting/saved");
        std::fs::create_dir_all(&saved).unwrap();
        for file in ["myths.toml", "saved/PROVENANCE.md", "saved/async-commit-corrupts.txt"] {
            let from = repo.join("fixtures/02-mythbusting").join(file);
            std::fs::copy(from, kit.path().join("fixtures/02-mythbusting").join(file)).unwrap();
        }
        let settings = crate::load_settings(kit.path()).unwrap();
        let mut cohort = settings.cohort.clone();
        cohort.poll = vec!["async-commit-corrupts".into(), "update-less-wal".into(), "idle-slot-harmless".into()];
        let lines = unsaved_poll_myths(kit.path(), &settings.course, &cohort).unwrap();
        assert_eq!(
            lines,
            vec![
                "poll myth 'update-less-wal' has a demonstration but no saved run \
                 (fixtures/02-mythbusting/saved/update-less-wal.txt) to show if the live demo fails; record one: \
                 `cargo labs --pg local run mythbusting --myth update-less-wal > \
                 fixtures/02-mythbusting/saved/update-less-wal.txt`"
            ]
        );
        cohort.skip = vec!["mythbusting".into()];
        assert!(unsaved_poll_myths(kit.path(), &settings.course, &cohort).unwrap().is_empty(), "skipped: no poll");
    }

    #[test]
    fn a_summary_matching_the_course_passes() {
        let course = course();
        assert_eq!(summary_problems(&good_summary(&course), &course, &|_| true), Vec::<String>::new());
    }

    #[test]
    fn missing_reordered_and_mislinked_activities_are_reported() {
        let course = course();
        let [first, second, third, ..] = &course.activities[..] else { panic!() };
        let good = good_summary(&course);
        let missing = good.replace(&format!("- [{}]()\n", second.title), "");
        assert!(summary_problems(&missing, &course, &|_| true)[0]
            .contains(&format!("'{}' is missing; add `- [{}]()`", second.title, second.title)));

        let line2 = format!("- [{}]()\n", second.title);
        let line3 = format!("- [{}]()\n", third.title);
        let swapped = good.replace(&line2, "@@").replace(&line3, &line2).replace("@@", &line3);
        assert!(summary_problems(&swapped, &course, &|_| true).iter().any(|p| p.contains("reorder")));

        assert_eq!(first.status, Status::Ready);
        let as_draft = good.replace(&format!("({}/README.md)", first.folder()), "()");
        assert!(summary_problems(&as_draft, &course, &|_| true)[0].contains("is ready in course.toml"));
        assert!(summary_problems(&good, &course, &|_| false)[0].contains("which does not exist"));

        let linked_draft = good.replace(&line2, &format!("- [{}](x.md)\n", second.title));
        assert!(summary_problems(&linked_draft, &course, &|_| true)[0].contains("is a draft in course.toml"));
    }
}
