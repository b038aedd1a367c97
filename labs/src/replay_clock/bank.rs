//! The bank whose history the lab replays: accounts as streams, events in two payload shapes,
//! loaded through the store's COPY path, and the golden balances computed here, in Rust, from
//! the same plan, so every rebuild is judged against numbers no SQL of the lab produced.
//!
//! The plan is generated from a seed, so the events (ids, amounts, order) are the same on every
//! run and every machine.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::error::LabError;
use crate::rng::Rng;
use crate::store::{self, ExpectedVersion, NewEvent, StreamAppend};

/// The bank's fixed SQL: currencies, the balances read model, the state version and the fold.
pub const BANK_SQL: &str = include_str!("bank.sql");

/// A currency and its ISO 4217 minor digits (the same table as bank.sql's `currencies`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Currency {
    Eur,
    Jpy,
    Kwd,
}

impl Currency {
    pub fn code(self) -> &'static str {
        match self {
            Currency::Eur => "EUR",
            Currency::Jpy => "JPY",
            Currency::Kwd => "KWD",
        }
    }

    pub fn minor_digits(self) -> u32 {
        match self {
            Currency::Eur => 2,
            Currency::Jpy => 0,
            Currency::Kwd => 3,
        }
    }

    /// A minor-unit amount written in major units, as a v1 payload holds it: 1999 EUR cents is
    /// 19.99, 1234 KWD fils is 1.234.
    pub fn major_text(self, minor: i64) -> String {
        let digits = self.minor_digits();
        if digits == 0 {
            return minor.to_string();
        }
        let scale = 10_i64.pow(digits);
        format!("{}.{:0width$}", minor / scale, minor % scale, width = digits as usize)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Kind {
    Deposited,
    Withdrawn,
    /// Only in v2: release 1 of the account fold did not know it (the check's schema change).
    FeeCharged,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Deposited => "Deposited",
            Kind::Withdrawn => "Withdrawn",
            Kind::FeeCharged => "FeeCharged",
        }
    }

    fn sign(self) -> i64 {
        match self {
            Kind::Deposited => 1,
            Kind::Withdrawn | Kind::FeeCharged => -1,
        }
    }
}

/// One planned event of an account.
#[derive(Clone, Debug)]
pub struct PlannedEvent {
    pub kind: Kind,
    pub amount_minor: i64,
    /// Written in the legacy v1 shape.
    pub legacy: bool,
}

impl PlannedEvent {
    /// The payload as stored: v1 `{"amount": 19.99, "ccy": "EUR"}` or v2 `{"amount_minor": 1999, "currency": "EUR"}`.
    pub fn stored_data(&self, currency: Currency) -> Value {
        if self.legacy {
            // The major amount is parsed from its decimal text, never computed as a float, so
            // the JSON holds exactly the digits a legacy service wrote.
            let amount: Value =
                serde_json::from_str(&currency.major_text(self.amount_minor)).expect("a decimal number");
            json!({ "amount": amount, "ccy": currency.code() })
        } else {
            self.v2_data(currency)
        }
    }

    /// What a correct upcaster returns for this event.
    pub fn v2_data(&self, currency: Currency) -> Value {
        json!({ "amount_minor": self.amount_minor, "currency": currency.code() })
    }

    pub fn schema_version(&self) -> i32 {
        if self.legacy {
            1
        } else {
            2
        }
    }
}

#[derive(Clone, Debug)]
pub struct Account {
    pub stream_id: String,
    pub currency: Currency,
    pub events: Vec<PlannedEvent>,
}

/// An account's true state: what every read model and every load must agree with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub currency: String,
    pub balance_minor: i64,
    pub version: i64,
}

/// How big a bank to plan.
#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    /// Ordinary accounts, 12 to 72 events each, their first 0 to 3 events legacy.
    pub accounts: usize,
    /// Extra EUR accounts of exactly these lengths (`account-long-00010` ...), their first 2% legacy.
    pub long_streams: Vec<usize>,
    /// Appends are made in this many rounds: each round appends the next slice of every
    /// account's events in one bulk, so streams interleave in the log as they would in a day.
    pub rounds: usize,
}

/// The planned bank and the order its events were appended in.
#[derive(Clone, Debug)]
pub struct Bank {
    pub accounts: Vec<Account>,
    /// (account index, number of events) per stream append, bulk by bulk: the log's order.
    pub bulks: Vec<Vec<(usize, usize)>>,
}

/// One account in 33 is dormant: every event of it predates the v2 release, so only an
/// upcaster can give its balance a currency.
const DORMANT_EVERY: usize = 33;

pub fn long_stream_id(length: usize) -> String {
    format!("account-long-{length:05}")
}

impl Bank {
    pub fn plan(plan: &Plan) -> Bank {
        let mut rng = Rng(plan.seed);
        let mut accounts = Vec::new();
        for n in 0..plan.accounts {
            let currency = match rng.below(10) {
                0 => Currency::Jpy,
                1 => Currency::Kwd,
                _ => Currency::Eur,
            };
            let dormant = n % DORMANT_EVERY == DORMANT_EVERY - 1;
            let (length, legacy) = if dormant {
                let length = 5 + rng.below(11);
                (length, length)
            } else {
                (12 + rng.below(61), rng.below(4))
            };
            let events = (0..length).map(|i| event(&mut rng, currency, i < legacy)).collect();
            accounts.push(Account { stream_id: format!("account-{n:05}"), currency, events });
        }
        for &length in &plan.long_streams {
            let legacy = length / 50;
            let events = (0..length).map(|i| event(&mut rng, Currency::Eur, i < legacy)).collect();
            accounts.push(Account { stream_id: long_stream_id(length), currency: Currency::Eur, events });
        }
        let rounds = plan.rounds.max(1);
        let mut bulks: Vec<Vec<(usize, usize)>> = vec![Vec::new(); rounds];
        for (index, account) in accounts.iter().enumerate() {
            let length = account.events.len();
            let dormant = account.events.iter().all(|e| e.legacy);
            if dormant {
                // Dormant accounts are old: all their history is in the first round.
                bulks[0].push((index, length));
                continue;
            }
            for (round, bulk) in bulks.iter_mut().enumerate() {
                let count = length * (round + 1) / rounds - length * round / rounds;
                if count > 0 {
                    bulk.push((index, count));
                }
            }
        }
        Bank { accounts, bulks }
    }

    pub fn events(&self) -> usize {
        self.accounts.iter().map(|a| a.events.len()).sum()
    }

    pub fn legacy_events(&self) -> usize {
        self.accounts.iter().flat_map(|a| &a.events).filter(|e| e.legacy).count()
    }

    pub fn account(&self, stream_id: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.stream_id == stream_id)
    }

    /// Every event in the order the bulks appended them: (account index, version from 1).
    pub fn log_order(&self) -> impl Iterator<Item = (usize, i64)> + '_ {
        let mut appended = vec![0_usize; self.accounts.len()];
        self.bulks.iter().flat_map(|bulk| bulk.iter()).flat_map(move |&(index, count)| {
            let from = appended[index];
            appended[index] += count;
            (from..from + count).map(move |i| (index, i as i64 + 1))
        })
    }

    /// The balances after the first `events` events of the log (None: all of them).
    pub fn golden(&self, events: Option<usize>) -> BTreeMap<String, Balance> {
        let mut golden: BTreeMap<String, Balance> = BTreeMap::new();
        for (index, version) in self.log_order().take(events.unwrap_or(usize::MAX)) {
            let account = &self.accounts[index];
            let event = &account.events[version as usize - 1];
            let balance = golden.entry(account.stream_id.clone()).or_insert_with(|| Balance {
                currency: account.currency.code().to_string(),
                balance_minor: 0,
                version: 0,
            });
            balance.balance_minor += event.kind.sign() * event.amount_minor;
            balance.version = version;
        }
        golden
    }

    /// The state of one account after its first `until` events, under a fold that ignores
    /// FeeCharged when `with_fees` is false (release 1 of the account fold).
    pub fn state_of(&self, stream_id: &str, until: usize, with_fees: bool) -> Option<Balance> {
        let account = self.account(stream_id)?;
        let balance_minor = account.events[..until]
            .iter()
            .filter(|e| with_fees || e.kind != Kind::FeeCharged)
            .map(|e| e.kind.sign() * e.amount_minor)
            .sum();
        Some(Balance { currency: account.currency.code().into(), balance_minor, version: until as i64 })
    }

    /// Appends every event through the store's bulk path (COPY under the store's checks), one
    /// bulk per round; `progress` gets the events appended so far.
    pub async fn load(&self, client: &mut Client, mut progress: impl FnMut(usize)) -> Result<(), LabError> {
        let mut appended = vec![0_usize; self.accounts.len()];
        let mut done = 0;
        for bulk in &self.bulks {
            let appends: Vec<StreamAppend> = bulk
                .iter()
                .map(|&(index, count)| {
                    let account = &self.accounts[index];
                    let from = appended[index];
                    appended[index] += count;
                    StreamAppend {
                        stream_id: account.stream_id.clone(),
                        expected: if from == 0 {
                            ExpectedVersion::NoStream
                        } else {
                            ExpectedVersion::Exact(from as i64)
                        },
                        events: (from..from + count).map(|i| new_event(account, index, i)).collect(),
                    }
                })
                .collect();
            store::append_bulk(client, &appends).await?;
            done += bulk.iter().map(|b| b.1).sum::<usize>();
            progress(done);
        }
        Ok(())
    }
}

/// The stored form of an account's `i`-th event (0-based): a fixed id, type, payload, and the
/// payload's schema version in the metadata.
pub fn new_event(account: &Account, index: usize, i: usize) -> NewEvent {
    let e = &account.events[i];
    NewEvent {
        event_id: event_id(index, i),
        event_type: e.kind.name().to_string(),
        data: e.stored_data(account.currency),
        metadata: json!({ "schema_version": e.schema_version() }),
    }
}

pub fn event_id(account_index: usize, i: usize) -> Uuid {
    Uuid::from_u128(0x8e91_0000_0000_4000_8000_0000_0000_0000 | (account_index as u128) << 32 | i as u128)
}

fn event(rng: &mut Rng, currency: Currency, legacy: bool) -> PlannedEvent {
    let kind = match rng.below(20) {
        0 if !legacy => Kind::FeeCharged,
        0..=11 => Kind::Deposited,
        _ => Kind::Withdrawn,
    };
    let amount_minor = match (kind, currency) {
        (Kind::FeeCharged, _) => 1 + rng.below(500) as i64,
        (_, Currency::Eur) => 1 + rng.below(50_000) as i64,
        (_, Currency::Jpy) => 1 + rng.below(50_000) as i64,
        (_, Currency::Kwd) => 1 + rng.below(150_000) as i64,
    };
    PlannedEvent { kind, amount_minor, legacy }
}

/// The read model as a map, for comparing with the golden balances.
pub async fn read_model(client: &Client, table: &str) -> Result<BTreeMap<String, Balance>, LabError> {
    let rows = client
        .query(&format!("SELECT account, currency, balance_minor, version FROM {table}"), &[])
        .await
        .map_err(LabError::db(format!("reading the read model {table}")))?;
    Ok(rows
        .iter()
        .map(|r| {
            let currency: Option<String> = r.get(1);
            (
                r.get(0),
                Balance {
                    currency: currency.unwrap_or_else(|| "NULL".into()),
                    balance_minor: r.get(2),
                    version: r.get(3),
                },
            )
        })
        .collect())
}

/// How a read model differs from the golden balances: None when equal, else the count of
/// accounts that differ and the first one, in words.
pub fn differences(got: &BTreeMap<String, Balance>, golden: &BTreeMap<String, Balance>) -> Option<(usize, String)> {
    let mut first = None;
    let mut count = 0;
    for (account, want) in golden {
        let have = got.get(account);
        if have != Some(want) {
            count += 1;
            first.get_or_insert_with(|| match have {
                None => format!("{account} is missing (expected {})", said(want)),
                Some(have) => format!("{account} holds {}, expected {}", said(have), said(want)),
            });
        }
    }
    for account in got.keys().filter(|a| !golden.contains_key(*a)) {
        count += 1;
        first.get_or_insert_with(|| format!("{account} should not be there"));
    }
    first.map(|f| (count, f))
}

pub fn said(b: &Balance) -> String {
    format!("{} {} at v{}", b.balance_minor, b.currency, b.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_text_has_the_currency_digits() {
        assert_eq!(Currency::Eur.major_text(1999), "19.99");
        assert_eq!(Currency::Eur.major_text(5), "0.05");
        assert_eq!(Currency::Kwd.major_text(1234), "1.234");
        assert_eq!(Currency::Jpy.major_text(1250), "1250");
    }

    #[test]
    fn the_log_order_covers_every_event_once_in_stream_order() {
        let bank = Bank::plan(&Plan { seed: 3, accounts: 50, long_streams: vec![10, 100], rounds: 4 });
        let mut next = vec![1_i64; bank.accounts.len()];
        for (index, version) in bank.log_order() {
            assert_eq!(version, next[index]);
            next[index] += 1;
        }
        for (account, next) in bank.accounts.iter().zip(next) {
            assert_eq!(next as usize, account.events.len() + 1, "{}", account.stream_id);
        }
        assert_eq!(bank.golden(None).len(), bank.accounts.len());
        assert!(bank.legacy_events() > 0 && bank.legacy_events() < bank.events());
    }
}
