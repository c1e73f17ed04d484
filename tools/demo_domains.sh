#!/usr/bin/env bash
# The second half of `make demo` (issue 19): on models/tri-kimi (English prose, code, German),
# prune 75% of the experts with REAP twice — calibrated on code, and calibrated on German — and
# evaluate both on held-out code against the original through the README's gate. Matched
# calibration keeps code working; mismatched calibration breaks it, and `sickle eval --fail-if`
# says so (exit 2).
set -euo pipefail
SICKLE=${1:-build/bin/sickle}
MODEL=${DOMAINS_MODEL:-models/tri-kimi}
OUT=${DEMO_OUT:-out/demo}/domains
EVAL_TOKENS=${DEMO_EVAL_TOKENS:-4000}
GATE=${DEMO_GATE:-ppl_ratio>1.2}
SEQ=128
mkdir -p "$OUT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
N=$("$SICKLE" inspect "$MODEL" --json | sed -n 's/.*"n_routed_experts": *\([0-9]*\).*/\1/p' | head -1)
KEEP=$(( N / 4 ))

step "$MODEL: REAP, keep $KEEP of $N experts per layer, calibrated on code vs on German"
for cal in code de; do
  "$SICKLE" -q observe -m "$MODEL" --data "$MODEL/data/calib/$cal.txt" --seq-len $SEQ -o "$OUT/stats_$cal.safetensors" --force
  "$SICKLE" -q prune -m "$MODEL" --stats "$OUT/stats_$cal.safetensors" --keep $KEEP -o "$OUT/pruned_$cal" --force
done

col() {  # col FILE NAME -> the value of column NAME in a one-row CSV
  local file=$1 name=$2 i
  IFS=, read -r -a head < <(sed -n 1p "$file")
  IFS=, read -r -a row < <(sed -n 2p "$file")
  for i in "${!head[@]}"; do [ "${head[$i]}" = "$name" ] && { echo "${row[$i]}"; return; }; done
  echo "-"
}
step "sickle eval on held-out code against the original, gate \"$GATE\""
printf '%-22s %10s %8s %8s %9s  %s\n' "calibration" "ppl ratio" "top-1" "KL" "line-pre" "sickle eval --fail-if"
"$SICKLE" -q eval -m "$MODEL" --data "$MODEL/data/genre/code.txt" --seq-len $SEQ --max-tokens "$EVAL_TOKENS" --csv \
  > "$OUT/eval_original.csv"
printf '%-22s %10s %8s %8s %9.3f\n' "(original, unpruned)" "1" "1" "0" "$(col "$OUT/eval_original.csv" line_prefix)"
for cal in code de; do
  rc=0
  "$SICKLE" -q eval -m "$OUT/pruned_$cal" --teacher "$MODEL" --data "$MODEL/data/genre/code.txt" --seq-len $SEQ \
    --max-tokens "$EVAL_TOKENS" --fail-if "$GATE" --csv > "$OUT/eval_$cal.csv" || rc=$?
  [ $rc -le 2 ] || exit $rc
  f="$OUT/eval_$cal.csv"
  printf '%-22s %10.3f %8.3f %8.3f %9.3f  %s\n' "$cal" "$(col "$f" ppl_ratio)" "$(col "$f" top1)" "$(col "$f" kl)" \
    "$(col "$f" line_prefix)" "$([ $rc -eq 0 ] && echo "pass (exit 0)" || echo "FAIL (exit 2)")"
done
