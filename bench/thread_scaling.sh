#!/usr/bin/env bash
# Thread scaling of prefill and decode: one table row per thread count, each with the read
# bandwidth and f32 FMA peak that bench/membw measures for the same threads, so every figure
# comes with the fraction of the machine's limit it reaches (issue 17 asks for 1, 2, 4, 8, 16).
#
#   bench/thread_scaling.sh MODEL_DIR [BUILD_DIR]
#   env: THREADS="1 2 4 8 16" PREFILL=512 DECODE=64 SICKLE_ARGS="--bf16-acts" (extra `sickle run` flags)
#
# Thread counts above the machine's cores are skipped. Prefill FMA fraction = 2 x the parameters
# multiplied per prompt token (inspect's active parameters less embedding and lm_head, as
# bench/vs_llamacpp counts them; attention over the context not counted) x tok/s / the peak.
# Decode bandwidth fraction = weight bytes per token (inspect) x tok/s / the bandwidth.
# Both runs pass --warmup (steady state, as llama-bench and bench/vs_llamacpp time).
# A benchmark, not a test: run it on an otherwise idle machine.
set -euo pipefail
MODEL=${1:?usage: bench/thread_scaling.sh MODEL_DIR [BUILD_DIR]}
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${2:-$SRC/build}" && pwd)
SICKLE=$BUILD/bin/sickle MEMBW=$BUILD/bench/membw
for b in "$SICKLE" "$MEMBW"; do [ -x "$b" ] || { echo "missing $b (build first, or pass the build dir)" >&2; exit 2; }; done
THREADS=${THREADS:-"1 2 4 8 16"} PREFILL=${PREFILL:-512} DECODE=${DECODE:-64}
CORES=$(nproc)

# Parameters multiplied per prompt token, and weight bytes read per decoded token.
inspect=$("$SICKLE" inspect "$MODEL")
scale() { case "$2" in K) echo "$1 * 1e3" ;; M) echo "$1 * 1e6" ;; B) echo "$1 * 1e9" ;; *) echo "$1" ;; esac; }
active=$(echo "$inspect" | sed -nE 's/.* ([0-9.]+) ([KMB]) active per token.*/\1 \2/p' | head -1)
embed=$(echo "$inspect" | sed -nE 's/^ +embedding .* ([0-9.]+) ([KMB]) params.*/\1 \2/p' | head -1)
head=$(echo "$inspect" | sed -nE 's/^ +lm_head .* ([0-9.]+) ([KMB]) params.*/\1 \2/p' | head -1)
params=$(awk "BEGIN { print $(scale $active) - $(scale ${embed:-0 X}) - $(scale ${head:-0 X}) }")

ids() { awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++) printf "%s%d", (i ? "," : ""), 100 + (i * 7) % 30000 }'; }
cat "$MODEL"/*.safetensors > /dev/null  # page cache warm: time the engine, not the disk

printf "%s: %s cores, %.3g params multiplied per prompt token, prefill %s tokens, decode %s\n" \
  "$(basename "$MODEL")" "$CORES" "$params" "$PREFILL" "$DECODE"
printf "%7s %12s %8s %9s %12s %8s %8s %10s %10s\n" threads "prefill t/s" "x 1thr" "FMA frac" \
  "decode t/s" "x 1thr" "bw frac" "GB/s" "GFLOP/s"
p1="" d1=""
for t in $THREADS; do
  [ "$t" -le "$CORES" ] || { echo "(skipping $t threads: $CORES cores)"; continue; }
  mb=$("$MEMBW" "$t")
  bw=$(echo "$mb" | sed -nE 's/.*bandwidth: ([0-9.]+) GB\/s.*/\1/p')
  peak=$(echo "$mb" | sed -nE 's/.*FMA peak: ([0-9.]+) GFLOP\/s.*/\1/p')
  pre=$("$SICKLE" run -m "$MODEL" --tokens "$(ids "$PREFILL")" -n 1 -t "$t" --ctx $((PREFILL + 32)) \
        --allow-long-context --warmup --membw "$bw" ${SICKLE_ARGS:-} 2>&1 | sed -nE 's/.*prompt [0-9]+ tok in [0-9.]+ s \(([0-9.]+) tok\/s\).*/\1/p')
  dec=$("$SICKLE" run -m "$MODEL" --tokens "$(ids 16)" -n $((DECODE + 1)) --ignore-eos -t "$t" \
        --ctx $((DECODE + 64)) --warmup --membw "$bw" ${SICKLE_ARGS:-} 2>&1)
  dts=$(echo "$dec" | sed -nE 's/.*generation [0-9]+ tok in [0-9.]+ s \(([0-9.]+) tok\/s\).*/\1/p')
  dfr=$(echo "$dec" | sed -nE 's/.*= ([0-9.]+) of [0-9.]+ GB\/s (measured|given).*/\1/p')
  p1=${p1:-$pre} d1=${d1:-$dts}
  awk -v t="$t" -v p="$pre" -v d="$dts" -v p1="$p1" -v d1="$d1" -v par="$params" -v pk="$peak" \
      -v bw="$bw" -v dfr="$dfr" 'BEGIN {
    printf "%7d %12.1f %8.2f %9.3f %12.2f %8.2f %8s %10.1f %10.1f\n", t, p, p / p1, 2 * par * p / (pk * 1e9),
      d, d / d1, dfr, bw, pk }'
done
