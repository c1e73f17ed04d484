#!/usr/bin/env bash
# Issue 19's experiments on the three-domain demo model (models/tri-kimi: English prose, code,
# German). Every pruned checkpoint is evaluated on each domain's held-out test documents
# against the original: perplexity, KL(teacher||student), top-1 agreement and next-line exact
# match and line prefix (how much of the next line greedy decoding gets right: the generation
# metrics). Steps:
#   0. observe: calibration statistics per domain (data/calib/<d>.txt, training documents) and
#      the held-out load per domain -> specialization table + heatmap (tools/domain_load.py)
#   1. criteria: reap, ean, frequency, weighted_frequency, random at 25/50/75/81% pruned
#      (keep 48/32/16/12 of 64), calibrated on the mixture
#   2. calibration domain: REAP calibrated on en, code, de (mix is step 1) x evaluation domain
#   3. the seed's two-stage prune: 50% with stage-1 statistics, then to 19% kept reusing them,
#      vs re-observing the stage-1 model, vs one-shot
#   4. the gate: `sickle eval --fail-if` with the README's thresholds on those checkpoints
# tools/domain_report.py turns OUT/ into docs/domains/. Usage: tools/domain_experiments.sh [SICKLE]
set -euo pipefail
SICKLE=${1:-build/bin/sickle}
M=${MODEL:-models/tri-kimi}
OUT=${OUT:-out/domains}
TOK=${EVAL_TOKENS:-6000}
KEEPS=${KEEPS:-48,32,16,12}
SEQ=128
DOMS=(en code de)
mkdir -p "$OUT"
q() { "$SICKLE" -q "$@"; }
GATE=${GATE:-ppl_ratio>1.2}  # the README's recommended gate
ev() {  # ev NAME MODEL DOMAIN: eval against the original through the gate -> OUT/eval/NAME_DOMAIN.json
  mkdir -p "$OUT/eval"
  local rc=0
  q eval -m "$2" --teacher "$M" --data "$M/data/genre/$3.txt" --seq-len $SEQ --max-tokens "$TOK" \
    --fail-if "$GATE" --json > "$OUT/eval/$1_$3.json" || rc=$?
  [ $rc -le 2 ] || exit $rc  # 2 = the gate fired (recorded in the JSON), anything else is an error
}

echo "== 0. observe"
for c in en code de mix; do
  q observe -m "$M" --data "$M/data/calib/$c.txt" --seq-len $SEQ -o "$OUT/stats_$c.safetensors" --force
done
for d in "${DOMS[@]}"; do
  q observe -m "$M" --data "$M/data/genre/$d.txt" --seq-len $SEQ -o "$OUT/load_$d.safetensors" --force
done
/usr/bin/python3 tools/domain_load.py en="$OUT/load_en.safetensors" code="$OUT/load_code.safetensors" \
  de="$OUT/load_de.safetensors" -o "$OUT/load" --title "$(basename "$M"): expert load by domain (held-out test)"

echo "== 1. criteria (calibrated on the mixture) x evaluation domain"
for d in "${DOMS[@]}"; do
  q sweep -m "$M" --stats "$OUT/stats_mix.safetensors" --criteria reap,ean,frequency,weighted_frequency,random \
    --keep "$KEEPS" --data "$M/data/genre/$d.txt" --seq-len $SEQ --max-tokens "$TOK" \
    -o "$OUT/sweep_cal-mix_eval-$d" --force | tee "$OUT/sweep_cal-mix_eval-$d.txt"
done

echo "== 2. calibration domain x evaluation domain (REAP)"
for c in en code de; do
  for d in "${DOMS[@]}"; do
    q sweep -m "$M" --stats "$OUT/stats_$c.safetensors" --criteria reap --keep "$KEEPS" \
      --data "$M/data/genre/$d.txt" --seq-len $SEQ --max-tokens "$TOK" \
      -o "$OUT/sweep_cal-${c}_eval-$d" --force > "$OUT/sweep_cal-${c}_eval-$d.txt"
  done
done

echo "== 3. two-stage prune (the seed: 384 -> 192 -> 72, i.e. 50% then 19% kept)"
N=$(q inspect "$M" --json | sed -n 's/.*"n_routed_experts": *\([0-9]*\).*/\1/p' | head -1)
K1=$(( N / 2 ))
K2=$(( (N * 72 + 383) / 384 ))  # 72/384 of N, rounded up
q prune -m "$M" --stats "$OUT/stats_mix.safetensors" --keep $K1 -o "$OUT/stage1" --force
q prune -m "$OUT/stage1" --stats "$OUT/stats_mix.safetensors" --keep $K2 -o "$OUT/two_reuse" --force
q observe -m "$OUT/stage1" --data "$M/data/calib/mix.txt" --seq-len $SEQ -o "$OUT/stats_stage1.safetensors" --force
q prune -m "$OUT/stage1" --stats "$OUT/stats_stage1.safetensors" --keep $K2 -o "$OUT/two_reobserve" --force
q prune -m "$M" --stats "$OUT/stats_mix.safetensors" --keep $K2 -o "$OUT/one_shot" --force
# matched vs mismatched calibration for code at 75% pruned (the demo's pair)
K3=$(( N / 4 ))
q prune -m "$M" --stats "$OUT/stats_code.safetensors" --keep $K3 -o "$OUT/code_cal" --force
q prune -m "$M" --stats "$OUT/stats_de.safetensors" --keep $K3 -o "$OUT/de_cal" --force
for name in stage1 two_reuse two_reobserve one_shot code_cal de_cal; do
  for d in "${DOMS[@]}"; do ev "$name" "$OUT/$name" "$d"; done
done
echo "two-stage: stage1 keep $K1, final keep $K2 of $N; code_cal/de_cal keep $K3" > "$OUT/eval/README"

echo "== 4. report"
/usr/bin/python3 tools/domain_report.py "$OUT" --keeps "$KEEPS" --n-experts "$N"
