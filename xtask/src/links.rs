//! Internal link check of a built book: every relative href/src resolves to a file in the output,
//! and every #fragment to an id on the target page. External links are not checked here.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use walkdir::WalkDir;

/// Values of the `href` and `src` attributes of a page, entities decoded.
pub fn references(html: &str) -> Vec<String> {
    ["href", "src"].iter().flat_map(|name| attribute_values(html, name)).collect()
}

/// Values of the `id` and `name` attributes: the fragments a page offers.
pub fn anchors(html: &str) -> HashSet<String> {
    ["id", "name"].iter().flat_map(|name| attribute_values(html, name)).collect()
}

/// `name="value"` or `name='value'` where `name` starts an attribute (preceded by whitespace).
pub fn attribute_values(html: &str, name: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut from = 0;
    while let Some(i) = html[from..].find(name).map(|i| i + from) {
        from = i + name.len();
        if !html[..i].ends_with(|c: char| c.is_ascii_whitespace()) {
            continue;
        }
        let rest = html[from..].trim_start_matches(' ');
        let Some(rest) = rest.strip_prefix('=') else { continue };
        let rest = rest.trim_start_matches(' ');
        let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else { continue };
        if let Some(end) = rest[1..].find(quote) {
            values.push(decode_entities(&rest[1..1 + end]));
        }
    }
    values
}

fn decode_entities(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(b) = s.get(i + 1..i + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a reference on a page points.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// http:, https:, mailto:, data:, protocol-relative…: not checked here.
    External,
    /// A file of the output (relative to its root), and maybe a fragment on it.
    File { path: PathBuf, fragment: Option<String> },
}

/// Resolves `url` found on `page` (both relative to the output root).
pub fn resolve(page: &Path, url: &str) -> Result<Target, String> {
    let has_scheme = url.find(':').is_some_and(|i| {
        url[..i].chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && url[..i].starts_with(|c: char| c.is_ascii_alphabetic())
    });
    if has_scheme || url.starts_with("//") {
        return Ok(Target::External);
    }
    let (url, fragment) = match url.split_once('#') {
        Some((u, f)) => (u, (!f.is_empty()).then(|| percent_decode(f))),
        None => (url, None),
    };
    let url = url.split('?').next().unwrap_or("");
    if url.is_empty() {
        return Ok(Target::File { path: page.to_path_buf(), fragment });
    }
    // The book must work opened from a file (file://) and under any site prefix.
    if url.starts_with('/') {
        return Err("a root-absolute link: it breaks under file:// and below a site prefix; make it relative".into());
    }
    if url.ends_with('/') {
        return Err(
            "a link to a directory: under file:// the browser shows a file listing; link to its index.html".into()
        );
    }
    let mut path = PathBuf::new();
    for component in page.parent().unwrap_or(Path::new("")).join(percent_decode(url)).components() {
        match component {
            // The guard climbs one level; a `..` with nothing left to climb leaves the book.
            Component::ParentDir if !path.pop() => return Err("points outside the book".into()),
            Component::Normal(c) => path.push(c),
            _ => {}
        }
    }
    Ok(Target::File { path, fragment })
}

/// Checks every HTML page under `out`; returns one line per broken reference.
pub fn check(out: &Path) -> Result<Vec<String>> {
    let mut pages = Vec::new();
    for entry in WalkDir::new(out).sort_by_file_name() {
        let entry = entry.with_context(|| format!("could not list {}", out.display()))?;
        let rel = entry.path().strip_prefix(out).unwrap_or(entry.path()).to_path_buf();
        // 404.html is served from the site root with <base href="/">: its links are not relative.
        if rel.extension().is_some_and(|e| e == "html") && rel != Path::new("404.html") {
            pages.push(rel);
        }
    }
    let mut anchors_of: HashMap<PathBuf, HashSet<String>> = HashMap::new();
    let mut problems = Vec::new();
    for page in &pages {
        let html =
            std::fs::read_to_string(out.join(page)).with_context(|| format!("could not read {}", page.display()))?;
        anchors_of.entry(page.clone()).or_insert_with(|| anchors(&html));
        for url in references(&html) {
            let broken = match resolve(page, &url) {
                Ok(Target::External) => continue,
                Err(reason) => reason,
                Ok(Target::File { path, fragment }) => {
                    let file = out.join(&path);
                    if !file.is_file() {
                        format!("no file {}", path.display())
                    } else if let Some(fragment) = fragment.filter(|_| path.extension().is_some_and(|e| e == "html")) {
                        let ids = match anchors_of.get(&path) {
                            Some(ids) => ids,
                            None => {
                                let text = std::fs::read_to_string(&file).unwrap_or_default();
                                anchors_of.entry(path.clone()).or_insert_with(|| anchors(&text))
                            }
                        };
                        if ids.contains(&fragment) {
                            continue;
                        }
                        format!("no id \"{fragment}\" in {}", path.display())
                    } else {
                        continue;
                    }
                }
            };
            problems.push(format!("{}: broken link `{url}`: {broken}", page.display()));
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_found_in_both_quote_styles_and_decoded() {
        let html = r#"<a class="x" href="a.html?x=1&amp;y=2#f">a</a><img src='img/p.png'><p>href="not-an-attribute"</p><div data-href="no">"#;
        assert_eq!(references(html), vec!["a.html?x=1&y=2#f".to_string(), "img/p.png".to_string()]);
        assert!(anchors(r#"<h2 id="watermark"><a name="old">"#).contains("old"));
    }

    #[test]
    fn relative_links_resolve_against_the_page() {
        let page = Path::new("01-log-sleuth/index.html");
        let file = |p: &str, f: Option<&str>| Ok(Target::File { path: p.into(), fragment: f.map(String::from) });
        assert_eq!(resolve(page, "solution.html#step-2"), file("01-log-sleuth/solution.html", Some("step-2")));
        assert_eq!(resolve(page, "../run-sheet.html"), file("run-sheet.html", None));
        assert_eq!(resolve(page, "#the-hook"), file("01-log-sleuth/index.html", Some("the-hook")));
        assert!(resolve(page, "../").unwrap_err().contains("directory"));
        assert!(resolve(page, "/index.html").unwrap_err().contains("root-absolute"));
        assert_eq!(resolve(page, "my%20file.txt"), file("01-log-sleuth/my file.txt", None));
        assert_eq!(resolve(page, "https://www.postgresql.org/docs/15/"), Ok(Target::External));
        assert_eq!(resolve(page, "mailto:x@y"), Ok(Target::External));
        assert!(resolve(page, "../../etc/passwd").is_err());
    }

    #[test]
    fn broken_files_and_fragments_are_reported() {
        let dir = std::env::temp_dir().join(format!("xtask-links-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(
            dir.join("index.html"),
            r##"<a href="a/page.html#there">ok</a> <a href="a/page.html#gone">x</a> <a href="missing.html">y</a>"##,
        )
        .unwrap();
        std::fs::write(dir.join("a/page.html"), r##"<h1 id="there">T</h1><a href="../index.html">up</a>"##).unwrap();
        let problems = check(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("`a/page.html#gone`: no id \"gone\" in a/page.html"), "{problems:?}");
        assert!(problems[1].contains("`missing.html`: no file missing.html"), "{problems:?}");
    }
}
