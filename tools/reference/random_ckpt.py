#!/usr/bin/python3
"""Small random DeepSeek-V3-family checkpoints written with numpy, for self-testing the
reference without sickle (`sickle synth` is the real source of test checkpoints).

  /usr/bin/python3 tools/reference/random_ckpt.py --layout kimi|dsv3 --quant int4|fp8|none -o DIR
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402


def pack_int4(q):
    """q int [out, in] in [-8, 7] -> uint32 [out, in/8]; element j in word j/8 at bits 4*(j%8),
    stored offset binary q + 8 (compressed-tensors pack_to_int32 with the +8 offset)."""
    q = np.asarray(q, dtype=np.int64)
    assert q.min() >= -8 and q.max() <= 7 and q.shape[1] % 8 == 0
    u = (q + 8).astype(np.uint32)
    out = np.zeros((q.shape[0], q.shape[1] // 8), dtype=np.uint32)
    for i in range(8):
        out |= u[:, i::8] << np.uint32(4 * i)
    return out


def make(layout="kimi", quant="int4", seed=0, dims=None):
    rng = np.random.default_rng(seed)
    d = dict(hidden=48, layers=3, first_dense=1, inter=96, moe_inter=32, experts=8, k=3, shared=1,
             n_group=1, topk_group=1, heads=3, q_lora=40, kv_lora=32, nope=16, rope=8, v=16, vocab=300)
    if layout == "dsv3":
        d.update(experts=16, k=4, n_group=4, topk_group=2, first_dense=1)
    if dims:
        d.update(dims)
    text = {
        "model_type": "kimi_k2" if layout == "kimi" else "deepseek_v3",
        "hidden_size": d["hidden"], "num_hidden_layers": d["layers"], "first_k_dense_replace": d["first_dense"],
        "intermediate_size": d["inter"], "moe_intermediate_size": d["moe_inter"],
        "n_routed_experts": d["experts"], "num_experts_per_tok": d["k"], "n_shared_experts": d["shared"],
        "n_group": d["n_group"], "topk_group": d["topk_group"], "topk_method": "noaux_tc",
        "scoring_func": "sigmoid", "norm_topk_prob": True,
        "routed_scaling_factor": 2.827 if layout == "kimi" else 2.5,
        "num_attention_heads": d["heads"], "num_key_value_heads": d["heads"], "q_lora_rank": d["q_lora"],
        "kv_lora_rank": d["kv_lora"], "qk_nope_head_dim": d["nope"], "qk_rope_head_dim": d["rope"],
        "v_head_dim": d["v"], "max_position_embeddings": 262144 if layout == "kimi" else 163840,
        "vocab_size": d["vocab"], "rms_norm_eps": 1e-5 if layout == "kimi" else 1e-6,
        "rope_theta": 50000.0 if layout == "kimi" else 10000.0,
        "rope_scaling": {"type": "yarn", "factor": 64.0 if layout == "kimi" else 40.0,
                         "original_max_position_embeddings": 4096, "beta_fast": 32.0, "beta_slow": 1.0,
                         "mscale": 1.0, "mscale_all_dim": 1.0},
        "moe_layer_freq": 1, "hidden_act": "silu", "tie_word_embeddings": False,
    }
    if quant == "int4":
        qc = {"quant_method": "compressed-tensors", "format": "pack-quantized",
              "config_groups": {"group_0": {"weights": {"num_bits": 4, "group_size": 16, "symmetric": True,
                                                         "strategy": "group", "type": "int"},
                                            "targets": ["Linear"]}},
              "ignore": ["lm_head", "re:.*self_attn.*", "re:.*shared_experts.*", "re:.*mlp\\.(gate|up|down)_proj.*"]}
    elif quant == "fp8":
        qc = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [32, 32]}
    else:
        qc = None
    if layout == "kimi":
        root = {"architectures": ["KimiK25ForConditionalGeneration"], "model_type": "kimi_k25",
                "text_config": text, "vision_config": {"hidden_size": 8}}
        if qc:
            text["quantization_config"] = qc
        prefix = "language_model."
    else:
        root = dict(text)
        root["architectures"] = ["DeepseekV3ForCausalLM"]
        if qc:
            root["quantization_config"] = qc
        prefix = ""

    T = {}
    H = d["hidden"]

    def normal(shape, std):
        return rng.standard_normal(shape) * std

    def bf16(a):
        return ("BF16", st.f32_to_bf16(a.astype(np.float32)))

    def plain_linear(name, out_f, in_f):
        w = normal((out_f, in_f), 1 / np.sqrt(in_f))
        if quant == "fp8":
            b = 32
            so, si = -(-out_f // b), -(-in_f // b)
            scale = (np.abs(w).max() / 448.0 * rng.uniform(0.75, 1.25, (so, si))).astype(np.float32)
            full = np.repeat(np.repeat(scale, b, 0), b, 1)[:out_f, :in_f]
            T[name + ".weight"] = ("F8_E4M3", st.f64_to_fp8_e4m3(w / full))
            T[name + ".weight_scale_inv"] = ("F32", scale)
        else:
            T[name + ".weight"] = bf16(w)

    def expert_linear(name, out_f, in_f):
        if quant == "int4":
            g = 16
            q = np.clip(np.round(rng.standard_normal((out_f, in_f)) * 2.5), -8, 7).astype(np.int64)
            scale = (1 / np.sqrt(in_f) / 2.5) * rng.uniform(0.75, 1.25, (out_f, in_f // g))
            T[name + ".weight_packed"] = ("I32", pack_int4(q).view(np.int32))
            T[name + ".weight_scale"] = bf16(scale)
            T[name + ".weight_shape"] = ("I32", np.array([out_f, in_f], dtype=np.int32))
        else:
            plain_linear(name, out_f, in_f)

    def norm(name, n):
        T[name] = bf16(1 + normal((n,), 0.1))

    p = prefix + "model."
    T[p + "embed_tokens.weight"] = bf16(normal((d["vocab"], H), 1.0))
    for il in range(d["layers"]):
        L = f"{p}layers.{il}."
        norm(L + "input_layernorm.weight", H)
        norm(L + "post_attention_layernorm.weight", H)
        nh, qk = d["heads"], d["nope"] + d["rope"]
        plain_linear(L + "self_attn.q_a_proj", d["q_lora"], H)
        norm(L + "self_attn.q_a_layernorm.weight", d["q_lora"])
        plain_linear(L + "self_attn.q_b_proj", nh * qk, d["q_lora"])
        plain_linear(L + "self_attn.kv_a_proj_with_mqa", d["kv_lora"] + d["rope"], H)
        norm(L + "self_attn.kv_a_layernorm.weight", d["kv_lora"])
        plain_linear(L + "self_attn.kv_b_proj", nh * (d["nope"] + d["v"]), d["kv_lora"])
        plain_linear(L + "self_attn.o_proj", H, nh * d["v"])
        if il < d["first_dense"]:
            for pr, (o, i) in {"gate_proj": (d["inter"], H), "up_proj": (d["inter"], H),
                               "down_proj": (H, d["inter"])}.items():
                plain_linear(L + "mlp." + pr, o, i)
        else:
            T[L + "mlp.gate.weight"] = bf16(normal((d["experts"], H), 1 / np.sqrt(H)))
            T[L + "mlp.gate.e_score_correction_bias"] = ("F32", normal((d["experts"],), 0.1).astype(np.float32))
            mi = d["moe_inter"]
            for pr, (o, i) in {"gate_proj": (mi * d["shared"], H), "up_proj": (mi * d["shared"], H),
                               "down_proj": (H, mi * d["shared"])}.items():
                plain_linear(L + "mlp.shared_experts." + pr, o, i)
            for e in range(d["experts"]):
                for pr, (o, i) in {"gate_proj": (mi, H), "up_proj": (mi, H), "down_proj": (H, mi)}.items():
                    expert_linear(f"{L}mlp.experts.{e}.{pr}", o, i)
    norm(p + "norm.weight", H)
    T[prefix + "lm_head.weight"] = bf16(normal((d["vocab"], H), 1 / np.sqrt(H)))
    return root, T


def write(out_dir, layout="kimi", quant="int4", seed=0, dims=None):
    os.makedirs(out_dir, exist_ok=True)
    root, T = make(layout, quant, seed, dims)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(root, f, indent=2)
    st.write_safetensors(os.path.join(out_dir, "model.safetensors"), T)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--layout", choices=["kimi", "dsv3"], default="kimi")
    ap.add_argument("--quant", choices=["int4", "fp8", "none"], default="int4")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", required=True)
    a = ap.parse_args()
    write(a.o, a.layout, a.quant, a.seed)
