//! The facilitator's remote materials, generated from the course, the cohort and the myth bank
//! so they follow the session: a Zoom poll file, Excalidraw boards for Schema Sketch and the
//! Reflection Wall, and the Outage decision sheet as a document to copy once per remote table.
//! `cargo xtask handouts` puts them under `materials/` in facilitator.zip.
//!
//! Every vendor format here was checked against the vendor's own material (links in the book's
//! "Remote materials" section); a tool whose import format could not be checked gets no file.

use labs::course::{Cohort, Course};
use labs::mythbusting::Bank;
use serde_json::{json, Value};

/// Files of the bundle's `materials/` folder: (path inside it, content).
pub fn files(course: &Course, cohort: &Cohort, bank: &Bank) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if course.in_session(cohort, "mythbusting") {
        out.push(("poll/zoom-create-poll.json".into(), zoom_poll(bank)));
    }
    let remote_pairs = cohort.expected.remote.div_ceil(2).max(1);
    if course.in_session(cohort, "schema-sketch") {
        out.push(("boards/schema-sketch.excalidraw".into(), schema_sketch_board(remote_pairs)));
    }
    if cohort.runs("reflection-wall") {
        out.push(("boards/reflection-wall.excalidraw".into(), reflection_wall_board(course, cohort)));
    }
    if course.in_session(cohort, "outage") {
        out.push(("docs/outage-decision-sheet.md".into(), OUTAGE_DECISION_SHEET.to_string()));
    }
    out
}

/// The poll's myths as the body of Zoom's "Create a meeting poll" API call: one single-choice
/// question per myth, True or False, in the poll's order. `poll_type` 1 is a plain poll and
/// `type` "single" a single-choice question, in the words of Zoom's API reference.
pub fn zoom_poll(bank: &Bank) -> String {
    let questions: Vec<Value> = bank
        .poll
        .iter()
        .filter_map(|id| bank.get(id))
        .map(|m| {
            json!({
                "name": format!("True or false: {}", m.statement),
                "type": "single",
                "answer_required": false,
                "answers": ["True", "False"],
            })
        })
        .collect();
    let poll = json!({
        "title": "Mythbusting: PostgreSQL Under Pressure",
        "poll_type": 1,
        "anonymous": true,
        "questions": questions,
    });
    serde_json::to_string_pretty(&poll).expect("a poll serializes") + "\n"
}

/// Builds an Excalidraw scene: frames holding labelled boxes and text. The file format is the
/// one Excalidraw saves (`type: "excalidraw"`, `version: 2`, `elements`, `appState`, `files`;
/// excalidraw/excalidraw packages/excalidraw/data/json.ts, `serializeAsJSON`), and every element
/// carries the properties Excalidraw's loader restores (data/restore.ts, `restoreElement`).
struct Scene {
    elements: Vec<Value>,
}

impl Scene {
    fn new() -> Scene {
        Scene { elements: Vec::new() }
    }

    /// Properties every element has; ids and seeds are counters so the same input gives the same file.
    fn base(&self, kind: &str, x: f64, y: f64, width: f64, height: f64, frame: Option<&str>) -> Value {
        let n = self.elements.len() + 1;
        json!({
            "id": format!("{kind}-{n}"),
            "type": kind,
            "x": x, "y": y, "width": width, "height": height, "angle": 0,
            "strokeColor": "#1e1e1e", "backgroundColor": "transparent", "fillStyle": "solid",
            "strokeWidth": 1, "strokeStyle": "solid", "roughness": 0, "opacity": 100,
            "groupIds": [], "frameId": frame, "index": null, "roundness": null,
            "seed": n, "version": 1, "versionNonce": n, "isDeleted": false,
            "boundElements": [], "updated": 1, "link": null, "locked": false,
        })
    }

    fn frame(&mut self, name: &str, x: f64, y: f64, width: f64, height: f64) -> String {
        let mut e = self.base("frame", x, y, width, height, None);
        e["name"] = json!(name);
        let id = e["id"].as_str().unwrap_or_default().to_string();
        self.elements.push(e);
        id
    }

    fn text(&mut self, text: &str, x: f64, y: f64, size: f64, frame: Option<&str>) {
        let lines = text.lines().count().max(1) as f64;
        let longest = text.lines().map(|l| l.chars().count()).max().unwrap_or(1) as f64;
        let mut e = self.base("text", x, y, longest * size * 0.55, lines * size * 1.25, frame);
        for (key, value) in [
            ("text", json!(text)),
            ("originalText", json!(text)),
            ("fontSize", json!(size)),
            ("fontFamily", json!(1)),
            ("textAlign", json!("left")),
            ("verticalAlign", json!("top")),
            ("containerId", Value::Null),
            ("lineHeight", json!(1.25)),
            ("autoResize", json!(true)),
        ] {
            e[key] = value;
        }
        self.elements.push(e);
    }

    /// A box with its label above it, for people to write in.
    fn labelled_box(&mut self, label: &str, x: f64, y: f64, width: f64, height: f64, frame: &str) {
        self.text(label, x, y, 16.0, Some(frame));
        let e = self.base("rectangle", x, y + 24.0, width, height, Some(frame));
        self.elements.push(e);
    }

    fn to_json(&self) -> String {
        let scene = json!({
            "type": "excalidraw",
            "version": 2,
            "source": "pg-event-sourcing-workshop (cargo xtask handouts)",
            "elements": self.elements,
            "appState": { "gridSize": null, "viewBackgroundColor": "#ffffff" },
            "files": {},
        });
        serde_json::to_string_pretty(&scene).expect("a scene serializes") + "\n"
    }
}

/// The cells a pair answers in Schema Sketch's five minutes (from the printed template's boxes 2, 5
/// and 7), each with its question.
const SCHEMA_BOXES: [(&str, &str); 3] = [
    ("2. Event types", "Three events: each with its stream and its fields"),
    (
        "5. A transfer of 30.00 from alice to bob",
        "Where is the overdraft rule checked, and what does it read?\nWhat does the second teller get, and do next?\nIf the process dies halfway, what is in the database?",
    ),
    ("7. Readers", "A reader's checkpoint is..."),
];

/// One frame per remote pair with the three boxes, and a last frame for designs A, B and C.
pub fn schema_sketch_board(pairs: u32) -> String {
    let mut scene = Scene::new();
    let (width, height, gap) = (760.0, 760.0, 80.0);
    for pair in 0..=pairs {
        let x = pair as f64 * (width + gap);
        if pair == pairs {
            let frame = scene.frame("Reference designs A, B, C", x, 0.0, width, height);
            for (i, design) in ["Design A", "Design B", "Design C"].iter().enumerate() {
                scene.labelled_box(design, x + 30.0, 30.0 + i as f64 * 240.0, width - 60.0, 180.0, &frame);
            }
            continue;
        }
        let frame = scene.frame(&format!("Pair {}", pair + 1), x, 0.0, width, height);
        for (i, (title, prompt)) in SCHEMA_BOXES.iter().enumerate() {
            let y = 30.0 + i as f64 * 240.0;
            scene.labelled_box(title, x + 30.0, y, width - 60.0, 180.0, &frame);
            scene.text(prompt, x + 40.0, y + 34.0, 14.0, Some(&frame));
        }
    }
    scene.to_json()
}

/// One column per activity the cohort runs that has menu items, plus "my own", and the prompt.
pub fn reflection_wall_board(course: &Course, cohort: &Cohort) -> String {
    let mut scene = Scene::new();
    scene.text(labs::reflection_wall::PROMPT, 0.0, -80.0, 24.0, None);
    let mut columns: Vec<(String, Vec<String>)> = course
        .activities
        .iter()
        .filter(|a| cohort.runs(&a.id))
        .filter_map(|a| {
            let items: Vec<String> = labs::reflection_wall::MENU
                .iter()
                .filter(|c| c.activity == a.id)
                .map(|c| format!("{}: {}", c.id, c.change))
                .collect();
            (!items.is_empty()).then(|| (a.id.clone(), items))
        })
        .collect();
    columns.push(("my own".into(), vec!["The change, and the failure it prevents".into()]));
    let (width, height, gap) = (420.0, 900.0, 40.0);
    for (i, (name, items)) in columns.iter().enumerate() {
        let x = i as f64 * (width + gap);
        let frame = scene.frame(name, x, 0.0, width, height);
        // The menu items, wrapped, at the top of the column; stickies go below.
        let menu: Vec<String> = items.iter().map(|item| wrap(item, 48)).collect();
        scene.text(&menu.join("\n\n"), x + 16.0, 16.0, 12.0, Some(&frame));
    }
    scene.to_json()
}

/// Wraps text at `width` characters on spaces.
fn wrap(text: &str, width: usize) -> String {
    let mut lines: Vec<String> = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line at least");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines.join("\n")
}

/// The Outage decision sheet as a document: one copy per remote table, shared with its room.
/// The same four prompts as the printed sheet (book/src/05-outage/role-cards.md).
pub const OUTAGE_DECISION_SHEET: &str = "# Outage: decision sheet\n\n\
Copy this document once per remote table, share it with the table's breakout room, and post its\n\
link in the chat. The table writes its three decisions here; one table reads its sheet at the reveal.\n\n\
Table or room: ______________________ Scenario: ______________________\n\n\
Roles: Ops: ____________ Dev: ____________ Product Owner: ____________\n\n\
## Ops: writes reopen when… and until then we keep aside…\n\n\n\n\
## Dev: the consumer resumes from… and lost orders come back from…\n\n\n\n\
## Product Owner: customers are told… and next sprint we change…\n\n\n\n\
## Gone for good: what nobody at this table could recover.\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields of Zoom's "Create a meeting poll" request body (`POST /meetings/{meetingId}/polls`),
    /// as Zoom's own SDK types them: `MeetingsCreateMeetingPollRequestBody` in zoom/rivet-javascript
    /// (meetings/meetings.d.ts at commit 7309ea3). The poll file uses no other field.
    const ZOOM_POLL_FIELDS: [&str; 4] = ["anonymous", "poll_type", "questions", "title"];
    /// The fields of one question in the same type.
    const ZOOM_QUESTION_FIELDS: [&str; 5] = ["answer_required", "answers", "name", "right_answers", "type"];

    fn bank() -> Bank {
        Bank::parse(labs::mythbusting::MYTHS_TOML, &["replication-no-loss".into(), "update-less-wal".into()]).unwrap()
    }

    #[test]
    fn the_zoom_poll_uses_only_fields_of_zooms_request_body_and_follows_the_poll() {
        let poll: Value = serde_json::from_str(&zoom_poll(&bank())).unwrap();
        let fields: Vec<&str> = poll.as_object().unwrap().keys().map(String::as_str).collect();
        assert!(fields.iter().all(|f| ZOOM_POLL_FIELDS.contains(f)), "{fields:?}");
        let questions = poll["questions"].as_array().unwrap();
        assert_eq!(questions.len(), 2);
        for q in questions {
            let keys: Vec<&str> = q.as_object().unwrap().keys().map(String::as_str).collect();
            assert!(keys.iter().all(|k| ZOOM_QUESTION_FIELDS.contains(k)), "{keys:?}");
            assert_eq!(q["type"], "single");
            assert_eq!(q["answers"], json!(["True", "False"]));
        }
        let first = bank().get("replication-no-loss").unwrap().statement.clone();
        assert_eq!(questions[0]["name"], format!("True or false: {first}"));
        assert_eq!(poll["poll_type"], 1);
    }

    /// What Excalidraw's loader accepts (`isValidExcalidrawData` in data/json.ts) and the
    /// element properties it restores; frames own the elements inside them.
    fn assert_excalidraw(text: &str) -> Vec<Value> {
        let scene: Value = serde_json::from_str(text).unwrap();
        assert_eq!(scene["type"], "excalidraw");
        assert_eq!(scene["version"], 2);
        assert!(scene["appState"].is_object() && scene["files"].is_object());
        let elements = scene["elements"].as_array().unwrap().clone();
        let frames: Vec<&str> =
            elements.iter().filter(|e| e["type"] == "frame").map(|e| e["id"].as_str().unwrap()).collect();
        let mut ids = std::collections::HashSet::new();
        for e in &elements {
            assert!(ids.insert(e["id"].as_str().unwrap().to_string()), "duplicate id {}", e["id"]);
            assert!(["frame", "rectangle", "text"].contains(&e["type"].as_str().unwrap()), "{e}");
            for key in ["x", "y", "width", "height", "angle", "seed", "version", "versionNonce"] {
                assert!(e[key].is_number(), "{key} of {e}");
            }
            if let Some(frame) = e["frameId"].as_str() {
                assert!(frames.contains(&frame), "{e}");
            }
            if e["type"] == "text" {
                assert_eq!(e["text"], e["originalText"]);
                assert!(e["fontSize"].is_number() && e["containerId"].is_null());
            }
        }
        elements
    }

    #[test]
    fn the_schema_sketch_board_has_a_frame_per_remote_pair_and_one_for_the_designs() {
        let elements = assert_excalidraw(&schema_sketch_board(4));
        let names: Vec<&str> =
            elements.iter().filter(|e| e["type"] == "frame").map(|e| e["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Pair 1", "Pair 2", "Pair 3", "Pair 4", "Reference designs A, B, C"]);
        let boxes = elements.iter().filter(|e| e["type"] == "rectangle").count();
        assert_eq!(boxes, 4 * SCHEMA_BOXES.len() + 3);
    }

    #[test]
    fn the_reflection_wall_has_a_column_per_activity_the_cohort_runs() {
        let course = crate::test_course();
        let mut cohort = crate::test_cohort();
        let names = |cohort: &Cohort| -> Vec<String> {
            assert_excalidraw(&reflection_wall_board(&course, cohort))
                .iter()
                .filter(|e| e["type"] == "frame")
                .map(|e| e["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(&cohort), ["log-sleuth", "wal-race", "outage", "my own"]);
        cohort.skip = vec!["wal-race".into()];
        assert_eq!(names(&cohort), ["log-sleuth", "outage", "my own"]);
    }

    #[test]
    fn the_decision_doc_asks_what_the_printed_sheet_asks() {
        let printed = std::fs::read_to_string(crate::repo_root().join("book/src/05-outage/role-cards.md")).unwrap();
        for prompt in OUTAGE_DECISION_SHEET.lines().filter_map(|l| l.strip_prefix("## ")) {
            assert!(printed.contains(&format!("**{prompt}**")), "the printed sheet has no prompt `{prompt}`");
        }
    }
}
