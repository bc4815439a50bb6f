// Times the worker's CPU-bound request path (collector-edge/bench, built for wasm32 with the worker's release
// profile) in V8, the engine Cloudflare Workers run, beside a bare JSON.parse of the same bytes in the same
// process. Usage: node worker_cpu.mjs <module.js> [bytes] [rounds] [iterations]
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";

const [modulePath, bytesArg = "512000", roundsArg = "30", iterationsArg = "10"] = process.argv.slice(2);
const { Bench } = createRequire(import.meta.url)(modulePath);
const bytes = Number(bytesArg);
const rounds = Number(roundsArg);
const iterations = Number(iterationsArg);
const bench = new Bench(bytes);
const body = new TextDecoder().decode(bench.body());
const now = Date.parse("2026-11-28T12:01:00.500Z");

// The first request an isolate serves: compilation tiers up as it runs.
let start = performance.now();
const stored = bench.run(now);
const first = performance.now() - start;

// Then warm, as an isolate is after its first requests.
for (let i = 0; i < 30; i++) bench.run(now);

const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const parse = [];
const pipeline = [];
const collectOnly = [];
for (let r = 0; r < rounds; r++) {
  start = performance.now();
  for (let i = 0; i < iterations; i++) JSON.parse(body);
  parse.push((performance.now() - start) / iterations);
  start = performance.now();
  for (let i = 0; i < iterations; i++) bench.run(now);
  pipeline.push((performance.now() - start) / iterations);
  start = performance.now();
  for (let i = 0; i < iterations; i++) bench.collect_only(now);
  collectOnly.push((performance.now() - start) / iterations);
}
const p = median(pipeline);
const j = median(parse);
const p90 = pipeline.slice().sort((a, b) => a - b)[Math.floor(pipeline.length * 0.9)];
console.log(
  `worker CPU (V8 ${process.versions.v8}, wasm): one ${bench.events()}-event batch of ${body.length} bytes, ` +
    `${stored} bytes stored, ${rounds} rounds × ${iterations} iterations, medians`,
);
console.log("| step | ms per batch |");
console.log("|---|---:|");
console.log(`| bare \`JSON.parse\` of the body (V8, native) | ${j.toFixed(3)} |`);
console.log(`| of which the collect pipeline alone (auth, validate, normalize, enrich) | ${median(collectOnly).toFixed(3)} |`);
console.log(`| worker path in wasm: collect + gzip NDJSON + SigV4 (median) | ${p.toFixed(3)} |`);
console.log(`| worker path in wasm (p90 of rounds) | ${p90.toFixed(3)} |`);
console.log(`| worker path in wasm, first request of a fresh module | ${first.toFixed(3)} |`);
const met = p <= 5;
console.log(`worker CPU per ${(body.length / 1000).toFixed(0)} KB batch: ${p.toFixed(2)} ms; target ≤ 5 ms: ${met ? "met" : "NOT met"}`);
