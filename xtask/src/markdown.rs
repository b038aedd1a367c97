//! Edits and reads of the book's Markdown, parsed with the same pulldown-cmark and options
//! mdBook 0.4 uses, so a fence or a link means the same thing to us as to the renderer.
//! Edits splice the source text by byte range, so everything else stays byte for byte.

use std::ops::Range;

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

fn parser(md: &str) -> Parser<'_> {
    // mdbook::utils::new_cmark_parser's options (without smart punctuation, which changes no ranges).
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_HEADING_ATTRIBUTES;
    Parser::new_ext(md, options)
}

/// 1-based line of a byte offset.
fn line_of(md: &str, offset: usize) -> usize {
    md[..offset].matches('\n').count() + 1
}

/// Whether a fenced block's info string is a facilitator note: an mdbook-admonish block with the
/// class `facilitator`, written either `class="facilitator"` (v3) or `admonish tip.facilitator` (v1).
pub fn is_facilitator_block(info: &str) -> bool {
    let mut tokens = info.split_whitespace();
    if tokens.next() != Some("admonish") {
        return false;
    }
    let dotted = tokens.next().is_some_and(|t| t.split('.').skip(1).any(|class| class == "facilitator"));
    dotted || class_attribute(info).is_some_and(|v| v.split_whitespace().any(|class| class == "facilitator"))
}

/// The value of `class="…"` (spaces around `=` allowed) in an info string.
fn class_attribute(info: &str) -> Option<&str> {
    let mut rest = info;
    while let Some(i) = rest.find("class") {
        let preceded_by_space = i == 0 || rest[..i].ends_with(char::is_whitespace);
        let after = rest[i + "class".len()..].trim_start();
        if preceded_by_space {
            if let Some(value) = after.strip_prefix('=').map(str::trim_start).and_then(|v| v.strip_prefix('"')) {
                return value.split('"').next();
            }
        }
        rest = &rest[i + "class".len()..];
    }
    None
}

/// Removes every facilitator note (see [`is_facilitator_block`]) from a page.
pub fn strip_facilitator_blocks(md: &str) -> String {
    let blocks: Vec<Range<usize>> = parser(md)
        .into_offset_iter()
        .filter_map(|(event, range)| match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) if is_facilitator_block(&info) => Some(range),
            _ => None,
        })
        .collect();
    splice(md, blocks.into_iter().map(|r| (r, String::new())))
}

/// What to do with a link, decided from its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEdit {
    Keep,
    /// Replace the link by its text (the target is not in this edition).
    Unlink,
    /// Point it elsewhere (the target's output path differs from its source path).
    Retarget(String),
}

/// Applies `edit` to every Markdown link of a page.
pub fn edit_links(md: &str, mut edit: impl FnMut(&str) -> LinkEdit) -> String {
    struct Open {
        range: Range<usize>,
        dest: String,
        edit: LinkEdit,
        text: String,
    }
    let mut open: Option<Open> = None;
    let mut edits = Vec::new();
    for (event, range) in parser(md).into_offset_iter() {
        match event {
            Event::Start(Tag::Link { dest_url, .. }) => {
                let edit = edit(&dest_url);
                if edit != LinkEdit::Keep {
                    open = Some(Open { range, dest: dest_url.to_string(), edit, text: String::new() });
                }
            }
            Event::Text(t) => open.iter_mut().for_each(|o| o.text.push_str(&t)),
            Event::Code(t) => open.iter_mut().for_each(|o| o.text.push_str(&format!("`{t}`"))),
            Event::End(TagEnd::Link) => {
                if let Some(o) = open.take() {
                    let source = &md[o.range.clone()];
                    let replacement = match o.edit {
                        LinkEdit::Unlink => o.text,
                        // An inline link spells its destination in the source; a reference link does
                        // not, and stays as it is (the link check reports it if it breaks).
                        LinkEdit::Retarget(new) => match source.rfind(&o.dest) {
                            Some(i) => format!("{}{new}{}", &source[..i], &source[i + o.dest.len()..]),
                            None => source.to_string(),
                        },
                        LinkEdit::Keep => unreachable!(),
                    };
                    edits.push((o.range, replacement));
                }
            }
            _ => {}
        }
    }
    splice(md, edits.into_iter())
}

/// Replaces non-overlapping, ordered byte ranges of `md`.
fn splice(md: &str, edits: impl Iterator<Item = (Range<usize>, String)>) -> String {
    let mut out = String::with_capacity(md.len());
    let mut copied = 0;
    for (range, replacement) in edits {
        if range.start < copied {
            continue; // inside a range already replaced
        }
        out.push_str(&md[copied..range.start]);
        out.push_str(&replacement);
        copied = range.end;
    }
    out.push_str(&md[copied..]);
    out
}

/// A heading of a page: `## The lab` is level 2 with text "The lab".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heading {
    pub level: usize,
    pub text: String,
    pub line: usize,
}

/// The page's headings in order, ATX or setext, as the renderer sees them: not those inside code
/// blocks or admonitions, and with inline code kept as written (`` `labs check` ``).
pub fn headings(md: &str) -> Vec<Heading> {
    let mut found = Vec::new();
    let mut open: Option<Heading> = None;
    for (event, range) in parser(md).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                open = Some(Heading { level: level as usize, text: String::new(), line: line_of(md, range.start) })
            }
            Event::Text(t) => open.iter_mut().for_each(|h| h.text.push_str(&t)),
            Event::Code(t) => open.iter_mut().for_each(|h| h.text.push_str(&format!("`{t}`"))),
            Event::End(TagEnd::Heading(_)) => {
                if let Some(mut heading) = open.take() {
                    heading.text = heading.text.trim().to_string();
                    found.push(heading);
                }
            }
            _ => {}
        }
    }
    found
}

/// Whether the page has at least one facilitator note (see [`is_facilitator_block`]).
pub fn has_facilitator_block(md: &str) -> bool {
    parser(md).any(|event| {
        matches!(event, Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) if is_facilitator_block(&info))
    })
}

/// A ```sql block to run, with the line of its opening fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlBlock {
    pub line: usize,
    pub body: String,
}

/// Every ```sql block of a page in order, including those inside admonitions (a facilitator's demo
/// is SQL too), except blocks whose info string says `ignore` or `norun`.
pub fn sql_blocks(md: &str) -> Vec<SqlBlock> {
    let mut blocks = Vec::new();
    collect_sql_blocks(md, 0, &mut blocks);
    blocks
}

fn collect_sql_blocks(md: &str, line_offset: usize, blocks: &mut Vec<SqlBlock>) {
    let mut open: Option<(usize, String, String)> = None; // fence line, info, body
    for (event, range) in parser(md).into_offset_iter() {
        match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) => {
                open = Some((line_offset + line_of(md, range.start), info.to_string(), String::new()))
            }
            Event::Text(t) => open.iter_mut().for_each(|(_, _, body)| body.push_str(&t)),
            Event::End(TagEnd::CodeBlock) => {
                if let Some((line, info, body)) = open.take() {
                    let lang = info.split(|c: char| c == ',' || c.is_whitespace()).next().unwrap_or("");
                    if lang == "sql" && !info.contains("ignore") && !info.contains("norun") {
                        blocks.push(SqlBlock { line, body });
                    } else if lang == "admonish" {
                        // The admonition's body is Markdown starting on the line after its fence.
                        collect_sql_blocks(&body, line, blocks);
                    }
                }
            }
            _ => {}
        }
    }
}

/// An mdBook `{{#include …}}` (or `{{#rustdoc_include …}}`) directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    pub line: usize,
    /// Everything after the directive name: `path`, `path:3:10` or `path:anchor`.
    pub target: String,
    /// The whole directive as written, to replace it.
    pub text: String,
}

impl Include {
    pub fn path(&self) -> &str {
        self.target.split(':').next().unwrap_or("")
    }
}

/// The include directives of a page, skipping escaped ones (`\{{#include …}}`), as mdBook does.
pub fn includes(md: &str) -> Vec<Include> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = md[from..].find("{{").map(|i| i + from) {
        from = i + 2;
        let Some(end) = md[i..].find("}}").map(|e| e + i) else { break };
        if md[..i].ends_with('\\') {
            continue;
        }
        let inner = md[i + 2..end].trim_start();
        for name in ["#include", "#rustdoc_include"] {
            if let Some(rest) = inner.strip_prefix(name).filter(|r| r.starts_with(char::is_whitespace)) {
                let target = rest.split_whitespace().next().unwrap_or("").to_string();
                found.push(Include { line: line_of(md, i), target, text: md[i..end + 2].to_string() });
            }
        }
    }
    found
}

/// Expands `{{#include path[:start[:end]]}}` in a SQL block the way mdBook does, so the SQL that
/// runs is the SQL the reader sees. `read` gets the path as written.
pub fn expand_includes(body: &str, read: impl Fn(&str) -> Result<String, String>) -> Result<String, String> {
    let mut out = body.to_string();
    for include in includes(body) {
        let text = read(include.path())?;
        let lines: Vec<&str> = text.lines().collect();
        let mut parts = include.target.splitn(3, ':').skip(1);
        let first = parts.next().map(str::trim).filter(|p| !p.is_empty());
        // `path:name` is an mdBook anchor: the lines between `ANCHOR: name` and
        // `ANCHOR_END: name`, without any anchor lines (as mdBook renders it).
        if let Some(anchor) = first.filter(|p| p.parse::<usize>().is_err()) {
            let start = lines.iter().position(|l| anchor_name(l, "ANCHOR:") == Some(anchor));
            let end = lines.iter().position(|l| anchor_name(l, "ANCHOR_END:") == Some(anchor));
            let (Some(start), Some(end)) = (start, end) else {
                return Err(format!(
                    "`{}`: no `ANCHOR: {anchor}` ... `ANCHOR_END: {anchor}` in {}",
                    include.text,
                    include.path()
                ));
            };
            let selected: Vec<&str> = lines[start + 1..end.max(start + 1)]
                .iter()
                .filter(|l| anchor_name(l, "ANCHOR:").is_none() && anchor_name(l, "ANCHOR_END:").is_none())
                .copied()
                .collect();
            out = out.replacen(&include.text, &selected.join("\n"), 1);
            continue;
        }
        let number = |p: Option<&str>| -> Result<Option<usize>, String> {
            match p.map(str::trim).filter(|p| !p.is_empty()) {
                None => Ok(None),
                Some(p) => {
                    p.parse::<usize>().map(Some).map_err(|_| format!("`{}`: `{p}` is not a line number", include.text))
                }
            }
        };
        let (start, end) = match (first, parts.next()) {
            (None, None) => (None, None),
            (Some(s), None) => {
                let s = number(Some(s))?;
                (s, s) // `path:3` is line 3 alone
            }
            (s, e) => (number(s)?, number(e)?),
        };
        let from = start.unwrap_or(1).max(1) - 1;
        let to = end.unwrap_or(lines.len()).min(lines.len());
        let selected = lines.get(from..to.max(from)).unwrap_or(&[]).join("\n");
        out = out.replacen(&include.text, &selected, 1);
    }
    Ok(out)
}

/// The anchor a line opens (`marker` "ANCHOR:") or closes ("ANCHOR_END:"), in any comment syntax.
fn anchor_name<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let name = rest.trim_start().split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-')).next()?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# Chapter

Intro with a [solution](solution.md#step-2) and [setup](../setup.md).

```admonish tip title="Facilitator: Ask" class="facilitator"
Ask: who has lost an event?
```

```admonish note title="For everyone"
Events are ordered by `position`.
```

- A list item
  ````admonish warning.facilitator
  Watch the clock.
  ````

Done.
"#;

    #[test]
    fn facilitator_blocks_are_recognised_by_class_only() {
        assert!(is_facilitator_block(r#"admonish tip title="Facilitator: Ask" class="facilitator""#));
        assert!(is_facilitator_block(r#"admonish tip class = "compact facilitator""#));
        assert!(is_facilitator_block("admonish tip.facilitator"));
        assert!(!is_facilitator_block(r#"admonish tip title="Facilitator: Ask""#));
        assert!(!is_facilitator_block(r#"admonish tip class="facilitators""#));
        assert!(!is_facilitator_block(r#"sql class="facilitator""#));
        assert!(!is_facilitator_block(r#"admonish tip title="subclass=\"facilitator\"""#));
    }

    #[test]
    fn stripping_removes_facilitator_notes_and_keeps_everything_else() {
        let stripped = strip_facilitator_blocks(PAGE);
        assert!(!stripped.contains("facilitator"), "{stripped}");
        assert!(!stripped.contains("Ask: who"));
        assert!(!stripped.contains("Watch the clock"));
        assert!(stripped.contains("```admonish note title=\"For everyone\"\nEvents are ordered by `position`.\n```"));
        assert!(stripped.contains("- A list item") && stripped.ends_with("Done.\n"));
    }

    #[test]
    fn links_to_removed_pages_become_plain_text() {
        let edited =
            edit_links(PAGE, |dest| if dest.starts_with("solution.md") { LinkEdit::Unlink } else { LinkEdit::Keep });
        assert!(edited.contains("Intro with a solution and [setup](../setup.md)."), "{edited}");
    }

    #[test]
    fn links_can_be_retargeted_keeping_their_text() {
        let md = "See [the **lab**](01-x/README.md#run) and [ref][r].\n\n[r]: 01-x/README.md\n";
        let edited = edit_links(md, |dest| match dest.strip_prefix("01-x/README.md") {
            Some(rest) => LinkEdit::Retarget(format!("01-x/index.md{rest}")),
            None => LinkEdit::Keep,
        });
        assert!(edited.starts_with("See [the **lab**](01-x/index.md#run) and [ref][r]."), "{edited}");
    }

    #[test]
    fn headings_are_the_rendered_ones_with_level_and_line() {
        let md = "# Title\n\n## The `labs` lab ##\n\n```markdown\n## Not a heading\n```\n\nSetext\n------\n\n\
                  ```admonish note\n## Inside a note\n```\n\n### Deeper\n";
        let found = headings(md);
        let found: Vec<(usize, &str, usize)> = found.iter().map(|h| (h.level, h.text.as_str(), h.line)).collect();
        assert_eq!(found, vec![(1, "Title", 1), (2, "The `labs` lab", 3), (2, "Setext", 9), (3, "Deeper", 16)]);
    }

    #[test]
    fn a_facilitator_note_is_found_in_either_spelling_and_not_in_prose() {
        assert!(has_facilitator_block(PAGE));
        assert!(has_facilitator_block("Text.\n\n```admonish tip.facilitator\nAsk.\n```\n"));
        assert!(!has_facilitator_block("Write `class=\"facilitator\"` on a note.\n\n```admonish tip\nAsk.\n```\n"));
    }

    #[test]
    fn sql_blocks_come_with_their_line_and_skip_norun_and_ignore() {
        let md = "# T\n\n```sql\nSELECT 1;\n```\n\n```sql,norun\nBROKEN;\n```\n\n```sql ignore\nBROKEN;\n```\n\n\
                  ````admonish example title=\"Demo\"\nRun:\n\n```sql\nSELECT 2;\n```\n````\n\n```bash\necho\n```\n";
        let blocks = sql_blocks(md);
        assert_eq!(md.lines().nth(17), Some("```sql"));
        assert_eq!(
            blocks,
            vec![SqlBlock { line: 3, body: "SELECT 1;\n".into() }, SqlBlock { line: 18, body: "SELECT 2;\n".into() }]
        );
    }

    #[test]
    fn includes_are_found_with_their_line_unless_escaped() {
        let md = "a\n{{#include ../../labs/tests/snapshots/x.snap:5:}}\n\\{{#include not/this.md}}\n{{ #rustdoc_include y.rs }}\n{{#run-sheet}}\n";
        let found = includes(md);
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].line, found[0].path()), (2, "../../labs/tests/snapshots/x.snap"));
        assert_eq!((found[1].line, found[1].path()), (4, "y.rs"));
    }

    #[test]
    fn includes_in_sql_expand_line_ranges_like_mdbook() {
        let file = "l1\nl2\nl3\nl4\n";
        let read = |_: &str| Ok(file.to_string());
        assert_eq!(expand_includes("{{#include a.sql}}\n", read).unwrap(), "l1\nl2\nl3\nl4\n");
        assert_eq!(expand_includes("{{#include a.sql:2:3}}", read).unwrap(), "l2\nl3");
        assert_eq!(expand_includes("{{#include a.sql:3}}", read).unwrap(), "l3");
        assert_eq!(expand_includes("{{#include a.sql:3:}}", read).unwrap(), "l3\nl4");
        assert_eq!(expand_includes("{{#include a.sql::2}}", read).unwrap(), "l1\nl2");
        assert!(expand_includes("{{#include a.sql:setup}}", read).unwrap_err().contains("ANCHOR: setup"));
    }

    #[test]
    fn includes_in_sql_expand_anchors_without_their_marker_lines() {
        let file = "-- ANCHOR: all\n-- ANCHOR: table\nCREATE TABLE t ();\n-- ANCHOR_END: table\nSELECT 1;\n-- ANCHOR_END: all\n";
        let read = |_: &str| Ok(file.to_string());
        assert_eq!(expand_includes("{{#include a.sql:table}}", read).unwrap(), "CREATE TABLE t ();");
        assert_eq!(expand_includes("{{#include a.sql:all}}", read).unwrap(), "CREATE TABLE t ();\nSELECT 1;");
    }
}
