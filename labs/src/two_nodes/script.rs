//! The exercise file's ARCHIVE part as psql would run it: one statement at a time, each in its
//! own implicit transaction unless the file says BEGIN, with psql's variables filled in.
//!
//! Why not send the part as one string: PostgreSQL runs a multi-statement query string as one
//! implicit transaction block, and `DETACH PARTITION … CONCURRENTLY` refuses to run in one. The
//! attendee's file must behave here exactly as it would in `psql -f`, so the statements are
//! split the way psql splits them (semicolons outside quotes, dollar quotes and comments) and
//! sent one by one.

use std::fmt;

/// One statement of a script: its text as written and the line it starts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// 1-based line in the whole exercise file.
    pub line: usize,
    pub text: String,
}

impl Statement {
    /// `COPY … TO STDOUT`: its rows come back to the client, which keeps them as the archive.
    pub fn is_copy_to_stdout(&self) -> bool {
        let words: Vec<String> =
            self.text.split_whitespace().map(|w| w.trim_end_matches(';').to_ascii_uppercase()).collect();
        words.first().is_some_and(|w| w == "COPY")
            && words.windows(2).any(|pair| pair[0] == "TO" && pair[1].starts_with("STDOUT"))
    }
}

/// A variable psql would fill in: `:"name"` as an identifier, `:'name'` as a literal, `:name`
/// as it is.
#[derive(Clone, Debug)]
pub struct Variable {
    pub name: &'static str,
    pub value: String,
}

/// A statement that names a variable the lab does not set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownVariable {
    pub line: usize,
    pub written: String,
}

impl fmt::Display for UnknownVariable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {} is not a variable the lab sets", self.line, self.written)
    }
}

/// For each byte of `text`, whether it is SQL code: outside string literals, quoted
/// identifiers, dollar-quoted bodies and comments. Semicolons and variables count only there.
fn code_mask(text: &str) -> Vec<bool> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Code,
        Literal { backslash_escapes: bool },
        Identifier,
        LineComment,
        BlockComment(u32),
    }
    let bytes = text.as_bytes();
    let mut mask = vec![true; bytes.len()];
    let mut state = State::Code;
    let mut dollar_tag: Option<&[u8]> = None;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(tag) = dollar_tag {
            mask[i] = false;
            if bytes[i..].starts_with(tag) {
                for m in &mut mask[i..i + tag.len()] {
                    *m = false;
                }
                i += tag.len();
                dollar_tag = None;
                continue;
            }
            i += 1;
            continue;
        }
        let b = bytes[i];
        match state {
            State::Code => match b {
                b'\'' => {
                    // E'…' strings take backslash escapes; a lone E before the quote says so.
                    let prefixed =
                        i > 0 && matches!(bytes[i - 1], b'e' | b'E') && (i < 2 || !is_identifier_byte(bytes[i - 2]));
                    state = State::Literal { backslash_escapes: prefixed };
                    mask[i] = false;
                }
                b'"' => {
                    state = State::Identifier;
                    mask[i] = false;
                }
                b'-' if bytes.get(i + 1) == Some(&b'-') => {
                    state = State::LineComment;
                    mask[i] = false;
                }
                b'/' if bytes.get(i + 1) == Some(&b'*') => {
                    state = State::BlockComment(1);
                    mask[i] = false;
                    mask[i + 1] = false;
                    i += 2;
                    continue;
                }
                b'$' if i == 0 || !is_identifier_byte(bytes[i - 1]) => {
                    // $tag$ … $tag$ (the tag may be empty); $1 is a parameter, not a quote.
                    let rest = &bytes[i + 1..];
                    let tag_len = rest.iter().take_while(|&&c| is_identifier_byte(c)).count();
                    let starts_with_digit = rest.first().is_some_and(u8::is_ascii_digit);
                    if !starts_with_digit && rest.get(tag_len) == Some(&b'$') {
                        let tag = &bytes[i..i + tag_len + 2];
                        for m in &mut mask[i..i + tag.len()] {
                            *m = false;
                        }
                        i += tag.len();
                        dollar_tag = Some(tag);
                        continue;
                    }
                }
                _ => {}
            },
            State::Literal { backslash_escapes } => {
                mask[i] = false;
                if backslash_escapes && b == b'\\' {
                    if i + 1 < bytes.len() {
                        mask[i + 1] = false;
                    }
                    i += 2;
                    continue;
                }
                if b == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        mask[i + 1] = false;
                        i += 2;
                        continue;
                    }
                    state = State::Code;
                }
            }
            State::Identifier => {
                mask[i] = false;
                if b == b'"' {
                    if bytes.get(i + 1) == Some(&b'"') {
                        mask[i + 1] = false;
                        i += 2;
                        continue;
                    }
                    state = State::Code;
                }
            }
            State::LineComment => {
                mask[i] = false;
                if b == b'\n' {
                    state = State::Code;
                }
            }
            State::BlockComment(depth) => {
                mask[i] = false;
                if b == b'*' && bytes.get(i + 1) == Some(&b'/') {
                    mask[i + 1] = false;
                    state = if depth == 1 { State::Code } else { State::BlockComment(depth - 1) };
                    i += 2;
                    continue;
                }
                if b == b'/' && bytes.get(i + 1) == Some(&b'*') {
                    mask[i + 1] = false;
                    state = State::BlockComment(depth + 1);
                    i += 2;
                    continue;
                }
            }
        }
        i += 1;
    }
    mask
}

fn is_identifier_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Splits `text` (which starts on line `first_line` of the file) into statements at semicolons
/// outside quotes and comments. A statement with nothing but comments and blanks is dropped;
/// the last statement needs no semicolon.
pub fn split(text: &str, first_line: usize) -> Vec<Statement> {
    let mask = code_mask(text);
    let mut statements = Vec::new();
    let mut start = 0;
    let mut push = |from: usize, to: usize| {
        let piece = &text[from..to];
        // Where the code begins: the first byte that is code and not blank.
        let Some(offset) = (from..to).find(|&i| mask[i] && !text.as_bytes()[i].is_ascii_whitespace()).map(|i| i - from)
        else {
            return;
        };
        let line = first_line + text[..from + offset].matches('\n').count();
        statements.push(Statement { line, text: piece[offset..].trim_end().to_string() });
    };
    for (i, &b) in text.as_bytes().iter().enumerate() {
        if b == b';' && mask[i] {
            push(start, i + 1);
            start = i + 1;
        }
    }
    push(start, text.len());
    statements
}

/// The statement with psql's variables filled in, outside quotes and comments only (as psql
/// does). `::` is a cast, not a variable.
pub fn substitute(statement: &Statement, variables: &[Variable]) -> Result<String, UnknownVariable> {
    let text = &statement.text;
    let mask = code_mask(text);
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if bytes[i] != b':' || !mask[i] {
            i += 1;
            continue;
        }
        if bytes.get(i + 1) == Some(&b':') {
            i += 2;
            continue;
        }
        let (quote, name_start) = match bytes.get(i + 1) {
            Some(&q @ (b'"' | b'\'')) => (Some(q), i + 2),
            Some(&c) if c.is_ascii_alphabetic() || c == b'_' => (None, i + 1),
            _ => {
                i += 1;
                continue;
            }
        };
        let name_len = bytes[name_start..].iter().take_while(|&&c| is_identifier_byte(c)).count();
        let name = &text[name_start..name_start + name_len];
        let end = match quote {
            Some(q) if bytes.get(name_start + name_len) == Some(&q) => name_start + name_len + 1,
            Some(_) => {
                i += 1;
                continue;
            }
            None => name_start + name_len,
        };
        let Some(variable) = variables.iter().find(|v| v.name == name) else {
            if quote.is_some() {
                let line = statement.line + text[..i].matches('\n').count();
                return Err(UnknownVariable { line, written: text[i..end].to_string() });
            }
            // psql leaves an unknown :name alone; so does the lab (it may be a cast-free label).
            i = end;
            continue;
        };
        out.push_str(&text[copied..i]);
        match quote {
            Some(b'"') => out.push_str(&quote_identifier(&variable.value)),
            Some(_) => out.push_str(&quote_literal(&variable.value)),
            None => out.push_str(&variable.value),
        }
        i = end;
        copied = end;
    }
    out.push_str(&text[copied..]);
    Ok(out)
}

/// `"name"`, doubling quotes inside: what psql's `:"name"` writes.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'value'`, doubling quotes inside: what psql's `:'name'` writes.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(script: &str) -> Vec<(usize, String)> {
        split(script, 1).into_iter().map(|s| (s.line, s.text)).collect()
    }

    #[test]
    fn splits_at_semicolons_outside_quotes_comments_and_dollar_bodies() {
        let script =
            "-- a comment; not a statement\nSELECT 'a;b', \"c;d\";\n\n/* x; /* nested; */ y; */ SELECT $$ e; $$;\n\
                      DO $body$ BEGIN PERFORM 1; END $body$;\nSELECT E'it\\'s; fine' AS f;\nSELECT 1";
        assert_eq!(
            texts(script),
            vec![
                (2, "SELECT 'a;b', \"c;d\";".to_string()),
                (4, "SELECT $$ e; $$;".to_string()),
                (5, "DO $body$ BEGIN PERFORM 1; END $body$;".to_string()),
                (6, "SELECT E'it\\'s; fine' AS f;".to_string()),
                (7, "SELECT 1".to_string()),
            ]
        );
    }

    #[test]
    fn a_part_of_only_comments_has_no_statement() {
        assert!(split("\n-- nothing here;\n/* nor; here */\n", 10).is_empty());
    }

    #[test]
    fn lines_count_from_where_the_part_starts() {
        let statements = split("\n\nBEGIN;\nCOMMIT;\n", 40);
        assert_eq!(statements.iter().map(|s| s.line).collect::<Vec<_>>(), vec![42, 43]);
    }

    #[test]
    fn fills_in_identifiers_literals_and_plain_values_but_not_casts_or_quoted_text() {
        let vars = [
            Variable { name: "partition", value: "events_2026_01".into() },
            Variable { name: "month_start", value: "2026-01-01 00:00:00+00".into() },
        ];
        let statement = Statement {
            line: 3,
            text: "SELECT :'partition'::regclass, ':\"partition\"', :month_start FROM :\"partition\" -- :'nope'".into(),
        };
        assert_eq!(
            substitute(&statement, &vars).unwrap(),
            "SELECT 'events_2026_01'::regclass, ':\"partition\"', 2026-01-01 00:00:00+00 FROM \"events_2026_01\" -- :'nope'"
        );
    }

    #[test]
    fn a_quoted_variable_the_lab_does_not_set_is_an_error_with_its_line() {
        let statement = Statement { line: 7, text: "SELECT 1,\n :'partiton'".into() };
        let err = substitute(&statement, &[Variable { name: "partition", value: "p".into() }]).unwrap_err();
        assert_eq!(err, UnknownVariable { line: 8, written: ":'partiton'".into() });
    }

    #[test]
    fn quoting_doubles_the_quote_characters() {
        assert_eq!(quote_identifier("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn recognises_copy_to_stdout_only() {
        let s = |t: &str| Statement { line: 1, text: t.into() };
        assert!(s("COPY \"events_2026_01\" TO STDOUT;").is_copy_to_stdout());
        assert!(s("copy (select * from events) to stdout (format csv)").is_copy_to_stdout());
        assert!(!s("COPY events FROM STDIN").is_copy_to_stdout());
        assert!(!s("SELECT 'COPY x TO STDOUT'").is_copy_to_stdout());
    }
}
