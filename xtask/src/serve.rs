//! `cargo xtask serve`: serves target/book on 127.0.0.1 and rebuilds it when its sources change.
//!
//! Changes are found by polling modification times once a second rather than by file-system
//! events, which do not arrive on WSL2 mounts and network drives.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use walkdir::WalkDir;

use crate::book::{self, Edition};
use crate::{cargo, minutes, run_command_within};

pub fn run(root: &Path, port: u16) -> Result<()> {
    run_command_within(cargo(root).args(["build", "-p", "labs"]), minutes(60))?;
    println!("The labs are ready: `cargo labs list` shows them, `cargo labs run <id>` runs one.");

    let out = Edition::Full.default_out(root);
    let watched = watched(root);
    let mut seen = fingerprint(&watched);
    rebuild(root, &out, "built");

    let server = tiny_http::Server::http(("127.0.0.1", port)).map_err(|e| {
        anyhow!("could not listen on 127.0.0.1:{port} ({e}); is another server using it? Try --port {}", port + 1)
    })?;
    let site = out.clone();
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let response = respond(&site, request.url());
            let _ = request.respond(response);
        }
    });
    println!(
        "Serving the book at http://127.0.0.1:{port}/ ; rebuilding when {} change. Ctrl-C stops.",
        WATCHED.join(", ")
    );

    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = fingerprint(&watched);
        if now != seen {
            seen = now;
            rebuild(root, &out, "rebuilt");
        }
    }
}

/// What the book is built from, relative to the kit's root: its pages, the course and the cohort
/// (run sheet, poll, skipped chapters), and the files its pages include (fixtures, snapshots,
/// the exercises and their solutions).
const WATCHED: [&str; 6] = ["book/", "course.toml", "cohort.toml", "fixtures/", "exercises/", "labs/tests/snapshots/"];

fn watched(root: &Path) -> Vec<PathBuf> {
    WATCHED.iter().map(|p| root.join(p.trim_end_matches('/'))).collect()
}

/// A build error is printed, not fatal: the author fixes the page and the next save rebuilds.
fn rebuild(root: &Path, out: &Path, done: &str) {
    let started = Instant::now();
    match book::build(root, Edition::Full, out) {
        Ok(()) => {
            let hint = if done == "rebuilt" { "; reload the page" } else { "" };
            println!("book {done} in {:.1} s{hint}", started.elapsed().as_secs_f64())
        }
        Err(e) => eprintln!("error: the book did not build: {e:#}"),
    }
}

/// Changes whenever a file under `paths` is added, removed, renamed or modified.
fn fingerprint(paths: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for path in paths {
        for entry in WalkDir::new(path).sort_by_file_name().into_iter().filter_map(|e| e.ok()) {
            // Written by the build itself (once per mdbook-admonish version): not a source change.
            if entry.file_name() == "mdbook-admonish.css" {
                continue;
            }
            if let Ok(meta) = entry.metadata() {
                (entry.path(), meta.len(), meta.modified().ok()).hash(&mut hasher);
            }
        }
    }
    hasher.finish()
}

fn respond(site: &Path, url: &str) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let found = local_path(site, url).and_then(|path| std::fs::read(&path).ok().map(|bytes| (path, bytes)));
    let (status, path, bytes) = match found {
        Some((path, bytes)) => (200, path, bytes),
        None => {
            (404, site.join("404.html"), std::fs::read(site.join("404.html")).unwrap_or_else(|_| b"not found".to_vec()))
        }
    };
    let content_type = match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "txt" | "md" | "sql" | "jsonl" | "snap" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    };
    let header = tiny_http::Header::from_bytes("Content-Type", content_type).expect("a valid header");
    tiny_http::Response::from_data(bytes).with_status_code(status).with_header(header)
}

/// The file for a request path, never outside the site; directories serve their index.html.
fn local_path(site: &Path, url: &str) -> Option<PathBuf> {
    let path = url.split(['?', '#']).next().unwrap_or("/");
    let decoded = crate::links::percent_decode(path);
    let relative = Path::new(decoded.trim_start_matches('/'));
    if relative.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let mut file = site.join(relative);
    if file.is_dir() {
        file.push("index.html");
    }
    file.is_file().then_some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An instructor's edit to cohort.toml, or an edited exercise the book includes, rebuilds the
    /// book; a file the book does not read (target/) does not.
    #[test]
    fn cohort_and_exercise_edits_change_the_fingerprint() {
        let root = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("cohort.toml", "[cohort]\nvariant = \"core\"\n");
        write("exercises/01-log-sleuth/poll.sql", "select 1;\n");
        let files = watched(root.path());
        let before = fingerprint(&files);
        write("target/book/index.html", "built");
        assert_eq!(fingerprint(&files), before, "output under target/ is not a source");
        write("cohort.toml", "[cohort]\nvariant = \"half-day\"\n");
        let after_cohort = fingerprint(&files);
        assert_ne!(after_cohort, before, "a cohort.toml edit went unnoticed");
        write("exercises/01-log-sleuth/poll.solution.sql", "select 2;\n");
        assert_ne!(fingerprint(&files), after_cohort, "a new exercise file went unnoticed");
    }
}
