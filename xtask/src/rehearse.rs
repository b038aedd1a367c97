//! `cargo xtask rehearse`: the facilitator's dress rehearsal, on the machine they will project.
//! It runs every live demo of the cohort's session once, in session order, through the same
//! `labs` binary attendees use, times each against the seconds its phase leaves
//! (`[[activity.demo]]` in course.toml), builds the printables and the remote materials, and
//! ends with a go/no-go list. Each demo's output is kept in target/rehearsal/; with `--save`
//! also beside the chapters' saved runs (fixtures/<activity>/saved/rehearsal/), as the fallback
//! to show if the live demo fails on the day.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use labs::course::{Demo, SlotKind, Status};
use labs::pg::Backend;

use crate::book::{self, Edition};
use crate::{browser, cargo, command_output, rel, run_command};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Go,
    NoGo,
}

#[derive(Debug)]
struct Item {
    verdict: Verdict,
    name: String,
    detail: String,
}

/// The go/no-go list, filled as the rehearsal goes.
#[derive(Default)]
struct Rehearsal {
    items: Vec<Item>,
}

impl Rehearsal {
    fn add(&mut self, verdict: Verdict, name: impl Into<String>, detail: impl Into<String>) {
        let item = Item { verdict, name: name.into(), detail: detail.into() };
        println!("{} {:<34} {}", label(item.verdict), item.name, item.detail);
        self.items.push(item);
    }

    /// The list again, then the verdict as the last line; true when everything is a go.
    fn summary(&self) -> bool {
        println!("\ngo/no-go");
        for item in &self.items {
            println!("{} {:<34} {}", label(item.verdict), item.name, item.detail);
        }
        let no_go = self.items.iter().filter(|i| i.verdict == Verdict::NoGo).count();
        let go = self.items.len() - no_go;
        if no_go == 0 {
            println!("GO: {go} go, 0 no-go");
        } else {
            println!("NO-GO: {go} go, {no_go} no-go (each line above says what to do instead)");
        }
        no_go == 0
    }
}

fn label(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Go => "GO   ",
        Verdict::NoGo => "NO-GO",
    }
}

/// One demo's measured run.
struct Timed {
    seconds: f64,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Whether a demo made its slot: it exited 0 within the seconds its phase leaves.
fn judge(demo: &Demo, timed: &Timed) -> (Verdict, String) {
    let time = format!("{:.1} s of {} s ({})", timed.seconds, demo.within_seconds, demo.phase);
    match timed.code {
        Some(0) if timed.seconds <= f64::from(demo.within_seconds) => (Verdict::Go, time),
        Some(0) => (
            Verdict::NoGo,
            format!("{time}: too slow for its slot; on the day show the saved output, or run it before the session"),
        ),
        code => {
            let last = timed.stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
            let code = code.map_or("killed".to_string(), |c| format!("exit {c}"));
            (Verdict::NoGo, format!("{time}: failed ({code}): {last}"))
        }
    }
}

/// A file name for a demo's output: `run-outage--scenario-frozen-wal-writer.txt`.
fn output_name(run: &str) -> String {
    let slug: String = run.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    format!("{}.txt", slug.trim_matches('-'))
}

pub fn run(root: &Path, backend: Backend, save: bool) -> Result<bool> {
    let settings = crate::load_settings(root)?;
    let bank = crate::load_bank(root)?;
    let (course, cohort) = (&settings.course, &settings.cohort);
    let mut rehearsal = Rehearsal::default();
    let out = root.join("target/rehearsal");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let slots = course.run_sheet_for(cohort);
    let in_session: Vec<&labs::course::Activity> = slots
        .iter()
        .filter_map(|s| match s.kind {
            SlotKind::Activity(a) => Some(a),
            _ => None,
        })
        .collect();
    rehearsal.add(
        Verdict::Go,
        "course and cohort",
        format!(
            "{}, {}: {} minutes, {} activities ({})",
            cohort.title,
            cohort.date,
            course.session_minutes(&cohort.variant),
            in_session.len(),
            in_session.iter().map(|a| a.id.as_str()).collect::<Vec<_>>().join(", ")
        ),
    );

    let labs = labs_binary(root)?;
    let doctor =
        command_output(Command::new(&labs).current_dir(root).args(["--pg", &backend.to_string(), "doctor", "--json"]))?;
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap_or_default();
    let item = |name: &str| {
        report["items"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["item"] == name))
            .map(|i| (i["status"].as_str().unwrap_or("").to_string(), i["detail"].as_str().unwrap_or("").to_string()))
    };
    match (backend, item("postgres image")) {
        (Backend::Local | Backend::Url, _) => {
            rehearsal.add(Verdict::Go, "postgres image", format!("not needed with --pg {backend}"))
        }
        (_, Some((status, detail))) if status == "ok" => rehearsal.add(Verdict::Go, "postgres image", detail),
        (Backend::Auto, _) if item("local postgres").is_some_and(|(s, _)| s == "ok") => {
            rehearsal.add(Verdict::Go, "postgres image", "absent, but local PostgreSQL binaries stand in (--pg auto)")
        }
        (_, Some((_, detail))) => {
            rehearsal.add(Verdict::NoGo, "postgres image", format!("{detail}: run `cargo xtask prepare` while online"))
        }
        (_, None) => rehearsal.add(Verdict::NoGo, "postgres image", "no Docker engine answered (`labs doctor`)"),
    }
    let server_ok = report["ready"].as_bool() == Some(true);
    match item("start a server") {
        Some((status, detail)) if status == "ok" && server_ok => rehearsal.add(Verdict::Go, "server starts", detail),
        Some((_, detail)) => rehearsal.add(Verdict::NoGo, "server starts", detail),
        None => rehearsal.add(
            Verdict::NoGo,
            "server starts",
            format!("`labs doctor --json` gave no report: {}", String::from_utf8_lossy(&doctor.stderr).trim()),
        ),
    }

    for activity in &in_session {
        if activity.status == Status::Draft {
            rehearsal.add(
                Verdict::NoGo,
                format!("demo {}", activity.id),
                "a draft: no lab to rehearse yet; run the chapter from its saved report, or leave it out (cohort.toml)",
            );
            continue;
        }
        for demo in activity.demos.iter().flat_map(|d| d.expand(&cohort.poll)) {
            // A poll myth without a demonstration is read, not run (`--myth` refuses it).
            let myth = demo.run.split_whitespace().skip_while(|w| *w != "--myth").nth(1);
            if myth.is_some_and(|id| bank.get(id).is_some_and(|m| !m.demo)) {
                continue;
            }
            let name = format!("demo {}", demo.run.trim_start_matches("run "));
            if !server_ok {
                rehearsal.add(Verdict::NoGo, name, "not run: no server starts (above)");
                continue;
            }
            let timed = time_demo(&labs, root, backend, &demo)?;
            let (verdict, detail) = judge(&demo, &timed);
            let file = output_name(&demo.run);
            let dir = out.join(activity.folder());
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join(&file), &timed.stdout)?;
            if save && verdict == Verdict::Go {
                let saved = root.join("fixtures").join(activity.folder()).join("saved/rehearsal");
                std::fs::create_dir_all(&saved)?;
                std::fs::write(saved.join(&file), &timed.stdout)?;
                std::fs::write(saved.join("PROVENANCE.md"), provenance(backend, &labs)?)?;
            }
            rehearsal.add(verdict, name, detail);
        }
    }

    // The printables of the session, as the room will get them.
    let printables: Vec<&str> = browser::PRINTABLE
        .iter()
        .copied()
        .filter(|page| {
            *page == browser::ONE_PAGE || in_session.iter().any(|a| page.starts_with(&format!("{}/", a.folder())))
        })
        .collect();
    match browser::find_chromium() {
        None => rehearsal.add(Verdict::NoGo, "printables", "no chromium on PATH (apt-get install chromium)"),
        Some(chromium) => {
            let full = Edition::Full.default_out(root);
            book::build(root, Edition::Full, &full)?;
            let print = out.join("print");
            std::fs::create_dir_all(&print)?;
            let mut failed = Vec::new();
            for page in &printables {
                let pdf = print.join(format!("{}-a4.pdf", page.trim_end_matches(".html").replace('/', "-")));
                if let Err(e) = browser::print_pdf(&chromium, &full.join(page), browser::Paper::A4, &pdf) {
                    failed.push(format!("{page}: {e:#}"));
                }
            }
            if failed.is_empty() {
                rehearsal.add(
                    Verdict::Go,
                    "printables",
                    format!("{} A4 PDFs in {}", printables.len(), rel(root, &print)),
                );
            } else {
                rehearsal.add(Verdict::NoGo, "printables", failed.join("; "));
            }
        }
    }
    let materials = out.join("materials");
    let files = crate::materials::files(course, cohort, &bank);
    for (path, text) in &files {
        let path = materials.join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(&materials))?;
        std::fs::write(&path, text)?;
    }
    rehearsal.add(Verdict::Go, "remote materials", format!("{} files in {}", files.len(), rel(root, &materials)));
    Ok(rehearsal.summary())
}

/// Runs one demo through the labs binary, as the facilitator would type it, and times it.
fn time_demo(labs: &Path, root: &Path, backend: Backend, demo: &Demo) -> Result<Timed> {
    let mut cmd = Command::new(labs);
    cmd.current_dir(root).args(["--pg", &backend.to_string()]).args(demo.run.split_whitespace());
    println!("$ labs --pg {backend} {}", demo.run);
    let started = Instant::now();
    let output = cmd.output().with_context(|| format!("running {}", labs.display()))?;
    Ok(Timed {
        seconds: started.elapsed().as_secs_f64(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Where a saved rehearsal output came from.
fn provenance(backend: Backend, labs: &Path) -> Result<String> {
    let stdout = |cmd: &mut Command| cmd.output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let version = stdout(Command::new(labs).arg("--version")).unwrap_or_default();
    let when = stdout(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])).unwrap_or_default();
    Ok(format!(
        "# Where these outputs come from\n\n\
         `cargo xtask rehearse --save` on the facilitator's machine, with `--pg {backend}` ({version}), on {when}. \
         Standard output of each demo, one file per command; show them when the live demo fails.\n"
    ))
}

/// The workspace's labs binary, built the way `cargo test --workspace` builds it (so the build is shared).
fn labs_binary(root: &Path) -> Result<PathBuf> {
    run_command(cargo(root).args(["build", "--quiet", "--workspace", "--bins"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("debug/labs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo(within: u32) -> Demo {
        Demo { run: "run wal-race --quick".into(), phase: "Race".into(), within_seconds: within }
    }

    fn timed(seconds: f64, code: Option<i32>, stderr: &str) -> Timed {
        Timed { seconds, code, stdout: String::new(), stderr: stderr.into() }
    }

    #[test]
    fn a_demo_is_a_go_only_when_it_passes_within_its_slot() {
        assert_eq!(judge(&demo(180), &timed(42.0, Some(0), "")).0, Verdict::Go);
        let (verdict, detail) = judge(&demo(30), &timed(42.0, Some(0), ""));
        assert_eq!(verdict, Verdict::NoGo);
        assert!(detail.starts_with("42.0 s of 30 s (Race): too slow"), "{detail}");
        let (verdict, detail) = judge(&demo(180), &timed(1.0, Some(4), "error: no server\n\n"));
        assert_eq!(verdict, Verdict::NoGo);
        assert!(detail.ends_with("failed (exit 4): error: no server"), "{detail}");
        assert!(judge(&demo(180), &timed(1.0, None, "")).1.contains("failed (killed)"));
    }

    #[test]
    fn output_names_are_file_names() {
        assert_eq!(
            output_name("run outage --scenario frozen-wal-writer"),
            "run-outage---scenario-frozen-wal-writer.txt"
        );
        assert_eq!(output_name("run mythbusting --myth update-less-wal"), "run-mythbusting---myth-update-less-wal.txt");
    }
}
