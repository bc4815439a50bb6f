//! Conditions on an event's properties (`revenue >= 100`, `plan = "pro"`), as SQL over the `events` table.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// How a property is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Equal to the value (text, number or boolean).
    Eq,
    /// Not equal (an absent property is not equal).
    Neq,
    /// Greater than the number.
    Gt,
    /// At least the number.
    Gte,
    /// Less than the number.
    Lt,
    /// At most the number.
    Lte,
    /// Text containing the value.
    Contains,
    /// Present (not null).
    Set,
    /// Absent or null.
    NotSet,
}

/// What a filter's name is of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Of {
    /// An event property.
    #[default]
    Property,
    /// A trait of the event's person.
    Trait,
    /// A tag of the event's person (the last full recompute's value).
    Tag,
}

/// A condition on one property (or a trait or tag of the person).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filter {
    /// What `property` names: an event property (default), a trait or a tag.
    #[serde(default)]
    pub of: Of,
    /// The property (as cleaned: `" pro "` is `"pro"`, `"30.50"` where it is a number is 30.5), trait or tag.
    pub property: String,
    /// The comparison.
    pub op: Op,
    /// What it is compared with (none for `set` and `not_set`).
    #[serde(default)]
    pub value: Option<Value>,
}

impl Filter {
    /// The checks a filter must pass, naming `field`.
    pub fn check(&self, field: &str) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::Invalid(format!("{field}: {what}")));
        if self.property.trim().is_empty() {
            return bad("a filter names a property");
        }
        match (self.op, &self.value) {
            (Op::Set | Op::NotSet, None) => Ok(()),
            (Op::Set | Op::NotSet, Some(_)) => bad("`set` and `not_set` take no value"),
            (Op::Gt | Op::Gte | Op::Lt | Op::Lte, Some(Value::Number(_))) => Ok(()),
            (Op::Gt | Op::Gte | Op::Lt | Op::Lte, _) => bad("`gt`, `gte`, `lt` and `lte` compare with a number"),
            (Op::Contains, Some(Value::String(s))) if !s.is_empty() => Ok(()),
            (Op::Contains, _) => bad("`contains` takes a text value"),
            (Op::Eq | Op::Neq, Some(Value::String(_) | Value::Number(_) | Value::Bool(_))) => Ok(()),
            (Op::Eq | Op::Neq, _) => bad("`eq` and `neq` compare with a text, a number or a boolean"),
        }
    }

    /// The condition as SQL: over the events table as `alias` for a property; over the person's row in
    /// `profiles` (a trait) or `tags` (a tag) as `alias` otherwise (checked first).
    pub fn sql(&self, alias: &str) -> String {
        let (text, number) = match self.of {
            Of::Property => {
                let name = super::trends::literal(&self.property);
                (
                    format!("property({alias}.properties, {name})"),
                    format!("property_number({alias}.properties, {name})"),
                )
            }
            Of::Trait | Of::Tag => {
                let column = format!("{alias}.{}", super::trends::identifier(&self.property));
                (format!("CAST({column} AS VARCHAR)"), format!("TRY_CAST({column} AS DOUBLE)"))
            }
        };
        let as_number = |n: &serde_json::Number| format!("CAST({} AS DOUBLE)", n.as_f64().unwrap_or(0.0));
        let compared = |op: &str| match &self.value {
            Some(Value::Number(n)) => format!("{number} {op} {}", as_number(n)),
            Some(Value::String(s)) => format!("{text} {op} {}", super::trends::literal(s)),
            Some(Value::Bool(b)) => format!("{text} {op} '{b}'"),
            _ => "FALSE".to_string(),
        };
        match self.op {
            Op::Eq => compared("="),
            Op::Neq => compared("IS DISTINCT FROM"),
            Op::Gt => compared(">"),
            Op::Gte => compared(">="),
            Op::Lt => compared("<"),
            Op::Lte => compared("<="),
            Op::Contains => match &self.value {
                Some(Value::String(s)) => format!("coalesce(strpos({text}, {}) > 0, FALSE)", super::trends::literal(s)),
                _ => "FALSE".to_string(),
            },
            Op::Set => format!("{text} IS NOT NULL"),
            Op::NotSet => format!("{text} IS NULL"),
        }
    }

    /// A filter written `property OP value` (`revenue>=100`, `plan=pro`, `coupon~SUMMER`, `coupon?` for set,
    /// `coupon!` for not set); a value that reads as a number is one, `true` and `false` are booleans.
    /// `trait:` or `tag:` before the name makes it a trait's or a tag's (`trait:plan=pro`, `tag:ltv>100`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (of, text) = match text.split_once(':') {
            Some(("trait", rest)) => (Of::Trait, rest.trim()),
            Some(("tag", rest)) => (Of::Tag, rest.trim()),
            Some(("property", rest)) => (Of::Property, rest.trim()),
            _ => (Of::Property, text),
        };
        let mut filter = Self::parse_condition(text)?;
        filter.of = of;
        Ok(filter)
    }

    fn parse_condition(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{text}` is not a filter: `property=value`, `!=`, `>`, `>=`, `<`, `<=`, `~` (contains), `property?` \
                 (set) or `property!` (not set)"
            )
        };
        let has_operator = text.contains(['=', '>', '<', '~']);
        if !has_operator && let Some(property) = text.strip_suffix('?') {
            return Ok(Self { of: Of::Property, property: property.trim().to_string(), op: Op::Set, value: None });
        }
        if !has_operator && let Some(property) = text.strip_suffix('!') {
            return Ok(Self { of: Of::Property, property: property.trim().to_string(), op: Op::NotSet, value: None });
        }
        for (symbol, op) in [
            (">=", Op::Gte),
            ("<=", Op::Lte),
            ("!=", Op::Neq),
            ("=", Op::Eq),
            (">", Op::Gt),
            ("<", Op::Lt),
            ("~", Op::Contains),
        ] {
            if let Some((property, value)) = text.split_once(symbol) {
                let value = value.trim();
                let value = match (op, value.parse::<f64>().ok().and_then(serde_json::Number::from_f64), value) {
                    (Op::Contains, _, v) => Value::String(v.to_string()),
                    (_, Some(n), _) => Value::Number(n),
                    (_, None, "true") => Value::Bool(true),
                    (_, None, "false") => Value::Bool(false),
                    (_, None, v) => Value::String(v.to_string()),
                };
                let filter = Self { of: Of::Property, property: property.trim().to_string(), op, value: Some(value) };
                filter.check("filter").map_err(|_| bad())?;
                return Ok(filter);
            }
        }
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_as_written_and_become_sql() {
        let f = Filter::parse("revenue >= 100").unwrap();
        assert_eq!((f.property.as_str(), f.op, f.value.clone()), ("revenue", Op::Gte, Some(serde_json::json!(100.0))));
        assert_eq!(f.sql("e"), "property_number(e.properties, 'revenue') >= CAST(100 AS DOUBLE)");
        let f = Filter::parse("plan=o'brien").unwrap();
        assert_eq!(f.sql("e"), "property(e.properties, 'plan') = 'o''brien'");
        assert_eq!(Filter::parse("coupon?").unwrap().op, Op::Set);
        assert_eq!(Filter::parse("coupon!").unwrap().sql("x"), "property(x.properties, 'coupon') IS NULL");
        assert_eq!(Filter::parse("gift=true").unwrap().value, Some(Value::Bool(true)));
        let f = Filter::parse("title=Hello!").unwrap();
        assert_eq!((f.op, f.value), (Op::Eq, Some(Value::String("Hello!".into()))));
        assert_eq!(Filter::parse("q!=why?").unwrap().op, Op::Neq);
        assert!(Filter::parse("revenue>lots").unwrap_err().to_string().contains("is not a filter"));
        assert!(Filter::parse("revenue").is_err());
        let f = Filter::parse("trait:age>=18").unwrap();
        assert_eq!((f.of, f.sql("p")), (Of::Trait, "TRY_CAST(p.\"age\" AS DOUBLE) >= CAST(18 AS DOUBLE)".to_string()));
        assert_eq!(Filter::parse("tag:segment=vip").unwrap().sql("t"), "CAST(t.\"segment\" AS VARCHAR) = 'vip'");
        let bad = Filter { of: Of::Property, property: "x".into(), op: Op::Set, value: Some(Value::Bool(true)) };
        assert!(
            bad.check("filters[1]").unwrap_err().to_string().contains("filters[1]: `set` and `not_set` take no value")
        );
    }
}
