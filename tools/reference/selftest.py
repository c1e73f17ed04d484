#!/usr/bin/python3
"""Self-test of the reference (run: /usr/bin/python3 tools/reference/selftest.py).

Checks the constants and encodings against values computed by hand from the published formulas,
and the torch forward against a second, loop-based numpy formulation (pairwise RoPE rotation on
the interleaved layout, absorbed MLA, brute-force router) on small random checkpoints.
"""
import math
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import random_ckpt  # noqa: E402
import ref_model as rm  # noqa: E402
import st  # noqa: E402

KIMI_K25_TEXT = {
    "hidden_size": 7168, "num_hidden_layers": 61, "first_k_dense_replace": 1, "intermediate_size": 18432,
    "moe_intermediate_size": 2048, "n_routed_experts": 384, "num_experts_per_tok": 8, "n_shared_experts": 1,
    "n_group": 1, "topk_group": 1, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
    "norm_topk_prob": True, "routed_scaling_factor": 2.827, "num_attention_heads": 64, "q_lora_rank": 1536,
    "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "max_position_embeddings": 262144, "vocab_size": 163840, "rms_norm_eps": 1e-5, "rope_theta": 50000.0,
    "rope_scaling": {"type": "yarn", "factor": 64.0, "original_max_position_embeddings": 4096,
                     "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0},
}


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok  ", what)


def test_mscale():
    cfg = rm.Config({"text_config": KIMI_K25_TEXT, "architectures": ["KimiK25ForConditionalGeneration"]})
    m = rm.yarn_get_mscale(64.0, 1.0)
    check(abs(m - (0.1 * math.log(64) + 1)) < 1e-15 and abs(m - 1.4158883083359672) < 1e-12,
          f"yarn mscale(64, 1) = 0.1 ln 64 + 1 = {m:.10f}")
    s = rm.softmax_scale(cfg)
    check(abs(s - 192 ** -0.5 * m * m) < 1e-15, f"Kimi-K2.5 softmax scale = 192^-0.5 * m^2 = {s:.10f}")
    check(abs(s / 192 ** -0.5 - 2.00473970) < 1e-6, f"m^2 = {s / 192 ** -0.5:.8f} (yarn attention correction)")
    inv, mult = rm.rope_inv_freq(cfg)
    check(mult == 1.0, "cos/sin multiplier mscale(64,1)/mscale(64,1) = 1 for Kimi-K2.5")
    # find(32) = 64 ln(4096/(64 pi)) / (2 ln 50000) = 8.91 -> low 8; find(1) = 19.16 -> high 20.
    extra = 1.0 / (50000.0 ** (np.arange(0, 64, 2) / 64.0))
    check(np.allclose(inv[:9].numpy(), extra[:9], rtol=1e-6), "yarn: pairs 0..8 keep base frequencies (low = 8)")
    check(np.allclose(inv[20:].numpy(), extra[20:] / 64.0, rtol=1e-6), "yarn: pairs >= 20 divided by factor (high = 20)")
    ramp = (np.arange(32) - 8) / 12.0
    mid = extra[12] / 64 * ramp[12] + extra[12] * (1 - ramp[12])
    check(abs(inv[12].item() - mid) / mid < 1e-6, "yarn: pair 12 on the linear ramp")
    # DeepSeek-V3: theta 10000, factor 40.
    ds = dict(KIMI_K25_TEXT, rope_theta=10000.0,
              rope_scaling=dict(KIMI_K25_TEXT["rope_scaling"], factor=40.0), num_attention_heads=128)
    s2 = rm.softmax_scale(rm.Config(ds))
    check(abs(s2 - 192 ** -0.5 * (0.1 * math.log(40) + 1) ** 2) < 1e-15, "DeepSeek-V3 softmax scale (factor 40)")
    # rope_parameters form with rope_theta inside.
    rp = dict(KIMI_K25_TEXT)
    del rp["rope_scaling"], rp["rope_theta"]
    rp["rope_parameters"] = dict(KIMI_K25_TEXT["rope_scaling"], rope_type="yarn", rope_theta=50000.0)
    del rp["rope_parameters"]["type"]
    c3 = rm.Config(rp)
    check(c3.rope_theta == 50000.0 and c3.yarn["factor"] == 64.0, "rope_parameters (rope_theta inside) accepted")


def test_int4():
    check(int(random_ckpt.pack_int4(np.arange(8).reshape(1, 8))[0, 0]) == 0xFEDCBA98, "pack [0..7] = 0xFEDCBA98")
    check(int(random_ckpt.pack_int4(np.arange(-8, 0).reshape(1, 8))[0, 0]) == 0x76543210, "pack [-8..-1] = 0x76543210")
    check(int(random_ckpt.pack_int4(np.zeros((1, 8), dtype=int))[0, 0]) == 0x88888888, "pack zeros = 0x88888888")
    # Unpack through the checkpoint reader: hand-written words, bf16 scales, group 8.
    with tempfile.TemporaryDirectory() as d:
        words = np.array([[0xFEDCBA98, 0x76543210], [0x88888888, 0x0F0F0F0F]], dtype=np.uint32)
        scale = np.array([[0.5, 2.0], [1.0, 0.25]], dtype=np.float32)
        st.write_safetensors(os.path.join(d, "m.safetensors"), {
            "x.weight_packed": ("I32", words.view(np.int32)),
            "x.weight_scale": ("BF16", st.f32_to_bf16(scale)),
            "x.weight_shape": ("I32", np.array([2, 16], dtype=np.int32))})
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write('{"hidden_size":1}')
        ck = rm.Checkpoint.__new__(rm.Checkpoint)
        ck.where = {n: st.SafeTensors(os.path.join(d, "m.safetensors")) for n in
                    ("x.weight_packed", "x.weight_scale", "x.weight_shape")}
        ck.quant, ck.dir = {}, d
        w = ck.linear("x")
        exp0 = np.concatenate([np.arange(8) * 0.5, np.arange(-8, 0) * 2.0])
        # 0x0F0F0F0F: nibbles LSB-first F,0,F,0,... -> q = 7,-8,7,-8,...
        exp1 = np.concatenate([np.zeros(8), np.tile([7.0, -8.0], 4) * 0.25])
        check(np.array_equal(w, np.stack([exp0, exp1])), "int4 dequant: LSB-first nibbles, offset 8, per-group scale")


def test_fp8_bf16():
    check(st.fp8_e4m3_to_f64(0x38) == 1.0 and st.fp8_e4m3_to_f64(0x7E) == 448.0 and
          st.fp8_e4m3_to_f64(0xFE) == -448.0 and st.fp8_e4m3_to_f64(0x01) == 2.0 ** -9 and
          st.fp8_e4m3_to_f64(0x08) == 2.0 ** -6 and np.isnan(st.fp8_e4m3_to_f64(0x7F)),
          "e4m3fn decode: 1.0, +-448, subnormal 2^-9, min normal 2^-6, NaN")
    vals = st.E4M3[~np.isnan(st.E4M3)]
    check(np.array_equal(st.fp8_e4m3_to_f64(st.f64_to_fp8_e4m3(vals)), vals), "e4m3 encode/decode round trip")
    x = np.array([1.0, -2.5, 3.140625, 1e-3], dtype=np.float32)
    check(np.array_equal(st.bf16_to_f32(st.f32_to_bf16(x))[:3], x[:3]), "bf16 round trip of representable values")
    check(st.f32_to_bf16(np.array([1.0 + 2 ** -8], np.float32))[0] == 0x3F80, "bf16 round-to-nearest-even tie down")


def naive_attention(m, il, x):
    """numpy loops: explicit pairwise rotation of (x[2i], x[2i+1]) by pos*inv_freq_i times the
    yarn multiplier, per head; checked against the HF de-interleave + rotate_half path."""
    cfg = m.cfg
    a = lambda r: m.lname(il, "self_attn." + r)
    W = lambda b: m.ck.linear(b)
    V = lambda n: m.ck.f64(n)

    def rms(v, w, eps):
        return w * v / np.sqrt((v * v).mean(-1, keepdims=True) + eps)

    T, nh = x.shape[0], cfg.num_attention_heads
    q = rms(x @ W(a("q_a_proj")).T, V(a("q_a_layernorm.weight")), 1e-6) @ W(a("q_b_proj")).T
    q = q.reshape(T, nh, cfg.qk_head_dim)
    ckv = x @ W(a("kv_a_proj_with_mqa")).T
    c, kpe = ckv[:, :cfg.kv_lora_rank], ckv[:, cfg.kv_lora_rank:]
    cn = rms(c, V(a("kv_a_layernorm.weight")), 1e-6)
    wkv = W(a("kv_b_proj")).reshape(nh, cfg.qk_nope_head_dim + cfg.v_head_dim, cfg.kv_lora_rank)
    w_uk, w_uv = wkv[:, :cfg.qk_nope_head_dim], wkv[:, cfg.qk_nope_head_dim:]
    inv, mult = rm.rope_inv_freq(cfg)
    inv = inv.numpy().astype(np.float64)

    def rot(v, pos):
        out = np.empty_like(v)
        for i in range(len(v) // 2):
            ang = np.float32(pos) * np.float32(inv[i])
            cs, sn = float(np.cos(np.float32(ang))) * mult, float(np.sin(np.float32(ang))) * mult
            out[2 * i] = v[2 * i] * cs - v[2 * i + 1] * sn
            out[2 * i + 1] = v[2 * i + 1] * cs + v[2 * i] * sn
        return out

    k_rot = np.stack([rot(kpe[t], t) for t in range(T)])
    out = np.zeros((T, nh * cfg.v_head_dim))
    for h in range(nh):
        for t in range(T):
            q_nope = q[t, h, :cfg.qk_nope_head_dim]
            q_pe = rot(q[t, h, cfg.qk_nope_head_dim:], t)
            # absorbed form (docs/formats.md §5): score = (q_nope W_UK) . c + q_pe . k_pe
            qc = q_nope @ w_uk[h]
            sc = np.array([(qc @ cn[s] + q_pe @ k_rot[s]) * m.sm_scale for s in range(t + 1)])
            p = np.exp(sc - sc.max())
            p /= p.sum()
            lat = (p[:, None] * cn[:t + 1]).sum(0)
            out[t, h * cfg.v_head_dim:(h + 1) * cfg.v_head_dim] = w_uv[h] @ lat
    return out @ W(a("o_proj")).T


def brute_route(cfg, s, bias, E):
    """Loops: groups by sum of top-2 choice, keep topk_group best, HF zero fill, top-k."""
    k = cfg.num_experts_per_tok
    choice = s + bias
    gsz = E // cfg.n_group
    gscore = [sorted(choice[g * gsz:(g + 1) * gsz], reverse=True)[:2] for g in range(cfg.n_group)]
    gscore = [a + b for a, b in gscore]
    keep = sorted(range(cfg.n_group), key=lambda g: -gscore[g])[:cfg.topk_group]
    tmp = [choice[e] if e // gsz in keep else 0.0 for e in range(E)]
    chosen = sorted(range(E), key=lambda e: -tmp[e])[:k]
    g = np.array([s[e] for e in chosen])
    g = g / (g.sum() + 1e-20)
    return sorted(zip(chosen, g))


def test_forward(layout, quant):
    with tempfile.TemporaryDirectory() as d:
        random_ckpt.write(d, layout, quant, seed=7)
        m = rm.RefModel(d)
        cfg = m.cfg
        toks = [3, 17, 250, 9, 9, 41, 128, 7, 77, 5, 199]
        with torch.no_grad():
            # Attention of layer 1 on a random normed input, both formulations.
            x = torch.from_numpy(np.random.default_rng(1).standard_normal((len(toks), cfg.hidden_size)))
            ref = m.attention(1, x, list(range(len(toks)))).numpy()
            nv = naive_attention(m, 1, x.numpy())
            err = np.abs(ref - nv).max() / np.abs(nv).max()
            # 1e-6: both use f32 angles, but f32 cos/sin come from different libms (numpy vs torch).
            check(err < 1e-6, f"{layout}/{quant}: HF interleave+rotate_half attention == pairwise-rotation "
                              f"absorbed MLA (rel err {err:.1e})")
            # Router on the same input vs brute force.
            il = cfg.first_k_dense_replace
            idx, g = m.route(il, x)
            s = torch.sigmoid(x @ m.V(m.lname(il, "mlp.gate.weight")).t()).numpy()
            bias = m.ck.f64(m.lname(il, "mlp.gate.e_score_correction_bias"))
            ok = True
            for t in range(len(toks)):
                bf = brute_route(cfg, s[t], bias, m.n_experts(il))
                mine = sorted(zip(idx[t].tolist(), g[t].tolist()))
                ok &= [e for e, _ in bf] == [e for e, _ in mine] and np.allclose([w for _, w in bf], [w for _, w in mine])
            check(ok, f"{layout}/{quant}: router (groups {cfg.n_group}/{cfg.topk_group}, k {cfg.num_experts_per_tok}) == brute force")
            # Causality / consistency: prefix logits equal full-sequence logits at the same positions.
            full = m.forward(toks)
            pre = m.forward(toks[:5])
            check(torch.allclose(full[:5], pre, atol=1e-12, rtol=0), f"{layout}/{quant}: causal (prefix logits unchanged)")
            # f32 run of the same code: the honest drift of an f32 engine.
            m32 = rm.RefModel(d, torch.float32)
            l32 = m32.forward(toks).double()
            rel = ((l32 - full).abs().max() / full.abs().max()).item()
            print(f"info {layout}/{quant}: f32 vs f64 logits max|diff|/max|logit| = {rel:.2e}")
            check(rel < 1e-4, f"{layout}/{quant}: f32 run within 1e-4 of f64")


def main():
    test_mscale()
    test_int4()
    test_fp8_bf16()
    for layout, quant in (("kimi", "int4"), ("kimi", "none"), ("dsv3", "fp8"), ("dsv3", "none")):
        test_forward(layout, quant)
    print("selftest: all passed")


if __name__ == "__main__":
    main()
