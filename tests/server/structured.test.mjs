// Structured outputs end to end (issue 16 item 2) with the official openai client on the demo
// model: every sampled json_schema reply parses and ajv (tests/grammar, pinned) validates it;
// json_object, guided_choice and guided_regex replies match; forced tool calls (required /
// named) are schema-valid calls; unsupported schemas are 400s naming the keyword. Run by tests/structured_e2e_test.sh.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, servableModel, openaiClient } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { default: Ajv2020 } = await import(path.join(here, '..', 'grammar', 'node_modules', 'ajv', 'dist', '2020.js'));
const MODEL = servableModel({ cacheDir: process.env.SICKLE_BUILD_DIR || os.tmpdir() });
const NAME = 'test-model';

const schema = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 12 },
    age: { type: 'integer' },
    mood: { enum: ['happy', 'sad', 'tired'] },
    tags: { type: 'array', items: { type: 'string', maxLength: 6 }, maxItems: 3 },
  },
  required: ['name', 'age', 'mood', 'tags'],
  additionalProperties: false,
};

describe('structured outputs', () => {
  let srv, client;
  before(async () => {
    srv = await startServer(MODEL, ['--served-model-name', NAME, '--max-model-len', '512', '--max-num-seqs', '8',
      '--threads', '2']);
    client = openaiClient({ baseURL: srv.baseURL, apiKey: 'none', timeout: 300000 });
  });
  after(async () => {
    assert.equal(await srv.stop(), 0);
  });
  const msgs = [{ role: 'user', content: 'Describe a person as JSON.' }];

  test('json_schema (strict): 20 sampled replies at temperature 1 parse and validate', async () => {
    const validate = new Ajv2020({ strict: false }).compile(schema);
    const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => client.chat.completions.create({
      model: NAME, messages: msgs, temperature: 1, seed: i, max_tokens: 200,
      response_format: { type: 'json_schema', json_schema: { name: 'person', schema, strict: true } },
    })));
    for (const r of replies) {
      const text = r.choices[0].message.content;
      assert.equal(r.choices[0].finish_reason, 'stop', `ran out of tokens: ${text}`);
      const doc = JSON.parse(text);
      assert.ok(validate(doc), `${text}: ${JSON.stringify(validate.errors)}`);
    }
  });

  test('json_object, guided_choice and guided_regex', async () => {
    const o = await client.chat.completions.create({ model: NAME, messages: msgs, temperature: 1, seed: 3,
      max_tokens: 300, response_format: { type: 'json_object' } });
    if (o.choices[0].finish_reason === 'stop') {
      const v = JSON.parse(o.choices[0].message.content);
      assert.equal(typeof v, 'object');
      assert.ok(v !== null && !Array.isArray(v));
    } else {
      assert.ok(o.choices[0].message.content.startsWith('{'));
    }
    const c = await client.completions.create({ model: NAME, prompt: 'The answer is', max_tokens: 10,
      temperature: 1, guided_choice: ['yes', 'no', 'maybe not'] });
    assert.ok(['yes', 'no', 'maybe not'].includes(c.choices[0].text), c.choices[0].text);
    const d = await client.completions.create({ model: NAME, prompt: 'Date:', max_tokens: 20, temperature: 1,
      guided_regex: '\\d{4}-\\d{2}-\\d{2}' });
    assert.match(d.choices[0].text, /^\d{4}-\d{2}-\d{2}$/);
  });

  // Forced tool calls (tool_choice required / named) on the demo model, which never writes
  // tool-call markup by itself: the grammar makes every sampled reply Kimi's markup around
  // arguments valid for the chosen tool's parameters.
  const weather = { type: 'object', properties: { city: { type: 'string', maxLength: 10 }, unit: { enum: ['C', 'F'] },
    days: { type: 'integer' } }, required: ['city', 'days'], additionalProperties: false };
  const time = { type: 'object', properties: { tz: { type: 'string', maxLength: 8 }, exact: { type: 'boolean' } },
    required: ['tz'], additionalProperties: false };
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: weather } },
    { type: 'function', function: { name: 'get_time', parameters: time } }];
  const validators = { get_weather: new Ajv2020({ strict: false }).compile(weather),
    get_time: new Ajv2020({ strict: false }).compile(time) };
  const askTool = [{ role: 'user', content: 'What is the weather in Paris?' }];
  // finish 'length' (parallel calls on a model that never learned when to stop calling) may
  // cut the last call; every call before it must be complete and valid.
  function checkCalls(r, { names, maxCalls, mayRunOut = false }) {
    const c = r.choices[0];
    const cut = mayRunOut && c.finish_reason === 'length';
    if (!cut) assert.equal(c.finish_reason, 'tool_calls', JSON.stringify(c.message));
    assert.ok(c.message.content === null || c.message.content === '', JSON.stringify(c.message));
    const calls = c.message.tool_calls;
    assert.ok(calls.length >= (cut ? 2 : 1) && calls.length <= maxCalls, JSON.stringify(calls));
    calls.forEach((call, i) => {
      assert.ok(names.includes(call.function.name), call.function.name);
      assert.equal(call.id, `functions.${call.function.name}:${i}`);
      if (cut && i === calls.length - 1) return;
      const args = JSON.parse(call.function.arguments);
      const validate = validators[call.function.name];
      assert.ok(validate(args), `${call.function.arguments}: ${JSON.stringify(validate.errors)}`);
    });
    return calls;
  }
  const both = ['get_weather', 'get_time'];

  test('tool_choice required: 10 sampled replies at temperature 1 are schema-valid calls', async () => {
    // parallel_tool_calls false: exactly one call, then the end of the reply.
    const single = await Promise.all(Array.from({ length: 10 }, (_, i) => client.chat.completions.create({
      model: NAME, messages: askTool, tools, tool_choice: 'required', parallel_tool_calls: false, temperature: 1,
      seed: 100 + i, max_tokens: 160,
    })));
    const names = new Set();
    for (const r of single) {
      const calls = checkCalls(r, { names: both, maxCalls: 1 });
      assert.equal(calls.length, 1);
      names.add(calls[0].function.name);
    }
    assert.equal(names.size, 2, 'the model chose each declared function at least once');
    // Parallel calls (the default): one or more, numbered in order.
    const many = await Promise.all(Array.from({ length: 5 }, (_, i) => client.chat.completions.create({
      model: NAME, messages: askTool, tools, tool_choice: 'required', temperature: 1, seed: 200 + i, max_tokens: 160,
    })));
    for (const r of many) checkCalls(r, { names: both, maxCalls: 16, mayRunOut: true });
  });

  test('a named tool: 10 sampled replies at temperature 1 are one schema-valid call to it', async () => {
    const tool_choice = { type: 'function', function: { name: 'get_time' } };
    const replies = await Promise.all(Array.from({ length: 10 }, (_, i) => client.chat.completions.create({
      model: NAME, messages: askTool, tools, tool_choice, temperature: 1, seed: 300 + i, max_tokens: 300,
    })));
    for (const r of replies) assert.equal(checkCalls(r, { names: ['get_time'], maxCalls: 1 }).length, 1);
    // Streamed: the client's accumulator sees the same kind of call.
    const final = await client.beta.chat.completions.stream({ model: NAME, messages: askTool, tools, tool_choice,
      temperature: 1, seed: 7, max_tokens: 300 }).finalChatCompletion();
    assert.equal(checkCalls(final, { names: ['get_time'], maxCalls: 1 }).length, 1);
  });

  test('forced tool calls: unsupported parameters and a response_format besides are 400s', async () => {
    const bad = [{ type: 'function', function: { name: 'f', parameters: { type: 'object',
      properties: { when: { type: 'string', format: 'date-time' } } } } }];
    await assert.rejects(client.chat.completions.create({ model: NAME, messages: askTool, tools: bad, tool_choice: 'required' }),
      (e) => e.status === 400 && /'format'/.test(e.message) && (e.param ?? e.error?.param) === 'tools[0].function.parameters');
    await assert.rejects(client.chat.completions.create({ model: NAME, messages: askTool, tools, tool_choice: 'required',
      response_format: { type: 'json_object' } }), (e) => e.status === 400 && (e.param ?? e.error?.param) === 'tool_choice');
  });

  test('an unsupported schema keyword is a 400 naming it', async () => {
    await assert.rejects(client.chat.completions.create({ model: NAME, messages: msgs, response_format: {
      type: 'json_schema', json_schema: { name: 'x', schema: { type: 'string', format: 'email' } } } }),
    (e) => e.status === 400 && /'format' at \/format/.test(e.message) &&
      (e.param ?? e.error?.param) === 'response_format.json_schema.schema');
  });
});
