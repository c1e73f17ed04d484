#!/usr/bin/python3
"""How far each plausible semantic mistake moves the logits of a golden, compared with the golden
tests' tolerance (the tests can only catch mistakes that move logits more than that).

  /usr/bin/python3 tools/reference/sensitivity.py --model SYNTH_DIR --golden tests/golden/engine/NAME.safetensors

SYNTH_DIR: the checkpoint regenerated with the golden json's synth command.
"""
import argparse
import importlib
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_model as rm  # noqa: E402
import st  # noqa: E402


def worst_rel(m, f):
    worst = 0.0
    i = 0
    with torch.no_grad():
        while f"case.{i}.tokens" in f.header:
            toks = f.get(f"case.{i}.tokens").tolist()
            g = torch.from_numpy(f.get(f"case.{i}.logits").astype(np.float64))
            lg = m.forward(toks)
            worst = max(worst, ((lg - g).abs().max(-1)[0] / g.abs().max(-1)[0]).max().item())
            i += 1
    return worst


def zero_bias(m):
    for n in m.ck.names():
        if n.endswith("e_score_correction_bias"):
            m._cache[n] = torch.zeros(m.ck.shape(n), dtype=m.dt)


def eps_1e5(m):
    orig = rm.RefModel.rmsnorm
    m.rmsnorm = lambda x, w, eps: orig(x, w, 1e-5 if eps == 1e-6 else eps)


MUTATIONS = {
    "no mscale^2 in the softmax scale": lambda m: setattr(m, "sm_scale", m.cfg.qk_head_dim ** -0.5),
    "q_a/kv_a_layernorm eps 1e-5 instead of 1e-6": eps_1e5,
    "RoPE on the raw interleaved layout (no de-interleave)":
        lambda m: setattr(rm, "apply_rope_interleave", lambda x, c, s: x * c + rm.rotate_half(x) * s),
    "plain RoPE (no yarn)": lambda m: setattr(m.cfg, "yarn", None),
    "no routed_scaling_factor": lambda m: setattr(m.cfg, "routed_scaling_factor", 1.0),
    "no renormalization of the top-k weights": lambda m: setattr(m.cfg, "norm_topk_prob", False),
    "correction bias ignored for choice": zero_bias,
    "no group limit": lambda m: setattr(m.cfg, "n_group", 1),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--golden", required=True)
    ap.add_argument("--act-quant", default="none", choices=["none", "q8_0"])
    a = ap.parse_args()
    f = st.SafeTensors(a.golden)
    print(f"unmodified reference: {worst_rel(rm.RefModel(a.model, act_quant=a.act_quant), f):.3g}")
    for name, fn in MUTATIONS.items():
        importlib.reload(rm)
        m = rm.RefModel(a.model, act_quant=a.act_quant)
        fn(m)
        print(f"{name}: {worst_rel(m, f):.3g}")


if __name__ == "__main__":
    main()
