//! What makes the attendee bundle runnable with Docker alone, no Rust toolchain: the `labs`
//! binary for this machine, the kit files it reads next to itself (course.toml, cohort.toml, the
//! myth bank and every fixture), the exercises without their solutions, and START-HERE.md.
//! And the check that proves it: unzip the bundle outside the repository, with no cargo or rustc
//! on PATH, and run what an attendee runs first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use labs::course::{Cohort, Course, Status};

use crate::{cargo, command_output, run_command};

/// Which build of `labs` goes into the bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// What attendees get (`cargo xtask handouts`, the release workflow).
    Release,
    /// The test build `cargo xtask check` already made: the same code, minutes faster to get.
    Dev,
}

/// Builds the `labs` binary and returns its path.
pub fn labs_binary(root: &Path, profile: Profile) -> Result<PathBuf> {
    let (args, dir): (&[&str], &str) = match profile {
        Profile::Release => (&["build", "--release", "-p", "labs", "--bin", "labs"], "release/labs"),
        // --workspace: the feature set of `cargo test --workspace`, so nothing is rebuilt.
        Profile::Dev => (&["build", "--workspace", "--bins"], "debug/labs"),
    };
    let started = Instant::now();
    run_command(cargo(root).args(args))?;
    println!("labs ({profile:?}) built in {:.0} s", started.elapsed().as_secs_f64());
    let binary = crate::cargo_target_dir(root).join(dir);
    if !binary.is_file() {
        bail!("{} is missing after the build", binary.display());
    }
    Ok(binary)
}

/// A file of the bundle: its path inside the bundle's top folder, and whether it is a program.
pub struct KitFile {
    pub name: String,
    pub bytes: Vec<u8>,
    pub executable: bool,
}

/// The files that make the bundle a kit `labs` finds next to itself, for the activities this
/// cohort runs. Solutions stay out (the bundle's content check rejects a file named for one).
pub fn attendee_kit(root: &Path, binary: &Path, course: &Course, cohort: &Cohort) -> Result<Vec<KitFile>> {
    let read = |relative: &str| std::fs::read(root.join(relative)).with_context(|| format!("reading {relative}"));
    let mut files = vec![
        KitFile { name: "labs".into(), bytes: std::fs::read(binary)?, executable: true },
        KitFile { name: "course.toml".into(), bytes: read("course.toml")?, executable: false },
        KitFile { name: "cohort.toml".into(), bytes: read("cohort.toml")?, executable: false },
        KitFile { name: "START-HERE.md".into(), bytes: start_here(course, cohort).into_bytes(), executable: false },
    ];
    for lab in labs::LABS {
        let Some(exercise) = lab.exercise() else { continue };
        if !cohort.runs(lab.id()) {
            continue;
        }
        files.push(KitFile { name: exercise.path(), bytes: read(&exercise.path())?, executable: false });
    }
    Ok(files)
}

/// START-HERE.md: the first three commands, and where everything is.
pub fn start_here(course: &Course, cohort: &Cohort) -> String {
    let mut text = format!(
        "# Start here: {title}\n\n\
         {cohort}, {date}. You need Docker (or PostgreSQL's server binaries) and this folder; no Rust, no \
         compiler.\n\n\
         ```sh\n\
         ./labs doctor              # what this machine can do: a server starts, and how fast\n\
         ./labs prepare             # while online: get the PostgreSQL image (once)\n\
         ./labs run log-sleuth      # the first lab\n\
         ```\n\n\
         The book is in `book/` (open `book/index.html`; it works offline). The exercises you edit are SQL \
         files in `exercises/`: save, then `./labs check <activity>` gives a verdict in seconds. \
         `./labs exercises init` writes fresh copies. `./labs list` shows the day's activities.\n\n\
         If a command says no server can be started: start Docker, or install PostgreSQL's server binaries \
         and add `--pg local`. On macOS, if the system refuses to open `labs` (downloaded from the internet), \
         run `xattr -d com.apple.quarantine labs` once.\n\n\
         | # | Activity | Lab | Exercise |\n|--:|---|---|---|\n",
        title = course.course.title,
        cohort = cohort.title,
        date = cohort.date,
    );
    for a in course.activities.iter().filter(|a| a.status == Status::Ready && cohort.runs(&a.id)) {
        let exercise = labs::lab::find(&a.id)
            .and_then(|l| l.exercise())
            .map_or("-".to_string(), |e| format!("`{}`, then `./labs check {}`", e.path(), a.id));
        text.push_str(&format!("| {} | {} | `./labs run {}` | {exercise} |\n", a.number, a.title, a.id));
    }
    text
}

/// Unzips the attendee bundle outside the repository and runs it as an attendee would, with no
/// cargo or rustc on PATH: `labs doctor`, the first lab the cohort runs, the first exercise it
/// runs checked (fails), its solution put in place, the check again (passes). Returns how long it
/// took from unzip to the first lab's output.
pub fn attendee_bundle_runs(root: &Path, zip: &Path, backend: &str, course: &Course, cohort: &Cohort) -> Result<f64> {
    let runs = |a: &&labs::course::Activity| a.status == Status::Ready && cohort.runs(&a.id);
    let first = course.activities.iter().find(runs).context("this cohort runs no ready activity")?;
    let exercise = course
        .activities
        .iter()
        .filter(runs)
        .find_map(|a| labs::lab::find(&a.id).and_then(|lab| lab.exercise()).map(|e| (a.id.clone(), e)));
    let dir = tempfile::Builder::new().prefix("attendee-bundle-").tempdir()?;
    if dir.path().starts_with(root) {
        bail!("the temporary directory {} is inside the repository", dir.path().display());
    }
    let started = Instant::now();
    unzip(zip, dir.path())?;
    let kit = dir.path().join("attendee");
    let path = path_without_rust()?;
    let labs = |args: &[&str]| {
        let mut cmd = Command::new(kit.join("labs"));
        cmd.args(args).arg("--pg").arg(backend).current_dir(&kit).env("PATH", &path).env_remove("LABS_HOME");
        cmd
    };
    let expect = |args: &[&str], code: i32| -> Result<String> {
        let out = command_output(&mut labs(args))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.code() != Some(code) {
            bail!("`./labs {}` exited with {:?}, not {code}:\n{text}", args.join(" "), out.status.code());
        }
        Ok(text)
    };
    // `doctor --json` says where labs read its kit: the folder next to the binary, not a checkout.
    let doctor = expect(&["doctor", "--json"], 0)?;
    let json_start = doctor.find('{').context("`./labs doctor --json` printed no JSON")?;
    let report: serde_json::Value = serde_json::Deserializer::from_str(&doctor[json_start..])
        .into_iter()
        .next()
        .context("`./labs doctor --json` printed no JSON")??;
    let read_from = report["kit"].as_str().map(PathBuf::from);
    if read_from.as_deref().map(|p| p.canonicalize().ok()) != Some(kit.canonicalize().ok()) {
        bail!("`./labs doctor` read its kit from {read_from:?}, not from the bundle at {}", kit.display());
    }
    expect(&["run", &first.id], 0)?;
    let first_output = started.elapsed().as_secs_f64();
    let Some((id, exercise)) = exercise else {
        println!("no activity this cohort runs has an exercise: no check to try");
        return Ok(first_output);
    };
    expect(&["check", &id], 1)?;
    if kit.join(exercise.solution_path()).exists() {
        bail!("the bundle carries the solution {}", exercise.solution_path());
    }
    std::fs::copy(root.join(exercise.solution_path()), kit.join(exercise.path()))?;
    let passed = expect(&["check", &id], 0)?;
    println!("{}", passed.lines().filter(|l| l.starts_with("passed")).collect::<Vec<_>>().join("\n"));
    Ok(first_output)
}

/// This machine's PATH without any directory that holds cargo, rustc or rustup.
fn path_without_rust() -> Result<std::ffi::OsString> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kept: Vec<PathBuf> = std::env::split_paths(&path)
        .filter(|dir| !["cargo", "rustc", "rustup"].iter().any(|tool| dir.join(tool).exists()))
        .collect();
    Ok(std::env::join_paths(kept)?)
}

fn unzip(zip: &Path, into: &Path) -> Result<()> {
    let mut archive =
        zip::ZipArchive::new(std::fs::File::open(zip).with_context(|| format!("opening {}", zip.display()))?)?;
    archive.extract(into).with_context(|| format!("unzipping {}", zip.display()))?;
    Ok(())
}
