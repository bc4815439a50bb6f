use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Value, json};

use super::destination::check_url;
use super::feedback;
use super::payload::{self, AudienceRef, Envelope, profile_block};
use super::signing::{VerifyError, signature_header, verify};
use super::*;
use crate::audiences::{AudienceDefinition, AudienceSet};
use crate::tags::{Catalog, TagDefinition, TagSet};
use crate::time::UtcTime;

const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[test]
fn signatures_match_the_standard_webhooks_test_vector() {
    let secret = Secret::parse(SPEC_SECRET).unwrap();
    let body = br#"{"test": 2432232314}"#;
    assert_eq!(
        secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    let header = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    assert_eq!(verify(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", header, body, 1614265330), Ok(()));
    // One byte of the body, the id, or the timestamp changed: no match.
    assert_eq!(
        verify(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", header, br#"{"test": 2432232315}"#, 1614265330),
        Err(VerifyError::NoMatch)
    );
    assert_eq!(
        verify(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJel", "1614265330", header, body, 1614265330),
        Err(VerifyError::NoMatch)
    );
    assert_eq!(
        verify(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265331", header, body, 1614265330),
        Err(VerifyError::NoMatch)
    );
    // Outside the tolerance, or not a number.
    assert_eq!(
        verify(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", header, body, 1614265330 + 301),
        Err(VerifyError::Stale(301))
    );
    assert_eq!(verify(&secret, "m", "soon", header, body, 0), Err(VerifyError::BadTimestamp));
}

#[test]
fn rotation_signs_with_both_secrets_until_the_old_one_expires() {
    let old = Secret::parse(SPEC_SECRET).unwrap();
    let new = Secret::from_bytes(&[7u8; 32]);
    let header = signature_header([&new, &old], "msg_1", 1_700_000_000, b"{}");
    let parts: Vec<&str> = header.split(' ').collect();
    assert_eq!(parts.len(), 2);
    assert!(parts.iter().all(|p| p.starts_with("v1,")));
    for secret in [&old, &new] {
        assert_eq!(verify(secret, "msg_1", "1700000000", &header, b"{}", 1_700_000_000), Ok(()));
    }
    let stranger = Secret::from_bytes(&[9u8; 24]);
    assert_eq!(verify(&stranger, "msg_1", "1700000000", &header, b"{}", 1_700_000_000), Err(VerifyError::NoMatch));

    let mut destination = sample_destination();
    destination.previous_secrets = vec![PreviousSecret { secret: old.clone(), until: 1_000 }];
    assert_eq!(destination.signing_secrets(999).count(), 2);
    assert_eq!(destination.signing_secrets(1_000).count(), 1, "expired at `until`");
}

#[test]
fn secrets_are_checked_and_never_shown() {
    assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err().contains("whsec_"));
    assert!(Secret::parse("whsec_not base64!").unwrap_err().contains("base64"));
    // 16 bytes: too short.
    assert!(Secret::parse("whsec_AAAAAAAAAAAAAAAAAAAAAA==").unwrap_err().contains("at least 24"));
    let secret = Secret::parse(SPEC_SECRET).unwrap();
    for shown in [format!("{secret:?}"), format!("{secret}"), format!("{:?}", sample_destination())] {
        assert!(!shown.contains("MfKQ9r8G"), "{shown}");
    }
    // Configuration round-trips the secret itself.
    let json = serde_json::to_value(sample_destination()).unwrap();
    assert_eq!(json["secret"], SPEC_SECRET);
}

#[test]
fn private_loopback_link_local_and_metadata_addresses_are_refused() {
    let refused_ips = [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "192.0.2.10",
        "::1",
        "::",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.1.2.3",
        "::a9fe:a9fe",
        "64:ff9b::a9fe:a9fe",
        "fd00:ec2::254",
        "fc00::1",
        "fe80::1",
        "ff02::1",
        "2001:db8::1",
        "2002:7f00:1::",
        "2002:a9fe:a9fe::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "64:ff9b:1::a9fe:a9fe",
        "::ffff:0:7f00:1",
    ];
    for ip in refused_ips {
        let ip: IpAddr = ip.parse().unwrap();
        assert!(refused(ip, Reach::Public).is_some(), "{ip} must be refused");
    }
    for ip in [
        "8.8.8.8",
        "1.1.1.1",
        "172.32.0.1",
        "100.128.0.1",
        "169.255.0.1",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        "2002:808:808::1",
        "64:ff9b::808:808",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(refused(ip, Reach::Public), None, "{ip} is public");
    }
    // The local-development switch opens loopback only.
    for ip in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
        assert_eq!(refused(ip.parse().unwrap(), Reach::PublicAndLoopback), None, "{ip}");
    }
    for ip in ["10.0.0.1", "169.254.169.254", "192.168.0.1", "fd00:ec2::254"] {
        assert!(refused(ip.parse().unwrap(), Reach::PublicAndLoopback).is_some(), "{ip}");
    }
    assert_eq!(
        refused("169.254.169.254".parse().unwrap(), Reach::Public),
        Some("link-local address (cloud metadata services answer here)")
    );
}

#[test]
fn every_spelling_of_a_private_address_is_refused_where_the_destination_is_defined() {
    use super::destination::check_url;
    use super::ssrf::literal_address;
    let refused_urls = [
        "https://2130706433/",
        "https://0x7f000001/",
        "https://0X7F000001/",
        "https://127.1/",
        "https://127.0.1/",
        "https://0177.0.0.1/",
        "https://0x7f.0.0.1/",
        "https://127.0.0.1./",
        "https://2852039166/",
        "https://0xa9fea9fe/",
        "https://169.254.43518/",
        "https://0/",
        "https://10.1/",
        "https://[fe80::1%25lo]/",
        "https://[fe80::1%lo]/",
        "https://[2002:7f00:1::]/",
        "https://[::ffff:7f00:1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://[64:ff9b::7f00:1]/",
        "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
        "https://localhost/",
        "https://LocalHost./",
        "https://api.localhost/",
        "https://1.2.3.4.5/",
        "https://256.0.0.1/",
        "https://4294967296/",
    ];
    for url in refused_urls {
        assert!(check_url(url, false).is_err(), "{url} must be refused");
    }
    assert!(check_url("https://2130706433/", false).unwrap_err().contains("(127.0.0.1)"));
    assert!(check_url("https://[fe80::1%25lo]/", false).unwrap_err().contains("zone identifier"));
    for url in [
        "https://hooks.partner.example/in",
        "https://8.8.8.8/",
        "https://134744072/",
        "https://[2606:4700::1111]/",
        "https://1password.example/",
        "https://partner.example.com1/",
    ] {
        assert_eq!(check_url(url, false), Ok(()), "{url}");
    }
    assert_eq!(literal_address("134744072"), Ok(Some("8.8.8.8".parse().unwrap())));
    assert_eq!(literal_address("1.2.65535"), Ok(Some("1.2.255.255".parse().unwrap())));
    assert_eq!(literal_address("shop.example"), Ok(None));
    // Local development opens loopback in every spelling, and nothing else.
    assert_eq!(check_url("http://127.1:8080/", true), Ok(()));
    assert_eq!(check_url("http://localhost:8080/", true), Ok(()));
    assert!(check_url("http://0xa9fea9fe/", true).is_err());
}

#[test]
fn urls_are_https_with_a_host_and_literal_addresses_are_checked() {
    let url = Url::parse("https://Hooks.Partner.example:8443/in/cdp?x=1").unwrap();
    assert_eq!(
        url,
        Url { scheme: "https".into(), host: "hooks.partner.example".into(), port: 8443, path: "/in/cdp?x=1".into() }
    );
    assert_eq!(Url::parse("https://[2606:4700::1111]/h").unwrap().host, "[2606:4700::1111]");
    assert_eq!(Url::parse("https://[2606:4700::1111]/h").unwrap().port, 443);
    assert_eq!(Url::parse("http://p.example?q").unwrap().path, "/?q");
    assert!(check_url("https://hooks.partner.example/in", false).is_ok());
    for (url, problem) in [
        ("http://hooks.partner.example/in", "use https"),
        ("ftp://hooks.partner.example/in", "not https"),
        ("hooks.partner.example/in", "absolute"),
        ("https://user:pw@hooks.partner.example/in", "credentials"),
        ("https://hooks.partner.example/in#x", "fragment"),
        ("https:///in", "no host"),
        ("https://hooks.partner.example:99999/", "port"),
        ("https://127.0.0.1/in", "loopback"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://10.0.0.1/", "private"),
        ("https://[::1]:8080/", "loopback"),
    ] {
        let error = check_url(url, false).unwrap_err();
        assert!(error.contains(problem), "{url}: {error}");
    }
    // The local switch: loopback over http; private ranges stay refused.
    assert!(check_url("http://127.0.0.1:9000/hook", true).is_ok());
    assert!(check_url("http://localhost:9000/hook", true).is_ok());
    assert!(check_url("http://10.0.0.1/hook", true).unwrap_err().contains("private"));
    assert!(check_url("http://partner.example/hook", true).unwrap_err().contains("https"));
}

#[test]
fn verdicts_follow_the_schedule_retry_after_and_status() {
    let policy = RetryPolicy::default();
    assert_eq!(policy.schedule, vec![0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]);
    let status = |status, retry_after| Outcome::Status { status, retry_after };
    assert_eq!(policy.verdict(1, &status(200, None)), Verdict::Delivered);
    assert_eq!(policy.verdict(1, &status(204, None)), Verdict::Delivered);
    // After attempt n, wait schedule[n]: 5 s after the first, 5 min after the second, 24 h after the ninth.
    assert_eq!(policy.verdict(1, &status(500, None)), Verdict::RetryIn(5_000));
    assert_eq!(policy.verdict(2, &status(503, None)), Verdict::RetryIn(300_000));
    assert_eq!(policy.verdict(9, &Outcome::Timeout), Verdict::RetryIn(86_400_000));
    assert_eq!(policy.verdict(3, &Outcome::Connect { error: "refused".into() }), Verdict::RetryIn(1_800_000));
    assert_eq!(policy.verdict(1, &status(408, None)), Verdict::RetryIn(5_000));
    // 429 with Retry-After: the partner's wait, capped at a day.
    assert_eq!(policy.verdict(1, &status(429, Some(42))), Verdict::RetryIn(42_000));
    assert_eq!(policy.verdict(1, &status(429, None)), Verdict::RetryIn(5_000));
    assert_eq!(policy.verdict(1, &status(429, Some(10 * 86400))), Verdict::RetryIn(86_400_000));
    // The tenth attempt was the last.
    match policy.verdict(10, &status(500, None)) {
        Verdict::DeadLetter(reason) => assert!(reason.contains("after 10 attempts"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(policy.verdict(1, &status(410, None)), Verdict::Disable);
    for code in [400, 401, 403, 404, 413, 422] {
        assert!(
            matches!(policy.verdict(1, &status(code, None)), Verdict::DeadLetter(r) if r.contains(&code.to_string()))
        );
    }
    assert!(matches!(policy.verdict(1, &status(302, None)), Verdict::DeadLetter(r) if r.contains("redirect")));
    assert!(matches!(policy.verdict(1, &Outcome::Refused { reason: "loopback".into() }), Verdict::DeadLetter(_)));
    // A shortened schedule (tests, impatient partners).
    let short = RetryPolicy { schedule: vec![0, 1] };
    assert_eq!(short.verdict(1, &Outcome::Timeout), Verdict::RetryIn(1_000));
    assert!(matches!(short.verdict(2, &Outcome::Timeout), Verdict::DeadLetter(_)));
}

fn sample_destination() -> DestinationDefinition {
    serde_json::from_value(json!({
        "id": "crm",
        "url": "https://hooks.partner.example/cdp",
        "secret": SPEC_SECRET,
        "send": {"audiences": ["vip"], "events": [{"events": ["Order Completed"]}], "traits": ["plan"], "tags": ["tier"]},
        "fields": {"traits": ["plan", "email"], "tags": ["tier"]},
        "allowPii": true
    }))
    .unwrap()
}

fn sets() -> (TagSet, AudienceSet) {
    let tags: Vec<TagDefinition> = serde_json::from_value(json!([
        {"id": "tier", "status": "active", "kind": "rule", "when": {"field": "trait:plan", "op": "eq", "value": "pro"}}
    ]))
    .unwrap();
    let tags = TagSet::check(&tags, &Catalog::default()).unwrap();
    let audiences: Vec<AudienceDefinition> = serde_json::from_value(json!([
        {"id": "vip", "status": "active", "when": {"field": "tag:tier", "op": "eq", "value": true}}
    ]))
    .unwrap();
    let audiences = AudienceSet::check(&audiences, &tags, &Catalog::default()).unwrap();
    (tags, audiences)
}

#[test]
fn destinations_are_checked_with_every_problem_named() {
    let (tags, audiences) = sets();
    let good = sample_destination();
    let set =
        DestinationSet::check(std::slice::from_ref(&good), &audiences, &tags, &Catalog::default(), false).unwrap();
    assert_eq!(
        set.get("crm").unwrap().batching,
        Batching { max_events: 100, max_bytes: 256 * 1024, max_wait_ms: 1000 }
    );

    let mut bad = good.clone();
    bad.url = "http://hooks.partner.example/cdp".into();
    bad.allow_pii = false;
    bad.send.audiences.push("nobody".into());
    bad.send.tags.push("ghost".into());
    bad.batching.max_events = 0;
    bad.batching.max_bytes = 10;
    bad.batching.max_wait_ms = 120_000;
    bad.rate_limit_per_second = 0;
    bad.timeout_ms = 5;
    bad.retry_schedule = RetryPolicy { schedule: vec![] };
    bad.headers.insert("Webhook-Signature".into(), "x".into());
    bad.headers.insert("Content-Type".into(), "text/plain".into());
    bad.headers.insert("X-Partner-Key".into(), "a\r\nInjected: 1".into());
    bad.headers.insert("bad header".into(), "x".into());
    let mut nothing = good.clone();
    nothing.send = Subscriptions::default();
    let errors = DestinationSet::check(&[bad, nothing.clone(), nothing], &audiences, &tags, &Catalog::default(), false)
        .unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let expect = [
        ("destinations[0] (crm).url", "use https"),
        ("destinations[0] (crm).send.audiences[1]", "unknown audience `nobody`"),
        ("destinations[0] (crm).send.tags[1]", "unknown tag `ghost`"),
        ("destinations[0] (crm).fields.traits[1]", "trait `email` is personal data; set allowPii"),
        ("destinations[0] (crm).batching.maxEvents", "outside 1–1000"),
        ("destinations[0] (crm).batching.maxBytes", "outside 1 KiB–5 MiB"),
        ("destinations[0] (crm).batching.maxWaitMs", "over 60,000"),
        ("destinations[0] (crm).rateLimitPerSecond", "outside"),
        ("destinations[0] (crm).timeoutMs", "outside"),
        ("destinations[0] (crm).retrySchedule", "1–20 waits"),
        ("destinations[0] (crm).headers.Webhook-Signature", "set by the delivery"),
        ("destinations[0] (crm).headers.Content-Type", "set by the delivery"),
        ("destinations[0] (crm).headers.X-Partner-Key", "line break"),
        ("destinations[0] (crm).headers.bad header", "not a header name"),
        ("destinations[1] (crm).send", "subscribes to nothing"),
        ("destinations[2] (crm).id", "defined twice"),
    ];
    for (path, problem) in expect {
        assert!(
            errors.iter().any(|e| e.path == path && e.problem.contains(problem)),
            "missing {path}: {problem} in {text:#?}"
        );
    }
    // A bad secret or an unknown field fails when the file is read, naming the problem.
    let mut raw = serde_json::to_value(&good).unwrap();
    raw["secret"] = json!("whsec_c2hvcnQ=");
    let error = serde_json::from_value::<DestinationDefinition>(raw).unwrap_err().to_string();
    assert!(error.contains("at least 24"), "{error}");
    let mut raw = serde_json::to_value(&good).unwrap();
    raw["retries"] = json!(3);
    assert!(serde_json::from_value::<DestinationDefinition>(raw).unwrap_err().to_string().contains("retries"));
    // A private literal address is refused even with the local switch; loopback passes with it.
    let mut local = good.clone();
    local.url = "http://127.0.0.1:9000/hook".into();
    assert!(
        DestinationSet::check(std::slice::from_ref(&local), &audiences, &tags, &Catalog::default(), false).is_err()
    );
    assert!(DestinationSet::check(std::slice::from_ref(&local), &audiences, &tags, &Catalog::default(), true).is_ok());
}

#[test]
fn profile_blocks_carry_only_what_the_destination_may_receive() {
    let mut destination = sample_destination();
    let traits = json!({"plan": "pro", "email": "kim@example.com", "city": "Berlin"});
    let traits = traits.as_object().unwrap();
    let tags: BTreeMap<String, Value> = [("tier".to_string(), json!("high")), ("other".to_string(), json!(1))].into();
    let keys = ["anonymous_id:a-1", "email:5d41402abc4b2a76b9719d911017c592", "user_id:u-1"];
    let block = profile_block(&destination, "prof_1", keys, traits, &tags);
    assert_eq!(
        serde_json::to_value(&block).unwrap(),
        json!({
            "id": "prof_1",
            "identifiers": [
                {"type": "anonymous_id", "value": "a-1"},
                {"type": "email", "sha256": "5d41402abc4b2a76b9719d911017c592"},
                {"type": "user_id", "value": "u-1"}
            ],
            "traits": {"plan": "pro", "email": "kim@example.com"},
            "tags": {"tier": "high"}
        })
    );
    // Without allowPii the email trait stays home (even if a definition asked for it); without identifiers, none.
    destination.allow_pii = false;
    destination.fields.identifiers = false;
    let block = profile_block(&destination, "prof_1", keys, traits, &tags);
    assert_eq!(
        serde_json::to_value(&block).unwrap(),
        json!({"id": "prof_1", "traits": {"plan": "pro"}, "tags": {"tier": "high"}})
    );
}

fn item(id: &str, profile: &str) -> Item {
    Item {
        id: id.into(),
        occurred_at: "2026-11-28T12:00:00.000Z".into(),
        profile: ProfileBlock { id: profile.into(), ..ProfileBlock::default() },
        detail: Detail::AudienceEntered { audience: AudienceRef { id: "vip".into(), name: String::new() } },
    }
}

fn message(id: &str, profile: &str, at: i64) -> Message {
    Message { destination: "crm".into(), item: item(id, profile), enqueued_at: at, subject: None }
}

fn at(ms: i64) -> UtcTime {
    UtcTime::from_unix_millis(ms).unwrap()
}

#[test]
fn payloads_follow_the_documented_envelope() {
    let items = vec![
        item("i1", "p1"),
        Item {
            detail: Detail::ProfileUpdated {
                changes: [("trait:plan".to_string(), payload::Change { before: Value::Null, after: json!("pro") })]
                    .into(),
            },
            ..item("i2", "p1")
        },
    ];
    let body = payload::body("crm", items.clone(), at(1_764_331_200_000));
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        value,
        json!({"type": "cdp.batch", "version": 1, "timestamp": "2025-11-28T12:00:00.000Z", "data": {"destination": "crm", "items": [
            {"id": "i1", "type": "audience.entered", "occurredAt": "2026-11-28T12:00:00.000Z", "profile": {"id": "p1"}, "audience": {"id": "vip"}},
            {"id": "i2", "type": "profile.updated", "occurredAt": "2026-11-28T12:00:00.000Z", "profile": {"id": "p1"},
             "changes": {"trait:plan": {"before": null, "after": "pro"}}}
        ]}})
    );
    let back: Envelope = serde_json::from_slice(&body).unwrap();
    assert_eq!(back.data.items, items);
}

#[test]
fn lanes_batch_by_count_bytes_and_wait_and_keep_the_request_across_retries() {
    let batching = Batching { max_events: 3, max_bytes: 100_000, max_wait_ms: 1_000 };
    let mut lane = Lane::default();
    assert_eq!(lane.due(&batching), None);
    assert!(lane.push(message("a", "p1", 10_000)));
    assert!(!lane.push(message("a", "p1", 10_001)), "the same item twice is queued once");
    assert_eq!(lane.due(&batching), Some(11_000), "waits maxWaitMs for company");
    assert!(lane.next("crm", &batching, at(10_999)).is_none());
    lane.push(message("b", "p2", 10_100));
    lane.push(message("c", "p1", 10_200));
    assert_eq!(lane.due(&batching), Some(10_000), "full: due at once");
    lane.push(message("d", "p1", 10_300));
    let first = lane.next("crm", &batching, at(10_300)).unwrap().clone();
    assert_eq!(first.item_ids, ["a", "b", "c"]);
    assert!(first.webhook_id.starts_with("msg_") && first.webhook_id.len() == 36);
    assert_eq!(first.oldest_enqueued_at, 10_000);
    // A failure keeps the same request (same id, same bytes) for the next attempt, due later.
    assert_eq!(
        lane.settle(Verdict::RetryIn(5_000), Some("HTTP 500".into()), 10_400),
        Some(Settled::Retrying { at: 15_400 })
    );
    assert!(lane.next("crm", &batching, at(15_399)).is_none(), "not before it is due; d waits behind it");
    let again = lane.next("crm", &batching, at(15_400)).unwrap().clone();
    assert_eq!((again.webhook_id.as_str(), again.body.as_str()), (first.webhook_id.as_str(), first.body.as_str()));
    assert_eq!(again.attempts, 1);
    assert!(matches!(lane.settle(Verdict::Delivered, None, 15_500), Some(Settled::Delivered(f)) if f.attempts == 2));
    assert!(!lane.push(message("b", "p2", 16_000)), "delivered items are remembered");
    // d alone waits for company until maxWaitMs after it was enqueued.
    assert_eq!(lane.due(&batching), Some(11_300));
    let second = lane.next("crm", &batching, at(15_500)).unwrap().clone();
    assert_eq!(second.item_ids, ["d"]);
    assert_ne!(second.webhook_id, first.webhook_id);
    assert!(
        matches!(lane.settle(Verdict::DeadLetter("HTTP 400".into()), None, 15_600), Some(Settled::Dead(_, r)) if r == "HTTP 400")
    );
    assert!(lane.is_idle());

    // Bytes: items that would pass maxBytes start the next request (one oversized item still goes alone).
    let small = Batching { max_events: 100, max_bytes: 400, max_wait_ms: 0 };
    let mut lane = Lane::default();
    for (i, id) in ["e", "f", "g"].iter().enumerate() {
        lane.push(message(id, "p1", i as i64));
    }
    let one = lane.next("crm", &small, at(10)).unwrap();
    assert_eq!(one.item_ids, ["e"], "one ~190-byte item plus the envelope fills 400 bytes");
    assert!(one.body.len() <= 400 + 200);
}

#[test]
fn a_profile_always_maps_to_the_same_lane_and_profiles_spread_over_lanes() {
    assert_eq!(lane_of("prof_abc"), lane_of("prof_abc"));
    let used: std::collections::BTreeSet<usize> = (0..200).map(|i| lane_of(&format!("prof_{i}"))).collect();
    assert_eq!(used.len(), LANES);
    assert_eq!(message("x", "prof_7", 0).lane(), lane_of("prof_7"));
}

#[test]
fn the_published_schemas_match_the_definitions_and_the_payload() {
    let keys = |v: &Value| -> Vec<String> { v.as_object().expect("object").keys().cloned().collect() };
    let schema: Value =
        serde_json::from_str(include_str!("../../../docs/schemas/destination-definition.schema.json")).unwrap();
    // Every field of a definition (defaults filled in) is in the schema, and nothing else.
    let full = serde_json::to_value(DestinationDefinition {
        previous_secrets: vec![PreviousSecret { secret: Secret::from_bytes(&[1; 24]), until: 1 }],
        purposes: vec!["marketing".into()],
        expected: crate::tags::Expected::All(true),
        ..sample_destination()
    })
    .unwrap();
    let mut top = keys(&schema["properties"]);
    let mut fields = keys(&full);
    top.sort();
    fields.sort();
    assert_eq!(top, fields);
    for nested in ["send", "fields", "batching"] {
        let mut a = keys(&schema["properties"][nested]["properties"]);
        let mut b = keys(&full[nested]);
        a.sort();
        b.sort();
        assert_eq!(a, b, "{nested}");
    }
    assert_eq!(schema["properties"]["retrySchedule"]["default"], json!(retry::STANDARD_SCHEDULE));
    assert_eq!(
        schema["properties"]["batching"]["properties"]["maxBytes"]["default"],
        json!(Batching::default().max_bytes)
    );

    let payload: Value =
        serde_json::from_str(include_str!("../../../docs/schemas/webhook-payload-v1.schema.json")).unwrap();
    let detail = |d: Detail| serde_json::to_value(Item { detail: d, ..item("i", "p") }).unwrap();
    let audience = AudienceRef { id: "vip".into(), name: "VIP".into() };
    let samples = [
        detail(Detail::AudienceEntered { audience: audience.clone() }),
        detail(Detail::AudienceExited { audience }),
        detail(Detail::EventTriggered {
            event: payload::TriggeredEvent {
                message_id: "m".into(),
                kind: "track".into(),
                event: Some("Order Completed".into()),
                properties: serde_json::Map::new(),
                timestamp: "2026-11-28T12:00:00.000Z".into(),
            },
        }),
        detail(Detail::ProfileUpdated { changes: BTreeMap::new() }),
        detail(Detail::ProfileDeleted {}),
    ];
    let types: Vec<&str> = samples.iter().map(|s| s["type"].as_str().unwrap()).collect();
    assert_eq!(json!(types), payload["$defs"]["item"]["properties"]["type"]["enum"]);
    let allowed = keys(&payload["$defs"]["item"]["properties"]);
    for sample in &samples {
        for key in keys(sample) {
            assert!(allowed.contains(&key), "{key} is not in the payload schema");
        }
        for key in keys(&sample["event"].as_object().map_or(json!({}), |o| Value::Object(o.clone()))) {
            assert!(payload["$defs"]["item"]["properties"]["event"]["properties"].get(&key).is_some(), "event.{key}");
        }
    }
    let envelope: Value = serde_json::from_slice(&payload::body("crm", vec![item("i", "p")], at(0))).unwrap();
    let mut a = keys(&payload["properties"]);
    let mut b = keys(&envelope);
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_eq!(payload["properties"]["version"]["const"], json!(payload::VERSION));
    assert_eq!(payload["properties"]["type"]["const"], json!(payload::BATCH_TYPE));
}

#[test]
fn profiles_changes_become_items_for_the_subscribed_destinations_with_stable_ids() {
    let (tags, audiences) = sets();
    let mut crm = sample_destination();
    crm.send.events = vec![
        serde_json::from_value(
            json!({"events": ["Order Completed"], "properties": [{"field": "total", "op": "gte", "value": 100}]}),
        )
        .unwrap(),
    ];
    let mut ads = sample_destination();
    ads.id = "ads".into();
    ads.send = serde_json::from_value(json!({"audiences": ["vip"]})).unwrap();
    ads.fields = serde_json::from_value(json!({"identifiers": false})).unwrap();
    let mut off = ads.clone();
    off.id = "off".into();
    off.enabled = false;
    let set = DestinationSet::check(&[crm, ads, off], &audiences, &tags, &Catalog::default(), false).unwrap();

    // Membership: the first entry is change 1, staying is no change, leaving is change 2.
    let mut memberships = BTreeMap::new();
    let decided: BTreeMap<String, bool> = [("vip".to_string(), true), ("other".to_string(), false)].into();
    let changes = crate::audiences::record_memberships(&mut memberships, &decided, 1_000);
    assert_eq!(changes, [("vip".to_string(), true, 1)]);
    assert!(crate::audiences::record_memberships(&mut memberships, &decided, 2_000).is_empty());
    let left = crate::audiences::record_memberships(&mut memberships, &[("vip".to_string(), false)].into(), 3_000);
    assert_eq!(left, [("vip".to_string(), false, 2)]);
    assert_eq!(memberships["vip"], crate::profile::Membership { member: false, since: 3_000, changes: 2 });

    let keys = vec!["user_id:u-1".to_string()];
    let traits = json!({"plan": "pro", "email": "kim@example.com"});
    let tags_now: BTreeMap<String, Value> = [("tier".to_string(), json!(true))].into();
    let no_choice = BTreeMap::new();
    let profile = ProfileNow {
        id: "prof_1",
        keys: &keys,
        traits: traits.as_object().unwrap(),
        tags: &tags_now,
        consent: &no_choice,
    };
    let names: BTreeMap<String, String> = [("vip".to_string(), "VIPs".to_string())].into();
    let entered = set.audience_messages(&profile, &changes, &names, at(5_000));
    assert_eq!(
        entered.iter().map(|m| m.destination.as_str()).collect::<Vec<_>>(),
        ["crm", "ads"],
        "not the turned-off one"
    );
    let value = serde_json::to_value(&entered[1].item).unwrap();
    assert_eq!(value["type"], "audience.entered");
    assert_eq!(value["audience"], json!({"id": "vip", "name": "VIPs"}));
    assert_eq!(value["profile"], json!({"id": "prof_1"}), "ads asked for no fields");
    assert_eq!(entered[0].item.profile.traits.get("email"), Some(&json!("kim@example.com")), "crm may receive PII");
    // The same change computed again (a retried batch, later) has the same id; the next change another.
    let again = set.audience_messages(&profile, &changes, &names, at(9_999));
    assert_eq!(again[0].item.id, entered[0].item.id);
    assert_ne!(set.audience_messages(&profile, &left, &names, at(9_999))[0].item.id, entered[0].item.id);
    assert_ne!(entered[0].item.id, entered[1].item.id, "per destination");

    // Triggers: only events that pass the filter, for the destinations that have it.
    let event = |name: &str, total: f64| -> crate::event::CanonicalEvent {
        serde_json::from_value(json!({
            "messageId": format!("m-{name}-{total}"), "type": "track", "event": name, "sourceId": "web",
            "receivedAt": "2026-11-28T12:00:00.000Z", "timestamp": "2026-11-28T12:00:00.000Z",
            "properties": {"total": total}, "userId": "u-1"
        }))
        .unwrap()
    };
    let fired = set.trigger_messages(&profile, &event("Order Completed", 120.0), at(5_000));
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].destination, "crm");
    let value = serde_json::to_value(&fired[0].item).unwrap();
    assert_eq!(value["type"], "event.triggered");
    assert_eq!(value["event"]["properties"], json!({"total": 120.0}));
    assert_eq!(value["occurredAt"], "2026-11-28T12:00:00.000Z");
    assert!(set.trigger_messages(&profile, &event("Order Completed", 99.0), at(5_000)).is_empty());
    assert!(set.trigger_messages(&profile, &event("Product Viewed", 500.0), at(5_000)).is_empty());
    // The same messageId from another source is another event: another webhook id, which partners keep.
    let mut elsewhere = event("Order Completed", 120.0);
    elsewhere.source_id = format!("{}-other", elsewhere.source_id);
    let other = set.trigger_messages(&profile, &elsewhere, at(5_000));
    assert_ne!(other[0].item.id, fired[0].item.id);

    // Changes of subscribed traits and tags, with before and after.
    let before = json!({"plan": "free"});
    let changed = set.change_messages(&profile, before.as_object().unwrap(), &BTreeMap::new(), at(5_000));
    assert_eq!(changed.len(), 1);
    let value = serde_json::to_value(&changed[0].item).unwrap();
    assert_eq!(
        value["changes"],
        json!({"trait:plan": {"before": "free", "after": "pro"}, "tag:tier": {"before": null, "after": true}})
    );
    assert!(set.change_messages(&profile, profile.traits, profile.tags, at(5_000)).is_empty(), "no change, no item");
}

#[test]
fn outcomes_and_partner_results_become_events_tied_to_the_profile() {
    use super::feedback::{PartnerResult, outcome_event, subject_of};
    let keys: Vec<String> = ["anonymous_id:a-1", "email:5d41", "user_id:u-1"].iter().map(|k| k.to_string()).collect();
    assert_eq!(subject_of(&keys).as_deref(), Some("user_id:u-1"));
    assert_eq!(subject_of(&keys[..2]).as_deref(), Some("anonymous_id:a-1"));
    assert_eq!(subject_of(&keys[1..2]).as_deref(), Some("email:5d41"));
    assert_eq!(subject_of(&[]), None);

    let delivered = outcome_event("crm", "msg_1", &item("i1", "p1"), "user_id:u-1", 2, None, at(5_000)).unwrap();
    assert_eq!(delivered.event.as_deref(), Some("Audience Delivered"));
    assert_eq!((delivered.user_id.as_deref(), delivered.source_id.as_str()), (Some("u-1"), feedback::SYSTEM_SOURCE));
    assert_eq!(delivered.properties.as_ref().unwrap()["audience"], "vip");
    assert_eq!(delivered.properties.as_ref().unwrap()["attempts"], 2);
    let failed =
        outcome_event("crm", "msg_1", &item("i1", "p1"), "email:5d41", 10, Some("HTTP 400"), at(5_000)).unwrap();
    assert_eq!(failed.event.as_deref(), Some("Webhook Failed"));
    assert_eq!(failed.properties.as_ref().unwrap()["reason"], "HTTP 400");
    assert_eq!(failed.identifiers[0].sha256.as_deref(), Some("5d41"), "a hashed key stays the key");
    assert_ne!(failed.message_id, delivered.message_id);
    assert_eq!(
        outcome_event("crm", "msg_1", &item("i1", "p1"), "user_id:u-1", 3, None, at(9_000)).unwrap().message_id,
        delivered.message_id,
        "the same outcome is one event"
    );
    // Outcome events never trigger deliveries.
    let (tags, audiences) = sets();
    let mut everything = sample_destination();
    everything.send.events = vec![serde_json::from_value(json!({})).unwrap()];
    let set = DestinationSet::check(&[everything], &audiences, &tags, &Catalog::default(), false).unwrap();
    let none = BTreeMap::new();
    let no_choice = BTreeMap::new();
    let profile =
        ProfileNow { id: "p1", keys: &keys, traits: &serde_json::Map::new(), tags: &none, consent: &no_choice };
    assert!(set.trigger_messages(&profile, &delivered, at(5_000)).is_empty());

    let result = |v: Value| serde_json::from_value::<PartnerResult>(v).unwrap();
    assert_eq!(result(json!({"result": "opened", "profileId": "prof_1"})).check(), Ok(None));
    assert_eq!(
        result(json!({"result": "clicked", "identifier": {"type": "email", "value": " Kim@Example.com "}})).check(),
        Ok(Some(format!("email:{}", crate::ids::sha256_hex("kim@example.com"))))
    );
    assert_eq!(
        result(json!({"result": "sent", "identifier": {"type": "user_id", "value": "u-1"}})).check(),
        Ok(Some("user_id:u-1".into()))
    );
    for (bad, problem) in [
        (json!({"result": "Opened", "profileId": "prof_1"}), "lower-case"),
        (json!({"result": "opened"}), "name the profile"),
        (json!({"result": "opened", "profileId": "p", "identifier": {"type": "user_id", "value": "u"}}), "not both"),
        (json!({"result": "opened", "identifier": {"type": "phone", "value": "+4930"}}), "sha256"),
        (json!({"result": "opened", "identifier": {"type": "email", "sha256": "abc"}}), "64 hex"),
        (json!({"result": "opened", "profileId": "p", "timestamp": "yesterday"}), "ISO-8601"),
    ] {
        let error = result(bad.clone()).check().unwrap_err();
        assert!(error.contains(problem), "{bad}: {error}");
    }
    let event = result(json!({"result": "clicked", "profileId": "prof_1", "properties": {"campaign": "w"}}))
        .event("crm", "req-1", 0, "user_id:u-1", at(5_000))
        .unwrap();
    assert_eq!(event.event.as_deref(), Some(feedback::FEEDBACK_EVENT));
    assert_eq!(event.source_id, "partner:crm");
    assert_eq!(event.properties.as_ref().unwrap()["result"], "clicked");
    assert_eq!(event.properties.as_ref().unwrap()["campaign"], "w");
}

#[test]
fn an_erased_profile_leaves_the_lane_but_its_deletion_notice_stays() {
    let batching = Batching { max_events: 3, max_bytes: 100_000, max_wait_ms: 0 };
    let mut lane = Lane::default();
    lane.push(message("a", "gone", 1));
    lane.push(message("b", "kept", 2));
    lane.push(message("c", "gone", 3));
    let in_flight = lane.next("crm", &batching, at(10)).unwrap().clone();
    assert_eq!(in_flight.item_ids, ["a", "b", "c"]);
    lane.push(message("d", "gone", 11));
    lane.push(Message {
        item: Item { detail: Detail::ProfileDeleted {}, ..item("notice", "gone") },
        ..message("x", "gone", 12)
    });
    lane.push(message("e", "kept", 13));

    let forgotten: std::collections::BTreeSet<String> = ["gone".to_string()].into();
    assert_eq!(lane.forget(&forgotten), 3);
    let current = lane.current.clone().unwrap();
    assert_eq!(current.item_ids, ["b"]);
    assert_eq!(current.webhook_id, in_flight.webhook_id, "the request keeps its id");
    assert!(!current.body.contains("\"gone\""), "{}", current.body);
    let body: Value = serde_json::from_str(&current.body).unwrap();
    assert_eq!(body["data"]["items"][0]["id"], "b");
    let pending: Vec<&str> = lane.pending.iter().map(|m| m.item.id.as_str()).collect();
    assert_eq!(pending, ["notice", "e"], "the deletion notice stays");
    // A request only about the person is dropped whole.
    let mut only = Lane::default();
    only.push(message("f", "gone", 1));
    only.next("crm", &batching, at(10));
    assert_eq!(only.forget(&forgotten), 1);
    assert!(only.is_idle());
}

#[test]
fn a_person_who_denied_a_purpose_gets_nothing_from_destinations_serving_it() {
    use crate::event::CanonicalEvent;
    use crate::profile::{Profile, ProfileRules};
    let tags = TagSet::check(&[], &Catalog::default()).unwrap();
    let audiences = AudienceSet::check(&[], &tags, &Catalog::default()).unwrap();
    let destination = |id: &str, purposes: Value| -> DestinationDefinition {
        serde_json::from_value(json!({"id": id, "url": "https://p.example/h", "secret": SPEC_SECRET,
            "send": {"events": [{"events": ["Order Completed"]}]}, "purposes": purposes}))
        .unwrap()
    };
    let set = DestinationSet::check(
        &[destination("ads", json!(["marketing"])), destination("crm", json!([]))],
        &audiences,
        &tags,
        &Catalog::default(),
        false,
    )
    .unwrap();
    let event = |msg: &str, second: u32, marketing: Option<bool>| {
        let mut e: CanonicalEvent = serde_json::from_value(json!({
            "messageId": msg, "type": "track", "event": "Order Completed", "sourceId": "web", "userId": "u1",
            "receivedAt": format!("2026-11-28T12:00:{second:02}.000Z"),
            "timestamp": format!("2026-11-28T12:00:{second:02}.000Z")}))
        .unwrap();
        if let Some(granted) = marketing {
            e.context
                .insert("consent".into(), json!({"categoryPreferences": {"marketing": granted, "analytics": true}}));
        }
        e
    };
    let mut profile = Profile::new("prof_1".into());
    let sent_to = |profile: &Profile, e: &CanonicalEvent| -> Vec<String> {
        let keys = vec!["user_id:u1".to_string()];
        let (traits, tags) = (serde_json::Map::new(), BTreeMap::new());
        let view = ProfileNow { id: &profile.id, keys: &keys, traits: &traits, tags: &tags, consent: &profile.consent };
        set.trigger_messages(&view, e, at(5_000)).into_iter().map(|m| m.destination).collect()
    };
    let rules = ProfileRules::default();
    // No choice yet: both; marketing denied: only the destination serving no purpose.
    let first = event("m1", 1, None);
    profile.apply(&first, &rules);
    assert_eq!(sent_to(&profile, &first), ["ads", "crm"]);
    let denied = event("m2", 2, Some(false));
    profile.apply(&denied, &rules);
    assert!(profile.denies("marketing") && !profile.denies("analytics"));
    assert_eq!(sent_to(&profile, &denied), ["crm"]);
    // An older event's grant does not undo a later denial; a later grant does (for what comes after).
    profile.apply(&event("m0", 0, Some(true)), &rules);
    assert!(profile.denies("marketing"));
    let granted = event("m3", 3, Some(true));
    profile.apply(&granted, &rules);
    assert_eq!(sent_to(&profile, &granted), ["ads", "crm"]);
    // A bad purpose name is refused where the destination is defined.
    let bad = DestinationSet::check(
        &[destination("x", json!(["Mark eting"]))],
        &audiences,
        &tags,
        &Catalog::default(),
        false,
    );
    assert!(bad.unwrap_err().iter().any(|e| e.to_string().contains("purposes[0]")));
}
