//! Activity 6, Reflection Wall: the menu of next-sprint changes, each tied to a lab that exists.

use std::path::Path;

use labs::course::Status;
use labs::reflection_wall::{menu_text, MENU};

#[test]
fn menu() {
    insta::assert_snapshot!("menu", menu_text());
}

/// Every change points at evidence that exists: a ready activity, a file that is there, a lab
/// command for a ready activity, a strategy the race knows.
#[test]
fn every_change_is_tied_to_a_lab_that_exists() {
    let course = labs::settings::Settings::compiled_in().course;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut ids = std::collections::HashSet::new();
    for c in MENU {
        assert!(ids.insert(c.id), "{} appears twice", c.id);
        let activity = course.activity(c.activity).unwrap_or_else(|| panic!("{}: no activity {}", c.id, c.activity));
        assert_eq!(activity.status, Status::Ready, "{}: activity {} is a draft", c.id, c.activity);
        let words: Vec<&str> = c.evidence.split_whitespace().collect();
        assert!(c.evidence.starts_with("cargo "), "{}: evidence must be a command", c.id);
        for w in &words {
            if w.starts_with("fixtures/") {
                assert!(root.join(w).exists(), "{}: {w} does not exist", c.id);
            }
        }
        if let Some(i) = words.iter().position(|w| *w == "run" || *w == "check") {
            if words.get(i - 1) == Some(&"labs") {
                let lab = words[i + 1];
                assert_eq!(
                    course.activity(lab).map(|a| a.status),
                    Some(Status::Ready),
                    "{}: `{}` is not a ready lab",
                    c.id,
                    c.evidence
                );
            }
        }
        if let Some(i) = words.iter().position(|w| *w == "--strategies") {
            for s in words[i + 1].split(',') {
                assert!(labs::wal_race::strategy::Strategy::from_id(s).is_some(), "{}: no strategy {s}", c.id);
            }
        }
    }
    // Each ready activity with a lab appears at least once, except the wall itself.
    for a in course.activities.iter().filter(|a| a.status == Status::Ready && a.id != "reflection-wall") {
        assert!(MENU.iter().any(|c| c.activity == a.id), "no change on the menu comes from {}", a.id);
    }
}
