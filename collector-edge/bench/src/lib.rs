//! The collector worker's CPU-bound work for one request, compiled to wasm with the worker's release profile so
//! that `scripts/bench/worker_cpu.sh` can time it in V8 (the engine Workers run): write-key authentication,
//! validation, normalization and enrichment ([`shared::collect::collect`]), the gzip NDJSON objects for accepted
//! and failed events, and the SigV4 presigning of their two `PUT`s, exactly as `collector-edge` does them.
//! I/O (reading the body, the `fetch` to S3) is not CPU time and is left out.

use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use shared::collect::{CollectRequest, Collected, Endpoint, collect};
use shared::event::Geo;
use shared::ids::Entropy;
use shared::source::{Sources, new_source};
use shared::time::UtcTime;
use wasm_bindgen::prelude::*;

/// A source, a sample batch of about the requested size, and a bucket to sign for.
#[wasm_bindgen]
pub struct Bench {
    sources: Sources,
    body: Vec<u8>,
    events: usize,
    bucket: Bucket,
    credentials: Credentials,
}

#[wasm_bindgen]
impl Bench {
    /// A batch of realistic shop events (`shared::sample`) of at most `bytes` bytes.
    #[wasm_bindgen(constructor)]
    pub fn new(bytes: usize) -> Result<Bench, JsError> {
        let (source, key) = new_source("bench", "Bench", &mut Entropy::from_seed([3; 32]));
        let mut sources = Sources::default();
        sources.add(source).map_err(|e| JsError::new(&e.to_string()))?;
        let batch = |events| shared::sample::batch_body(&mut Entropy::from_seed([4; 32]), events, Some(&key));
        let mut events = 1;
        while batch(events + 1).len() <= bytes {
            events += 1;
        }
        let endpoint = "https://s3.eu-central-1.amazonaws.com".parse().map_err(|_| JsError::new("endpoint"))?;
        let bucket = Bucket::new(endpoint, UrlStyle::VirtualHost, "cdp-bench", "eu-central-1")
            .map_err(|e| JsError::new(&e.to_string()))?;
        let credentials = Credentials::new("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        Ok(Bench { sources, body: batch(events).into_bytes(), events, bucket, credentials })
    }

    /// The request body (to time a bare `JSON.parse` of the same bytes beside the pipeline).
    pub fn body(&self) -> Vec<u8> {
        self.body.clone()
    }

    /// Events in the batch.
    pub fn events(&self) -> usize {
        self.events
    }

    /// Only the collect pipeline (no encoding, no signing), to see where the time goes.
    pub fn collect_only(&self, now_ms: f64) -> Result<usize, JsError> {
        Ok(self.batch(now_ms)?.accepted.len())
    }

    /// One request's CPU work; returns the bytes that would be stored, so the work cannot be skipped.
    pub fn run(&self, now_ms: f64) -> Result<usize, JsError> {
        let batch = self.batch(now_ms)?;
        let mut stored = 0;
        for (key, bytes) in [batch.accepted_object(), batch.failed_object()].into_iter().flatten() {
            let mut action = self.bucket.put_object(Some(&self.credentials), &key);
            action.headers_mut().insert("if-none-match", "*");
            let at = jiff::Timestamp::from_millisecond(batch.received_at.unix_millis())
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            stored += bytes.len() + action.sign_with_time(Duration::from_secs(60), &at).as_str().len();
        }
        Ok(stored)
    }
}

impl Bench {
    fn batch(&self, now_ms: f64) -> Result<shared::collect::Batch, JsError> {
        let now = UtcTime::from_unix_millis(now_ms as i64).ok_or_else(|| JsError::new("clock"))?;
        let mut request = CollectRequest::new(Endpoint::Batch, &self.body);
        request.client_ip = "198.51.100.7".parse().ok();
        request.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)");
        request.geo = Some(Geo {
            country: Some("DE".into()),
            region: Some("Berlin".into()),
            city: Some("Berlin".into()),
            postal_code: Some("10115".into()),
            continent: Some("EU".into()),
            latitude: Some("52.52000".into()),
            longitude: Some("13.40500".into()),
            timezone: Some("Europe/Berlin".into()),
            ..Geo::default()
        });
        let batch = match collect(&request, &self.sources, now, &mut Entropy::from_seed([5; 32])) {
            Collected::Kept(batch) if batch.failed.is_empty() => batch,
            Collected::Kept(batch) => return Err(JsError::new(&format!("{} events failed", batch.failed.len()))),
            Collected::Rejected(answer) => return Err(JsError::new(&answer.body)),
        };
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benchmarked_batch_is_full_size_and_every_event_is_kept() {
        let Ok(bench) = Bench::new(512_000) else { panic!("the benchmark sets up") };
        assert!(bench.body().len() <= 512_000 && bench.body().len() > 500_000, "{} bytes", bench.body().len());
        let now = 1_795_867_260_500.0;
        let Ok(kept) = bench.collect_only(now) else { panic!("every sample event is accepted") };
        assert_eq!(kept, bench.events());
        let Ok(stored) = bench.run(now) else { panic!("the request path runs") };
        assert!(stored > 50_000, "gzip NDJSON and two signed URLs, got {stored} bytes");
    }
}
