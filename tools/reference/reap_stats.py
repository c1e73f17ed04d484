#!/usr/bin/python3
"""Reference REAP / EAN / frequency statistics (reap.md; issue 5 "Saliency"), independent of sickle.

For each MoE layer L and routed expert j, over every token x of the given sequences (each
sequence run on its own from position 0, as `sickle observe --no-pack` does), using the model's
own routing (sigmoid + correction bias for choice, group limit, top-k; ref_model.RefModel.route):
  count       |X_j|                          number of tokens routed to j
  gate_sum    sum g_j(x)                     g = unbiased sigmoid score renormalized over the
                                             chosen top-k, WITHOUT routed_scaling_factor
  reap_sum    sum g_j(x) * ||f_j(x)||_2      f = expert j's raw output (before gating)
  ean_sum     sum ||f_j(x)||_2
  ean_sq_sum  sum ||f_j(x)||_2^2
  max_act     max over X_j of max_i |f_j(x)_i|   (0 for an expert never chosen)
and `tokens` = tokens seen by the layer. Stored like `sickle observe`: one F64 [n_experts] tensor
`layers.<L>.<stat>` per layer and statistic, `layers.<L>.tokens` a one-element F64.

  /usr/bin/python3 tools/reference/reap_stats.py --model DIR --tokens-jsonl FILE -o stats.safetensors
  (FILE: one {"tokens": [ids...]} per line)
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_model as rm  # noqa: E402
import st  # noqa: E402

STATS = ("count", "gate_sum", "reap_sum", "ean_sum", "ean_sq_sum", "max_act")


def compute(model, sequences, margins=None):
    """{layer: {stat: np.float64 [E]}, ...} plus {layer: tokens}. `margins` (dict) collects the
    router margins seen (see RefModel.route)."""
    cfg = model.cfg
    out = {}
    for il in range(cfg.num_hidden_layers):
        if cfg.is_moe_layer(il):
            E = model.n_experts(il)
            out[il] = {s: np.zeros(E, dtype=np.float64) for s in STATS}
            out[il]["tokens"] = np.zeros(1, dtype=np.float64)
    with torch.no_grad():
        for seq in sequences:
            trace = []
            model.forward(list(seq), margins, trace)
            for ev in trace:
                L = out[ev["layer"]]
                idx = ev["experts"].numpy()          # [T, k]
                g = ev["weights"].double().numpy()   # [T, k]
                f = ev["outputs"].double().numpy()   # [T, k, H]
                norm = np.sqrt((f * f).sum(-1))      # [T, k]
                amax = np.abs(f).max(-1)             # [T, k]
                L["tokens"][0] += idx.shape[0]
                for t in range(idx.shape[0]):
                    for s in range(idx.shape[1]):
                        j = idx[t, s]
                        L["count"][j] += 1
                        L["gate_sum"][j] += g[t, s]
                        L["reap_sum"][j] += g[t, s] * norm[t, s]
                        L["ean_sum"][j] += norm[t, s]
                        L["ean_sq_sum"][j] += norm[t, s] ** 2
                        L["max_act"][j] = max(L["max_act"][j], amax[t, s])
    return out


def to_tensors(stats):
    t = {}
    for il, d in stats.items():
        for s, v in d.items():
            t[f"layers.{il}.{s}"] = ("F64", np.asarray(v, dtype=np.float64))
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens-jsonl", required=True)
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args()
    seqs = []
    with open(a.tokens_jsonl) as f:
        for line in f:
            if line.strip():
                seqs.append([int(x) for x in json.loads(line)["tokens"]])
    m = rm.RefModel(a.model)
    margins = {}
    stats = compute(m, seqs, margins)
    st.write_safetensors(a.out, to_tensors(stats), {"source": "tools/reference/reap_stats.py",
                                                    "model": os.path.abspath(a.model)})
    for il, d in stats.items():
        print(f"layer {il}: tokens {int(d['tokens'][0])} counts {d['count'].astype(int).tolist()}")
    print("router margins:", margins)


if __name__ == "__main__":
    main()
