#!/usr/bin/env bash
# e2e: `sickle export-gguf` of the demo model (default --type, bf16) loads in llama.cpp
# (node-llama-cpp 3.21.1 prebuilt CPU binaries) and its greedy continuation equals `sickle run`'s,
# token for token, with the same tokenization (bench/vs_llamacpp/compare.mjs). llama.cpp comes
# from $NLC_DIR, else $SICKLE_BUILD_DIR/llamacpp, where `make test` installs it
# (tools/llamacpp-setup.sh: the CPU prebuilt and a Node >= 20). Missing prerequisites exit 77,
# which ctest reports as Skipped (SKIP_RETURN_CODE), never as Passed.
set -euo pipefail
SRC=${SICKLE_SOURCE_DIR:?}
BIN=${SICKLE_BIN:?}
MODEL="$SRC/models/brown-kimi"
skip() { echo "skipped: $*"; exit 77; }
NLC_DIR=${NLC_DIR:-${SICKLE_BUILD_DIR:-}/llamacpp}
export NLC_DIR
[ -d "$NLC_DIR/node_modules/node-llama-cpp" ] || skip "node-llama-cpp is not installed in $NLC_DIR (tools/llamacpp-setup.sh $NLC_DIR)"
NODE="$NLC_DIR/node"
[ -x "$NODE" ] || NODE=$(command -v node) || skip "node is not installed"
major=$("$NODE" -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || skip "node $major < 20 (node-llama-cpp 3.21.1 needs >= 20; tools/llamacpp-setup.sh installs one)"
[ -f "$MODEL/config.json" ] || skip "no demo model at $MODEL"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BIN" export-gguf -m "$MODEL" -o "$tmp/m.gguf" >"$tmp/export.txt"
grep -q "non-expert weights: bf16" "$tmp/export.txt" || { cat "$tmp/export.txt"; echo "FAIL: default type is not bf16"; exit 1; }
grep -q "tokenizer: tiktoken (pre kimi-k2)" "$tmp/export.txt" || { cat "$tmp/export.txt"; exit 1; }
set +e
"$NODE" "$SRC/bench/vs_llamacpp/compare.mjs" --sickle "$BIN" --model "$MODEL" --gguf "$tmp/m.gguf" \
  --prompt "Once upon a time, a little fox" --n 24 --threads 1 >"$tmp/out.txt" 2>&1
rc=$?
set -e
cat "$tmp/out.txt"
[ $rc -eq 77 ] && skip "node-llama-cpp did not load from $NLC_DIR"
[ $rc -eq 0 ] || { echo "FAIL: llama.cpp and sickle disagree (rc $rc)"; exit 1; }
# Teacher-forced next-token distributions must agree closely too (bf16 weights both sides; the
# remaining gap is llama.cpp's bf16 activations and its rms eps on q_a/kv_a norms).
"$NODE" -e '
const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").pop());
if (s.top1_agree !== s.steps || !(s.max_abs_dprob < 0.02)) { console.log("FAIL: distributions", s); process.exit(1); }
console.log(`ok: ${s.n} tokens match, max |dp| ${s.max_abs_dprob.toExponential(2)}`);
' "$tmp/out.txt"
