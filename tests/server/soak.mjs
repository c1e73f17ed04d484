#!/usr/bin/env node
// Bounded soak of `sickle serve` (not in CI by default): loopback only, a few minutes, concurrent
// clients mixing streaming/non-streaming chat and completions, some disconnecting mid-generation
// (streaming and non-streaming).
// Checks: no crash, every completed response well-formed, RSS flat after warm-up.
//
//   SICKLE_BIN=build/bin/sickle node tests/server/soak.mjs [--seconds 180] [--clients 8] [--model DIR]
import { startServer, servableModel, rssBytes, getMetrics, metricValue, openaiClient } from './lib.mjs';

const arg = (k, d) => { const i = process.argv.indexOf('--' + k); return i > 0 ? process.argv[i + 1] : d; };
const seconds = Number(arg('seconds', 180)), nClients = Number(arg('clients', 8));
const model = arg('model', null) || servableModel({});
const NAME = 'soak';

const srv = await startServer(model, ['--served-model-name', NAME, '--max-num-seqs', '8', '--max-model-len', '512']);
const client = openaiClient({ baseURL: srv.baseURL, apiKey: 'x' });
const stats = { ok: 0, aborted: 0, abortedWhole: 0, bad: 0, errors: 0 };
const deadline = Date.now() + seconds * 1000;
let rng = 12345;
const rand = (n) => { rng = (rng * 1103515245 + 12345) % 2147483648; return Math.floor(rng / 65536) % n; };  // high bits: an LCG's low bits cycle
const fail = (why) => { stats.bad++; console.error('malformed:', why); };

async function one(i) {
  const kind = rand(5), maxTokens = 4 + rand(40);
  const messages = [{ role: 'user', content: `Request ${i}: tell me something about ${['rivers', 'kings', 'trains', 'bread'][rand(4)]}` }];
  if (kind === 0) {
    const r = await client.chat.completions.create({ model: NAME, messages, max_tokens: maxTokens, temperature: 0.8 });
    const msg = r.choices?.[0]?.message;
    // content is a string, or null when the (random) model produced tool calls.
    const okContent = typeof msg?.content === 'string' || (msg?.content === null && msg.tool_calls?.length > 0);
    if (!okContent || !['stop', 'length', 'tool_calls'].includes(r.choices[0].finish_reason) ||
        r.usage.total_tokens !== r.usage.prompt_tokens + r.usage.completion_tokens) return fail(JSON.stringify(r));
    stats.ok++;
  } else if (kind === 1) {
    const r = await client.completions.create({ model: NAME, prompt: 'The city council', max_tokens: maxTokens });
    if (typeof r.choices?.[0]?.text !== 'string') return fail(JSON.stringify(r));
    stats.ok++;
  } else if (kind === 4) {
    // Non-streaming, and the client gives up mid-generation: nothing was written to it, so the
    // server must notice the closed socket itself.
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 5 + rand(60));
    try {
      const r = await client.chat.completions.create({ model: NAME, messages, max_tokens: 300, ignore_eos: true },
        { signal: ac.signal });
      if (typeof r.choices?.[0]?.message?.content !== 'string') return fail(JSON.stringify(r));
      stats.ok++;  // finished before the abort
    } catch (e) {
      if (!ac.signal.aborted) throw e;
      stats.aborted++;
      stats.abortedWhole++;
    } finally {
      clearTimeout(timer);
    }
  } else {
    const ac = new AbortController();
    const abortAfter = kind === 3 ? 1 + rand(5) : Infinity;
    // Disconnecting clients ask for long outputs, so they leave mid-generation.
    const stream = await client.chat.completions.create({ model: NAME, messages, stream: true,
      max_tokens: kind === 3 ? 300 : maxTokens, ignore_eos: kind === 3, stream_options: { include_usage: true } },
      { signal: ac.signal });
    let n = 0, finish = null, usage = null;
    try {
      for await (const c of stream) {
        if (c.usage) usage = c.usage;
        if (c.choices?.[0]?.finish_reason) finish = c.choices[0].finish_reason;
        if (++n === abortAfter) ac.abort();
      }
    } catch (e) {
      if (!ac.signal.aborted) throw e;
    }
    if (ac.signal.aborted) { stats.aborted++; return; }  // (openai@4 may end the loop quietly instead)
    if (!finish || !usage) return fail(`stream ended without finish/usage (${n} chunks)`);
    stats.ok++;
  }
}

async function worker(w) {
  for (let i = 0; Date.now() < deadline; i++) {
    try { await one(w * 100000 + i); } catch (e) { stats.errors++; console.error('error:', e.message); }
  }
}

const samples = [];
const sampler = setInterval(() => samples.push({ t: Date.now(), rss: rssBytes(srv.proc.pid) }), 2000);
await Promise.all(Array.from({ length: nClients }, (_, w) => worker(w)));
clearInterval(sampler);
await new Promise((r) => setTimeout(r, 1000));
const m = await getMetrics(srv.url);
const finalRss = rssBytes(srv.proc.pid);
const code = await srv.stop();
// RSS after warm-up (first third) vs the end: allow 10% + 32 MiB for allocator noise.
const warm = samples[Math.floor(samples.length / 3)]?.rss ?? finalRss;
const peak = Math.max(...samples.map((s) => s.rss));
const mib = (b) => (b / 1048576).toFixed(1);
const closed499 = metricValue(m, 'sickle_http_requests_total{path="/v1/chat/completions",status="499"}') || 0;
console.log(`soak: ${seconds}s, ${nClients} clients: ${stats.ok} ok, ${stats.aborted} disconnected, ${stats.bad} malformed, ` +
  `${stats.errors} errors; RSS warm ${mib(warm)} MiB, end ${mib(finalRss)} MiB, peak ${mib(peak)} MiB; ` +
  `running at end ${metricValue(m, 'sickle_num_requests_running')}, ` +
  `server-side aborts ${metricValue(m, 'sickle_request_success_total{finished_reason="abort"}')} ` +
  `(${closed499} non-streaming seen closed, of ${stats.abortedWhole} dropped); exit ${code}`);
const flat = finalRss <= warm * 1.10 + 32 * 1048576;
const serverAborts = metricValue(m, 'sickle_request_success_total{finished_reason="abort"}') || 0;
// (A dropped non-streaming request can finish before the server looks: most, not all, are 499.)
if ((stats.aborted > 0 && serverAborts === 0) || (stats.abortedWhole >= 5 && closed499 === 0) || stats.bad || stats.errors || !flat || code !== 0 || metricValue(m, 'sickle_num_requests_running') !== 0 || stats.ok === 0) {
  console.error('soak: FAILED');
  process.exit(1);
}
console.log('soak: PASSED');
