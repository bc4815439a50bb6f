//! Tracking plans: per source, a JSON Schema for each planned track event's `properties` and for identify
//! calls' `traits`, with what happens to unplanned events and to violations — `allow`, `flag` (stored, the
//! violations listed in `context.violations`) or `block` (refused into `failed/` with the violations as the
//! reason). Judged in the collect pipeline (`collect::plan`), so the edge worker and `cdp up` enforce the same
//! plan.
//!
//! The schemas are the part of JSON Schema a tracking plan needs: `type`, `properties`, `required`,
//! `additionalProperties` (true or false), `enum`, `minimum`, `maximum`, `minLength`, `maxLength`, `items`,
//! `format` (`email`, `date-time`, `date`); annotations (`description`, `title`, `$schema`, `$id`,
//! `$comment`, `examples`, `default`) are allowed and ignored; any other keyword is refused when the plan is
//! read, so a plan never silently checks less than it says.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A source's tracking plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrackingPlan {
    /// Planned track events by name: the schema of their `properties`.
    #[serde(default)]
    pub events: BTreeMap<String, Schema>,
    /// The schema of identify calls' `traits` (none: not planned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identify: Option<Schema>,
    /// What happens to a track event the plan does not name (default `allow`).
    #[serde(default)]
    pub unplanned: Mode,
    /// What happens to an event that breaks its schema (default `flag`).
    #[serde(default = "flag")]
    pub violations: Mode,
}

fn flag() -> Mode {
    Mode::Flag
}

/// What happens to an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Stored as sent.
    #[default]
    Allow,
    /// Stored, with the violations in `context.violations`.
    Flag,
    /// Refused into `failed/`, with the violations as the reason.
    Block,
}

/// One way an event breaks its plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Where, as a JSON pointer into the event (`/properties/plan`).
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// The violations as stored in `context.violations`.
pub fn violations_json(violations: &[Violation]) -> Value {
    Value::Array(violations.iter().map(|v| json!({"path": v.path, "problem": v.problem})).collect())
}

/// The violations as one reason (`/properties/plan: required; …`).
pub fn violations_text(violations: &[Violation]) -> String {
    let all: Vec<String> = violations.iter().map(|v| format!("{}: {}", v.path, v.problem)).collect();
    format!("breaks the tracking plan: {}", all.join("; "))
}

/// A JSON Schema (the subset the module's documentation lists).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Schema {
    /// `"string"`, `"number"`, `"integer"`, `"boolean"`, `"object"`, `"array"`, `"null"`, or a list of them.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<Types>,
    /// Schemas of an object's properties.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, Schema>,
    /// Properties that must be present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
    /// Whether properties the schema does not list are allowed (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_properties: Option<bool>,
    /// The values allowed.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Value>>,
    /// Smallest number allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    /// Largest number allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    /// Shortest text allowed (characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<usize>,
    /// Longest text allowed (characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// The schema of an array's items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<Schema>>,
    /// `email`, `date-time` or `date`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<Value>,
    #[serde(default, rename = "$schema", skip_serializing_if = "Option::is_none")]
    schema: Option<Value>,
    #[serde(default, rename = "$id", skip_serializing_if = "Option::is_none")]
    id: Option<Value>,
    #[serde(default, rename = "$comment", skip_serializing_if = "Option::is_none")]
    comment: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    examples: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default: Option<Value>,
}

/// One type or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Types {
    /// One.
    One(Type),
    /// Any of these.
    Any(Vec<Type>),
}

/// A JSON Schema type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Type {
    /// Text.
    String,
    /// Any number.
    Number,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// An object.
    Object,
    /// An array.
    Array,
    /// `null`.
    Null,
}

/// A string format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `local@domain`.
    Email,
    /// RFC 3339.
    DateTime,
    /// `YYYY-MM-DD`.
    Date,
}

impl Type {
    fn admits(self, value: &Value) -> bool {
        match (self, value) {
            (Type::String, Value::String(_)) | (Type::Boolean, Value::Bool(_)) | (Type::Null, Value::Null) => true,
            (Type::Number, Value::Number(_)) | (Type::Object, Value::Object(_)) | (Type::Array, Value::Array(_)) => {
                true
            }
            (Type::Integer, Value::Number(n)) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|x| x.fract() == 0.0)
            }
            _ => false,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Number => "number",
            Type::Integer => "integer",
            Type::Boolean => "boolean",
            Type::Object => "object",
            Type::Array => "array",
            Type::Null => "null",
        }
    }
}

/// A value's JSON type (`string`, `number`, `boolean`, `object`, `array`, `null`).
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl Schema {
    /// Adds to `out` every way `value` (at `path`) breaks this schema.
    pub fn check(&self, value: &Value, path: &str, out: &mut Vec<Violation>) {
        let mut problem = |problem: String| out.push(Violation { path: path.to_string(), problem });
        if let Some(kind) = &self.kind {
            let types: &[Type] = match kind {
                Types::One(one) => std::slice::from_ref(one),
                Types::Any(any) => any,
            };
            if !types.iter().any(|t| t.admits(value)) {
                let wanted: Vec<&str> = types.iter().map(|t| t.name()).collect();
                problem(format!("is {}, the plan says {}", json_type(value), wanted.join(" or ")));
                return;
            }
        }
        if let Some(allowed) = &self.allowed
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
            problem(format!("{value} is not one of {}", list.join(", ")));
        }
        match value {
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if let Some(min) = self.minimum.filter(|min| x < *min) {
                    problem(format!("{n} is below the minimum {min}"));
                }
                if let Some(max) = self.maximum.filter(|max| x > *max) {
                    problem(format!("{n} is above the maximum {max}"));
                }
            }
            Value::String(text) => {
                let length = text.chars().count();
                if let Some(min) = self.min_length.filter(|min| length < *min) {
                    problem(format!("{length} characters, fewer than {min}"));
                }
                if let Some(max) = self.max_length.filter(|max| length > *max) {
                    problem(format!("{length} characters, more than {max}"));
                }
                let ok = match self.format {
                    None => true,
                    Some(Format::Email) => is_email(text),
                    Some(Format::DateTime) => crate::time::UtcTime::parse(text).is_some(),
                    Some(Format::Date) => text.len() == 10 && text.parse::<jiff::civil::Date>().is_ok(),
                };
                if !ok {
                    let format = self.format.map_or("", |f| match f {
                        Format::Email => "an email address",
                        Format::DateTime => "a date-time",
                        Format::Date => "a date (YYYY-MM-DD)",
                    });
                    problem(format!("is not {format}"));
                }
            }
            Value::Object(object) => {
                for name in &self.required {
                    if !object.contains_key(name) {
                        out.push(Violation { path: format!("{path}/{}", pointer(name)), problem: "required".into() });
                    }
                }
                for (name, value) in object {
                    let at = format!("{path}/{}", pointer(name));
                    match self.properties.get(name) {
                        Some(schema) => schema.check(value, &at, out),
                        None if self.additional_properties == Some(false) => {
                            out.push(Violation { path: at, problem: "not in the tracking plan".into() })
                        }
                        None => {}
                    }
                }
            }
            Value::Array(items) => {
                if let Some(schema) = &self.items {
                    for (i, item) in items.iter().enumerate() {
                        schema.check(item, &format!("{path}/{i}"), out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// `local@domain.tld`, without white space.
fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else { return false };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !text.contains(char::is_whitespace)
}

/// A name as a JSON pointer segment (`~` and `/` escaped).
fn pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keywords_are_refused() {
        let problem = serde_json::from_value::<TrackingPlan>(json!({"events": {"X": {"oneOf": []}}})).unwrap_err();
        assert!(problem.to_string().contains("unknown field `oneOf`"), "{problem}");
        let ok = serde_json::from_value::<TrackingPlan>(json!({"events": {"X": {"description": "d", "$schema": "s"}}}));
        assert!(ok.is_ok());
        assert!(serde_json::from_value::<TrackingPlan>(json!({"unplanned": "drop"})).is_err());
    }

    #[test]
    fn formats() {
        let schema =
            |format: &str| Schema { format: serde_json::from_value(json!(format)).unwrap(), ..Schema::default() };
        let broken = |schema: &Schema, value: &str| {
            let mut out = Vec::new();
            schema.check(&json!(value), "", &mut out);
            !out.is_empty()
        };
        assert!(
            !broken(&schema("email"), "a@b.cn")
                && broken(&schema("email"), "a@b")
                && broken(&schema("email"), "a b@c.d")
        );
        assert!(
            !broken(&schema("date"), "2024-02-29")
                && broken(&schema("date"), "2023-02-29")
                && broken(&schema("date"), "2024-2-9")
        );
        assert!(
            !broken(&schema("date-time"), "2024-02-29T10:00:00+08:00") && broken(&schema("date-time"), "yesterday")
        );
    }
}
