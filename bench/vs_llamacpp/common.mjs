// Shared helpers: load node-llama-cpp (prebuilt CPU binaries only: never build or download),
// read a safetensors logits dump, softmax.
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

// node-llama-cpp is looked up from NLC_DIR (a scratch dir with `npm install node-llama-cpp@3.21.1`),
// else from this directory's node_modules.
export async function importNlc() {
  const dirs = [process.env.NLC_DIR, path.dirname(new URL(import.meta.url).pathname)].filter(Boolean);
  for (const d of dirs) {
    try {
      const req = createRequire(path.join(d, "package.json"));
      const entry = req.resolve("node-llama-cpp");
      return await import(entry);
    } catch (e) {
      if (e.code !== "MODULE_NOT_FOUND" && e.code !== "ERR_MODULE_NOT_FOUND") throw e;
    }
  }
  return null;
}

export async function loadLlama(nlc, threads) {
  return nlc.getLlama({
    gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false,
    logLevel: nlc.LlamaLogLevel.error, maxThreads: threads,
  });
}

export function parseArgs(argv, defaults) {
  const a = { ...defaults };
  for (let i = 0; i < argv.length; ++i) {
    const k = argv[i];
    if (!k.startsWith("--")) throw new Error(`unexpected argument ${k}`);
    const name = k.slice(2);
    if (typeof a[name] === "boolean") a[name] = true;
    else a[name] = argv[++i];
  }
  return a;
}

// A safetensors file with one F32 tensor (sickle run --dump-logits): {rows, cols, data}.
export function readLogits(file) {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8"));
  const t = header.logits;
  if (!t || t.dtype !== "F32") throw new Error(`${file}: no F32 'logits' tensor`);
  const [b, e] = t.data_offsets;
  const start = 8 + n + b;
  const data = new Float32Array(buf.buffer.slice(buf.byteOffset + start, buf.byteOffset + 8 + n + e));
  return { rows: t.shape[0], cols: t.shape[1], data };
}

export function softmaxRow(data, row, cols) {
  const out = new Float64Array(cols);
  let mx = -Infinity;
  for (let i = 0; i < cols; ++i) mx = Math.max(mx, data[row * cols + i]);
  let s = 0;
  for (let i = 0; i < cols; ++i) s += (out[i] = Math.exp(data[row * cols + i] - mx));
  for (let i = 0; i < cols; ++i) out[i] /= s;
  return out;
}

export function argmax(arr) {
  let best = 0;
  for (let i = 1; i < arr.length; ++i) if (arr[i] > arr[best]) best = i;
  return best;
}
