//! Collect-pipeline throughput against a bare `serde_json` parse of the same bytes, in one run.
//!
//! `cargo bench -p cdp-shared --bench collect`. Target: pipeline ≥ 0.5× the bare parse's bytes/s.
//! Results are recorded in docs/benchmarks.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_main};
use shared::collect::{CollectRequest, Collected, Endpoint, collect};
use shared::ids::Entropy;
use shared::sample::batch_body;
use shared::source::{Sources, new_source};
use shared::time::UtcTime;

fn bench(c: &mut Criterion) {
    let (source, key) = new_source("web", "Web", &mut Entropy::from_seed([1; 32]));
    let mut sources = Sources::default();
    sources.add(source).expect("valid source");
    let body = batch_body(&mut Entropy::from_seed([2; 32]), 500, Some(&key));
    let now = UtcTime::parse("2026-11-28T12:01:00Z").expect("time");
    let ip = "198.51.100.7".parse().ok();

    let mut group = c.benchmark_group("batch_500_events");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("serde_json_value_parse", |b| {
        b.iter(|| black_box(serde_json::from_slice::<serde_json::Value>(black_box(body.as_bytes())).expect("json")))
    });
    group.bench_function("collect_pipeline", |b| {
        b.iter(|| {
            let mut request = CollectRequest::new(Endpoint::Batch, black_box(body.as_bytes()));
            request.client_ip = ip;
            match collect(&request, &sources, now, &mut Entropy::from_seed([3; 32])) {
                Collected::Kept(batch) => black_box(batch.accepted.len()),
                Collected::Rejected(answer) => panic!("rejected: {}", answer.body),
            }
        })
    });
    group.bench_function("collect_pipeline_and_gzip_ndjson", |b| {
        b.iter(|| {
            let request = CollectRequest::new(Endpoint::Batch, black_box(body.as_bytes()));
            match collect(&request, &sources, now, &mut Entropy::from_seed([3; 32])) {
                Collected::Kept(batch) => black_box(batch.accepted_object().map(|(_, bytes)| bytes.len())),
                Collected::Rejected(answer) => panic!("rejected: {}", answer.body),
            }
        })
    });
    group.finish();
}

// The macro generates an undocumented `pub fn benches`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
use group::benches;
criterion_main!(benches);
