//! Activity 2, Mythbusting: a poll of beliefs about PostgreSQL under pressure, each settled by
//! a demonstration against a real server that the lab crashes, freezes or fails over.
//!
//! The myths (statement, verdict, evidence, source) are data, in
//! `fixtures/02-mythbusting/myths.toml`; the poll page, the poll CSV and this lab all read it.
//! The demonstrations are code, in `demos.rs`, one function per myth that has one.

pub mod demos;

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use crate::error::LabError;
use crate::lab::{Ctx, Lab, Report};
use crate::pg::Capability;
use crate::settings::{Settings, SettingsError};

/// The myth bank as shipped, for tests; `labs` reads it from the kit ([`Bank::load`]).
pub const MYTHS_TOML: &str = include_str!("../../../fixtures/02-mythbusting/myths.toml");
/// Where the bank lives in the kit.
pub const BANK_FILE: &str = "fixtures/02-mythbusting/myths.toml";

/// `labs run mythbusting`.
pub struct Mythbusting;

/// Options of `labs run mythbusting`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Run this myth's demonstration (repeatable; default: the poll's, from cohort.toml).
    #[arg(long = "myth", value_name = "ID")]
    pub ids: Vec<String>,
    /// List the myths of the bank and exit (no server).
    #[arg(long, conflicts_with_all = ["ids", "poll_csv"])]
    pub list: bool,
    /// Print the poll's questions as CSV for a poll tool, and exit (no server).
    #[arg(long, conflicts_with = "ids")]
    pub poll_csv: bool,
}

/// What `labs run mythbusting` prints: the bank, the poll's CSV, or the demonstrations' reports.
#[derive(Serialize)]
#[serde(untagged)]
pub enum MythReport {
    Bank(Bank),
    PollCsv {
        csv: String,
    },
    Demos {
        lab: &'static str,
        myths: Vec<DemoReport>,
        #[serde(skip)]
        text: String,
    },
}

impl fmt::Display for MythReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MythReport::Bank(bank) => f.write_str(&bank.list_text()),
            MythReport::PollCsv { csv } => f.write_str(csv),
            MythReport::Demos { text, .. } => f.write_str(text),
        }
    }
}

impl Report for MythReport {}

impl Lab for Mythbusting {
    const ID: &'static str = "mythbusting";
    /// Every demonstration's needs together; each demonstration asks only for its own.
    const NEEDS: &'static [Capability] =
        &[Capability::Crash, Capability::Restart, Capability::FreezeWalWriter, Capability::Standby];
    /// Every demonstration, not only the cohort's poll: each must hold on every major.
    const SMOKE_ARGS: &'static [&'static str] = &[
        "--myth",
        "replication-no-loss",
        "--myth",
        "identity-gap-free",
        "--myth",
        "notify-durable-queue",
        "--myth",
        "async-commit-corrupts",
        "--myth",
        "update-less-wal",
        "--myth",
        "unlogged-free-speedup",
        "--myth",
        "more-indexes-free",
    ];
    type Args = RunArgs;
    type Report = MythReport;

    async fn run(&self, args: RunArgs, ctx: &Ctx) -> Result<MythReport, LabError> {
        let bank = Bank::load(&ctx.settings)?;
        if args.list {
            return Ok(MythReport::Bank(bank));
        }
        if args.poll_csv {
            return Ok(MythReport::PollCsv { csv: bank.poll_csv() });
        }
        let demos = bank.select(&args.ids)?;
        // Refuse before starting anything when the backend cannot do what the demos need.
        ctx.require(&needs(&demos)).await?;
        let mut reports = Vec::new();
        let mut text = String::new();
        for (n, demo) in demos.iter().enumerate() {
            let myth = bank.get(demo.id()).expect("selected from the bank");
            ctx.progress(format_args!("[{}/{}] myth {}: \"{}\"", n + 1, demos.len(), myth.id, myth.statement));
            let report = ctx
                .with_server(demo.needs(), async |server| demo.run(server, &myth.statement, &myth.verdict).await)
                .await?;
            ctx.progress(format_args!("[{}/{}] done in {:.1} s", n + 1, demos.len(), report.seconds));
            let _ = writeln!(text, "{}", report.to_text(myth));
            reports.push(report);
        }
        Ok(MythReport::Demos { lab: "mythbusting", myths: reports, text })
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Bank {
    /// The poll's myths, in order: `poll` in cohort.toml (three for a 10-minute slot). What
    /// `labs run mythbusting` demonstrates without `--myth`.
    #[serde(skip_deserializing)]
    pub poll: Vec<String>,
    pub myth: Vec<Myth>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Myth {
    pub id: String,
    /// The poll statement: what people believe, answerable true or false.
    pub statement: String,
    pub verdict: String,
    /// One sentence: the truth, for the reveal.
    pub reveal: String,
    /// Exactly three sentences.
    pub evidence: Vec<String>,
    pub source: Source,
    /// Whether `labs run mythbusting --myth <id>` demonstrates it.
    pub demo: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub title: String,
    pub url: String,
}

impl Bank {
    /// The kit's bank with the cohort's poll, checked: unique ids, three evidence sentences
    /// each, the poll's myths in the bank, the demo flags matching this build's demonstrations.
    pub fn load(settings: &Settings) -> Result<Bank, SettingsError> {
        let (text, _) = settings.kit.read(BANK_FILE)?;
        Bank::parse(&text, &settings.cohort.poll)
    }

    pub fn parse(text: &str, poll: &[String]) -> Result<Bank, SettingsError> {
        let mut bank: Bank = toml::from_str(text).map_err(|e| SettingsError::parse(BANK_FILE, text, &e))?;
        bank.poll = poll.to_vec();
        let mut problems = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for m in &bank.myth {
            if !seen.insert(m.id.as_str()) {
                problems.push(format!("myth '{}' appears twice", m.id));
            }
            if m.evidence.len() != 3 {
                problems.push(format!("myth '{}' has {} evidence sentences, not 3", m.id, m.evidence.len()));
            }
            if m.demo != demos::Demo::from_id(&m.id).is_some() {
                problems.push(format!(
                    "myth '{}' says demo = {}, but this build {} a demonstration for it",
                    m.id,
                    m.demo,
                    if m.demo { "has no" } else { "has" }
                ));
            }
        }
        for d in demos::ALL {
            if !bank.myth.iter().any(|m| m.id == d.id()) {
                problems.push(format!("the demonstration '{}' has no myth in the bank", d.id()));
            }
        }
        for id in &bank.poll {
            if bank.get(id).is_none() {
                problems.push(format!(
                    "cohort.toml's poll names '{id}', which is not in the bank (`labs run mythbusting --list`)"
                ));
            }
        }
        if problems.is_empty() {
            Ok(bank)
        } else {
            let problems = problems.into_iter().map(|p| format!("{BANK_FILE}: {p}")).collect();
            Err(SettingsError::Invalid { file: BANK_FILE.into(), problems })
        }
    }

    pub fn get(&self, id: &str) -> Option<&Myth> {
        self.myth.iter().find(|m| m.id == id)
    }

    /// Resolves the ids a user asked for into demonstrations, or says which ids are valid.
    /// None asked: the poll's myths that have a demonstration.
    pub fn select(&self, ids: &[String]) -> Result<Vec<demos::Demo>, LabError> {
        if ids.is_empty() {
            let chosen: Vec<demos::Demo> = self.poll.iter().filter_map(|id| demos::Demo::from_id(id)).collect();
            if chosen.is_empty() {
                return Err(LabError::Usage(format!(
                    "none of the poll's myths (cohort.toml: {}) has a demonstration; name one with --myth: {}",
                    self.poll.join(", "),
                    demo_ids()
                )));
            }
            return Ok(chosen);
        }
        let mut chosen = Vec::new();
        for id in ids {
            match (self.get(id), demos::Demo::from_id(id)) {
                (_, Some(demo)) => {
                    if !chosen.contains(&demo) {
                        chosen.push(demo);
                    }
                }
                (Some(_), None) => {
                    return Err(LabError::Usage(format!(
                        "myth '{id}' has no demonstration: its evidence is on the poll page (`labs run mythbusting --list`); the myths with one are: {}",
                        demo_ids()
                    )))
                }
                (None, None) => {
                    let all: Vec<&str> = self.myth.iter().map(|m| m.id.as_str()).collect();
                    return Err(LabError::Usage(format!("unknown myth '{id}'; the myths are: {} (with a demonstration: {})", all.join(", "), demo_ids())));
                }
            }
        }
        Ok(chosen)
    }

    /// The bank for people: one block per myth.
    pub fn list_text(&self) -> String {
        let mut out = String::new();
        for (n, m) in self.myth.iter().enumerate() {
            let demo = if m.demo {
                format!("labs run mythbusting --myth {}", m.id)
            } else {
                "no demonstration: evidence only".into()
            };
            let default = if self.poll.contains(&m.id) { " (in the poll)" } else { "" };
            let _ = writeln!(
                out,
                "{:>2}. {}{default}\n    \"{}\"\n    verdict: {}. {}\n    {demo}\n",
                n + 1,
                m.id,
                m.statement,
                m.verdict,
                m.reveal
            );
        }
        out
    }

    /// The questions for a poll tool: one row per myth, the poll's first and then the spares,
    /// as CSV (RFC 4180 quoting).
    pub fn poll_csv(&self) -> String {
        let mut order: Vec<&Myth> = self.poll.iter().filter_map(|id| self.get(id)).collect();
        order.extend(self.myth.iter().filter(|m| !self.poll.contains(&m.id)));
        let mut out = String::from("number,id,question,option_1,option_2,correct_option,verdict,reveal,source\r\n");
        for (n, m) in order.iter().enumerate() {
            // Every verdict in the bank is a "no" to the statement as believed.
            let fields = [
                (n + 1).to_string(),
                m.id.clone(),
                format!("True or false: {}", m.statement),
                "True".into(),
                "False".into(),
                "False".into(),
                m.verdict.clone(),
                m.reveal.clone(),
                m.source.url.clone(),
            ];
            let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&row.join(","));
            out.push_str("\r\n");
        }
        out
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn demo_ids() -> String {
    demos::ALL.iter().map(|d| d.id()).collect::<Vec<_>>().join(", ")
}

/// One measurement: `value` for machines (bytes, seconds, counts, ids), `shown` for people.
#[derive(Clone, Debug, Serialize)]
pub struct Measure {
    pub name: String,
    pub value: serde_json::Value,
    /// "bytes" or "s" where the value has a unit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(skip)]
    pub shown: String,
}

/// A value as people read it: lists as `[1, 2, 4]`, strings without quotes.
pub fn show(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => format!("{s:?}"),
                    other => show(other),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// What one demonstration did and measured.
#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    pub myth: String,
    pub statement: String,
    pub verdict: String,
    /// Whether the measurements contradict the myth, judged from them, not assumed.
    pub busted: bool,
    /// What the lab did, in order.
    pub steps: Vec<String>,
    /// What it measured.
    pub measured: Vec<Measure>,
    /// Messages the server sent the client (warnings), verbatim.
    pub server_said: Vec<String>,
    pub seconds: f64,
}

impl DemoReport {
    pub fn to_text(&self, myth: &Myth) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "MYTH {}: \"{}\"", self.myth, self.statement);
        let _ = writeln!(out, "what the lab did:");
        for (n, step) in self.steps.iter().enumerate() {
            let _ = writeln!(out, "  {}. {step}", n + 1);
        }
        let _ = writeln!(out, "what it measured:");
        let width = self.measured.iter().map(|m| m.name.len()).max().unwrap_or(0);
        for m in &self.measured {
            let _ = writeln!(out, "  {:<width$}  {}", m.name, m.shown);
        }
        for said in &self.server_said {
            let _ = writeln!(out, "  the server said: {said}");
        }
        let outcome = if self.busted { "BUSTED" } else { "NOT BUSTED on this run" };
        let _ = writeln!(out, "verdict: {outcome} ({}). {}", myth.verdict, myth.reveal);
        let _ = writeln!(out, "source: {} <{}>", myth.source.title, myth.source.url);
        out
    }
}

/// What a set of demonstrations needs from the provider.
pub fn needs(demos: &[demos::Demo]) -> Vec<Capability> {
    let mut needs = Vec::new();
    for d in demos {
        for &c in d.needs() {
            if !needs.contains(&c) {
                needs.push(c);
            }
        }
    }
    needs
}
