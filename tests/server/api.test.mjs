// End-to-end tests of vLLM's OpenAI-server extensions in `sickle serve` (issue 16), with the
// official `openai` npm client on the demo model (or a synth tiny-kimi): sampling controls
// (penalties, logit_bias, min_tokens, stop_token_ids, include_stop_str_in_output),
// /v1/completions scoring (logprobs, echo, max_tokens 0), n > 1 and batched prompts, and the
// migration surface (unknown fields, model aliases, CORS, /version, 405, 415).
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, servableModel, openaiClient, SICKLE_BIN, modelWithTemplate } from './lib.mjs';

const MODEL = servableModel({ cacheDir: process.env.SICKLE_BUILD_DIR || os.tmpdir() });
const NAME = 'api-model';
const ALIAS = 'api-alias';
const ORIGIN = 'https://app.example';
const MAX_LEN = 256;

// Byte-level vocabulary: ids 0..255 are the bytes (demo model and synth tokenizers alike).
const ID_X = 'x'.charCodeAt(0);

// The most frequent word's count: a looping output repeats one word many times.
function maxWordCount(text) {
  const counts = new Map();
  for (const w of text.toLowerCase().split(/[^a-z]+/).filter(Boolean)) counts.set(w, (counts.get(w) ?? 0) + 1);
  return Math.max(0, ...counts.values());
}

describe('vLLM sampling controls', () => {
  let srv, client;
  before(async () => {
    srv = await startServer(MODEL, ['--served-model-name', NAME, ALIAS, '--max-model-len', String(MAX_LEN),
      '--max-num-seqs', '4', '--threads', '2', '--allowed-origins', ORIGIN]);
    client = openaiClient({ baseURL: srv.baseURL, apiKey: 'none', timeout: 120000 });
  });
  after(async () => {
    assert.equal(await srv.stop(), 0);
  });

  const loop = { model: NAME, prompt: 'the the the the the', max_tokens: 40, temperature: 0 };
  const complete = async (extra) => (await client.completions.create({ ...loop, ...extra })).choices[0];

  test('presence / frequency / repetition penalties change the greedy output of a looping prompt', async () => {
    const base = (await complete({})).text;
    assert.ok(maxWordCount(base) >= 4, `the prompt loops without penalties: ${JSON.stringify(base)}`);
    for (const p of [{ frequency_penalty: 2 }, { presence_penalty: 2 }, { repetition_penalty: 1.5 }]) {
      const t = (await complete(p)).text;
      assert.notEqual(t, base, `${JSON.stringify(p)} changes the output`);
      assert.ok(maxWordCount(t) < maxWordCount(base), `${JSON.stringify(p)} repeats less: ${JSON.stringify(t)}`);
    }
    // A negative presence penalty rewards repetition: never less looping than the plain output.
    const neg = (await complete({ presence_penalty: -2 })).text;
    assert.ok(maxWordCount(neg) >= maxWordCount(base));
    // Zero penalties are the plain output (the request path with them set is the same).
    assert.equal((await complete({ frequency_penalty: 0, presence_penalty: 0, repetition_penalty: 1 })).text, base);
    // Chat applies them too.
    const chat = { model: NAME, messages: [{ role: 'user', content: 'the the the the the' }], max_tokens: 30,
      temperature: 0, chat_template_kwargs: { thinking: false } };
    const c0 = (await client.chat.completions.create(chat)).choices[0].message.content;
    const c1 = (await client.chat.completions.create({ ...chat, frequency_penalty: 2 })).choices[0].message.content;
    assert.notEqual(c1, c0);
  });

  test('logit_bias forces a token; stop_token_ids ends on it; its text only with include_stop_str_in_output', async () => {
    const bias = { logit_bias: { [ID_X]: 100 } };
    const forced = await complete({ ...bias, max_tokens: 5 });
    assert.equal(forced.text, 'xxxxx');
    const stopped = await client.completions.create({ ...loop, ...bias, stop_token_ids: [ID_X] });
    assert.equal(stopped.choices[0].text, '');
    assert.equal(stopped.choices[0].finish_reason, 'stop');
    assert.equal(stopped.usage.completion_tokens, 1);
    const kept = await complete({ ...bias, stop_token_ids: [ID_X], include_stop_str_in_output: true });
    assert.equal(kept.text, 'x');
  });

  test('min_tokens holds back the stop ids until reached', async () => {
    const r = await client.completions.create({ ...loop, logit_bias: { [ID_X]: 100 }, stop_token_ids: [ID_X],
      min_tokens: 4 });
    assert.equal(r.usage.completion_tokens, 5, 'four tokens, then the stop id');
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.ok(!r.choices[0].text.includes('x'), JSON.stringify(r.choices[0].text));
    // Stop strings also wait for min_tokens (vLLM): the looping output stops at a later repeat.
    const base = (await complete({})).text;
    const early = (await complete({ stop: ['Southerners'] })).text;
    const late = (await complete({ stop: ['Southerners'], min_tokens: 10 })).text;
    if (base.split('Southerners').length > 3) {
      assert.ok(base.startsWith(late), late);
      assert.ok(late.length > early.length, `${JSON.stringify(early)} vs ${JSON.stringify(late)}`);
    }
    await assert.rejects(client.completions.create({ ...loop, min_tokens: 50, max_tokens: 10 }),
      (e) => e.status === 400 && e.param === 'min_tokens');
  });

  test('stop strings: include_stop_str_in_output keeps the matched string', async () => {
    const base = (await complete({})).text;
    const k = base.indexOf('Southerners') >= 0 ? base.indexOf('Southerners') : Math.floor(base.length / 2);
    const stop = base.slice(k, k + 4);
    const cut = await complete({ stop: [stop] });
    assert.equal(cut.text, base.slice(0, base.indexOf(stop)));
    const kept = await complete({ stop: [stop], include_stop_str_in_output: true });
    assert.equal(kept.text, base.slice(0, base.indexOf(stop)) + stop);
    assert.equal(kept.finish_reason, 'stop');
  });

  test('completions logprobs + echo + max_tokens 0 == log-softmax of `sickle run --dump-logits`', async () => {
    const ids = [...Buffer.from('The jury said that the city')];
    // The oracle: sickle run's logits for every prompt position (a separate process, no server).
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sickle-lp-'));
    const file = path.join(dir, 'logits.safetensors');
    const run = spawnSync(SICKLE_BIN, ['run', '-m', MODEL, '--tokens', ids.join(','), '-n', '0', '--dump-logits', file,
      '--threads', '2', '--membw', '1'], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    const buf = fs.readFileSync(file);
    fs.rmSync(dir, { recursive: true, force: true });
    const hlen = Number(buf.readBigUInt64LE(0));
    const meta = JSON.parse(buf.subarray(8, 8 + hlen).toString()).logits;
    assert.equal(meta.dtype, 'F32');
    const [rows, vocab] = meta.shape;
    assert.equal(rows, ids.length);
    const data = new Float32Array(buf.buffer.slice(buf.byteOffset + 8 + hlen + meta.data_offsets[0],
      buf.byteOffset + 8 + hlen + meta.data_offsets[1]));
    const logprob = (row, id) => {
      let mx = -Infinity, sum = 0;
      for (let v = 0; v < vocab; v++) mx = Math.max(mx, data[row * vocab + v]);
      for (let v = 0; v < vocab; v++) sum += Math.exp(data[row * vocab + v] - mx);
      return data[row * vocab + id] - mx - Math.log(sum);
    };

    const r = await client.completions.create({ model: NAME, prompt: ids, echo: true, logprobs: 1, max_tokens: 0 });
    const c = r.choices[0];
    assert.equal(c.text, 'The jury said that the city');
    assert.equal(c.finish_reason, 'length');
    assert.equal(r.usage.completion_tokens, 0);
    const lp = c.logprobs;
    assert.equal(lp.tokens.length, ids.length);
    assert.equal(lp.tokens.join(''), c.text);
    assert.equal(lp.token_logprobs[0], null);
    assert.equal(lp.top_logprobs[0], null);
    assert.deepEqual(lp.text_offset.slice(0, 3), [0, 1, 2]);
    let total = 0;
    for (let i = 1; i < ids.length; i++) {
      const want = logprob(i - 1, ids[i]);
      assert.ok(Math.abs(lp.token_logprobs[i] - want) < 2e-3, `token ${i}: ${lp.token_logprobs[i]} vs ${want}`);
      assert.ok(Object.keys(lp.top_logprobs[i]).length >= 1 && Object.keys(lp.top_logprobs[i]).length <= 2);
      total += lp.token_logprobs[i];
    }
    assert.ok(total < 0);
    // With generation: the prompt's entries unchanged, then one per generated token (greedy: the
    // chosen token is the top one).
    const g = (await client.completions.create({ model: NAME, prompt: ids, echo: true, logprobs: 2, max_tokens: 3,
      temperature: 0, ignore_eos: true })).choices[0];
    assert.equal(g.logprobs.tokens.length, ids.length + 3);
    for (let i = 1; i < ids.length; i++) assert.ok(Math.abs(g.logprobs.token_logprobs[i] - lp.token_logprobs[i]) < 1e-4);
    for (let i = ids.length; i < ids.length + 3; i++) {
      const top = g.logprobs.top_logprobs[i];
      assert.equal(Math.max(...Object.values(top)), g.logprobs.token_logprobs[i]);
    }
    assert.equal(g.text, c.text + g.logprobs.tokens.slice(ids.length).join(''));
    // Streamed: the chunks' logprobs concatenate to the non-streamed ones.
    const st = { tokens: [], token_logprobs: [], text_offset: [] };
    let stext = '';
    for await (const ch of await client.completions.create({ model: NAME, prompt: ids, echo: true, logprobs: 2,
      max_tokens: 3, temperature: 0, ignore_eos: true, stream: true })) {
      const c0 = ch.choices[0];
      stext += c0.text;
      if (c0.logprobs) for (const k of Object.keys(st)) st[k].push(...c0.logprobs[k]);
    }
    assert.equal(stext, g.text);
    assert.deepEqual(st.tokens, g.logprobs.tokens);
    assert.deepEqual(st.text_offset, g.logprobs.text_offset);
    assert.equal(st.token_logprobs.length, g.logprobs.token_logprobs.length);
    st.token_logprobs.forEach((v, i) => assert.ok(v === null ? g.logprobs.token_logprobs[i] === null
      : Math.abs(v - g.logprobs.token_logprobs[i]) < 1e-4, `token ${i}`));
    // Without echo: only the generated tokens.
    const n = (await client.completions.create({ model: NAME, prompt: ids, logprobs: 0, max_tokens: 3, temperature: 0,
      ignore_eos: true })).choices[0];
    assert.deepEqual(n.logprobs.tokens, g.logprobs.tokens.slice(ids.length));
    assert.deepEqual(n.logprobs.text_offset, [0, n.logprobs.tokens[0].length,
      n.logprobs.tokens[0].length + n.logprobs.tokens[1].length]);
  });

  test('bad values are refused naming the field', async () => {
    const bad = [
      [{ logit_bias: { abc: 1 } }, 'logit_bias'],
      [{ logit_bias: { 5: 101 } }, 'logit_bias.5'],
      [{ logit_bias: { 99999999: 1 } }, 'logit_bias'],
      [{ repetition_penalty: 0 }, 'repetition_penalty'],
      [{ presence_penalty: 3 }, 'presence_penalty'],
      [{ stop_token_ids: ['a'] }, 'stop_token_ids'],
      [{ stop_token_ids: [99999999] }, 'stop_token_ids'],
      [{ skip_special_tokens: 'no' }, 'skip_special_tokens'],
    ];
    for (const [extra, param] of bad)
      await assert.rejects(client.completions.create({ ...loop, ...extra }),
        (e) => e.status === 400 && e.param === param, JSON.stringify(extra));
  });

  test('n = 3: three choices, reproducible with a seed, each its own sample', async () => {
    const req = { model: NAME, messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: 12, n: 3,
      temperature: 1, seed: 7, chat_template_kwargs: { thinking: false } };
    const a = await client.chat.completions.create(req);
    assert.deepEqual(a.choices.map((c) => c.index), [0, 1, 2]);
    const b = await client.chat.completions.create(req);
    assert.deepEqual(b.choices.map((c) => c.message.content), a.choices.map((c) => c.message.content));
    assert.ok(new Set(a.choices.map((c) => c.message.content)).size >= 2, 'the choices are different samples');
    // Choice 0 is the single request with the same seed; completion tokens add up.
    const one = await client.chat.completions.create({ ...req, n: 1 });
    assert.equal(one.choices[0].message.content, a.choices[0].message.content);
    assert.equal(a.usage.prompt_tokens, one.usage.prompt_tokens);
    assert.ok(a.usage.completion_tokens > one.usage.completion_tokens);
    // Streamed: the choices' chunks interleave by index; each assembles to its non-streamed text.
    const texts = ['', '', ''], finishes = [];
    let usage = null;
    for await (const c of await client.chat.completions.create({ ...req, stream: true,
      stream_options: { include_usage: true } })) {
      if (c.usage) usage = c.usage;
      for (const ch of c.choices) {
        texts[ch.index] += ch.delta.content ?? '';
        if (ch.finish_reason) finishes.push(ch.index);
      }
    }
    assert.deepEqual(texts, a.choices.map((c) => c.message.content));
    assert.deepEqual(finishes.sort(), [0, 1, 2]);
    assert.equal(usage.completion_tokens, a.usage.completion_tokens);
  });

  test('batched prompts (strings and token lists) == one request each', async () => {
    const base = { model: NAME, max_tokens: 6, temperature: 0 };
    const prompts = ['The jury said', 'In the morning'];
    const single = [];
    for (const p of prompts) single.push((await client.completions.create({ ...base, prompt: p })).choices[0].text);
    const r = await client.completions.create({ ...base, prompt: prompts });
    assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
    assert.deepEqual(r.choices.map((c) => c.text), single);
    const ids = prompts.map((p) => [...Buffer.from(p)]);
    const t = await client.completions.create({ ...base, prompt: ids, n: 2 });
    assert.equal(t.choices.length, 4);  // prompt-major: p0 c0, p0 c1, p1 c0, p1 c1
    assert.equal(t.usage.prompt_tokens, ids[0].length + ids[1].length);
    const streamed = ['', ''];
    for await (const c of await client.completions.create({ ...base, prompt: prompts, stream: true }))
      for (const ch of c.choices) streamed[ch.index] += ch.text;
    assert.deepEqual(streamed, single);
  });

  test('a request without max_tokens runs to the context limit', async () => {
    const r = await client.chat.completions.create({ model: NAME, messages: [{ role: 'user', content: 'Go' }],
      ignore_eos: true, temperature: 0, chat_template_kwargs: { thinking: false } });
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage.prompt_tokens + r.usage.completion_tokens, MAX_LEN);
  });

  test('stream_options.continuous_usage_stats: usage in every chunk', async () => {
    const stream = await client.completions.create({ ...loop, max_tokens: 5, stream: true,
      stream_options: { include_usage: true, continuous_usage_stats: true } });
    let last = -1, n = 0;
    for await (const c of stream) {
      assert.ok(c.usage, 'every chunk has usage');
      assert.ok(c.usage.completion_tokens >= last);
      last = c.usage.completion_tokens;
      n++;
    }
    assert.ok(n >= 3);
    assert.equal(last, 5);
  });

  test('migration: model optional or an alias, unknown fields pass (logged once), /version, /v1/models/{id}', async () => {
    const req = { messages: [{ role: 'user', content: 'hi' }], max_tokens: 2, temperature: 0 };
    const post = (body) => fetch(srv.baseURL + '/chat/completions', { method: 'POST',
      headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    let r = await post(req);
    assert.equal(r.status, 200);
    assert.equal((await r.json()).model, NAME);
    r = await post({ ...req, model: ALIAS, some_future_field: { x: 1 } });
    assert.equal(r.status, 200, await r.clone().text());
    await post({ ...req, some_future_field: 2 });
    const warned = srv.stderr().split('\n').filter((l) => l.includes("'some_future_field'"));
    assert.equal(warned.length, 1, srv.stderr());
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), [NAME, ALIAS]);
    const m = await client.models.retrieve(ALIAS);
    assert.equal(m.id, ALIAS);
    await assert.rejects(client.models.retrieve('nope'), (e) => e.status === 404);
    const v = await fetch(srv.url + '/version');
    assert.equal(v.status, 200);
    assert.match((await v.json()).version, /^\d+\.\d+/);
    await assert.rejects(client.chat.completions.create({ ...req, reasoning_effort: 'low' }),
      (e) => e.status === 400 && e.param === 'reasoning_effort');
  });

  test('/tokenize and /detokenize (vLLM): the ids the endpoints feed the model, and back', async () => {
    const post = async (route, body) => {
      const r = await fetch(srv.url + route, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body) });
      return { status: r.status, body: await r.json() };
    };
    const prompt = 'The quick brown fox, twice: the quick brown fox.';
    let t = await post('/tokenize', { model: NAME, prompt });
    assert.equal(t.status, 200, JSON.stringify(t.body));
    assert.equal(t.body.count, t.body.tokens.length);
    assert.equal(t.body.max_model_len, MAX_LEN);
    assert.equal(t.body.token_strs, null);
    // The same count the completions endpoint reports for that prompt.
    const c = await client.completions.create({ model: NAME, prompt, max_tokens: 1, temperature: 0 });
    assert.equal(c.usage.prompt_tokens, t.body.count);
    // Round trip, and token_strs concatenate to the text.
    let d = await post('/detokenize', { tokens: t.body.tokens });
    assert.equal(d.status, 200);
    assert.equal(d.body.prompt, prompt);
    t = await post('/tokenize', { prompt, return_token_strs: true });
    assert.equal(t.body.token_strs.join(''), prompt);
    // A conversation: the chat endpoint's prompt_tokens, for thinking on and off.
    for (const thinking of [true, false]) {
      const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Where is Paris?' }];
      const tc = await post('/tokenize', { messages, chat_template_kwargs: { thinking } });
      assert.equal(tc.status, 200, JSON.stringify(tc.body));
      const cc = await client.chat.completions.create({ model: NAME, messages, max_tokens: 1, temperature: 0,
        chat_template_kwargs: { thinking } });
      assert.equal(cc.usage.prompt_tokens, tc.body.count);
      // Detokenized, the prompt holds the conversation's text (special tokens kept as text).
      d = await post('/detokenize', { tokens: tc.body.tokens });
      assert.ok(d.body.prompt.includes('Where is Paris?') && d.body.prompt.includes('Be brief.'), d.body.prompt);
    }
    // Refusals naming the field; GET is 405.
    for (const [route, body, param] of [['/tokenize', { prompt, add_special_tokens: true }, 'add_special_tokens'],
      ['/tokenize', { prompt: 42 }, 'prompt'], ['/tokenize', {}, 'prompt'],
      ['/tokenize', { messages: [{ role: 'bogus', content: 'x' }] }, 'messages'],
      ['/detokenize', { tokens: [1, 'a'] }, 'tokens'], ['/detokenize', { tokens: [1 << 30] }, 'tokens'],
      ['/tokenize', { model: 'nope', prompt }, 'model']]) {
      const r = await post(route, body);
      assert.ok(r.status === 400 || r.status === 404, `${route} ${JSON.stringify(body)} -> ${r.status}`);
      assert.ok(String(r.body.error.param).startsWith(param), JSON.stringify(r.body));
    }
    assert.equal((await fetch(srv.url + '/tokenize')).status, 405);
  });

  test('405 for a wrong method, 415 for a wrong Content-Type, CORS for --allowed-origins', async () => {
    let r = await fetch(srv.baseURL + '/chat/completions');
    assert.equal(r.status, 405);
    assert.equal(r.headers.get('allow'), 'POST');
    assert.equal((await r.json()).error.code, 'method_not_allowed');
    r = await fetch(srv.baseURL + '/models', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    assert.equal(r.status, 405);
    for (const ct of ['text/plain', 'application/x-www-form-urlencoded', '']) {
      r = await fetch(srv.baseURL + '/completions', { method: 'POST', headers: ct ? { 'content-type': ct } : {},
        body: JSON.stringify({ prompt: 'x', max_tokens: 1 }) });
      assert.equal(r.status, 415, ct);
    }
    r = await fetch(srv.baseURL + '/completions', { method: 'POST', headers: { 'content-type': 'Application/JSON; charset=utf-8' },
      body: JSON.stringify({ prompt: 'x', max_tokens: 1 }) });
    assert.equal(r.status, 200);
    // Preflight: allowed origin -> 200 with the CORS headers; another origin -> 400.
    const pre = (origin) => fetch(srv.baseURL + '/chat/completions', { method: 'OPTIONS', headers: { Origin: origin,
      'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization,content-type' } });
    r = await pre(ORIGIN);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('access-control-allow-origin'), ORIGIN);
    assert.match(r.headers.get('access-control-allow-methods'), /POST/);
    assert.equal(r.headers.get('access-control-allow-headers'), 'authorization,content-type');
    r = await pre('https://evil.example');
    assert.equal(r.status, 400);
    assert.equal(r.headers.get('access-control-allow-origin'), null);
    r = await fetch(srv.baseURL + '/models', { headers: { Origin: ORIGIN } });
    assert.equal(r.headers.get('access-control-allow-origin'), ORIGIN);
    r = await fetch(srv.baseURL + '/models', { headers: { Origin: 'https://evil.example' } });
    assert.equal(r.headers.get('access-control-allow-origin'), null);
  });

  test('metrics: vLLM names, a stop string counts as stop, route templates as path labels', async () => {
    const base = (await complete({})).text;
    const stop = base.slice(4, 8);
    const before = await (await fetch(srv.url + '/metrics')).text();
    const count = (t, k) => {
      const line = t.split('\n').find((l) => l.startsWith(k + ' '));
      return line ? Number(line.slice(k.length + 1)) : 0;
    };
    const key = `vllm:request_success_total{finished_reason="stop",model_name="${NAME}"}`;
    const r = await complete({ stop: [stop] });
    assert.equal(r.finish_reason, 'stop');
    for (let i = 0; i < 3; i++) await fetch(srv.baseURL + `/models/scan-${i}`);
    // The stop is counted once the scheduler retires the sequence (its next step), or at once
    // when the scheduler ran it to its length first; wait as long as a loaded machine needs.
    let after;
    for (let i = 0; i < 600; i++) {
      after = await (await fetch(srv.url + '/metrics')).text();
      if (count(after, key) > count(before, key)) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    assert.equal(count(after, key), count(before, key) + 1, 'counted as stop, not abort');
    for (const k of ['vllm:num_requests_running', 'vllm:num_requests_waiting', 'vllm:prompt_tokens_total',
      'vllm:generation_tokens_total'])
      assert.match(after, new RegExp('^' + k + '\\{model_name="' + NAME + '"\\} ', 'm'), k);
    assert.match(after, /^vllm:time_to_first_token_seconds_count\{model_name=/m);
    assert.match(after, /^vllm:e2e_request_latency_seconds_count\{model_name=/m);
    assert.match(after, /sickle_http_requests_total\{path="\/v1\/models\/\{id\}",status="404"\} \d+/);
    assert.ok(!after.includes('scan-'), 'raw paths are not labels');
  });
});

describe('tool-call parsing switches (scripted engine)', () => {
  const TWO_CALLS = '<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>' +
    '{"city": "Paris"}<|tool_call_end|><|tool_call_begin|>functions.get_weather:1<|tool_call_argument_begin|>' +
    '{"city": "Rome"}<|tool_call_end|><|tool_calls_section_end|>';
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object',
    properties: { city: { type: 'string' } } } } }];
  let srv, client, dir;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sickle-api-script-'));
    fs.writeFileSync(path.join(dir, 'script.json'), JSON.stringify([{ when: 'two cities', reply: TWO_CALLS }]));
    srv = await startServer(MODEL, ['--served-model-name', NAME, '--script', path.join(dir, 'script.json'),
      '--max-model-len', '4096', '--strict-api']);
    client = openaiClient({ baseURL: srv.baseURL, apiKey: 'none' });
  });
  after(async () => {
    await srv.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const ask = (extra) => client.chat.completions.create({ model: NAME, messages: [{ role: 'user',
    content: 'Weather in two cities?' }], chat_template_kwargs: { thinking: false }, ...extra });

  test('tools: both calls; parallel_tool_calls false: the first only', async () => {
    const all = await ask({ tools });
    assert.equal(all.choices[0].message.tool_calls.length, 2);
    const first = await ask({ tools, parallel_tool_calls: false });
    assert.equal(first.choices[0].finish_reason, 'tool_calls');
    assert.equal(first.choices[0].message.tool_calls.length, 1);
    assert.equal(first.choices[0].message.tool_calls[0].function.arguments, '{"city": "Paris"}');
  });

  test('tool_choice none, or no tools: no tool_calls, no markers in content', async () => {
    for (const extra of [{ tools, tool_choice: 'none' }, {}]) {
      const r = await ask(extra);
      const m = r.choices[0].message;
      assert.ok(!m.tool_calls || m.tool_calls.length === 0, JSON.stringify(extra));
      assert.ok(!m.content.includes('<|'), m.content);
      assert.ok(m.content.includes('{"city": "Paris"}'), m.content);
      assert.equal(r.choices[0].finish_reason, 'stop');
    }
  });

  test('--strict-api refuses unknown fields', async () => {
    await assert.rejects(ask({ some_future_field: 1 }), (e) => e.status === 400 && e.param === 'some_future_field');
  });
});

describe('the checkpoint\'s chat template with per-request chat_template_kwargs', () => {
  let srv, dir;
  // Every key of chat_template_kwargs reaches the template; thinking follows the request too.
  const TEMPLATE = '{%- for m in messages -%}<|im_user|>{{ m.content }}<|im_end|>{%- endfor -%}' +
    '[greeting={{ greeting | default("none") }} thinking={{ thinking }}]<|im_assistant|>assistant<|im_middle|>';
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sickle-kwargs-'));
    srv = await startServer(modelWithTemplate(MODEL, dir, TEMPLATE), ['--served-model-name', NAME]);
  });
  after(async () => {
    assert.equal(await srv.stop(), 0);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const render = async (kwargs) => {
    const post = (route, body) => fetch(srv.url + route, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body) }).then((r) => r.json());
    const t = await post('/tokenize', { messages: [{ role: 'user', content: 'hi' }], chat_template_kwargs: kwargs });
    return (await post('/detokenize', { tokens: t.tokens })).prompt;
  };
  test('kwargs reach the template; thinking is the request\'s', async () => {
    assert.match(await render({ greeting: 'Ahoy' }), /\[greeting=Ahoy thinking=(True|False)\]/);
    assert.match(await render({}), /\[greeting=none /);
    assert.match(await render({ thinking: false }), /thinking=False\]/);
    assert.match(await render({ thinking: true, greeting: 'Hi' }), /\[greeting=Hi thinking=True\]/);
    // The chat endpoint renders the same prompt: equal prompt token counts.
    const client = openaiClient({ baseURL: srv.baseURL, apiKey: 'none' });
    const r = await client.chat.completions.create({ model: NAME, messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 1, temperature: 0, chat_template_kwargs: { greeting: 'a much longer greeting than before' } });
    const t = await fetch(srv.url + '/tokenize', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }],
        chat_template_kwargs: { greeting: 'a much longer greeting than before' } }) }).then((x) => x.json());
    assert.equal(r.usage.prompt_tokens, t.count);
  });
});
