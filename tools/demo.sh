#!/usr/bin/env bash
# The demo: the whole pipeline that exists today. Called by `make demo`.
set -euo pipefail
SICKLE=${1:-build/bin/sickle}
OUT=${DEMO_OUT:-out/demo}
mkdir -p "$OUT"
echo "== sickle synth --preset tiny-kimi"
"$SICKLE" synth --preset tiny-kimi --seed 1 -o "$OUT/tiny-kimi" --force
echo "== sickle inspect"
"$SICKLE" inspect "$OUT/tiny-kimi"
