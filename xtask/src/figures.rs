//! `{{#figure FILE "TEXT {} TEXT"}}`: a figure in a chapter that comes from a lab's saved run
//! or snapshot, so the book's own numbers cannot drift from the labs' output.
//!
//! The directive names the file (relative to the page, like `{{#include}}`) and a line pattern
//! in quotes with one `{}`: the first line of the file that holds the text around `{}` gives
//! the figure, the number found where `{}` stands. A file that is gone, or a pattern that no
//! longer matches (the saved run was re-recorded and says something else), fails the build
//! with the page, the directive and what to fix.

use std::path::Path;

const OPEN: &str = "{{#figure ";

/// Replaces every figure directive in `content`; `page_dir` is the page's folder on disk.
pub fn expand(content: &str, page_dir: &Path) -> Result<String, String> {
    let mut out = String::with_capacity(content.len());
    let mut rest = content;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let end = after.find("}}").ok_or_else(|| format!("an unclosed {OPEN}… (no }}}})"))?;
        let directive = &after[..end];
        out.push_str(&figure(directive, page_dir).map_err(|e| format!("{{{{#figure {directive}}}}}: {e}"))?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn figure(directive: &str, page_dir: &Path) -> Result<String, String> {
    let (file, pattern) = directive.trim().split_once(' ').ok_or("expected a file and a quoted pattern")?;
    let pattern =
        pattern.trim().strip_prefix('"').and_then(|p| p.strip_suffix('"')).ok_or("the pattern must be in quotes")?;
    let (before, after) = pattern.split_once("{}").ok_or("the pattern needs one {} where the figure stands")?;
    let path = page_dir.join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    for line in text.lines() {
        let Some(at) = line.find(before) else { continue };
        let tail = &line[at + before.len()..];
        let number: String = tail.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',').collect();
        let number = number.trim_end_matches(['.', ',']).to_string();
        if number.is_empty() || !tail[number.len()..].starts_with(after) {
            continue;
        }
        return Ok(number);
    }
    Err(format!(
        "no line of {} holds \"{pattern}\": the saved run says something else now; reread it and fix the sentence",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_comes_from_its_file_and_a_missing_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("race.txt"), "a\nbest throughput differs up to 41x; WAL differs up to 1.3x.\n")
            .unwrap();
        let page = r#"They differ {{#figure race.txt "differs up to {}x;"}}-fold, and {{#figure race.txt "WAL differs up to {}x."}}."#;
        assert_eq!(expand(page, dir.path()).unwrap(), "They differ 41-fold, and 1.3.");
        let drifted = r#"{{#figure race.txt "differs up to {}x in the first run"}}"#;
        assert!(
            expand(drifted, dir.path()).unwrap_err().contains("no line of"),
            "a drifted figure must fail the build"
        );
        assert!(expand(r#"{{#figure gone.txt "x {}"}}"#, dir.path()).unwrap_err().contains("cannot read"));
        assert!(expand(r#"{{#figure race.txt "no placeholder"}}"#, dir.path()).unwrap_err().contains("one {}"));
    }
}
