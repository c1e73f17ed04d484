#!/usr/bin/env bash
# Runs the libFuzzer targets of a fuzz build (Makefile: `make fuzz`, and `make test` for the
# regression run): each target first replays its committed seed corpus tests/fuzz/<target>/
# and what earlier runs found (BUILD/corpus/<target>/), then fuzzes for SECONDS. A crash, leak,
# UB report, timeout (> 10 s per input) or allocation over 2 GB stops it with exit 1 and
# names the input that did it (BUILD/artifacts/<target>/): add that input to the seed corpus
# as regress-<what> with the fix.
#   tools/fuzz.sh BUILD SECONDS [TARGET...]     (default: every binary in BUILD/fuzz)
set -euo pipefail
build=${1:?usage: tools/fuzz.sh BUILD SECONDS [TARGET...]}
seconds=${2:?usage: tools/fuzz.sh BUILD SECONDS [TARGET...]}
shift 2
src=$(cd "$(dirname "$0")/.." && pwd)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$build"/fuzz/*_fuzz; do targets+=("$(basename "$f")"); done
fi
[ ${#targets[@]} -gt 0 ] && [ -x "$build/fuzz/${targets[0]}" ] || { echo "no fuzz targets in $build/fuzz" >&2; exit 1; }
total=0
for t in "${targets[@]}"; do
  seeds="$src/tests/fuzz/$t"
  [ -d "$seeds" ] || { echo "$t: no seed corpus $seeds" >&2; exit 1; }
  mkdir -p "$build/corpus/$t" "$build/artifacts/$t"
  log="$build/artifacts/$t/last.log"
  start=$(date +%s)
  if ! "$build/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$build/artifacts/$t/" "$build/corpus/$t" "$seeds" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "FAIL $t: see $log; the input is $(ls -t "$build/artifacts/$t"/{crash,leak,timeout,oom,slow-unit}-* 2>/dev/null | head -1)" >&2
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  total=$((total + ${execs:-0}))
  printf '%-24s %9s executions in %3ss, 0 crashes (%s seeds)\n' "$t" "${execs:-?}" "$(( $(date +%s) - start ))" \
    "$(ls "$seeds" | wc -l)"
done
echo "fuzz: ${#targets[@]} targets, $total executions, 0 crashes"
