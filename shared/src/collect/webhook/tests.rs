//! Inbound webhooks on payloads shaped as the senders' documentation shows (`tests/fixtures/webhooks/`).

use serde_json::{Value, json};

use super::verify::sign;
use super::*;
use crate::event::CanonicalEvent;
use crate::source::new_source;

const ORDER: &str = include_str!("../../../../tests/fixtures/webhooks/shopify-orders-create.json");
const CUSTOMER: &str = include_str!("../../../../tests/fixtures/webhooks/shopify-customers-create.json");
const CHECKOUT: &str = include_str!("../../../../tests/fixtures/webhooks/shopify-checkouts-create.json");
const SESSION: &str = include_str!("../../../../tests/fixtures/webhooks/stripe-checkout-session-completed.json");
const INVOICE: &str = include_str!("../../../../tests/fixtures/webhooks/stripe-invoice-paid.json");
const STRIPE_CUSTOMER: &str = include_str!("../../../../tests/fixtures/webhooks/stripe-customer-created.json");
const CANCELLED: &str = include_str!("../../../../tests/fixtures/webhooks/stripe-customer-subscription-deleted.json");
const GENERIC: &str = include_str!("../../../../tests/fixtures/webhooks/standard-webhook.json");
const GENERIC_MAPPING: &str = include_str!("../../../../tests/fixtures/webhooks/standard-webhook-mapping.json");

const SHOPIFY_SECRET: &str = "shpss_2f7c1b0e9a8d4c6b";
const STRIPE_SECRET: &str = "whsec_test_5Wk0aZ4p7Qm2Lx9Rv3Tb";
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn now() -> UtcTime {
    UtcTime::parse("2026-11-28T12:00:10.000Z").unwrap()
}

fn seconds() -> i64 {
    now().unix_millis() / 1000
}

fn setup() -> (Sources, SourceSecrets) {
    let mut sources = Sources::default();
    let mut secrets = SourceSecrets::default();
    for (id, kind, secret) in [
        ("shop", SourceKind::Shopify, SHOPIFY_SECRET),
        ("billing", SourceKind::Stripe, STRIPE_SECRET),
        ("crm", SourceKind::Webhook, STANDARD_SECRET),
    ] {
        let (mut source, _) = new_source(id, id, &mut Entropy::from_seed([id.len() as u8; 32]));
        source.kind = kind;
        if kind == SourceKind::Webhook {
            source.mapping = Some(crate::import::Mapping::parse(GENERIC_MAPPING.as_bytes()).unwrap());
        }
        kind.check_secret(secret).unwrap();
        sources.add(source).unwrap();
        secrets.set(id, secret);
    }
    let (web, _) = new_source("web", "Web", &mut Entropy::from_seed([9; 32]));
    sources.add(web).unwrap();
    (sources, secrets)
}

fn send(source: &str, body: &[u8], headers: &[(&str, String)]) -> Collected {
    let (sources, secrets) = setup();
    let lookup = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let req = WebhookRequest::new(source, body, lookup);
    receive(&req, &sources, &secrets, now(), &mut Entropy::from_seed([3; 32]))
}

fn shopify(topic: &str, body: &str) -> Collected {
    let headers = [
        ("X-Shopify-Topic", topic.to_string()),
        ("X-Shopify-Hmac-Sha256", sign::shopify(SHOPIFY_SECRET, body.as_bytes())),
        ("X-Shopify-Webhook-Id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043".to_string()),
    ];
    send("shop", body.as_bytes(), &headers)
}

fn stripe(body: &str) -> Collected {
    send("billing", body.as_bytes(), &[("Stripe-Signature", sign::stripe(STRIPE_SECRET, body.as_bytes(), seconds()))])
}

fn standard(body: &[u8], id: &str, at: i64) -> Collected {
    let signature = sign::standard(STANDARD_SECRET, id, at, body).unwrap();
    let headers =
        [("webhook-id", id.to_string()), ("webhook-timestamp", at.to_string()), ("webhook-signature", signature)];
    send("crm", body, &headers)
}

fn kept(collected: Collected) -> Batch {
    match collected {
        Collected::Kept(batch) => batch,
        Collected::Rejected(answer) => panic!("rejected: {} {}", answer.status, answer.body),
    }
}

fn one(collected: Collected) -> CanonicalEvent {
    let batch = kept(collected);
    assert!(batch.failed.is_empty(), "{:?}", batch.failed);
    assert_eq!(batch.accepted.len(), 1);
    batch.accepted.into_iter().next().unwrap()
}

fn refused(collected: Collected) -> (u16, String) {
    match collected {
        Collected::Rejected(answer) => (answer.status, answer.body),
        Collected::Kept(batch) => panic!("kept {} events", batch.accepted.len()),
    }
}

fn property(event: &CanonicalEvent, name: &str) -> Value {
    event.properties.as_ref().and_then(|p| p.get(name)).cloned().unwrap_or(Value::Null)
}

fn kinds(event: &CanonicalEvent) -> Vec<(&str, &str)> {
    event.identifiers.iter().map(|i| (i.kind.as_str(), i.value.as_str())).collect()
}

#[test]
fn a_shopify_order_is_one_order_completed_whichever_topic_and_retry_brings_it() {
    let event = one(shopify("orders/create", ORDER));
    assert_eq!(event.event.as_deref(), Some("Order Completed"));
    assert_eq!(event.message_id, "shopify-order-820982911946154508");
    assert_eq!(event.source_id, "shop");
    assert_eq!(event.timestamp, UtcTime::parse("2022-01-01T00:00:00Z").unwrap(), "processed_at in UTC");
    assert_eq!(property(&event, "revenue"), json!(388.0));
    assert_eq!(property(&event, "total"), json!(403.0));
    assert_eq!(property(&event, "discount"), json!(20.0));
    assert_eq!(property(&event, "shipping"), json!(10.0));
    assert_eq!(property(&event, "currency"), "USD");
    assert_eq!(property(&event, "coupon"), "WELCOME10");
    assert_eq!(property(&event, "order_id"), "820982911946154508");
    let products = property(&event, "products");
    assert_eq!(products.as_array().map(Vec::len), Some(2));
    assert_eq!(
        products[0],
        json!({"product_id": "632910392", "variant": "808950810", "sku": "IPOD2008PINK",
                                   "name": "IPod Nano - 8GB", "price": 199.0, "quantity": 1})
    );
    let ids = kinds(&event);
    assert!(ids.contains(&("email", "jon@example.com")), "{ids:?}");
    let keys = crate::identity::IdentityRules::default().keys(&event);
    assert!(keys.iter().any(|k| k == "shopify_customer_id:115310627314723954"), "linked by default: {keys:?}");
    let paid = one(shopify("orders/paid", ORDER));
    assert_eq!((paid.event.as_deref(), paid.message_id.as_str()), (Some("Order Completed"), event.message_id.as_str()));

    for unpaid in ["pending", "voided", "expired"] {
        let unpaid = ORDER.replace(r#""financial_status": "paid""#, &format!(r#""financial_status": "{unpaid}""#));
        let placed = one(shopify("orders/create", &unpaid));
        assert_eq!(placed.event.as_deref(), Some("Order Placed"), "not completed before it is paid");
        assert_ne!(placed.message_id, event.message_id);
    }
}

fn has_external(event: &CanonicalEvent, id: &str) -> bool {
    event.context.get("externalIds").and_then(Value::as_array).is_some_and(|ids| ids.iter().any(|i| i["id"] == id))
}

#[test]
fn shopify_customers_and_checkouts() {
    let who = one(shopify("customers/create", CUSTOMER));
    assert_eq!(who.kind, crate::event::EventType::Identify);
    assert_eq!(who.message_id, "shopify-b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", "the delivery's id");
    let traits = who.traits.clone().unwrap();
    assert_eq!((traits["firstName"].as_str(), traits["lastName"].as_str()), (Some("Bob"), Some("Biller")));
    assert_eq!((traits["name"].as_str(), traits["country"].as_str()), (Some("Bob Biller"), Some("CA")));
    assert_eq!(traits["emailMarketing"], true);
    assert!(has_external(&who, "706405506930370084"));

    let checkout = one(shopify("checkouts/create", CHECKOUT));
    assert_eq!(checkout.event.as_deref(), Some("Checkout Started"));
    assert_eq!(checkout.message_id, "shopify-checkout-123123123");
    assert_eq!(
        (property(&checkout, "revenue"), property(&checkout, "checkout_id")),
        (json!(199.0), json!("123123123"))
    );
    assert!(kinds(&checkout).contains(&("email", "example@email.com")));
}

#[test]
fn a_shopify_topic_without_a_mapping_is_kept_in_failed_with_the_reason() {
    let batch = kept(shopify("products/update", r#"{"id": 632910392, "title": "IPod Nano - 8GB"}"#));
    assert!(batch.accepted.is_empty());
    assert_eq!(batch.failed.len(), 1);
    assert_eq!(batch.failed[0].code, FailureCode::UnmappedPayload);
    assert!(batch.failed[0].reason.contains("`products/update` has no built-in mapping"), "{}", batch.failed[0].reason);
    assert!(batch.failed[0].original.contains("IPod Nano"), "kept whole");
    let answer = batch.answer();
    assert_eq!(answer.status, 200, "a retry cannot mend it");
    assert!(answer.body.contains("unmapped_payload"));
}

#[test]
fn shopify_refuses_a_wrong_or_missing_signature_and_stores_nothing() {
    let forged = [
        ("X-Shopify-Topic", "orders/create".to_string()),
        ("X-Shopify-Hmac-Sha256", sign::shopify("other-secret-0000", ORDER.as_bytes())),
    ];
    let (status, body) = refused(send("shop", ORDER.as_bytes(), &forged));
    assert_eq!(status, 401);
    assert!(body.contains("invalid_signature") && body.contains("does not match"), "{body}");
    let tampered = ORDER.replace("403.00", "4.00");
    let signed_original = [
        ("X-Shopify-Topic", "orders/create".to_string()),
        ("X-Shopify-Hmac-Sha256", sign::shopify(SHOPIFY_SECRET, ORDER.as_bytes())),
    ];
    assert_eq!(refused(send("shop", tampered.as_bytes(), &signed_original)).0, 401, "a changed body");
    let (status, body) = refused(send("shop", ORDER.as_bytes(), &[("X-Shopify-Topic", "orders/create".to_string())]));
    assert_eq!(status, 401);
    assert!(body.contains("no X-Shopify-Hmac-Sha256"), "{body}");
}

#[test]
fn stripe_checkouts_invoices_customers_and_subscriptions() {
    let order = one(stripe(SESSION));
    assert_eq!(order.event.as_deref(), Some("Order Completed"));
    assert_eq!(order.message_id, "stripe-order-cs_test_a1Ye9vVx4U8q6s3TcwsU1DFF3bbqNTbxFMeUoiCjE4Ut0b8oFzGXQcfkqQ");
    assert_eq!((property(&order, "revenue"), property(&order, "total")), (json!(21.98), json!(24.2)));
    assert_eq!((property(&order, "tax"), property(&order, "currency")), (json!(2.22), json!("USD")));
    assert!(kinds(&order).contains(&("email", "jenny.rosen@example.com")), "{:?}", kinds(&order));
    assert!(has_external(&order, "cus_NffrFeUfNV2Hib"));
    assert_eq!(order.timestamp, UtcTime::from_unix_millis(1_686_089_970_000).unwrap());

    let subscription_checkout = SESSION.replace(r#""mode": "payment""#, r#""mode": "subscription""#);
    let who = one(stripe(&subscription_checkout));
    assert_eq!(who.kind, crate::event::EventType::Identify, "its revenue comes with invoice.paid");
    let invoiced = SESSION.replace(r#""invoice": null"#, r#""invoice": "in_1NG8Dw2eZvKYlo2CuXHxQZm4""#);
    assert_eq!(one(stripe(&invoiced)).kind, crate::event::EventType::Identify, "counted by its invoice.paid");

    let invoice = one(stripe(INVOICE));
    assert_eq!(invoice.event.as_deref(), Some("Order Completed"));
    assert_eq!(invoice.message_id, "stripe-evt_1NG8Dx2eZvKYlo2C9xUqlyOm", "Stripe's event id");
    assert_eq!(
        (property(&invoice, "revenue"), property(&invoice, "subscription_id")),
        (json!(15.0), json!("sub_1NG8Dw2eZvKYlo2CJv0h9WpS"))
    );
    assert_eq!(property(&invoice, "products")[0]["product_id"], "prod_NffpXyvS0pW4Mb");

    let customer = one(stripe(STRIPE_CUSTOMER));
    assert_eq!(customer.traits.as_ref().unwrap()["name"], "Jenny Rosen");
    let keys = crate::identity::IdentityRules::default().keys(&customer);
    assert!(keys.iter().any(|k| k == "stripe_customer_id:cus_NffrFeUfNV2Hib"), "linked by default: {keys:?}");

    let cancelled = one(stripe(CANCELLED));
    assert_eq!(cancelled.event.as_deref(), Some("Subscription Cancelled"));
    assert_eq!((property(&cancelled, "amount"), property(&cancelled, "interval")), (json!(15.0), json!("month")));
    let started = one(stripe(&CANCELLED.replace("customer.subscription.deleted", "customer.subscription.created")));
    assert_eq!(started.event.as_deref(), Some("Subscription Started"));

    let yen = SESSION.replace(r#""currency": "usd""#, r#""currency": "jpy""#);
    assert_eq!(property(&one(stripe(&yen)), "revenue"), json!(2198.0), "a zero-decimal currency");

    let unmapped = kept(stripe(&INVOICE.replace(r#""type": "invoice.paid""#, r#""type": "charge.refunded""#)));
    assert_eq!(unmapped.failed[0].code, FailureCode::UnmappedPayload);
    assert!(unmapped.failed[0].reason.contains("`charge.refunded`"));
}

#[test]
fn stripe_signatures_are_checked_with_a_five_minute_tolerance() {
    let at = |seconds: i64| [("Stripe-Signature", sign::stripe(STRIPE_SECRET, SESSION.as_bytes(), seconds))];
    assert!(matches!(send("billing", SESSION.as_bytes(), &at(seconds() - 299)), Collected::Kept(_)));
    let (status, body) = refused(send("billing", SESSION.as_bytes(), &at(seconds() - 301)));
    assert_eq!(status, 401);
    assert!(body.contains("301 s old"), "{body}");
    assert!(refused(send("billing", SESSION.as_bytes(), &at(seconds() + 301))).1.contains("ahead"));
    // During a secret's roll Stripe signs with both: one matching v1 is enough.
    let good = sign::stripe(STRIPE_SECRET, SESSION.as_bytes(), seconds());
    let rolled = good.replacen("v1=", "v1=00ff,v1=", 1);
    assert!(matches!(send("billing", SESSION.as_bytes(), &[("Stripe-Signature", rolled)]), Collected::Kept(_)));
    let other = sign::stripe("whsec_another_secret_000", SESSION.as_bytes(), seconds());
    assert_eq!(refused(send("billing", SESSION.as_bytes(), &[("Stripe-Signature", other)])).0, 401);
    assert_eq!(refused(send("billing", SESSION.as_bytes(), &[])).0, 401);
    assert_eq!(refused(send("billing", SESSION.as_bytes(), &[("Stripe-Signature", "v1=abc".into())])).0, 401);
}

#[test]
fn a_standard_webhook_goes_through_its_mapping() {
    let event = one(standard(GENERIC.as_bytes(), "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", seconds()));
    assert_eq!(event.event.as_deref(), Some("contact.created"));
    assert_eq!(event.message_id, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", "the sender's message id");
    assert_eq!((property(&event, "plan"), property(&event, "score")), (json!("gold"), json!(87)));
    assert!(kinds(&event).contains(&("email", "li.lei@example.com")), "{:?}", kinds(&event));
    assert_eq!(event.context["library"]["name"], "cdp-webhook");
    assert_eq!(event.timestamp, UtcTime::parse("2022-11-03T20:26:10.344Z").unwrap());

    let (status, body) = refused(standard(GENERIC.as_bytes(), "msg_1", seconds() - 600));
    assert_eq!(status, 401);
    assert!(body.contains("600 s old"), "{body}");
    let signature = sign::standard(STANDARD_SECRET, "msg_1", seconds(), GENERIC.as_bytes()).unwrap();
    let replayed_as_other_id = [
        ("webhook-id", "msg_2".to_string()),
        ("webhook-timestamp", seconds().to_string()),
        ("webhook-signature", signature.clone()),
    ];
    assert_eq!(refused(send("crm", GENERIC.as_bytes(), &replayed_as_other_id)).0, 401, "the id is signed");
    let svix =
        [("svix-id", "msg_1".to_string()), ("svix-timestamp", seconds().to_string()), ("svix-signature", signature)];
    assert!(matches!(send("crm", GENERIC.as_bytes(), &svix), Collected::Kept(_)), "Svix's header names");
    let bad = GENERIC.replace(r#""score": "87""#, r#""score": "high""#);
    let batch = kept(standard(bad.as_bytes(), "msg_3", seconds()));
    assert_eq!(batch.failed.len(), 1);
    assert!(batch.failed[0].reason.contains("is not a number"), "{}", batch.failed[0].reason);
}

#[test]
fn a_gzipped_body_is_verified_over_its_decoded_bytes() {
    let gz = crate::storage::gzip(ORDER.as_bytes());
    let headers = [
        ("X-Shopify-Topic", "orders/paid".to_string()),
        ("X-Shopify-Hmac-Sha256", sign::shopify(SHOPIFY_SECRET, ORDER.as_bytes())),
        ("Content-Encoding", "gzip".to_string()),
    ];
    assert_eq!(one(send("shop", &gz, &headers)).event.as_deref(), Some("Order Completed"));
}

#[test]
fn unknown_sources_write_keys_and_missing_secrets() {
    assert_eq!(refused(send("nope", b"{}", &[])).0, 404);
    assert_eq!(refused(send("web", b"{}", &[])).0, 404, "an HTTP source takes no webhooks");
    let (mut sources, _) = setup();
    let req = WebhookRequest::new("shop", ORDER.as_bytes(), |_| None);
    let (status, body) =
        match receive(&req, &sources, &SourceSecrets::default(), now(), &mut Entropy::from_seed([1; 32])) {
            Collected::Rejected(answer) => (answer.status, answer.body),
            Collected::Kept(_) => panic!("kept without a secret"),
        };
    assert_eq!(status, 503, "the sender retries until the secret is set");
    assert!(body.contains("signing_secret_missing"));
    // A webhook source's write key opens no collect endpoint.
    let (mut shop, key) = new_source("shop2", "Shop", &mut Entropy::from_seed([42; 32]));
    shop.kind = SourceKind::Shopify;
    sources.add(shop).unwrap();
    assert!(sources.authenticate(&key).is_none());
}

#[test]
fn sources_check_kinds_mappings_and_secrets() {
    let (mut source, _) = new_source("crm2", "CRM", &mut Entropy::from_seed([7; 32]));
    source.kind = SourceKind::Webhook;
    let mut sources = Sources::default();
    assert!(sources.add(source.clone()).unwrap_err().to_string().contains("needs a mapping"));
    let mut mapping = crate::import::Mapping::parse(GENERIC_MAPPING.as_bytes()).unwrap();
    mapping.properties.insert("plan".into(), serde_json::from_value(json!({"column": "plan"})).unwrap());
    source.mapping = Some(mapping);
    assert!(sources.add(source.clone()).unwrap_err().to_string().contains("JSON pointer"));
    source.kind = SourceKind::Shopify;
    assert!(sources.add(source).unwrap_err().to_string().contains("only a source of kind `webhook`"));

    assert!(SourceKind::Stripe.check_secret("shpss_0123456789abcdef").unwrap_err().0.contains("whsec_"));
    assert!(SourceKind::Webhook.check_secret("whsec_notbase64!!!!!!!!").is_err());
    assert!(SourceKind::Shopify.check_secret("short").is_err());
    assert!(SourceKind::Http.check_secret("0123456789abcdef0123").is_err());
    let json = String::from_utf8(setup().0.to_json()).unwrap();
    assert!(!json.contains(SHOPIFY_SECRET) && json.contains(r#""kind": "shopify""#), "secrets live apart");
}
