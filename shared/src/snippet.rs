//! The browser library (`snippet/src/cdp.js`, minified by `snippet/build.mjs`), served by every collector
//! shell at `GET /cdp.js` with an ETag, so browsers revalidate cheaply and pick up a new version within
//! minutes.

use std::sync::OnceLock;

use crate::collect::Answer;

/// The minified library.
pub const LIBRARY: &str = include_str!("../../snippet/dist/cdp.min.js");

/// The snippet to paste into a page, with `__HOST__`, `__WRITE_KEY__` and `__OPTIONS__` to fill in.
pub const SNIPPET: &str = include_str!("../../snippet/dist/snippet.min.js");

/// The library's ETag: a strong validator derived from its content.
pub fn etag() -> &'static str {
    static ETAG: OnceLock<String> = OnceLock::new();
    ETAG.get_or_init(|| format!("\"{}\"", &crate::ids::sha256_hex(LIBRARY)[..20]))
}

/// The snippet for a collector at `host` (e.g. `https://collect.example.com`; empty for the page's own
/// origin) and a source's write key, with default options.
pub fn snippet(host: &str, write_key: &str) -> String {
    snippet_with(host, write_key, &serde_json::Map::new())
}

/// [`snippet`] with load options (`requireConsent`, `flushAt`, `flushInterval`, `page`, `cookieDomain`, ...).
pub fn snippet_with(host: &str, write_key: &str, options: &serde_json::Map<String, serde_json::Value>) -> String {
    SNIPPET
        .replace("__HOST__", host.trim_end_matches('/'))
        .replace("__WRITE_KEY__", write_key)
        .replace("__OPTIONS__", &serde_json::Value::Object(options.clone()).to_string())
}

/// The answer to `GET /cdp.js`: the library, or 304 when the browser's copy (`If-None-Match`) is current.
pub fn library(if_none_match: Option<&str>) -> Answer {
    let etag = etag();
    let current = if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim().trim_start_matches("W/") == etag));
    let mut answer = if current {
        Answer::text(304, String::new())
    } else {
        let headers = vec![("content-type", "application/javascript; charset=utf-8".to_string())];
        Answer { headers, ..Answer::text(200, LIBRARY.to_string()) }
    };
    answer.headers.push(("etag", etag.to_string()));
    // Short freshness, then revalidation by ETag: a new library reaches pages within minutes.
    answer.headers.push(("cache-control", "public, max-age=300, stale-while-revalidate=86400".to_string()));
    answer.headers.push(("access-control-allow-origin", "*".to_string()));
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_library_with_an_etag_and_revalidates() {
        let first = library(None);
        assert_eq!(first.status, 200);
        assert!(first.body.contains("cdp.js") && first.body.len() < 20_000, "the minified library");
        let header = |a: &Answer, name: &str| a.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        assert_eq!(header(&first, "content-type").as_deref(), Some("application/javascript; charset=utf-8"));
        let etag = header(&first, "etag").expect("etag");
        assert!(etag.starts_with('"') && etag.len() == 22, "{etag}");
        let again = library(Some(&etag));
        assert_eq!((again.status, again.body.as_str()), (304, ""));
        assert_eq!(library(Some(&format!("W/{etag}, \"other\""))).status, 304);
        assert_eq!(library(Some("\"stale\"")).status, 200);
    }

    #[test]
    fn fills_in_the_snippet() {
        let html = snippet("https://c.example.com/", "wk_123");
        assert!(html.contains("https://c.example.com") && html.contains("wk_123"), "{html}");
        assert!(!html.contains("__HOST__") && !html.contains("__WRITE_KEY__") && !html.contains("__OPTIONS__"));
        assert!(html.contains("\"wk_123\",{}"), "{html}");
        let options = serde_json::Map::from_iter([("requireConsent".to_string(), true.into())]);
        assert!(snippet_with("", "k", &options).contains(r#""k",{"requireConsent":true}"#));
        assert!(!html.contains("c.example.com/\""), "no trailing slash");
    }
}
