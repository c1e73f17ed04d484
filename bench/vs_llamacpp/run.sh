#!/usr/bin/env bash
# sickle vs llama.cpp (node-llama-cpp 3.21.1, prebuilt CPU binaries) on the same GGUF weights,
# same thread count: `synth --preset mini`, the demo model (models/brown-kimi) and, on request, the
# real-dimension model `kimi-k2.5-72` (`synth --preset kimi-k2.5-layers --experts 72`: Kimi-K2.5's
# hidden 7168, 64 heads, 2048-wide experts, vocabulary 163840, with the seed prune's 72 experts;
# 10 GiB, plus as much again for its GGUF). Not CI.
#   bench/vs_llamacpp/run.sh [BUILD_DIR]     env: THREADS=2 WORK=/tmp/sickle-vs-llamacpp
#                                                 PREFILL=128,512 DECODE=64 MODELS="mini brown-kimi"
#                                                 SICKLE_ARGS="--bf16-acts" (extra `sickle run` flags)
#                                                 WARMUP=1 (0: time cold first evaluations)
#                                                 ROUNDS=1 (N: best of N interleaved rounds)
# Needs: node >= 20 and node-llama-cpp: NLC_DIR=build/llamacpp after tools/llamacpp-setup.sh
# build/llamacpp (its node is used when present), or `npm install` in bench/vs_llamacpp.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
BUILD=${1:-$SRC/build}
SICKLE=$BUILD/bin/sickle
[ -x "$SICKLE" ] || { echo "no sickle binary at $SICKLE (build first, or pass the build dir)"; exit 2; }
BUILD=$(cd "$BUILD" && pwd)  # absolute: node resolves NLC_DIR from another directory
SICKLE=$BUILD/bin/sickle
THREADS=${THREADS:-2}
WORK=${WORK:-/tmp/sickle-vs-llamacpp}
PREFILL=${PREFILL:-128,512}
DECODE=${DECODE:-64}
MODELS=${MODELS:-"mini brown-kimi"}
export NLC_DIR=${NLC_DIR:-$BUILD/llamacpp}
NODE=node
[ -x "$NLC_DIR/node" ] && NODE=$NLC_DIR/node
MEMBW=""
for m in "$BUILD/bench/membw" "$SRC"/build*/bench/membw; do [ -x "$m" ] && { MEMBW=$m; break; }; done
mkdir -p "$WORK"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (shared machine: figures vary run to run)"
for name in $MODELS; do
  if [ "$name" = mini ]; then
    dir=$WORK/mini
    [ -f "$dir/config.json" ] || "$SICKLE" synth --preset mini -o "$dir" --force
  elif [ "$name" = kimi-k2.5-72 ]; then
    dir=$WORK/k25-72
    [ -f "$dir/config.json" ] || "$SICKLE" synth --preset kimi-k2.5-layers --experts 72 -o "$dir" --force
  else
    dir=$SRC/models/$name
  fi
  gguf=$WORK/$name.gguf
  # bf16 for the non-expert weights: llama.cpp then computes with exactly sickle's weights.
  [ -f "$gguf" ] && [ "$gguf" -nt "$dir/config.json" ] || "$SICKLE" export-gguf -m "$dir" -o "$gguf" --type bf16 --force
  "$NODE" "$HERE/bench.mjs" --sickle "$SICKLE" --model "$dir" --gguf "$gguf" --name "$name" --threads "$THREADS" \
    --prefill "$PREFILL" --decode "$DECODE" ${MEMBW:+--membw "$MEMBW"} --sickle-args "${SICKLE_ARGS:-}" --warmup "${WARMUP:-1}" --rounds "${ROUNDS:-1}"
done
