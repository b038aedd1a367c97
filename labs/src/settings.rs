//! Where the kit's files come from: one precedence rule for every setting and data file.
//!
//! A kit directory on disk (a checkout, or an unzipped attendee bundle) is looked for first, and
//! every file is read from it; a file it does not have falls back to the copy compiled into this
//! binary. So an instructor's edited `cohort.toml` wins over the shipped one, and a `labs` binary
//! copied anywhere still runs. The kit directory is the first of these that holds `course.toml`:
//!
//! 1. `LABS_HOME`, when set (an error if it does not hold `course.toml`);
//! 2. the directory of the running `labs` binary, or one of its ancestors (the bundle keeps
//!    `labs` at its top; a checkout's `target/debug/labs` is two levels below);
//! 3. the current directory, or one of its ancestors.
//!
//! Errors name the file, the line and the field, so a forked kit says what to fix.

use std::path::{Path, PathBuf};

use crate::course::{Cohort, Course};

/// Files compiled into the binary, by their path in the kit. A file missing here and on disk is
/// an error that names it.
const COMPILED_IN: &[(&str, &str)] = &[
    ("course.toml", include_str!("../../course.toml")),
    ("cohort.toml", include_str!("../../cohort.toml")),
    ("fixtures/02-mythbusting/myths.toml", include_str!("../../fixtures/02-mythbusting/myths.toml")),
];

/// Where a file was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Disk(PathBuf),
    CompiledIn,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Disk(path) => write!(f, "{}", path.display()),
            Origin::CompiledIn => f.write_str("the copy built into labs"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file does not parse (TOML syntax, an unknown or mistyped field).
    #[error("{file}:{line}:{column}: {message}")]
    Parse { file: String, line: usize, column: usize, message: String },
    /// The file parses but does not add up; each problem names its field (and line when found).
    /// Each problem starts with its `file:line` (or the file), as the parser that found it wrote it.
    #[error("{}", problems.join("\n  "))]
    Invalid { file: String, problems: Vec<String> },
    #[error("{}: {message}", path.display())]
    Read { path: PathBuf, message: String },
    #[error("LABS_HOME={} does not hold course.toml: point it at the kit's directory (a checkout or the unzipped bundle), or unset it", .0.display())]
    BadHome(PathBuf),
    #[error("{0} is neither in the kit directory nor built into labs")]
    Missing(String),
}

impl SettingsError {
    /// A TOML error with its position in `text`.
    pub fn parse(file: &str, text: &str, error: &toml::de::Error) -> SettingsError {
        let (line, column) = error.span().map_or((1, 1), |span| line_and_column(text, span.start));
        SettingsError::Parse { file: file.to_string(), line, column, message: error.message().trim().to_string() }
    }
}

/// 1-based line and column of a byte offset.
pub fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// `file:line: ` for the first line of `text` that contains `needle`, or `file: `.
pub fn locate(file: &str, text: &str, needle: &str) -> String {
    match text.lines().position(|l| l.contains(needle)) {
        Some(n) => format!("{file}:{}", n + 1),
        None => file.to_string(),
    }
}

/// The kit directory this run reads its files from, if any.
#[derive(Clone, Debug)]
pub struct Kit {
    root: Option<PathBuf>,
}

impl Kit {
    /// Finds the kit directory by the precedence rule above.
    pub fn find() -> Result<Kit, SettingsError> {
        if let Some(home) = std::env::var_os("LABS_HOME").filter(|h| !h.is_empty()) {
            let home = PathBuf::from(home);
            return if home.join("course.toml").is_file() {
                Ok(Kit::at(home))
            } else {
                Err(SettingsError::BadHome(home))
            };
        }
        let binary = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf));
        let current = std::env::current_dir().ok();
        for start in [binary, current].into_iter().flatten() {
            if let Some(root) = start.ancestors().find(|dir| dir.join("course.toml").is_file()) {
                return Ok(Kit::at(root.to_path_buf()));
            }
        }
        Ok(Kit::compiled_in())
    }

    /// The kit at `root` (a checkout or a bundle), for xtask and tests.
    pub fn at(root: impl Into<PathBuf>) -> Kit {
        Kit { root: Some(root.into()) }
    }

    /// Only what is compiled in.
    pub fn compiled_in() -> Kit {
        Kit { root: None }
    }

    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// A path inside the kit directory, when there is one and the file or folder exists.
    pub fn path(&self, relative: &str) -> Option<PathBuf> {
        self.root.as_ref().map(|r| r.join(relative)).filter(|p| p.exists())
    }

    /// Reads a kit file: from the kit directory when it has the file, else the compiled-in copy.
    pub fn read(&self, relative: &str) -> Result<(String, Origin), SettingsError> {
        if let Some(path) = self.path(relative) {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| SettingsError::Read { path: path.clone(), message: e.to_string() })?;
            return Ok((text, Origin::Disk(path)));
        }
        COMPILED_IN
            .iter()
            .find(|(name, _)| *name == relative)
            .map(|(_, text)| (text.to_string(), Origin::CompiledIn))
            .ok_or_else(|| SettingsError::Missing(relative.to_string()))
    }

    /// Where a kit file would be read from, for `labs doctor`.
    pub fn origin(&self, relative: &str) -> Option<Origin> {
        match self.path(relative) {
            Some(path) => Some(Origin::Disk(path)),
            None => COMPILED_IN.iter().any(|(name, _)| *name == relative).then_some(Origin::CompiledIn),
        }
    }
}

/// The course and this cohort, read once and checked.
#[derive(Clone, Debug)]
pub struct Settings {
    pub kit: Kit,
    pub course: Course,
    pub cohort: Cohort,
}

impl Settings {
    /// The settings of the kit this run finds ([`Kit::find`]).
    pub fn load() -> Result<Settings, SettingsError> {
        Settings::load_from(Kit::find()?)
    }

    pub fn load_from(kit: Kit) -> Result<Settings, SettingsError> {
        let (course_text, _) = kit.read("course.toml")?;
        let course = Course::parse(&course_text)?;
        let (cohort_text, _) = kit.read("cohort.toml")?;
        let cohort = Cohort::parse(&cohort_text, &course)?;
        Ok(Settings { kit, course, cohort })
    }

    /// The course and cohort as compiled into this binary.
    pub fn compiled_in() -> Settings {
        Settings::load_from(Kit::compiled_in()).expect("the compiled-in course and cohort are checked by the tests")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_becomes_line_and_column() {
        assert_eq!(line_and_column("ab\ncde\nf", 0), (1, 1));
        assert_eq!(line_and_column("ab\ncde\nf", 4), (2, 2));
        assert_eq!(line_and_column("ab\ncde\nf", 7), (3, 1));
    }

    #[test]
    fn a_kit_directory_wins_over_the_compiled_in_copy() {
        let dir = tempfile::tempdir().unwrap();
        let edited = COMPILED_IN[1].1.replace("variant = \"core\"", "variant = \"half-day\"");
        std::fs::write(dir.path().join("cohort.toml"), &edited).unwrap();
        let kit = Kit::at(dir.path());
        let (text, origin) = kit.read("cohort.toml").unwrap();
        assert_eq!(text, edited);
        assert_eq!(origin, Origin::Disk(dir.path().join("cohort.toml")));
        // Not on disk: the compiled-in copy.
        assert_eq!(kit.read("course.toml").unwrap().1, Origin::CompiledIn);
        assert!(matches!(kit.read("no/such.file"), Err(SettingsError::Missing(_))));
        let settings = Settings::load_from(kit).unwrap();
        assert_eq!(settings.cohort.variant, "half-day");
    }

    #[test]
    fn a_broken_file_on_disk_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let broken = COMPILED_IN[1].1.replace("variant = \"core\"", "variant = core");
        std::fs::write(dir.path().join("cohort.toml"), &broken).unwrap();
        let line = broken.lines().position(|l| l.starts_with("variant = core")).unwrap() + 1;
        let err = Settings::load_from(Kit::at(dir.path())).unwrap_err().to_string();
        assert!(err.starts_with(&format!("cohort.toml:{line}:")), "{err}");
    }
}
