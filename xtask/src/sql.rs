//! Runs every ```sql block of the book against a real PostgreSQL: a claim the book makes in SQL
//! must at least run. One server for the whole step (through labs::pg, like the labs), one
//! fresh database per chapter file, blocks in file order in one session, so a chapter's later
//! blocks can use the tables its earlier blocks created. Chapters of activities the cohort skips
//! are not in the book, so their blocks are not run (the step says which).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use labs::pg::{Backend, ProviderConfig, Server};
use tokio_postgres::error::ErrorPosition;
use tokio_postgres::NoTls;

use crate::children;
use crate::markdown::{self, SqlBlock};
use crate::{book, rel};

/// Long enough for any demo; short enough that a block waiting on a lock does not hang the check.
const STATEMENT_TIMEOUT: &str = "60s";

pub fn run(root: &Path, backend: Backend) -> Result<()> {
    let settings = crate::load_settings(root)?;
    let Collected { chapters, left_out } = collect(root, &settings)?;
    for line in &left_out {
        println!("{line}");
    }
    let count: usize = chapters.iter().map(|(_, b)| b.len()).sum();
    if count == 0 {
        println!("no ```sql blocks in book/src (blocks marked `norun` or `ignore` are skipped)");
        return Ok(());
    }
    println!("{count} SQL block(s) in {} chapter file(s)", chapters.len());

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    // On SIGINT, SIGTERM or SIGHUP xtask waits for this hold: the server is removed first.
    let _hold = children::hold("the PostgreSQL server of the book's SQL blocks");
    runtime.block_on(async {
        let work = async {
            let config = ProviderConfig::from_env(Some(backend))?;
            let server = Server::start(&config, &[]).await?;
            println!("PostgreSQL: {}", server.describe());
            let result = run_chapters(root, &server, &chapters).await;
            if let Err(e) = server.shutdown().await {
                eprintln!("warning: could not remove the server: {e}");
            }
            let failures = result?;
            if !failures.is_empty() {
                bail!("{} SQL block(s) failed:\n  {}", failures.len(), failures.join("\n  "));
            }
            Ok(())
        };
        // The work, and with it the server's handle, is dropped when select! returns.
        let interrupted = tokio::select! {
            result = work => return result,
            signal = stop_requested() => signal,
        };
        for line in labs::pg::reap_all().await {
            eprintln!("  {line}");
        }
        bail!("interrupted by {}: the server is removed", children::signal_name(interrupted))
    })
}

/// Resolves once xtask is stopping on a signal, with the signal.
async fn stop_requested() -> libc::c_int {
    loop {
        if let Some(signal) = children::stopping() {
            return signal;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The chapters whose SQL runs, with their blocks (includes expanded), and one line per skipped
/// activity whose blocks do not run.
struct Collected {
    chapters: Vec<(PathBuf, Vec<SqlBlock>)>,
    left_out: Vec<String>,
}

fn collect(root: &Path, settings: &labs::settings::Settings) -> Result<Collected> {
    let src = root.join("book/src");
    let skipped: Vec<(PathBuf, &str)> = settings
        .course
        .activities
        .iter()
        .filter(|a| !settings.cohort.runs(&a.id))
        .map(|a| (src.join(a.folder()), a.id.as_str()))
        .collect();
    let mut left_out: Vec<(usize, &str, String)> = Vec::new();
    let mut chapters: Vec<(PathBuf, Vec<SqlBlock>)> = Vec::new();
    let mut problems = Vec::new();
    for page in book::markdown_files(&src)? {
        let text = std::fs::read_to_string(&page).with_context(|| format!("could not read {}", page.display()))?;
        if let Some((folder, id)) = skipped.iter().find(|(folder, _)| page.starts_with(folder)) {
            let blocks = markdown::sql_blocks(&text).len();
            match left_out.iter_mut().find(|(_, skipped_id, _)| skipped_id == id) {
                Some((count, _, _)) => *count += blocks,
                None => left_out.push((blocks, id, rel(root, folder))),
            }
            continue;
        }
        let dir = page.parent().unwrap_or(&src).to_path_buf();
        let mut blocks = Vec::new();
        for block in markdown::sql_blocks(&text) {
            let read =
                |path: &str| std::fs::read_to_string(dir.join(path)).map_err(|e| format!("could not read {path}: {e}"));
            match markdown::expand_includes(&block.body, read) {
                Ok(body) => blocks.push(SqlBlock { line: block.line, body }),
                Err(e) => problems.push(format!("{}:{}: {e}", rel(root, &page), block.line)),
            }
        }
        if !blocks.is_empty() {
            chapters.push((page, blocks));
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    let left_out = left_out
        .into_iter()
        .map(|(blocks, id, folder)| {
            format!("not run: {blocks} SQL block(s) in {folder}/ (cohort.toml skips {id}, so its chapter is not in the book)")
        })
        .collect();
    Ok(Collected { chapters, left_out })
}

/// Returns one line per failing block: `file:line: the server's error`.
async fn run_chapters(root: &Path, server: &Server, chapters: &[(PathBuf, Vec<SqlBlock>)]) -> Result<Vec<String>> {
    let admin = server.connect().await?;
    let mut failures = Vec::new();
    for (i, (page, blocks)) in chapters.iter().enumerate() {
        let page_name = rel(root, page);
        let database = database_name(i, &page_name);
        admin
            .batch_execute(&format!("CREATE DATABASE \"{database}\""))
            .await
            .with_context(|| format!("could not create database {database}"))?;
        let mut config = server.config();
        config.dbname(&database).options(format!("-c statement_timeout={STATEMENT_TIMEOUT}"));
        let (client, connection) =
            config.connect(NoTls).await.with_context(|| format!("could not connect to database {database}"))?;
        let connection = tokio::spawn(connection);
        let mut ran = 0;
        for block in blocks {
            match client.batch_execute(&block.body).await {
                Ok(()) => ran += 1,
                Err(e) => {
                    failures.push(format!("{page_name}:{}: {}", error_line(block, &e), describe(&e)));
                    break; // later blocks usually build on this one: their errors would be noise
                }
            }
        }
        let skipped = blocks.len() - ran - usize::from(ran < blocks.len());
        println!(
            "{page_name}: {ran} of {} block(s) ran{}",
            blocks.len(),
            if skipped > 0 { format!(", {skipped} not run after the failure") } else { String::new() }
        );
        drop(client);
        let _ = connection.await;
        // With --pg url the server is the user's: leave nothing behind.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"))
            .await
            .with_context(|| format!("could not drop database {database}"))?;
    }
    Ok(failures)
}

/// `book_02_01_log_sleuth_readme_md`: unique per chapter, readable in pg_stat_activity, ≤ 63 bytes.
fn database_name(index: usize, page: &str) -> String {
    let slug: String = page
        .trim_start_matches("book/src/")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    let mut name = format!("book_{:02}_{slug}", index + 1);
    name.truncate(63);
    name
}

/// The file line of the failing statement when the server says where it is, else the fence's.
fn error_line(block: &SqlBlock, error: &tokio_postgres::Error) -> usize {
    match error.as_db_error().and_then(|db| db.position()) {
        Some(ErrorPosition::Original(position)) => {
            let before: String = block.body.chars().take((*position as usize).saturating_sub(1)).collect();
            block.line + 1 + before.matches('\n').count()
        }
        _ => block.line,
    }
}

fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.severity(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" (DETAIL: {detail})"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!(" (HINT: {hint})"));
            }
            text
        }
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A skipped activity's chapter keeps its SQL to itself, and the step says how much it left.
    #[test]
    fn a_skipped_activitys_blocks_are_left_out_with_one_line() {
        let kit = tempfile::tempdir().unwrap();
        for file in ["course.toml", "cohort.toml"] {
            std::fs::copy(crate::test_kit().join(file), kit.path().join(file)).unwrap();
        }
        let write = |path: &str, text: &str| {
            let path = kit.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("book/src/01-log-sleuth/README.md", "# A\n\n```sql\nSELECT 1;\n```\n");
        write("book/src/04-wal-race/README.md", "# B\n\n```sql\nSELECT 2;\n```\n\n```sql\nSELECT 3;\n```\n");
        write("book/src/04-wal-race/bet-sheet.md", "# C\n\n```sql\nSELECT 4;\n```\n");
        let mut settings = labs::settings::Settings::load_from(labs::settings::Kit::at(kit.path())).unwrap();
        let all = collect(kit.path(), &settings).unwrap();
        assert_eq!((all.chapters.len(), all.left_out.len()), (3, 0));
        settings.cohort.skip = vec!["wal-race".into()];
        let some = collect(kit.path(), &settings).unwrap();
        let pages: Vec<String> = some.chapters.iter().map(|(page, _)| rel(kit.path(), page)).collect();
        assert_eq!(pages, vec!["book/src/01-log-sleuth/README.md"]);
        assert_eq!(
            some.left_out,
            vec!["not run: 3 SQL block(s) in book/src/04-wal-race/ (cohort.toml skips wal-race, so its chapter is not in the book)"]
        );
    }

    #[test]
    fn database_names_are_safe_identifiers_and_unique_per_chapter() {
        assert_eq!(database_name(1, "book/src/01-log-sleuth/README.md"), "book_02_01_log_sleuth_readme_md");
        let long = database_name(0, &format!("book/src/{}.md", "x".repeat(100)));
        assert_eq!(long.len(), 63);
        assert!(long.starts_with("book_01_"));
    }
}
