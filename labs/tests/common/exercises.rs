//! Exercise files for the checks' tests: the shipped exercise, its solution, and the half-fixes
//! of labs/tests/data/half-fixes/ with the check each must fail.

use std::path::{Path, PathBuf};

use labs::lab::ExerciseFile;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A file of the repository as an exercise to check.
pub fn exercise(relative: &str) -> ExerciseFile {
    ExerciseFile::read(repo().join(relative), relative.to_string()).expect("the exercise file is readable")
}

/// Every half-fix of an activity: (file, the id of the check that must fail it).
pub fn half_fixes(folder: &str) -> Vec<(ExerciseFile, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/half-fixes").join(folder);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no half-fixes in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let shown = path.file_name().unwrap().to_string_lossy().into_owned();
            let file = ExerciseFile::read(path, shown.clone()).unwrap();
            let fails = file
                .sql
                .lines()
                .find_map(|l| l.strip_prefix("-- fails: "))
                .unwrap_or_else(|| panic!("{shown} names no `-- fails:` check"))
                .trim()
                .to_string();
            (file, fails)
        })
        .collect()
}
