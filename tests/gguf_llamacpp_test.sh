#!/usr/bin/env bash
# e2e: `sickle export-gguf` of the demo model loads in llama.cpp (node-llama-cpp 3.21.1 prebuilt
# CPU binaries) and its greedy continuation equals `sickle run`'s, token for token, with the same
# tokenization (bench/vs_llamacpp/compare.mjs). Skips (exit 0) without node >= 20, the npm
# package (bench/vs_llamacpp: npm install; or NLC_DIR=dir with it installed) or the demo model.
set -euo pipefail
SRC=${SICKLE_SOURCE_DIR:?}
BIN=${SICKLE_BIN:?}
MODEL="$SRC/models/brown-kimi"
skip() { echo "skipped: $*"; exit 0; }
command -v node >/dev/null || skip "node is not installed"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || skip "node $major < 20"
[ -f "$MODEL/config.json" ] || skip "no demo model at $MODEL"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BIN" export-gguf -m "$MODEL" -o "$tmp/m.gguf" --type bf16 >"$tmp/export.txt"
grep -q "tokenizer: tiktoken (pre kimi-k2)" "$tmp/export.txt" || { cat "$tmp/export.txt"; exit 1; }
set +e
node "$SRC/bench/vs_llamacpp/compare.mjs" --sickle "$BIN" --model "$MODEL" --gguf "$tmp/m.gguf" \
  --prompt "Once upon a time, a little fox" --n 24 --threads 1 >"$tmp/out.txt" 2>&1
rc=$?
set -e
cat "$tmp/out.txt"
[ $rc -eq 77 ] && skip "node-llama-cpp is not installed (cd bench/vs_llamacpp && npm install)"
[ $rc -eq 0 ] || { echo "FAIL: llama.cpp and sickle disagree (rc $rc)"; exit 1; }
# Teacher-forced next-token distributions must agree closely too (bf16 weights both sides; the
# remaining gap is llama.cpp's bf16 activations and its rms eps on q_a/kv_a norms).
node -e '
const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").pop());
if (s.top1_agree !== s.steps || !(s.max_abs_dprob < 0.02)) { console.log("FAIL: distributions", s); process.exit(1); }
console.log(`ok: ${s.n} tokens match, max |dp| ${s.max_abs_dprob.toExponential(2)}`);
' "$tmp/out.txt"
