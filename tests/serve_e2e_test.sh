#!/usr/bin/env bash
# End-to-end tests of `sickle serve` with the official openai npm client (tests/server/*.mjs).
# Needs node >= 18 and npm (installs tests/server/node_modules from package-lock.json once).
#
# Runs the suite under every Node it finds: $SICKLE_TEST_NODES (space-separated node commands)
# if set, else the system node, plus Debian 12's Node 18 when the system node is another and
# tests/server/debian-node18.sh unpacked one into $SICKLE_BUILD_DIR/node18 (`make node18`), so
# a machine with a newer Node also checks the Node a bare Debian 12 has.
set -euo pipefail
SRC="${SICKLE_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
export SICKLE_BIN="${SICKLE_BIN:-$SRC/build/bin/sickle}"
export SICKLE_SOURCE_DIR="$SRC"
export SICKLE_BUILD_DIR="${SICKLE_BUILD_DIR:-$(dirname "$(dirname "$SICKLE_BIN")")}"

command -v node >/dev/null || { echo "serve_e2e: node is required (>= 18)"; exit 1; }
major() { "$1" -p 'process.versions.node.split(".")[0]'; }
if [ -n "${SICKLE_TEST_NODES:-}" ]; then
  read -r -a nodes <<<"$SICKLE_TEST_NODES"
else
  nodes=(node)
  n18="$SICKLE_BUILD_DIR/node18/node"
  if [ "$(major node)" != 18 ] && [ -x "$n18" ] && "$n18" --version >/dev/null 2>&1; then nodes+=("$n18"); fi
fi
for n in "${nodes[@]}"; do
  if [ "$(major "$n")" -lt 18 ]; then echo "serve_e2e: $n is node $("$n" --version) < 18 (openai@4 needs >= 18)"; exit 1; fi
done

cd "$SRC/tests/server"
if [ ! -d node_modules/openai ]; then
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
fi
rc=0
for n in "${nodes[@]}"; do
  echo "== serve_e2e under node $("$n" --version) ($n)"
  "$n" --test e2e.test.mjs api.test.mjs || rc=1
done
exit $rc
