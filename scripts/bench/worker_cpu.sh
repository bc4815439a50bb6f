#!/usr/bin/env bash
# Worker CPU per 500 KB batch: builds the worker's request path (collector-edge/bench) for wasm32 with the
# worker's release profile, binds it for Node with the wasm-bindgen CLI the test command installs, and times it
# in V8 beside a bare JSON.parse of the same body. Arguments pass through: [bytes] [rounds] [iterations].
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
cargo build --release --target wasm32-unknown-unknown -p cdp-edge-bench
OUT="$ROOT/target/edge-bench"
wasm-bindgen --target nodejs --out-dir "$OUT" target/wasm32-unknown-unknown/release/cdp_edge_bench.wasm
node scripts/bench/worker_cpu.mjs "$OUT/cdp_edge_bench.js" "$@"
