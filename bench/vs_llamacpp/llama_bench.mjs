#!/usr/bin/env node
// llama.cpp side of run.sh: prefill tok/s at the given prompt lengths and decode tok/s, one
// process, node-llama-cpp's prebuilt CPU binaries, mmap'd GGUF. Prompts are token ids
// (deterministic, no tokenizer needed): id(i) = 256 + (i * 7919) % (vocab - 512).
//   node llama_bench.mjs --gguf FILE [--threads 2] [--prefill 128,512] [--decode 64] [--warmup 1]
// --warmup 1: each prompt is evaluated once untimed first (as llama-bench does), so the figure is
// the steady state; 0: the first evaluation is timed. --decode 0 skips the decode measurement.
// Prints one JSON line: {prefill: {"128": tok/s, ...}, decode: tok/s, peak_rss_bytes}.
import { importNlc, loadLlama, parseArgs } from "./common.mjs";

const a = parseArgs(process.argv.slice(2), { gguf: "", threads: "2", prefill: "128,512", decode: "64", vocab: "", warmup: "1" });
const nlc = await importNlc();
if (!nlc) { console.error("node-llama-cpp is not installed"); process.exit(77); }
const T = Number(a.threads);
const llama = await loadLlama(nlc, T);
const model = await llama.loadModel({ modelPath: a.gguf, gpuLayers: 0, useMmap: true });
const V = Number(a.vocab || model.fileInsights?.metadata?.deepseek2?.vocab_size || 2304);
const ids = (n, off = 0) => Array.from({ length: n }, (_, i) => 256 + ((i + off) * 7919) % (V - 512));
const lens = a.prefill.split(",").map(Number);
const ctx = await model.createContext({ contextSize: Math.max(...lens) + Number(a.decode) + 16, threads: T, batchSize: 512 });
const seq = ctx.getSequence();
const out = { threads: T, prefill: {}, decode: 0 };
for (const n of lens) {
  await seq.clearHistory();
  if (a.warmup === "1") {
    await seq.evaluateWithoutGeneratingNewTokens(ids(n));
    await seq.clearHistory();
  }
  const t0 = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(ids(n));
  out.prefill[n] = n / ((performance.now() - t0) / 1e3);
}
// Decode: greedy, one token per step after a short prompt (sampling on the native side).
await seq.clearHistory();
const D = Number(a.decode);
if (D > 0) {
  const next = { generateNext: { token: true, options: { temperature: 0 } } };
  let res = await seq.controlledEvaluate([...ids(15), [ids(1, 15)[0], next]]);
  const t1 = performance.now();
  for (let i = 0; i < D; ++i) res = await seq.controlledEvaluate([[res.at(-1).next.token, next]]);
  out.decode = D / ((performance.now() - t1) / 1e3);
}
out.peak_rss_bytes = process.resourceUsage().maxRSS * 1024;
console.log(JSON.stringify(out));
await model.dispose();
