#!/usr/bin/env bash
# The README's quality experiment on the demo model (issue 6): calibrate on part of the training
# split, evaluate on held-out test documents, 25/50/75% pruning, REAP vs frequency vs EAN vs
# random; then the domain-mismatch check (calibrate on one genre, evaluate on another).
set -euo pipefail
SICKLE=${1:-build/bin/sickle}
M=${MODEL:-models/brown-kimi}
OUT=${OUT:-out/sweep}
TOK=${EVAL_TOKENS:-32000}
mkdir -p "$OUT"
"$SICKLE" observe -m "$M" --data "$M/data/train_calib.txt" --seq-len 128 -o "$OUT/stats_train.safetensors" --force
"$SICKLE" sweep -m "$M" --stats "$OUT/stats_train.safetensors" --criteria reap,frequency,ean,random --keep 24,16,8 \
  --data "$M/data/test.txt" --seq-len 128 --max-tokens "$TOK" -o "$OUT/report" --force | tee "$OUT/table.txt"
# Domain mismatch (reap.md: calibration domain matters): evaluate on genre EV's held-out test
# documents, calibrating (a) on the mixed-genre training slice above, (b) on genre CAL's held-out
# documents only. Neither calibration set contains the evaluation text.
CAL=${CAL_GENRE:-learned}
EV=${EVAL_GENRE:-fiction}
"$SICKLE" observe -m "$M" --data "$M/data/genre/$CAL.txt" --seq-len 128 -o "$OUT/stats_$CAL.safetensors" --force
for st in train "$CAL"; do
  "$SICKLE" sweep -m "$M" --stats "$OUT/stats_$st.safetensors" --criteria reap,frequency --keep 16,8 \
    --data "$M/data/genre/$EV.txt" --seq-len 128 -o "$OUT/report_cal-${st}_eval-$EV" --force | tee "$OUT/table_cal-${st}_eval-$EV.txt"
done
