#!/usr/bin/env bash
# sickle plan (and inspect) from config.json alone: a planned --keep N equals `inspect` of the
# checkpoint `prune --keep N` writes; config-only == headers through the CLI; the seed's
# Kimi-K2.5 figures from a config with the real dimensions; bad input names the flag or rule.
set -euo pipefail
S=${SICKLE_BIN:-build/bin/sickle}
T=$(mktemp -d "${TMPDIR:-/tmp}/sickle-plan-cli-XXXXXX")
trap 'rm -rf "$T"' EXIT
cd "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }

# Equal JSON objects once the named top-level keys are dropped (stdlib only).
cat > same.py <<'PY'
import json, sys
def load(path, key):
    j = json.load(open(path))
    if key != '-': j = j[key]
    for k in ('source', 'bytes_from', 'plan'): j.pop(k, None)
    return j
a, b = load(sys.argv[1], sys.argv[2]), load(sys.argv[3], sys.argv[4])
if a != b:
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k): print('differs:', k, a.get(k), b.get(k))
    sys.exit(1)
PY

# ---- a planned --keep N == inspect of what prune --keep N writes ----
"$S" -q synth --preset tiny-dsv3 --seed 1 -o m
python3 -c "
import json, random
r = random.Random(7)
with open('toks.jsonl', 'w') as f:
    for i in range(6): f.write(json.dumps({'tokens': [r.randrange(512) for _ in range(r.randrange(4, 30))]}) + '\n')
"
"$S" -q observe -m m --data toks.jsonl --format tokens --seq-len 24 -o stats.st
"$S" -q prune -m m --stats stats.st --keep 8 -o p8 > /dev/null
"$S" inspect p8 --json > p8.json
mkdir cfg && cp m/config.json cfg/
for src in m cfg cfg/config.json; do
  "$S" plan "$src" --keep 8 --json > plan8.json || fail "plan $src --keep 8"
  python3 same.py plan8.json model p8.json - || fail "plan $src --keep 8 != inspect of prune --keep 8"
  "$S" plan "$src" --ratio 0.5 --json > ratio.json || fail "plan $src --ratio 0.5"
  python3 same.py ratio.json model p8.json - || fail "plan $src --ratio 0.5 != inspect of prune --keep 8"
done
grep -q '"bytes_from": "config.json"' plan8.json || fail "config-only plan does not say where its bytes came from"

# ---- inspect on a config-only directory == inspect of the checkpoint ----
"$S" inspect m --json > full.json
"$S" inspect cfg --json > cfg.json || fail "inspect refused a config-only directory"
python3 same.py cfg.json - full.json - || fail "inspect from config.json != inspect from headers"
"$S" inspect cfg | grep -q "bytes from config.json" || fail "inspect does not say its bytes came from config.json"

# ---- the same routing rules as prune ----
if "$S" plan cfg --keep 6 2> err; then fail "plan accepted --keep 6 with n_group 4"; fi
grep -q "multiple of 4" err || fail "unclear error: $(cat err)"
if "$S" plan cfg --keep 2 2> err; then fail "plan accepted --keep 2 < top-4"; fi
grep -q "num_experts_per_tok" err || fail "unclear error: $(cat err)"
if "$S" plan cfg --fit 2> err; then fail "--fit without a target"; fi
grep -q -- "--gpus" err || fail "unclear error: $(cat err)"
if "$S" plan cfg --membw 100GB/s 2> err; then fail "--membw without --cpu-mem"; fi
grep -q -- "--cpu-mem" err || fail "unclear error: $(cat err)"
if "$S" plan cfg --gpus 8 --gpu-mem 24GiB --gpu-memory-utilization 1.5 2> err; then fail "utilization 1.5"; fi
grep -q -- "--gpu-memory-utilization" err || fail "unclear error: $(cat err)"
if "$S" plan nowhere 2> err; then fail "plan of a missing directory"; fi
grep -q "nowhere" err || fail "error does not name the path: $(cat err)"

# ---- Kimi-K2.5's real dimensions (docs/formats.md §1, §2b), config.json only ----
"$S" -q synth --preset tiny-kimi --seed 1 -o tk
mkdir k25
python3 - tk/config.json k25/config.json <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c.pop('sickle_synth')
c['text_config'].update(hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048, num_hidden_layers=61,
    first_k_dense_replace=1, n_routed_experts=384, num_experts_per_tok=8, n_shared_experts=1, num_attention_heads=64,
    num_key_value_heads=64, q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
    v_head_dim=128, vocab_size=163840, max_position_embeddings=262144, bos_token_id=163584, eos_token_id=163585)
c['vision_config'] = dict(model_type='moonvit', vt_hidden_size=1152, vt_intermediate_size=4304,
    vt_num_attention_heads=16, vt_num_hidden_layers=27, patch_size=14, init_pos_emb_height=64,
    init_pos_emb_width=64, init_pos_emb_time=4, merge_kernel_size=[2, 2], mm_hidden_size=1152, text_hidden_size=7168)
json.dump(c, open(sys.argv[2], 'w'), indent=2)
PY
"$S" plan k25 --keep 72 --gpus 8 --gpu-mem 24GiB --ep --gpu-memory-utilization 0.95 --context 57344 > k72.txt ||
  fail "plan of Kimi-K2.5 at 72 experts"
grep -q "^verdict *FITS" k72.txt || fail "57,344 tokens do not fit 8 x 24 GiB at 0.95: $(cat k72.txt)"
grep -q "9 per MoE layer x 60 layers" k72.txt || fail "expert placement: $(cat k72.txt)"
"$S" plan k25 --keep 72 --gpus 8 --gpu-mem 24GiB --ep --gpu-memory-utilization 0.95 --json > k72.json
python3 - k72.json <<'PY' || fail "seed figures off"
import json, sys
j = json.load(open(sys.argv[1]))
g = j['gpu']
total = j['model']['bytes'] / 2**30
assert abs(total - 122) <= 0.02 * 122, total
assert 15 <= g['weights_per_device'] / 2**30 <= 17, g['weights_per_device']
assert g['max_context'] >= 57344, g['max_context']
assert g['kv_bytes_per_token'] == 70272
PY
"$S" plan k25 --fit --gpus 8 --gpu-mem 24GiB --ep --gpu-memory-utilization 0.95 --context 57344 > fit.txt
grep -q "^fit *keep 72:" fit.txt || fail "--fit did not answer 72: $(cat fit.txt)"
grep -q "^binds .*routed experts" fit.txt || fail "--fit does not say what binds: $(cat fit.txt)"
"$S" plan k25 --fit --gpus 8 --gpu-mem 24GB --ep > fit24.txt
keep=$(sed -n 's/^fit *keep \([0-9]*\):.*/\1/p' fit24.txt)
[ -n "$keep" ] && [ "$keep" -ge 64 ] && [ "$keep" -le 80 ] || fail "--fit --gpu-mem 24GB: keep '$keep' not close to 72: $(cat fit24.txt)"
"$S" plan k25 --keep 72 --cpu-mem 768GiB --membw 300GB/s --tok-s 10 > cpu.txt
grep -q "expected decode [0-9.]* tok/s" cpu.txt || fail "no decode speed: $(cat cpu.txt)"
grep -q "FITS in RAM" cpu.txt || fail "CPU target: $(cat cpu.txt)"
echo "plan_cli_test: OK"
