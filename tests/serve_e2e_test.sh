#!/usr/bin/env bash
# End-to-end tests of `sickle serve` with the official openai npm client (tests/server/*.mjs).
# Needs node >= 18 and npm (installs tests/server/node_modules from package-lock.json once).
set -euo pipefail
SRC="${SICKLE_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
export SICKLE_BIN="${SICKLE_BIN:-$SRC/build/bin/sickle}"
export SICKLE_SOURCE_DIR="$SRC"
export SICKLE_BUILD_DIR="${SICKLE_BUILD_DIR:-$(dirname "$(dirname "$SICKLE_BIN")")}"

command -v node >/dev/null || { echo "serve_e2e: node is required (>= 18)"; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 18 ]; then echo "serve_e2e: node $(node --version) < 18 (openai@4 needs >= 18)"; exit 1; fi

cd "$SRC/tests/server"
if [ ! -d node_modules/openai ]; then
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
fi
exec node --test e2e.test.mjs
