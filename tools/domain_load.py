#!/usr/bin/python3
"""Per-domain expert load from `sickle observe` statistics (issue 19: measure specialization).

  sickle observe -m M --data M/data/genre/en.txt   -o en.safetensors     # one file per domain
  ...
  tools/domain_load.py en=en.safetensors code=code.safetensors de=de.safetensors -o OUT

For every MoE layer and expert j, the load per domain d is count_d(j) / tokens_d (the share of
domain d's tokens routed to j, so domains of different sizes weigh the same); the domain shares
of expert j are those loads normalized to sum to 1. An expert is "concentrated" in a domain
when that domain's share is >= the threshold (default 0.8; with 3 domains an unspecialized
expert sits near 1/3). Writes OUT/domain_load.json, OUT/domain_load.md (tables) and
OUT/heatmap.svg (+ .png when rsvg-convert is on PATH): one row of cells per domain and layer,
experts sorted by dominant domain, cell darkness = share.

Only the statistics file format is read (safetensors, F64 `layers.<L>.count` and
`layers.<L>.tokens`), with train_demo_model's independent safetensors reader.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_demo_model as T  # noqa: E402


def read_stats(path):
    layers = {}
    for name, (dtype, _, arr) in T.read_safetensors(path).items():
        if not name.startswith("layers."):
            continue
        _, li, stat = name.split(".", 2)
        if dtype != "F64":
            sys.exit(f"{path}: tensor {name} is {dtype}, expected F64 (not a sickle stats file?)")
        layers.setdefault(int(li), {})[stat] = arr.astype(np.float64)
    if not layers:
        sys.exit(f"{path}: no layers.<L>.count tensors (not a sickle stats file?)")
    return layers


def analyse(stats, threshold):
    """stats: {domain: {layer: {count, tokens}}} -> per-layer shares and summary."""
    doms = list(stats)
    layer_ids = sorted(stats[doms[0]])
    for d in doms:
        if sorted(stats[d]) != layer_ids:
            sys.exit(f"domain {d}: MoE layers {sorted(stats[d])} differ from {layer_ids}")
    out = {"domains": doms, "threshold": threshold, "layers": []}
    for li in layer_ids:
        load = np.stack([stats[d][li]["count"] / max(1.0, stats[d][li]["tokens"][0]) for d in doms])
        if len({len(r) for r in load}) != 1:
            sys.exit(f"layer {li}: expert counts differ between domains")
        tot = load.sum(0)
        share = np.where(tot > 0, load / np.where(tot > 0, tot, 1), 0.0)
        dom_of = share.argmax(0)
        top = share.max(0)
        conc = top >= threshold
        out["layers"].append({
            "layer": li,
            "share": share.round(4).tolist(),  # [domain][expert]
            "dominant": [doms[i] for i in dom_of],
            "max_share": top.round(4).tolist(),
            "concentrated_fraction": float(conc.mean()),
            "concentrated_by_domain": {d: int((conc & (dom_of == i)).sum()) for i, d in enumerate(doms)},
            "mean_max_share": float(top.mean()),
            "dead": int((tot == 0).sum()),
        })
    allc = np.concatenate([np.array(l["max_share"]) >= threshold for l in out["layers"]])
    out["concentrated_fraction"] = float(allc.mean())
    return out


def table(res):
    doms = res["domains"]
    L = [f"Experts whose load is >= {res['threshold']:.0%} from one domain (load normalized per "
         f"domain token; unspecialized = 1/{len(doms)} each):\n",
         "| layer | concentrated | " + " | ".join(f"in {d}" for d in doms) + " | mean max share | dead |",
         "|---|---|" + "---|" * len(doms) + "---|---|"]
    for l in res["layers"]:
        n = len(l["max_share"])
        L.append(f"| {l['layer']} | {l['concentrated_fraction']:.0%} ({round(l['concentrated_fraction'] * n)}/{n}) | "
                 + " | ".join(str(l["concentrated_by_domain"][d]) for d in doms)
                 + f" | {l['mean_max_share']:.2f} | {l['dead']} |")
    L.append(f"| all | {res['concentrated_fraction']:.0%} | | | | | |" if len(doms) == 3 else "")
    return "\n".join(L) + "\n"


COLORS = {0: (31, 119, 180), 1: (214, 39, 40), 2: (44, 160, 44), 3: (148, 103, 189)}


def heatmap_svg(res, title):
    doms = res["domains"]
    cell, gap, left, top = 9, 14, 80, 40
    n_e = max(len(l["max_share"]) for l in res["layers"])
    w = max(left + n_e * cell + 50, 560)
    h = top + len(res["layers"]) * (len(doms) * cell + gap) + 40
    S = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
         f'<rect width="{w}" height="{h}" fill="white"/>',
         f'<text x="{left}" y="18" font-size="13">{title}</text>',
         f'<text x="{left}" y="32" fill="#555" font-size="9">cell = share of the expert\'s token-normalized '
         f'load from the row\'s domain; experts sorted by dominant domain</text>']
    y = top
    for l in res["layers"]:
        share = np.array(l["share"])
        order = sorted(range(share.shape[1]), key=lambda j: (int(share[:, j].argmax()), -share[:, j].max()))
        S.append(f'<text x="4" y="{y + len(doms) * cell / 2 + 4}">layer {l["layer"]}</text>')
        for di, d in enumerate(doms):
            S.append(f'<text x="{left - 4}" y="{y + di * cell + 8}" text-anchor="end" font-size="8">{d}</text>')
            r, g, b = COLORS[di % 4]
            for x, j in enumerate(order):
                a = float(share[di, j])
                S.append(f'<rect x="{left + x * cell}" y="{y + di * cell}" width="{cell - 1}" height="{cell - 1}" '
                         f'fill="rgb({r},{g},{b})" fill-opacity="{a:.3f}"/>')
        S.append(f'<text x="{left + n_e * cell + 4}" y="{y + len(doms) * cell / 2 + 4}" font-size="9">'
                 f'{l["concentrated_fraction"]:.0%}</text>')
        y += len(doms) * cell + gap
    S.append(f'<text x="{left}" y="{y + 12}" fill="#555" font-size="9">right: fraction of experts with >= '
             f'{res["threshold"]:.0%} of their load from one domain</text>')
    S.append("</svg>")
    return "\n".join(S)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="DOMAIN=STATS", help="one sickle stats file per domain")
    p.add_argument("-o", "--out", required=True, help="output directory")
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--title", default="per-domain expert load")
    a = p.parse_args()
    stats = {}
    for s in a.inputs:
        dom, sep, path = s.partition("=")
        if not sep or not dom or not path:
            sys.exit(f"argument {s!r}: expected DOMAIN=STATS.safetensors")
        if dom in stats:
            sys.exit(f"domain {dom} given twice")
        stats[dom] = read_stats(path)
    if len(stats) < 2:
        sys.exit("need at least two domains")
    if not 0 < a.threshold <= 1:
        sys.exit("--threshold must be in (0, 1]")
    res = analyse(stats, a.threshold)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "domain_load.json"), "w") as f:
        json.dump(res, f)
    t = table(res)
    with open(os.path.join(a.out, "domain_load.md"), "w") as f:
        f.write(t)
    svg = heatmap_svg(res, a.title)
    with open(os.path.join(a.out, "heatmap.svg"), "w") as f:
        f.write(svg)
    if shutil.which("rsvg-convert"):
        subprocess.run(["rsvg-convert", "-o", os.path.join(a.out, "heatmap.png"),
                        os.path.join(a.out, "heatmap.svg")], check=False)
    print(t, end="")


if __name__ == "__main__":
    main()
