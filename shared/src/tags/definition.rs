//! Tag definitions: what operators write (JSON, one file per tag or a list in `config/tags.json`), checked
//! at definition time so that evaluation never meets a malformed definition.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::names::Expected;

/// One tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "RawDefinition")]
pub struct TagDefinition {
    /// Stable id (`[a-z0-9_]`, ≤ 64 chars); rules refer to tags by it.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// What the tag means.
    #[serde(default)]
    pub description: String,
    /// Who answers for it.
    #[serde(default)]
    pub owner: String,
    /// Version: a new version is computed (backfilled) while the previous one keeps serving.
    #[serde(default = "one")]
    pub version: u32,
    /// Lifecycle state.
    #[serde(default)]
    pub status: Lifecycle,
    /// Names it reads that the data has not carried yet (the data dictionary would refuse them).
    #[serde(default, skip_serializing_if = "Expected::is_none")]
    pub expected: Expected,
    /// How its value is computed.
    #[serde(flatten)]
    pub kind: TagKind,
}

fn one() -> u32 {
    1
}

/// The common fields, and the rest for the kind (which refuses fields it does not know).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDefinition {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner: String,
    #[serde(default = "one")]
    version: u32,
    #[serde(default)]
    status: Lifecycle,
    #[serde(default)]
    expected: Expected,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

impl TryFrom<RawDefinition> for TagDefinition {
    type Error = String;

    fn try_from(raw: RawDefinition) -> Result<Self, String> {
        let kind = serde_json::from_value(Value::Object(raw.rest)).map_err(|e| format!("tag `{}`: {e}", raw.id))?;
        let RawDefinition { id, name, description, owner, version, status, expected, .. } = raw;
        Ok(Self { id, name, description, owner, version, status, expected, kind })
    }
}

/// Lifecycle: draft → active → deprecated → archived. Only active and deprecated tags are computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Being written; not computed.
    #[default]
    Draft,
    /// Computed and served.
    Active,
    /// Computed and served, flagged for removal.
    Deprecated,
    /// Kept for the record; not computed.
    Archived,
}

impl Lifecycle {
    /// Whether tags in this state are computed.
    pub fn computed(self) -> bool {
        matches!(self, Lifecycle::Active | Lifecycle::Deprecated)
    }
}

/// The kinds of tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum TagKind {
    /// An aggregation over the profile's events that pass a filter, within a window.
    Statistical {
        /// Which events count.
        #[serde(default)]
        filter: EventFilter,
        /// What is computed from them.
        aggregate: Aggregation,
        /// Over which period (default all time).
        #[serde(default)]
        window: Window,
    },
    /// True or false by a boolean expression over traits and other tags.
    Rule {
        /// The expression.
        when: Expr,
    },
    /// A label chosen by where a number falls (e.g. value tier high/mid/low).
    Buckets {
        /// The number.
        of: Operand,
        /// Labels with their ranges, checked in order; `min` inclusive, `max` exclusive.
        buckets: Vec<Bucket>,
        /// Label when no bucket matches (default: no value).
        #[serde(default)]
        otherwise: Option<String>,
    },
    /// Purchase propensity: the probability (0–1) that the profile does a purchase event within the next
    /// `horizonDays`, from a model trained at each full recompute on the profiles' own history (features as
    /// of `horizonDays` ago, labelled by what happened since), with its evaluation on held-out profiles.
    Propensity {
        /// Which events are purchases.
        purchase: EventFilter,
        /// The horizon in days (1–365, default 30).
        #[serde(default = "thirty")]
        horizon_days: u32,
        /// The purchases' revenue property, a feature when given.
        #[serde(default)]
        revenue: Option<String>,
    },
    /// RFM: recency, frequency and monetary scores (1–5, by quintile among the profiles that purchased) and
    /// the segment they place the profile in. Profiles without a purchase have no value.
    Rfm {
        /// Which events are purchases.
        purchase: EventFilter,
        /// The purchases' revenue property.
        revenue: String,
        /// What the tag's value is (default the segment).
        #[serde(default)]
        output: RfmOutput,
    },
    /// Category affinity: the category the profile's product events lean to most (events weighted by name
    /// and, with a half-life, by how recent they are; an event without a category takes its product's), or
    /// with `shareOf` the share (0–1) of one category. Profiles without such events have no value.
    Affinity {
        /// Event name → weight (> 0).
        weights: BTreeMap<String, f64>,
        /// The property naming the product (default `product_id`).
        #[serde(default = "product_id")]
        product: String,
        /// The property naming the category (default `category`).
        #[serde(default = "category")]
        category: String,
        /// Halve an event's weight every this many days (default: no decay).
        #[serde(default)]
        half_life_days: Option<u32>,
        /// Give this category's share instead of the top category.
        #[serde(default)]
        share_of: Option<String>,
    },
}

fn product_id() -> String {
    "product_id".into()
}

fn category() -> String {
    "category".into()
}

fn thirty() -> u32 {
    30
}

/// What an RFM tag gives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RfmOutput {
    /// The segment: champions, loyal, promising, need_attention, at_risk, hibernating.
    #[default]
    Segment,
    /// The three scores as one number, R×100 + F×10 + M (e.g. 545).
    Score,
    /// The recency score, 1–5 (5: most recent).
    Recency,
    /// The frequency score, 1–5.
    Frequency,
    /// The monetary score, 1–5.
    Monetary,
}

impl TagKind {
    /// Whether the value depends on the whole population (a trained model, quintiles, product categories),
    /// so that only the full recompute gives it.
    pub fn population(&self) -> bool {
        matches!(self, TagKind::Propensity { .. } | TagKind::Rfm { .. } | TagKind::Affinity { .. })
    }
}

/// Which events a statistical tag counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventFilter {
    /// Track event names (any of them); empty: every event name.
    #[serde(default)]
    pub events: Vec<String>,
    /// Event types (`track`, `page`, ...); empty: every type.
    #[serde(default)]
    pub types: Vec<String>,
    /// Conditions on the event's properties, all of which must hold.
    #[serde(default)]
    pub properties: Vec<Condition>,
}

/// An aggregation of one property (or of the events themselves, for `count`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Aggregation {
    /// The function.
    pub op: AggregateOp,
    /// The property aggregated (required for every op but `count`).
    #[serde(default)]
    pub property: Option<String>,
}

/// Aggregation functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateOp {
    /// Number of events.
    Count,
    /// Sum of a numeric property.
    Sum,
    /// Mean of a numeric property.
    Avg,
    /// Smallest value of a numeric property.
    Min,
    /// Largest value of a numeric property.
    Max,
    /// The property's value in the earliest event that has it.
    First,
    /// The property's value in the latest event that has it.
    Last,
    /// Number of distinct values.
    DistinctCount,
    /// The most frequent value (ties: the one seen last).
    MostFrequent,
    /// The distinct values in the order first seen (at most [`UNIQUE_LIST_MAX`]).
    UniqueList,
}

/// Longest `unique_list` value.
pub const UNIQUE_LIST_MAX: usize = 100;

impl AggregateOp {
    /// Whether the property must be numeric.
    pub fn numeric(self) -> bool {
        matches!(self, AggregateOp::Sum | AggregateOp::Avg | AggregateOp::Min | AggregateOp::Max)
    }
}

/// A period ending now. An event exactly at the window's start is inside it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Window {
    /// The last N days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_days: Option<u32>,
    /// The last N hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_hours: Option<u32>,
}

impl Window {
    /// Length in milliseconds; `None` for all time.
    pub fn millis(&self) -> Option<i64> {
        match (self.last_days, self.last_hours) {
            (Some(days), None) => Some(i64::from(days) * 86_400_000),
            (None, Some(hours)) => Some(i64::from(hours) * 3_600_000),
            _ => None,
        }
    }
}

/// A boolean expression: `{"and": [...]}`, `{"or": [...]}`, `{"not": ...}` or a condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "Value")]
pub enum Expr {
    /// All hold.
    And(Vec<Expr>),
    /// Any holds.
    Or(Vec<Expr>),
    /// Does not hold.
    Not(Box<Expr>),
    /// A comparison.
    #[serde(untagged)]
    Condition(Condition),
}

impl TryFrom<Value> for Expr {
    type Error = String;

    /// Dispatches on the operator key, so that a mistake inside a branch is reported as itself (an unknown
    /// field, a wrong type) rather than as "matches nothing".
    fn try_from(value: Value) -> Result<Self, String> {
        if let Some((key, inner)) = single_key(&value) {
            let parse = |v: &Value| serde_json::from_value::<Vec<Expr>>(v.clone()).map_err(|e| format!("{key}: {e}"));
            match key {
                "and" => return parse(inner).map(Expr::And),
                "or" => return parse(inner).map(Expr::Or),
                "not" => {
                    return serde_json::from_value(inner.clone())
                        .map(|e| Expr::Not(Box::new(e)))
                        .map_err(|e| format!("not: {e}"));
                }
                _ => {}
            }
        }
        serde_json::from_value(value).map(Expr::Condition).map_err(|e| format!("condition: {e}"))
    }
}

/// The only key of a one-key object, with its value.
pub(crate) fn single_key(value: &Value) -> Option<(&str, &Value)> {
    match value.as_object() {
        Some(map) if map.len() == 1 => map.iter().next().map(|(k, v)| (k.as_str(), v)),
        _ => None,
    }
}

/// A comparison of an operand (a trait, a tag, or — in event filters — a property) with a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// What is compared. In an event filter, a property name; in a rule, `trait:NAME` or `tag:ID`.
    pub field: String,
    /// How.
    pub op: CompareOp,
    /// With what (absent for `exists`; an array for `in` and `between`; a pattern for `regex`).
    #[serde(default)]
    pub value: Value,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareOp {
    /// Equal (numbers by value, so 1 and 1.0 are equal).
    Eq,
    /// Not equal (also true when the field is absent).
    Ne,
    /// Greater than (numbers, or strings lexicographically).
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// One of the listed values.
    In,
    /// A string containing the value, or an array containing it.
    Contains,
    /// Present and not null (`value: false`: absent or null).
    Exists,
    /// Between two numbers, both inclusive.
    Between,
    /// A string matching the pattern.
    Regex,
}

/// What a rule or bucket reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operand {
    /// A profile trait.
    Trait(String),
    /// Another tag's value.
    Tag(String),
}

impl Operand {
    /// Parses `trait:NAME` or `tag:ID`.
    pub fn parse(text: &str) -> Result<Self, crate::Invalid> {
        match text.split_once(':') {
            Some(("trait", name)) if !name.is_empty() => Ok(Operand::Trait(name.to_string())),
            Some(("tag", id)) if !id.is_empty() => Ok(Operand::Tag(id.to_string())),
            _ => Err(format!("`{text}` is not an operand: write `trait:NAME` or `tag:ID`").into()),
        }
    }
}

impl std::fmt::Display for Operand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Operand::Trait(name) => write!(f, "trait:{name}"),
            Operand::Tag(id) => write!(f, "tag:{id}"),
        }
    }
}

impl Serialize for Operand {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Operand {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Operand::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One bucket of a [`TagKind::Buckets`] tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bucket {
    /// The tag's value when the number falls here.
    pub label: String,
    /// Lower bound, inclusive (none: unbounded).
    #[serde(default)]
    pub min: Option<f64>,
    /// Upper bound, exclusive (none: unbounded).
    #[serde(default)]
    pub max: Option<f64>,
}

/// A definition problem, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct DefinitionError {
    /// Where: `tags[2] (ltv_90d).aggregate.property`.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// The kinds of value a trait or property holds, as far as definitions need to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    /// A number.
    Number,
    /// A string.
    String,
    /// true or false.
    Boolean,
    /// Anything else (arrays, objects, mixed).
    Other,
}

impl ValueKind {
    /// The kind of `value`.
    pub fn of(value: &Value) -> Option<Self> {
        match value {
            Value::Number(_) => Some(ValueKind::Number),
            Value::String(_) => Some(ValueKind::String),
            Value::Bool(_) => Some(ValueKind::Boolean),
            Value::Null => None,
            _ => Some(ValueKind::Other),
        }
    }
}

/// What is known about the data, for checking definitions: event names, and the kind of each trait and
/// property seen. An empty catalog checks only the definitions' own consistency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    /// Track event names seen.
    #[serde(default)]
    pub events: BTreeSet<String>,
    /// Traits seen, with their kind.
    #[serde(default)]
    pub traits: BTreeMap<String, ValueKind>,
    /// Event properties seen, with their kind.
    #[serde(default)]
    pub properties: BTreeMap<String, ValueKind>,
}

impl Catalog {
    /// Whether the catalog knows anything (checks of names apply only then).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.traits.is_empty() && self.properties.is_empty()
    }
}
