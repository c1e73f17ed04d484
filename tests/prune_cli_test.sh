#!/bin/bash
# End-to-end: sickle observe (sharded) / merge / stats show / prune on synthetic checkpoints,
# and observe's statistics vs the independent reference goldens in tests/golden/reap/.
set -euo pipefail
S=${SICKLE_BIN:?SICKLE_BIN not set}
SRC=${SICKLE_SOURCE_DIR:?}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }

# Compare two statistics files: count/tokens exact, sums within rel (stdlib only).
cat > cmp.py <<'PY'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == '__metadata__': continue
        s, e = v['data_offsets']
        assert v['dtype'] == 'F64', k
        out[k] = struct.unpack('<%dd' % ((e - s) // 8), b[8 + n + s:8 + n + e])
    return out
a, b, rel = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
assert sorted(a) == sorted(b), (sorted(a), sorted(b))
bad = 0
for k in a:
    for i, (x, y) in enumerate(zip(a[k], b[k])):
        exact = k.endswith('.count') or k.endswith('.tokens')
        if (x != y) if exact else abs(x - y) > rel * max(abs(y), 1e-6):
            print('mismatch', k, i, x, y); bad += 1
sys.exit(1 if bad else 0)
PY

"$S" -q synth --preset tiny-dsv3 --seed 1 -o m
"$S" -q synth --preset tiny-kimi --seed 1 -o other
python3 -c "
import json, random
r = random.Random(7)
with open('toks.jsonl', 'w') as f:
    for i in range(10): f.write(json.dumps({'tokens': [r.randrange(512) for _ in range(r.randrange(4, 40))]}) + '\n')
"
"$S" -q observe -m m --data toks.jsonl --format tokens --seq-len 24 -o full.st
for i in 0 1 2; do "$S" -q observe -m m --data toks.jsonl --format tokens --seq-len 24 --shard $i/3 -o s$i.st; done
"$S" -q merge s0.st s1.st s2.st -o merged.st
python3 cmp.py merged.st full.st 1e-9 || fail "merge of 3 shards != unsharded run"
"$S" merge s0.st s2.st -o part.st 2> merge.err
grep -q "shards \[1\] of 3 are missing" merge.err || fail "no warning about the missing shard: $(cat merge.err)"
! "$S" merge s0.st s2.st --require-complete -o x.st 2>/dev/null || fail "--require-complete accepted a missing shard"
! "$S" merge s0.st s0.st -o x.st 2>/dev/null || fail "merged the same shard twice"
"$S" -q observe -m other --data toks.jsonl --format tokens --seq-len 24 -o other.st
! "$S" merge full.st other.st -o x.st 2>/dev/null || fail "merged statistics of different models"
[ ! -e x.st ] || fail "a refused merge left output"
"$S" stats show full.st > show.txt
grep -q "^ *1 " show.txt && grep -q "imbalance" show.txt || fail "stats show: $(cat show.txt)"

"$S" -q prune -m m --stats full.st --keep 8 -o p8 > prune.txt
[ -f p8/prune_report.json ] && [ -f p8/config.json ] || fail "prune output incomplete"
grep -q '"n_routed_experts": 8' p8/config.json || fail "config not rewritten"
! "$S" -q prune -m m --stats other.st --keep 8 -o bad 2> bad.err || fail "pruned with another model's statistics"
grep -q "another model" bad.err || fail "unclear error: $(cat bad.err)"
! "$S" -q prune -m m --stats full.st --keep 6 -o bad 2> bad.err || fail "accepted keep not a multiple of n_group"
grep -q "multiple of 4" bad.err || fail "unclear error: $(cat bad.err)"
SICKLE_FAULT_ENOSPC_AFTER=50000 "$S" -q prune -m m --stats full.st --keep 8 -o bad 2> bad.err && fail "simulated full disk not reported"
grep -q "No space left" bad.err || fail "unclear error: $(cat bad.err)"
[ -z "$(ls -A | grep -E '^bad$|\.tmp')" ] || fail "partial output left: $(ls -A)"

# Saliency vs the independent reference (tools/reference/reap_stats.py), when its goldens exist.
n_golden=0
for g in "$SRC"/tests/golden/reap/*.json; do
  [ -e "$g" ] || continue
  base=${g%.json}; name=$(basename "$base")
  args=$(python3 -c "import json,sys; print(' '.join(json.load(open(sys.argv[1]))['synth']['args']))" "$g")
  rel=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['tolerance']['sums_rel'])" "$g")
  "$S" -q synth $args -o "g-$name"
  "$S" -q observe -m "g-$name" --data "$base.tokens.jsonl" --format tokens --no-pack --seq-len 4096 -o "g-$name.st"
  python3 cmp.py "g-$name.st" "$base.safetensors" "$rel" || fail "saliency of $name differs from the reference"
  n_golden=$((n_golden + 1))
done
echo "prune_cli_test: OK ($n_golden reference goldens compared)"
