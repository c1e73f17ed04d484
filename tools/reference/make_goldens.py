#!/usr/bin/python3
"""Generate the committed golden files for sickle's engine and REAP statistics tests.

For every spec below: `sickle synth <args> -o TMP` (deterministic for a seed, so CI regenerates
the same checkpoint with the same command), then the independent reference (ref_model.py, float64)
on fixed token sequences:

  tests/golden/engine/<name>.safetensors
      case.<i>.tokens         I32 [n]          the prompt
      case.<i>.logits         F32 [n, vocab]   logits of every prompt position (prefill)
      case.<i>.greedy         I32 [G]          greedy continuation (argmax), G = 40
      case.<i>.greedy_logits  F32 [G, vocab]   row g: logits of the last position after the
                                               prompt + greedy[:g] (what decode step g sees)
  tests/golden/engine/<name>.json   synth command, fingerprint, cases, batch groups, tolerance,
                                    margins (why the comparison is well posed), f32 drift.
  tests/golden/reap/<name>.safetensors + .json + .tokens.jsonl   (reap_stats.py format)

Token sequences are drawn from a seeded generator; a draw is rejected (next attempt) when the
comparison would be ill-posed for an honest f32 engine: a greedy step whose top-1/top-2 logit gap
is below LOGIT_MARGIN_REL x max|logit|, a router decision (k-th vs (k+1)-th choice score, or the
topk_group-th vs next group score) closer than ROUTER_MARGIN, or a token where HF's 0.0 fill of
non-selected groups and -inf fill pick different experts. The attempt used is recorded.

  /usr/bin/python3 tools/reference/make_goldens.py [--sickle build-reference/bin/sickle] [--only NAME]
"""
import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import reap_stats  # noqa: E402
import ref_model as rm  # noqa: E402
import st  # noqa: E402

SPECS = {
    "tiny-kimi-int4": ["--preset", "tiny-kimi", "--seed", "11", "--quant", "int4"],
    "tiny-kimi-bf16": ["--preset", "tiny-kimi", "--seed", "11", "--quant", "none"],
    "tiny-dsv3-fp8": ["--preset", "tiny-dsv3", "--seed", "12", "--quant", "fp8"],
    "tiny-dsv3-bf16": ["--preset", "tiny-dsv3", "--seed", "12", "--quant", "none"],
}
# Activations entering int4 linears: sickle's int4 kernels quantize them to int8 per 32 values
# (Q8_0, kernels/linear.h), which moves logits by ~1%. The int4 goldens are therefore made with
# the reference emulating that documented scheme (tight comparison), and the exact-semantics
# logits are stored alongside (case.<i>.logits_exact, loose comparison).
ACT_QUANT = {"tiny-kimi-int4": "q8_0"}
REAP_SPECS = ("tiny-kimi-int4", "tiny-dsv3-fp8")
# (case name, prompt length); the last two are also run together in one forward step.
CASES = [("len1", 1), ("len7", 7), ("len40", 40), ("len23", 23), ("batch_a", 13), ("batch_b", 29)]
BATCH = [[4, 5]]
N_GREEDY = 40
REAP_LENGTHS = [16, 33, 50, 8]
LOGIT_MARGIN_REL = 2e-3
ROUTER_MARGIN = 2e-5
# With Q8_0 activations an int8 rounding flip moves logits by up to ~2e-3 relative and router
# scores by ~1e-4, so the int4 draws must be further from ties.
MARGINS_Q8 = (5e-3, 1e-4)
MAX_ATTEMPTS = 200
# Stated tolerances (see the json's tolerance.note). Measured sickle vs golden: ~1e-6 for
# bf16/fp8; see the int4 note for q8_0.
TOL_LOGITS_REL = 1e-4
TOL_LOGITS_REL_Q8 = 1e-2
TOL_EXACT_MEDIAN_Q8 = 2e-2
TOL_EXACT_P90_Q8 = 5e-2


def run_synth(sickle, args, out_dir):
    cmd = [sickle, "synth"] + args + ["-o", out_dir]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def fingerprint_block(ck):
    tensors = {}
    for n in ck.names():
        raw = ck.where[n].raw_bytes(n)
        tensors[n] = [ck.dtype(n), ck.shape(n), str(rm.tensor_checksum(raw))]
    return {
        "fingerprint_sha256": rm.fingerprint(ck),
        "fingerprint_note": "sha256 of config.json bytes + sorted 'name dtype [shape]' lines; the C++ test "
                            "compares `config` (parsed) and `tensors` instead (dtype, shape, checksum = "
                            "sum_i (byte[i]+1) * ((i*0x9E3779B1+1) mod 2^32) mod 2^64, as a decimal string)",
        "config": ck.root,
        "tensors": tensors,
    }


def margins_ok(stats, logit_margin, max_logit, aq="none"):
    lrel, rmin = MARGINS_Q8 if aq == "q8_0" else (LOGIT_MARGIN_REL, ROUTER_MARGIN)
    return (stats.get("fill_divergence", 0) == 0 and stats.get("expert_margin", math.inf) >= rmin
            and stats.get("group_margin", math.inf) >= rmin
            and logit_margin >= lrel * max_logit)


def thresholds(aq):
    return MARGINS_Q8 if aq == "q8_0" else (LOGIT_MARGIN_REL, ROUTER_MARGIN)


def router_ok(stats, rmin):
    return (stats.get("fill_divergence", 0) == 0 and stats.get("expert_margin", math.inf) >= rmin
            and stats.get("group_margin", math.inf) >= rmin)


def try_draw(m, toks, lrel, rmin, early_exit=True):
    """Prompt logits + greedy continuation with diagnostics; with early_exit, gives up (None) at
    the first ill-posed decision."""
    stats = {}
    with torch.no_grad():
        logits = m.forward(toks, stats)
        if early_exit and not router_ok(stats, rmin):
            return None
        max_logit = logits.abs().max().item()
        seq, gen, rows, margin = list(toks), [], [], math.inf
        for _ in range(N_GREEDY):
            row = m.forward(seq, stats)[-1]
            max_logit = max(max_logit, row.abs().max().item())
            top2 = torch.topk(row, 2)[0]
            margin = min(margin, (top2[0] - top2[1]).item())
            if early_exit and (not router_ok(stats, rmin) or margin < lrel * max_logit):
                return None
            t = int(torch.argmax(row))
            gen.append(t)
            rows.append(row)
            seq.append(t)
    return dict(tokens=list(toks), logits=logits, greedy=gen, greedy_logits=torch.stack(rows), stats=stats,
                logit_margin=margin, max_logit=max_logit)


def make_case(m, m32, vocab, case_seed, length):
    """Draw prompts until the comparison is well posed; return the arrays and diagnostics."""
    lrel, rmin = thresholds(m.act_quant)
    res = None
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([case_seed, attempt])
        res = try_draw(m, rng.integers(0, vocab, size=length).tolist(), lrel, rmin)
        if res is not None:
            res["attempt"] = attempt
            break
    if res is None:
        print(f"WARNING: no well-posed draw for seed {case_seed} len {length}; using attempt 0", file=sys.stderr)
        rng = np.random.default_rng([case_seed, 0])
        res = try_draw(m, rng.integers(0, vocab, size=length).tolist(), lrel, rmin, early_exit=False)
        res["attempt"] = 0
    # Honest-f32 check: the same code in float32 must reproduce greedy and stay within tolerance.
    with torch.no_grad():
        l32 = m32.forward(res["tokens"]).double()
        g32, gr32, _ = m32.greedy(res["tokens"], N_GREEDY)
    drift = max(((l32 - res["logits"]).abs().max(-1)[0] / res["logits"].abs().max(-1)[0]).max().item(),
                ((gr32.double() - res["greedy_logits"]).abs().max(-1)[0] /
                 res["greedy_logits"].abs().max(-1)[0]).max().item())
    res["f32_drift"] = drift
    res["f32_greedy_equal"] = g32 == res["greedy"]
    return res


def make_engine_golden(name, model_dir, synth_args, out_dir):
    aq = ACT_QUANT.get(name, "none")
    m = rm.RefModel(model_dir, torch.float64, aq)
    m32 = rm.RefModel(model_dir, torch.float32, aq)
    mx = rm.RefModel(model_dir, torch.float64) if aq != "none" else None
    cfg = m.cfg
    tensors = {}
    cases = []
    for i, (cname, length) in enumerate(CASES):
        seed = int(hashlib.sha256(f"{name}/{cname}".encode()).hexdigest()[:8], 16)
        r = make_case(m, m32, cfg.vocab_size, seed, length)
        tensors[f"case.{i}.tokens"] = ("I32", np.array(r["tokens"], dtype=np.int32))
        tensors[f"case.{i}.logits"] = ("F32", r["logits"].to(torch.float32).numpy())
        tensors[f"case.{i}.greedy"] = ("I32", np.array(r["greedy"], dtype=np.int32))
        tensors[f"case.{i}.greedy_logits"] = ("F32", r["greedy_logits"].to(torch.float32).numpy())
        if mx is not None:
            with torch.no_grad():
                lx = mx.forward(r["tokens"])
            tensors[f"case.{i}.logits_exact"] = ("F32", lx.to(torch.float32).numpy())
            r["exact_vs_emulated"] = ((lx - r["logits"]).abs().max(-1)[0] / lx.abs().max(-1)[0]).max().item()
        s = r["stats"]
        cases.append({
            "index": i, "name": cname, "n_tokens": length, "n_greedy": N_GREEDY,
            "draw": {"seed": seed, "attempt": r["attempt"],
                     "how": "numpy default_rng([seed, attempt]).integers(0, vocab, n)"},
            "margins": {"greedy_top1_top2_min": r["logit_margin"], "max_abs_logit": r["max_logit"],
                        "router_expert_min": s.get("expert_margin"), "router_group_min": s.get("group_margin"),
                        "zero_vs_inf_fill_divergences": s.get("fill_divergence", 0)},
            "well_posed": margins_ok(s, r["logit_margin"], r["max_logit"], aq),
            "f32_reference": {"max_rel_drift": r["f32_drift"], "greedy_equal": r["f32_greedy_equal"]},
        })
        if mx is not None:
            cases[-1]["exact_vs_act_quant_rel"] = r["exact_vs_emulated"]
        print(f"{name} {cname}: attempt {r['attempt']} greedy margin {r['logit_margin']:.4g} "
              f"(max logit {r['max_logit']:.3g}) router {s.get('expert_margin', float('nan')):.3g}/"
              f"{s.get('group_margin', float('nan')):.3g} f32 drift {r['f32_drift']:.2e} "
              f"f32 greedy equal {r['f32_greedy_equal']}")
    meta = {
        "name": name,
        "synth": {"args": synth_args, "command": "sickle synth " + " ".join(synth_args) + " -o DIR"},
        "reference": {"tool": "tools/reference/make_goldens.py (ref_model.py)", "precision": "float64",
                      "rope_tables": "float32 as HF/Moonshot", "torch": torch.__version__,
                      "act_quant": aq},
        "cases": cases,
        "batch": BATCH,
        "batch_note": "cases listed together are run as items of one Model::forward step (2 sequences)",
        "tolerance": {
            "logits_rel": TOL_LOGITS_REL if aq == "none" else TOL_LOGITS_REL_Q8,
            "rule": "per row: max_v |sickle - golden| <= logits_rel * max_v |golden|; greedy tokens identical",
            "note": "golden is float64; the same reference code run in float32 drifts by f32_reference."
                    "max_rel_drift (~1e-6; measured sickle ~1e-6 on bf16/fp8); the bound leaves room for other "
                    "summation orders and f32 accumulation but catches any semantic error (those move logits "
                    "by >1e-2)." + ("" if aq == "none" else
                    " act_quant q8_0: activations entering int4 linears are Q8_0-quantized in the golden as "
                    "in sickle's kernels (measured sickle vs golden ~1e-6 typical); f32-vs-f64 activations "
                    "occasionally round an int8 value the other way (x/d within ~1e-7 of k+0.5), which moves "
                    "a row by up to ~2e-3, hence 1e-2. logits_exact = exact semantics (no activation "
                    "quantization): rows differ by ~1% typically and by tens of % where Q8_0 flips a "
                    "near-tie routing decision, so the bound there is on the median and 90th percentile "
                    "of the per-row error (exact_median_rel, exact_p90_rel)."),
        },
        "well_posed_criteria": dict(zip(("greedy_margin_rel", "router_margin"),
                                        MARGINS_Q8 if aq == "q8_0" else (LOGIT_MARGIN_REL, ROUTER_MARGIN))),
    }
    if mx is not None:
        meta["tolerance"]["exact_median_rel"] = TOL_EXACT_MEDIAN_Q8
        meta["tolerance"]["exact_p90_rel"] = TOL_EXACT_P90_Q8
    meta.update(fingerprint_block(m.ck))
    os.makedirs(out_dir, exist_ok=True)
    st.write_safetensors(os.path.join(out_dir, name + ".safetensors"), tensors,
                         {"source": "tools/reference/make_goldens.py", "synth": meta["synth"]["command"]})
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=False)
        f.write("\n")


def make_reap_golden(name, model_dir, synth_args, out_dir):
    aq = ACT_QUANT.get(name, "none")
    m = rm.RefModel(model_dir, torch.float64, aq)
    vocab = m.cfg.vocab_size
    seed = int(hashlib.sha256(f"reap/{name}".encode()).hexdigest()[:8], 16)
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([seed, attempt])
        seqs = [rng.integers(0, vocab, size=n).tolist() for n in REAP_LENGTHS]
        margins = {}
        stats = reap_stats.compute(m, seqs, margins)
        if margins_ok(margins, math.inf, 0, aq):
            break
    else:
        print(f"WARNING: reap {name}: no well-posed draw: {margins}", file=sys.stderr)
    os.makedirs(out_dir, exist_ok=True)
    cmd = "sickle synth " + " ".join(synth_args) + " -o DIR"
    st.write_safetensors(os.path.join(out_dir, name + ".safetensors"), reap_stats.to_tensors(stats),
                         {"source": "tools/reference/reap_stats.py", "synth": cmd})
    with open(os.path.join(out_dir, name + ".tokens.jsonl"), "w") as f:
        for s in seqs:
            f.write(json.dumps({"tokens": s}) + "\n")
    meta = {
        "name": name,
        "synth": {"args": synth_args, "command": cmd},
        "sequences": seqs,
        "sequences_note": "each sequence is run on its own from position 0 (observe --format tokens --no-pack "
                          f"with --seq-len >= {max(REAP_LENGTHS)}); same as {name}.tokens.jsonl",
        "draw": {"seed": seed, "attempt": attempt},
        "margins": margins,
        "stats": list(reap_stats.STATS) + ["tokens"],
        "definitions": "g = unbiased sigmoid score renormalized over the chosen top-k, without "
                       "routed_scaling_factor; f = expert raw output before gating; ||.|| = L2; "
                       "max_act = max |f_i| over the expert's tokens",
        "tolerance": {"count": "exact", "tokens": "exact",
                      "sums_rel": 1e-4 if aq == "none" else 2e-3, "rule": "|sickle - golden| <= sums_rel * max(|golden|, 1e-6) per entry"},
        "reference": {"tool": "tools/reference/reap_stats.py", "precision": "float64", "act_quant": aq},
    }
    ck = rm.Checkpoint(model_dir)
    meta["fingerprint_sha256"] = rm.fingerprint(ck)
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    for il, d in stats.items():
        print(f"reap {name} layer {il}: tokens {int(d['tokens'][0])} counts {d['count'].astype(int).tolist()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sickle", default=os.path.join(ROOT, "build-reference", "bin", "sickle"))
    ap.add_argument("--only", action="append", help="spec name(s) to regenerate")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    for name, args in SPECS.items():
        if a.only and name not in a.only:
            continue
        tmp = tempfile.mkdtemp(prefix="golden-")
        try:
            d = os.path.join(tmp, "ckpt")
            run_synth(a.sickle, args, d)
            make_engine_golden(name, d, args, os.path.join(a.out, "engine"))
            if name in REAP_SPECS:
                make_reap_golden(name, d, args, os.path.join(a.out, "reap"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
