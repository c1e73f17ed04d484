#!/usr/bin/env node
// Greedy continuation and next-token distributions: sickle (safetensors checkpoint) vs
// llama.cpp (node-llama-cpp 3.21.1, the GGUF `sickle export-gguf` wrote from it).
//
//   node compare.mjs --sickle BIN --model DIR --gguf FILE [--prompt TEXT] [-n 32] [--threads 1]
//
// Steps: (1) llama.cpp tokenizes the prompt; sickle's tokenization is checked against it by
// running sickle on the text and on llama.cpp's ids (same dumped logits <=> same tokens).
// (2) Both generate n tokens greedily from the same ids (sickle: --print-ids --ignore-eos).
// (3) llama.cpp is teacher-forced along sickle's sequence and its next-token probabilities at
// each step are compared with softmax(sickle logits): top-1 agreement and max |dp|.
// Threads default to 1: with 2 threads on a loaded 2-core machine ggml's spinning barrier makes
// single steps take up to seconds (see README).
// Exit 0 when the continuations match; 1 otherwise; 2 on setup errors. JSON summary last.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { argmax, importNlc, loadLlama, parseArgs, readLogits, softmaxRow } from "./common.mjs";

const a = parseArgs(process.argv.slice(2).map((x) => (x === "-n" ? "--n" : x)), {
  sickle: "", model: "", gguf: "", prompt: "Once upon a time, a little fox", n: "32", threads: "1", quiet: false, tokens: "",
});
const N = Number(a.n), T = Number(a.threads);
if (!a.sickle || !a.model || !a.gguf) {
  console.error("usage: compare.mjs --sickle BIN --model DIR --gguf FILE [--prompt TEXT] [--n 32] [--threads 1]");
  process.exit(2);
}
const nlc = await importNlc();
if (!nlc) {
  console.log("skipped: node-llama-cpp is not installed (npm install node-llama-cpp@3.21.1; set NLC_DIR)");
  process.exit(77);
}
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sickle-cmp-"));
const log = (...x) => { if (!a.quiet) console.log(...x); };

function sickleRun(extra, dump) {
  const args = ["run", "-m", a.model, "-n", String(N), "--print-ids", "--ignore-eos", "-t", String(T), "--membw", "1", ...extra];
  if (dump) args.push("--dump-logits", dump);
  const out = execFileSync(a.sickle, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  return out.trim().split(/\s+/).filter(Boolean).map(Number);
}

const llama = await loadLlama(nlc, T);
const model = await llama.loadModel({ modelPath: a.gguf, gpuLayers: 0 });
// --tokens "1,2,3": a tokenizer-less model (synth): the ids as given, no tokenization check.
const promptIds = a.tokens ? a.tokens.split(",").map(Number) : Array.from(model.tokenize(a.prompt, false));
if (!a.tokens) log(`prompt: ${JSON.stringify(a.prompt)}`);
log(`prompt ids (${promptIds.length}): ${promptIds.join(" ")}`);

// sickle on the ids (and, with a tokenizer, on the text).
const dumpIds = path.join(tmp, "ids.safetensors"), dumpText = path.join(tmp, "text.safetensors");
const sGen = sickleRun(["--tokens", promptIds.join(",")], dumpIds);
const L1 = readLogits(dumpIds);
let sameTokenization = true;
if (!a.tokens) {
  sickleRun(["-p", a.prompt], dumpText);
  const L2 = readLogits(dumpText);
  sameTokenization = L1.rows === L2.rows && L1.data.every((v, i) => v === L2.data[i]);
  log(`sickle tokenization ${sameTokenization ? "==" : "!="} llama.cpp's (${L2.rows - N} vs ${promptIds.length} prompt tokens)`);
}

// llama.cpp greedy: argmax of its next-token probabilities (node-llama-cpp's own sampler path
// costs ~2 s per token in this version; the probabilities come straight from the logits).
const ctx = await model.createContext({ contextSize: Math.max(256, promptIds.length + N + 8), threads: T, batchSize: 512 });
const seq = ctx.getSequence();
const probsOpt = { generateNext: { probabilities: true } };
const top = (r) => {
  let best = -1, bp = -1;
  for (const [t, p] of r.next.probabilities) if (p > bp || (p === bp && t < best)) { best = t; bp = p; }
  return best;
};
let res = await seq.controlledEvaluate([...promptIds.slice(0, -1), [promptIds.at(-1), probsOpt]]);
const lGen = [];
for (let i = 0; i < N; ++i) {
  const tok = top(res.at(-1));
  lGen.push(tok);
  if (i + 1 < N) res = await seq.controlledEvaluate([[tok, probsOpt]]);
}
log(`sickle    greedy: ${sGen.join(" ")}`);
log(`llama.cpp greedy: ${lGen.join(" ")}`);
let firstDiff = sGen.findIndex((t, i) => t !== lGen[i]);
log(firstDiff < 0 ? `continuations match (${N} tokens)` : `continuations differ from token ${firstDiff}`);
try {
  log(`sickle text:    ${JSON.stringify(model.detokenize(sGen))}`);
  log(`llama.cpp text: ${JSON.stringify(model.detokenize(lGen))}`);
} catch { /* placeholder vocabularies */ }

// Teacher-forced distributions along sickle's sequence.
await seq.clearHistory();
const all = [...promptIds, ...sGen.slice(0, -1)];
const items = all.map((t, i) => (i >= promptIds.length - 1 ? [t, probsOpt] : t));
res = await seq.controlledEvaluate(items);
let maxDp = 0, top1Agree = 0, steps = 0, maxP = 0, maxKl = 0;
const V = L1.cols;
for (let i = promptIds.length - 1; i < all.length; ++i) {
  const pl = res[i].next.probabilities;  // Map<token, prob>
  const lp = new Float64Array(V);
  for (const [t, p] of pl) if (t < V) lp[t] = p;
  const sp = softmaxRow(L1.data, i, V);
  for (let k = 0; k < V; ++k) maxDp = Math.max(maxDp, Math.abs(sp[k] - lp[k]));
  top1Agree += argmax(sp) === argmax(lp) ? 1 : 0;
  let kl = 0;  // KL(sickle || llama.cpp) in nats
  for (let k = 0; k < V; ++k) if (sp[k] > 0) kl += sp[k] * Math.log(sp[k] / Math.max(lp[k], 1e-30));
  maxKl = Math.max(maxKl, kl);
  maxP = Math.max(maxP, sp[argmax(sp)]);
  ++steps;
}
log(`teacher-forced on sickle's sequence: top-1 agrees at ${top1Agree}/${steps} steps, max |p_sickle - p_llama| = ${maxDp.toExponential(3)} (largest p ${maxP.toFixed(4)}), max KL = ${maxKl.toExponential(3)} nats`);
const summary = { prompt_tokens: promptIds.length, n: N, same_tokenization: sameTokenization, match: firstDiff < 0,
  first_diff: firstDiff, top1_agree: top1Agree, steps, max_abs_dprob: maxDp, max_p: maxP, max_kl: maxKl, sickle: sGen, llama: lGen };
console.log(JSON.stringify(summary));
fs.rmSync(tmp, { recursive: true, force: true });
await model.dispose();
process.exit(firstDiff < 0 && sameTokenization ? 0 : 1);
