//! Synthetic, realistic Segment traffic for benchmarks and load tests: what analytics.js sends from a shop
//! (page views, product events, identifies), ~600 bytes an event, one client per batch.

use crate::ids::Entropy;

const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
];

const EVENTS: [&str; 5] =
    ["Product Viewed", "Product Added", "Checkout Started", "Order Completed", "Products Searched"];

/// One event of a shop visitor, as analytics.js would send it in a batch (about 600 bytes).
pub fn event_json(entropy: &mut Entropy, visitor: &str, agent: &str, n: usize) -> String {
    let message_id = entropy.uuid_v4();
    let second = n % 60;
    match n % 10 {
        0 => format!(
            r#"{{"type":"page","name":"Product","anonymousId":"{visitor}","messageId":"{message_id}","timestamp":"2026-11-28T12:00:{second:02}.000Z","properties":{{"path":"/products/{n}","title":"Product {n} - Shop","url":"https://www.shop.example/products/{n}?utm_source=newsletter&utm_medium=email&utm_campaign=winter"}},"context":{{"page":{{"path":"/products/{n}","referrer":"https://www.shop.example/","title":"Product {n} - Shop","url":"https://www.shop.example/products/{n}?utm_source=newsletter&utm_medium=email&utm_campaign=winter"}},"userAgent":"{agent}","locale":"de-DE"}}}}"#
        ),
        5 => format!(
            r#"{{"type":"identify","userId":"user-{visitor}","anonymousId":"{visitor}","messageId":"{message_id}","timestamp":"2026-11-28T12:00:{second:02}.000Z","traits":{{"email":"Customer.{n}@Example.com","firstName":"Kim","lastName":"Meyer","plan":"premium","phone":"+49 30 1234{n:04}","createdAt":"2025-03-01T10:00:00Z"}},"context":{{"userAgent":"{agent}","locale":"de-DE","page":{{"path":"/account","url":"https://www.shop.example/account"}}}}}}"#
        ),
        _ => format!(
            r#"{{"type":"track","event":"{event}","anonymousId":"{visitor}","messageId":"{message_id}","timestamp":"2026-11-28T12:00:{second:02}.000Z","properties":{{"product_id":"sku-{n}","category":"Games","name":"Board game {n}","brand":"Hasbro","price":18.99,"quantity":1,"currency":"EUR"}},"context":{{"page":{{"path":"/products/{n}","referrer":"https://www.shop.example/","title":"Product {n}","url":"https://www.shop.example/products/{n}"}},"userAgent":"{agent}","locale":"de-DE"}}}}"#,
            event = EVENTS[n % EVENTS.len()]
        ),
    }
}

/// A `/v1/batch` body of `events` events from one visitor, with the batch-level fields analytics.js sends.
pub fn batch_body(entropy: &mut Entropy, events: usize, write_key: Option<&str>) -> String {
    let visitor = entropy.uuid_v4();
    let agent = AGENTS[(entropy.next_16()[0] as usize) % AGENTS.len()];
    let items: Vec<String> = (0..events).map(|n| event_json(entropy, &visitor, agent, n)).collect();
    let key = write_key.map(|k| format!(r#","writeKey":"{k}""#)).unwrap_or_default();
    format!(
        r#"{{"batch":[{}],"sentAt":"2026-11-28T12:01:00.000Z","context":{{"library":{{"name":"analytics.js","version":"next-1.70.0"}}}}{key}}}"#,
        items.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::{CollectRequest, Collected, Endpoint, collect};
    use crate::source::{Sources, new_source};
    use crate::time::UtcTime;

    #[test]
    fn samples_are_realistic_and_all_accepted() {
        let (source, key) = new_source("web", "Web", &mut Entropy::from_seed([1; 32]));
        let mut sources = Sources::default();
        sources.add(source).unwrap();
        let body = batch_body(&mut Entropy::from_seed([2; 32]), 500, Some(&key));
        let per_event = body.len() / 500;
        assert!((450..800).contains(&per_event), "about 600 bytes an event, got {per_event}");
        let now = UtcTime::parse("2026-11-28T12:01:00Z").unwrap();
        let Collected::Kept(batch) = collect(
            &CollectRequest::new(Endpoint::Batch, body.as_bytes()),
            &sources,
            now,
            &mut Entropy::from_seed([3; 32]),
        ) else {
            panic!("rejected")
        };
        assert_eq!((batch.accepted.len(), batch.failed.len()), (500, 0));
    }
}
