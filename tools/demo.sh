#!/usr/bin/env bash
# `make demo`: the whole story on the model shipped in models/brown-kimi —
# inspect -> observe (calibration slice) -> prune half the experts with REAP -> eval against
# the original -> a short generation from the pruned model -> a before/after table.
set -euo pipefail
SICKLE=${1:-build/bin/sickle}
MODEL=${DEMO_MODEL:-models/brown-kimi}
OUT=${DEMO_OUT:-out/demo}
CALIB_BYTES=${DEMO_CALIB_BYTES:-120000}   # ~40k tokens of the training split
EVAL_TOKENS=${DEMO_EVAL_TOKENS:-16000}    # held-out test tokens scored
mkdir -p "$OUT"
start=$(date +%s)
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

N_EXPERTS=$("$SICKLE" inspect "$MODEL" --json | sed -n 's/.*"n_routed_experts": *\([0-9]*\).*/\1/p' | head -1)
KEEP=$(( N_EXPERTS / 2 ))
SEQ=128

step "sickle inspect $MODEL"
"$SICKLE" inspect "$MODEL"

step "sickle observe: calibration on the first ${CALIB_BYTES} bytes of the training split"
head -c "$CALIB_BYTES" "$MODEL/data/train_calib.txt" > "$OUT/calib.txt"
"$SICKLE" observe -m "$MODEL" --data "$OUT/calib.txt" --seq-len $SEQ -o "$OUT/stats.safetensors" --force
"$SICKLE" stats show "$OUT/stats.safetensors" | head -20

step "sickle prune: REAP, keep $KEEP of $N_EXPERTS experts per layer"
"$SICKLE" prune -m "$MODEL" --stats "$OUT/stats.safetensors" --keep "$KEEP" --criterion reap -o "$OUT/pruned" --force

step "sickle eval: the pruned model against the original on held-out test documents"
"$SICKLE" -q eval -m "$MODEL" --data "$MODEL/data/test.txt" --seq-len $SEQ --max-tokens "$EVAL_TOKENS" --csv > "$OUT/eval_original.csv"
set +e
"$SICKLE" -q eval -m "$OUT/pruned" --teacher "$MODEL" --data "$MODEL/data/test.txt" --seq-len $SEQ \
  --max-tokens "$EVAL_TOKENS" --fail-if "ppl_ratio>1.5" --csv > "$OUT/eval_pruned.csv"
gate=$?
set -e
[ $gate -le 2 ] || exit $gate

step "sickle run: the pruned model continues \"The jury\""
"$SICKLE" run -m "$OUT/pruned" -p "The jury" -n 40 --seed 1 --temperature 0.8 --top-p 0.95
echo

# A before/after table from the two CSVs (columns found by name).
col() {  # col FILE NAME -> value
  local file=$1 name=$2 i=1
  IFS=, read -r -a head < <(sed -n 1p "$file")
  IFS=, read -r -a row < <(sed -n 2p "$file")
  for i in "${!head[@]}"; do [ "${head[$i]}" = "$name" ] && { echo "${row[$i]}"; return; }; done
  echo "-"
}
size() { du -sb --exclude=data "$1" | cut -f1 | awk '{printf "%.1f MB", $1/1e6}'; }
step "before / after"
printf '%-22s %8s %10s %10s %8s %8s %10s\n' "model" "experts" "size" "ppl" "top-1" "top-5" "KL"
printf '%-22s %8s %10s %10.3f %8s %8s %10s\n' "original" "$N_EXPERTS" "$(size "$MODEL")" "$(col "$OUT/eval_original.csv" ppl)" "1" "1" "0"
printf '%-22s %8s %10s %10.3f %8.3f %8.3f %10.4f\n' "REAP 50% pruned" "$KEEP" "$(size "$OUT/pruned")" \
  "$(col "$OUT/eval_pruned.csv" ppl)" "$(col "$OUT/eval_pruned.csv" top1)" "$(col "$OUT/eval_pruned.csv" top5)" \
  "$(col "$OUT/eval_pruned.csv" kl)"
echo
echo "gate ppl_ratio>1.5: $([ $gate -eq 0 ] && echo pass || echo FAIL) (ratio $(col "$OUT/eval_pruned.csv" ppl_ratio))"
echo "scored $(col "$OUT/eval_pruned.csv" tokens) held-out tokens; outputs in $OUT/; demo took $(( $(date +%s) - start )) s"
