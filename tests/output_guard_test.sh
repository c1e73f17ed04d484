#!/bin/bash
# End-to-end: no command may destroy its input (issue 21, item 1). Each refused command must
# exit non-zero with one error naming the output and the input, and leave the source directory
# AND its siblings byte-identical (sha256 of every file, and the same set of paths).
set -euo pipefail
S=${SICKLE_BIN:?SICKLE_BIN not set}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir "$T/w"
cd "$T/w"  # everything the commands see; logs and snapshots go to $T
fail() { echo "FAIL: $*" >&2; exit 1; }

mkdir DIR
"$S" -q synth --preset tiny-kimi --seed 1 -o DIR/model
echo "a sibling of the model: must survive" > DIR/notes.txt
python3 -c "
import json, random
r = random.Random(7)
with open('DIR/toks.jsonl', 'w') as f:
    for i in range(6): f.write(json.dumps({'tokens': [r.randrange(512) for _ in range(20)]}) + '\n')
"
"$S" -q observe -m DIR/model --data DIR/toks.jsonl --format tokens --seq-len 16 -o DIR/stats.st
ln -s DIR/model mlink
mkdir outdir

snap() { find . -print | LC_ALL=C sort; find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; }
snap > $T/before.txt

# refused CMD...: must exit non-zero, name both paths ($1 = expected output path text,
# $2 = expected input path text), and change nothing under $T.
refused() {
  local out=$1 in=$2; shift 2
  if "$@" > $T/out.txt 2> $T/err.txt; then fail "accepted: $* (exit 0)"; fi
  grep -q "must not be, contain or lie inside an input" $T/err.txt || fail "unclear error for: $*: $(cat $T/err.txt)"
  grep -qF -- "$out" $T/err.txt || fail "error does not name the output $out: $(cat $T/err.txt)"
  grep -qF -- "$in" $T/err.txt || fail "error does not name the input $in: $(cat $T/err.txt)"
  [ "$(wc -l < $T/err.txt)" -eq 1 ] || fail "error is not one line: $(cat $T/err.txt)"
  rm -f "$T/out.txt" "$T/err.txt"
  snap > $T/after.txt
  cmp -s $T/before.txt $T/after.txt || { diff $T/before.txt $T/after.txt >&2 || true; fail "files changed by: $*"; }
  rm -f $T/after.txt
}

# The cases.
refused "DIR" "DIR/model" "$S" -q prune -m DIR/model --stats DIR/stats.st --keep 8 -o DIR --force
refused "DIR/model/sub" "DIR/model" "$S" -q prune -m DIR/model --stats DIR/stats.st --keep 8 -o DIR/model/sub
refused "DIR/model/model.safetensors" "DIR/model" "$S" -q export-gguf -m DIR/model -o DIR/model/model.safetensors --force
refused "DIR/model/model.safetensors" "DIR/model" \
  "$S" -q observe -m DIR/model --data DIR/toks.jsonl --format tokens --seq-len 16 -o DIR/model/model.safetensors --force
refused "DIR/toks.jsonl" "DIR/toks.jsonl" \
  "$S" -q observe -m DIR/model --data DIR/toks.jsonl --format tokens --seq-len 16 -o DIR/toks.jsonl --force
# The statistics input, the output containing the stats (--force would delete it), through a
# symlink, through `..`, and the other writing commands.
refused "DIR/stats.st" "DIR/stats.st" "$S" -q prune -m DIR/model --stats DIR/stats.st --keep 8 -o DIR/stats.st --force
refused "mlink/sub" "DIR/model" "$S" -q prune -m DIR/model --stats DIR/stats.st --keep 8 -o mlink/sub
refused "DIR/model/../model" "DIR/model" "$S" -q prune -m DIR/model --stats DIR/stats.st --keep 8 -o DIR/model/../model --force
refused "DIR/stats.st" "DIR/stats.st" "$S" -q merge DIR/stats.st -o DIR/stats.st --force
refused "DIR" "DIR/model" "$S" -q sweep -m DIR/model --stats DIR/stats.st --keep 8 --criteria reap \
  --data DIR/toks.jsonl --format tokens -o DIR --force
refused "DIR/model/x.st" "DIR/model" "$S" -q run -m DIR/model --tokens 1,2,3 -n 1 --dump-logits DIR/model/x.st
refused "DIR/model/config.json" "DIR/model" "$S" -q run -m DIR/model --tokens 1,2,3 -n 1 --dump-logits DIR/model/config.json

# An existing directory where a file is expected fails before any work: the error is about the
# output although the data file does not even exist.
if "$S" -q observe -m DIR/model --data missing.jsonl --format tokens -o outdir --force 2> $T/err.txt; then
  fail "observe -o DIR accepted"
fi
grep -q "outdir: is a directory" $T/err.txt || fail "observe -o DIR: $(cat $T/err.txt)"
if "$S" -q export-gguf -m DIR/model -o outdir --force 2> $T/err.txt; then fail "export-gguf -o DIR accepted"; fi
grep -q "outdir: is a directory" $T/err.txt || fail "export-gguf -o DIR: $(cat $T/err.txt)"

# A file where a directory is written is not replaced, --force or not.
if "$S" -q synth --preset tiny-kimi -o DIR/notes.txt --force 2> $T/err.txt; then fail "synth replaced a file"; fi
grep -q "DIR/notes.txt: is not a directory" $T/err.txt || fail "synth -o FILE: $(cat $T/err.txt)"
snap > $T/after.txt
cmp -s $T/before.txt $T/after.txt || fail "files changed by synth -o FILE"

# Outputs beside the inputs (same parent, a name sharing a prefix) are fine.
"$S" -q prune -m DIR/model --stats DIR/stats.st --keep 8 -o DIR/model2 > /dev/null
[ -f DIR/model2/config.json ] || fail "prune beside the model did not write"
"$S" -q export-gguf -m DIR/model -o DIR/model.gguf > /dev/null
"$S" -q merge DIR/stats.st -o DIR/stats.st2
echo "ok"
