#!/usr/bin/env bash
# Self-test of the independent PyTorch reference (tools/reference/selftest.py): yarn/mscale
# constants, int4 packing vectors, fp8/bf16 decoding, HF-layout attention vs a loop-based
# pairwise-rotation absorbed-MLA formulation, router vs brute force. Needs Debian's python3-torch
# (/usr/bin/python3), which `make test` installs; where it is missing the test exits 77 and ctest
# reports it Skipped (the committed goldens still let the engine comparison run without torch).
set -euo pipefail
SRC=${SICKLE_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
PY=/usr/bin/python3
if ! "$PY" -c "import torch, numpy" 2>/dev/null; then
  echo "reference_selftest: skipped (no torch for $PY: apt-get install python3-torch python3-numpy)"
  exit 77
fi
"$PY" "$SRC/tools/reference/selftest.py"
