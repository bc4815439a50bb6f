//! One-click theme dashboards: acquisition and traffic, e-commerce conversion, retention and engagement, customer
//! value, audience overview. Each assembles its insights from what the data dictionary says exists (events,
//! their numeric properties, traits, audiences), leaves out what the data cannot support and says why. A
//! theme's insights and dashboard have ids starting `theme-`: assembling a theme again replaces them.

use serde::Serialize;
use serde_json::{Value as Json, json};
use shared::catalog::Dictionary;
use shared::profile::ProfileRules;
use shared::time::UtcTime;

use super::period::DAY_MS;
use super::saved::{DASHBOARDS, Dashboard, Dashboards, INSIGHTS, Insight, Insights, forget_results, update, upsert};
use crate::Error;
use crate::storage::ObjectStore;

/// The themes.
pub const THEMES: [Theme; 5] = [Theme::Acquisition, Theme::Ecommerce, Theme::Retention, Theme::Value, Theme::Audiences];

/// A theme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Theme {
    /// Acquisition and traffic.
    Acquisition,
    /// E-commerce conversion.
    Ecommerce,
    /// Retention and engagement.
    Retention,
    /// Customer value.
    Value,
    /// Audience overview.
    Audiences,
}

impl Theme {
    /// By its id.
    pub fn parse(id: &str) -> Result<Self, Error> {
        THEMES.into_iter().find(|t| t.id() == id).ok_or_else(|| {
            let ids: Vec<&str> = THEMES.iter().map(|t| t.id()).collect();
            Error::Invalid(format!("theme: one of {}, not {id:?}", ids.join(", ")))
        })
    }

    /// Its id (`ecommerce`), and its dashboard's (`theme-ecommerce`).
    pub fn id(self) -> &'static str {
        match self {
            Theme::Acquisition => "acquisition",
            Theme::Ecommerce => "ecommerce",
            Theme::Retention => "retention",
            Theme::Value => "value",
            Theme::Audiences => "audiences",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Theme::Acquisition => "Acquisition and traffic",
            Theme::Ecommerce => "E-commerce conversion",
            Theme::Retention => "Retention and engagement",
            Theme::Value => "Customer value",
            Theme::Audiences => "Audience overview",
        }
    }

    fn last_days(self) -> u32 {
        match self {
            Theme::Acquisition | Theme::Ecommerce | Theme::Audiences => 30,
            Theme::Retention | Theme::Value => 90,
        }
    }
}

/// An insight a theme could not include, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeftOut {
    /// The insight's id, had it been included.
    pub insight: String,
    /// Its name.
    pub name: String,
    /// What the data lacks.
    pub reason: String,
}

/// A theme's dashboard as the data supports it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Assembled {
    /// The theme.
    pub theme: Theme,
    /// The dashboard (none: the data supports none of its insights).
    pub dashboard: Option<Dashboard>,
    /// Its insights, in order.
    pub insights: Vec<Insight>,
    /// What was left out, and why.
    pub left_out: Vec<LeftOut>,
}

/// What the dictionary and the definitions say exists.
pub struct Known<'a> {
    /// The data dictionary.
    pub dictionary: &'a Dictionary,
    /// The computed audiences' ids (active or deprecated).
    pub audiences: &'a [String],
    /// The profile rules: which traits are personal data now (the dictionary's flag is as of when a value was
    /// last seen).
    pub rules: &'a ProfileRules,
}

/// Event names of the Segment e-commerce and lifecycle specs the themes look for.
const VIEWED: &str = "Product Viewed";
const ADDED: &str = "Product Added";
const CHECKOUT: &str = "Checkout Started";
const ORDER: &str = "Order Completed";
const SIGNED_UP: &str = "Signed Up";
/// Properties that say where a visit came from, in the order looked for.
const CHANNELS: [&str; 6] = ["utm_source", "source", "channel", "campaign", "referrer", "utm_medium"];
/// Traits that say where a person is, in the order looked for.
const PLACES: [&str; 5] = ["country", "region", "province", "city", "state"];
/// Traits that say what kind of customer a person is, in the order looked for.
const KINDS: [&str; 6] = ["plan", "tier", "level", "membership", "segment", "customer_type"];
/// Properties that hold an order's amount, in the order looked for.
const AMOUNTS: [&str; 4] = ["revenue", "total", "value", "amount"];

impl Known<'_> {
    fn has_event(&self, name: &str) -> bool {
        self.dictionary.sources.values().any(|s| s.events.contains_key(name))
    }

    fn any_event(&self) -> bool {
        self.dictionary.sources.values().any(|s| !s.events.is_empty())
    }

    /// The first of `names` that is a numeric property of `event`.
    fn numeric_property(&self, event: &str, names: &[&str]) -> Option<String> {
        names
            .iter()
            .find(|name| {
                self.dictionary.sources.values().filter_map(|s| s.events.get(event)).any(|entry| {
                    entry.properties.get(**name).is_some_and(|f| f.types.get("number").is_some_and(|n| *n > 0))
                })
            })
            .map(|name| name.to_string())
    }

    /// The first of `names` that is a property of some event and not personal data.
    fn category_property(&self, names: &[&str]) -> Option<String> {
        names
            .iter()
            .find(|name| {
                let fields = self.dictionary.sources.values().flat_map(|s| s.events.values());
                let mut fields = fields.filter_map(|e| e.properties.get(**name)).peekable();
                fields.peek().is_some()
                    && !self.rules.is_personal(name)
                    && fields.all(|f| !f.personal && f.types.get("string").is_some_and(|n| *n > 0))
            })
            .map(|name| name.to_string())
    }

    /// The first of `names` that is a trait and not personal data.
    fn category_trait(&self, names: &[&str]) -> Option<String> {
        names
            .iter()
            .find(|name| {
                !self.rules.is_personal(name)
                    && self
                        .dictionary
                        .traits
                        .get(**name)
                        .is_some_and(|f| !f.personal && f.types.get("string").is_some_and(|n| *n > 0))
            })
            .map(|name| name.to_string())
    }
}

/// Builds one theme's insights.
struct Builder {
    theme: Theme,
    from: UtcTime,
    to: UtcTime,
    insights: Vec<Insight>,
    left_out: Vec<LeftOut>,
}

impl Builder {
    /// `theme-<theme>-<slug>` in an id's characters, made unique among the theme's (two audiences whose ids
    /// differ only in case or punctuation).
    fn id(&self, slug: &str) -> String {
        let id = format!("theme-{}-{slug}", self.theme.id());
        let id: String = id
            .chars()
            .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' { c } else { '-' })
            .collect();
        let taken =
            |id: &str| self.insights.iter().any(|i| i.id == id) || self.left_out.iter().any(|l| l.insight == id);
        (1..)
            .map(|n: usize| match n {
                1 => id.chars().take(64).collect::<String>(),
                n => format!("{}-{n}", id.chars().take(60).collect::<String>()),
            })
            .find(|id| !taken(id))
            .unwrap_or(id)
    }

    /// Adds the insight when `analysis` is there, else says why not.
    fn offer(&mut self, slug: &str, name: &str, chart: &str, analysis: Result<Json, String>) -> Result<(), Error> {
        let id = self.id(slug);
        match analysis {
            Ok(analysis) => {
                let insight: Insight = serde_json::from_value(json!({
                    "id": id, "name": name, "description": format!("Part of the {} theme.", self.theme.name()),
                    "analysis": analysis, "chart": chart,
                }))
                .map_err(|e| Error::Machine(format!("theme {}: insight {id}: {e}", self.theme.id())))?;
                insight.check()?;
                self.insights.push(insight);
            }
            Err(reason) => self.left_out.push(LeftOut { insight: id, name: name.to_string(), reason }),
        }
        Ok(())
    }

    fn trends(&self, definition: Json) -> Json {
        let mut definition = definition;
        definition["from"] = json!(self.from);
        definition["to"] = json!(self.to);
        json!({"kind": "trends", "definition": definition})
    }

    fn range(&self) -> (Json, Json) {
        (json!(self.from), json!(self.to))
    }
}

fn needs(ok: bool, reason: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(reason()) }
}

fn no_event(name: &str) -> String {
    format!("no track event `{name}` in the data dictionary")
}

/// `theme`'s dashboard as `known` supports it; the insights' own range is the theme's last days to the end of
/// `now`'s day (the dashboard runs them over the data's last days).
pub fn assemble(theme: Theme, known: &Known<'_>, now: UtcTime) -> Result<Assembled, Error> {
    let end = (now.unix_millis().div_euclid(DAY_MS) + 1) * DAY_MS;
    let at = |ms: i64| UtcTime::from_unix_millis(ms).ok_or_else(|| Error::Invalid("now: out of range".into()));
    let days = theme.last_days();
    let mut b = Builder {
        theme,
        from: at(end - i64::from(days) * DAY_MS)?,
        to: at(end)?,
        insights: Vec::new(),
        left_out: Vec::new(),
    };
    let any = needs(known.any_event(), || "no track events in the data dictionary".into());
    match theme {
        Theme::Acquisition => {
            let daily = any.clone().map(|()| b.trends(json!({"measure": {"op": "persons"}, "period": "day"})));
            b.offer("active-persons", "Active persons per day", "line", daily)?;
            let events = any.clone().map(|()| b.trends(json!({"measure": {"op": "events"}, "period": "day"})));
            b.offer("events", "Events per day", "bar", events)?;
            let signups = needs(known.has_event(SIGNED_UP), || no_event(SIGNED_UP))
                .map(|()| b.trends(json!({"event": SIGNED_UP, "measure": {"op": "persons"}, "period": "day"})));
            b.offer("sign-ups", "Sign-ups per day", "line", signups)?;
            let channel = known.category_property(&CHANNELS).ok_or_else(|| {
                format!("no event has a text property among {}", CHANNELS.map(|c| format!("`{c}`")).join(", "))
            });
            let by_channel = channel.map(|p| {
                b.trends(json!({"measure": {"op": "persons"}, "period": "day", "breakdown": {"property": p}, "top": 8}))
            });
            b.offer("by-channel", "Active persons by channel", "line", by_channel)?;
            let place = known.category_trait(&PLACES).ok_or_else(|| {
                format!("no text trait among {} that is not personal data", PLACES.map(|c| format!("`{c}`")).join(", "))
            });
            let by_place = any.and(place).map(|t| {
                b.trends(json!({"measure": {"op": "persons"}, "period": "week", "breakdown": {"trait": t}, "top": 10}))
            });
            b.offer("by-place", "Active persons by place", "bar", by_place)?;
        }
        Theme::Ecommerce => {
            let steps: Vec<&str> =
                [VIEWED, ADDED, CHECKOUT, ORDER].into_iter().filter(|e| known.has_event(e)).collect();
            let funnel = needs(steps.len() >= 2 && steps.contains(&ORDER), || {
                format!(
                    "needs `{ORDER}` and at least one of `{VIEWED}`, `{ADDED}`, `{CHECKOUT}`; the data dictionary has {}",
                    if steps.is_empty() { "none of them".to_string() } else { steps.join(", ") }
                )
            })
            .map(|()| {
                let (from, to) = b.range();
                json!({"kind": "funnel", "definition": {"steps": steps, "windowMs": 7 * DAY_MS, "from": from, "to": to}})
            });
            b.offer("funnel", "Purchase funnel (7-day window)", "funnel", funnel)?;
            let has_order = needs(known.has_event(ORDER), || no_event(ORDER));
            let orders = has_order
                .clone()
                .map(|()| b.trends(json!({"event": ORDER, "measure": {"op": "events"}, "period": "day"})));
            b.offer("orders", "Orders per day", "bar", orders)?;
            let amount = has_order.and_then(|()| {
                known
                    .numeric_property(ORDER, &AMOUNTS)
                    .ok_or_else(|| format!("`{ORDER}` has no numeric {}", AMOUNTS.map(|c| format!("`{c}`")).join(", ")))
            });
            let revenue = amount
                .clone()
                .map(|p| b.trends(json!({"event": ORDER, "measure": {"op": "sum", "property": p}, "period": "day"})));
            b.offer("revenue", "Revenue per day", "line", revenue)?;
            let average = amount.map(|p| {
                b.trends(json!({"event": ORDER, "measure": {"op": "average", "property": p}, "period": "week"}))
            });
            b.offer("order-value", "Average order value per week", "line", average)?;
            let paths = needs(known.has_event(VIEWED), || no_event(VIEWED)).map(|()| {
                let (from, to) = b.range();
                json!({"kind": "paths", "definition": {"event": VIEWED, "depth": 3, "windowMs": DAY_MS, "from": from, "to": to}})
            });
            b.offer("after-view", "What follows a product view", "sankey", paths)?;
        }
        Theme::Retention => {
            let (from, to) = b.range();
            let weekly = any.clone().map(|()| {
                json!({"kind": "retention", "definition": {"cohortEvent": null, "returnEvent": null, "period": "week",
                       "periods": 8, "from": from, "to": to}})
            });
            b.offer("weekly", "Weekly retention", "cohorts", weekly)?;
            let to_order = needs(known.has_event(SIGNED_UP), || no_event(SIGNED_UP))
                .and(needs(known.has_event(ORDER), || no_event(ORDER)))
                .map(|()| {
                    json!({"kind": "retention", "definition": {"cohortEvent": SIGNED_UP, "returnEvent": ORDER,
                           "period": "week", "periods": 8, "from": from, "to": to}})
                });
            b.offer("sign-up-to-order", "Orders by sign-up week", "cohorts", to_order)?;
            let active = any.clone().map(|()| b.trends(json!({"measure": {"op": "persons"}, "period": "week"})));
            b.offer("weekly-active", "Weekly active persons", "line", active)?;
            let by_kind = any.and(known.category_trait(&KINDS).ok_or_else(|| {
                format!("no text trait among {} that is not personal data", KINDS.map(|c| format!("`{c}`")).join(", "))
            }));
            let by_kind = by_kind.map(|t| {
                json!({"kind": "retention", "definition": {"cohortEvent": null, "returnEvent": null, "period": "week",
                       "periods": 8, "from": from, "to": to, "breakdown": {"trait": t}, "top": 5}})
            });
            b.offer("by-kind", "Weekly retention by kind of customer", "cohorts", by_kind)?;
            let first = needs(known.has_event(SIGNED_UP), || no_event(SIGNED_UP)).map(|()| {
                json!({"kind": "paths", "definition": {"event": SIGNED_UP, "depth": 3, "windowMs": 7 * DAY_MS,
                       "from": from, "to": to}})
            });
            b.offer("after-sign-up", "What new persons do first", "sankey", first)?;
        }
        Theme::Value => {
            let amount = needs(known.has_event(ORDER), || no_event(ORDER)).and_then(|()| {
                known
                    .numeric_property(ORDER, &AMOUNTS)
                    .ok_or_else(|| format!("`{ORDER}` has no numeric {}", AMOUNTS.map(|c| format!("`{c}`")).join(", ")))
            });
            let value = amount.clone().map(|p| {
                let since = UtcTime::from_unix_millis(b.to.unix_millis() - 90 * DAY_MS).map(|t| json!(t));
                json!({"kind": "value", "definition": {"purchaseEvent": ORDER, "revenueProperty": p, "at": b.to,
                       "since": since, "horizonDays": 90}})
            });
            b.offer("rfm-ltv", "RFM segments and lifetime value", "table", value)?;
            let monthly = amount
                .clone()
                .map(|p| b.trends(json!({"event": ORDER, "measure": {"op": "sum", "property": p}, "period": "month"})));
            b.offer("revenue", "Revenue per month", "bar", monthly)?;
            let buyers =
                amount.map(|_| b.trends(json!({"event": ORDER, "measure": {"op": "persons"}, "period": "month"})));
            b.offer("buyers", "Buyers per month", "bar", buyers)?;
        }
        Theme::Audiences => {
            let some = needs(!known.audiences.is_empty(), || "no computed audiences (active or deprecated)".into());
            let sizes = some.clone().map(|()| {
                json!({"kind": "sql", "definition": {"query":
                    "SELECT audience, count(*) AS persons FROM memberships GROUP BY audience ORDER BY persons DESC, audience"}})
            });
            b.offer("sizes", "Persons per audience", "bar", sizes)?;
            match some {
                Ok(()) => {
                    let (from, to) = b.range();
                    for audience in known.audiences.iter().take(5) {
                        let compare = json!({"kind": "compare", "definition": {"audience": audience, "against": null,
                                             "from": from, "to": to}});
                        let slug = format!("compare-{}", audience.to_ascii_lowercase());
                        b.offer(&slug, &format!("What sets `{audience}` apart"), "table", Ok(compare))?;
                    }
                }
                Err(reason) => b.offer("compare", "What sets each audience apart", "table", Err(reason))?,
            }
            let by_kind = any.and(known.category_trait(&KINDS).ok_or_else(|| {
                format!("no text trait among {} that is not personal data", KINDS.map(|c| format!("`{c}`")).join(", "))
            }));
            let by_kind = by_kind.map(|t| {
                b.trends(json!({"measure": {"op": "persons"}, "period": "week", "breakdown": {"trait": t}, "top": 10}))
            });
            b.offer("by-kind", "Active persons by kind of customer", "bar", by_kind)?;
        }
    }
    let dashboard = (!b.insights.is_empty()).then(|| Dashboard {
        id: format!("theme-{}", theme.id()),
        name: theme.name().to_string(),
        description: format!("Assembled from the data dictionary; {} left out.", b.left_out.len()),
        insights: b.insights.iter().map(|i| i.id.clone()).collect(),
        last_days: Some(days),
    });
    Ok(Assembled { theme, dashboard, insights: b.insights, left_out: b.left_out })
}

/// `themes` as the stored data dictionary and audience definitions support them at `now`.
pub async fn assemble_stored<S: ObjectStore>(
    store: &S,
    themes: &[Theme],
    now: UtcTime,
) -> Result<Vec<Assembled>, Error> {
    use shared::storage::keys;
    let dictionary = crate::catalog::load(store).await?;
    // Only audiences that are computed have members to compare.
    let audiences: Vec<String> = crate::definitions::read_array(store, keys::CONFIG_AUDIENCES)
        .await?
        .iter()
        .filter(|a| {
            serde_json::from_value::<shared::tags::Lifecycle>(a["status"].clone()).is_ok_and(|status| status.computed())
        })
        .filter_map(|a| a["id"].as_str().map(str::to_string))
        .collect();
    let rules: ProfileRules = crate::config::read(store, keys::CONFIG_PROFILES).await?.unwrap_or_default();
    let known = Known { dictionary: &dictionary, audiences: &audiences, rules: &rules };
    themes.iter().map(|theme| assemble(*theme, &known, now)).collect()
}

/// What saving a theme replaced.
#[derive(Debug, Clone, Default)]
pub struct Replaced {
    /// The insights saved before under the same ids.
    pub insights: Vec<Insight>,
    /// The insights the theme's dashboard showed before and this assembly no longer holds (and no dashboard
    /// shows), removed.
    pub removed: Vec<Insight>,
    /// The dashboard saved before under the same id.
    pub dashboard: Option<Dashboard>,
}

/// What the audit log keeps of saving `assembled`: insights by [`super::saved::summary`] (a keyed hash of their
/// definitions, never their text), the dashboards, and what was left out.
pub fn audited(
    assembled: &Assembled,
    replaced: &Replaced,
    key: &shared::access::IdentifierKey,
) -> crate::audit::Change {
    let summaries = |insights: &[Insight]| insights.iter().map(|i| super::saved::summary(i, key)).collect::<Vec<_>>();
    crate::audit::Change {
        before: Some(json!({"insights": summaries(&replaced.insights), "removed": summaries(&replaced.removed),
                            "dashboard": replaced.dashboard})),
        after: Some(json!({"insights": summaries(&assembled.insights), "dashboard": assembled.dashboard})),
        detail: Some(json!({"leftOut": assembled.left_out})),
    }
}

/// Whether `id` is a theme's (insights and dashboards with ids starting `theme-` are saved only by assembling a
/// theme).
pub fn is_theme_id(id: &str) -> bool {
    id.starts_with("theme-")
}

/// Saves an assembled theme: its insights (each replacing the one with its id), then its dashboard, then removes
/// the insights its dashboard showed before and no longer does (unless another dashboard shows them). Results
/// kept for a replaced insight whose analysis changed, or a removed one, are forgotten.
pub async fn save<S: ObjectStore>(store: &S, assembled: &Assembled) -> Result<Replaced, Error> {
    let Some(dashboard) = &assembled.dashboard else {
        let reasons: Vec<String> = assembled.left_out.iter().map(|l| format!("{}: {}", l.name, l.reason)).collect();
        return Err(Error::Invalid(format!(
            "theme {}: the data supports none of its insights ({})",
            assembled.theme.id(),
            reasons.join("; ")
        )));
    };
    // Room for the dashboard before anything is written.
    let boards: Dashboards = super::saved::load(store, DASHBOARDS).await?;
    if !boards.dashboards.iter().any(|d| d.id == dashboard.id) && boards.dashboards.len() >= super::saved::MAX_SAVED {
        return Err(Error::Invalid(format!("dashboards: at most {}; delete one first", super::saved::MAX_SAVED)));
    }
    // The insights, then the dashboard that shows them.
    let replaced = update(store, INSIGHTS, |saved: &mut Insights| {
        let mut replaced = Vec::new();
        for insight in &assembled.insights {
            if let Some(before) = upsert(&mut saved.insights, insight, "insights")? {
                replaced.push(before);
            }
        }
        Ok(replaced)
    })
    .await?;
    for before in &replaced {
        if assembled.insights.iter().any(|i| i.id == before.id && i.analysis != before.analysis) {
            forget_results(store, &before.id).await;
        }
    }
    let saved: Insights = super::saved::load(store, INSIGHTS).await?;
    dashboard.check(&saved.insights)?;
    let before =
        update(store, DASHBOARDS, |boards: &mut Dashboards| upsert(&mut boards.dashboards, dashboard, "dashboards"))
            .await?;
    // Last, the insights the theme's dashboard showed before and no longer does — unless a dashboard (read now,
    // after the theme's was written) still shows them.
    let earlier: Vec<&String> =
        before.iter().flat_map(|b| b.insights.iter()).filter(|id| !dashboard.insights.contains(id)).collect();
    let mut removed = Vec::new();
    if !earlier.is_empty() {
        let boards: Dashboards = super::saved::load(store, DASHBOARDS).await?;
        let shown = |id: &str| boards.dashboards.iter().any(|d| d.insights.iter().any(|i| i == id));
        let stale = |i: &Insight| is_theme_id(&i.id) && earlier.contains(&&i.id) && !shown(&i.id);
        removed = update(store, INSIGHTS, |saved: &mut Insights| {
            let removed: Vec<Insight> = saved.insights.iter().filter(|i| stale(i)).cloned().collect();
            saved.insights.retain(|i| !stale(i));
            Ok(removed)
        })
        .await?;
        for gone in &removed {
            forget_results(store, &gone.id).await;
        }
    }
    Ok(Replaced { insights: replaced, removed, dashboard: before })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use shared::catalog::{EventEntry, Field};

    use super::*;

    fn field(kind: &str, personal: bool) -> Field {
        Field { count: 10, types: BTreeMap::from([(kind.to_string(), 10)]), personal, ..Field::default() }
    }

    fn event(properties: &[(&str, &str)]) -> EventEntry {
        EventEntry {
            count: 10,
            properties: properties.iter().map(|(name, kind)| (name.to_string(), field(kind, false))).collect(),
            ..EventEntry::default()
        }
    }

    fn now() -> UtcTime {
        UtcTime::parse("2026-03-10T15:00:00Z").expect("time")
    }

    fn shop() -> Dictionary {
        let mut dictionary = Dictionary::default();
        let web = dictionary.sources.entry("web".into()).or_default();
        web.events.insert(VIEWED.into(), event(&[("utm_source", "string"), ("sku", "string")]));
        web.events.insert(CHECKOUT.into(), event(&[]));
        web.events.insert(ORDER.into(), event(&[("revenue", "number")]));
        dictionary.traits.insert("plan".into(), field("string", false));
        dictionary.traits.insert("city".into(), field("string", true));
        dictionary
    }

    fn ids(assembled: &Assembled) -> Vec<&str> {
        assembled.insights.iter().map(|i| i.id.as_str()).collect()
    }

    fn reasons(assembled: &Assembled) -> Vec<(&str, &str)> {
        assembled.left_out.iter().map(|l| (l.insight.as_str(), l.reason.as_str())).collect()
    }

    #[test]
    fn each_theme_takes_what_the_dictionary_supports_and_says_why_it_left_the_rest_out() {
        let dictionary = shop();
        let audiences = vec!["VIP buyers".to_string(), "vip_Buyers".to_string(), "VIP-buyers".to_string()];
        let known = Known { dictionary: &dictionary, audiences: &audiences, rules: &ProfileRules::default() };
        let shop = assemble(Theme::Ecommerce, &known, now()).unwrap();
        assert_eq!(
            ids(&shop),
            [
                "theme-ecommerce-funnel",
                "theme-ecommerce-orders",
                "theme-ecommerce-revenue",
                "theme-ecommerce-order-value",
                "theme-ecommerce-after-view"
            ]
        );
        let definition = serde_json::to_value(&shop.insights[0].analysis).unwrap();
        assert_eq!(definition["definition"]["steps"], json!([VIEWED, CHECKOUT, ORDER]), "the steps the data has");
        assert_eq!(definition["definition"]["from"], "2026-02-09T00:00:00.000Z", "30 days to the end of today");
        assert_eq!(definition["definition"]["to"], "2026-03-11T00:00:00.000Z");
        let revenue = serde_json::to_value(&shop.insights[2].analysis).unwrap();
        assert_eq!(revenue["definition"]["measure"], json!({"op": "sum", "property": "revenue"}));
        let board = shop.dashboard.as_ref().unwrap();
        assert_eq!((board.id.as_str(), board.insights.len(), board.last_days), ("theme-ecommerce", 5, Some(30)));
        assert!(shop.left_out.is_empty());

        let traffic = assemble(Theme::Acquisition, &known, now()).unwrap();
        assert_eq!(
            ids(&traffic),
            ["theme-acquisition-active-persons", "theme-acquisition-events", "theme-acquisition-by-channel"]
        );
        let channel = serde_json::to_value(&traffic.insights[2].analysis).unwrap();
        assert_eq!(channel["definition"]["breakdown"], json!({"property": "utm_source"}));
        assert_eq!(
            reasons(&traffic),
            [
                ("theme-acquisition-sign-ups", "no track event `Signed Up` in the data dictionary"),
                (
                    "theme-acquisition-by-place",
                    "no text trait among `country`, `region`, `province`, `city`, `state` that is not personal data"
                ),
            ],
            "a personal trait is never a breakdown"
        );

        // A trait the profile rules now call personal is no breakdown, whatever the dictionary last saw.
        let rules = ProfileRules { personal: vec!["Plan".into()], ..ProfileRules::default() };
        let careful = Known { dictionary: &dictionary, audiences: &[], rules: &rules };
        let retention = assemble(Theme::Retention, &careful, now()).unwrap();
        assert!(retention.left_out.iter().any(|l| l.insight == "theme-retention-by-kind"), "{:?}", retention.left_out);
        let retention = assemble(Theme::Retention, &known, now()).unwrap();
        assert_eq!(
            ids(&retention),
            ["theme-retention-weekly", "theme-retention-weekly-active", "theme-retention-by-kind"]
        );
        assert_eq!(retention.dashboard.as_ref().unwrap().last_days, Some(90));
        let value = assemble(Theme::Value, &known, now()).unwrap();
        assert_eq!(ids(&value), ["theme-value-rfm-ltv", "theme-value-revenue", "theme-value-buyers"]);
        let audiences = assemble(Theme::Audiences, &known, now()).unwrap();
        assert_eq!(
            ids(&audiences),
            [
                "theme-audiences-sizes",
                "theme-audiences-compare-vip-buyers",
                "theme-audiences-compare-vip_buyers",
                "theme-audiences-compare-vip-buyers-2",
                "theme-audiences-by-kind"
            ],
            "ids of their own, unique"
        );

        // Orders without an amount: no revenue, no value models; nothing defined: no audience overview.
        let mut bare = Dictionary::default();
        bare.sources.entry("web".into()).or_default().events.insert(ORDER.into(), event(&[("revenue", "string")]));
        let known = Known { dictionary: &bare, audiences: &[], rules: &ProfileRules::default() };
        let value = assemble(Theme::Value, &known, now()).unwrap();
        assert!(value.dashboard.is_none() && value.insights.is_empty());
        assert_eq!(value.left_out.len(), 3);
        assert!(
            value
                .left_out
                .iter()
                .all(|l| l.reason == "`Order Completed` has no numeric `revenue`, `total`, `value`, `amount`")
        );
        let shop = assemble(Theme::Ecommerce, &known, now()).unwrap();
        assert_eq!(
            reasons(&shop)[0].1,
            "needs `Order Completed` and at least one of `Product Viewed`, `Product Added`, `Checkout Started`; the data dictionary has Order Completed"
        );
        let audiences = assemble(Theme::Audiences, &known, now()).unwrap();
        assert_eq!(reasons(&audiences)[0], ("theme-audiences-sizes", "no computed audiences (active or deprecated)"));
        assert!(
            Theme::parse("shop")
                .unwrap_err()
                .to_string()
                .contains("one of acquisition, ecommerce, retention, value, audiences")
        );
    }

    #[tokio::test]
    async fn saving_a_theme_replaces_its_own_insights_and_refuses_one_the_data_cannot_support() {
        let dir = tempfile::tempdir().expect("dir");
        let store = crate::storage::FsStore::open(dir.path()).expect("store");
        let dictionary = shop();
        let known = Known { dictionary: &dictionary, audiences: &[], rules: &ProfileRules::default() };
        let shop = assemble(Theme::Ecommerce, &known, now()).unwrap();
        let first = save(&store, &shop).await.unwrap();
        assert!(first.insights.is_empty() && first.dashboard.is_none());
        let again = save(&store, &shop).await.unwrap();
        assert_eq!((again.insights.len(), again.dashboard.is_some()), (5, true), "assembled again: replaced");
        // The data no longer has product views: the insights that needed them are removed, not left to fail.
        let mut fewer = dictionary.clone();
        fewer.sources.values_mut().for_each(|s| {
            s.events.remove(VIEWED);
        });
        let known = Known { dictionary: &fewer, audiences: &[], rules: &ProfileRules::default() };
        let fewer = assemble(Theme::Ecommerce, &known, now()).unwrap();
        // Unless another dashboard shows it.
        let mine = Dashboard {
            id: "mine".into(),
            name: "Mine".into(),
            description: String::new(),
            insights: vec!["theme-ecommerce-after-view".into()],
            last_days: None,
        };
        update(&store, DASHBOARDS, |boards: &mut Dashboards| upsert(&mut boards.dashboards, &mine, "dashboards"))
            .await
            .unwrap();
        assert!(save(&store, &fewer).await.unwrap().removed.is_empty());
        save(&store, &shop).await.unwrap();
        update(&store, DASHBOARDS, |boards: &mut Dashboards| {
            Ok(super::super::saved::remove(&mut boards.dashboards, "mine"))
        })
        .await
        .unwrap();
        let later = save(&store, &fewer).await.unwrap();
        let removed: Vec<&str> = later.removed.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(removed, ["theme-ecommerce-after-view"]);
        let saved: Insights = super::super::saved::load(&store, INSIGHTS).await.unwrap();
        assert_eq!(saved.insights.len(), 4);
        save(&store, &shop).await.unwrap();
        let saved: Insights = super::super::saved::load(&store, INSIGHTS).await.unwrap();
        assert_eq!(saved.insights.len(), 5);
        let empty = Dictionary::default();
        let value = assemble(
            Theme::Value,
            &Known { dictionary: &empty, audiences: &[], rules: &ProfileRules::default() },
            now(),
        )
        .unwrap();
        let refused = save(&store, &value).await.unwrap_err().to_string();
        assert!(
            refused.contains("the data supports none of its insights (RFM segments and lifetime value: no track event"),
            "{refused}"
        );
        let boards: Dashboards = super::super::saved::load(&store, DASHBOARDS).await.unwrap();
        assert_eq!(boards.dashboards.len(), 1);
    }
}
