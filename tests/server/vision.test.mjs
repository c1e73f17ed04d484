// Images through `sickle serve` with the official openai client: a synth tiny-kimi (it has a
// small MoonViT tower and projector in the real layout, media_placeholder_token_id = the
// generated tokenizer's <|media_pad|>) serves image_url parts sent as base64 data: URLs.
// The PNGs are written here (zlib + a CRC table), so the pixels are known exactly.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import zlib from 'node:zlib';
import { startServer, synthModel, openaiClient } from './lib.mjs';

const CRC = new Int32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});
function crc32(buf) {
  let c = -1;
  for (const b of buf) c = CRC[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}
function chunk(type, data) {
  const len = Buffer.alloc(4), crc = Buffer.alloc(4), td = Buffer.concat([Buffer.from(type), data]);
  len.writeUInt32BE(data.length);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}
// An 8-bit RGB PNG whose pixel (x, y) is a function of (x, y, salt).
function png(w, h, salt) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; ihdr[9] = 2;  // 8 bits, RGB
  const raw = Buffer.alloc(h * (1 + 3 * w));
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      for (let c = 0; c < 3; c++) raw[y * (1 + 3 * w) + 1 + 3 * x + c] = (x * 7 + y * 13 + c * 50 + salt * 91) & 255;
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}
const dataUrl = (buf) => 'data:image/png;base64,' + buf.toString('base64');

describe('image_url parts', () => {
  let srv, client;
  before(async () => {
    const model = synthModel('tiny-kimi', process.env.SICKLE_BUILD_DIR || os.tmpdir());
    srv = await startServer(model, ['--served-model-name', 'vis', '--max-model-len', '256', '--threads', '2']);
    client = openaiClient({ baseURL: srv.baseURL, apiKey: 'none', timeout: 120000 });
  });
  after(async () => {
    assert.equal(await srv.stop(), 0, 'server exits cleanly on SIGTERM');
  });

  const ask = (url, extra = {}) => client.chat.completions.create({
    model: 'vis', max_tokens: 6, temperature: 0, chat_template_kwargs: { thinking: false },
    messages: [{ role: 'user', content: [{ type: 'text', text: 'What is in this picture?' },
      { type: 'image_url', image_url: { url } }] }], ...extra,
  });

  test('an image part is answered; usage counts its tokens; the same image reuses the cache', async () => {
    const a = dataUrl(png(56, 56, 1));  // 4x4 patches -> 2x2 merged = 4 image tokens
    const r1 = await ask(a);
    assert.equal(r1.object, 'chat.completion');
    assert.equal(typeof r1.choices[0].message.content, 'string');
    assert.ok(['stop', 'length'].includes(r1.choices[0].finish_reason));
    assert.ok(r1.usage.completion_tokens >= 1);
    const r2 = await ask(a);
    assert.equal(r2.choices[0].message.content, r1.choices[0].message.content, 'greedy: same answer');
    assert.equal(r2.usage.prompt_tokens, r1.usage.prompt_tokens);
    const cached2 = r2.usage.prompt_tokens_details?.cached_tokens ?? 0;
    assert.equal(cached2, r2.usage.prompt_tokens - 1, 'all but the last prompt token from the cache');

    // Same size, other pixels: the cache stops at the first image position.
    const r3 = await ask(dataUrl(png(56, 56, 2)));
    assert.equal(r3.usage.prompt_tokens, r1.usage.prompt_tokens);
    const cached3 = r3.usage.prompt_tokens_details?.cached_tokens ?? 0;
    assert.ok(cached3 > 0 && cached3 <= r3.usage.prompt_tokens - 1 - 4 - 2,
      `another image must not hit the cache at its positions (cached ${cached3} of ${r3.usage.prompt_tokens})`);

    // 112x56: 4x8 patches -> 8 tokens; everything else in the prompt is the same.
    // (A cache entry is taken by the request that reuses it, so this comes last.)
    const wide = await ask(dataUrl(png(112, 56, 1)), { max_tokens: 1 });
    assert.equal(wide.usage.prompt_tokens - r1.usage.prompt_tokens, 4);
  });

  // vLLM's /tokenize expands each image's placeholder to its token count: the count equals the
  // chat's prompt_tokens for the same messages.
  test('/tokenize counts image tokens as chat does', async () => {
    const tokenize = (messages) => fetch(srv.url + '/tokenize', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'vis', messages, chat_template_kwargs: { thinking: false } }),
    });
    const msgs = (...urls) => [{ role: 'user', content: [{ type: 'text', text: 'Compare these.' },
      ...urls.map((url) => ({ type: 'image_url', image_url: { url } }))] }];
    for (const urls of [[dataUrl(png(56, 56, 4))], [dataUrl(png(112, 56, 5)), dataUrl(png(56, 84, 6))]]) {
      const t = await tokenize(msgs(...urls));
      assert.equal(t.status, 200);
      const body = await t.json();
      const r = await client.chat.completions.create({
        model: 'vis', max_tokens: 1, temperature: 0, chat_template_kwargs: { thinking: false },
        messages: msgs(...urls),
      });
      assert.equal(body.count, r.usage.prompt_tokens, `${urls.length} image(s)`);
      assert.equal(body.tokens.length, body.count);
    }
    const one = await (await tokenize(msgs(dataUrl(png(56, 56, 4))))).json();
    const wide = await (await tokenize(msgs(dataUrl(png(112, 56, 4))))).json();
    assert.equal(wide.count - one.count, 4, '112x56 takes 8 tokens, 56x56 four');
    const full = png(56, 56, 3);
    const bad = await tokenize(msgs(dataUrl(full.subarray(0, full.length - 30))));
    assert.equal(bad.status, 400);
    assert.match((await bad.json()).error.message, /messages\[0\]\.content\[1\]/);
  });

  test('bad images and network urls are 400s naming the part', async () => {
    const full = png(56, 56, 3);
    const bad = [
      [dataUrl(full.subarray(0, full.length - 30)), /messages\[0\]\.content\[1\]/],
      ['data:image/png;base64,' + Buffer.from('GIF89a not a png').toString('base64'), /messages\[0\]\.content\[1\]/],
      ['https://example.com/cat.png', /never fetches from the network/],
      ['file:///etc/passwd', /allowed-local-media-path/],
    ];
    for (const [url, re] of bad) {
      await assert.rejects(ask(url), (e) => {
        assert.equal(e.status, 400, `${url.slice(0, 40)}: ${e.message}`);
        assert.match(e.message, re);
        return true;
      });
    }
    const h = await fetch(srv.url + '/health');
    assert.equal(h.status, 200, 'still serving');
  });
});
