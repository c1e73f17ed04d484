#!/bin/bash
# Prune throughput vs `cp` of the output bytes, peak RSS, and observe vs plain prefill tok/s.
#   bench/prune_bench.sh SICKLE_BIN WORKDIR [prune|observe|all]
# prune:   synth --preset kimi-k2.5-layers --layers 3 (~24 GB), observe 32 tokens, prune to half
#          the experts (/usr/bin/time -v), cp -r of the output, prune again (warm); deletes all.
# observe: synth --preset mini (~3 GB), observe N tokens with and without the observer.
# Needs ~40 GB free for `prune` (check `df -h` first).
set -euo pipefail
S=${1:?sickle binary}; W=${2:?work dir}; WHAT=${3:-all}
mkdir -p "$W"; cd "$W"
rss() { grep "Maximum resident" "$1" | awk '{printf "%.0f MiB", $NF/1024}'; }
wall() { grep "Elapsed (wall" "$1" | awk '{print $NF}'; }
tok() {  # random token ids as {"tokens": [...]} lines
  python3 -c "
import json, random, sys
r = random.Random(1); n, L, V = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for i in range(n): print(json.dumps({'tokens': [r.randrange(V) for _ in range(L)]}))" "$@"
}
if [ "$WHAT" = prune ] || [ "$WHAT" = all ]; then
  df -h "$W" | tail -1
  [ -d k3 ] || "$S" -q synth --preset kimi-k2.5-layers --layers 3 -o k3
  tok 2 16 1000 > k3.jsonl
  "$S" -q observe -m k3 --data k3.jsonl --format tokens --seq-len 16 -o k3.st --force
  E=$(python3 -c "import json; print(json.load(open('k3/config.json'))['text_config']['n_routed_experts'])")
  rm -rf k3-half k3-cp
  sync
  /usr/bin/time -v "$S" -q prune -m k3 --stats k3.st --keep $((E / 2)) -o k3-half > prune1.out 2> prune1.time
  sync
  /usr/bin/time -v cp -r k3-half k3-cp 2> cp.time; sync
  B=$(du -sb k3-half | cut -f1)
  echo "output $(numfmt --to=iec $B)B; prune: $(wall prune1.time) (peak RSS $(rss prune1.time)); cp -r of the output: $(wall cp.time) (peak RSS $(rss cp.time))"
  if [ "${REPEAT:-0}" = 1 ]; then  # a second round (page cache warmer)
    rm -rf k3-cp; sync
    /usr/bin/time -v "$S" -q prune -m k3 --stats k3.st --keep $((E / 2)) -o k3-half --force > prune2.out 2> prune2.time
    sync
    /usr/bin/time -v cp -r k3-half k3-cp 2> cp2.time; sync
    echo "again: prune $(wall prune2.time) (peak RSS $(rss prune2.time)); cp $(wall cp2.time)"
  fi
  cat prune1.out
  rm -rf k3-half k3-cp
  [ "${KEEP_K3:-0}" = 1 ] || rm -rf k3 k3.st
fi
if [ "$WHAT" = observe ] || [ "$WHAT" = all ]; then
  [ -d mini ] || "$S" -q synth --preset mini -o mini
  tok ${OBS_SEQS:-4} ${OBS_LEN:-256} 32000 > mini.jsonl
  "$S" observe -m mini --data mini.jsonl --format tokens --seq-len ${OBS_LEN:-256} --no-stats -o /dev/null --force 2>/dev/null | tail -1
  "$S" observe -m mini --data mini.jsonl --format tokens --seq-len ${OBS_LEN:-256} -o mini.st --force 2>/dev/null | tail -1
  "$S" observe -m mini --data mini.jsonl --format tokens --seq-len ${OBS_LEN:-256} --no-stats -o /dev/null --force 2>/dev/null | tail -1
  [ "${KEEP_MINI:-0}" = 1 ] || rm -rf mini mini.st
fi
