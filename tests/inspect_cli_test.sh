#!/usr/bin/env bash
# sickle synth + sickle inspect through the CLI: every small preset round-trips, --json is valid
# and its byte total equals the data bytes of the shards; bad input gives exit 1 and a message
# naming the field and the tensor; an existing output is refused without --force.
set -euo pipefail
SICKLE=${SICKLE_BIN:-build/bin/sickle}
T=$(mktemp -d "${TMPDIR:-/tmp}/sickle-inspect-cli-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

for spec in "tiny-kimi" "tiny-dsv3" "tiny-kimi --quant fp8" "tiny-dsv3 --quant int4 --dtype f32" "tiny-dsv3 --quant none --layers 4 --experts 8"; do
  set -- $spec
  out="$T/$(echo "$spec" | tr ' ' '_')"
  "$SICKLE" -q synth --preset $spec --seed 3 -o "$out"
  "$SICKLE" inspect "$out" > "$out.txt" || fail "inspect $spec"
  grep -q "^layers" "$out.txt" || fail "no layers line for $spec"
  "$SICKLE" inspect "$out" --json --gpus 2 --gpu-mem 1GiB --overhead 0 --ep > "$out.json" || fail "inspect --json $spec"
  # --json "bytes" == sum over shards of (file size - 8 - header length); no python needed.
  data=0
  for f in "$out"/*.safetensors; do
    n=$(od -An -t u8 -N8 "$f" | tr -d ' ')
    data=$(( data + $(stat -c %s "$f") - 8 - n ))
  done
  got=$(grep -E '^  "bytes": ' "$out.json" | tr -dc '0-9')
  [ "$got" = "$data" ] || fail "inspect --json bytes $got != shard data bytes $data for $spec"
  grep -q '"fits": true' "$out.json" || fail "plan does not fit for $spec"
done

# --scale-layers: the report stands for a deeper model (kimi-k2.5-layers --scale-layers 61 uses this).
"$SICKLE" inspect "$T/tiny-kimi" --scale-layers 10 --json > "$T/scaled.json"
grep -q '"extrapolated_from": 3' "$T/scaled.json" || fail "--scale-layers did not record its source depth"
grep -q '"moe": 9' "$T/scaled.json" || fail "--scale-layers 10 should give 9 MoE layers"

# A config that lies about a shape: exit 1, message names the field and the tensor.
cp -r "$T/tiny-dsv3" "$T/liar"
sed -i 's/"v_head_dim": 16/"v_head_dim": 24/' "$T/liar/config.json"
if "$SICKLE" inspect "$T/liar" 2> "$T/err"; then fail "inspect accepted a lying config"; fi
grep -q "'v_head_dim'" "$T/err" || fail "message does not name v_head_dim: $(cat "$T/err")"
grep -q "model.layers.0.self_attn.kv_b_proj" "$T/err" || fail "message does not name the tensor: $(cat "$T/err")"

# A truncated shard: exit 1, message names the file.
cp -r "$T/tiny-kimi" "$T/cut"
truncate -s -100 "$T/cut/model.safetensors"
if "$SICKLE" inspect "$T/cut" 2> "$T/err"; then fail "inspect accepted a truncated file"; fi
grep -q "model.safetensors" "$T/err" || fail "message does not name the file: $(cat "$T/err")"

# Existing output refused without --force, replaced with it.
if "$SICKLE" -q synth --preset tiny-kimi -o "$T/tiny-kimi" 2> "$T/err"; then fail "overwrote without --force"; fi
grep -q "already exists" "$T/err" || fail "no 'already exists': $(cat "$T/err")"
"$SICKLE" -q synth --preset tiny-kimi --seed 9 -o "$T/tiny-kimi" --force
grep -q '"seed": 9' "$T/tiny-kimi/config.json" || fail "--force did not replace the output"

# Bad sizes name the option.
if "$SICKLE" synth --preset tiny-kimi -o "$T/x" --shard-size 5XB 2> "$T/err"; then fail "accepted --shard-size 5XB"; fi
grep -q -- "--shard-size" "$T/err" || fail "message does not name --shard-size"
echo "inspect_cli_test: OK"
