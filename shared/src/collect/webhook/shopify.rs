//! Shopify's webhooks (topic in `X-Shopify-Topic`, payloads as the Admin REST API's resources).
//!
//! - `orders/create`, `orders/paid` → `Order Completed`, once per order: its `messageId` is the order's, so the
//!   two topics and every retry of either are one event. An order created unpaid (a `financial_status` other
//!   than paid, authorized or refunded: `pending`, `voided`, `expired`) is `Order Placed` until `orders/paid`
//!   completes it.
//! - `checkouts/create` → `Checkout Started`.
//! - `customers/create`, `customers/update` → identify with email, phone and names.
//!
//! The person: the order's or customer's email and phone, and the Shopify customer id (`shopify_customer_id`).

use serde_json::{Map, Value};

use super::shape::{Person, from_rfc3339, identify, number, put, text, track};

const LIBRARY: &str = "cdp-webhook-shopify";

/// Financial statuses of an order that is paid, or authorized to be captured.
const PAID: [&str; 5] = ["paid", "partially_paid", "authorized", "partially_refunded", "refunded"];

/// The topics with a built-in mapping.
pub const TOPICS: [&str; 5] =
    ["orders/create", "orders/paid", "checkouts/create", "customers/create", "customers/update"];

/// The calls a payload of `topic` becomes; `webhook_id` (`X-Shopify-Webhook-Id`) names a delivery.
pub(super) fn events(topic: Option<&str>, webhook_id: &str, payload: &Value) -> Result<Vec<Value>, String> {
    let topic = topic.ok_or("no X-Shopify-Topic header: Shopify names each webhook's topic")?;
    let id = text(payload.get("id")).ok_or_else(|| format!("the {topic} payload has no `id`"))?;
    match topic {
        "orders/create" | "orders/paid" => {
            // Paid (or authorized, to be captured) is an order; anything else (pending, voided, expired, none)
            // waits for orders/paid.
            let status = payload.get("financial_status").and_then(Value::as_str).unwrap_or_default();
            let pending = topic == "orders/create" && !PAID.contains(&status);
            let (event, message_id) = if pending {
                ("Order Placed", format!("shopify-order-{id}-placed"))
            } else {
                ("Order Completed", format!("shopify-order-{id}"))
            };
            let mut properties = money(payload);
            put(&mut properties, "order_id", Some(id));
            put(&mut properties, "order_number", text(payload.get("name")));
            put(&mut properties, "checkout_id", text(payload.get("checkout_id")));
            put(&mut properties, "financial_status", text(payload.get("financial_status")));
            let shipping: f64 = lines(payload, "shipping_lines").filter_map(|line| number(line.get("price"))).sum();
            if payload.get("shipping_lines").is_some() {
                put(&mut properties, "shipping", Some(shipping));
            }
            let coupon = lines(payload, "discount_codes").find_map(|code| text(code.get("code")));
            put(&mut properties, "coupon", coupon);
            let when = text(payload.get("processed_at")).or_else(|| text(payload.get("created_at")));
            Ok(vec![track(
                event,
                message_id,
                when.and_then(|t| from_rfc3339(&t)),
                properties,
                &person(payload),
                LIBRARY,
            )])
        }
        "checkouts/create" => {
            let token = text(payload.get("token")).unwrap_or(id);
            let mut properties = money(payload);
            put(&mut properties, "checkout_id", Some(token.clone()));
            let when = text(payload.get("created_at")).and_then(|t| from_rfc3339(&t));
            let message_id = format!("shopify-checkout-{token}");
            Ok(vec![track("Checkout Started", message_id, when, properties, &person(payload), LIBRARY)])
        }
        "customers/create" | "customers/update" => {
            let mut traits = Map::new();
            let first = text(payload.get("first_name"));
            let last = text(payload.get("last_name"));
            let name = [first.as_deref(), last.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
            put(&mut traits, "firstName", first);
            put(&mut traits, "lastName", last);
            put(&mut traits, "name", Some(name).filter(|n| !n.is_empty()));
            put(&mut traits, "createdAt", text(payload.get("created_at")).and_then(|t| from_rfc3339(&t)));
            if let Some(address) = payload.get("default_address") {
                put(&mut traits, "city", text(address.get("city")));
                put(&mut traits, "country", text(address.get("country_code")).or_else(|| text(address.get("country"))));
            }
            let consent = payload.pointer("/email_marketing_consent/state").and_then(Value::as_str);
            put(&mut traits, "emailMarketing", consent.map(|state| state == "subscribed"));
            let person = Person {
                email: text(payload.get("email")),
                phone: text(payload.get("phone")),
                external: vec![("shopify_customer_id", id)],
            };
            let when = text(payload.get("updated_at")).and_then(|t| from_rfc3339(&t));
            Ok(vec![identify(format!("shopify-{webhook_id}"), when, traits, &person, LIBRARY)])
        }
        other => Err(format!(
            "Shopify topic `{other}` has no built-in mapping (mapped: {}); unsubscribe it, or send it to a `webhook` source with a mapping",
            TOPICS.join(", ")
        )),
    }
}

/// The totals, currency and line items of an order or a checkout, as the e-commerce spec names them.
fn money(payload: &Value) -> Map<String, Value> {
    let mut properties = Map::new();
    put(&mut properties, "revenue", number(payload.get("subtotal_price")));
    put(&mut properties, "total", number(payload.get("total_price")));
    put(&mut properties, "tax", number(payload.get("total_tax")));
    put(&mut properties, "discount", number(payload.get("total_discounts")));
    put(&mut properties, "currency", text(payload.get("currency")).map(|c| c.to_ascii_uppercase()));
    let products: Vec<Value> = lines(payload, "line_items")
        .map(|item| {
            let mut product = Map::new();
            put(&mut product, "product_id", text(item.get("product_id")));
            put(&mut product, "variant", text(item.get("variant_id")));
            put(&mut product, "sku", text(item.get("sku")));
            put(&mut product, "name", text(item.get("title")));
            put(&mut product, "price", number(item.get("price")));
            put(&mut product, "quantity", item.get("quantity").and_then(Value::as_i64));
            Value::Object(product)
        })
        .collect();
    if !products.is_empty() {
        properties.insert("products".into(), Value::Array(products));
    }
    properties
}

fn lines<'a>(payload: &'a Value, name: &str) -> impl Iterator<Item = &'a Value> {
    payload.get(name).and_then(Value::as_array).into_iter().flatten()
}

/// An order's or checkout's customer: the payload's email and phone (else the customer's), and the customer id.
fn person(payload: &Value) -> Person {
    let customer = payload.get("customer");
    let from_customer = |name: &str| customer.and_then(|c| text(c.get(name)));
    Person {
        email: text(payload.get("email")).or_else(|| from_customer("email")),
        phone: text(payload.get("phone")).or_else(|| from_customer("phone")),
        external: from_customer("id").map(|id| vec![("shopify_customer_id", id)]).unwrap_or_default(),
    }
}
