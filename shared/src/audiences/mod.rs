//! Audiences: who qualifies (by traits, tags, behaviour and other audiences), what changed since the last
//! computation (the diff that activation delivers), and what makes a group distinct (insight).
//!
//! An audience definition is JSON like a tag's (see `docs/schemas/audience-definition.schema.json`):
//! `{"id": "lapsed_vips", "status": "active", "when": {"and": [{"field": "tag:tier", "op": "eq", "value":
//! "high"}, {"did_not": {"events": ["Order Completed"], "window": {"lastDays": 90}}}]}}`.
//! Behaviour conditions count the profile's events that pass the filter within the window: `did` holds when
//! the count is within `atLeast` (default 1) and `atMost`; `did_not` when it is zero.

mod insight;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::tags::{
    AggregateOp, Aggregation, Catalog, Condition, DefinitionError, EventFilter, EventView, Expected, Lifecycle,
    Operand, TagSet, Window,
};

pub use insight::{Insight, InsightCounts, insight};

/// Records decided memberships on a profile's membership map at `at` (ms) and returns the changes: audience,
/// entered (`true`) or exited, and the change's number for that profile and audience (1 for the first entry).
/// A profile never seen in an audience that does not qualify is no change.
pub fn record_memberships(
    memberships: &mut BTreeMap<String, crate::profile::Membership>,
    decided: &BTreeMap<String, bool>,
    at: i64,
) -> Vec<(String, bool, u32)> {
    let mut changes = Vec::new();
    for (audience, &member) in decided {
        let current = memberships.get(audience).map(|m| m.member).unwrap_or(false);
        if current == member {
            continue;
        }
        let entry = memberships.entry(audience.clone()).or_insert(crate::profile::Membership {
            member: false,
            since: at,
            changes: 0,
        });
        entry.member = member;
        entry.since = at;
        entry.changes += 1;
        changes.push((audience.clone(), member, entry.changes));
    }
    changes
}

/// One audience.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AudienceDefinition {
    /// Stable id (`[a-z0-9_]`, ≤ 64 chars).
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// What the audience is for.
    #[serde(default)]
    pub description: String,
    /// Who answers for it.
    #[serde(default)]
    pub owner: String,
    /// Lifecycle state; only active and deprecated audiences are computed.
    #[serde(default)]
    pub status: Lifecycle,
    /// Names it reads that the data has not carried yet (the data dictionary would refuse them).
    #[serde(default, skip_serializing_if = "Expected::is_none")]
    pub expected: Expected,
    /// Who belongs.
    pub when: AudienceExpr,
}

/// Who belongs: `{"and": [...]}`, `{"or": [...]}`, `{"not": ...}`, `{"did": ...}`, `{"did_not": ...}`,
/// `{"in_audience": "id"}`, or a condition on `trait:NAME` / `tag:ID`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "Value")]
pub enum AudienceExpr {
    /// All hold.
    And(Vec<AudienceExpr>),
    /// Any holds.
    Or(Vec<AudienceExpr>),
    /// Does not hold.
    Not(Box<AudienceExpr>),
    /// Did something, a number of times, within a window.
    Did(Behaviour),
    /// Did not do something within a window.
    DidNot(Behaviour),
    /// Is a member of another audience.
    InAudience(String),
    /// A condition on a trait or a tag.
    #[serde(untagged)]
    Condition(Condition),
}

impl TryFrom<Value> for AudienceExpr {
    type Error = String;

    /// Dispatches on the operator key, so that a mistake inside a branch is reported as itself.
    fn try_from(value: Value) -> Result<Self, String> {
        if let Some((key, inner)) = crate::tags::single_key(&value) {
            let context = |e: serde_json::Error| format!("{key}: {e}");
            let list = || serde_json::from_value::<Vec<AudienceExpr>>(inner.clone()).map_err(context);
            let behaviour = || serde_json::from_value::<Behaviour>(inner.clone()).map_err(context);
            match key {
                "and" => return list().map(AudienceExpr::And),
                "or" => return list().map(AudienceExpr::Or),
                "not" => {
                    return serde_json::from_value(inner.clone())
                        .map(|e| AudienceExpr::Not(Box::new(e)))
                        .map_err(context);
                }
                "did" => return behaviour().map(AudienceExpr::Did),
                "did_not" => return behaviour().map(AudienceExpr::DidNot),
                "in_audience" => {
                    return serde_json::from_value(inner.clone()).map(AudienceExpr::InAudience).map_err(context);
                }
                _ => {}
            }
        }
        serde_json::from_value(value).map(AudienceExpr::Condition).map_err(|e| format!("condition: {e}"))
    }
}

/// Events that count for a behaviour condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Behaviour {
    /// Track event names (any of them); empty: every event name.
    #[serde(default)]
    pub events: Vec<String>,
    /// Event types (`track`, `page`, ...); empty: every type.
    #[serde(default)]
    pub types: Vec<String>,
    /// Conditions on the event's properties, all of which must hold.
    #[serde(default)]
    pub properties: Vec<Condition>,
    /// Over which period (default all time).
    #[serde(default)]
    pub window: Window,
    /// At least this many (default 1).
    #[serde(default)]
    pub at_least: Option<u64>,
    /// At most this many.
    #[serde(default)]
    pub at_most: Option<u64>,
}

impl Behaviour {
    fn filter(&self) -> EventFilter {
        EventFilter { events: self.events.clone(), types: self.types.clone(), properties: self.properties.clone() }
    }
}

/// A checked set of audience definitions: the computed ones, in evaluation order.
#[derive(Debug, Clone)]
pub struct AudienceSet {
    audiences: Vec<AudienceDefinition>,
    patterns: crate::tags::Patterns,
}

impl AudienceSet {
    /// Checks `definitions` against the tag set they read and what is known of the data. Every problem is
    /// returned, each naming where it is.
    pub fn check(
        definitions: &[AudienceDefinition],
        tags: &TagSet,
        catalog: &Catalog,
    ) -> Result<Self, Vec<DefinitionError>> {
        let mut checker = crate::tags::Checker::new(catalog);
        let tag_defs: crate::tags::TagsById<'_> =
            tags.tags().iter().enumerate().map(|(i, t)| (t.id.as_str(), (i, t))).collect();
        let by_id: BTreeMap<&str, (usize, &AudienceDefinition)> =
            definitions.iter().enumerate().map(|(i, a)| (a.id.as_str(), (i, a))).collect();
        let mut seen = BTreeSet::new();
        for (i, audience) in definitions.iter().enumerate() {
            let at = format!("audiences[{i}] ({})", audience.id);
            checker.expecting(&audience.expected);
            checker.id(&at, &audience.id, &mut seen);
            let computed = audience.status.computed();
            check_expr(&mut checker, &format!("{at}.when"), &audience.when, &tag_defs, &by_id, computed);
        }
        // Dependency order over in_audience references; cycles are errors.
        let mut order = Vec::new();
        let mut state = vec![0u8; definitions.len()];
        for i in 0..definitions.len() {
            visit(i, definitions, &by_id, &mut state, &mut order, &mut checker);
        }
        if !checker.errors.is_empty() {
            return Err(checker.errors);
        }
        let audiences = order.into_iter().map(|i| definitions[i].clone()).filter(|a| a.status.computed()).collect();
        Ok(Self { audiences, patterns: checker.patterns })
    }

    /// The computed audiences, in evaluation order.
    pub fn audiences(&self) -> &[AudienceDefinition] {
        &self.audiences
    }

    /// The event properties that behaviour conditions read (sorted, once each).
    pub fn properties(&self) -> Vec<String> {
        fn walk(expr: &AudienceExpr, names: &mut std::collections::BTreeSet<String>) {
            match expr {
                AudienceExpr::And(all) | AudienceExpr::Or(all) => all.iter().for_each(|e| walk(e, names)),
                AudienceExpr::Not(inner) => walk(inner, names),
                AudienceExpr::Did(b) | AudienceExpr::DidNot(b) => {
                    names.extend(b.properties.iter().map(|c| c.field.clone()));
                }
                AudienceExpr::InAudience(_) | AudienceExpr::Condition(_) => {}
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for audience in &self.audiences {
            walk(&audience.when, &mut names);
        }
        names.into_iter().collect()
    }

    /// Whether an audience can be decided from traits and tags alone (no `did`/`did_not`, directly or through
    /// `in_audience`): ingest keeps those up to date as events arrive; the others change on the full recompute.
    pub fn is_realtime(&self, id: &str) -> bool {
        fn uses_events(expr: &AudienceExpr, set: &AudienceSet, depth: usize) -> bool {
            match expr {
                AudienceExpr::And(all) | AudienceExpr::Or(all) => all.iter().any(|e| uses_events(e, set, depth)),
                AudienceExpr::Not(inner) => uses_events(inner, set, depth),
                AudienceExpr::Did(_) | AudienceExpr::DidNot(_) => true,
                AudienceExpr::InAudience(other) => {
                    depth > set.audiences.len()
                        || set
                            .audiences
                            .iter()
                            .find(|a| &a.id == other)
                            .is_none_or(|a| uses_events(&a.when, set, depth + 1))
                }
                AudienceExpr::Condition(_) => false,
            }
        }
        self.audiences.iter().find(|a| a.id == id).is_some_and(|a| !uses_events(&a.when, self, 0))
    }

    /// The real-time audiences (see [`AudienceSet::is_realtime`]) a profile belongs to, from its traits and tags.
    pub fn realtime_members(
        &self,
        traits: &Map<String, Value>,
        tags: &BTreeMap<String, Value>,
    ) -> BTreeMap<String, bool> {
        let mut member = BTreeSet::new();
        let mut decided = BTreeMap::new();
        for audience in self.audiences.iter().filter(|a| self.is_realtime(&a.id)) {
            let holds = self.holds(&audience.when, traits, tags, &[], 0, &member);
            if holds {
                member.insert(audience.id.clone());
            }
            decided.insert(audience.id.clone(), holds);
        }
        decided
    }

    /// The audiences a profile belongs to, given its traits, its tag values and its events, at `now` (ms).
    pub fn members(
        &self,
        traits: &Map<String, Value>,
        tags: &BTreeMap<String, Value>,
        events: &[EventView<'_>],
        now: i64,
    ) -> BTreeSet<String> {
        let mut member = BTreeSet::new();
        for audience in &self.audiences {
            if self.holds(&audience.when, traits, tags, events, now, &member) {
                member.insert(audience.id.clone());
            }
        }
        member
    }

    fn holds(
        &self,
        expr: &AudienceExpr,
        traits: &Map<String, Value>,
        tags: &BTreeMap<String, Value>,
        events: &[EventView<'_>],
        now: i64,
        member: &BTreeSet<String>,
    ) -> bool {
        let holds = |e: &AudienceExpr| self.holds(e, traits, tags, events, now, member);
        match expr {
            AudienceExpr::And(all) => all.iter().all(holds),
            AudienceExpr::Or(all) => all.iter().any(holds),
            AudienceExpr::Not(inner) => !holds(inner),
            AudienceExpr::Did(b) => {
                let n = self.count(b, events, now);
                n >= b.at_least.unwrap_or(1) && b.at_most.is_none_or(|most| n <= most)
            }
            AudienceExpr::DidNot(b) => self.count(b, events, now) == 0,
            AudienceExpr::InAudience(id) => member.contains(id),
            AudienceExpr::Condition(c) => {
                let value = Operand::parse(&c.field).ok().and_then(|o| crate::tags::operand(&o, traits, tags));
                crate::tags::compare(&self.patterns, c, value)
            }
        }
    }

    fn count(&self, behaviour: &Behaviour, events: &[EventView<'_>], now: i64) -> u64 {
        let count = Aggregation { op: AggregateOp::Count, property: None };
        let filter = behaviour.filter();
        let value = crate::tags::statistical(&self.patterns, &filter, &count, behaviour.window, events, now);
        value.as_u64().unwrap_or(0)
    }
}

fn check_expr(
    checker: &mut crate::tags::Checker<'_>,
    at: &str,
    expr: &AudienceExpr,
    tags: &crate::tags::TagsById<'_>,
    audiences: &BTreeMap<&str, (usize, &AudienceDefinition)>,
    computed: bool,
) {
    match expr {
        AudienceExpr::And(all) | AudienceExpr::Or(all) => {
            let op = if matches!(expr, AudienceExpr::And(_)) { "and" } else { "or" };
            if all.is_empty() {
                checker.error(at, format!("`{op}` of nothing"));
            }
            for (i, e) in all.iter().enumerate() {
                check_expr(checker, &format!("{at}.{op}[{i}]"), e, tags, audiences, computed);
            }
        }
        AudienceExpr::Not(inner) => check_expr(checker, &format!("{at}.not"), inner, tags, audiences, computed),
        AudienceExpr::Did(b) | AudienceExpr::DidNot(b) => {
            let at = format!("{at}.{}", if matches!(expr, AudienceExpr::Did(_)) { "did" } else { "did_not" });
            checker.filter(&at, &b.filter());
            checker.window(&format!("{at}.window"), &b.window);
            if let (Some(least), Some(most)) = (b.at_least, b.at_most)
                && least > most
            {
                checker.error(&at, format!("atLeast {least} is above atMost {most}"));
            }
            if matches!(expr, AudienceExpr::DidNot(_)) && (b.at_least.is_some() || b.at_most.is_some()) {
                checker.error(&at, "did_not means zero times: use did with atMost for other counts".into());
            }
        }
        AudienceExpr::InAudience(id) => match audiences.get(id.as_str()) {
            None => checker.error(at, format!("unknown audience `{id}`")),
            Some((_, other)) if computed && !other.status.computed() => {
                checker.error(at, format!("audience `{id}` is {:?}, so it has no members", other.status).to_lowercase())
            }
            Some(_) => {}
        },
        AudienceExpr::Condition(condition) => match Operand::parse(&condition.field) {
            Ok(operand) => {
                let kind = checker.operand(&format!("{at}.field"), &operand, None, tags, false);
                checker.condition(at, condition, kind);
            }
            Err(problem) => checker.error(&format!("{at}.field"), problem.0),
        },
    }
}

fn reads(expr: &AudienceExpr, out: &mut BTreeSet<String>) {
    match expr {
        AudienceExpr::And(all) | AudienceExpr::Or(all) => all.iter().for_each(|e| reads(e, out)),
        AudienceExpr::Not(inner) => reads(inner, out),
        AudienceExpr::InAudience(id) => {
            out.insert(id.clone());
        }
        _ => {}
    }
}

fn visit(
    i: usize,
    defs: &[AudienceDefinition],
    by_id: &BTreeMap<&str, (usize, &AudienceDefinition)>,
    state: &mut [u8],
    order: &mut Vec<usize>,
    checker: &mut crate::tags::Checker<'_>,
) {
    if state[i] != 0 {
        return;
    }
    state[i] = 1;
    let mut ids = BTreeSet::new();
    reads(&defs[i].when, &mut ids);
    for id in ids {
        let Some(&(j, _)) = by_id.get(id.as_str()) else { continue };
        if state[j] == 1 {
            checker.error(
                &format!("audiences[{i}] ({})", defs[i].id),
                format!("reads `{}`, which reads it back (a cycle)", defs[j].id),
            );
        } else {
            visit(j, defs, by_id, state, order, checker);
        }
    }
    state[i] = 2;
    order.push(i);
}

/// Who entered and who exited an audience between two computations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    /// Members now who were not before.
    pub entered: Vec<String>,
    /// Members before who are not now.
    pub exited: Vec<String>,
}

impl Diff {
    /// The change from `before` to `now`.
    pub fn between(before: &BTreeSet<String>, now: &BTreeSet<String>) -> Self {
        Self { entered: now.difference(before).cloned().collect(), exited: before.difference(now).cloned().collect() }
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.entered.is_empty() && self.exited.is_empty()
    }
}

/// An audience's members at one computation, and its size over time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// When it was computed (ms since the epoch).
    pub computed_at: i64,
    /// The members' profile ids.
    pub members: BTreeSet<String>,
    /// (computed at, size) of every computation so far, oldest first.
    pub sizes: Vec<(i64, usize)>,
}

impl Snapshot {
    /// The next snapshot, with `members` computed at `at`, and the diff from this one.
    pub fn next(&self, members: BTreeSet<String>, at: i64) -> (Snapshot, Diff) {
        let diff = Diff::between(&self.members, &members);
        let mut sizes = self.sizes.clone();
        sizes.push((at, members.len()));
        (Snapshot { computed_at: at, members, sizes }, diff)
    }
}
