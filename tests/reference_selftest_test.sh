#!/usr/bin/env bash
# Self-test of the independent PyTorch reference (tools/reference/selftest.py): yarn/mscale
# constants, int4 packing vectors, fp8/bf16 decoding, HF-layout attention vs a loop-based
# pairwise-rotation absorbed-MLA formulation, router vs brute force. Needs Debian's python3-torch
# (/usr/bin/python3); skipped (exit 0, with a message) where it is not installed, since the
# committed goldens let CI run the engine comparison without torch.
set -euo pipefail
SRC=${SICKLE_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
PY=/usr/bin/python3
if ! "$PY" -c "import torch, numpy" 2>/dev/null; then
  echo "reference_selftest: SKIPPED (no torch for $PY)"
  exit 0
fi
"$PY" "$SRC/tools/reference/selftest.py"
