//! External links: recorded in one place (`book/external-links.txt`, with the pages citing each),
//! kept in step with the book by `cargo xtask check` (offline), and checked on the network only
//! by `cargo xtask links --online`, which is not part of the test run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use walkdir::WalkDir;

/// The file that records every external link.
pub const RECORD: &str = "book/external-links.txt";

const HEADER: &str = "# Every external link the book cites, and the pages citing it.\n\
# Written by `cargo xtask links --update`; `cargo xtask check` fails when it is out of date;\n\
# `cargo xtask links --online` checks that each still answers (needs the network).\n";

/// `http(s)://` targets of a markdown page: inline links, reference definitions and autolinks,
/// outside fenced code blocks.
pub fn urls(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("http") {
            let before = &rest[..i];
            let candidate = &rest[i..];
            rest = &rest[i + 4..];
            if !(candidate.starts_with("https://") || candidate.starts_with("http://")) {
                continue;
            }
            // A link target follows `](`, `]: ` or `<`; a bare URL in text is not a link.
            let is_target = before.ends_with("](") || before.trim_end().ends_with("]:") || before.ends_with('<');
            if !is_target {
                continue;
            }
            let end = candidate
                .find(|c: char| c.is_whitespace() || c == ')' || c == '>' || c == '"')
                .unwrap_or(candidate.len());
            out.push(candidate[..end].to_string());
        }
    }
    out
}

/// Every external URL under book/src, with the pages (relative to book/src) citing it.
pub fn collect(root: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let src = root.join("book/src");
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in WalkDir::new(&src).sort_by_file_name() {
        let entry = entry?;
        if entry.path().extension().is_some_and(|e| e == "md") {
            let text =
                std::fs::read_to_string(entry.path()).with_context(|| format!("reading {}", entry.path().display()))?;
            let page = entry.path().strip_prefix(&src)?.display().to_string();
            for url in urls(&text) {
                found.entry(url).or_default().insert(page.clone());
            }
            // The poll page's links come from the myth bank, at build time.
            if text.contains(crate::poll::DIRECTIVE) {
                let bank = crate::load_bank(root)?;
                for url in crate::poll::urls(&bank) {
                    found.entry(url).or_default().insert(page.clone());
                }
            }
        }
    }
    Ok(found)
}

pub fn render(found: &BTreeMap<String, BTreeSet<String>>) -> String {
    let mut out = String::from(HEADER);
    for (url, pages) in found {
        out += &format!("{url}  {}\n", pages.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    out
}

/// Offline: the record lists exactly the links the book has, each with its pages.
pub fn check_recorded(root: &Path) -> Result<usize> {
    let found = collect(root)?;
    let recorded = std::fs::read_to_string(root.join(RECORD)).unwrap_or_default();
    if recorded != render(&found) {
        let listed: BTreeSet<&str> =
            recorded.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_whitespace().next()).collect();
        let new: Vec<&String> = found.keys().filter(|u| !listed.contains(u.as_str())).collect();
        let gone: Vec<&&str> = listed.iter().filter(|u| !found.contains_key(**u)).collect();
        bail!(
            "{RECORD} is out of date ({} new, {} no longer cited, or pages changed): run `cargo xtask links --update`{}",
            new.len(),
            gone.len(),
            new.iter().take(3).map(|u| format!("\n  new: {u}")).collect::<String>()
        );
    }
    Ok(found.len())
}

pub fn update(root: &Path) -> Result<usize> {
    let found = collect(root)?;
    std::fs::write(root.join(RECORD), render(&found))?;
    Ok(found.len())
}

/// Online: asks each recorded URL for its status with curl (following redirects).
pub fn check_online(root: &Path) -> Result<()> {
    let found = collect(root)?;
    let mut failed = Vec::new();
    for (i, url) in found.keys().enumerate() {
        let out = crate::children::output(
            Command::new("curl").args([
                "-sS",
                "-o",
                "/dev/null",
                "-L",
                "--max-time",
                "20",
                "-A",
                "Mozilla/5.0 (workshop link check)",
                "-w",
                "%{http_code}",
                url,
            ]),
            Some(std::time::Duration::from_secs(30)),
        )
        .context("running curl (needed for the online link check)")?;
        let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let ok = out.status.success() && code.starts_with(['2', '3']);
        println!(
            "[{}/{}] {} {url}",
            i + 1,
            found.len(),
            if ok { code.clone() } else { format!("FAIL {code} {}", String::from_utf8_lossy(&out.stderr).trim()) }
        );
        if !ok {
            failed.push(url.clone());
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} external links did not answer with 2xx or 3xx:\n  {}",
            failed.len(),
            found.len(),
            failed.join("\n  ")
        );
    }
    println!("all {} external links answer", found.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_are_found_and_code_and_prose_are_not() {
        let page = "See [docs](https://www.postgresql.org/docs/current/sql-notify.html) and <https://a.example/x>.\n\
                    \n[seq]: https://www.postgresql.org/docs/current/functions-sequence.html\n\
                    Plain text https://not.a.link/ stays.\n\
                    ```sh\ncurl https://in.code/\n```\n";
        assert_eq!(
            urls(page),
            vec![
                "https://www.postgresql.org/docs/current/sql-notify.html",
                "https://a.example/x",
                "https://www.postgresql.org/docs/current/functions-sequence.html"
            ]
        );
    }
}
