//! The Mythbusting poll page, generated from the myth bank (fixtures/02-mythbusting/myths.toml)
//! where a chapter says `{{#mythbusting-poll}}`: one myth per screen to project, the vote, and
//! a collapsed reveal with the evidence and its source. The bank is the one copy; the lab and
//! the poll CSV read the same file.

use labs::mythbusting::{Bank, Myth};

pub const DIRECTIVE: &str = "{{#mythbusting-poll}}";

/// The myths in poll order: `chosen` first (cohort.toml's `poll`), then
/// the rest of the bank as spares.
pub fn render(bank: &Bank, chosen: &[String]) -> String {
    let mut out = String::new();
    let first: Vec<&Myth> = chosen.iter().filter_map(|id| bank.get(id)).collect();
    let spares: Vec<&Myth> = bank.myth.iter().filter(|m| !chosen.contains(&m.id)).collect();
    out.push_str(&format!("## The poll: {} myths for a 10-minute slot\n\n", first.len()));
    for (n, m) in first.iter().enumerate() {
        out.push_str(&myth(n + 1, m));
    }
    out.push_str("## Spares\n\nSwap one in when the room already knows a myth above.\n\n");
    for (n, m) in spares.iter().enumerate() {
        out.push_str(&myth(first.len() + n + 1, m));
    }
    out
}

fn myth(number: usize, m: &Myth) -> String {
    let demo = if m.demo {
        format!("Demonstration: `cargo labs run mythbusting --myth {}`", m.id)
    } else {
        "No demonstration: the evidence is the documentation and the incidents.".to_string()
    };
    let evidence: String = m.evidence.iter().map(|e| format!("- {e}\n")).collect();
    format!(
        "### Myth {number}: {id}\n\n\
         > **True or false?** {statement}\n\n\
         Vote now: in the room, a hand up for true; remote, the poll tool's question {number} or a reaction in the chat.\n\n\
         ```admonish success collapsible=true title=\"Reveal: {verdict}\"\n\
         **{verdict}.** {reveal}\n\n\
         {evidence}\n\
         Source: [{title}]({url}). {demo}\n\
         ```\n\n",
        id = m.id,
        statement = m.statement,
        verdict = m.verdict,
        reveal = m.reveal,
        title = m.source.title,
        url = m.source.url,
    )
}

/// The external links the generated poll cites (the link record counts them for its page).
pub fn urls(bank: &Bank) -> Vec<String> {
    bank.myth.iter().map(|m| m.source.url.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_myths_come_first_and_every_myth_appears_once_with_a_reveal() {
        // The kit's bank on disk, with no poll of its own: the test chooses one.
        let text = std::fs::read_to_string(crate::repo_root().join(labs::mythbusting::BANK_FILE)).unwrap();
        let bank = Bank::parse(&text, &[]).unwrap();
        let chosen = vec![bank.myth.last().unwrap().id.clone()];
        let page = render(&bank, &chosen);
        assert!(page.find(&format!("### Myth 1: {}", chosen[0])).is_some(), "{page}");
        for m in &bank.myth {
            assert_eq!(page.matches(&format!(": {}\n", m.id)).count(), 1, "{}", m.id);
        }
        assert_eq!(page.matches("collapsible=true").count(), bank.myth.len());
    }
}
