//! `cdp catalog`: the data dictionary — what each source sent (events and calls, with their properties'
//! types and examples, counts and when last seen) and the traits, with data-quality issues.

use std::collections::BTreeMap;

use anyhow::Context as _;
use functions::storage::FsStore;
use shared::catalog::{Dictionary, EventEntry, Field};

use crate::DataArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct CatalogArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Only this source.
    #[arg(long)]
    source: Option<String>,
    /// Only this event (or call type: identify, page, …), with its properties.
    #[arg(long)]
    event: Option<String>,
    /// The dictionary as JSON (as `GET /v1/catalog` answers).
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: CatalogArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = FsStore::open(&args.data.data).context("opening the data folder")?;
    let mut dictionary = runtime.block_on(functions::catalog::load(&store))?;
    dictionary.only(args.source.as_deref(), args.event.as_deref());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&dictionary)?);
    } else {
        print!("{}", render(&dictionary, args.event.is_none()));
    }
    Ok(())
}

/// The dictionary as text: per source its events and calls (with properties), then the traits.
fn render(dictionary: &Dictionary, with_traits: bool) -> String {
    let mut out = String::new();
    if dictionary.sources.is_empty() && dictionary.traits.is_empty() {
        out.push_str("nothing seen yet: the dictionary fills as events arrive\n");
        return out;
    }
    for (id, source) in &dictionary.sources {
        out.push_str(&format!("source {id}\n"));
        let rows = source
            .events
            .iter()
            .map(|(n, e)| ("track", n.as_str(), e))
            .chain(source.calls.iter().map(|(n, e)| (n.as_str(), "", e)));
        for (kind, name, entry) in rows {
            out.push_str(&format!("  {kind:<9} {name:<32} {}\n", counts(entry)));
            out.push_str(&fields(&entry.properties, "      "));
        }
    }
    if with_traits && !dictionary.traits.is_empty() {
        out.push_str("traits\n");
        out.push_str(&fields(&dictionary.traits, "  "));
    }
    if dictionary.overflow > 0 {
        out.push_str(&format!("({} names not kept: a limit of the dictionary was reached)\n", dictionary.overflow));
    }
    out
}

fn counts(entry: &EventEntry) -> String {
    let violations: u64 = entry.days.values().map(|d| d.violations).sum();
    let last = entry.last_seen.map(|t| t.to_string()).unwrap_or_default();
    let mut text = format!("{:>9} events, last {last}", entry.count);
    if violations > 0 {
        text.push_str(&format!(", {violations} breaking the tracking plan"));
    }
    text
}

fn fields(fields: &BTreeMap<String, Field>, indent: &str) -> String {
    let mut out = String::new();
    for (name, field) in fields {
        let types: Vec<String> = field.types.iter().map(|(t, n)| format!("{t} {n}")).collect();
        let mut line = format!("{indent}{name:<28} {:<24}", types.join(", "));
        if field.personal {
            line.push_str(" personal");
        } else if !field.examples.is_empty() {
            let examples: Vec<String> = field.examples.iter().map(ToString::to_string).collect();
            line.push_str(&format!(" e.g. {}", examples.join(", ")));
        }
        if field.issues > 0 {
            line.push_str(&format!(
                "  [{} not cleaned: {}]",
                field.issues,
                field.last_issue.as_deref().unwrap_or("see the data")
            ));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shared::event::CanonicalEvent;
    use shared::profile::ProfileRules;

    use super::*;

    #[test]
    fn the_dictionary_as_text() {
        let mut dictionary = Dictionary::default();
        for value in [
            json!({"type": "track", "event": "Order Completed", "properties": {"revenue": 12.5}}),
            json!({"type": "identify", "traits": {"email": "a@b.cn", "age": "thirty"}}),
        ] {
            let mut event = json!({"messageId": "m", "sourceId": "web", "receivedAt": "2026-03-01T10:00:00.000Z",
                                   "timestamp": "2026-03-01T10:00:00.000Z", "userId": "u1"});
            for (k, v) in value.as_object().unwrap() {
                event[k] = v.clone();
            }
            let event: CanonicalEvent = serde_json::from_value(event).unwrap();
            dictionary.observe(&event, &ProfileRules::default());
        }
        let text = render(&dictionary, true);
        assert!(text.contains("source web\n"), "{text}");
        assert!(
            text.contains(
                "  track     Order Completed                          1 events, last 2026-03-01T10:00:00.000Z"
            ),
            "{text}"
        );
        assert!(text.contains("      revenue                      number 1                 e.g. 12.5"), "{text}");
        assert!(text.contains("  email                        string 1                 personal"), "{text}");
        assert!(text.contains("[1 not cleaned: `thirty` is not a number]"), "{text}");
        assert_eq!(render(&Dictionary::default(), true), "nothing seen yet: the dictionary fills as events arrive\n");
    }
}
