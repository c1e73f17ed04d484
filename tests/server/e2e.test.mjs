// End-to-end tests of `sickle serve` driven by the official `openai` npm client (node --test).
//
// Two servers: the real engine on the demo model (models/brown-kimi, or a synth tiny-kimi with a
// generated tokenizer) for generation, batching, usage, stops and errors; and a scripted engine
// (`--script`) that emits reasoning and Kimi tool-call tokens on cue, for the parsing contract
// (a small model never produces them by itself). Both use the real tokenizer, chat template,
// scheduler and HTTP front end.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { startServer, servableModel, getMetrics, metricValue, rssBytes, openaiClient, builtinFormatModel } from './lib.mjs';

const major = Number(process.versions.node.split('.')[0]);
test('node version satisfies openai@4 (Node >= 18)', () => {
  assert.ok(major >= 18, `node ${process.versions.node} is too old for openai@4`);
});

const MODEL = servableModel({ cacheDir: process.env.SICKLE_BUILD_DIR || os.tmpdir() });
const NAME = 'test-model';
const MAX_LEN = 256;

// ------------------------------------------------------------------------------------------
describe('real engine', () => {
  let srv, client;
  before(async () => {
    srv = await startServer(MODEL, ['--served-model-name', NAME, '--max-model-len', String(MAX_LEN),
      '--max-num-seqs', '8', '--max-body-mb', '1', '--threads', '2']);
    client = openaiClient({ baseURL: srv.baseURL, apiKey: 'none', timeout: 120000 });
  });
  after(async () => {
    const code = await srv.stop();
    assert.equal(code, 0, 'server exits cleanly on SIGTERM');
  });

  const msgs = (q) => [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: q }];
  const greedy = { temperature: 0, chat_template_kwargs: { thinking: false } };

  test('GET /v1/models and /health', async () => {
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), [NAME]);
    const h = await fetch(srv.url + '/health');
    assert.equal(h.status, 200);
  });

  test('chat: non-streaming == streaming, usage counted', async () => {
    const req = { model: NAME, messages: msgs('Tell me about the weather.'), max_tokens: 12, ...greedy };
    const a = await client.chat.completions.create(req);
    assert.equal(a.object, 'chat.completion');
    assert.equal(a.choices.length, 1);
    const m = a.choices[0].message;
    assert.equal(m.role, 'assistant');
    assert.equal(typeof m.content, 'string');
    assert.ok(['stop', 'length'].includes(a.choices[0].finish_reason));
    assert.ok(a.usage.prompt_tokens > 5);
    assert.ok(a.usage.completion_tokens >= 1 && a.usage.completion_tokens <= 12);
    assert.equal(a.usage.total_tokens, a.usage.prompt_tokens + a.usage.completion_tokens);
    if (a.choices[0].finish_reason === 'length') assert.equal(a.usage.completion_tokens, 12);

    const stream = await client.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
    let text = '', finish = null, usage = null, first = true, nChunks = 0;
    for await (const chunk of stream) {
      nChunks++;
      if (chunk.usage) { usage = chunk.usage; assert.equal(chunk.choices.length, 0); continue; }
      assert.equal(chunk.object, 'chat.completion.chunk');
      const c = chunk.choices[0];
      if (first) { assert.equal(c.delta.role, 'assistant'); first = false; }
      text += c.delta.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
    assert.ok(nChunks >= 3);
    assert.equal(text, m.content, 'streamed text equals the non-streamed text (greedy)');
    assert.equal(finish, a.choices[0].finish_reason);
    // Same counts (the streamed request may also report prefix-cache hits).
    for (const k of ['prompt_tokens', 'completion_tokens', 'total_tokens']) assert.equal(usage[k], a.usage[k], k);
  });

  test('completions: non-streaming == streaming, echo', async () => {
    const req = { model: NAME, prompt: 'The jury said', max_tokens: 10, temperature: 0 };
    const a = await client.completions.create(req);
    assert.equal(a.object, 'text_completion');
    assert.equal(a.usage.completion_tokens <= 10, true);
    let text = '';
    for await (const c of await client.completions.create({ ...req, stream: true })) text += c.choices[0]?.text ?? '';
    assert.equal(text, a.choices[0].text);
    const e = await client.completions.create({ ...req, echo: true });
    assert.equal(e.choices[0].text, 'The jury said' + a.choices[0].text);
  });

  test('stop sequences cut the text before the stop string', async () => {
    const req = { model: NAME, messages: msgs('Write a long story.'), max_tokens: 40, ...greedy };
    const full = (await client.chat.completions.create(req)).choices[0].message.content;
    // A stop string taken from the middle of the greedy output, at its first occurrence.
    let k = Math.floor(full.length / 2), stop = null;
    for (; k < full.length - 2; k++) {
      const s = full.slice(k, k + 2);
      if (s.trim().length === 2 && !s.includes('\uFFFD') && full.indexOf(s) === k) { stop = s; break; }
    }
    if (!stop) return;  // a degenerate output with no usable stop string
    const r = await client.chat.completions.create({ ...req, stop: [stop, 'zzzzzz'] });
    assert.equal(r.choices[0].message.content, full.slice(0, k));
    assert.equal(r.choices[0].finish_reason, 'stop');
    let text = '';
    for await (const c of await client.chat.completions.create({ ...req, stop, stream: true }))
      text += c.choices[0]?.delta?.content ?? '';
    assert.equal(text, full.slice(0, k));
  });

  test('logprobs: one entry per token, top_logprobs sorted, chosen token first when greedy', async () => {
    const r = await client.chat.completions.create({ model: NAME, messages: msgs('Hi'), max_tokens: 6, logprobs: true,
      top_logprobs: 3, ...greedy });
    const lp = r.choices[0].logprobs.content;
    const n = r.usage.completion_tokens - (r.choices[0].finish_reason === 'stop' ? 1 : 0);
    assert.equal(lp.length, n);
    for (const t of lp) {
      assert.ok(t.logprob <= 0);
      assert.equal(t.top_logprobs.length, 3);
      assert.ok(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob);
      assert.equal(t.top_logprobs[0].logprob, t.logprob);
      assert.deepEqual(Buffer.from(t.bytes).length, t.bytes.length);
    }
  });

  test('greedy output alone == among 7 concurrent requests', async () => {
    const prompts = ['Once upon a time', 'The committee', 'In the morning', 'He said that', 'Prices rose',
      'The church', 'A new law', 'Scientists found'];
    const ask = (q) => client.chat.completions.create({ model: NAME, messages: msgs(q), max_tokens: 16, ...greedy })
      .then((r) => r.choices[0].message.content);
    const alone = [];
    for (const q of prompts) alone.push(await ask(q));
    const before = await getMetrics(srv.url);
    const together = await Promise.all(prompts.map(ask));
    assert.deepEqual(together, alone);
    const m = await getMetrics(srv.url);
    assert.ok(metricValue(m, 'sickle_generation_tokens_total') > metricValue(before, 'sickle_generation_tokens_total'));
  });

  test('seeded sampling is reproducible', async () => {
    const req = { model: NAME, messages: msgs('Go on'), max_tokens: 10, temperature: 1.0, seed: 1234,
      chat_template_kwargs: { thinking: false } };
    const a = await client.chat.completions.create(req);
    const b = await client.chat.completions.create(req);
    assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  });

  test('bad requests get OpenAI errors with the right status, and the server keeps serving', async () => {
    const raw = async (body, headers = {}) => {
      const r = await fetch(srv.baseURL + '/chat/completions', { method: 'POST', body,
        headers: { 'content-type': 'application/json', ...headers } });
      return { status: r.status, body: await r.json() };
    };
    let r = await raw('{"model": "x", "messages": [');
    assert.equal(r.status, 400);
    assert.equal(r.body.error.type, 'invalid_request_error');
    assert.equal(typeof r.body.error.message, 'string');

    await assert.rejects(client.chat.completions.create({ model: NAME, messages: msgs('x'), temperature: 'hot' }),
      (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'temperature');
    await assert.rejects(client.chat.completions.create({ model: NAME, messages: 'hi' }),
      (e) => e.status === 400 && e.param === 'messages');
    await assert.rejects(client.chat.completions.create({ model: NAME, messages: msgs('x'), n: 0 }),
      (e) => e.status === 400 && e.param === 'n');
    await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: msgs('x') }),
      (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === 'model_not_found');
    await assert.rejects(client.chat.completions.create({ model: NAME, messages: msgs('x'), max_tokens: 'ten' }),
      (e) => e.status === 400 && e.param === 'max_tokens');
    // Too long for --max-model-len.
    await assert.rejects(client.chat.completions.create({ model: NAME, messages: msgs('word '.repeat(400)) }),
      (e) => e.status === 400 && e.code === 'context_length_exceeded');
    await assert.rejects(client.chat.completions.create({ model: NAME, messages: msgs('x'), max_tokens: MAX_LEN }),
      (e) => e.status === 400 && e.code === 'context_length_exceeded');
    // Over --max-body-mb 1.
    r = await raw(JSON.stringify({ model: NAME, messages: msgs('a'.repeat(1100000)) }));
    assert.equal(r.status, 413);
    assert.equal(r.body.error.code, 'request_too_large');
    // Unknown path.
    const u = await fetch(srv.baseURL + '/engines');
    assert.equal(u.status, 404);
    // Still serving.
    const ok = await client.chat.completions.create({ model: NAME, messages: msgs('still there?'), max_tokens: 3, ...greedy });
    assert.ok(ok.choices[0].message.content !== undefined);
    const m = await getMetrics(srv.url);
    assert.ok(metricValue(m, 'sickle_http_requests_total{path="/v1/chat/completions",status="400"}') >= 5);
  });

  test('a client that disconnects mid-stream frees its sequence', async () => {
    const ac = new AbortController();
    const before = metricValue(await getMetrics(srv.url), 'sickle_request_success_total{finished_reason="abort"}') || 0;
    const stream = await client.chat.completions.create({ model: NAME, messages: msgs('Count forever'),
      max_tokens: 200, stream: true, ignore_eos: true, ...greedy }, { signal: ac.signal });
    let n = 0;
    // (openai@4 ends the iteration quietly on abort.)
    try {
      for await (const c of stream) { if (++n === 1) ac.abort(); }
    } catch (e) { assert.equal(e.name, 'AbortError'); }
    let running = 1, m = '';
    for (let i = 0; i < 100 && running > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      m = await getMetrics(srv.url);
      running = metricValue(m, 'sickle_num_requests_running');
    }
    assert.equal(running, 0);
    assert.ok(metricValue(m, 'sickle_request_success_total{finished_reason="abort"}') >= before + 1,
      'the server saw the disconnect and aborted the sequence');
    for (const h of ['sickle_time_to_first_token_seconds_count', 'sickle_inter_token_latency_seconds_count',
      'sickle_kv_cache_usage_perc', 'sickle_num_requests_waiting', 'sickle_prompt_tokens_total'])
      assert.ok(Number.isFinite(metricValue(m, h)), h);
  });

  test('prefix cache: a repeated conversation reuses its prompt', async () => {
    const req = { model: NAME, messages: msgs('A shared and rather long system prompt. '.repeat(3)), max_tokens: 2, ...greedy };
    await client.chat.completions.create(req);
    const r = await client.chat.completions.create(req);
    assert.ok(r.usage.prompt_tokens_details.cached_tokens >= r.usage.prompt_tokens - 1);
  });
});

// ------------------------------------------------------------------------------------------
describe('scripted engine (parsing contract)', () => {
  const TOOL_REPLY = 'The user wants the weather; I will call the tool.</think>' +
    '<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>' +
    '{"city": "Paris", "unit": "celsius"}<|tool_call_end|><|tool_calls_section_end|>';
  // Replies that continue a tool-call opening (tool_choice required / named: the grammar makes
  // the reply begin with the markup; the script's tokens are taken where the grammar allows
  // them): without forcing they are not tool calls at all.
  const CALL_END = '<|tool_call_end|><|tool_calls_section_end|>';
  const rules = [
    { when: 'rainy, 12C', reply: '{"city": "Hamburg"}' + CALL_END },
    { when: 'weather in Berlin', reply: '{"city": "Berlin"}' + CALL_END },
    { when: 'time in Tokyo', reply: 'functions.get_time:0<|tool_call_argument_begin|>{"tz": "Asia/Tokyo"}' + CALL_END },
    { when: '22C and sunny', reply: 'Got the result.</think>It is 22C and sunny in Paris.' },
    { when: 'weather in Paris', reply: TOOL_REPLY },
    { when: 'capital of France', reply: 'Simple geography question.</think>The capital of France is Paris.' },
    { when: 'no thinking please', reply: 'Plain answer.' },
    { when: 'say stop', reply: 'Hello world. STOP and this must not appear.' },
  ];
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather for a city',
    parameters: { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string' } }, required: ['city'] } } }];
  const bothTools = [...tools, { type: 'function', function: { name: 'get_time', description: 'Time in a zone',
    parameters: { type: 'object', properties: { tz: { type: 'string' } } } } }];
  // A streamed chat as the client sees it: tool calls accumulated from their deltas.
  async function streamed(req) {
    const calls = [];
    let finish = null, content = '', reasoning = '', nFirst = 0;
    for await (const chunk of await client.chat.completions.create({ ...req, stream: true })) {
      const c = chunk.choices[0];
      if (!c) continue;
      content += c.delta.content ?? '';
      reasoning += c.delta.reasoning_content ?? '';
      for (const t of c.delta.tool_calls ?? []) {
        if (t.id) {
          nFirst++;
          assert.equal(t.index, calls.length);
          assert.equal(t.type, 'function');
          calls.push({ id: t.id, type: 'function', function: { name: t.function.name, arguments: t.function.arguments ?? '' } });
        } else {
          calls[t.index].function.arguments += t.function.arguments;
        }
      }
      if (c.finish_reason) finish = c.finish_reason;
    }
    return { calls, finish, content, reasoning, nFirst };
  }
  let srv, client, dir;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sickle-script-'));
    fs.writeFileSync(path.join(dir, 'script.json'), JSON.stringify(rules));
    srv = await startServer(builtinFormatModel(MODEL, dir), ['--served-model-name', NAME, '--script', path.join(dir, 'script.json'),
      '--api-key', 'sekrit', '--max-model-len', '4096']);
    client = openaiClient({ baseURL: srv.baseURL, apiKey: 'sekrit' });
  });
  after(async () => {
    await srv.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('api key: missing or wrong -> 401, right -> 200', async () => {
    const bad = openaiClient({ baseURL: srv.baseURL, apiKey: 'wrong' });
    await assert.rejects(bad.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
    const r = await fetch(srv.baseURL + '/models');
    assert.equal(r.status, 401);
    assert.equal((await r.json()).error.code, 'invalid_api_key');
    assert.equal((await client.models.list()).data[0].id, NAME);
  });

  test('reasoning goes to reasoning_content, not content', async () => {
    const req = { model: NAME, messages: [{ role: 'user', content: 'What is the capital of France?' }] };
    const r = await client.chat.completions.create(req);
    assert.equal(r.choices[0].message.reasoning_content, 'Simple geography question.');
    assert.equal(r.choices[0].message.content, 'The capital of France is Paris.');
    assert.equal(r.choices[0].finish_reason, 'stop');
    let reasoning = '', content = '';
    for await (const c of await client.chat.completions.create({ ...req, stream: true })) {
      const d = c.choices[0]?.delta ?? {};
      reasoning += d.reasoning_content ?? '';
      content += d.content ?? '';
      assert.ok(!(d.content ?? '').includes('<'), 'no marker text in content');
    }
    assert.equal(reasoning, 'Simple geography question.');
    assert.equal(content, 'The capital of France is Paris.');
  });

  test('thinking off per request (chat_template_kwargs)', async () => {
    const r = await client.chat.completions.create({ model: NAME, chat_template_kwargs: { thinking: false },
      messages: [{ role: 'user', content: 'no thinking please' }] });
    assert.equal(r.choices[0].message.content, 'Plain answer.');
    assert.equal(r.choices[0].message.reasoning_content, undefined);
  });

  test('tool call round trip (non-streaming)', async () => {
    const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
    const r = await client.chat.completions.create({ model: NAME, messages, tools, tool_choice: 'auto' });
    const c = r.choices[0];
    assert.equal(c.finish_reason, 'tool_calls');
    assert.equal(c.message.reasoning_content, 'The user wants the weather; I will call the tool.');
    assert.ok(c.message.content === null || c.message.content === '');
    assert.equal(c.message.tool_calls.length, 1);
    const call = c.message.tool_calls[0];
    assert.equal(call.id, 'functions.get_weather:0');
    assert.equal(call.type, 'function');
    assert.equal(call.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris', unit: 'celsius' });
    // Send the result back: the next turn answers from it.
    messages.push(c.message);
    messages.push({ role: 'tool', tool_call_id: call.id, content: '22C and sunny' });
    const r2 = await client.chat.completions.create({ model: NAME, messages, tools });
    assert.equal(r2.choices[0].message.content, 'It is 22C and sunny in Paris.');
    assert.equal(r2.choices[0].finish_reason, 'stop');
  });

  test('tool call streaming: deltas as OpenAI sends them, no markers in content', async () => {
    const stream = await client.chat.completions.create({ model: NAME, tools, stream: true,
      messages: [{ role: 'user', content: 'What is the weather in Paris?' }] });
    const calls = [];
    let finish = null, content = '';
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (!c) continue;
      content += c.delta.content ?? '';
      for (const t of c.delta.tool_calls ?? []) {
        if (t.id) {
          assert.equal(t.index, calls.length);
          assert.equal(t.type, 'function');
          calls.push({ id: t.id, name: t.function.name, arguments: t.function.arguments ?? '' });
        } else {
          calls[t.index].arguments += t.function.arguments;
        }
      }
      if (c.finish_reason) finish = c.finish_reason;
    }
    assert.equal(content, '');
    assert.equal(finish, 'tool_calls');
    assert.equal(calls.length, 1);
    assert.equal(calls[0].id, 'functions.get_weather:0');
    assert.equal(calls[0].name, 'get_weather');
    assert.deepEqual(JSON.parse(calls[0].arguments), { city: 'Paris', unit: 'celsius' });
    // The SDK's own accumulator agrees.
    const runner = client.beta.chat.completions.stream({ model: NAME, tools,
      messages: [{ role: 'user', content: 'What is the weather in Paris?' }] });
    const final = await runner.finalChatCompletion();
    assert.equal(final.choices[0].message.tool_calls[0].function.name, 'get_weather');
  });

  test('tool_choice naming a function forces a call to it (ids count earlier calls)', async () => {
    const messages = [{ role: 'user', content: 'What is the weather in Berlin?' }];
    // Left to itself, the model does not call a tool here.
    const free = await client.chat.completions.create({ model: NAME, messages, tools: bothTools });
    assert.equal(free.choices[0].message.tool_calls, undefined);
    assert.equal(free.choices[0].finish_reason, 'stop');

    const req = { model: NAME, messages, tools: bothTools, tool_choice: { type: 'function', function: { name: 'get_weather' } } };
    const r = await client.chat.completions.create(req);
    const c = r.choices[0];
    assert.equal(c.finish_reason, 'tool_calls');
    assert.equal(c.message.content, null);
    assert.equal(c.message.reasoning_content, undefined, 'a forced call skips reasoning');
    assert.equal(c.message.tool_calls.length, 1);
    const call = c.message.tool_calls[0];
    assert.equal(call.id, 'functions.get_weather:0');
    assert.equal(call.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Berlin' });
    // The grammar wrote the markup the script lacks (section, call opening, id), and the
    // script's arguments fit the tool's schema: the whole reply is generated tokens.
    assert.ok(r.usage.completion_tokens > free.usage.completion_tokens, JSON.stringify([r.usage, free.usage]));

    const s = await streamed(req);
    assert.equal(s.finish, 'tool_calls');
    assert.equal(s.content, '');
    assert.equal(s.reasoning, '');
    assert.equal(s.nFirst, 1);
    assert.deepEqual(s.calls, c.message.tool_calls);
    const final = await client.beta.chat.completions.stream(req).finalChatCompletion();
    assert.deepEqual(final.choices[0].message.tool_calls.map((t) => [t.id, t.function.name, t.function.arguments]),
      [[call.id, 'get_weather', call.function.arguments]]);

    // Next turn, forced again: Kimi numbers calls over the conversation.
    messages.push(c.message, { role: 'tool', tool_call_id: call.id, content: 'rainy, 12C' });
    const r2 = await client.chat.completions.create({ ...req, messages });
    assert.equal(r2.choices[0].message.tool_calls[0].id, 'functions.get_weather:1');
    assert.deepEqual(JSON.parse(r2.choices[0].message.tool_calls[0].function.arguments), { city: 'Hamburg' });
  });

  test('tool_choice required forces a call; the model picks the function', async () => {
    const messages = [{ role: 'user', content: 'What is the time in Tokyo?' }];
    const free = await client.chat.completions.create({ model: NAME, messages, tools: bothTools, tool_choice: 'auto' });
    assert.equal(free.choices[0].message.tool_calls, undefined);

    const req = { model: NAME, messages, tools: bothTools, tool_choice: 'required' };
    const r = await client.chat.completions.create(req);
    const c = r.choices[0];
    assert.equal(c.finish_reason, 'tool_calls');
    assert.equal(c.message.content, null);
    assert.equal(c.message.tool_calls.length, 1);
    assert.equal(c.message.tool_calls[0].id, 'functions.get_time:0');
    assert.equal(c.message.tool_calls[0].function.name, 'get_time');
    assert.deepEqual(JSON.parse(c.message.tool_calls[0].function.arguments), { tz: 'Asia/Tokyo' });
    const s = await streamed(req);
    assert.equal(s.finish, 'tool_calls');
    assert.equal(s.content, '');
    assert.deepEqual(s.calls, c.message.tool_calls);
  });

  test('stop string (split across tokens) ends generation, usage included', async () => {
    const req = { model: NAME, messages: [{ role: 'user', content: 'say stop' }], stop: ['STOP'],
      chat_template_kwargs: { thinking: false } };
    const r = await client.chat.completions.create(req);
    assert.equal(r.choices[0].message.content, 'Hello world. ');
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal(r.choices[0].stop_reason, 'STOP', "vLLM's stop_reason: the stop string");
    let text = '', usage = null, stopReason;
    for await (const c of await client.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } })) {
      text += c.choices[0]?.delta?.content ?? '';
      if (c.choices[0]?.finish_reason) stopReason = c.choices[0].stop_reason;
      if (c.usage) usage = c.usage;
    }
    assert.equal(text, 'Hello world. ');
    assert.equal(stopReason, 'STOP');
    assert.ok(usage && usage.completion_tokens > 0 && usage.prompt_tokens > 0);
  });

  test('stop_reason: the stop token id that ended the choice, null at the end of turn', async () => {
    const t = await (await fetch(srv.url + '/tokenize', { method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: 'Bearer sekrit' },
      body: JSON.stringify({ prompt: 'Hello world.', return_token_strs: true }) })).json();
    const at = t.token_strs.findIndex((x) => x.includes('w'));
    const world = t.tokens[at];
    const req = { model: NAME, messages: [{ role: 'user', content: 'say stop' }], stop_token_ids: [world],
      chat_template_kwargs: { thinking: false } };
    const r = await client.chat.completions.create(req);
    assert.equal(r.choices[0].message.content, t.token_strs.slice(0, at).join(''));
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal(r.choices[0].stop_reason, world);
    const c = await client.completions.create({ model: NAME, prompt: 'say stop <|im_assistant|>assistant<|im_middle|>',
      stop_token_ids: [world], max_tokens: 20 });
    assert.equal(c.choices[0].stop_reason, world);
    const plain = await client.chat.completions.create({ ...req, stop_token_ids: undefined });
    assert.equal(plain.choices[0].finish_reason, 'stop');
    assert.equal(plain.choices[0].stop_reason, null, 'ended by the model\'s own end of turn');
  });
});

// ------------------------------------------------------------------------------------------
// Hostile clients (issue 21): bodies bounded whatever their framing, the key checked before a
// body byte is read, /metrics behind the key. The server's peak RSS (VmHWM) is the witness.
describe('hostile clients', () => {
  let srv, dir, port;
  const KEY = 'sekrit';
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sickle-hostile-'));
    fs.writeFileSync(path.join(dir, 'script.json'), JSON.stringify([{ when: 'hello', reply: 'Hi.' }]));
    srv = await startServer(MODEL, ['--served-model-name', NAME, '--script', path.join(dir, 'script.json'),
      '--api-key', KEY, '--max-body-mb', '1']);
    port = Number(new URL(srv.url).port);
  });
  after(async () => {
    await srv.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  // POSTs a chunked body of up to `total` bytes (64 KiB chunks) until the server answers;
  // resolves with the status, the response body and the bytes sent by then.
  function chunkedPost(headers, total) {
    return new Promise((resolve, reject) => {
      let sent = 0, answered = false;
      const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/v1/chat/completions',
        headers: { 'Content-Type': 'application/json', ...headers } });
      const timer = setTimeout(() => { req.destroy(); reject(new Error(`no answer after ${sent} bytes`)); }, 60000);
      req.on('response', (res) => {
        answered = true;
        let body = '';
        res.on('data', (d) => { body += d; });
        res.on('end', () => { clearTimeout(timer); req.destroy(); resolve({ status: res.statusCode, body, sent }); });
      });
      req.on('error', (e) => { if (!answered) { clearTimeout(timer); reject(e); } });
      const chunk = Buffer.alloc(64 << 10, 0x20);
      (async () => {
        while (!answered && sent < total) {
          sent += chunk.length;
          if (!req.write(chunk)) await new Promise((r) => { req.once('drain', r); req.once('close', r); });
        }
        if (!answered) req.end();
      })().catch(() => {});
    });
  }
  const peak = () => rssBytes(srv.proc.pid, 'VmHWM');

  test('chunked 50 MB against a 1 MB limit: 413 while sending, peak RSS grows < 10 MB', async (t) => {
    const before = peak();
    const r = await chunkedPost({ Authorization: `Bearer ${KEY}` }, 50 << 20);
    assert.equal(r.status, 413, r.body);
    assert.equal(JSON.parse(r.body).error.code, 'request_too_large');
    const grew = peak() - before;
    t.diagnostic(`answered after ${(r.sent / 2 ** 20).toFixed(1)} MiB sent; peak RSS +${(grew / 2 ** 20).toFixed(2)} MiB`);
    assert.ok(grew < 10 << 20, `server peak RSS grew ${(grew / 2 ** 20).toFixed(1)} MB`);
  });

  test('300 MiB without the key: 401 before the body is read, peak RSS grows < 10 MB', async (t) => {
    const before = peak();
    const r = await chunkedPost({}, 300 << 20);
    assert.equal(r.status, 401, r.body);
    assert.ok(r.sent < 100 << 20, `answered only after ${r.sent} bytes`);
    const grew = peak() - before;
    t.diagnostic(`answered after ${(r.sent / 2 ** 20).toFixed(1)} MiB sent; peak RSS +${(grew / 2 ** 20).toFixed(2)} MiB`);
    assert.ok(grew < 10 << 20, `server peak RSS grew ${(grew / 2 ** 20).toFixed(1)} MB`);
  });

  test('auth scheme is case-insensitive; /metrics needs the key; the server still serves', async () => {
    for (const scheme of ['bearer', 'BEARER', 'Bearer']) {
      const r = await fetch(srv.baseURL + '/models', { headers: { Authorization: `${scheme} ${KEY}` } });
      assert.equal(r.status, 200, scheme);
    }
    assert.equal((await fetch(srv.url + '/metrics')).status, 401);
    const m = await getMetrics(srv.url, KEY);
    assert.ok(metricValue(m, 'sickle_http_requests_total{path="/v1/chat/completions",status="413"}') >= 1, m);
    const client = openaiClient({ baseURL: srv.baseURL, apiKey: KEY });
    const c = await client.chat.completions.create({ model: NAME, messages: [{ role: 'user', content: 'hello' }],
      chat_template_kwargs: { thinking: false } });
    assert.equal(c.choices[0].message.content, 'Hi.');
  });
});

// ------------------------------------------------------------------------------------------
// `serve --chat-template FILE` (vLLM's flag) with a template whose generation prompt ends
// inside an open reasoning block, "<think>\n", as Qwen3's and Kimi-Thinking's do: the file
// replaces the model's own template, and the reply starts as reasoning (issue 14).
describe('--chat-template FILE ending in "<think>\\n" (scripted engine)', () => {
  const TEMPLATE = '{% for m in messages %}<|im_{{ m.role }}|>{{ m.role }}<|im_middle|>{{ m.content }}<|im_end|>' +
    '{% endfor %}{% if add_generation_prompt %}<|im_assistant|>assistant<|im_middle|><think>\n{% endif %}';
  let srv, client, dir;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sickle-think-tail-'));
    fs.writeFileSync(path.join(dir, 'script.json'), JSON.stringify([
      { when: 'capital of France', reply: 'Simple geography question.</think>The capital of France is Paris.' }]));
    fs.writeFileSync(path.join(dir, 'think.jinja'), TEMPLATE);
    srv = await startServer(MODEL, ['--served-model-name', NAME, '--script', path.join(dir, 'script.json'),
      '--chat-template', path.join(dir, 'think.jinja'), '--max-model-len', '4096']);
    client = openaiClient({ baseURL: srv.baseURL, apiKey: 'none' });
  });
  after(async () => {
    await srv.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const messages = [{ role: 'user', content: 'What is the capital of France?' }];

  test('the file, not the checkpoint template, renders the prompt', async () => {
    const r = await fetch(srv.url + '/tokenize', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: NAME, messages, return_token_strs: true }) });
    assert.equal(r.status, 200);
    const t = await r.json();
    assert.equal(t.token_strs.join(''),
      '<|im_user|>user<|im_middle|>What is the capital of France?<|im_end|><|im_assistant|>assistant<|im_middle|><think>\n');
    assert.deepEqual(t.token_strs.slice(-2), ['<think>', '\n']);
  });

  async function tokenized(body) {
    const r = await fetch(srv.url + '/tokenize', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: NAME, return_token_strs: true, ...body }) });
    return { status: r.status, body: await r.json() };
  }

  test('add_generation_prompt false and continue_final_message (vLLM / transformers semantics)', async () => {
    const conv = '<|im_user|>user<|im_middle|>What is the capital of France?<|im_end|>';
    const noGen = await tokenized({ messages, add_generation_prompt: false });
    assert.equal(noGen.status, 200);
    assert.equal(noGen.body.token_strs.join(''), conv);
    // The reply continues the final message: the text is cut right after its content, before
    // the template's end of turn.
    const partial = [...messages, { role: 'assistant', content: 'The capital is' }];
    const cont = await tokenized({ messages: partial, add_generation_prompt: false, continue_final_message: true });
    assert.equal(cont.status, 200);
    assert.equal(cont.body.token_strs.join(''), conv + '<|im_assistant|>assistant<|im_middle|>The capital is');
    // Content with trailing whitespace the template keeps: cut after the last occurrence of it.
    const spaced = [...messages, { role: 'assistant', content: 'Paris is ' }];
    const c2 = await tokenized({ messages: spaced, add_generation_prompt: false, continue_final_message: true });
    assert.equal(c2.body.token_strs.join(''), conv + '<|im_assistant|>assistant<|im_middle|>Paris is ');
    // Both true is refused, as vLLM does (its default add_generation_prompt is true).
    const both = await tokenized({ messages: partial, continue_final_message: true });
    assert.equal(both.status, 400);
    assert.equal(both.body.error.param, 'continue_final_message');
    const r = await client.chat.completions.create({ model: NAME, messages: partial, add_generation_prompt: false,
      continue_final_message: true, max_tokens: 3 });
    assert.equal(r.choices.length, 1);
  });

  test('a structured output is content even after a prompt that opened <think>', async () => {
    const r = await client.chat.completions.create({ model: NAME, messages, max_tokens: 24, seed: 1,
      response_format: { type: 'json_object' } });
    assert.equal(r.choices[0].message.reasoning_content, undefined);
    assert.ok(r.choices[0].message.content.startsWith('{'), r.choices[0].message.content);
  });

  test('reasoning_content and content split at </think> (non-streaming and streaming)', async () => {
    const r = await client.chat.completions.create({ model: NAME, messages });
    assert.equal(r.choices[0].message.reasoning_content, 'Simple geography question.');
    assert.equal(r.choices[0].message.content, 'The capital of France is Paris.');
    let reasoning = '', content = '';
    for await (const c of await client.chat.completions.create({ model: NAME, messages, stream: true })) {
      reasoning += c.choices[0]?.delta?.reasoning_content ?? '';
      content += c.choices[0]?.delta?.content ?? '';
    }
    assert.equal(reasoning, 'Simple geography question.');
    assert.equal(content, 'The capital of France is Paris.');
  });
});
