#!/usr/bin/env node
// bench/serve_bench.mjs — aggregate generation throughput, time to first token (TTFT) and time
// per output token after it (TPOT) of `sickle serve` at 1, 2, 4 and 8 concurrent streaming
// requests, plus the prefix-cache TTFT win and a structured-output row (the same level with a
// JSON schema constraining every token, vs without).
//
//   node bench/serve_bench.mjs [--model DIR | --preset mini] [--levels 1,2,4,8] [--max-tokens 32]
//        [--prompt-words 48] [--rounds 1] [--threads N (default: all cores)] [--url http://127.0.0.1:8000]
//
// Each level runs `level` clients at once, each doing `rounds` requests of max_tokens tokens
// (ignore_eos, so every request generates exactly max_tokens). Aggregate tok/s = all generated
// tokens / wall time of the level, the prompts' prefill included. Figures in the README:
// `--model models/brown-kimi --max-tokens 128 --rounds 64 --threads 1` and
// `--model <mini> --max-tokens 256 --rounds 1 --threads 2 --levels 1,8`.
// Needs SICKLE_BIN (or `sickle` on PATH) unless --url is given.
import fs from 'node:fs';
import path from 'node:path';
import { startServer, servableModel, synthModel } from '../tests/server/lib.mjs';

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1] && !all[i + 1].startsWith('--') ? all[i + 1] : 'true']);
  return acc;
}, []));
const levels = (args.levels || '1,2,4,8').split(',').map(Number);
const maxTokens = Number(args['max-tokens'] || 32);
const promptWords = Number(args['prompt-words'] || 48);
const rounds = Number(args.rounds || 1);

const words = 'the of and to a in that is was he for it with as his on be at by had not are but from or have an they which one you were her all she there would their we him been has when who will more no if out so said what up its about into than them can only other new some could time these two may then do first any my now such like our over man me even most made after also did many before must through back years where much your way well down should because each just those people mr how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three'.split(' ');
function promptText(seed) {
  let x = seed * 2654435761 % 4294967296, out = [];
  for (let i = 0; i < promptWords; i++) { x = (x * 1103515245 + 12345) % 2147483648; out.push(words[x % words.length]); }
  return out.join(' ');
}

async function streamOne(base, model, prompt, nTokens, extra = { ignore_eos: true }) {
  const t0 = performance.now();
  const r = await fetch(base + '/v1/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, prompt, max_tokens: nTokens, temperature: 0, stream: true,
      stream_options: { include_usage: true }, ...extra }),
  });
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
  let ttft = null, usage = null, buf = '';
  const dec = new TextDecoder();
  for await (const chunk of r.body) {
    buf += dec.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i); buf = buf.slice(i + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      const j = JSON.parse(ev.slice(6));
      if (j.usage) usage = j.usage;
      if (ttft === null && j.choices?.[0]?.text) ttft = performance.now() - t0;
    }
  }
  const total = performance.now() - t0, tokens = usage?.completion_tokens ?? 0;
  ttft = ttft ?? total;
  // TPOT (vLLM's benchmark_serving): time per output token after the first.
  return { ttft, total, tokens, tpot: tokens > 1 ? (total - ttft) / (tokens - 1) : NaN,
    cached: usage?.prompt_tokens_details?.cached_tokens ?? 0 };
}

const median = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };

// max_position_embeddings of a model directory: serve refuses a longer --max-model-len.
function modelPositions(dir) {
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  return (cfg.text_config || cfg).max_position_embeddings;
}

async function main() {
  let srv = null, base = args.url, model = args['served-model-name'] || 'bench';
  let modelDir = args.model;
  if (!base) {
    if (!modelDir) modelDir = args.preset ? synthModel(args.preset, args['cache-dir'] || '/tmp') : servableModel({});
    srv = await startServer(modelDir, ['--served-model-name', model, '--max-num-seqs', String(Math.max(...levels)),
      ...(args.threads ? ['--threads', String(args.threads)] : []),  // omitted: all cores
      '--max-model-len', String(args['max-model-len'] || Math.min(2048, modelPositions(modelDir)))]);
    base = srv.url;
  } else {
    model = (await (await fetch(base + '/v1/models')).json()).data[0].id;
  }
  console.log(`serve_bench: ${modelDir || base}, max_tokens ${maxTokens}, prompt ~${promptWords} words, rounds ${rounds}`);
  // Warm-up: the largest level once. It pages in the weights, allocates the sequences' caches,
  // starts the HTTP threads and JIT-compiles this client; with a single short request instead,
  // the first level (1 concurrent) measured partly a cold start (~25% lower tok/s).
  await Promise.all(Array.from({ length: Math.max(...levels) }, (_, i) => streamOne(base, model, promptText(900 + i), maxTokens)));
  // One level: c clients at once, `rounds` requests each; prompts from `seed0` on.
  async function level(c, seed0, extra) {
    let seed = seed0;
    const t0 = performance.now();
    const results = await Promise.all(Array.from({ length: c }, async () => {
      const rs = [];
      for (let k = 0; k < rounds; k++) rs.push(await streamOne(base, model, promptText(seed++), maxTokens, extra));
      return rs;
    }));
    const wall = (performance.now() - t0) / 1000;
    const flat = results.flat();
    const tokens = flat.reduce((s, r) => s + r.tokens, 0);
    return { c, tokS: tokens / wall, ttft: median(flat.map((r) => r.ttft)), tpot: median(flat.map((r) => r.tpot)),
      e2e: median(flat.map((r) => r.total)), wall, tokens };
  }
  const header = () => {
    console.log('| concurrent | aggregate tok/s | median TTFT ms | median TPOT ms | median request ms | tokens | wall s |');
    console.log('|---:|---:|---:|---:|---:|---:|---:|');
  };
  const print = (r, label = '') =>
    console.log(`| ${r.c}${label} | ${r.tokS.toFixed(2)} | ${r.ttft.toFixed(0)} | ${r.tpot.toFixed(3)} | ${r.e2e.toFixed(0)} | ` +
      `${r.tokens} | ${r.wall.toFixed(1)} |`);
  const rows = [];
  for (const c of levels) rows.push(await level(c, 1 + 1000 * rows.length));
  header();
  for (const r of rows) print(r);
  const one = rows.find((r) => r.c === 1), eight = rows.find((r) => r.c === 8);
  if (one && eight) {
    console.log(`speedup at 8 concurrent: ${(eight.tokS / one.tokS).toFixed(2)}x (target >= 3x)`);
    // The streams' rate after their first token: the aggregate without each request's own
    // prefill (but with the steps it shares with other requests' prefills, which with several
    // rounds arrive while it decodes).
    console.log(`after the first token: 8 x TPOT at 1 / TPOT at 8 = ${(8 * one.tpot / eight.tpot).toFixed(2)}x`);
  }
  // A level of a fraction of a second is mostly scheduling noise on a shared machine (the demo
  // model's 4-round levels swung 1.8-2.4x at 8 concurrent on one build): say so.
  const short = rows.filter((r) => r.wall < 1);
  if (short.length)
    console.log(`note: level(s) ${short.map((r) => r.c).join(', ')} lasted under 1 s; ` +
      `raise --rounds or --max-tokens for a stable figure`);

  // Structured output: the top level again, each token masked by a JSON schema (an array of at
  // least 16 x max_tokens integers, so no document completes before max_tokens and every
  // request generates exactly max_tokens, as the ignore_eos rows do), against the same level
  // unconstrained on the same prompts, run right before it.
  const top = Math.max(...levels);
  const schema = { type: 'array', items: { type: 'integer' }, minItems: 16 * maxTokens };
  const plain = await level(top, 50000);
  const constrained = await level(top, 50000, { guided_json: schema });
  console.log(`structured output (guided_json, ${top} concurrent):`);
  header();
  print(plain, ' plain');
  print(constrained, ' json_schema');
  console.log(`json_schema / plain aggregate tok/s: ${(constrained.tokS / plain.tokS).toFixed(3)}`);

  // Prefix cache: the same long system prompt, new question each time.
  const system = promptText(4242) + ' ' + promptText(4343) + ' ' + promptText(4444);
  const cold = await streamOne(base, model, system + ' question one', 2);
  const warm = await streamOne(base, model, system + ' question two', 2);
  console.log(`prefix cache: TTFT cold ${cold.ttft.toFixed(0)} ms, warm ${warm.ttft.toFixed(0)} ms ` +
    `(${warm.cached} prompt tokens reused), ${(cold.ttft / warm.ttft).toFixed(2)}x`);
  if (srv) await srv.stop();
}

main().catch((e) => { console.error(e); process.exit(1); });
