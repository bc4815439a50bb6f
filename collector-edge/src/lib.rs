//! The collector as a Cloudflare Worker: a thin shell around `shared`'s collect pipeline.
//!
//! It routes with the core's router, hands the request's bytes and the headers that matter to
//! [`shared::collect::collect`], writes the accepted and failed events to S3 (SigV4-presigned `PUT`s over
//! `fetch`, so the same objects trigger the Lambda functions in AWS), and answers only after both writes are
//! durable: 503 otherwise, never 200 for data it did not keep.
//!
//! Configuration (`wrangler.toml` vars, secrets set with `wrangler secret put`):
//! - `S3_ENDPOINT` (default `https://s3.<region>.amazonaws.com`), `S3_REGION`, `S3_BUCKET`,
//!   `S3_URL_STYLE` (`path` or `virtual`; default `virtual` on AWS, `path` with a custom endpoint);
//! - secrets `S3_ACCESS_KEY_ID`, `S3_SECRET_ACCESS_KEY`;
//! - `CONFIG_TTL_SECONDS` (default 30): how long `config/sources.json` is cached per isolate.

mod s3;
mod sources;

use shared::collect::{Answer, CollectRequest, Endpoint, Route, preflight, route};
use shared::event::Geo;
use shared::ids::Entropy;
use shared::time::UtcTime;
use worker::{Context, Env, Headers, Request, Response, event};

use crate::s3::S3;

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let method = req.method().to_string();
    let path = req.path();
    let origin = header(&req, "origin");
    let answer = match route(&method, &path) {
        Route::Health => Answer::health(),
        Route::Library => shared::snippet::library(header(&req, "if-none-match").as_deref()),
        Route::NotFound => Answer::not_found(),
        Route::MethodNotAllowed => Answer::method_not_allowed(),
        Route::Preflight => match S3::from_env(&env) {
            Ok(s3) => match sources::get(&s3, &env).await {
                Ok(sources) => preflight(origin.as_deref(), &sources),
                Err(_) => Answer::config_unavailable(),
            },
            Err(error) => misconfigured(&error),
        },
        Route::Collect(endpoint) => {
            let body = req.bytes().await.unwrap_or_default();
            match S3::from_env(&env) {
                Ok(s3) => collect(&s3, &env, &req, endpoint, &body, origin.as_deref(), false).await,
                Err(error) => misconfigured(&error),
            }
        }
        Route::Webhook(source_id) => {
            let body = req.bytes().await.unwrap_or_default();
            match S3::from_env(&env) {
                Ok(s3) => webhook(&s3, &env, &req, source_id, &body).await,
                Err(error) => misconfigured(&error),
            }
        }
        Route::Pixel(kind) => {
            let query = req.url().ok().and_then(|url| url.query().map(str::to_string));
            let answer = match shared::collect::pixel::body_of(query.as_deref()) {
                Ok(body) => match S3::from_env(&env) {
                    // The write key is inside the event; the request has no body to decode.
                    Ok(s3) => collect(&s3, &env, &req, Endpoint::Single(kind), &body, None, true).await,
                    Err(error) => misconfigured(&error),
                },
                Err(problem) => Answer::error(400, "invalid_pixel", &problem),
            };
            answer.pixel()
        }
    };
    respond(answer)
}

async fn collect(
    s3: &S3,
    env: &Env,
    req: &Request,
    endpoint: shared::collect::Endpoint,
    body: &[u8],
    origin: Option<&str>,
    pixel: bool,
) -> Answer {
    let sources = match sources::get(s3, env).await {
        Ok(sources) => sources,
        Err(error) => {
            worker::console_error!("sources unavailable: {error}");
            return Answer::config_unavailable();
        }
    };
    // A pixel's event is in its query, its write key inside the event: no header of the request applies.
    let authorization = header(req, "authorization").filter(|_| !pixel);
    let user_agent = header(req, "user-agent");
    let content_encoding = header(req, "content-encoding").filter(|_| !pixel);
    let request = CollectRequest {
        endpoint,
        body,
        authorization: authorization.as_deref(),
        origin,
        user_agent: user_agent.as_deref(),
        // Cloudflare sets this header itself; clients cannot forge it through the edge.
        client_ip: header(req, "cf-connecting-ip").and_then(|ip| ip.parse().ok()),
        geo: geo(req),
        content_encoding: content_encoding.as_deref(),
    };
    let now = now();
    let mut seed = [0u8; 32];
    if getrandom::fill(&mut seed).is_err() {
        return Answer::error(500, "internal", "no randomness available");
    }
    let mut entropy = Entropy::from_seed(seed);
    match shared::collect::collect(&request, &sources, now, &mut entropy) {
        shared::collect::Collected::Rejected(answer) => answer,
        shared::collect::Collected::Kept(batch) => store(s3, env, batch, now, &mut entropy).await,
    }
}

/// `POST /v1/webhooks/<source id>`: the sender's signature checked with the source's secret, the payload
/// through its mapping, what is kept stored as a request's events are.
async fn webhook(s3: &S3, env: &Env, req: &Request, source_id: &str, body: &[u8]) -> Answer {
    let config = futures_join(sources::get(s3, env), sources::secrets(s3, env)).await;
    let (sources, secrets) = match config {
        (Ok(sources), Ok(secrets)) => (sources, secrets),
        (Err(error), _) | (_, Err(error)) => {
            worker::console_error!("sources or their secrets unavailable: {error}");
            return Answer::config_unavailable();
        }
    };
    let request = shared::collect::webhook::WebhookRequest::new(source_id, body, |name| header(req, name));
    let now = now();
    let mut seed = [0u8; 32];
    if getrandom::fill(&mut seed).is_err() {
        return Answer::error(500, "internal", "no randomness available");
    }
    let mut entropy = Entropy::from_seed(seed);
    match shared::collect::webhook::receive(&request, &sources, &secrets, now, &mut entropy) {
        shared::collect::Collected::Rejected(answer) => answer,
        shared::collect::Collected::Kept(batch) => store(s3, env, batch, now, &mut entropy).await,
    }
}

/// Stores a kept batch, then answers: suppressed people's events dropped and counted, the accepted and failed
/// objects written concurrently; 503 unless all of it is durable.
async fn store(s3: &S3, env: &Env, mut batch: shared::collect::Batch, now: UtcTime, entropy: &mut Entropy) -> Answer {
    // Suppressed people's events are never stored, only counted. A list that cannot be read keeps nothing.
    let suppression = match sources::suppression(s3, env).await {
        Ok(list) => list,
        Err(error) => {
            worker::console_error!("suppression list unavailable: {error}");
            return Answer::config_unavailable();
        }
    };
    let dropped = suppression.as_ref().map_or(0, |list| batch.drop_suppressed(list));
    if dropped > 0 {
        let (key, body) = shared::access::dropped_record(dropped, now, entropy.ulid(now));
        if let Err(error) = s3.put_new(&key, body, now).await {
            worker::console_error!("could not count suppressed events: {error}");
            return batch.storage_failed();
        }
    }
    let accepted = batch.accepted_object();
    let failed = batch.failed_object();
    let put = |object: Option<(String, Vec<u8>)>| async move {
        match object {
            Some((key, bytes)) => s3.put_new(&key, bytes, now).await,
            None => Ok(()),
        }
    };
    let (a, f) = futures_join(put(accepted), put(failed)).await;
    match a.and(f) {
        Ok(()) => batch.answer(),
        Err(error) => {
            // The error names the key and status, never credentials.
            worker::console_error!("could not store batch {}: {error}", batch.request_id);
            batch.storage_failed()
        }
    }
}

/// Both futures to completion, concurrently (the Worker's event loop interleaves the two fetches).
async fn futures_join<A: std::future::Future, B: std::future::Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let mut out_a = None;
    let mut out_b = None;
    std::future::poll_fn(|cx| {
        if out_a.is_none()
            && let std::task::Poll::Ready(v) = a.as_mut().poll(cx)
        {
            out_a = Some(v);
        }
        if out_b.is_none()
            && let std::task::Poll::Ready(v) = b.as_mut().poll(cx)
        {
            out_b = Some(v);
        }
        if out_a.is_some() && out_b.is_some() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    match (out_a, out_b) {
        (Some(a), Some(b)) => (a, b),
        _ => unreachable!("poll_fn returned Ready only with both outputs"),
    }
}

fn misconfigured(error: &str) -> Answer {
    worker::console_error!("collector misconfigured: {error}");
    Answer::error(500, "misconfigured", "the collector is not configured; see the operator's logs")
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

fn now() -> UtcTime {
    let ms = worker::Date::now().as_millis() as i64;
    UtcTime::from_unix_millis(ms).unwrap_or_else(|| unreachable!("the clock is within years 1970..9999"))
}

fn geo(req: &Request) -> Option<Geo> {
    let cf = req.cf()?;
    let (latitude, longitude) = match cf.coordinates() {
        Some((lat, lon)) => (Some(lat.to_string()), Some(lon.to_string())),
        None => (None, None),
    };
    let timezone = Some(cf.timezone_name()).filter(|t| !t.is_empty());
    Some(Geo {
        country: cf.country(),
        region: cf.region(),
        region_code: cf.region_code(),
        city: cf.city(),
        postal_code: cf.postal_code(),
        continent: cf.continent(),
        latitude,
        longitude,
        timezone,
    })
}

fn respond(answer: Answer) -> worker::Result<Response> {
    let headers = Headers::new();
    if answer.is_json() {
        headers.set("content-type", "application/json")?;
    }
    for (name, value) in &answer.headers {
        headers.append(name, value)?;
    }
    let status = answer.status;
    let response = if answer.is_empty() { Response::empty()? } else { Response::from_bytes(answer.into_bytes())? };
    Ok(response.with_status(status).with_headers(headers))
}
