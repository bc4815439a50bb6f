//! Enrichment: client IP (anonymized when the source says so), geo, parsed user agent and bot flag, UTM
//! campaign, and the identifiers ID-Mapping keys on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::event::{CanonicalEvent, Geo, Identifier, UserAgentInfo};
use crate::ids::sha256_hex;
use crate::source::SourceSettings;

/// Enriches the events of one request. Parsing a user agent costs far more than normalizing an event, and a
/// batch almost always comes from one client, so parses are remembered for the request.
pub(crate) struct Enricher<'a> {
    settings: &'a SourceSettings,
    /// The request's address as stored (anonymized when the source says so), formatted once per request.
    request_ip: Option<String>,
    header_user_agent: Option<&'a str>,
    geo: Option<Arc<Geo>>,
    parser: woothee::parser::Parser,
    /// The last agent seen: almost every event of a batch has it, and comparing is cheaper than hashing.
    last_agent: Option<(String, Option<Arc<UserAgentInfo>>)>,
    agents: HashMap<String, Option<Arc<UserAgentInfo>>>,
}

impl<'a> Enricher<'a> {
    pub(crate) fn new(
        settings: &'a SourceSettings,
        client_ip: Option<IpAddr>,
        header_user_agent: Option<&'a str>,
        geo: Option<&'a Geo>,
    ) -> Self {
        let request_ip = client_ip.map(|ip| stored_ip(settings, ip));
        Self {
            settings,
            request_ip,
            header_user_agent,
            geo: geo.cloned().map(Arc::new),
            parser: woothee::parser::Parser::new(),
            last_agent: None,
            agents: HashMap::new(),
        }
    }

    pub(crate) fn enrich(&mut self, event: &mut CanonicalEvent) {
        self.ip(&mut event.context);
        event.enrichment.geo = self.geo.clone();

        let agent = match event.context.get("userAgent") {
            Some(Value::String(ua)) => Some(ua.as_str()),
            _ => self.header_user_agent,
        };
        if let Some(agent) = agent.filter(|a| !a.trim().is_empty()) {
            let parsed = match &self.last_agent {
                Some((last, parsed)) if last == agent => parsed.clone(),
                _ => {
                    let parsed = match self.agents.get(agent) {
                        Some(parsed) => parsed.clone(),
                        None => {
                            let parsed = parse_user_agent(&self.parser, agent).map(Arc::new);
                            self.agents.insert(agent.to_string(), parsed.clone());
                            parsed
                        }
                    };
                    self.last_agent = Some((agent.to_string(), parsed.clone()));
                    parsed
                }
            };
            event.enrichment.bot = parsed.as_ref().is_some_and(|p| p.device_type == "crawler");
            event.enrichment.user_agent = parsed;
        }

        if !matches!(event.context.get("campaign"), Some(Value::Object(_))) {
            let url = event.context.get("page").and_then(|p| p.get("url")).and_then(Value::as_str);
            // Most URLs carry no campaign: skip the query parse for them.
            if let Some(campaign) = url.filter(|u| u.contains("utm_")).and_then(campaign_from_url) {
                event.context.insert("campaign".to_string(), Value::Object(campaign));
            }
        }

        event.identifiers = identifiers(event, self.settings.default_calling_code.as_deref());
    }

    /// `context.ip`: a server source may relay its user's address there; otherwise the request's.
    fn ip(&self, context: &mut Map<String, Value>) {
        if !self.settings.collect_ip {
            context.remove("ip");
            return;
        }
        let sent = context.get("ip").and_then(Value::as_str).and_then(|s| s.trim().parse::<IpAddr>().ok());
        let stored = match sent {
            Some(ip) => Some(stored_ip(self.settings, ip)),
            None => self.request_ip.clone(),
        };
        match stored {
            Some(ip) => {
                context.insert("ip".to_string(), Value::String(ip));
            }
            None => {
                context.remove("ip");
            }
        }
    }
}

/// The address as stored for this source.
fn stored_ip(settings: &SourceSettings, ip: IpAddr) -> String {
    if settings.anonymize_ip { anonymize_ip(ip) } else { ip }.to_string()
}

/// Zeroes the host part: the last octet of an IPv4 address, the last 80 bits of an IPv6 address (as Google
/// Analytics does), leaving enough for country-level analysis and too little to single out a household.
pub fn anonymize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[6..].fill(0);
            IpAddr::from(octets)
        }
    }
}

fn parse_user_agent(parser: &woothee::parser::Parser, agent: &str) -> Option<UserAgentInfo> {
    let r = parser.parse(agent)?;
    let known = |s: &str| if s == "UNKNOWN" { String::new() } else { s.to_string() };
    Some(UserAgentInfo {
        browser: r.name.to_string(),
        browser_version: known(r.version),
        os: r.os.to_string(),
        os_version: known(&r.os_version),
        device_type: r.category.to_string(),
    })
}

/// The Segment `context.campaign` object from a page URL's `utm_*` parameters, if it has any.
pub fn campaign_from_url(url: &str) -> Option<Map<String, Value>> {
    let query = url.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    let mut campaign = Map::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let field = match key.as_ref() {
            "utm_campaign" => "name",
            "utm_source" => "source",
            "utm_medium" => "medium",
            "utm_term" => "term",
            "utm_content" => "content",
            "utm_id" => "id",
            _ => continue,
        };
        let value = value.trim();
        if !value.is_empty() && !campaign.contains_key(field) {
            campaign.insert(field.to_string(), Value::String(value.to_string()));
        }
    }
    (!campaign.is_empty()).then_some(campaign)
}

fn identifiers(event: &CanonicalEvent, calling_code: Option<&str>) -> Vec<Identifier> {
    let mut out = Vec::new();
    let plain = |kind: &str, value: &str| Identifier { kind: kind.to_string(), value: value.to_string(), sha256: None };
    if let Some(id) = &event.user_id {
        out.push(plain("user_id", id));
    }
    if let Some(id) = &event.anonymous_id {
        out.push(plain("anonymous_id", id));
    }
    let device = event.context.get("device");
    if let Some(id) = device.and_then(|d| d.get("id")).and_then(Value::as_str) {
        let id = id.trim();
        if !id.is_empty() {
            out.push(plain("device_id", id));
        }
    }
    // The mobile SDKs' advertising id (IDFA, Android's advertising id), unless the person limited ad tracking
    // (the SDKs then send zeros), case-folded: iOS writes it upper-case, Android lower-case.
    let tracking = device.and_then(|d| d.get("adTrackingEnabled")).and_then(Value::as_bool) != Some(false);
    if let Some(id) = device.and_then(|d| d.get("advertisingId")).and_then(Value::as_str).filter(|_| tracking) {
        let id = id.trim().to_ascii_lowercase();
        if id.bytes().any(|b| b.is_ascii_alphanumeric() && b != b'0') {
            out.push(plain("advertising_id", &id));
        }
    }
    // Traits travel in `traits` (identify) or `context.traits` (every other call, from the SDK's cache).
    let trait_sources = [event.traits.as_ref(), event.context.get("traits").and_then(Value::as_object)];
    for traits in trait_sources.into_iter().flatten() {
        if let Some(email) = traits.get("email").and_then(Value::as_str).and_then(normalize_email) {
            push_hashed(&mut out, "email", email);
        }
        if let Some(phone) = traits.get("phone").and_then(Value::as_str).and_then(|p| normalize_phone(p, calling_code))
        {
            push_hashed(&mut out, "phone", phone);
        }
    }
    out
}

fn push_hashed(out: &mut Vec<Identifier>, kind: &str, value: String) {
    if out.iter().any(|i| i.kind == kind && i.value == value) {
        return;
    }
    let sha256 = Some(sha256_hex(&value));
    out.push(Identifier { kind: kind.to_string(), value, sha256 });
}

/// Trimmed and lower-cased; `None` unless it looks like `local@domain`.
pub fn normalize_email(email: &str) -> Option<String> {
    let email = email.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let ok =
        !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !email.contains(char::is_whitespace);
    ok.then_some(email)
}

/// E.164 (`+` and 8 to 15 digits) wherever the country is known: numbers written internationally (`+49 30 …`,
/// `0049 30 …`), or national numbers from a source with a default calling code (`030 1234567` with `49` →
/// `+49301234567`, the trunk `0` dropped). Without a country, the digits as written. `None` when the digits
/// cannot be a phone number (fewer than 7, more than 15).
pub fn normalize_phone(phone: &str, default_calling_code: Option<&str>) -> Option<String> {
    let phone = phone.trim();
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let international = if phone.starts_with('+') {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else if let Some(code) = default_calling_code {
        format!("{code}{}", digits.strip_prefix('0').unwrap_or(&digits))
    } else {
        return (7..=15).contains(&digits.len()).then_some(digits);
    };
    (8..=15).contains(&international.len()).then(|| format!("+{international}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::event::{Enrichment, EventType};
    use crate::time::UtcTime;

    fn event(context: Value, traits: Option<Value>) -> CanonicalEvent {
        let now = UtcTime::from_unix_millis(0).unwrap();
        CanonicalEvent {
            message_id: "m".into(),
            kind: EventType::Identify,
            source_id: "s".into(),
            received_at: now,
            timestamp: now,
            original_timestamp: None,
            sent_at: None,
            user_id: Some("u1".into()),
            anonymous_id: Some("a1".into()),
            event: None,
            name: None,
            category: None,
            group_id: None,
            previous_id: None,
            properties: None,
            traits: traits.and_then(|t| t.as_object().cloned()),
            context: context.as_object().cloned().unwrap_or_default(),
            integrations: Map::new(),
            identifiers: vec![],
            enrichment: Enrichment::default(),
            extras: Map::new(),
        }
    }

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

    #[test]
    fn utm_parameters_become_the_campaign() {
        let c = campaign_from_url(
            "https://shop.example/p?utm_source=news%20letter&utm_medium=email&utm_campaign=black+friday&utm_term=shoes&utm_content=hero&x=1#top",
        )
        .unwrap();
        assert_eq!(
            Value::Object(c),
            json!({"source": "news letter", "medium": "email", "name": "black friday", "term": "shoes", "content": "hero"})
        );
        assert!(campaign_from_url("https://shop.example/p?x=1").is_none());
        assert!(campaign_from_url("https://shop.example/p").is_none());
        assert!(campaign_from_url("https://shop.example/p#utm_source=x").is_none());
    }

    #[test]
    fn campaign_is_filled_only_when_the_client_sent_none() {
        let settings = SourceSettings::default();
        let mut e = event(json!({"page": {"url": "https://s.example/?utm_source=ads"}}), None);
        Enricher::new(&settings, None, None, None).enrich(&mut e);
        assert_eq!(e.context["campaign"], json!({"source": "ads"}));
        let mut e =
            event(json!({"page": {"url": "https://s.example/?utm_source=ads"}, "campaign": {"name": "x"}}), None);
        Enricher::new(&settings, None, None, None).enrich(&mut e);
        assert_eq!(e.context["campaign"], json!({"name": "x"}));
    }

    #[test]
    fn ips_are_anonymized_when_the_source_says_so() {
        assert_eq!(anonymize_ip("203.0.113.77".parse().unwrap()).to_string(), "203.0.113.0");
        assert_eq!(anonymize_ip("2001:db8:1234:5678:9abc::1".parse().unwrap()).to_string(), "2001:db8:1234::");
        let ip: IpAddr = "198.51.100.23".parse().unwrap();
        let mut settings = SourceSettings::default();
        let mut e = event(json!({}), None);
        Enricher::new(&settings, Some(ip), None, None).enrich(&mut e);
        assert_eq!(e.context["ip"], "198.51.100.0");
        settings.anonymize_ip = false;
        let mut e = event(json!({}), None);
        Enricher::new(&settings, Some(ip), None, None).enrich(&mut e);
        assert_eq!(e.context["ip"], "198.51.100.23");
        // A server source relays its user's address in context.ip; it wins over the server's own.
        let mut e = event(json!({"ip": "192.0.2.9"}), None);
        Enricher::new(&settings, Some(ip), None, None).enrich(&mut e);
        assert_eq!(e.context["ip"], "192.0.2.9");
        settings.collect_ip = false;
        let mut e = event(json!({"ip": "192.0.2.9"}), None);
        Enricher::new(&settings, Some(ip), None, None).enrich(&mut e);
        assert!(!e.context.contains_key("ip"));
    }

    #[test]
    fn user_agents_are_parsed_and_bots_flagged() {
        let settings = SourceSettings::default();
        let mut enricher = Enricher::new(&settings, None, Some(GOOGLEBOT), None);
        let mut e = event(json!({"userAgent": CHROME}), None);
        enricher.enrich(&mut e);
        let ua = e.enrichment.user_agent.clone().unwrap();
        assert_eq!((ua.browser.as_str(), ua.os.as_str(), ua.device_type.as_str()), ("Chrome", "Windows 10", "pc"));
        assert_eq!(ua.browser_version, "120.0.0.0");
        assert!(!e.enrichment.bot);
        // No context.userAgent: the header's is used.
        let mut e = event(json!({}), None);
        enricher.enrich(&mut e);
        assert!(e.enrichment.bot);
        assert_eq!(e.enrichment.user_agent.unwrap().browser, "Googlebot");
    }

    #[test]
    fn geo_comes_from_the_request() {
        let settings = SourceSettings::default();
        let geo = Geo { country: Some("DE".into()), city: Some("Berlin".into()), ..Geo::default() };
        let mut e = event(json!({}), None);
        Enricher::new(&settings, None, None, Some(&geo)).enrich(&mut e);
        assert_eq!(e.enrichment.geo.as_deref(), Some(&geo));
    }

    #[test]
    fn identifiers_are_extracted_and_pii_hashed() {
        let settings = SourceSettings::default();
        let mut e = event(
            json!({"device": {"id": " d-1 "}, "traits": {"email": "jane@example.com"}}),
            Some(json!({"email": "  Jane@Example.COM ", "phone": "+49 (30) 1234-5678"})),
        );
        Enricher::new(&settings, None, None, None).enrich(&mut e);
        let kinds: Vec<(&str, &str)> = e.identifiers.iter().map(|i| (i.kind.as_str(), i.value.as_str())).collect();
        assert_eq!(
            kinds,
            vec![
                ("user_id", "u1"),
                ("anonymous_id", "a1"),
                ("device_id", "d-1"),
                ("email", "jane@example.com"),
                ("phone", "+493012345678"),
            ]
        );
        assert_eq!(e.identifiers[3].sha256.as_deref(), Some(sha256_hex("jane@example.com").as_str()));
        assert!(e.identifiers[0].sha256.is_none());
    }

    #[test]
    fn advertising_ids_unless_ad_tracking_is_limited() {
        let settings = SourceSettings::default();
        let advertising = |device: Value| -> Vec<String> {
            let mut e = event(json!({ "device": device }), None);
            Enricher::new(&settings, None, None, None).enrich(&mut e);
            e.identifiers.into_iter().filter(|i| i.kind == "advertising_id").map(|i| i.value).collect()
        };
        assert_eq!(
            advertising(json!({"advertisingId": "6D92078A-8246-4BA4-AE5B-76104861E7DC"})),
            ["6d92078a-8246-4ba4-ae5b-76104861e7dc"]
        );
        assert_eq!(
            advertising(json!({"advertisingId": "38400000-8cf0-11bd-b23e-10b96e40000d", "adTrackingEnabled": true})),
            ["38400000-8cf0-11bd-b23e-10b96e40000d"]
        );
        assert!(
            advertising(json!({"advertisingId": "38400000-8cf0-11bd-b23e-10b96e40000d", "adTrackingEnabled": false}))
                .is_empty()
        );
        assert!(advertising(json!({"advertisingId": "00000000-0000-0000-0000-000000000000"})).is_empty(), "zeros");
        assert!(advertising(json!({"advertisingId": "  "})).is_empty());
    }

    #[test]
    fn bad_emails_and_phones_are_not_identifiers() {
        assert_eq!(normalize_email("not-an-email"), None);
        assert_eq!(normalize_email("a@b"), None);
        assert_eq!(normalize_email("a b@c.de"), None);
        assert_eq!(normalize_phone("123", None), None);
        assert_eq!(normalize_phone("030 1234567", None).as_deref(), Some("0301234567"), "no country: as written");
    }

    #[test]
    fn the_source_calling_code_makes_national_phones_e164() {
        let settings = SourceSettings { default_calling_code: Some("49".into()), ..SourceSettings::default() };
        let mut e = event(json!({}), Some(json!({"phone": "030 1234567"})));
        Enricher::new(&settings, None, None, None).enrich(&mut e);
        let phone = e.identifiers.iter().find(|i| i.kind == "phone").unwrap();
        assert_eq!(phone.value, "+49301234567");
        assert_eq!(phone.sha256.as_deref(), Some(sha256_hex("+49301234567").as_str()));
    }

    #[test]
    fn phones_become_e164_where_the_country_is_known() {
        assert_eq!(normalize_phone("+49 (30) 1234-567", None).as_deref(), Some("+49301234567"));
        assert_eq!(normalize_phone("0049 30 1234567", None).as_deref(), Some("+49301234567"));
        assert_eq!(normalize_phone("030 1234567", Some("49")).as_deref(), Some("+49301234567"));
        assert_eq!(normalize_phone("(415) 555-0100", Some("1")).as_deref(), Some("+14155550100"));
        assert_eq!(normalize_phone("+49 1234567890123456", None), None, "more than 15 digits");
        assert_eq!(normalize_phone("+1 234", None), None);
    }
}
