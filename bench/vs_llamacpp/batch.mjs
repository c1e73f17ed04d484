#!/usr/bin/env node
// llama.cpp's side of the batching comparison: aggregate greedy decode throughput with 1, 2, 4
// and 8 sequences of one context generating at once (node-llama-cpp evaluates the pending
// tokens of all sequences in one llama_decode batch). Each request is a 32-token prompt plus
// --decode generated tokens, `rounds` requests per sequence and level, as in sickle's
// `build/bench/serve_bench DIR DECODE 32 THREADS` scheduler table (no HTTP on either side).
//   node batch.mjs --gguf FILE [--threads 1] [--decode 128] [--levels 1,2,4,8] [--rounds 4]
// Prompts are token ids (no tokenizer): id(i) = 256 + (i * 7919) % (vocab - 512), per sequence
// shifted. Prints one line per level: tok/s and the ratio to 1 sequence.
import { importNlc, loadLlama, parseArgs } from "./common.mjs";

const a = parseArgs(process.argv.slice(2), { gguf: "", threads: "1", decode: "128", levels: "1,2,4,8", rounds: "4" });
const nlc = await importNlc();
if (!nlc) { console.error("node-llama-cpp is not installed"); process.exit(77); }
const T = Number(a.threads), D = Number(a.decode), P = 32, rounds = Number(a.rounds);
const llama = await loadLlama(nlc, T);
const model = await llama.loadModel({ modelPath: a.gguf, gpuLayers: 0, useMmap: true });
const V = Number(model.fileInsights?.metadata?.deepseek2?.vocab_size || model.tokens?.length || 2304);
const ids = (n, off) => Array.from({ length: n }, (_, i) => 256 + ((i + off) * 7919) % (V - 512));
const levels = a.levels.split(",").map(Number);
const maxL = Math.max(...levels);
const ctx = await model.createContext({ contextSize: maxL * (P + D + 16), sequences: maxL, threads: T, batchSize: 512 });
const seqs = Array.from({ length: maxL }, () => ctx.getSequence());
const next = { generateNext: { token: true, options: { temperature: 0 } } };

async function request(seq, salt) {
  await seq.clearHistory();
  let res = await seq.controlledEvaluate([...ids(P - 1, salt * 97), [ids(1, salt * 97 + P)[0], next]]);
  for (let i = 1; i < D; ++i) res = await seq.controlledEvaluate([[res.at(-1).next.token, next]]);
  return D;
}

console.log(`llama.cpp via node-llama-cpp, ${a.gguf}, ${T} thread(s), ${P} prompt + ${D} generated tokens per request, ${rounds} rounds`);
let one = 0;
for (const L of levels) {
  await Promise.all(seqs.slice(0, L).map((s, i) => request(s, i)));  // warm-up round
  const t0 = performance.now();
  let tokens = 0;
  for (let r = 0; r < rounds; ++r)
    tokens += (await Promise.all(seqs.slice(0, L).map((s, i) => request(s, 100 + r * maxL + i)))).reduce((x, y) => x + y, 0);
  const tps = tokens / ((performance.now() - t0) / 1e3);
  if (L === 1) one = tps;
  console.log(`| ${L} | ${tps.toFixed(1)} | ${one ? (tps / one).toFixed(2) + "x" : ""} |`);
}
await model.dispose();
