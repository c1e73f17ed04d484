#!/usr/bin/python3
"""Independent PyTorch reference of the DeepSeek-V3 / Kimi-K2(.5) forward pass.

Written from the published modeling code's semantics, NOT from sickle's C++:
  - HF transformers src/transformers/models/deepseek_v3/modeling_deepseek_v3.py
    (DeepseekV3RMSNorm, DeepseekV3TopkRouter.get_topk_indices/forward, DeepseekV3MoE,
    apply_rotary_pos_emb_interleave, DeepseekV3Attention incl. the mscale softmax correction);
  - Moonshot / DeepSeek modeling_deepseek.py (DeepseekV3YarnRotaryEmbedding: yarn inv_freq with
    the linear ramp mask over original_max_position_embeddings, cos/sin times
    yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim); MoEGate noaux_tc);
  - compressed-tensors unpack_from_int32 (pack-quantized int4: element j in word j/8 at bits
    4*(j%8), stored = q + 8) and DeepSeek's fp8 weight_dequant (value = fp8 * scale_inv per
    128x128 block).

Precision: every weight is dequantized exactly to float64 and the whole forward runs in float64
(torch.float64), except the RoPE tables which, as in HF/Moonshot, are computed in float32
(inv_freq, positions * inv_freq, cos, sin) and then widened. `--dtype f32` runs the same code in
float32 (used to estimate how far an f32 engine may honestly drift).

Attention is the plain (non-absorbed) MLA form, recomputed over the whole prefix every call:
no KV cache, so "decode" logits here are by construction equal to prefill logits.

Router edge case as DeepSeek's own inference code (inference/model.py, Gate.forward), vLLM's
and SGLang's grouped_topk: experts of non-selected groups get choice score -inf. HF transformers'
DeepseekV3 router fills 0.0 instead; the two differ only if fewer than top_k experts of the
selected groups have a positive choice score; trace() counts such tokens (fill_divergence) so
golden data can avoid them.

CLI:  /usr/bin/python3 tools/reference/ref_model.py --model DIR --tokens 1,2,3 [--greedy N]
      [--out FILE.safetensors] [--dtype f64|f32] [--act-quant none|q8_0]
"""
import argparse
import glob
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402


# ----------------------------------------------------------------------------- config

class Config:
    """The text-model fields of config.json (flat, or nested under text_config)."""

    def __init__(self, root):
        self.root = root
        self.nested = isinstance(root.get("text_config"), dict)
        tc = root["text_config"] if self.nested else root
        self.tc = tc

        def req(name):
            if name not in tc or tc[name] is None:
                raise KeyError(f"config.json: missing field {name}")
            return tc[name]

        self.hidden_size = int(req("hidden_size"))
        self.num_hidden_layers = int(req("num_hidden_layers"))
        self.first_k_dense_replace = int(req("first_k_dense_replace"))
        self.intermediate_size = int(req("intermediate_size"))
        self.moe_intermediate_size = int(req("moe_intermediate_size"))
        self.n_routed_experts = tc.get("n_routed_experts")
        self.num_experts_per_tok = int(req("num_experts_per_tok"))
        self.n_shared_experts = tc.get("n_shared_experts") or 0
        self.n_group = int(tc.get("n_group") or 1)
        self.topk_group = int(tc.get("topk_group") or 1)
        self.topk_method = tc.get("topk_method", "noaux_tc")
        self.scoring_func = tc.get("scoring_func", "sigmoid")
        self.norm_topk_prob = bool(tc.get("norm_topk_prob", True))
        self.routed_scaling_factor = float(req("routed_scaling_factor"))
        self.moe_layer_freq = int(tc.get("moe_layer_freq") or 1)
        self.num_attention_heads = int(req("num_attention_heads"))
        self.q_lora_rank = tc.get("q_lora_rank")
        self.kv_lora_rank = int(req("kv_lora_rank"))
        self.qk_nope_head_dim = int(req("qk_nope_head_dim"))
        self.qk_rope_head_dim = int(req("qk_rope_head_dim"))
        self.v_head_dim = int(req("v_head_dim"))
        self.max_position_embeddings = int(req("max_position_embeddings"))
        self.vocab_size = int(req("vocab_size"))
        self.rms_norm_eps = float(req("rms_norm_eps"))
        self.tie_word_embeddings = bool(tc.get("tie_word_embeddings", False))
        if self.topk_method != "noaux_tc" or self.scoring_func != "sigmoid":
            raise ValueError(f"config.json: only noaux_tc/sigmoid routing is supported, got "
                             f"{self.topk_method}/{self.scoring_func}")
        # rope: `rope_scaling` (classic) or `rope_parameters` (newer transformers, may carry
        # rope_theta inside).
        rs = tc.get("rope_scaling")
        rp = tc.get("rope_parameters")
        if rs is None and isinstance(rp, dict):
            rs = rp
        theta = tc.get("rope_theta")
        if theta is None and isinstance(rp, dict):
            theta = rp.get("rope_theta")
        if theta is None:
            raise KeyError("config.json: missing rope_theta")
        self.rope_theta = float(theta)
        self.rope_type = None
        self.yarn = None
        if isinstance(rs, dict):
            self.rope_type = rs.get("rope_type", rs.get("type"))
            if self.rope_type == "yarn":
                # Defaults are those of Moonshot's DeepseekV3YarnRotaryEmbedding.__init__.
                self.yarn = {
                    "factor": float(rs["factor"]),
                    "original_max_position_embeddings": float(rs.get("original_max_position_embeddings", 4096)),
                    "beta_fast": float(rs.get("beta_fast", 32)),
                    "beta_slow": float(rs.get("beta_slow", 1)),
                    "mscale": float(rs.get("mscale", 1)),
                    "mscale_all_dim": float(rs.get("mscale_all_dim", 0)),
                }
            elif self.rope_type not in (None, "default"):
                raise ValueError(f"config.json: rope type {self.rope_type} not supported")
        self.qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim

    def is_moe_layer(self, il):
        # HF/Moonshot DeepseekV3DecoderLayer: MoE iff n_routed_experts is set, il >=
        # first_k_dense_replace and il % moe_layer_freq == 0.
        return (self.n_routed_experts is not None and il >= self.first_k_dense_replace
                and il % self.moe_layer_freq == 0)


def yarn_get_mscale(scale=1.0, mscale=1.0):
    # modeling_deepseek.py / modeling_deepseek_v3.py
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def softmax_scale(cfg):
    """qk_head_dim^-0.5, times mscale^2 when rope_scaling has mscale_all_dim (HF
    DeepseekV3Attention.__init__; the check there is on rope_scaling being present)."""
    s = cfg.qk_head_dim ** -0.5
    if cfg.yarn is not None and cfg.yarn["mscale_all_dim"]:
        m = yarn_get_mscale(cfg.yarn["factor"], cfg.yarn["mscale_all_dim"])
        s = s * m * m
    return s


def rope_inv_freq(cfg):
    """float32 inv_freq [rope_dim/2] and the cos/sin multiplier (Moonshot
    DeepseekV3YarnRotaryEmbedding._set_cos_sin_cache)."""
    dim = cfg.qk_rope_head_dim
    base = cfg.rope_theta
    ar = torch.arange(0, dim, 2, dtype=torch.float32)
    if cfg.yarn is None:
        return 1.0 / (base ** (ar / dim)), 1.0
    y = cfg.yarn
    factor = y["factor"]
    freq_extra = 1.0 / (base ** (ar / dim))
    freq_inter = 1.0 / (factor * base ** (ar / dim))

    def find_dim(num_rot):
        return (dim * math.log(y["original_max_position_embeddings"] / (num_rot * 2 * math.pi))) / (2 * math.log(base))

    low = max(math.floor(find_dim(y["beta_fast"])), 0)
    high = min(math.ceil(find_dim(y["beta_slow"])), dim - 1)
    lo, hi = float(low), float(high)
    if lo == hi:
        hi += 0.001  # yarn_linear_ramp_mask: prevent singularity
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - lo) / (hi - lo), 0, 1)
    inv_freq_mask = 1.0 - ramp
    inv_freq = freq_inter * (1 - inv_freq_mask) + freq_extra * inv_freq_mask
    mult = float(yarn_get_mscale(factor, y["mscale"]) / yarn_get_mscale(factor, y["mscale_all_dim"]))
    return inv_freq, mult


def rope_cos_sin(cfg, positions):
    """cos, sin [T, rope_dim] (HF layout: cat(freqs, freqs)), float32 math as in HF/Moonshot."""
    inv_freq, mult = rope_inv_freq(cfg)
    t = torch.tensor(positions, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos() * mult, emb.sin() * mult


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rope_interleave(x, cos, sin):
    """HF apply_rotary_pos_emb_interleave for one tensor x [..., T, d] with cos/sin [T, d]:
    de-interleave (view d/2 x 2, transpose, reshape) then rotate_half."""
    shp = x.shape
    d = shp[-1]
    x = x.reshape(*shp[:-1], d // 2, 2).transpose(-1, -2).reshape(shp)
    return x * cos + rotate_half(x) * sin


# ----------------------------------------------------------------------------- checkpoint

class Checkpoint:
    def __init__(self, model_dir):
        self.dir = model_dir
        with open(os.path.join(model_dir, "config.json"), "rb") as f:
            self.config_bytes = f.read()
        self.root = json.loads(self.config_bytes)
        self.cfg = Config(self.root)
        idx = os.path.join(model_dir, "model.safetensors.index.json")
        if os.path.exists(idx):
            with open(idx) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        else:
            files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(model_dir, "*.safetensors")))
        if not files:
            raise FileNotFoundError(f"{model_dir}: no safetensors files")
        self.where = {}
        for fn in files:
            f = st.SafeTensors(os.path.join(model_dir, fn))
            for n in f.names():
                if n in self.where:
                    raise ValueError(f"{model_dir}: tensor {n} in two files")
                self.where[n] = f
        # Kimi-K2.5 nests the LM under `language_model.` (docs/formats.md §2).
        if any(n.startswith("language_model.model.") for n in self.where):
            self.prefix = "language_model."
        else:
            self.prefix = ""
        self.quant = self._quant_config()

    def _quant_config(self):
        qc = self.root.get("quantization_config")
        if qc is None and self.cfg.nested:
            qc = self.cfg.tc.get("quantization_config")
        return qc or {}

    def names(self):
        return sorted(self.where)

    def has(self, name):
        return name in self.where

    def dtype(self, name):
        return self.where[name].dtype(name)

    def shape(self, name):
        return self.where[name].shape(name)

    def f64(self, name):
        return self.where[name].get_f64(name)

    def raw(self, name):
        return self.where[name].get(name)

    def int4_group_from_config(self):
        for g in (self.quant.get("config_groups") or {}).values():
            w = g.get("weights") or {}
            if w.get("num_bits") == 4 and w.get("group_size"):
                return int(w["group_size"])
        return None

    def linear(self, base):
        """Dequantized weight [out, in] float64 of linear `base` (full name without .weight).
        The encoding is decided per tensor from which tensors exist (docs/formats.md §3)."""
        if self.has(base + ".weight_packed"):
            packed = self.raw(base + ".weight_packed").astype(np.int32).view(np.uint32)  # [out, in/8]
            shape = [int(v) for v in self.raw(base + ".weight_shape").reshape(-1)]
            out_f, in_f = shape
            scale = self.f64(base + ".weight_scale")  # [out, ceil(in/group)]
            if packed.shape[0] != out_f or packed.shape[1] * 8 < in_f:
                raise ValueError(f"{base}: weight_packed {packed.shape} vs weight_shape {shape}")
            # compressed-tensors unpack_from_int32: unpacked[:, i::8] = (w >> 4i) & 0xF, minus 8.
            q = np.zeros((out_f, packed.shape[1] * 8), dtype=np.int64)
            for i in range(8):
                q[:, i::8] = (packed >> np.uint32(4 * i)) & np.uint32(0xF)
            q = q[:, :in_f] - 8
            n_groups = scale.shape[1]
            group = -(-in_f // n_groups)
            cfg_group = self.int4_group_from_config()
            if cfg_group is not None and cfg_group != group:
                raise ValueError(f"{base}: weight_scale implies group {group}, config says {cfg_group}")
            if scale.shape[0] != out_f or -(-in_f // group) != n_groups:
                raise ValueError(f"{base}: weight_scale {scale.shape} vs weight_shape {shape}")
            s = np.repeat(scale, group, axis=1)[:, :in_f]
            return q.astype(np.float64) * s
        w = base + ".weight"
        if not self.has(w):
            raise KeyError(f"{self.dir}: missing tensor {w}")
        if self.dtype(w) == "F8_E4M3":
            v = self.f64(w)
            si = self.f64(base + ".weight_scale_inv")
            bs = self.quant.get("weight_block_size") or [128, 128]
            br, bc = int(bs[0]), int(bs[1])
            out_f, in_f = v.shape
            if list(si.shape) != [-(-out_f // br), -(-in_f // bc)]:
                raise ValueError(f"{base}: weight_scale_inv {si.shape} vs weight {v.shape} blocks {br}x{bc}")
            s = np.repeat(np.repeat(si, br, axis=0), bc, axis=1)[:out_f, :in_f]
            return v * s
        if self.has(base + ".weight_scale_inv") or self.has(base + ".weight_scale"):
            raise ValueError(f"{base}: scale tensor present for a {self.dtype(w)} weight")
        return self.f64(w)

    def describe_tensors(self):
        """Sorted 'name dtype [shape]' lines (the fingerprint material)."""
        return [f"{n} {self.dtype(n)} {self.shape(n)}" for n in self.names()]


def tensor_checksum(raw_bytes):
    """Position-weighted byte sum mod 2^64, easy to recompute in C++:
    sum_i (b[i] + 1) * ((i * 0x9E3779B1 + 1) mod 2^32)."""
    b = np.frombuffer(raw_bytes, dtype=np.uint8).astype(np.uint64)
    i = np.arange(len(b), dtype=np.uint64)
    w = (i * np.uint64(0x9E3779B1) + np.uint64(1)) & np.uint64(0xFFFFFFFF)
    with np.errstate(over="ignore"):
        return int(np.sum((b + np.uint64(1)) * w, dtype=np.uint64))


def fingerprint(ck):
    import hashlib
    h = hashlib.sha256()
    h.update(ck.config_bytes)
    for line in ck.describe_tensors():
        h.update(line.encode() + b"\n")
    return h.hexdigest()


# ----------------------------------------------------------------------------- model

def q8_0(x):
    """Fake-quantize activations as llama.cpp's Q8_0 (the scheme sickle's int4 kernels document in
    kernels/linear.h): per block of 32 consecutive values of a row, d = max|x| / 127,
    q = round(x / d) (half away from zero), value = q * d. A trailing partial block is its own
    block."""
    T, n = x.shape
    nb = -(-n // 32)
    pad = torch.zeros(T, nb * 32 - n, dtype=x.dtype)
    xb = torch.cat((x, pad), dim=1).view(T, nb, 32)
    d = xb.abs().amax(-1, keepdim=True) / 127.0
    safe = torch.where(d > 0, d, torch.ones_like(d))
    r = xb / safe
    q = torch.sign(r) * torch.floor(r.abs() + 0.5)
    return (q * d).view(T, nb * 32)[:, :n]


class RefModel:
    def __init__(self, model_dir, dtype=torch.float64, act_quant="none"):
        """act_quant: "none" = exact semantics; "q8_0" = activations entering int4 linears are
        Q8_0-quantized first (emulates sickle's documented int4 kernel numerics, so int4 goldens
        can be compared tightly; the exact ones are kept alongside)."""
        if act_quant not in ("none", "q8_0"):
            raise ValueError(f"act_quant {act_quant}")
        self.act_quant = act_quant
        self.ck = Checkpoint(model_dir)
        self.cfg = self.ck.cfg
        self.dt = dtype
        self.p = self.ck.prefix
        self._cache = {}
        self.expert_masks = {}  # il -> bool array [E] (True = allowed)
        cfg = self.cfg
        self.sm_scale = softmax_scale(cfg)
        # Validate layer kinds against the tensors present.
        for il in range(cfg.num_hidden_layers):
            has_gate = self.ck.has(self.lname(il, "mlp.gate.weight"))
            if has_gate != cfg.is_moe_layer(il):
                raise ValueError(f"layer {il}: config says moe={cfg.is_moe_layer(il)} but mlp.gate.weight "
                                 f"{'present' if has_gate else 'absent'}")

    def lname(self, il, rest):
        return f"{self.p}model.layers.{il}.{rest}"

    def W(self, base):
        """Dequantized linear weight (cached), torch [out, in]."""
        if base not in self._cache:
            self._cache[base] = torch.from_numpy(self.ck.linear(base)).to(self.dt)
        return self._cache[base]

    def V(self, name):
        """A plain tensor (norm weights, bias, embeddings) decoded to the compute dtype."""
        if name not in self._cache:
            self._cache[name] = torch.from_numpy(self.ck.f64(name)).to(self.dt)
        return self._cache[name]

    def n_experts(self, il):
        return self.ck.shape(self.lname(il, "mlp.gate.weight"))[0]

    @staticmethod
    def rmsnorm(x, w, eps):
        # HF DeepseekV3RMSNorm: x * rsqrt(mean(x^2) + eps), then weight * x.
        var = x.pow(2).mean(-1, keepdim=True)
        return w * (x * torch.rsqrt(var + eps))

    @staticmethod
    def linear(x, w):
        return x @ w.t()

    def lin(self, x, base):
        """x W^T for linear `base`, with the act_quant emulation on int4 weights."""
        if self.act_quant == "q8_0" and self.ck.has(base + ".weight_packed"):
            x = q8_0(x)
        return self.linear(x, self.W(base))

    def mlp(self, x, base):
        g = self.lin(x, base + ".gate_proj")
        u = self.lin(x, base + ".up_proj")
        return self.lin(torch.nn.functional.silu(g) * u, base + ".down_proj")

    def attention(self, il, x, positions):
        cfg = self.cfg
        T = x.shape[0]
        nh = cfg.num_attention_heads
        a = lambda r: self.lname(il, "self_attn." + r)
        if cfg.q_lora_rank:
            qa = self.linear(x, self.W(a("q_a_proj")))
            # q_a_layernorm / kv_a_layernorm are built without the config eps: 1e-6.
            q = self.linear(self.rmsnorm(qa, self.V(a("q_a_layernorm.weight")), 1e-6), self.W(a("q_b_proj")))
        else:
            q = self.linear(x, self.W(a("q_proj")))
        q = q.view(T, nh, cfg.qk_head_dim).transpose(0, 1)  # [nh, T, qk]
        q_nope, q_pe = torch.split(q, [cfg.qk_nope_head_dim, cfg.qk_rope_head_dim], dim=-1)
        ckv = self.linear(x, self.W(a("kv_a_proj_with_mqa")))  # [T, kv_lora + rope]
        c, k_pe = torch.split(ckv, [cfg.kv_lora_rank, cfg.qk_rope_head_dim], dim=-1)
        kv = self.linear(self.rmsnorm(c, self.V(a("kv_a_layernorm.weight")), 1e-6), self.W(a("kv_b_proj")))
        kv = kv.view(T, nh, cfg.qk_nope_head_dim + cfg.v_head_dim).transpose(0, 1)
        k_nope, v = torch.split(kv, [cfg.qk_nope_head_dim, cfg.v_head_dim], dim=-1)
        cos, sin = rope_cos_sin(cfg, positions)
        cos, sin = cos.to(self.dt), sin.to(self.dt)
        q_pe = apply_rope_interleave(q_pe, cos, sin)  # [nh, T, rope]
        k_pe = apply_rope_interleave(k_pe.reshape(1, T, -1), cos, sin).expand(nh, T, -1)  # shared by all heads
        qs = torch.cat((q_nope, q_pe), dim=-1)
        ks = torch.cat((k_nope, k_pe), dim=-1)
        scores = (qs @ ks.transpose(-1, -2)) * self.sm_scale  # [nh, T, T]
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        p = torch.softmax(scores, dim=-1)
        o = (p @ v).transpose(0, 1).reshape(T, nh * cfg.v_head_dim)
        return self.linear(o, self.W(a("o_proj")))

    def route(self, il, x, stats=None):
        """noaux_tc router (HF DeepseekV3TopkRouter). Returns (idx [T,k], g [T,k] renormalized
        unbiased scores WITHOUT routed_scaling_factor)."""
        cfg = self.cfg
        E = self.n_experts(il)
        k = cfg.num_experts_per_tok
        logits = self.linear(x, self.V(self.lname(il, "mlp.gate.weight")))  # [T, E]
        s = torch.sigmoid(logits)
        bias_name = self.lname(il, "mlp.gate.e_score_correction_bias")
        choice = s + self.V(bias_name).unsqueeze(0)
        if il in self.expert_masks:
            allowed = torch.as_tensor(self.expert_masks[il], dtype=torch.bool)
            choice = choice.masked_fill(~allowed.unsqueeze(0), float("-inf"))
        T = x.shape[0]
        if cfg.n_group > 1:
            gsz = E // cfg.n_group
            if gsz * cfg.n_group != E:
                raise ValueError(f"layer {il}: {E} experts not divisible by n_group {cfg.n_group}")
            group_scores = choice.view(T, cfg.n_group, gsz).topk(2, dim=-1)[0].sum(dim=-1)  # [T, G]
            group_idx = torch.topk(group_scores, k=cfg.topk_group, dim=-1, sorted=False)[1]
            group_mask = torch.zeros_like(group_scores)
            group_mask.scatter_(1, group_idx, 1)
            score_mask = group_mask.unsqueeze(-1).expand(T, cfg.n_group, gsz).reshape(T, E).bool()
            if stats is not None and cfg.topk_group < cfg.n_group:
                gsorted = group_scores.sort(dim=-1, descending=True)[0]
                gm = (gsorted[:, cfg.topk_group - 1] - gsorted[:, cfg.topk_group]).min().item()
                stats["group_margin"] = min(stats.get("group_margin", math.inf), gm)
            tmp = choice.masked_fill(~score_mask, float("-inf"))  # DeepSeek reference / vLLM / SGLang
            if stats is not None:
                alt = choice.masked_fill(~score_mask, 0.0)  # HF transformers' fill value
                i0 = torch.topk(tmp, k=k, dim=-1)[1].sort(dim=-1)[0]
                i1 = torch.topk(alt, k=k, dim=-1)[1].sort(dim=-1)[0]
                stats["fill_divergence"] = stats.get("fill_divergence", 0) + int((i0 != i1).any(dim=-1).sum())
        else:
            tmp = choice
        idx = torch.topk(tmp, k=k, dim=-1, sorted=False)[1]
        if stats is not None and k < E:
            srt = tmp.sort(dim=-1, descending=True)[0]
            em = (srt[:, k - 1] - srt[:, k]).min().item()
            stats["expert_margin"] = min(stats.get("expert_margin", math.inf), em)
        g = s.gather(1, idx)
        if cfg.norm_topk_prob:
            g = g / (g.sum(dim=-1, keepdim=True) + 1e-20)
        return idx, g

    def moe(self, il, x, stats=None, trace=None):
        cfg = self.cfg
        idx, g = self.route(il, x, stats)
        w = g * cfg.routed_scaling_factor
        y = torch.zeros_like(x)
        T, k = idx.shape
        outs = torch.zeros(T, k, x.shape[1], dtype=x.dtype) if trace is not None else None
        for e in torch.unique(idx).tolist():
            tok, slot = torch.where(idx == e)
            f = self.mlp(x[tok], self.lname(il, f"mlp.experts.{e}"))
            y.index_add_(0, tok, f * w[tok, slot].unsqueeze(-1))
            if outs is not None:
                outs[tok, slot] = f
        if cfg.n_shared_experts:
            y = y + self.mlp(x, self.lname(il, "mlp.shared_experts"))
        if trace is not None:
            trace.append({"layer": il, "experts": idx.clone(), "weights": g.clone(), "outputs": outs})
        return y

    def forward(self, tokens, stats=None, trace=None, embeds=None):
        """Logits [T, vocab] for tokens at positions 0..T-1 (full causal recompute). embeds:
        {position: row [hidden]} replacing those positions' embed_tokens rows (image tokens)."""
        cfg = self.cfg
        T = len(tokens)
        emb = self.V(self.p + "model.embed_tokens.weight")
        ids = torch.tensor(tokens, dtype=torch.long)
        if ids.min() < 0 or ids.max() >= emb.shape[0]:
            raise ValueError("token id out of range")
        h = emb[ids]
        if embeds:
            h = h.clone()
            for pos, row in embeds.items():
                h[pos] = row.to(h.dtype)
        positions = list(range(T))
        for il in range(cfg.num_hidden_layers):
            r = h
            x = self.rmsnorm(h, self.V(self.lname(il, "input_layernorm.weight")), cfg.rms_norm_eps)
            h = r + self.attention(il, x, positions)
            r = h
            x = self.rmsnorm(h, self.V(self.lname(il, "post_attention_layernorm.weight")), cfg.rms_norm_eps)
            if cfg.is_moe_layer(il):
                h = r + self.moe(il, x, stats, trace)
            else:
                h = r + self.mlp(x, self.lname(il, "mlp"))
        h = self.rmsnorm(h, self.V(self.p + "model.norm.weight"), cfg.rms_norm_eps)
        head = self.p + "lm_head"
        if self.ck.has(head + ".weight") or self.ck.has(head + ".weight_packed"):
            wl = self.W(head)
        elif cfg.tie_word_embeddings:
            wl = emb
        else:
            raise KeyError("missing lm_head.weight")
        return self.linear(h, wl)

    def greedy(self, tokens, n, stats=None):
        """Greedy continuation of n tokens. Returns (generated ids, logits rows [n, V] used for
        each choice, min top1-top2 logit margin)."""
        seq = list(tokens)
        out, rows, margin = [], [], math.inf
        for _ in range(n):
            row = self.forward(seq, stats)[-1]
            top2 = torch.topk(row, 2)[0]
            margin = min(margin, (top2[0] - top2[1]).item())
            t = int(torch.argmax(row))
            out.append(t)
            rows.append(row)
            seq.append(t)
        return out, torch.stack(rows) if rows else torch.zeros(0, self.cfg.vocab_size), margin


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True, help="comma-separated token ids")
    ap.add_argument("--greedy", type=int, default=0)
    ap.add_argument("--out", help="write logits/tokens/greedy as safetensors")
    ap.add_argument("--dtype", choices=["f64", "f32"], default="f64")
    ap.add_argument("--act-quant", choices=["none", "q8_0"], default="none",
                    help="q8_0: quantize activations entering int4 linears as sickle's kernels do")
    a = ap.parse_args()
    dt = torch.float64 if a.dtype == "f64" else torch.float32
    m = RefModel(a.model, dt, a.act_quant)
    toks = [int(t) for t in a.tokens.split(",") if t.strip()]
    stats = {}
    with torch.no_grad():
        logits = m.forward(toks, stats)
        gen, grows, gm = m.greedy(toks, a.greedy, stats) if a.greedy else ([], None, math.inf)
    np.set_printoptions(precision=5, suppress=True, linewidth=150)
    for i, row in enumerate(logits):
        print(f"pos {i} tok {toks[i]} argmax {int(row.argmax())} max {row.max().item():.6f} "
              f"first {row[:6].numpy()}")
    if gen:
        print("greedy:", " ".join(map(str, gen)))
        print(f"min greedy top1-top2 margin {gm:.6g}")
    print("router margins:", {k: (round(v, 8) if isinstance(v, float) else v) for k, v in stats.items()})
    if a.out:
        t = {"logits": logits.to(torch.float32).numpy(), "tokens": np.array(toks, dtype=np.int32)}
        if gen:
            t["greedy"] = np.array(gen, dtype=np.int32)
            t["greedy_logits"] = grows.to(torch.float32).numpy()
        st.write_safetensors(a.out, t, {"model": os.path.abspath(a.model), "dtype": a.dtype})


if __name__ == "__main__":
    main()
