//! Checking a set of tag definitions before anything is computed: every problem is reported with where it is,
//! and a checked set knows the order in which tags can be evaluated (a tag after the tags it reads).

use std::collections::{BTreeMap, BTreeSet};

use regex_lite::Regex;
use serde_json::Value;

use super::conditions::Patterns;
use super::definition::{
    AggregateOp, Catalog, CompareOp, Condition, DefinitionError, EventFilter, Expr, Operand, RfmOutput, TagDefinition,
    TagKind, ValueKind,
};
use super::names::{Expected, closest};
use crate::event::EventType;

/// A checked set of definitions: the computed ones in evaluation order, with their patterns compiled.
#[derive(Debug, Clone)]
pub struct TagSet {
    pub(crate) tags: Vec<TagDefinition>,
    /// Compiled `regex` conditions by pattern.
    pub(crate) patterns: Patterns,
}

impl TagSet {
    /// Checks `definitions` against what is known of the data; on success, the computed tags (active and
    /// deprecated) in evaluation order. Every problem found is returned, not only the first.
    pub fn check(definitions: &[TagDefinition], catalog: &Catalog) -> Result<Self, Vec<DefinitionError>> {
        let mut checker = Checker::new(catalog);
        let by_id: TagsById<'_> = definitions.iter().enumerate().map(|(i, d)| (d.id.as_str(), (i, d))).collect();
        let mut seen = BTreeSet::new();
        for (i, def) in definitions.iter().enumerate() {
            let at = format!("tags[{i}] ({})", def.id);
            checker.expecting(&def.expected);
            checker.id(&at, &def.id, &mut seen);
            if def.version == 0 {
                checker.error(&format!("{at}.version"), "versions start at 1".into());
            }
            checker.kind(&at, &def.kind, &by_id, def.status.computed());
        }
        let order = checker.order(definitions, &by_id);
        if !checker.errors.is_empty() {
            return Err(checker.errors);
        }
        let tags = order.into_iter().map(|i| definitions[i].clone()).filter(|d| d.status.computed()).collect();
        Ok(Self { tags, patterns: checker.patterns })
    }

    /// The computed tags, in evaluation order.
    pub fn tags(&self) -> &[TagDefinition] {
        &self.tags
    }

    /// The tags whose incremental values cannot be served yet, so that the previous values keep serving:
    /// statistical tags whose version has no complete state (`ready`: the version backfilled per tag),
    /// population tags (only the full recompute gives them), and every tag that reads one of those.
    pub fn waiting(&self, ready: &BTreeMap<String, u32>) -> BTreeSet<String> {
        let mut waiting = BTreeSet::new();
        for tag in &self.tags {
            let mut reads = BTreeSet::new();
            tag_reads(&tag.kind, &mut reads);
            let own = match &tag.kind {
                TagKind::Statistical { .. } => ready.get(&tag.id) != Some(&tag.version),
                kind => kind.population(),
            };
            if own || reads.iter().any(|id| waiting.contains(id)) {
                waiting.insert(tag.id.clone());
            }
        }
        waiting
    }
}

/// Tag definitions by id, with their position.
pub(crate) type TagsById<'d> = BTreeMap<&'d str, (usize, &'d TagDefinition)>;

/// Collects definition problems and compiles patterns; shared by tag and audience checks.
pub(crate) struct Checker<'c> {
    catalog: &'c Catalog,
    /// What the definition being checked expects before the data carries it.
    expected: Expected,
    pub(crate) errors: Vec<DefinitionError>,
    pub(crate) patterns: Patterns,
}

impl<'c> Checker<'c> {
    pub(crate) fn new(catalog: &'c Catalog) -> Self {
        Self { catalog, expected: Expected::default(), errors: Vec::new(), patterns: Patterns::new() }
    }

    /// Checks the next definition's names with what it `expected`.
    pub(crate) fn expecting(&mut self, expected: &Expected) {
        self.expected = expected.clone();
    }

    /// Whether a name unknown to the catalog is an error: the catalog knows something, and the definition
    /// does not expect the name.
    fn refuses(&self, name: &str) -> bool {
        !self.catalog.is_empty() && !self.expected.covers(name)
    }

    fn unknown<'k>(&mut self, path: &str, what: &str, name: &str, known: impl IntoIterator<Item = &'k String>) {
        let mut problem = format!("unknown {what} `{name}`");
        match closest(name, known.into_iter().map(String::as_str)) {
            Some(close) => problem.push_str(&format!("; did you mean `{close}`?")),
            None => problem.push_str(" (not in the data dictionary; list it in `expected` if it is still to come)"),
        }
        self.error(path, problem);
    }

    /// Checks that the data has carried the track event `name`.
    pub(crate) fn event(&mut self, path: &str, name: &str) {
        if self.refuses(name) && !self.catalog.events.contains(name) {
            let catalog = self.catalog;
            self.unknown(path, "event", name, &catalog.events);
        }
    }

    /// The kind of the event property `name` where known; an error when the data never carried it.
    pub(crate) fn property(&mut self, path: &str, name: &str) -> Option<ValueKind> {
        let kind = self.catalog.properties.get(name).copied();
        if kind.is_none() && self.refuses(name) {
            let catalog = self.catalog;
            self.unknown(path, "property", name, catalog.properties.keys());
        }
        kind
    }

    /// The kind of the trait `name` where known; an error when the data never carried it.
    pub(crate) fn trait_kind(&mut self, path: &str, name: &str) -> Option<ValueKind> {
        let kind = self.catalog.traits.get(name).copied();
        if kind.is_none() && self.refuses(name) {
            let catalog = self.catalog;
            self.unknown(path, "trait", name, catalog.traits.keys());
        }
        kind
    }

    pub(crate) fn error(&mut self, path: &str, problem: String) {
        self.errors.push(DefinitionError { path: path.to_string(), problem });
    }

    /// Checks an id's form, and that no earlier definition (`seen`) has it.
    pub(crate) fn id<'i>(&mut self, at: &str, id: &'i str, seen: &mut BTreeSet<&'i str>) {
        if !seen.insert(id) {
            self.error(&format!("{at}.id"), format!("`{id}` is defined twice"));
        }
        let valid = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            self.error(&format!("{at}.id"), format!("`{id}` is not an id: use 1–64 of a-z, 0-9 and _"));
        }
    }

    fn kind(&mut self, at: &str, kind: &TagKind, tags: &TagsById<'_>, computed: bool) {
        match kind {
            TagKind::Statistical { filter, aggregate, window } => {
                self.filter(&format!("{at}.filter"), filter);
                let path = format!("{at}.aggregate.property");
                match (&aggregate.property, aggregate.op) {
                    (None, AggregateOp::Count) => {}
                    (None, op) => self.error(&path, format!("{op:?} needs a property").to_lowercase()),
                    (Some(property), op) => {
                        if property.is_empty() {
                            self.error(&path, "empty property name".into());
                        } else if let Some(kind) = self.property(&path, property)
                            && op.numeric()
                            && kind != ValueKind::Number
                        {
                            self.error(&path, format!("`{property}` holds {kind:?} values; {op:?} needs numbers"));
                        }
                    }
                }
                self.window(&format!("{at}.window"), window);
            }
            TagKind::Rule { when } => self.expr(&format!("{at}.when"), when, tags, computed),
            TagKind::Buckets { of, buckets, otherwise } => {
                self.operand(&format!("{at}.of"), of, Some(ValueKind::Number), tags, computed);
                if buckets.is_empty() {
                    self.error(&format!("{at}.buckets"), "at least one bucket".into());
                }
                for (i, bucket) in buckets.iter().enumerate() {
                    let path = format!("{at}.buckets[{i}]");
                    if bucket.label.is_empty() {
                        self.error(&format!("{path}.label"), "empty label".into());
                    }
                    if let (Some(min), Some(max)) = (bucket.min, bucket.max)
                        && min >= max
                    {
                        self.error(&path, format!("min {min} is not below max {max}"));
                    }
                }
                if otherwise.as_deref() == Some("") {
                    self.error(&format!("{at}.otherwise"), "empty label".into());
                }
            }
            TagKind::Propensity { purchase, horizon_days, revenue } => {
                self.purchase(&format!("{at}.purchase"), purchase);
                if !(1..=365).contains(horizon_days) {
                    self.error(&format!("{at}.horizonDays"), format!("{horizon_days} is not between 1 and 365"));
                }
                if let Some(revenue) = revenue {
                    self.numeric_property(&format!("{at}.revenue"), revenue);
                }
            }
            TagKind::Rfm { purchase, revenue, .. } => {
                self.purchase(&format!("{at}.purchase"), purchase);
                self.numeric_property(&format!("{at}.revenue"), revenue);
            }
            TagKind::Affinity { weights, product, category, half_life_days, share_of } => {
                if weights.is_empty() {
                    self.error(&format!("{at}.weights"), "weigh at least one event".into());
                }
                for (name, weight) in weights {
                    let path = format!("{at}.weights.{name}");
                    if !(weight.is_finite() && *weight > 0.0) {
                        self.error(&path, format!("{weight} is not a positive weight"));
                    } else {
                        self.event(&path, name);
                    }
                }
                for (field, property) in [("product", product), ("category", category)] {
                    if property.is_empty() {
                        self.error(&format!("{at}.{field}"), "empty property name".into());
                    } else {
                        self.property(&format!("{at}.{field}"), property);
                    }
                }
                if *half_life_days == Some(0) {
                    self.error(&format!("{at}.halfLifeDays"), "a half-life of zero days".into());
                }
                if share_of.as_deref() == Some("") {
                    self.error(&format!("{at}.shareOf"), "empty category".into());
                }
            }
        }
    }

    /// A numeric event property read by a predictive tag.
    fn numeric_property(&mut self, path: &str, property: &str) {
        if property.is_empty() {
            self.error(path, "empty property name".into());
        } else if let Some(kind) = self.property(path, property)
            && kind != ValueKind::Number
        {
            self.error(path, format!("`{property}` holds {kind:?} values; numbers needed"));
        }
    }

    pub(crate) fn window(&mut self, at: &str, window: &super::definition::Window) {
        match (window.last_days, window.last_hours) {
            (Some(_), Some(_)) => self.error(at, "give lastDays or lastHours, not both".into()),
            (Some(0), _) | (_, Some(0)) => self.error(at, "a window of zero length holds no event".into()),
            _ => {}
        }
    }

    /// A purchase filter: a filter that names its events (every event is not a purchase).
    fn purchase(&mut self, at: &str, filter: &EventFilter) {
        if filter.events.is_empty() {
            self.error(&format!("{at}.events"), "name the purchase events".into());
        }
        self.filter(at, filter);
    }

    pub(crate) fn filter(&mut self, at: &str, filter: &EventFilter) {
        for (i, name) in filter.events.iter().enumerate() {
            self.event(&format!("{at}.events[{i}]"), name);
        }
        for (i, kind) in filter.types.iter().enumerate() {
            if EventType::parse(kind).is_none() {
                self.error(&format!("{at}.types[{i}]"), format!("unknown event type `{kind}`"));
            }
        }
        for (i, condition) in filter.properties.iter().enumerate() {
            let path = format!("{at}.properties[{i}]");
            let kind = self.property(&format!("{path}.field"), &condition.field);
            self.condition(&path, condition, kind);
        }
    }

    fn expr(&mut self, at: &str, expr: &Expr, tags: &TagsById<'_>, computed: bool) {
        match expr {
            Expr::And(all) | Expr::Or(all) => {
                let op = if matches!(expr, Expr::And(_)) { "and" } else { "or" };
                if all.is_empty() {
                    self.error(at, format!("`{op}` of nothing"));
                }
                for (i, e) in all.iter().enumerate() {
                    self.expr(&format!("{at}.{op}[{i}]"), e, tags, computed);
                }
            }
            Expr::Not(inner) => self.expr(&format!("{at}.not"), inner, tags, computed),
            Expr::Condition(condition) => match Operand::parse(&condition.field) {
                Ok(operand) => {
                    let kind = self.operand(&format!("{at}.field"), &operand, None, tags, computed);
                    self.condition(at, condition, kind);
                }
                Err(problem) => self.error(&format!("{at}.field"), problem.0),
            },
        }
    }

    /// Checks that `operand` exists; returns its kind where known.
    pub(crate) fn operand(
        &mut self,
        at: &str,
        operand: &Operand,
        want: Option<ValueKind>,
        tags: &TagsById<'_>,
        computed: bool,
    ) -> Option<ValueKind> {
        let kind = match operand {
            Operand::Trait(name) => self.trait_kind(at, name),
            Operand::Tag(id) => match tags.get(id.as_str()) {
                None => {
                    self.error(at, format!("unknown tag `{id}`"));
                    None
                }
                Some((_, tag)) => {
                    if computed && !tag.status.computed() {
                        self.error(at, format!("tag `{id}` is {:?}, so it has no value", tag.status).to_lowercase());
                    }
                    tag_kind(&tag.kind)
                }
            },
        };
        if let (Some(want), Some(kind)) = (want, kind)
            && want != kind
        {
            self.error(at, format!("`{operand}` holds {kind:?} values; {want:?} needed"));
        }
        kind
    }

    /// Checks the value's shape for the operator, and that it fits the operand's kind where known.
    pub(crate) fn condition(&mut self, at: &str, condition: &Condition, kind: Option<ValueKind>) {
        let value = &condition.value;
        let path = format!("{at}.value");
        let number = |v: &Value| v.as_f64().is_some();
        let mismatch = |k: ValueKind, v: &Value| ValueKind::of(v).is_some_and(|vk| vk != k);
        match condition.op {
            CompareOp::Eq | CompareOp::Ne => {
                if value.is_null() {
                    self.error(&path, "compare with a value; use `exists` for presence".into());
                } else if let Some(k) = kind
                    && k != ValueKind::Other
                    && mismatch(k, value)
                {
                    self.error(&path, format!("`{}` holds {k:?} values, compared with {value}", condition.field));
                }
            }
            CompareOp::Gt | CompareOp::Gte | CompareOp::Lt | CompareOp::Lte => {
                if !(number(value) || value.is_string()) {
                    self.error(&path, format!("{:?} needs a number or a string, got {value}", condition.op));
                } else if let Some(k) = kind
                    && mismatch(k, value)
                {
                    self.error(&path, format!("`{}` holds {k:?} values, compared with {value}", condition.field));
                }
            }
            CompareOp::In => {
                if value.as_array().is_none_or(|a| a.is_empty()) {
                    self.error(&path, "`in` needs a non-empty array of values".into());
                }
            }
            CompareOp::Contains => {
                if !(value.is_string() || number(value) || value.is_boolean()) {
                    self.error(&path, format!("`contains` needs a string, number or boolean, got {value}"));
                }
            }
            CompareOp::Exists => {
                if !(value.is_null() || value.is_boolean()) {
                    self.error(&path, "`exists` takes true, false or nothing".into());
                }
            }
            CompareOp::Between => match value.as_array().map(Vec::as_slice) {
                Some([low, high]) if number(low) && number(high) => {
                    if low.as_f64() > high.as_f64() {
                        self.error(&path, format!("between {low} and {high}: the low end is above the high end"));
                    }
                    if let Some(k) = kind
                        && k != ValueKind::Number
                    {
                        self.error(&path, format!("`{}` holds {k:?} values; between needs numbers", condition.field));
                    }
                }
                _ => self.error(&path, "`between` needs [low, high] numbers".into()),
            },
            CompareOp::Regex => match value.as_str() {
                Some(pattern) => match Regex::new(pattern) {
                    Ok(regex) => {
                        self.patterns.insert(pattern.to_string(), regex);
                    }
                    Err(e) => self.error(&path, format!("invalid pattern: {e}")),
                },
                None => self.error(&path, "`regex` needs a pattern string".into()),
            },
        }
    }

    /// A topological order of all definitions (a tag after those it reads); cycles are errors.
    fn order(&mut self, definitions: &[TagDefinition], by_id: &TagsById<'_>) -> Vec<usize> {
        let reads: Vec<BTreeSet<usize>> = definitions
            .iter()
            .map(|d| {
                let mut ids = BTreeSet::new();
                tag_reads(&d.kind, &mut ids);
                ids.iter().filter_map(|id| by_id.get(id.as_str()).map(|(i, _)| *i)).collect()
            })
            .collect();
        // 0: not visited, 1: on the current path, 2: done.
        let mut state = vec![0u8; definitions.len()];
        let mut order = Vec::with_capacity(definitions.len());
        for start in 0..definitions.len() {
            self.visit(start, &reads, &mut state, &mut order, definitions);
        }
        order
    }

    fn visit(
        &mut self,
        i: usize,
        reads: &[BTreeSet<usize>],
        state: &mut [u8],
        order: &mut Vec<usize>,
        defs: &[TagDefinition],
    ) {
        match state[i] {
            2 => {}
            1 => self.error(&format!("tags[{i}] ({})", defs[i].id), "reads itself through other tags (a cycle)".into()),
            _ => {
                state[i] = 1;
                for &j in &reads[i] {
                    if state[j] == 1 {
                        self.error(
                            &format!("tags[{i}] ({})", defs[i].id),
                            format!("reads `{}`, which reads it back (a cycle)", defs[j].id),
                        );
                    } else {
                        self.visit(j, reads, state, order, defs);
                    }
                }
                state[i] = 2;
                order.push(i);
            }
        }
    }
}

/// The ids of the tags a definition reads.
fn tag_reads(kind: &TagKind, out: &mut BTreeSet<String>) {
    fn expr(e: &Expr, out: &mut BTreeSet<String>) {
        match e {
            Expr::And(all) | Expr::Or(all) => all.iter().for_each(|e| expr(e, out)),
            Expr::Not(inner) => expr(inner, out),
            Expr::Condition(c) => {
                if let Ok(Operand::Tag(id)) = Operand::parse(&c.field) {
                    out.insert(id);
                }
            }
        }
    }
    match kind {
        TagKind::Statistical { .. } | TagKind::Propensity { .. } | TagKind::Rfm { .. } | TagKind::Affinity { .. } => {}
        TagKind::Rule { when } => expr(when, out),
        TagKind::Buckets { of: Operand::Tag(id), .. } => {
            out.insert(id.clone());
        }
        TagKind::Buckets { .. } => {}
    }
}

/// The kind of value a tag produces, where it is fixed.
fn tag_kind(kind: &TagKind) -> Option<ValueKind> {
    match kind {
        TagKind::Statistical { aggregate, .. } => match aggregate.op {
            AggregateOp::Count
            | AggregateOp::Sum
            | AggregateOp::Avg
            | AggregateOp::Min
            | AggregateOp::Max
            | AggregateOp::DistinctCount => Some(ValueKind::Number),
            AggregateOp::UniqueList => Some(ValueKind::Other),
            AggregateOp::First | AggregateOp::Last | AggregateOp::MostFrequent => None,
        },
        TagKind::Rule { .. } => Some(ValueKind::Boolean),
        TagKind::Buckets { .. } => Some(ValueKind::String),
        TagKind::Propensity { .. } => Some(ValueKind::Number),
        TagKind::Rfm { output: RfmOutput::Segment, .. } => Some(ValueKind::String),
        TagKind::Rfm { .. } => Some(ValueKind::Number),
        TagKind::Affinity { share_of: Some(_), .. } => Some(ValueKind::Number),
        TagKind::Affinity { .. } => Some(ValueKind::String),
    }
}
