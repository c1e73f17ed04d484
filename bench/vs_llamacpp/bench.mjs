#!/usr/bin/env node
// sickle vs llama.cpp on the same weights (run.sh drives this). For each model: prefill tok/s at
// each prompt length, decode tok/s, peak RSS, the ratio sickle/llama.cpp, and each side's decode
// bandwidth fraction = active bytes per token x decode tok/s / memory read bandwidth measured in
// this run. Prompts are the same token ids on both sides (llama_bench.mjs's formula).
//   node bench.mjs --sickle BIN --model DIR --gguf FILE [--threads 2] [--prefill 128,512] [--decode 64] [--membw BIN]
//                  [--sickle-args "--bf16-acts"]   (extra `sickle run` flags, space-separated)
//                  [--warmup 1] [--rounds 1]
// --warmup 1 (default): both sides evaluate each prompt once untimed before the timed run, as
// llama-bench does (steady state: scratch and KV memory already touched; sickle run --warmup).
// --warmup 0: both sides time a cold first evaluation, each prompt length in a fresh process.
// (Before, llama.cpp ran its lengths in one process, so its 512-token prompt ran on memory its
// 128-token one had touched, while each sickle run was cold: in this VM first touches of fresh
// memory cost ~10% of a 512-token prefill of kimi-k2.5-72.)
// --rounds N: N rounds, each the bandwidth probe, then sickle, then llama.cpp (interleaved, so a
// change in the host's load touches both sides); every figure is the best of its N, and the JSON
// line keeps each round's. On a host shared with other guests one 64-token decode can land in a
// dip (a mini decode at 22.9 tok/s, 41-43 in the three runs after it).
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "./common.mjs";

const a = parseArgs(process.argv.slice(2), { sickle: "", model: "", gguf: "", threads: "2", prefill: "128,512", decode: "64", membw: "", name: "", "sickle-args": "", warmup: "1", rounds: "1" });
const extra = a["sickle-args"].split(" ").filter(Boolean);
const warmup = a.warmup !== "0";
const warmArgs = warmup ? ["--warmup"] : [];
const here = path.dirname(new URL(import.meta.url).pathname);
const cfg = JSON.parse(fs.readFileSync(path.join(a.model, "config.json"), "utf8"));
const V = (cfg.text_config ?? cfg).vocab_size;
const ids = (n, off = 0) => Array.from({ length: n }, (_, i) => 256 + ((i + off) * 7919) % (V - 512));
const lens = a.prefill.split(",").map(Number), D = Number(a.decode), T = a.threads;
// Speed only: the context may pass a small model's positions (brown-kimi: 512 < 512 + 64 + 32),
// which `sickle run` refuses without --allow-long-context.

// Runs cmd under /usr/bin/time: {stdout, stderr, rss (bytes)}.
function run(cmd, args) {
  const p = spawnSync("/usr/bin/time", ["-f", "@@RSS %M", cmd, ...args], { encoding: "utf8", maxBuffer: 1 << 26 });
  if (p.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${p.status}):\n${p.stderr}`);
  const m = p.stderr.match(/@@RSS (\d+)/);
  return { stdout: p.stdout, stderr: p.stderr, rss: m ? Number(m[1]) * 1024 : 0 };
}

// Memory read bandwidth, measured now (bench/membw if built, else sickle run's own measurement).
// bench/membw also measures the f32 FMA peak of the same threads (the dense prefill kernels'
// limit on the AVX-512/AVX2 tables; the AMX table's int8/bf16 tiles have a higher one, not
// probed here).
let bw = 0, bwSrc = "", peak = 0;
const measureBandwidth = () => {
  if (!(a.membw && fs.existsSync(a.membw))) return;
  const r = run(a.membw, [T, "512"]);
  bw = Math.max(bw, Number(r.stdout.match(/([\d.]+) GB\/s/)[1]) * 1e9);
  bwSrc = `${path.basename(a.membw)} (${T} threads)`;
  const p = r.stdout.match(/f32 FMA peak: ([\d.]+) GFLOP\/s/);
  if (p) peak = Math.max(peak, Number(p[1]) * 1e9);
};
// Prefill FLOPs per prompt token = 2 x the parameters it multiplies: sickle inspect's active
// parameters (routed top-k + shared + dense + attention + embedding + lm_head) less the embedding
// (a row lookup) and the lm_head (only the last position needs logits); attention over the
// context is not counted.
let active = 0;
{
  const r = spawnSync(a.sickle, ["inspect", a.model], { encoding: "utf8", maxBuffer: 1 << 26 });
  const out = r.stdout ?? "", unit = { K: 1e3, M: 1e6, B: 1e9 };
  const m = out.match(/([\d.]+) ([KMB]) active per token/);
  const rowParams = (name) => {
    const x = out.match(new RegExp(`^\\s+${name}\\s.*?([\\d.]+) ([KMB]) params`, "m"));
    return x ? Number(x[1]) * unit[x[2]] : 0;
  };
  if (m) active = Number(m[1]) * unit[m[2]] - rowParams("embedding") - rowParams("lm_head");
}

// Both sides start with their weights in the page cache: a model and its GGUF together may not
// fit (kimi-k2.5-72: 10 + 9.8 GB), and a cold first run would time the disk.
const warm = (files) => { for (const f of files) spawnSync("cat", [f], { stdio: ["ignore", "ignore", "inherit"] }); };
const sickleRound = () => {
  warm(fs.readdirSync(a.model).filter((f) => f.endsWith(".safetensors")).map((f) => path.join(a.model, f)));
  const sk = { prefill: {}, decode: 0, rss: 0, bytes_per_token: 0 };
  for (const n of lens) {
    const r = run(a.sickle, ["run", "-m", a.model, "--tokens", ids(n).join(","), "-n", "1", "--print-ids", "-t", T, "--ctx", String(Math.max(...lens) + D + 32), "--allow-long-context", ...warmArgs, ...extra, ...(bw ? ["--membw", String(bw / 1e9)] : [])]);
    sk.prefill[n] = Number(r.stderr.match(/prompt \d+ tok in [\d.]+ s \(([\d.]+) tok\/s\)/)[1]);
    sk.rss = Math.max(sk.rss, r.rss);
  }
  {
    const r = run(a.sickle, ["run", "-m", a.model, "--tokens", ids(16).join(","), "-n", String(D + 1), "--ignore-eos", "--print-ids", "-t", T, "--ctx", String(Math.max(...lens) + D + 32), "--allow-long-context", ...warmArgs, ...extra, ...(bw ? ["--membw", String(bw / 1e9)] : [])]);
    sk.decode = Number(r.stderr.match(/generation \d+ tok in [\d.]+ s \(([\d.]+) tok\/s\)/)[1]);
    sk.bytes_per_token = Number(r.stderr.match(/\(([\d.]+) MB\/token\)/)[1]) * 1e6;
    sk.rss = Math.max(sk.rss, r.rss);
    if (!bw) {
      const m = r.stderr.match(/of ([\d.]+) GB\/s measured/);
      bw = Number(m[1]) * 1e9;
      bwSrc = `sickle run's measurement (${T} threads)`;
    }
  }
  return sk;
};
const llamaRound = () => {
  warm([a.gguf]);
  const llamaRun = (prefill, decode) => {
    const r = run("node", [path.join(here, "llama_bench.mjs"), "--gguf", a.gguf, "--threads", T, "--prefill", prefill, "--decode", String(decode), "--vocab", String(V), "--warmup", warmup ? "1" : "0"]);
    return { ...JSON.parse(r.stdout.trim().split("\n").pop()), rss: r.rss };
  };
  let ll;
  if (warmup) {
    ll = llamaRun(a.prefill, D);
  } else {
    ll = { prefill: {}, decode: 0, rss: 0 };
    lens.forEach((n, i) => {
      const r = llamaRun(String(n), i + 1 === lens.length ? D : 0);
      ll.prefill[n] = r.prefill[n];
      ll.rss = Math.max(ll.rss, r.rss);
      if (i + 1 === lens.length) ll.decode = r.decode;
    });
  }
  return ll;
};

// Best of the rounds, figure by figure (tok/s: highest; peak RSS: highest).
const R = Math.max(1, Number(a.rounds));
const perRound = [];
const best = (xs) => {
  const o = { prefill: {}, decode: 0, rss: 0 };
  for (const x of xs) {
    for (const n of lens) o.prefill[n] = Math.max(o.prefill[n] ?? 0, x.prefill[n]);
    o.decode = Math.max(o.decode, x.decode);
    o.rss = Math.max(o.rss, x.rss);
    if (x.bytes_per_token) o.bytes_per_token = x.bytes_per_token;
  }
  return o;
};
for (let r = 0; r < R; ++r) {
  measureBandwidth();
  perRound.push({ sickle: sickleRound(), llama: llamaRound() });
}
const sk = best(perRound.map((x) => x.sickle)), ll = best(perRound.map((x) => x.llama));

const f = (x, d = 1) => x.toFixed(d);
console.log(`\n== ${a.name || path.basename(a.model)}: ${T} threads, memory bandwidth ${f(bw / 1e9, 2)} GB/s from ${bwSrc}; active weights ${f(sk.bytes_per_token / 1e6, 1)} MB/token${extra.length ? `; sickle ${extra.join(" ")}` : ""}; ${warmup ? "warm (each prompt run once untimed first, both sides)" : "cold (first evaluation timed, both sides)"}${R > 1 ? `; best of ${R} interleaved rounds` : ""}`);
console.log(`${"".padEnd(18)}${"sickle".padStart(12)}${"llama.cpp".padStart(12)}${"ratio".padStart(9)}`);
for (const n of lens) console.log(`${`prefill ${n} tok/s`.padEnd(18)}${f(sk.prefill[n]).padStart(12)}${f(ll.prefill[n]).padStart(12)}${f(sk.prefill[n] / ll.prefill[n], 2).padStart(9)}`);
console.log(`${"decode tok/s".padEnd(18)}${f(sk.decode, 2).padStart(12)}${f(ll.decode, 2).padStart(12)}${f(sk.decode / ll.decode, 2).padStart(9)}`);
if (peak && active) for (const n of lens) console.log(`${`prefill ${n} FMA frac`.padEnd(18)}${f(2 * active * sk.prefill[n] / peak, 3).padStart(12)}${f(2 * active * ll.prefill[n] / peak, 3).padStart(12)}   (of ${f(peak / 1e9, 0)} GFLOP/s f32 FMA peak, ${T} threads)`);
// With --bf16-acts sickle's dense products run vdpbf16ps (twice the f32 FMA's multiply-adds per
// instruction), as llama.cpp's bf16 weights do: their fraction of that peak, 2x the FMA's.
if (peak && active && extra.includes("--bf16-acts")) for (const n of lens) console.log(`${`prefill ${n} dot frac`.padEnd(18)}${f(active * sk.prefill[n] / peak, 3).padStart(12)}${f(active * ll.prefill[n] / peak, 3).padStart(12)}   (of ${f(2 * peak / 1e9, 0)} GFLOP/s bf16 dot peak = 2x FMA)`);
console.log(`${"decode bw frac".padEnd(18)}${f(sk.bytes_per_token * sk.decode / bw, 2).padStart(12)}${f(sk.bytes_per_token * ll.decode / bw, 2).padStart(12)}`);
console.log(`${"peak RSS MiB".padEnd(18)}${f(sk.rss / 2 ** 20, 0).padStart(12)}${f(ll.rss / 2 ** 20, 0).padStart(12)}   (llama.cpp's includes node, ~50 MiB)`);
console.log(JSON.stringify({ model: a.name || a.model, threads: Number(T), warmup, bandwidth: bw, fma_peak_flops: peak, matmul_params_per_prompt_token: active, sickle: sk, llama: ll, rounds: perRound }));
