//! The senders' signature schemes, each as its sender documents it. Every comparison is constant-time.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::Invalid;
use crate::time::UtcTime;

/// How far a signed timestamp may be from our clock (Stripe's and Standard Webhooks' default), in seconds.
pub const TOLERANCE_SECONDS: i64 = 300;

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Shopify: `X-Shopify-Hmac-Sha256` is the base64 HMAC-SHA256 of the raw body under the app's secret.
pub fn shopify(secret: &str, body: &[u8], header: Option<&str>) -> Result<(), Invalid> {
    let given = header.ok_or("no X-Shopify-Hmac-Sha256 header")?;
    let given = base64::engine::general_purpose::STANDARD
        .decode(given.trim())
        .map_err(|_| Invalid::from("X-Shopify-Hmac-Sha256 is not base64"))?;
    if same(&given, &mac(secret.as_bytes(), &[body])) {
        Ok(())
    } else {
        Err("X-Shopify-Hmac-Sha256 does not match the body signed with the source's secret".into())
    }
}

/// Stripe: `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=…]`, each `v1` the HMAC-SHA256 of `<t>.<body>`
/// under the endpoint's secret (the whole `whsec_…` text); `t` within [`TOLERANCE_SECONDS`] of `now`.
pub fn stripe(secret: &str, body: &[u8], header: Option<&str>, now: UtcTime) -> Result<(), Invalid> {
    let header = header.ok_or("no Stripe-Signature header")?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.trim()),
            Some(("v1", signature)) => signatures.push(signature.trim().to_ascii_lowercase()),
            _ => {}
        }
    }
    let t = timestamp.ok_or("Stripe-Signature has no timestamp (`t=`)")?;
    let seconds: i64 = t.parse().map_err(|_| Invalid(format!("Stripe-Signature's timestamp {t:?} is not a number")))?;
    if signatures.is_empty() {
        return Err("Stripe-Signature has no `v1` signature".into());
    }
    let expected = crate::ids::hex(&mac(secret.as_bytes(), &[t.as_bytes(), b".", body]));
    if !signatures.iter().any(|given| same(given.as_bytes(), expected.as_bytes())) {
        return Err("no `v1` signature in Stripe-Signature matches the body signed with the source's secret".into());
    }
    fresh(seconds, now, "Stripe-Signature")
}

/// Standard Webhooks (<https://www.standardwebhooks.com>): `webhook-signature` holds space-separated
/// `v1,<base64>` entries, each the HMAC-SHA256 of `<webhook-id>.<webhook-timestamp>.<body>` under the key that
/// follows `whsec_` (base64); the timestamp within [`TOLERANCE_SECONDS`] of `now`. Svix's `svix-*` names are
/// the same headers.
pub fn standard(
    secret: &str,
    body: &[u8],
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    now: UtcTime,
) -> Result<(), Invalid> {
    let id = id.ok_or("no webhook-id header")?;
    let t = timestamp.ok_or("no webhook-timestamp header")?.trim();
    let signature = signature.ok_or("no webhook-signature header")?;
    let seconds: i64 = t.parse().map_err(|_| Invalid(format!("webhook-timestamp {t:?} is not a number")))?;
    let key = secret
        .trim()
        .strip_prefix("whsec_")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .ok_or("the source's secret is not `whsec_` and base64")?;
    let expected = mac(&key, &[id.as_bytes(), b".", t.as_bytes(), b".", body]);
    let matches = signature.split_whitespace().filter_map(|entry| entry.strip_prefix("v1,")).any(|given| {
        base64::engine::general_purpose::STANDARD.decode(given).is_ok_and(|given| same(&given, &expected))
    });
    if !matches {
        return Err("no `v1` signature in webhook-signature matches the message signed with the source's secret".into());
    }
    fresh(seconds, now, "webhook-timestamp")
}

fn fresh(seconds: i64, now: UtcTime, what: &str) -> Result<(), Invalid> {
    let off = now.unix_millis().div_euclid(1000) - seconds;
    if off.abs() > TOLERANCE_SECONDS {
        let when = if off > 0 { "old" } else { "ahead of our clock" };
        return Err(Invalid(format!(
            "the {what} timestamp is {} s {when}; at most {TOLERANCE_SECONDS} s are allowed (a replay, or a clock off)",
            off.abs()
        )));
    }
    Ok(())
}

/// Signatures as the senders make them, for tests and `cdp`'s examples.
pub mod sign {
    use super::*;

    /// Shopify's `X-Shopify-Hmac-Sha256` value.
    pub fn shopify(secret: &str, body: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(mac(secret.as_bytes(), &[body]))
    }

    /// Stripe's `Stripe-Signature` value at `seconds`.
    pub fn stripe(secret: &str, body: &[u8], seconds: i64) -> String {
        let t = seconds.to_string();
        format!("t={t},v1={}", crate::ids::hex(&mac(secret.as_bytes(), &[t.as_bytes(), b".", body])))
    }

    /// Standard Webhooks' `webhook-signature` value for message `id` at `seconds` (`None`: the secret is not
    /// `whsec_` and base64).
    pub fn standard(secret: &str, id: &str, seconds: i64, body: &[u8]) -> Option<String> {
        let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_")?).ok()?;
        let t = seconds.to_string();
        let signature = mac(&key, &[id.as_bytes(), b".", t.as_bytes(), b".", body]);
        Some(format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(signature)))
    }
}
