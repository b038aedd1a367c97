//! `labs sleuth audit`: finds duplicates, version gaps and conflicts, out-of-order versions and
//! position regressions in a JSON-lines event log.
//!
//! Memory stays bounded by the number of events, not the size of the file: the first pass
//! streams the file and keeps 28 bytes per event (fingerprints, not the events) plus each stream
//! name once; the analysis then sorts those records; a second pass reads back only the lines
//! that have findings, to name their event ids and to compare suspected conflicting duplicates
//! by value. `cargo xtask bench` measures a million-line log.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::findings::{Finding, FindingKind};

/// Why a log could not be audited. Every variant names the file and, where there is one, the line.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{file}: cannot read: {source}")]
    Io { file: PathBuf, source: std::io::Error },
    #[error("{file}: the file is empty; expected one JSON event per line")]
    Empty { file: PathBuf },
    #[error("{file}:{line}:{column}: {reason}")]
    Malformed { file: PathBuf, line: u64, column: u64, reason: String },
    #[error("{file}:{line}: missing field `{field}` (every line needs event_id, stream_id, version, position, type, recorded_at, data)")]
    MissingField { file: PathBuf, line: u64, field: String },
    #[error("{file}:{line}: {reason}")]
    Invalid { file: PathBuf, line: u64, reason: String },
}

/// The result of auditing one log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Audit {
    pub file: PathBuf,
    pub lines: u64,
    pub streams: usize,
    /// Sorted by line, then kind.
    pub findings: Vec<Finding>,
}

impl Audit {
    pub fn count(&self, kind: FindingKind) -> usize {
        self.findings.iter().filter(|f| f.kind == kind).count()
    }

    /// For people: one line per finding (`file:line: kind  explanation`), then a summary.
    /// `name` is how the file is called in the output.
    pub fn to_text(&self, name: &str) -> String {
        let mut out = String::new();
        for f in &self.findings {
            out += &format!("{name}:{}: {:<21} {}\n", f.line, f.kind.as_str(), f.explain());
        }
        let counts: Vec<String> = FindingKind::ALL
            .iter()
            .map(|k| (k, self.count(*k)))
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        let summary = if counts.is_empty() { "no anomalies".to_string() } else { counts.join(", ") };
        out += &format!(
            "{name}: {} lines, {} streams, {} findings ({summary})\n",
            self.lines,
            self.streams,
            self.findings.len()
        );
        out
    }
}

/// One line of the log, borrowed from the read buffer where possible.
#[derive(Deserialize)]
struct LogLine<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    stream_id: Cow<'a, str>,
    version: i64,
    position: i64,
    #[serde(borrow, rename = "type")]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    #[allow(dead_code)] // required by the format; not used by any check
    recorded_at: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// What the analysis keeps of each line: 28 bytes.
#[derive(Clone, Copy)]
struct Record {
    /// 96-bit fingerprint of the event_id: a false duplicate needs two ids to collide, about
    /// 6e-18 for a million events, so the ids themselves need not be kept.
    id: [u32; 3],
    /// Fingerprint of what the writer supplied, as written: stream, version, type and data text.
    /// Equal means the same content; different is confirmed by value in the second pass (the
    /// same JSON with keys in another order is the same content).
    content: u32,
    /// The stream version; the top bit marks a duplicate (versions above 2^31 are refused).
    version: u32,
    stream: u32,
    line: u32,
}

const DUPLICATE: u32 = 1 << 31;

impl Record {
    fn version(&self) -> u32 {
        self.version & !DUPLICATE
    }
    fn is_duplicate(&self) -> bool {
        self.version & DUPLICATE != 0
    }
}

/// Each stream name stored once, in one buffer; the table holds only indexes into it.
#[derive(Default)]
struct StreamNames {
    text: String,
    spans: Vec<(u32, u32)>,
    table: hashbrown::HashTable<u32>,
}

impl StreamNames {
    fn name(&self, index: u32) -> &str {
        let (start, len) = self.spans[index as usize];
        &self.text[start as usize..(start + len) as usize]
    }

    fn intern(&mut self, name: &str) -> u32 {
        let hash = fingerprint(2, name);
        let StreamNames { text, spans, table } = self;
        let name_of = |i: u32| {
            let (start, len) = spans[i as usize];
            &text[start as usize..(start + len) as usize]
        };
        if let Some(&i) = table.find(hash, |&i| name_of(i) == name) {
            return i;
        }
        let i = spans.len() as u32;
        spans.push((text.len() as u32, name.len() as u32));
        text.push_str(name);
        let (text, spans) = (&*text, &*spans);
        table.insert_unique(hash, i, |&j| {
            let (start, len) = spans[j as usize];
            fingerprint(2, &text[start as usize..(start + len) as usize])
        });
        i
    }

    fn len(&self) -> usize {
        self.spans.len()
    }
}

/// Audits one JSON-lines log. `progress` is called every 100,000 lines with the line count.
pub fn audit_file(path: &Path, mut progress: impl FnMut(u64)) -> Result<Audit, AuditError> {
    let io = |source| AuditError::Io { file: path.to_path_buf(), source };
    let file = File::open(path).map_err(io)?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut buf = Vec::with_capacity(1024);
    let mut streams = StreamNames::default();
    let mut records: Vec<Record> = Vec::new();
    let mut findings = Vec::new();
    let mut previous_position: Option<i64> = None;
    let mut line_no: u64 = 0;

    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io)? == 0 {
            break;
        }
        line_no += 1;
        if line_no.is_multiple_of(100_000) {
            progress(line_no);
        }
        let text = trim_line_end(&buf);
        if text.iter().all(u8::is_ascii_whitespace) {
            return Err(AuditError::Malformed {
                file: path.to_path_buf(),
                line: line_no,
                column: 1,
                reason: "blank line; JSON Lines has exactly one event on every line".into(),
            });
        }
        let event: LogLine = serde_json::from_slice(text).map_err(|e| parse_error(path, line_no, &e))?;
        let invalid = |reason: String| AuditError::Invalid { file: path.to_path_buf(), line: line_no, reason };
        let version = u32::try_from(event.version).ok().filter(|v| *v >= 1 && *v < DUPLICATE).ok_or_else(|| {
            invalid(format!("version {} is out of range: stream versions are 1 to 2^31-1", event.version))
        })?;
        let line = u32::try_from(line_no).map_err(|_| invalid("more than 4 billion lines".into()))?;

        if let Some(previous) = previous_position {
            if event.position <= previous {
                let mut f = Finding::new(FindingKind::PositionRegression, line_no, &event.stream_id, &event.event_id);
                f.position = Some(event.position);
                f.previous_position = Some(previous);
                findings.push(f);
            }
        }
        previous_position = Some(event.position);

        let stream = streams.intern(&event.stream_id);
        let (id_low, id_high) = (fingerprint(0, &event.event_id), fingerprint(1, &event.event_id));
        records.push(Record {
            id: [id_low as u32, (id_low >> 32) as u32, id_high as u32],
            content: content_fingerprint(&event.stream_id, version, &event.event_type, event.data.get()),
            version,
            stream,
            line,
        });
    }
    if line_no == 0 {
        return Err(AuditError::Empty { file: path.to_path_buf() });
    }

    find_duplicates(&mut records, &streams, &mut findings);
    find_stream_anomalies(&mut records, &streams, &mut findings);
    drop(records);
    second_pass(path, &mut findings)?;
    findings.sort_by_key(|f| (f.line, f.kind));
    Ok(Audit { file: path.to_path_buf(), lines: line_no, streams: streams.len(), findings })
}

/// Every later occurrence of an event_id is a duplicate of the first: the same content, or not.
/// A different content fingerprint makes a *suspected* conflict; the second pass decides.
fn find_duplicates(records: &mut [Record], streams: &StreamNames, findings: &mut Vec<Finding>) {
    records.sort_unstable_by_key(|r| (r.id, r.line));
    let mut i = 0;
    while i < records.len() {
        let first = records[i];
        let mut j = i + 1;
        while j < records.len() && records[j].id == first.id {
            let r = &mut records[j];
            r.version |= DUPLICATE;
            let kind = if r.content == first.content {
                FindingKind::DuplicateEvent
            } else {
                FindingKind::ConflictingDuplicate
            };
            let mut f = Finding::new(kind, r.line as u64, streams.name(r.stream), "");
            f.first_line = Some(first.line as u64);
            findings.push(f);
            j += 1;
        }
        i = j;
    }
}

/// Per stream, in log order: versions claimed twice, versions after a higher one, and gaps.
/// Duplicates of an event are left out: they are the same event again, not a new claim.
fn find_stream_anomalies(records: &mut [Record], streams: &StreamNames, findings: &mut Vec<Finding>) {
    records.sort_unstable_by_key(|r| (r.stream, r.line));
    let mut claimed: HashMap<u32, u32> = HashMap::new(); // version -> line of the first claim
    for group in records.chunk_by(|a, b| a.stream == b.stream) {
        let stream_id = streams.name(group[0].stream);
        claimed.clear();
        let mut highest = 0u32;
        for r in group.iter().filter(|r| !r.is_duplicate()) {
            let version = r.version();
            if let Some(&first_line) = claimed.get(&version) {
                let mut f = Finding::new(FindingKind::VersionConflict, r.line as u64, stream_id, "");
                f.version = Some(version as u64);
                f.first_line = Some(first_line as u64);
                findings.push(f);
                continue;
            }
            claimed.insert(version, r.line);
            if version < highest {
                let mut f = Finding::new(FindingKind::OutOfOrder, r.line as u64, stream_id, "");
                f.version = Some(version as u64);
                f.after_version = Some(highest as u64);
                findings.push(f);
            }
            highest = highest.max(version);
        }
        // Gaps: versions 1..highest that nobody claimed, reported at the first event above each gap.
        let mut versions: Vec<(u32, u32)> = claimed.iter().map(|(&v, &l)| (v, l)).collect();
        versions.sort_unstable();
        let mut expected = 1u32;
        for (version, line) in versions {
            if version > expected {
                let mut f = Finding::new(FindingKind::VersionGap, line as u64, stream_id, "");
                f.missing_from = Some(expected as u64);
                f.missing_to = Some(version as u64 - 1);
                findings.push(f);
            }
            expected = version + 1;
        }
    }
}

/// Second pass: reads back only the lines that findings name, to fill in their event ids and
/// to compare suspected conflicting duplicates by value (key order in `data` does not matter).
fn second_pass(path: &Path, findings: &mut [Finding]) -> Result<(), AuditError> {
    if findings.is_empty() {
        return Ok(());
    }
    let mut wanted: Vec<u64> = findings.iter().map(|f| f.line).collect();
    wanted.extend(findings.iter().filter(|f| f.kind == FindingKind::ConflictingDuplicate).filter_map(|f| f.first_line));
    wanted.sort_unstable();
    wanted.dedup();
    let io = |source| AuditError::Io { file: path.to_path_buf(), source };
    let mut reader = BufReader::with_capacity(1 << 16, File::open(path).map_err(io)?);
    let mut lines: HashMap<u64, (String, u64)> = HashMap::with_capacity(wanted.len()); // line -> (event_id, content by value)
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    for target in wanted {
        // Skip to the target line without parsing the lines in between.
        while line_no < target {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).map_err(io)? == 0 {
                break;
            }
            line_no += 1;
        }
        let event: LogLine = serde_json::from_slice(trim_line_end(&buf)).map_err(|e| parse_error(path, line_no, &e))?;
        let data: serde_json::Value =
            serde_json::from_str(event.data.get()).map_err(|e| parse_error(path, line_no, &e))?;
        let mut h = std::hash::DefaultHasher::new();
        (&event.stream_id, event.version, &event.event_type).hash(&mut h);
        hash_json(&data, &mut h);
        lines.insert(target, (event.event_id.into_owned(), h.finish()));
    }
    for f in findings.iter_mut() {
        if f.kind == FindingKind::ConflictingDuplicate {
            let by_value = |line: u64| lines.get(&line).map(|(_, content)| *content);
            if by_value(f.line) == f.first_line.and_then(by_value) {
                f.kind = FindingKind::DuplicateEvent;
            }
        }
        f.event_id = lines.get(&f.line).map(|(id, _)| id.clone()).unwrap_or_default();
    }
    Ok(())
}

fn trim_line_end(buf: &[u8]) -> &[u8] {
    let mut end = buf.len();
    while end > 0 && (buf[end - 1] == b'\n' || buf[end - 1] == b'\r') {
        end -= 1;
    }
    &buf[..end]
}

fn parse_error(path: &Path, line: u64, e: &serde_json::Error) -> AuditError {
    let message = e.to_string();
    // serde_json appends " at line 1 column N"; the line is ours, the column is within the line.
    let reason = message.rsplit_once(" at line ").map(|(r, _)| r.to_string()).unwrap_or(message);
    if let Some(field) = reason.strip_prefix("missing field `").and_then(|r| r.strip_suffix('`')) {
        return AuditError::MissingField { file: path.to_path_buf(), line, field: field.to_string() };
    }
    AuditError::Malformed { file: path.to_path_buf(), line, column: e.column() as u64, reason }
}

fn fingerprint(seed: u64, text: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    seed.hash(&mut h);
    text.hash(&mut h);
    h.finish()
}

fn content_fingerprint(stream_id: &str, version: u32, event_type: &str, data: &str) -> u32 {
    let mut h = std::hash::DefaultHasher::new();
    (stream_id, version, event_type, data).hash(&mut h);
    h.finish() as u32
}

/// Hashes JSON by value: object keys in sorted order (serde_json's map is sorted), so
/// `{"a":1,"b":2}` and `{"b":2,"a":1}` are the same content.
fn hash_json(value: &serde_json::Value, h: &mut impl Hasher) {
    use serde_json::Value::*;
    match value {
        Null => 0u8.hash(h),
        Bool(b) => (1u8, b).hash(h),
        Number(n) => match n.as_i64() {
            Some(i) => (2u8, i).hash(h),
            None => (6u8, n.to_string()).hash(h),
        },
        String(s) => (3u8, s).hash(h),
        Array(items) => {
            (4u8, items.len()).hash(h);
            items.iter().for_each(|v| hash_json(v, h));
        }
        Object(map) => {
            (5u8, map.len()).hash(h);
            for (k, v) in map {
                k.hash(h);
                hash_json(v, h);
            }
        }
    }
}
