//! The tracking plan judged in the collect pipeline: each accepted event kept, kept with its violations in
//! `context.violations`, or refused, as its source's plan says ([`crate::source::TrackingPlan`]).

use serde_json::Value;

use crate::event::{CanonicalEvent, EventType};
use crate::source::{Mode, TrackingPlan, Violation};

/// What the plan makes of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it as it is.
    Keep,
    /// Keep it, with these violations in `context.violations`.
    Flag(Vec<Violation>),
    /// Refuse it for these violations.
    Block(Vec<Violation>),
}

/// Judges `event` (normalized) by `plan`.
pub fn judge(plan: &TrackingPlan, event: &CanonicalEvent) -> Verdict {
    let (schema, value, root) = match (event.kind, &event.event) {
        (EventType::Track, Some(name)) => match plan.events.get(name) {
            Some(schema) => (schema, event.properties.as_ref(), "/properties"),
            None => {
                let violation =
                    Violation { path: "/event".into(), problem: format!("`{name}` is not in the tracking plan") };
                return verdict(plan.unplanned, vec![violation]);
            }
        },
        (EventType::Identify, _) => match &plan.identify {
            Some(schema) => (schema, event.traits.as_ref(), "/traits"),
            None => return Verdict::Keep,
        },
        _ => return Verdict::Keep,
    };
    let value = Value::Object(value.cloned().unwrap_or_default());
    let mut violations = Vec::new();
    schema.check(&value, root, &mut violations);
    match violations.is_empty() {
        true => Verdict::Keep,
        false => verdict(plan.violations, violations),
    }
}

fn verdict(mode: Mode, violations: Vec<Violation>) -> Verdict {
    match mode {
        Mode::Allow => Verdict::Keep,
        Mode::Flag => Verdict::Flag(violations),
        Mode::Block => Verdict::Block(violations),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::source::violations_text;

    fn event(value: Value) -> CanonicalEvent {
        let mut base = json!({"messageId": "m", "sourceId": "web", "receivedAt": "2026-03-01T10:00:00.000Z",
                              "timestamp": "2026-03-01T10:00:00.000Z", "userId": "u1"});
        for (k, v) in value.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn plan(value: Value) -> TrackingPlan {
        serde_json::from_value(value).unwrap()
    }

    fn signup_plan() -> Value {
        json!({"events": {"Signed Up": {"type": "object", "required": ["plan"], "additionalProperties": false,
                                        "properties": {"plan": {"enum": ["free", "pro"]},
                                                       "seats": {"type": "integer", "minimum": 1},
                                                       "referrer": {"type": "string", "format": "email"}}}},
               "identify": {"properties": {"email": {"type": "string", "format": "email"}}}})
    }

    #[test]
    fn events_that_keep_the_plan_pass() {
        let plan = plan(signup_plan());
        let good = event(json!({"type": "track", "event": "Signed Up", "properties": {"plan": "pro", "seats": 3}}));
        assert_eq!(judge(&plan, &good), Verdict::Keep);
        assert_eq!(
            judge(&plan, &event(json!({"type": "page", "name": "Home"}))),
            Verdict::Keep,
            "pages are not planned"
        );
        assert_eq!(judge(&plan, &event(json!({"type": "track", "event": "Other"}))), Verdict::Keep, "unplanned: allow");
    }

    #[test]
    fn violations_are_named_by_their_path() {
        let plan = plan(signup_plan());
        let bad = event(json!({"type": "track", "event": "Signed Up",
                               "properties": {"seats": 0.5, "referrer": "nobody", "coupon": "X"}}));
        let Verdict::Flag(violations) = judge(&plan, &bad) else { panic!("flagged by default") };
        let found: Vec<(&str, &str)> = violations.iter().map(|v| (v.path.as_str(), v.problem.as_str())).collect();
        assert_eq!(
            found,
            [
                ("/properties/plan", "required"),
                ("/properties/coupon", "not in the tracking plan"),
                ("/properties/referrer", "is not an email address"),
                ("/properties/seats", "is number, the plan says integer"),
            ]
        );
        let traits = event(json!({"type": "identify", "traits": {"email": "not-an-email"}}));
        assert!(matches!(judge(&plan, &traits), Verdict::Flag(v) if v[0].path == "/traits/email"));
        assert!(violations_text(&violations).starts_with("breaks the tracking plan: /properties/plan: required; "));
    }

    #[test]
    fn modes_for_unplanned_events_and_violations() {
        let mut value = signup_plan();
        value["unplanned"] = json!("block");
        value["violations"] = json!("allow");
        let plan = plan(value);
        let unplanned = judge(&plan, &event(json!({"type": "track", "event": "Signed Upp"})));
        assert_eq!(
            unplanned,
            Verdict::Block(vec![Violation {
                path: "/event".into(),
                problem: "`Signed Upp` is not in the tracking plan".into()
            }])
        );
        let bad = event(json!({"type": "track", "event": "Signed Up", "properties": {}}));
        assert_eq!(judge(&plan, &bad), Verdict::Keep, "violations allowed");
    }
}
