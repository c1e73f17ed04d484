// Structured outputs end to end (issue 16 item 2) with the official openai client on the demo
// model: every sampled json_schema reply parses and ajv (tests/grammar, pinned) validates it;
// json_object, guided_choice and guided_regex replies match; unsupported schemas are 400s
// naming the keyword. Run by tests/structured_e2e_test.sh.
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

  test('an unsupported schema keyword is a 400 naming it', async () => {
    await assert.rejects(client.chat.completions.create({ model: NAME, messages: msgs, response_format: {
      type: 'json_schema', json_schema: { name: 'x', schema: { type: 'string', format: 'email' } } } }),
    (e) => e.status === 400 && /'format' at \/format/.test(e.message) &&
      (e.param ?? e.error?.param) === 'response_format.json_schema.schema');
  });
});
