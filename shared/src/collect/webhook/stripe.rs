//! Stripe's webhooks (an Event object: `id`, `type`, `created`, `data.object`).
//!
//! - `checkout.session.completed` in `payment` mode and paid, or `checkout.session.async_payment_succeeded` →
//!   `Order Completed`, once per session; in `subscription` or `setup` mode, or with an invoice → identify (the
//!   revenue arrives with `invoice.paid`, so it is not counted twice).
//! - `invoice.paid` → `Order Completed` (one per invoice, its lines as products).
//! - `customer.created`, `customer.updated` → identify with email, name and phone.
//! - `customer.subscription.created` → `Subscription Started`, `.deleted` → `Subscription Cancelled`, `.updated`
//!   → `Subscription Updated`, `.paused`/`.resumed` → `Subscription Paused`/`Resumed`, `.trial_will_end` →
//!   `Trial Ending`.
//!
//! Amounts are in the currency's smallest unit: divided by 100, except zero-decimal currencies (JPY, KRW, …)
//! and three-decimal ones (KWD, …). The person: the email, name and phone the object holds, and the Stripe
//! customer id (`stripe_customer_id`). The event's `id` is the `messageId` (Stripe's retries deduplicate).

use serde_json::{Map, Value};

use super::shape::{Person, from_unix, identify, number, put, text, track};

const LIBRARY: &str = "cdp-webhook-stripe";

/// The event types with a built-in mapping.
pub const TYPES: [&str; 11] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "invoice.paid",
    "customer.created",
    "customer.updated",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.trial_will_end",
];

const ZERO_DECIMAL: [&str; 16] =
    ["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"];
const THREE_DECIMAL: [&str; 5] = ["bhd", "jod", "kwd", "omr", "tnd"];

/// The calls an Event becomes.
pub(super) fn events(payload: &Value) -> Result<Vec<Value>, String> {
    let event_id = text(payload.get("id")).ok_or("the Stripe event has no `id`")?;
    let kind = payload.get("type").and_then(Value::as_str).ok_or("the Stripe event has no `type`")?;
    let object =
        payload.pointer("/data/object").filter(|o| o.is_object()).ok_or("the Stripe event has no `data.object`")?;
    let when = from_unix(payload.get("created"));
    let currency = text(object.get("currency")).map(|c| c.to_ascii_lowercase());
    let of = |name: &str| amount(object.get(name), currency.as_deref());
    let upper = currency.as_ref().map(|c| c.to_ascii_uppercase());
    match kind {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            let session = text(object.get("id")).ok_or("the checkout session has no `id`")?;
            let details = object.get("customer_details");
            let person = Person {
                email: details.and_then(|d| text(d.get("email"))).or_else(|| text(object.get("customer_email"))),
                phone: details.and_then(|d| text(d.get("phone"))),
                external: customer(object),
            };
            let mode = object.get("mode").and_then(Value::as_str).unwrap_or("payment");
            let paid =
                matches!(object.get("payment_status").and_then(Value::as_str), Some("paid" | "no_payment_required"));
            // A session with an invoice (subscriptions; payments with invoice creation) is counted by its
            // invoice.paid, an unpaid one by async_payment_succeeded: here, the person only.
            let invoiced = object.get("invoice").is_some_and(|invoice| !invoice.is_null());
            if mode != "payment" || invoiced || (kind == "checkout.session.completed" && !paid) {
                let mut traits = Map::new();
                put(&mut traits, "name", details.and_then(|d| text(d.get("name"))));
                return Ok(vec![identify(format!("stripe-{event_id}"), when, traits, &person, LIBRARY)]);
            }
            let mut properties = Map::new();
            put(&mut properties, "order_id", Some(session.clone()));
            put(&mut properties, "revenue", of("amount_subtotal"));
            put(&mut properties, "total", of("amount_total"));
            let totals = |name: &str| amount_at(object, &format!("/total_details/{name}"), currency.as_deref());
            put(&mut properties, "tax", totals("amount_tax"));
            put(&mut properties, "discount", totals("amount_discount"));
            put(&mut properties, "shipping", totals("amount_shipping"));
            put(&mut properties, "currency", upper);
            put(&mut properties, "payment_status", text(object.get("payment_status")));
            let products = line_items(object.pointer("/line_items/data"), currency.as_deref());
            if !products.is_empty() {
                properties.insert("products".into(), Value::Array(products));
            }
            Ok(vec![track("Order Completed", format!("stripe-order-{session}"), when, properties, &person, LIBRARY)])
        }
        "invoice.paid" => {
            let invoice = text(object.get("id")).ok_or("the invoice has no `id`")?;
            let person = Person {
                email: text(object.get("customer_email")),
                phone: text(object.get("customer_phone")),
                external: customer(object),
            };
            let mut properties = Map::new();
            put(&mut properties, "order_id", Some(invoice));
            let revenue = of("total_excluding_tax").or_else(|| of("subtotal"));
            put(&mut properties, "revenue", revenue);
            put(&mut properties, "total", of("amount_paid"));
            put(&mut properties, "tax", of("tax"));
            put(&mut properties, "currency", upper);
            put(&mut properties, "subscription_id", text(object.get("subscription")));
            put(&mut properties, "billing_reason", text(object.get("billing_reason")));
            let products = line_items(object.pointer("/lines/data"), currency.as_deref());
            if !products.is_empty() {
                properties.insert("products".into(), Value::Array(products));
            }
            Ok(vec![track("Order Completed", format!("stripe-{event_id}"), when, properties, &person, LIBRARY)])
        }
        "customer.created" | "customer.updated" => {
            let id = text(object.get("id")).ok_or("the customer has no `id`")?;
            let person = Person {
                email: text(object.get("email")),
                phone: text(object.get("phone")),
                external: vec![("stripe_customer_id", id)],
            };
            let mut traits = Map::new();
            put(&mut traits, "name", text(object.get("name")));
            put(&mut traits, "createdAt", from_unix(object.get("created")));
            if let Some(address) = object.get("address") {
                put(&mut traits, "city", text(address.get("city")));
                put(&mut traits, "country", text(address.get("country")));
            }
            Ok(vec![identify(format!("stripe-{event_id}"), when, traits, &person, LIBRARY)])
        }
        subscription if subscription.starts_with("customer.subscription.") => {
            let event = match &subscription["customer.subscription.".len()..] {
                "created" => "Subscription Started",
                "deleted" => "Subscription Cancelled",
                "updated" => "Subscription Updated",
                "paused" => "Subscription Paused",
                "resumed" => "Subscription Resumed",
                "trial_will_end" => "Trial Ending",
                _ => return Err(unmapped(kind)),
            };
            let person = Person { external: customer(object), ..Person::default() };
            let item = object.pointer("/items/data/0");
            let price = item.and_then(|i| i.get("price"));
            let quantity = item.and_then(|i| i.get("quantity")).and_then(Value::as_i64).unwrap_or(1);
            let price_currency = price.and_then(|p| text(p.get("currency"))).or(currency.clone());
            let unit = price.and_then(|p| amount(p.get("unit_amount"), price_currency.as_deref()));
            let mut properties = Map::new();
            put(&mut properties, "subscription_id", text(object.get("id")));
            put(&mut properties, "status", text(object.get("status")));
            put(&mut properties, "plan_id", price.and_then(|p| text(p.get("id"))));
            put(&mut properties, "product_id", price.and_then(|p| text(p.get("product"))));
            put(
                &mut properties,
                "interval",
                price.and_then(|p| p.pointer("/recurring/interval")).and_then(|i| text(Some(i))),
            );
            put(&mut properties, "quantity", Some(quantity));
            put(&mut properties, "amount", unit.map(|u| u * quantity as f64));
            put(&mut properties, "currency", price_currency.map(|c| c.to_ascii_uppercase()));
            put(&mut properties, "cancel_at_period_end", object.get("cancel_at_period_end").and_then(Value::as_bool));
            Ok(vec![track(event, format!("stripe-{event_id}"), when, properties, &person, LIBRARY)])
        }
        other => Err(unmapped(other)),
    }
}

fn unmapped(kind: &str) -> String {
    format!(
        "Stripe event type `{kind}` has no built-in mapping (mapped: {}); leave it out of the endpoint's events, or send it to a `webhook` source with a mapping",
        TYPES.join(", ")
    )
}

/// The object's customer (`cus_…`), as an id or an expanded object.
fn customer(object: &Value) -> Vec<(&'static str, String)> {
    let id = match object.get("customer") {
        Some(Value::Object(expanded)) => text(expanded.get("id")),
        other => text(other),
    };
    id.map(|id| vec![("stripe_customer_id", id)]).unwrap_or_default()
}

/// An amount in the currency's smallest unit, in the currency's units.
fn amount(value: Option<&Value>, currency: Option<&str>) -> Option<f64> {
    let minor = number(value)?;
    let divisor = match currency {
        Some(c) if ZERO_DECIMAL.contains(&c) => 1.0,
        Some(c) if THREE_DECIMAL.contains(&c) => 1000.0,
        _ => 100.0,
    };
    Some(minor / divisor)
}

fn amount_at(object: &Value, pointer: &str, currency: Option<&str>) -> Option<f64> {
    amount(object.pointer(pointer), currency)
}

/// Invoice lines or checkout line items as products.
fn line_items(items: Option<&Value>, currency: Option<&str>) -> Vec<Value> {
    let Some(items) = items.and_then(Value::as_array) else { return Vec::new() };
    items
        .iter()
        .map(|item| {
            let price = item.get("price");
            let quantity = item.get("quantity").and_then(Value::as_i64).unwrap_or(1).max(1);
            let total = amount(item.get("amount").or_else(|| item.get("amount_total")), currency);
            let mut product = Map::new();
            put(&mut product, "product_id", price.and_then(|p| text(p.get("product"))));
            put(&mut product, "sku", price.and_then(|p| text(p.get("id"))));
            put(&mut product, "name", text(item.get("description")));
            put(&mut product, "price", total.map(|t| t / quantity as f64));
            put(&mut product, "quantity", Some(quantity));
            Value::Object(product)
        })
        .collect()
}
