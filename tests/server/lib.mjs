// Helpers for the server's end-to-end tests, soak and benchmark: start `sickle serve` on a free
// loopback port, write a Kimi-format tokenizer for synth checkpoints, read a process's RSS.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';

export const SICKLE_BIN = process.env.SICKLE_BIN || 'sickle';

// Starts `sickle serve -m dir --port 0 ...args`; resolves once it prints its listening line.
export function startServer(modelDir, args = [], { timeoutMs = 300000, quiet = true } = {}) {
  return new Promise((resolve, reject) => {
    const proc = spawn(SICKLE_BIN, ['serve', '-m', modelDir, '--port', '0', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '', err = '';
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`server did not start in ${timeoutMs} ms\n${err}`));
    }, timeoutMs);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/[^\s]+)/);
      if (m) {
        clearTimeout(timer);
        const url = m[1];
        resolve({
          url,
          baseURL: url + '/v1',
          proc,
          stderr: () => err,
          async stop() {
            if (proc.exitCode !== null) return proc.exitCode;
            const done = new Promise((r) => proc.once('exit', (code) => r(code)));
            proc.kill('SIGTERM');
            return done;
          },
        });
      }
    });
    proc.stderr.on('data', (d) => {
      err += d;
      if (!quiet) process.stderr.write(d);
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before listening\n${err}`));
    });
  });
}

// Kimi's named special tokens as offsets from the first special id (docs/formats.md §6).
const KIMI_SPECIALS = {
  0: '[BOS]', 1: '[EOS]', 2: '<|im_end|>', 3: '<|im_user|>', 4: '<|im_assistant|>', 10: '<|im_system|>',
  11: '<|tool_calls_section_begin|>', 12: '<|tool_calls_section_end|>', 13: '<|tool_call_begin|>',
  14: '<|tool_call_argument_begin|>', 15: '<|tool_call_end|>', 17: '<|im_middle|>', 18: '<|media_begin|>',
  19: '<|media_content|>', 20: '<|media_end|>', 21: '<|media_pad|>', 22: '<think>', 23: '</think>',
};

// Writes tiktoken.model (+ tokenizer_config.json) into a synth checkpoint so it can be served:
// ranks 0..255 are the bytes, then filler merges up to vocab - 256, then Kimi's 256 specials
// at [vocab - 256, vocab) where synth puts bos/eos.
export function writeKimiTokenizer(dir, vocab) {
  const nRanks = vocab - 256;
  const lines = [];
  for (let b = 0; b < 256; b++) lines.push(`${Buffer.from([b]).toString('base64')} ${b}`);
  const letters = 'etaoinshrdlcumwfgypbvkjxqz ';
  const seen = new Set();
  let rank = 256;
  // Two- then three-letter pieces, then numbered filler: valid ranks, enough for any vocab.
  outer: for (let len = 2; len <= 3; len++) {
    const idx = new Array(len).fill(0);
    while (true) {
      if (rank >= nRanks) break outer;
      const s = idx.map((i) => letters[i]).join('');
      if (!seen.has(s)) {
        seen.add(s);
        lines.push(`${Buffer.from(s).toString('base64')} ${rank++}`);
      }
      let k = len - 1;
      while (k >= 0 && ++idx[k] === letters.length) idx[k--] = 0;
      if (k < 0) break;
    }
  }
  for (let i = 0; rank < nRanks; i++) lines.push(`${Buffer.from(`\u0001f${i}`).toString('base64')} ${rank++}`);
  fs.writeFileSync(path.join(dir, 'tiktoken.model'), lines.join('\n') + '\n');
  const atd = {};
  for (const [off, content] of Object.entries(KIMI_SPECIALS))
    atd[String(nRanks + Number(off))] = { content, special: true, lstrip: false, rstrip: false, normalized: false, single_word: false };
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({
    added_tokens_decoder: atd, bos_token: '[BOS]', eos_token: '[EOS]', tokenizer_class: 'TikTokenTokenizer',
  }, null, 1));
}

// A servable model directory: $SICKLE_SERVE_MODEL, else models/brown-kimi, else a synth
// tiny-kimi (or `preset`) with a generated tokenizer, cached under `cacheDir`.
export function servableModel({ preset = 'tiny-kimi', cacheDir } = {}) {
  if (process.env.SICKLE_SERVE_MODEL) return process.env.SICKLE_SERVE_MODEL;
  const src = process.env.SICKLE_SOURCE_DIR || path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
  const demo = path.join(src, 'models/brown-kimi');
  if (preset === 'tiny-kimi' && fs.existsSync(path.join(demo, 'config.json')) &&
      (fs.existsSync(path.join(demo, 'tiktoken.model')) || fs.existsSync(path.join(demo, 'tokenizer.json'))))
    return demo;
  return synthModel(preset, cacheDir);
}

export function synthModel(preset, cacheDir) {
  const dir = path.join(cacheDir || process.env.SICKLE_BUILD_DIR || '/tmp', `serve-${preset}`);
  if (!fs.existsSync(path.join(dir, 'tiktoken.model'))) {
    fs.mkdirSync(path.dirname(dir), { recursive: true });
    const r = spawnSync(SICKLE_BIN, ['synth', '--preset', preset, '-o', dir, '--force'], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`sickle synth --preset ${preset} failed`);
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    writeKimiTokenizer(dir, (cfg.text_config || cfg).vocab_size);
  }
  return dir;
}

// The official client on the runtime's own fetch. openai@4 otherwise uses its bundled
// node-fetch 2.7.0, whose streaming responses end in `Premature close` on Debian 12's Node 18
// (18.20), even against a plain Node http server: the client's bug, not the server's.
export function openaiClient(options) {
  return new OpenAI({ fetch: globalThis.fetch, maxRetries: 0, ...options });
}

// Resident set size of a process in bytes (Linux /proc); `field` VmHWM for its peak.
export function rssBytes(pid, field = 'VmRSS') {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = status.match(new RegExp(`${field}:\\s+(\\d+) kB`));
  return m ? Number(m[1]) * 1024 : NaN;
}

export async function getMetrics(url, apiKey) {
  const r = await fetch(url + '/metrics', apiKey ? { headers: { Authorization: `Bearer ${apiKey}` } } : {});
  if (r.status !== 200) throw new Error(`GET /metrics: ${r.status}`);
  return await r.text();
}

export function metricValue(text, name) {
  const m = text.match(new RegExp(`^${name.replace(/[{}"=]/g, (c) => '\\' + c)} ([0-9.eE+-]+)$`, 'm'));
  return m ? Number(m[1]) : NaN;
}

// A view of `modelDir` (symlinks) whose tokenizer_config.json has `template` as its
// chat_template, or none (template null): sickle then renders with its built-in format.
export function modelWithTemplate(modelDir, parent, template) {
  const dir = fs.mkdtempSync(path.join(parent, 'template-view-'));
  for (const f of fs.readdirSync(modelDir)) {
    if (f === 'tokenizer_config.json' || f === 'chat_template.jinja') continue;
    fs.symlinkSync(path.join(modelDir, f), path.join(dir, f));
  }
  const cfgPath = path.join(modelDir, 'tokenizer_config.json');
  const cfg = fs.existsSync(cfgPath) ? JSON.parse(fs.readFileSync(cfgPath, 'utf8')) : {};
  if (template === null) delete cfg.chat_template;
  else cfg.chat_template = template;
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(cfg));
  return dir;
}

// The built-in Kimi format: the generation prompt then opens `<think>` (thinking) or writes
// `<think></think>`, as the scripted-engine tests' replies (written from inside the reasoning
// block) expect. The demo model's own template is a minimal one without reasoning.
export function builtinFormatModel(modelDir, parent) {
  return modelWithTemplate(modelDir, parent, null);
}
