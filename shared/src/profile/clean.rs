//! Cleaning (数据清洗) of trait and event property values: trimmed, emails case-folded, phone numbers in
//! E.164, dates in ISO 8601 UTC, numbers from numeric strings, empty strings absent. The raw event (and the
//! event lake) keeps the value as sent; the profile holds the clean one, and tags, audiences, triggers and
//! aggregates read properties cleaned. A value that cannot be cleaned is kept as sent and reported
//! as a data-quality issue (the data dictionary counts them per name), never dropped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::collect::normalize_phone;
use crate::error::Invalid;
use crate::event::CanonicalEvent;
use crate::time::iso_date;

/// One cleaning step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Clean {
    /// Leading and trailing white space removed.
    Trim,
    /// An empty string (after the steps before) is absent: it sets nothing.
    EmptyAbsent,
    /// Case-folded (emails: `User1@Example.com` → `user1@example.com`).
    Lowercase,
    /// A phone number in E.164 (`+8613800138000`), with the default region for numbers without a country code.
    Phone,
    /// A date (`2024-03-05`) or a date-time in ISO 8601 UTC (`2024-03-05T02:00:00.000Z`).
    Date,
    /// A number from a numeric string (`"12.50"` → `12.5`).
    Number,
}

/// How values are cleaned: per name (a trait, or an event property), with defaults by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CleaningRules {
    /// Steps per name, replacing that name's defaults (`[]` leaves its values as sent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, Vec<Clean>>,
    /// Region of phone numbers written without a country code (ISO 3166 alpha-2: `CN`, `US`, `GB`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_region: Option<String>,
    /// Whether names without their own steps get the defaults ([`CleaningRules::defaults_for`]).
    #[serde(default = "yes")]
    pub defaults: bool,
}

fn yes() -> bool {
    true
}

impl Default for CleaningRules {
    fn default() -> Self {
        Self { fields: BTreeMap::new(), default_region: None, defaults: true }
    }
}

/// What cleaning made of a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cleaned {
    /// Already clean.
    Kept,
    /// The clean value.
    Changed(Value),
    /// Nothing: an empty string.
    Absent,
    /// Could not be cleaned: kept as sent, with the reason.
    Issue(String),
}

impl Cleaned {
    /// The value to store for `sent`: the clean one, or `sent` itself (kept or not cleanable); none when absent.
    pub fn value_for(self, sent: &Value) -> Option<Value> {
        match self {
            Cleaned::Kept | Cleaned::Issue(_) => Some(sent.clone()),
            Cleaned::Changed(value) => Some(value),
            Cleaned::Absent => None,
        }
    }
}

/// Property names whose values are numbers by default (the aggregated ones, and `age`).
const NUMERIC: [&str; 6] = ["revenue", "total", "value", "price", "quantity", "age"];

impl CleaningRules {
    /// The checks a configuration must pass: a known default region.
    pub fn check(&self) -> Result<(), Invalid> {
        match &self.default_region {
            Some(region) if calling_code(region).is_none() => Err(Invalid(format!(
                "cleaning.defaultRegion: `{region}` is not a region known for phone numbers (known: {})",
                REGIONS.iter().map(|(r, _, _)| *r).collect::<Vec<_>>().join(", ")
            ))),
            _ => Ok(()),
        }
    }

    /// The steps for `name`: its own, or the defaults.
    pub fn steps(&self, name: &str) -> Vec<Clean> {
        match self.fields.get(name) {
            Some(steps) => steps.clone(),
            None if self.defaults => Self::defaults_for(name),
            None => Vec::new(),
        }
    }

    /// The default steps for a name: every string trimmed and, when empty, absent; then by name — `email`
    /// (and names ending in it) case-folded; `phone`, `mobile` (and names ending in them) in E.164; `birthday`,
    /// `birthDate` and names ending in `_at`, `At`, `_date` or `Date` as dates; `revenue`, `total`, `value`,
    /// `price`, `quantity` and `age` as numbers.
    pub fn defaults_for(name: &str) -> Vec<Clean> {
        let mut steps = vec![Clean::Trim, Clean::EmptyAbsent];
        let lower = name.to_ascii_lowercase();
        if lower.ends_with("email") {
            steps.push(Clean::Lowercase);
        } else if lower.ends_with("phone") || lower.ends_with("mobile") {
            steps.push(Clean::Phone);
        } else if lower == "birthday"
            || lower.ends_with("_at")
            || lower.ends_with("_date")
            || name.ends_with("At")
            || name.ends_with("Date")
        {
            steps.push(Clean::Date);
        } else if NUMERIC.contains(&lower.as_str()) {
            steps.push(Clean::Number);
        }
        steps
    }

    /// Cleans the value of `name`.
    pub fn clean(&self, name: &str, value: &Value) -> Cleaned {
        let steps = self.steps(name);
        if steps.is_empty() {
            return Cleaned::Kept;
        }
        let mut current = value.clone();
        for step in steps {
            match self.step(step, &current) {
                Ok(Some(next)) => current = next,
                Ok(None) => return Cleaned::Absent,
                Err(reason) => return Cleaned::Issue(reason),
            }
        }
        if &current == value { Cleaned::Kept } else { Cleaned::Changed(current) }
    }

    /// A digest of the rules: the incremental tag states were built with the rules of this digest, and a
    /// change rebuilds them (the ready versions are kept with it).
    pub fn fingerprint(&self) -> u32 {
        // The built-in steps and defaults have a version too: a release that changes them rebuilds the states.
        const BUILT_IN: u32 = 1;
        let text = format!("{BUILT_IN}:{}", serde_json::to_string(self).unwrap_or_default());
        u32::from_str_radix(&crate::ids::sha256_hex(&text)[..8], 16).unwrap_or_default()
    }

    /// An event's properties cleaned as the tag engines, audiences, triggers and aggregates read them: each
    /// top-level property by its name's steps (nested objects and lists as sent); `None` when nothing changes
    /// (the event is used as it is). The raw event keeps what was sent.
    pub fn clean_event(&self, event: &CanonicalEvent) -> Option<CanonicalEvent> {
        let properties = self.clean_properties(event.properties.as_ref()?)?;
        Some(CanonicalEvent { properties: Some(properties), ..event.clone() })
    }

    /// The properties cleaned ([`CleaningRules::clean_event`]); `None` when every value is clean already (or
    /// cannot be cleaned, and is kept as sent).
    pub fn clean_properties(&self, properties: &Map<String, Value>) -> Option<Map<String, Value>> {
        let mut cleaned: Option<Map<String, Value>> = None;
        for (name, value) in properties {
            let outcome = match self.clean(name, value) {
                Cleaned::Kept | Cleaned::Issue(_) => continue,
                Cleaned::Changed(clean) => Some(clean),
                Cleaned::Absent => None,
            };
            let map = cleaned.get_or_insert_with(|| properties.clone());
            match outcome {
                Some(clean) => map.insert(name.clone(), clean),
                None => map.remove(name),
            };
        }
        cleaned
    }

    /// One step on `value`: the result, none for absent, or why it cannot be cleaned.
    fn step(&self, step: Clean, value: &Value) -> Result<Option<Value>, String> {
        let text = match value {
            Value::String(text) => text.as_str(),
            // Numbers are numbers; dates and phones as numbers are left as sent (epoch values, digits).
            Value::Number(_) => return Ok(Some(value.clone())),
            Value::Null => return Ok(Some(Value::Null)),
            _ if step == Clean::Number => return Err(format!("{} is not a number", short(value))),
            _ => return Ok(Some(value.clone())),
        };
        Ok(Some(match step {
            Clean::Trim => Value::String(text.trim().to_string()),
            Clean::EmptyAbsent if text.is_empty() => return Ok(None),
            Clean::EmptyAbsent => value.clone(),
            Clean::Lowercase => Value::String(text.to_lowercase()),
            Clean::Phone => Value::String(e164(text, self.default_region.as_deref()).map_err(|reason| reason.0)?),
            Clean::Date => Value::String(iso_date(text).ok_or_else(|| format!("`{}` is not a date", clip(text)))?),
            Clean::Number => {
                let n = text
                    .trim()
                    .replace([',', '_'], "")
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .and_then(serde_json::Number::from_f64)
                    .ok_or_else(|| format!("`{}` is not a number", clip(text)))?;
                // Whole numbers stay integers (`"3"` → 3, not 3.0).
                match n.as_f64() {
                    Some(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => Value::from(x as i64),
                    _ => Value::Number(n),
                }
            }
        }))
    }
}

/// Regions with their calling code and whether national numbers start with a trunk `0` to drop.
const REGIONS: [(&str, &str, bool); 24] = [
    ("CN", "86", true),
    ("HK", "852", false),
    ("MO", "853", false),
    ("TW", "886", true),
    ("SG", "65", false),
    ("JP", "81", true),
    ("KR", "82", true),
    ("IN", "91", true),
    ("US", "1", false),
    ("CA", "1", false),
    ("GB", "44", true),
    ("DE", "49", true),
    ("FR", "33", true),
    ("IT", "39", false),
    ("ES", "34", false),
    ("NL", "31", true),
    ("AU", "61", true),
    ("NZ", "64", true),
    ("BR", "55", true),
    ("MX", "52", false),
    ("RU", "7", false),
    ("MY", "60", true),
    ("TH", "66", true),
    ("VN", "84", true),
];

fn calling_code(region: &str) -> Option<(&'static str, bool)> {
    REGIONS.iter().find(|(r, _, _)| r.eq_ignore_ascii_case(region)).map(|(_, code, trunk)| (*code, *trunk))
}

/// A phone number in E.164: `+` and 8–15 digits. Separators (spaces, `-`, `.`, `(`, `)`, `/`) are dropped; `+`
/// or `00` starts an international number; a number without a country code takes `region`'s, its trunk `0`
/// dropped where the region writes one. Stricter than the identifier's [`normalize_phone`] (which keeps what it
/// cannot place): anything else in the text, or a number without a country, is a reason, not a guess.
pub fn e164(text: &str, region: Option<&str>) -> Result<String, Invalid> {
    let trimmed = text.trim();
    // `+44 (0)20 …`: the national trunk written beside the country code is not part of the number.
    let without_trunk;
    let trimmed = if trimmed.starts_with('+') && trimmed.contains("(0)") {
        without_trunk = trimmed.replacen("(0)", "", 1);
        without_trunk.as_str()
    } else {
        trimmed
    };
    let mut digits = String::with_capacity(trimmed.len());
    for (i, c) in trimmed.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => {}
            ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
            _ => return Err(Invalid(format!("`{}` is not a phone number: it holds `{c}`", clip(text)))),
        }
    }
    let international = trimmed.starts_with('+') || digits.starts_with("00");
    let written = if international {
        trimmed.to_string()
    } else {
        let Some(region) = region else {
            return Err(Invalid(format!("`{}` has no country code and no default region is set", clip(text))));
        };
        let (code, trunk) =
            calling_code(region).ok_or_else(|| format!("`{region}` is not a region known for phone numbers"))?;
        let national = if trunk { digits.strip_prefix('0').unwrap_or(&digits) } else { &digits };
        // North American numbers are often written with their leading 1.
        let national =
            if code == "1" && national.len() == 11 { national.strip_prefix('1').unwrap_or(national) } else { national };
        format!("+{code}{national}")
    };
    normalize_phone(&written, None)
        .filter(|phone| phone.starts_with("+") && !phone.starts_with("+0"))
        .ok_or_else(|| Invalid(format!("`{}` is not a phone number: E.164 has 8 to 15 digits", clip(text))))
}

fn clip(text: &str) -> String {
    text.chars().take(40).collect()
}

fn short(value: &Value) -> String {
    clip(&value.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cleaned(rules: &CleaningRules, name: &str, value: Value) -> Option<Value> {
        rules.clean(name, &value).value_for(&value)
    }

    #[test]
    fn defaults_trim_fold_emails_and_drop_empty_strings() {
        let rules = CleaningRules::default();
        assert_eq!(cleaned(&rules, "email", json!("User1@Example.com ")), Some(json!("user1@example.com")));
        assert_eq!(cleaned(&rules, "workEmail", json!(" A@B.CN")), Some(json!("a@b.cn")));
        assert_eq!(cleaned(&rules, "plan", json!("  pro ")), Some(json!("pro")));
        assert_eq!(cleaned(&rules, "plan", json!("Pro")), Some(json!("Pro")), "only emails are case-folded");
        assert_eq!(rules.clean("plan", &json!("   ")), Cleaned::Absent);
        assert_eq!(rules.clean("plan", &json!("")), Cleaned::Absent);
        assert_eq!(rules.clean("plan", &json!("pro")), Cleaned::Kept);
        assert_eq!(rules.clean("vip", &json!(true)), Cleaned::Kept);
        assert_eq!(rules.clean("address", &json!({"city": "上海"})), Cleaned::Kept);
    }

    #[test]
    fn event_properties_are_cleaned_by_name_and_kept_whole_when_already_clean() {
        let rules = CleaningRules { fields: BTreeMap::from([("sku".to_string(), vec![])]), ..CleaningRules::default() };
        let sent = json!({"revenue": "19.90", "currency": " CNY", "coupon": "", "sku": " A-1 ", "quantity": "two",
                          "products": [{"price": "1"}], "orderedAt": "2024/03/05"});
        let cleaned = rules.clean_properties(sent.as_object().unwrap()).expect("changed");
        assert_eq!(
            Value::Object(cleaned),
            json!({"revenue": 19.9, "currency": "CNY", "sku": " A-1 ", "quantity": "two",
                   "products": [{"price": "1"}], "orderedAt": "2024-03-05"}),
            "numbers, trimmed, empty absent, own steps, not cleanable kept, nested as sent, dates"
        );
        let clean = json!({"revenue": 19.9, "currency": "CNY"});
        assert_eq!(rules.clean_properties(clean.as_object().unwrap()), None, "nothing to change, nothing copied");
        let off = CleaningRules { defaults: false, ..CleaningRules::default() };
        assert_eq!(off.clean_properties(sent.as_object().unwrap()), None, "no defaults, no own steps: as sent");
    }

    #[test]
    fn phones_become_e164_with_the_default_region() {
        let cn = CleaningRules { default_region: Some("CN".into()), ..CleaningRules::default() };
        assert_eq!(cleaned(&cn, "phone", json!("138 0013 8000")), Some(json!("+8613800138000")));
        assert_eq!(cleaned(&cn, "mobile", json!("+86 138-0013-8000")), Some(json!("+8613800138000")));
        assert_eq!(cleaned(&cn, "phone", json!("0086 13800138000")), Some(json!("+8613800138000")));
        assert_eq!(cleaned(&cn, "phone", json!("(010) 6552 9988")), Some(json!("+861065529988")));
        let us = CleaningRules { default_region: Some("us".into()), ..CleaningRules::default() };
        assert_eq!(cleaned(&us, "phone", json!("(415) 555-0100")), Some(json!("+14155550100")));
        assert_eq!(cleaned(&us, "phone", json!("1-415-555-0100")), Some(json!("+14155550100")));
        let gb = CleaningRules { default_region: Some("GB".into()), ..CleaningRules::default() };
        assert_eq!(cleaned(&gb, "phone", json!("020 7946 0018")), Some(json!("+442079460018")));
        assert_eq!(cleaned(&gb, "phone", json!("+44 (0)20 7946 0018")), Some(json!("+442079460018")));
        // Not cleanable: kept as sent, with the reason.
        let none = CleaningRules::default();
        assert!(
            matches!(none.clean("phone", &json!("13800138000")), Cleaned::Issue(r) if r.contains("no default region"))
        );
        assert!(matches!(cn.clean("phone", &json!("call me")), Cleaned::Issue(r) if r.contains("holds `c`")));
        assert!(matches!(cn.clean("phone", &json!("+12")), Cleaned::Issue(r) if r.contains("8 to 15 digits")));
        assert_eq!(cleaned(&cn, "phone", json!("call me")), Some(json!("call me")), "kept as sent");
        assert_eq!(cleaned(&cn, "phone", json!(8613800138000_i64)), Some(json!(8613800138000_i64)));
    }

    #[test]
    fn dates_become_iso_8601_utc() {
        let rules = CleaningRules::default();
        assert_eq!(cleaned(&rules, "birthday", json!("1990/05/17")), Some(json!("1990-05-17")));
        assert_eq!(rules.clean("birthday", &json!("1990-05-17")), Cleaned::Kept, "already ISO 8601");
        assert_eq!(cleaned(&rules, "birthday", json!("1990年5月7日")), Some(json!("1990-05-07")));
        assert_eq!(
            cleaned(&rules, "createdAt", json!("2024-03-05T10:00:00+08:00")),
            Some(json!("2024-03-05T02:00:00.000Z"))
        );
        assert_eq!(cleaned(&rules, "signup_at", json!("2024-03-05 10:00:00")), Some(json!("2024-03-05T10:00:00.000Z")));
        assert_eq!(cleaned(&rules, "renewalDate", json!("2024.12.31")), Some(json!("2024-12-31")));
        assert!(matches!(rules.clean("birthday", &json!("1990-02-30")), Cleaned::Issue(_)));
        assert!(matches!(rules.clean("birthday", &json!("soon")), Cleaned::Issue(r) if r == "`soon` is not a date"));
        assert_eq!(rules.clean("createdAt", &json!(1_700_000_000_000_i64)), Cleaned::Kept, "epoch numbers stay");
    }

    #[test]
    fn numbers_from_numeric_strings() {
        let rules = CleaningRules::default();
        assert_eq!(cleaned(&rules, "revenue", json!(" 12.50 ")), Some(json!(12.5)));
        assert_eq!(cleaned(&rules, "quantity", json!("3")), Some(json!(3)));
        assert_eq!(cleaned(&rules, "total", json!("1,299.00")), Some(json!(1299)));
        assert_eq!(rules.clean("revenue", &json!(12.5)), Cleaned::Kept);
        assert!(matches!(rules.clean("age", &json!("thirty")), Cleaned::Issue(r) if r == "`thirty` is not a number"));
        assert!(matches!(rules.clean("age", &json!(true)), Cleaned::Issue(_)));
        assert_eq!(rules.clean("revenue", &json!("")), Cleaned::Absent);
    }

    #[test]
    fn configured_steps_replace_the_defaults() {
        let rules: CleaningRules = serde_json::from_value(json!({
            "defaultRegion": "CN",
            "fields": {"contact": ["trim", "phone"], "email": [], "score": ["number"]}
        }))
        .unwrap();
        assert!(rules.check().is_ok());
        assert_eq!(cleaned(&rules, "contact", json!(" 13800138000")), Some(json!("+8613800138000")));
        assert_eq!(rules.clean("email", &json!(" X@Y.com ")), Cleaned::Kept, "[] leaves values as sent");
        assert_eq!(cleaned(&rules, "score", json!("7")), Some(json!(7)));
        let off: CleaningRules = serde_json::from_value(json!({"defaults": false})).unwrap();
        assert_eq!(off.clean("email", &json!(" X@Y.com ")), Cleaned::Kept);
        let bad: CleaningRules = serde_json::from_value(json!({"defaultRegion": "XX"})).unwrap();
        assert!(bad.check().unwrap_err().contains("`XX` is not a region"));
        assert!(serde_json::from_value::<CleaningRules>(json!({"fields": {"x": ["shout"]}})).is_err());
    }
}
