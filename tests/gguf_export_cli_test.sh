#!/usr/bin/env bash
# e2e: `sickle export-gguf` through the CLI on a synth checkpoint: output summary, the file is a
# GGUF, refusal to overwrite without --force (old file intact), --force, bad --type rejected,
# no leftovers.
set -euo pipefail
BIN=${SICKLE_BIN:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BIN" synth --preset tiny-kimi -o "$tmp/ck" >/dev/null 2>&1
"$BIN" export-gguf -m "$tmp/ck" -o "$tmp/m.gguf" --type q8_0 >"$tmp/out.txt" 2>/dev/null
grep -q "int4 blocks -> Q4_0 (0 scales rounded to f16)" "$tmp/out.txt" || { cat "$tmp/out.txt"; exit 1; }
grep -q "tokenizer: none in the checkpoint" "$tmp/out.txt" || { cat "$tmp/out.txt"; exit 1; }
[ "$(head -c 4 "$tmp/m.gguf")" = "GGUF" ] || { echo "FAIL: no GGUF magic"; exit 1; }
before=$(sha256sum "$tmp/m.gguf")
if "$BIN" export-gguf -m "$tmp/ck" -o "$tmp/m.gguf" >"$tmp/err.txt" 2>&1; then echo "FAIL: overwrote without --force"; exit 1; fi
grep -q "exists" "$tmp/err.txt" || { cat "$tmp/err.txt"; exit 1; }
[ "$(sha256sum "$tmp/m.gguf")" = "$before" ] || { echo "FAIL: refused export changed the file"; exit 1; }
"$BIN" export-gguf -m "$tmp/ck" -o "$tmp/m.gguf" --type bf16 --force >/dev/null 2>&1
[ "$(sha256sum "$tmp/m.gguf")" != "$before" ] || { echo "FAIL: --force --type bf16 wrote the same bytes as q8_0"; exit 1; }
if "$BIN" export-gguf -m "$tmp/ck" -o "$tmp/x.gguf" --type q4_k >/dev/null 2>&1; then echo "FAIL: accepted --type q4_k"; exit 1; fi
[ ! -e "$tmp/x.gguf" ] && [ -z "$(ls -A "$tmp" | grep -E '\.tmp-|sickle-tmp' || true)" ] || { echo "FAIL: leftovers"; ls -A "$tmp"; exit 1; }
echo "ok"
