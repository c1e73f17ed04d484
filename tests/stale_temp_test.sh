#!/bin/bash
# End-to-end: temp outputs left by a killed run (`.<name>.tmp-XXXXXX` beside the output) are
# removed by the next run for the same target, which says so (path and size); a temp that a
# live process holds (flock), other targets' temps and look-alike names survive (issue 21, item 6).
set -euo pipefail
S=${SICKLE_BIN:?SICKLE_BIN not set}
T=$(mktemp -d)
LOCKER=
cleanup() { touch "$T/release"; [ -z "$LOCKER" ] || wait "$LOCKER" || true; rm -rf "$T"; }
trap cleanup EXIT
cd "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$S" -q synth --preset tiny-kimi --seed 1 -o m
python3 -c "
import json, random
r = random.Random(7)
with open('toks.jsonl', 'w') as f:
    for i in range(6): f.write(json.dumps({'tokens': [r.randrange(512) for _ in range(20)]}) + '\n')
"
"$S" -q observe -m m --data toks.jsonl --format tokens --seq-len 16 -o s.st

# What a kill -9 leaves: the writer's temp dir (with a partial shard), the old output moved
# aside during a --force commit, a temp file of a single-file writer.
mkdir .p.tmp-Ab3dE9 .p.tmp-Zz0000.old
head -c 1048576 /dev/zero > .p.tmp-Ab3dE9/shard-0.part
echo old > .p.tmp-Zz0000.old/config.json
# Look-alikes that are not ours for target p: must survive.
mkdir .p.tmp-short .q.tmp-Ab3dE9 p.tmp-Ab3dE9 .p.tmp-Ab3dE9x
echo keep > .p.tmp-short/f
# A temp dir held by a live writer (flock) must survive too.
mkdir .p.tmp-L1ve00
# (holds the lock until `release` appears; no output, so nothing waits on its pipes)
flock .p.tmp-L1ve00 -c 'touch locked; while [ ! -e release ]; do sleep 0.1; done' > /dev/null 2>&1 &
LOCKER=$!
for _ in $(seq 100); do [ -e locked ] && break; sleep 0.1; done
[ -e locked ] || fail "flock did not start"

"$S" prune -m m --stats s.st --keep 8 -o p > /dev/null 2> err.txt || fail "prune: $(cat err.txt)"
[ -f p/config.json ] || fail "prune wrote no output"
grep -q "removed stale temp output .*\.p\.tmp-Ab3dE9 (1.00 MiB)" err.txt || fail "removal not reported: $(cat err.txt)"
grep -q "\.p\.tmp-Zz0000\.old" err.txt || fail "removal of the moved-aside output not reported: $(cat err.txt)"
[ ! -e .p.tmp-Ab3dE9 ] && [ ! -e .p.tmp-Zz0000.old ] || fail "stale temps left: $(ls -A)"
for keep in .p.tmp-short .q.tmp-Ab3dE9 p.tmp-Ab3dE9 .p.tmp-Ab3dE9x .p.tmp-L1ve00; do
  [ -e "$keep" ] || fail "removed $keep, which is not a stale temp of p"
done
grep -q "\.p\.tmp-L1ve00.*in use" err.txt || fail "skipped live temp not reported: $(cat err.txt)"
touch release; wait "$LOCKER"; LOCKER=; rm release

# Single-file outputs: export-gguf and observe/merge (statistics).
head -c 4096 /dev/zero > .m.gguf.tmp-Qw3rty
"$S" export-gguf -m m -o m.gguf > /dev/null 2> err.txt || fail "export-gguf: $(cat err.txt)"
grep -q "removed stale temp output .*\.m\.gguf\.tmp-Qw3rty (4.00 KiB)" err.txt || fail "gguf: $(cat err.txt)"
[ ! -e .m.gguf.tmp-Qw3rty ] || fail "gguf temp left"
echo x > .s2.st.tmp-As5df6
"$S" observe -m m --data toks.jsonl --format tokens --seq-len 16 -o s2.st > /dev/null 2> err.txt || fail "observe: $(cat err.txt)"
grep -q "removed stale temp output .*\.s2\.st\.tmp-As5df6" err.txt || fail "observe: $(cat err.txt)"
[ ! -e .s2.st.tmp-As5df6 ] || fail "stats temp left"

# A refused run (output exists, no --force) removes nothing.
mkdir .p.tmp-Ab3dE9
if "$S" -q prune -m m --stats s.st --keep 8 -o p 2> /dev/null; then fail "overwrote without --force"; fi
[ -e .p.tmp-Ab3dE9 ] || fail "a refused run removed a temp"

# No temp of any writer is left after successful runs.
rm -rf .p.tmp-Ab3dE9 .p.tmp-short .q.tmp-Ab3dE9 p.tmp-Ab3dE9 .p.tmp-Ab3dE9x .p.tmp-L1ve00
[ -z "$(ls -A | grep -E 'tmp' || true)" ] || fail "temps left: $(ls -A)"
echo "ok"
