#!/usr/bin/env bash
# Structured outputs end to end: `sickle serve` on the demo model, the official openai client
# (tests/server) and ajv as the validator (tests/grammar); installs both from their lock files once.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
: "${SICKLE_BIN:=$src/build/bin/sickle}"
export SICKLE_BIN SICKLE_SOURCE_DIR="$src" SICKLE_BUILD_DIR="${SICKLE_BUILD_DIR:-$(dirname "$(dirname "$SICKLE_BIN")")}"
command -v node >/dev/null || { echo "structured_e2e: node (>= 18) is required" >&2; exit 1; }
for d in server grammar; do
  [ -d "$src/tests/$d/node_modules" ] || (cd "$src/tests/$d" && npm ci --no-audit --no-fund --loglevel=error)
done
cd "$src/tests/server" && node --test structured.test.mjs
