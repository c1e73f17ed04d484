#!/bin/bash
# End-to-end: CLI limits are checked before any work, with one clear error naming the flag
# (issue 21, item 6): thread counts >= 1, --shard-size > 0, a context beyond the model's
# max_position_embeddings only with --allow-long-context, observe's default --seq-len clamped
# to a short model's context (as eval does), --data that is a directory or not a regular file;
# serve --max-num-seqs / --prefill-chunk ranges, --chat-template files (issues 14 and 16).
set -euo pipefail
S=${SICKLE_BIN:?SICKLE_BIN not set}
SRC=${SICKLE_SOURCE_DIR:?}
M=$SRC/models/brown-kimi  # max_position_embeddings 512
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }

# refused PATTERN CMD...: non-zero exit (not a timeout) and PATTERN in the error.
refused() {
  local pat=$1; shift
  local rc=0
  timeout 20 "$@" < /dev/null > out.txt 2> err.txt || rc=$?
  [ "$rc" -ne 0 ] || fail "accepted: $*"
  [ "$rc" -ne 124 ] || fail "ran on (not refused up front): $*"
  grep -q -- "$pat" err.txt || fail "error for '$*' lacks '$pat': $(cat err.txt)"
}

head -c 3000 "$M/data/valid.txt" > small.txt
mkdir datadir
printf '{"tokens": [1, 2, 3, 4, 5, 6, 7, 8]}\n' > toks.jsonl
"$S" -q observe -m "$M" --data toks.jsonl --format tokens --seq-len 8 -o s.st

# Thread counts.
for t in 0 -3; do
  refused "--threads" "$S" run -m "$M" --tokens 1,2,3 -n 1 -t "$t"
  refused "--threads" "$S" chat -m "$M" -t "$t"
  refused "--threads" "$S" observe -m "$M" --data toks.jsonl --format tokens --threads "$t" -o x.st
  refused "--threads" "$S" eval -m "$M" --data toks.jsonl --format tokens --threads "$t"
  refused "--threads" "$S" sweep -m "$M" --stats s.st --keep 16 --data toks.jsonl --format tokens --threads "$t" -o rep
  refused "--threads" "$S" serve -m "$M" --port 0 --threads "$t"
done
[ ! -e x.st ] && [ ! -e rep ] || fail "a refused command wrote output"

# Step sizes: zero or negative would loop forever or divide by zero.
for v in 0 -1; do
  refused "--chunk" "$S" eval -m "$M" --data toks.jsonl --format tokens --chunk "$v"
  refused "--step-tokens" "$S" observe -m "$M" --data toks.jsonl --format tokens --step-tokens "$v" -o x.st
done

# Serving sizes: no sequence, or no prompt token per step, would never make progress.
for v in 0 -2; do
  refused "--max-num-seqs" "$S" serve -m "$M" --port 0 --max-num-seqs "$v"
  refused "--prefill-chunk" "$S" serve -m "$M" --port 0 --prefill-chunk "$v"
done
refused "--max-num-seqs" "$S" serve -m "$M" --port 0 --max-num-seqs 100000

# --chat-template FILE (vLLM's flag): a missing file, a directory or a template that does not
# parse is refused up front, naming the path.
printf '{%% if %%}' > bad.jinja
for cmd in "serve --port 0" "chat" "run -p hi --chat -n 1"; do
  # shellcheck disable=SC2086
  refused "no-such.jinja" "$S" $cmd -m "$M" --chat-template no-such.jinja
  # shellcheck disable=SC2086
  refused "datadir" "$S" $cmd -m "$M" --chat-template datadir
done
refused "bad.jinja" "$S" serve -m "$M" --port 0 --chat-template bad.jinja

# Shard sizes.
refused "--shard-size" "$S" prune -m "$M" --stats s.st --keep 16 --shard-size 0 -o p
refused "--shard-size" "$S" synth --preset tiny-kimi --shard-size 0 -o syn
[ ! -e p ] && [ ! -e syn ] || fail "a refused command wrote output"

# Context beyond the model's positions.
refused "max_position_embeddings" "$S" serve -m "$M" --port 0 --max-model-len 100000000
grep -q -- "--allow-long-context" err.txt || fail "the error does not name the override: $(cat err.txt)"
refused "max_position_embeddings" "$S" run -m "$M" --tokens 1,2,3 -n 1 -c 100000
"$S" -q run -m "$M" --tokens 1,2,3 -n 1 -c 100000 --allow-long-context > /dev/null 2>&1 ||
  fail "run --allow-long-context refused"
refused "max_position_embeddings" "$S" chat -m "$M" -c 4096
echo "hello" | "$S" chat -m "$M" -n 2 > /dev/null 2> err.txt || fail "chat with its default context: $(cat err.txt)"

# observe's default --seq-len (2048) on a 512-position model: clamped with a warning, as eval.
"$S" observe -m "$M" --data small.txt -o c.st > /dev/null 2> err.txt || fail "observe default seq-len: $(cat err.txt)"
grep -q "seq-len 2048 exceeds the model's context 512: using 512" err.txt || fail "no clamp warning: $(cat err.txt)"

# --data that is not a regular file.
refused "datadir: is a directory" "$S" observe -m "$M" --data datadir -o x.st
refused "datadir: is a directory" "$S" eval -m "$M" --data datadir
refused "/dev/zero: not a regular file" "$S" observe -m "$M" --data /dev/zero -o x.st
refused "/dev/zero: not a regular file" "$S" eval -m "$M" --data /dev/zero
# A pipe the user names (process substitution) is read to its end.
"$S" -q observe -m "$M" --data <(cat toks.jsonl) --format tokens --seq-len 8 -o fifo.st || fail "observe from a pipe"
[ -f fifo.st ] || fail "observe from a pipe wrote nothing"
echo "ok"
