#!/usr/bin/env bash
# Images through `sickle serve` end to end: the official openai client (tests/server) sends
# image_url parts (base64 PNG data: URLs) to a synth tiny-kimi with a vision tower.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
: "${SICKLE_BIN:=$src/build/bin/sickle}"
export SICKLE_BIN SICKLE_SOURCE_DIR="$src" SICKLE_BUILD_DIR="${SICKLE_BUILD_DIR:-$(dirname "$(dirname "$SICKLE_BIN")")}"
command -v node >/dev/null || { echo "serve_vision_e2e: node (>= 18) is required" >&2; exit 1; }
[ -d "$src/tests/server/node_modules" ] || (cd "$src/tests/server" && npm ci --no-audit --no-fund --loglevel=error)
cd "$src/tests/server" && node --test vision.test.mjs
