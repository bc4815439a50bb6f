//! Product tags (the item side of the profile): per product, from the events that name it — its category
//! (the most frequent one its events carry; ties: the smaller name), counts per kind of event, units and
//! revenue, and a popularity tier by rank (top 10 % "top", next 20 % "high", next 30 % "mid", the rest
//! "low"; ties by product id). Profiles' category affinity (`kind: affinity`) uses the product categories
//! learned here for events that name a product but carry no category.

use std::collections::{BTreeMap, HashMap};

use arrow_array::RecordBatch;
use serde::{Deserialize, Serialize};

use super::columnar::table::{ColumnarError, Events, numbers_of, texts};

/// How product tags are read from events (`config/products.json`; every field has a default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProductConfig {
    /// The property naming the product.
    pub product: String,
    /// The property naming its category.
    pub category: String,
    /// The property with an order's revenue for the product (summed over `events` named `orders`).
    pub revenue: String,
    /// The property with units.
    pub quantity: String,
    /// Event name → the counter it adds to (e.g. "Product Viewed" → "views").
    pub events: BTreeMap<String, String>,
    /// The counter that ranks popularity.
    pub popularity: String,
}

impl Default for ProductConfig {
    fn default() -> Self {
        Self {
            product: "product_id".into(),
            category: "category".into(),
            revenue: "revenue".into(),
            quantity: "quantity".into(),
            events: [("Product Viewed", "views"), ("Product Added", "adds"), ("Order Completed", "orders")]
                .into_iter()
                .map(|(e, c)| (e.to_string(), c.to_string()))
                .collect(),
            popularity: "orders".into(),
        }
    }
}

/// One product's tags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductTag {
    /// Its category, if any event carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Counters by name (views, adds, orders, …).
    pub counts: BTreeMap<String, u64>,
    /// Units over orders.
    pub units: f64,
    /// Revenue over the events that carry it.
    pub revenue: f64,
    /// Rank by the popularity counter (1: most popular).
    pub rank: usize,
    /// top, high, mid or low.
    pub popularity: String,
}

/// Product tags being gathered chunk by chunk.
#[derive(Debug, Clone, Default)]
pub struct ProductTags {
    config: ProductConfig,
    products: HashMap<String, (ProductTag, BTreeMap<String, u64>)>,
}

impl ProductTags {
    /// Gathering by `config`.
    pub fn new(config: ProductConfig) -> Self {
        Self { config, products: HashMap::new() }
    }

    /// Takes in one chunk's event table (profiles `first..first + profiles`).
    pub fn observe(&mut self, first: u32, profiles: usize, events: &RecordBatch) -> Result<(), ColumnarError> {
        let mut events = Events::read(events, first, profiles)?;
        let names = texts(&mut events, "event")?;
        let product = texts(&mut events, &format!("properties.{}", self.config.product))?;
        let category = texts(&mut events, &format!("properties.{}", self.config.category))?;
        let revenue = numbers_of(events.column(&format!("properties.{}", self.config.revenue))?);
        let quantity = numbers_of(events.column(&format!("properties.{}", self.config.quantity))?);
        for row in 0..events.at.len() {
            let Some(id) = product[row].clone() else { continue };
            let entry = self.products.entry(id).or_default();
            if let Some(counter) = names[row].as_ref().and_then(|n| self.config.events.get(n)) {
                *entry.0.counts.entry(counter.clone()).or_default() += 1;
                if counter == "orders" {
                    entry.0.units += quantity[row].unwrap_or(1.0);
                }
            }
            if let Some(category) = &category[row] {
                *entry.1.entry(category.clone()).or_default() += 1;
            }
            entry.0.revenue += revenue[row].unwrap_or(0.0);
        }
        Ok(())
    }

    /// Each product's tags.
    pub fn finish(self) -> BTreeMap<String, ProductTag> {
        let popularity = self.config.popularity.clone();
        let mut products: Vec<(String, ProductTag)> = self
            .products
            .into_iter()
            .map(|(id, (mut tag, categories))| {
                // Most frequent; ties: the smaller name (max_by_key keeps the last maximum, so reverse).
                tag.category = categories.into_iter().rev().max_by_key(|(_, n)| *n).map(|(c, _)| c);
                (id, tag)
            })
            .collect();
        let score = |t: &ProductTag| t.counts.get(&popularity).copied().unwrap_or(0);
        products.sort_by(|(a, x), (b, y)| score(y).cmp(&score(x)).then_with(|| a.cmp(b)));
        let n = products.len();
        products
            .into_iter()
            .enumerate()
            .map(|(i, (id, mut tag))| {
                tag.rank = i + 1;
                // Products nobody did the ranking event on are "low" whatever their rank.
                tag.popularity = match (i * 10, score(&tag)) {
                    (_, 0) => "low",
                    (r, _) if r < n => "top",
                    (r, _) if r < 3 * n => "high",
                    (r, _) if r < 6 * n => "mid",
                    _ => "low",
                }
                .into();
                (id, tag)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::tags::{EventView, event_table};

    #[test]
    fn products_get_a_category_counts_revenue_and_a_popularity_tier() {
        let props: Vec<Map<String, Value>> = [
            json!({"product_id": "p1", "category": "shoes"}),
            json!({"product_id": "p1", "category": "boots", "revenue": 50.0, "quantity": 2}),
            json!({"product_id": "p1", "category": "shoes", "revenue": 25.0}),
            json!({"product_id": "p2"}),
            json!({"product_id": 7, "category": "hats", "revenue": 5.0}),
            json!({"category": "no product"}),
        ]
        .iter()
        .map(|v| v.as_object().cloned().unwrap())
        .collect();
        let ids: Vec<String> = (0..props.len()).map(|i| format!("m{i}")).collect();
        let names = [
            "Product Viewed",
            "Order Completed",
            "Order Completed",
            "Product Viewed",
            "Order Completed",
            "Product Viewed",
        ];
        let rows: Vec<(u32, EventView<'_>)> = (0..props.len())
            .map(|i| {
                (
                    0,
                    EventView {
                        kind: "track",
                        event: Some(names[i]),
                        at: i as i64,
                        id: &ids[i],
                        properties: &props[i],
                    },
                )
            })
            .collect();
        let config = ProductConfig::default();
        let properties =
            vec![config.product.clone(), config.category.clone(), config.revenue.clone(), config.quantity.clone()];
        let mut tags = ProductTags::new(config);
        tags.observe(0, 1, &event_table(rows, &properties)).unwrap();
        let products = tags.finish();
        assert_eq!(products.len(), 3);
        let p1 = &products["p1"];
        assert_eq!(p1.category.as_deref(), Some("shoes"), "2 shoes against 1 boots");
        assert_eq!(p1.counts, [("orders".to_string(), 2), ("views".to_string(), 1)].into());
        assert_eq!((p1.units, p1.revenue, p1.rank, p1.popularity.as_str()), (3.0, 75.0, 1, "top"));
        let p7 = &products["7"];
        assert_eq!((p7.category.as_deref(), p7.rank, p7.popularity.as_str()), (Some("hats"), 2, "mid"));
        let p2 = &products["p2"];
        assert_eq!((p2.category.as_deref(), p2.rank, p2.popularity.as_str()), (None, 3, "low"), "never ordered");
    }
}
