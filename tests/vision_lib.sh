# tests/vision_lib.sh — sourced by the vision e2e tests (needs BIN, PY, SRC).

# vision_setup MODULE...: skip (exit 77) unless /usr/bin/python3 imports every MODULE; then a
# temporary directory $tmp (removed on exit) holding synth tiny-kimi (seed 3) in $tmp/m.
vision_setup() {
  local m
  for m in "$@"; do
    if ! $PY -c "import $m" 2>/dev/null; then
      echo "SKIP: $PY cannot import $m (Debian's python3-torch / python3-numpy / python3-pil; make test-deps installs them)"
      exit 77
    fi
  done
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$BIN" synth --preset tiny-kimi --seed 3 -o "$tmp/m" >/dev/null 2>&1
}
# same_embeddings DIR MODEL EXT_A EXT_B WHAT NAME...: sickle's image embeddings of DIR/NAME.EXT_A
# and of DIR/NAME.EXT_B (all NAMEs in one run each) must be byte-identical: the pipeline after
# decoding is deterministic, so equal decoded pixels give equal bytes, and the tests' cases
# change enough pixels for any decoding difference to show (checked by mutations). On a difference: "FAIL: WHAT" and each image's max difference, status 1.
same_embeddings() {
  local dir=$1 model=$2 ext_a=$3 ext_b=$4 what=$5 n
  shift 5
  local a=() b=()
  for n in "$@"; do a+=(--image "$dir/$n.$ext_a"); b+=(--image "$dir/$n.$ext_b"); done
  "$BIN" run -m "$model" "${a[@]}" --dump-image-embeddings "$dir/same_a.safetensors"
  "$BIN" run -m "$model" "${b[@]}" --dump-image-embeddings "$dir/same_b.safetensors"
  cmp -s "$dir/same_a.safetensors" "$dir/same_b.safetensors" && return 0
  echo "FAIL: $what ($*)" >&2
  $PY - "$dir" "$SRC/tools/reference" "$@" <<'PYEOF' >&2
import sys
sys.path.insert(0, sys.argv[2])
import numpy as np, st
a, b = st.SafeTensors(f"{sys.argv[1]}/same_a.safetensors"), st.SafeTensors(f"{sys.argv[1]}/same_b.safetensors")
for i, n in enumerate(sys.argv[3:]):
    x, y = a.get(f"image.{i}"), b.get(f"image.{i}")
    print(n, "equal" if x.shape == y.shape and (x == y).all() else f"max diff {np.abs(x - y).max()}")
PYEOF
  return 1
}
