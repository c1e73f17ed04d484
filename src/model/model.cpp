// sickle/model/model.cpp — the DeepSeek-V3 / Kimi-K2 forward pass (model-format.md §5, HF
// modeling_deepseek semantics). One layer is: attention (MLA, absorbed form) then MLP (dense
// for il < first_k_dense_replace, else MoE with the noaux_tc router and shared experts), each
// wrapped in RMSNorm + residual. All activations are f32; weights stay in their native
// encoding (kernels/linear.h reads bf16, fp8 block and int4 group directly).
//
// Buffer convention: row-major, outermost first; [T, ...] means one row per token of the step.
#include "model/model.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numbers>

#include "base/error.h"
#include "base/log.h"
#include "base/numeric.h"
#include "kernels/dispatch.h"
#include "kernels/linear.h"
#include "kernels/moe.h"
#include "kernels/ops.h"
#include "model/rope.h"
#include "runtime/thread_pool.h"

namespace sickle {

// ---------------------------------------------------------------------------------------------
// Sequence

Sequence::Sequence(const Model* owner, int64_t n_layers, int64_t row)
    : owner_(owner), row_(row), cache_(size_t(n_layers)) {}

void Sequence::truncate(int64_t n_tokens) {
  if (n_tokens < 0 || n_tokens > n_past_)
    fail("Sequence::truncate: {} tokens requested but the sequence holds {}", n_tokens, n_past_);
  n_past_ = n_tokens;
}

uint64_t Sequence::cache_bytes() const {
  uint64_t b = 0;
  for (const auto& c : cache_) b += c.capacity() * sizeof(float);
  return b;
}

// Grows geometrically (x1.5, at least 256 tokens), so a decode step allocates only when it
// crosses a capacity boundary.
void Sequence::reserve(int64_t n_tokens) {
  if (n_tokens <= capacity_) return;
  int64_t cap = std::max<int64_t>({n_tokens, capacity_ + capacity_ / 2, 256});
  for (auto& c : cache_) c.resize(size_t(cap * row_));
  capacity_ = cap;
}

// ---------------------------------------------------------------------------------------------
// NonFiniteError

namespace {
std::string nonfinite_text(int64_t layer, const std::string& stage, const NonFiniteError::Hit& h) {
  const std::string where = layer >= 0 ? fmt::format("layer {} ({} output)", layer, stage) : stage;
  return fmt::format("{}: non-finite {} ({}) at token {}", where, stage == "logits" ? "logit" : "activation",
                     h.nan ? "NaN" : "Inf", h.position);
}
std::string nonfinite_what(int64_t layer, const std::string& stage, const std::vector<NonFiniteError::Hit>& hits) {
  SICKLE_CHECK(!hits.empty(), "NonFiniteError without a hit");
  std::string s = nonfinite_text(layer, stage, hits.front());
  if (hits.size() > 1) s += fmt::format(" (and in {} more sequences of the step)", hits.size() - 1);
  return s;
}
}  // namespace

NonFiniteError::NonFiniteError(int64_t layer_, std::string stage_, std::vector<Hit> hits_)
    : Error(nonfinite_what(layer_, stage_, hits_)), layer(layer_), stage(std::move(stage_)), hits(std::move(hits_)) {}

std::string NonFiniteError::describe(const Hit& h) const { return nonfinite_text(layer, stage, h); }

// ---------------------------------------------------------------------------------------------
// Weights

namespace {

// A 1-D tensor of any float dtype as f32 (norm weights, router bias).
std::vector<float> load_vector(const Checkpoint& ck, const std::string& name, int64_t n) {
  TensorView t = ck.tensor(name);
  if (t.numel() != n) fail("{}: tensor '{}' has {} elements, expected {}", ck.dir().string(), name, t.numel(), n);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    switch (t.dtype) {
      case DType::F32: v[i] = t.as<float>()[i]; break;
      case DType::BF16: v[i] = bf16_to_f32(t.as<uint16_t>()[i]); break;
      case DType::F16: v[i] = f16_to_f32(t.as<uint16_t>()[i]); break;
      default: fail("{}: tensor '{}' has dtype {}, expected F32, BF16 or F16", ck.dir().string(), name, dtype_name(t.dtype));
    }
  }
  return v;
}

using Mlp = ExpertMlp;  // gate [I, H], up [I, H], down [H, I]

}  // namespace

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;  // [H], [H]
  std::vector<float> q_a_norm;             // [q_lora]
  std::vector<float> kv_a_norm;            // [kv_lora]
  WeightView q_a;                          // [q_lora, H]
  WeightView q_b;                          // [n_heads * (nope + rope), q_lora]
  WeightView q;                            // [n_heads * (nope + rope), H] when q_lora_rank == 0
  WeightView kv_a;                         // [kv_lora + rope, H]
  WeightView kv_b;                         // [n_heads * (nope + v), kv_lora]
  // f32 copy of kv_b when it is small (ModelOptions::kv_b_copy_max_bytes), for blocked prefill
  // attention; without it kv_b is read as stored (bf16) or its rows dequantized on the fly.
  std::vector<float> kv_b_f32;             // [n_heads * (nope + v), kv_lora] or empty
  WeightView o;                            // [H, n_heads * v]
  bool is_moe = false;
  Mlp dense;                               // first_k_dense_replace layers
  WeightView router;                       // [E, H]
  std::vector<float> router_bias;          // [E] e_score_correction_bias (choice only)
  Mlp shared;                              // shared experts (I = moe_I * n_shared)
  std::vector<Mlp> experts;                // [E] routed experts (I = moe_I)
  std::vector<uint8_t> allowed;            // [E] expert mask; empty = all allowed
};

// Step scratch, sized for `cap` tokens; grows (rarely) when a step has more tokens.
struct Scratch {
  int64_t cap = 0;
  std::vector<float> x;         // [T, H] residual stream
  std::vector<float> xn;        // [T, H] normed input of the current block
  std::vector<float> q_lat;     // [T, q_lora]
  std::vector<float> q;         // [T, n_heads * (nope + rope)]
  std::vector<float> kv_lat;    // [T, kv_lora + rope]
  std::vector<float> attn;      // [T, n_heads * v]
  std::vector<float> tmp;       // [T, H] block output before the residual add
  std::vector<float> gate, up;  // [T, I_max]
  std::vector<float> rope_cos, rope_sin;  // [T, rope / 2]
  std::vector<float> router_logits;       // [T, E_max]
  std::vector<float> choice;              // [T, E_max] scratch for routing
  std::vector<int32_t> chosen;            // [T, k]
  std::vector<float> weights;             // [T, k] without routed_scaling_factor
  std::vector<float> moe_out;             // [T, H]
  MoeScratch moe;                         // kernels/moe.h buffers (grow-only)
  std::vector<float> expert_out;          // [T, k, H] only when an observer wants it
  std::vector<int64_t> pos;               // [T] absolute position of each token
  std::vector<int32_t> tok;               // [T]
  std::vector<int64_t> item_tok0;         // [n_items + 1] first token of each item in the step
  std::vector<float> head_rows;           // [rows, H] normed rows that need logits
  std::vector<int64_t> head_tok;          // [rows] the step token of each of them
  // decode_attention (every token outside blocked prefill), batched over those tokens d so that
  // W_UK and W_UV are read once per step, not once per sequence:
  std::vector<float> dq;                  // [n_decode, n_heads, kv_lora + rope] [q_nope W_UK | q_pe]
  std::vector<float> dlat;                // [n_decode, n_heads, kv_lora] P cache (before W_UV)
  struct DecodeRun {
    int64_t t0, n, d0;  // step rows [t0, t0 + n) are decode rows [d0, d0 + n)
  };
  std::vector<DecodeRun> decode_runs;
  struct HeadTok {
    int64_t t;           // step row
    const float* cache;  // its sequence's cache of this layer
    int64_t ctx;         // positions it attends to (causal: up to and including itself)
  };
  std::vector<HeadTok> head_toks;     // the step's tokens outside blocked prefill
  struct BlockTask {
    int32_t item;
    int64_t j0, h0, h1;  // queries [j0, j0 + kAttnBlock) of the item, heads [h0, h1)
  };
  std::vector<BlockTask> block_tasks;  // blocked prefill attention of this step
};

struct ModelImpl {
  std::unique_ptr<Checkpoint> ck;
  ModelConfig c;
  ModelOptions options;
  const KernelTable* kernels = nullptr;  // options.kernels or kernel_table(); never null once loaded
  std::unique_ptr<ThreadPool> pool;
  ForwardObserver* observer = nullptr;
  bool check_finite = true;  // ModelOptions::check_finite and not SICKLE_CHECK_FINITE=0
  int64_t max_context = 0;
  float softmax_scale = 0;
  std::vector<float> inv_freq;  // [rope / 2] YaRN inverse frequencies
  float rope_mscale = 1;        // cos/sin multiplier
  WeightView embed;             // [V, H]
  WeightView lm_head;           // [V, H] (embed when tied)
  std::vector<float> final_norm;  // [H]
  std::vector<LayerWeights> layers;
  int64_t max_inter = 0, max_experts = 0;
  Scratch s;
  // Per-thread attention scratch (grow-only). The dequantizing kv_b path: o_lat, row [kv_lora],
  // qcat [kv_lora + rope] (one query against whole cache rows), scores [ctx]; attention_block:
  // qt, st, ot; decode_attention: st.
  struct ThreadScratch {
    std::vector<float> o_lat, row, qcat, scores;
    std::vector<float> qt, st, ot;
  };
  std::vector<ThreadScratch> ts;

  void reserve_step(int64_t n_tokens);
  void attention(LayerWeights& L, int64_t il, std::span<StepItem> items, const std::vector<int64_t>& item_tok0, int64_t T);
  void attention_block(ThreadScratch& t, const float* cache, const float* kvb32, int64_t h0, int64_t h1, int64_t t0,
                       int64_t past, int64_t nq, float scale);
  void decode_attention(const LayerWeights& L, const uint16_t* kvb16, const float* kvb32, int64_t w0, int64_t w1,
                        float scale);
  void mlp(const Mlp& m, int64_t T, const float* in, float* out);
  // exact: the scalar specification kernels (linear_scalar, moe_experts_scalar), e.g. int4 with
  // f32 activations instead of int8-quantized ones. For golden tests and debugging.
  void lin(const WeightView& w, const float* x, int64_t n, float* y) {
    if (options.exact_kernels)
      linear_scalar(w, x, n, y, pool.get());
    else
      linear_with(*kernels, w, x, n, y, pool.get());
  }
  void moe(LayerWeights& L, int64_t il, int64_t T);
  void route(LayerWeights& L, int64_t T);
  // rows [n_rows, width] hold a NaN or Inf: throws NonFiniteError naming the items of the step
  // they belong to (row r is step token tok_of_row[r], or r when tok_of_row is null).
  [[noreturn]] void throw_nonfinite(int64_t layer, const char* stage, const float* rows, int64_t n_rows, int64_t width,
                                    const int64_t* tok_of_row, size_t n_items) const;
};

namespace {
// Blocked attention (attention_block) for chunks of at least kAttnMinTokens queries, in blocks
// of kAttnBlock; beyond kAttnMaxScratch floats of scores per block (very long contexts) the
// per-token loop runs instead.
constexpr int64_t kAttnMinTokens = 4, kAttnBlock = 32, kAttnMaxScratch = int64_t(4) << 20;
// Rows (heads x queries) a blocked attention task takes together: enough for the AMX products
// to pay for packing the cache (kernels_amx.cpp f32_tiles_pay), few enough that the scores of a
// task stay in L2 at short contexts.
constexpr int64_t kAttnBlockRows = 256;
// decode_attention handles at most this many tokens at once (its buffers hold
// n_heads x (2 kv_lora + rope) floats per token: 1.1 MiB for DeepSeek-V3's 128 heads).
constexpr int64_t kDecodeWindow = 64;

void resize(std::vector<float>& v, int64_t n) {
  if (int64_t(v.size()) < n) v.resize(size_t(n));
}

template <class T>
void resize(std::vector<T>& v, int64_t n) {
  if (int64_t(v.size()) < n) v.resize(size_t(n));
}

// NaN and Inf are the floats whose exponent bits are all ones. Tested on the integer bits, so
// the loops vectorize without -ffast-math (which would let the compiler assume no NaN).
bool is_nonfinite_bits(float v) { return (std::bit_cast<uint32_t>(v) & 0x7f800000u) == 0x7f800000u; }

bool all_finite(const float* x, int64_t n) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) bad |= uint32_t(is_nonfinite_bits(x[i]));
  return bad == 0;
}

// The residual add x += y, and whether every sum is finite (the check rides on the add's pass
// over x, so it costs a few integer operations per value).
bool add_all_finite(float* x, const float* y, int64_t n) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] += y[i];
    bad |= uint32_t(is_nonfinite_bits(x[i]));
  }
  return bad == 0;
}
}  // namespace

void ModelImpl::reserve_step(int64_t T) {
  if (T <= s.cap) return;
  const int64_t H = c.hidden_size, nh = c.num_attention_heads;
  resize(s.x, T * H);
  resize(s.xn, T * H);
  resize(s.q_lat, T * std::max<int64_t>(c.q_lora_rank, 1));
  resize(s.q, T * nh * c.qk_head_dim());
  resize(s.kv_lat, T * (c.kv_lora_rank + c.qk_rope_head_dim));
  resize(s.attn, T * nh * c.v_head_dim);
  resize(s.tmp, T * H);
  resize(s.gate, T * max_inter);
  resize(s.up, T * max_inter);
  resize(s.rope_cos, T * c.qk_rope_head_dim / 2);
  resize(s.rope_sin, T * c.qk_rope_head_dim / 2);
  const int64_t k = c.num_experts_per_tok;
  if (max_experts > 0) {
    resize(s.router_logits, T * max_experts);
    resize(s.choice, T * max_experts);
    resize(s.chosen, T * k);
    resize(s.weights, T * k);
    resize(s.moe_out, T * H);
  }
  resize(s.pos, T);
  resize(s.tok, T);
  resize(s.head_rows, T * H);
  s.cap = T;
}

// ---------------------------------------------------------------------------------------------
// Load

Model::Model() : impl_(std::make_unique<ModelImpl>()) {}
Model::~Model() = default;

std::unique_ptr<Model> Model::load(const std::filesystem::path& dir, const ModelOptions& options) {
  std::unique_ptr<Model> m(new Model());
  ModelImpl& I = *m->impl_;
  I.ck = Checkpoint::open(dir);
  I.c = I.ck->config();
  I.options = options;
  I.kernels = options.kernels ? options.kernels : &kernel_table();
  const ModelConfig& c = I.c;
  const Checkpoint& ck = *I.ck;
  const TensorNames& N = ck.names();
  const std::string where = (dir / "config.json").string();
  if (c.topk_method != "noaux_tc" && c.topk_method != "greedy")
    fail("{}: topk_method '{}' is not supported (noaux_tc or greedy)", where, c.topk_method);
  if (c.scoring_func != "sigmoid" && c.scoring_func != "softmax")
    fail("{}: scoring_func '{}' is not supported (sigmoid or softmax)", where, c.scoring_func);
  if (c.qk_rope_head_dim % 2) fail("{}: qk_rope_head_dim = {} must be even", where, c.qk_rope_head_dim);
  if (c.num_experts_per_tok <= 0 && c.n_routed_experts > 0)
    fail("{}: num_experts_per_tok = {} must be positive", where, c.num_experts_per_tok);

  const char* check_env = std::getenv("SICKLE_CHECK_FINITE");
  I.check_finite = options.check_finite && !(check_env && std::string_view(check_env) == "0");
  I.max_context = options.max_context > 0 ? options.max_context : c.max_position_embeddings;
  if (I.max_context <= 0) fail("{}: max_position_embeddings = {} must be positive", where, c.max_position_embeddings);

  // RoPE and the attention scale (rope.h cites the formulas).
  RopeParams rp = rope_params(c);
  I.inv_freq = rp.inv_freq;
  I.rope_mscale = rp.cos_sin_scale;
  I.softmax_scale = rp.softmax_scale;

  I.embed = ck.weight(N.embed().substr(0, N.embed().size() - 7));
  I.lm_head = ck.has_weight(N.lm_head().substr(0, N.lm_head().size() - 7))
                  ? ck.weight(N.lm_head().substr(0, N.lm_head().size() - 7))
                  : I.embed;  // tie_word_embeddings (validate_layout required lm_head otherwise)
  I.final_norm = load_vector(ck, N.final_norm(), c.hidden_size);

  I.layers.resize(size_t(c.num_hidden_layers));
  I.max_inter = 1;
  for (int64_t il = 0; il < c.num_hidden_layers; ++il) {
    LayerWeights& L = I.layers[il];
    auto W = [&](const char* rest) { return ck.weight(N.layer(il, rest)); };
    L.attn_norm = load_vector(ck, N.layer(il, "input_layernorm.weight"), c.hidden_size);
    L.ffn_norm = load_vector(ck, N.layer(il, "post_attention_layernorm.weight"), c.hidden_size);
    if (c.q_lora_rank > 0) {
      L.q_a = W("self_attn.q_a_proj");
      L.q_b = W("self_attn.q_b_proj");
      L.q_a_norm = load_vector(ck, N.layer(il, "self_attn.q_a_layernorm.weight"), c.q_lora_rank);
    } else {
      L.q = W("self_attn.q_proj");
    }
    L.kv_a = W("self_attn.kv_a_proj_with_mqa");
    L.kv_a_norm = load_vector(ck, N.layer(il, "self_attn.kv_a_layernorm.weight"), c.kv_lora_rank);
    L.kv_b = W("self_attn.kv_b_proj");
    if (uint64_t(L.kv_b.rows) * L.kv_b.cols * 4 <= options.kv_b_copy_max_bytes) {
      L.kv_b_f32.resize(size_t(L.kv_b.rows * L.kv_b.cols));
      for (int64_t r = 0; r < L.kv_b.rows; ++r) L.kv_b.dequant_row(r, L.kv_b_f32.data() + r * L.kv_b.cols);
    }
    L.o = W("self_attn.o_proj");
    L.is_moe = c.is_moe_layer(il);
    if (!L.is_moe) {
      L.dense = {W("mlp.gate_proj"), W("mlp.up_proj"), W("mlp.down_proj")};
      I.max_inter = std::max(I.max_inter, c.intermediate_size);
      continue;
    }
    const int64_t E = c.n_experts(il);
    if (E < c.num_experts_per_tok)
      fail("{}: layer {} has {} experts but num_experts_per_tok = {}", where, il, E, c.num_experts_per_tok);
    if (c.n_group > 1 && E % c.n_group)
      fail("{}: layer {} has {} experts, not divisible by n_group = {}", where, il, E, c.n_group);
    I.max_experts = std::max(I.max_experts, E);
    L.router = W("mlp.gate");
    const std::string bias_name = N.layer(il, "mlp.gate.e_score_correction_bias");
    if (ck.has(bias_name)) L.router_bias = load_vector(ck, bias_name, E);
    if (c.n_shared_experts > 0) {
      L.shared = {W("mlp.shared_experts.gate_proj"), W("mlp.shared_experts.up_proj"), W("mlp.shared_experts.down_proj")};
      I.max_inter = std::max(I.max_inter, L.shared.gate.rows);
    }
    L.experts.resize(size_t(E));
    for (int64_t e = 0; e < E; ++e)
      L.experts[e] = {ck.weight(N.expert(il, e, "gate_proj")), ck.weight(N.expert(il, e, "up_proj")),
                      ck.weight(N.expert(il, e, "down_proj"))};
    I.max_inter = std::max(I.max_inter, c.moe_intermediate_size);
  }

  I.pool = std::make_unique<ThreadPool>(options.n_threads);
  I.ts.resize(size_t(I.pool->size()));
  for (auto& t : I.ts) {
    t.row.resize(size_t(c.kv_lora_rank));
    t.o_lat.resize(size_t(c.kv_lora_rank));
    t.qcat.resize(size_t(c.kv_lora_rank + c.qk_rope_head_dim));
  }
  I.reserve_step(std::max<int64_t>(options.max_step_tokens, 1));
  return m;
}

const ModelConfig& Model::config() const { return impl_->c; }
const Checkpoint& Model::checkpoint() const { return *impl_->ck; }
ThreadPool& Model::pool() { return *impl_->pool; }
int64_t Model::max_context() const { return impl_->max_context; }
void Model::set_observer(ForwardObserver* obs) { impl_->observer = obs; }

void Model::set_expert_mask(int64_t il, std::vector<uint8_t> allowed) {
  const ModelConfig& c = impl_->c;
  if (il < 0 || il >= c.num_hidden_layers) fail("expert mask: layer {} out of range [0, {})", il, c.num_hidden_layers);
  LayerWeights& L = impl_->layers[il];
  if (!L.is_moe) fail("expert mask: layer {} is a dense layer", il);
  if (allowed.empty()) {
    L.allowed.clear();
    return;
  }
  const int64_t E = int64_t(L.experts.size());
  if (int64_t(allowed.size()) != E) fail("expert mask: layer {} has {} experts, mask has {}", il, E, allowed.size());
  int64_t n_allowed = 0;
  for (uint8_t a : allowed) n_allowed += a != 0;
  if (n_allowed < c.num_experts_per_tok)
    fail("expert mask: layer {} allows {} experts, fewer than num_experts_per_tok = {}", il, n_allowed, c.num_experts_per_tok);
  if (c.n_group > 1 && c.topk_group < c.n_group) {
    // Experts of dropped groups are -inf in route(): whichever topk_group groups a token keeps
    // must hold num_experts_per_tok allowed experts, i.e. the topk_group emptiest groups do.
    const int64_t gsize = E / c.n_group;
    std::vector<int64_t> per_group(size_t(c.n_group), 0);
    for (int64_t e = 0; e < E; ++e) per_group[size_t(e / gsize)] += allowed[size_t(e)] != 0;
    std::sort(per_group.begin(), per_group.end());
    int64_t worst = 0;
    for (int64_t g = 0; g < c.topk_group; ++g) worst += per_group[size_t(g)];
    if (worst < c.num_experts_per_tok)
      fail("expert mask: layer {}: the {} groups (of {}) with fewest allowed experts hold {}, fewer than "
           "num_experts_per_tok = {} (group-limited routing could run out of experts)",
           il, c.topk_group, c.n_group, worst, c.num_experts_per_tok);
  }
  L.allowed = std::move(allowed);
}

std::unique_ptr<Sequence> Model::new_sequence() const {
  return std::unique_ptr<Sequence>(
      new Sequence(this, impl_->c.num_hidden_layers, impl_->c.kv_lora_rank + impl_->c.qk_rope_head_dim));
}

uint64_t Model::active_bytes_per_token() const {
  const ModelImpl& I = *impl_;
  const int64_t H = I.c.hidden_size;
  uint64_t b = I.lm_head.storage_bytes() + I.embed.storage_bytes() / uint64_t(std::max<int64_t>(I.embed.rows, 1)) +
               uint64_t(H) * 4;
  for (const auto& L : I.layers) {
    b += L.q_a.data ? L.q_a.storage_bytes() + L.q_b.storage_bytes() : L.q.storage_bytes();
    b += L.kv_a.storage_bytes() + L.kv_b.storage_bytes() + L.o.storage_bytes();
    if (!L.is_moe) {
      b += L.dense.gate.storage_bytes() + L.dense.up.storage_bytes() + L.dense.down.storage_bytes();
      continue;
    }
    b += L.router.storage_bytes();
    if (L.shared.gate.data) b += L.shared.gate.storage_bytes() + L.shared.up.storage_bytes() + L.shared.down.storage_bytes();
    uint64_t all = 0;
    for (const auto& e : L.experts) all += e.gate.storage_bytes() + e.up.storage_bytes() + e.down.storage_bytes();
    b += all / L.experts.size() * uint64_t(I.c.num_experts_per_tok);
  }
  return b;
}

// ---------------------------------------------------------------------------------------------
// Forward

void Model::forward(Sequence& seq, std::span<const int32_t> tokens, std::vector<float>& logits, bool all_logits) {
  StepItem item{&seq, tokens, all_logits};
  forward(std::span<StepItem>(&item, 1), logits);
}

void Model::forward(std::span<StepItem> items, std::vector<float>& logits) {
  ModelImpl& I = *impl_;
  const ModelConfig& c = I.c;
  const int64_t H = c.hidden_size, V = c.vocab_size;
  // Validate everything before touching any sequence.
  int64_t T = 0, n_rows = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const StepItem& it = items[i];
    SICKLE_CHECK(it.seq != nullptr && it.seq->owner_ == this, "StepItem {} has no sequence of this model", i);
    for (size_t j = 0; j < i; ++j)
      if (items[j].seq == it.seq) fail("forward: items {} and {} name the same sequence", j, i);
    if (it.tokens.empty()) fail("forward: item {} has no tokens", i);
    if (it.seq->n_past() + int64_t(it.tokens.size()) > I.max_context)
      fail("forward: sequence would hold {} tokens, more than the context of {} tokens", it.seq->n_past() + it.tokens.size(),
           I.max_context);
    for (int32_t t : it.tokens)
      if (t < 0 || t >= V) fail("forward: token id {} is outside the vocabulary [0, {})", t, V);
    T += int64_t(it.tokens.size());
    n_rows += it.all_logits ? int64_t(it.tokens.size()) : 1;
  }
  if (T == 0) {
    logits.clear();
    return;
  }
  I.reserve_step(T);
  std::vector<int64_t>& item_tok0 = I.s.item_tok0;
  if (item_tok0.size() < items.size() + 1) item_tok0.resize(items.size() + 1);  // grows once per batch size
  {
    int64_t t0 = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      item_tok0[i] = t0;
      Sequence& sq = *items[i].seq;
      sq.reserve(sq.n_past() + int64_t(items[i].tokens.size()));
      for (size_t j = 0; j < items[i].tokens.size(); ++j) {
        I.s.pos[t0 + j] = sq.n_past() + int64_t(j);
        I.s.tok[t0 + j] = items[i].tokens[j];
      }
      t0 += int64_t(items[i].tokens.size());
    }
    item_tok0[items.size()] = t0;
  }
  Scratch& s = I.s;

  // Embeddings: one row of embed_tokens per token.
  I.pool->parallel_for(T, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) I.embed.dequant_row(s.tok[t], s.x.data() + t * H);
  });
  if (I.check_finite && !all_finite(s.x.data(), T * H)) I.throw_nonfinite(-1, "embedding", s.x.data(), T, H, nullptr, items.size());
  // RoPE tables for this step's positions: angle = pos * inv_freq_i in f32 (as HF: outer(t, inv_freq)).
  const int64_t half = c.qk_rope_head_dim / 2;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < half; ++i) {
      float angle = float(s.pos[t]) * I.inv_freq[i];
      s.rope_cos[t * half + i] = float(std::cos(double(angle))) * I.rope_mscale;
      s.rope_sin[t * half + i] = float(std::sin(double(angle))) * I.rope_mscale;
    }

  // x += tmp (a block's output), stopping at the first NaN/Inf in the residual stream.
  auto residual = [&](int64_t il, const char* stage) {
    if (!I.check_finite) {
      for (int64_t i = 0; i < T * H; ++i) s.x[i] += s.tmp[i];
    } else if (!add_all_finite(s.x.data(), s.tmp.data(), T * H)) {
      I.throw_nonfinite(il, stage, s.x.data(), T, H, nullptr, items.size());
    }
  };
  const float eps = float(c.rms_norm_eps);
  for (int64_t il = 0; il < c.num_hidden_layers; ++il) {
    LayerWeights& L = I.layers[il];
    // h = x + attn(norm(x))
    for (int64_t t = 0; t < T; ++t) rmsnorm(s.x.data() + t * H, L.attn_norm.data(), eps, H, s.xn.data() + t * H);
    I.attention(L, il, items, item_tok0, T);
    I.lin(L.o, s.attn.data(), T, s.tmp.data());
    residual(il, "attention");
    // x = h + mlp(norm(h))
    for (int64_t t = 0; t < T; ++t) rmsnorm(s.x.data() + t * H, L.ffn_norm.data(), eps, H, s.xn.data() + t * H);
    if (L.is_moe)
      I.moe(L, il, T);
    else
      I.mlp(L.dense, T, s.xn.data(), s.tmp.data());
    residual(il, L.is_moe ? "moe" : "mlp");
    if (I.observer && I.observer->wants_hidden()) {
      HiddenEvent ev{il, T, H, s.x.data()};
      I.observer->on_hidden(ev);
    }
  }

  // Final norm and lm_head over the rows that need logits.
  int64_t r = 0;
  resize(s.head_tok, n_rows);
  for (size_t i = 0; i < items.size(); ++i) {
    int64_t n = int64_t(items[i].tokens.size());
    int64_t first = items[i].all_logits ? 0 : n - 1;
    for (int64_t j = first; j < n; ++j, ++r) {
      s.head_tok[r] = item_tok0[i] + j;
      rmsnorm(s.x.data() + (item_tok0[i] + j) * H, I.final_norm.data(), eps, H, s.head_rows.data() + r * H);
    }
  }
  logits.resize(size_t(n_rows * V));
  I.lin(I.lm_head, s.head_rows.data(), n_rows, logits.data());
  if (I.check_finite && !all_finite(logits.data(), n_rows * V))
    I.throw_nonfinite(-1, "logits", logits.data(), n_rows, V, s.head_tok.data(), items.size());
  for (auto& it : items) it.seq->n_past_ += int64_t(it.tokens.size());
}

void ModelImpl::throw_nonfinite(int64_t layer, const char* stage, const float* rows, int64_t n_rows, int64_t width,
                                const int64_t* tok_of_row, size_t n_items) const {
  std::vector<NonFiniteError::Hit> hits;
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* p = rows + r * width;
    if (all_finite(p, width)) continue;
    const int64_t t = tok_of_row ? tok_of_row[r] : r;
    // The item holding step token t: item_tok0 is ascending, item i has [item_tok0[i], item_tok0[i + 1]).
    const size_t item = size_t(std::upper_bound(s.item_tok0.begin(), s.item_tok0.begin() + n_items + 1, t) -
                               s.item_tok0.begin()) - 1;
    if (!hits.empty() && hits.back().item == item) continue;  // rows come in item order: its first only
    hits.push_back({item, s.pos[t], std::any_of(p, p + width, [](float v) { return std::isnan(v); })});
  }
  throw NonFiniteError(layer, stage, std::move(hits));
}

// MLA in the absorbed form (DeepSeek-V2 paper §2.1.2 / model-format.md §5), for prefill and
// decode alike. Per token: q = q_b(norm(q_a x)) [heads, nope + rope]; kv_a x = [c | k_pe];
// the cache stores norm(c) and rope(k_pe). Per head h, with W_UK_h = kv_b rows
// [h*(nope+v), h*(nope+v)+nope) and W_UV_h the next v rows:
//   q_abs = q_nope_h W_UK_h                                      [kv_lora]
//   score_s = (q_abs . c_s + q_pe_h . k_pe_s) * softmax_scale    causal over the cache
//   out_h = W_UV_h (sum_s p_s c_s)                               [v]
void ModelImpl::attention(LayerWeights& L, int64_t il, std::span<StepItem> items, const std::vector<int64_t>& item_tok0,
                          int64_t T) {
  const KernelTable& kt = *kernels;
  const int64_t nh = c.num_attention_heads, nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vd = c.v_head_dim,
                kvl = c.kv_lora_rank, qk = c.qk_head_dim(), half = rope / 2, row = kvl + rope;
  // Queries.
  if (c.q_lora_rank > 0) {
    lin(L.q_a, s.xn.data(), T, s.q_lat.data());
    for (int64_t t = 0; t < T; ++t)
      rmsnorm(s.q_lat.data() + t * c.q_lora_rank, L.q_a_norm.data(), 1e-6f, c.q_lora_rank, s.q_lat.data() + t * c.q_lora_rank);
    lin(L.q_b, s.q_lat.data(), T, s.q.data());
  } else {
    lin(L.q, s.xn.data(), T, s.q.data());
  }
  // Latent and rope key; q_a/kv_a layernorms use eps 1e-6 (HF/Moonshot construct them without the config's eps).
  lin(L.kv_a, s.xn.data(), T, s.kv_lat.data());
  auto rotate = [&](float* x, int64_t t) {  // interleaved pairs (x[2i], x[2i+1]) by angle pos * inv_freq_i
    const float* cs = s.rope_cos.data() + t * half;
    const float* sn = s.rope_sin.data() + t * half;
    for (int64_t i = 0; i < half; ++i) {
      float a = x[2 * i], b = x[2 * i + 1];
      x[2 * i] = a * cs[i] - b * sn[i];
      x[2 * i + 1] = b * cs[i] + a * sn[i];
    }
  };
  for (size_t i = 0; i < items.size(); ++i) {
    Sequence& sq = *items[i].seq;
    float* cache = sq.cache_[il].data();
    for (int64_t j = 0; j < int64_t(items[i].tokens.size()); ++j) {
      int64_t t = item_tok0[i] + j;
      float* kv = s.kv_lat.data() + t * row;
      float* dst = cache + (sq.n_past_ + j) * row;
      rmsnorm(kv, L.kv_a_norm.data(), 1e-6f, kvl, dst);
      std::memcpy(dst + kvl, kv + kvl, size_t(rope) * sizeof(float));
      rotate(dst + kvl, t);
      for (int64_t h = 0; h < nh; ++h) rotate(s.q.data() + t * nh * qk + h * qk + nope, t);
    }
  }
  const float* kvb32 = L.kv_b_f32.empty() ? nullptr : L.kv_b_f32.data();
  const uint16_t* kvb16 = L.kv_b.encoding == WeightEncoding::kBF16 && !options.exact_kernels
                              ? static_cast<const uint16_t*>(L.kv_b.data)
                              : nullptr;
  // Prefill chunks (with an f32 kv_b and a context that fits the block scratch): blocked matrix
  // products (attention_block). Every other token attends on its own (decode_attention).
  auto blocked = [&](size_t i) {
    const int64_t n = int64_t(items[i].tokens.size()), past = items[i].seq->n_past_;
    return kvb32 && n >= kAttnMinTokens && (past + n) * kAttnBlock <= kAttnMaxScratch;
  };
  // Blocked items: one task per (block of kAttnBlock queries, group of heads); a group has up
  // to kAttnBlockRows / kAttnBlock heads (fewer when the scores would pass kAttnMaxScratch).
  s.block_tasks.clear();
  s.head_toks.clear();
  for (size_t i = 0; i < items.size(); ++i) {
    const int64_t n = int64_t(items[i].tokens.size()), past = items[i].seq->n_past_;
    if (blocked(i)) {
      const int64_t g = std::clamp<int64_t>(
          std::min(kAttnBlockRows / kAttnBlock, kAttnMaxScratch / ((past + n) * kAttnBlock)), 1, nh);
      for (int64_t j0 = 0; j0 < n; j0 += kAttnBlock)
        for (int64_t h0 = 0; h0 < nh; h0 += g) s.block_tasks.push_back({int32_t(i), j0, h0, std::min(nh, h0 + g)});
      continue;
    }
    const Sequence& sq = *items[i].seq;
    for (int64_t j = 0; j < n; ++j) s.head_toks.push_back({item_tok0[i] + j, sq.cache_[il].data(), past + j + 1});
  }
  if (!s.block_tasks.empty())
    pool->parallel_for_dynamic(int64_t(s.block_tasks.size()), 1, [&](int64_t b, int64_t e, int tid) {
      for (int64_t task = b; task < e; ++task) {
        const Scratch::BlockTask& bt = s.block_tasks[size_t(task)];
        const StepItem& it = items[size_t(bt.item)];
        const int64_t n = int64_t(it.tokens.size()), past = it.seq->n_past_;
        attention_block(ts[tid], it.seq->cache_[il].data(), kvb32, bt.h0, bt.h1, item_tok0[size_t(bt.item)] + bt.j0,
                        past + bt.j0, std::min(kAttnBlock, n - bt.j0), softmax_scale);
      }
    });
  if (s.head_toks.empty()) return;
  if (kvb16 || kvb32) {
    const int64_t n_tok = int64_t(s.head_toks.size());
    for (int64_t w0 = 0; w0 < n_tok; w0 += kDecodeWindow)
      decode_attention(L, kvb16, kvb32, w0, std::min(n_tok, w0 + kDecodeWindow), softmax_scale);
    return;
  }
  // Without a bf16 or f32 kv_b (a big fp8 one): per (token, head), kv_b rows dequantized on the
  // fly. q_abs = sum_d q_nope[d] * W_UK_h[d] (row d of kv_b's head block); out = W_UV_h o_lat.
  pool->parallel_for(int64_t(s.head_toks.size()) * nh, [&](int64_t b, int64_t e, int tid) {
    ThreadScratch& ts_ = ts[tid];
    for (int64_t task = b; task < e; ++task) {
      const Scratch::HeadTok& ht = s.head_toks[size_t(task / nh)];
      const int64_t h = task % nh;
      const float* qh = s.q.data() + ht.t * nh * qk + h * qk;
      float* qcat = ts_.qcat.data();  // [kvl + rope]: q_abs then q_pe, against whole cache rows
      std::fill(qcat, qcat + kvl, 0.0f);
      for (int64_t d = 0; d < nope; ++d) {
        L.kv_b.dequant_row(h * (nope + vd) + d, ts_.row.data());
        kt.axpy(qh[d], ts_.row.data(), qcat, kvl);
      }
      std::memcpy(qcat + kvl, qh + nope, size_t(rope) * sizeof(float));
      resize(ts_.scores, ht.ctx);
      float* sc = ts_.scores.data();
      kt.gemv_n(ht.cache, row, ht.ctx, row, qcat, sc);
      for (int64_t u = 0; u < ht.ctx; ++u) sc[u] *= softmax_scale;
      kt.softmax(sc, ht.ctx);
      float* o_lat = ts_.o_lat.data();
      kt.gemv_t(ht.cache, row, ht.ctx, kvl, sc, o_lat);
      for (int64_t v = 0; v < vd; ++v) {
        L.kv_b.dequant_row(h * (nope + vd) + nope + v, ts_.row.data());
        s.attn[ht.t * nh * vd + h * vd + v] = kt.dot(ts_.row.data(), o_lat, kvl);
      }
    }
  });
}

// Attention of the step tokens s.head_toks[w0, w1) one by one, with kv_b's two halves applied
// to all of them at once (each read once per window, not once per token):
//   q_abs [w, h] = q_nope [w, h] W_UK_h          (per head, one product over all the tokens)
//   S [h, ctx] = [q_abs | q_pe] cache^T, P = softmax(scale S), o [h] = P cache[:, :kvl]
//                                                (per token and head group: the group's heads
//                                                share each read of the token's cache)
//   out [w, h] = o [w, h] W_UV_h^T               (per head, one product over all the tokens)
void ModelImpl::decode_attention(const LayerWeights& L, const uint16_t* kvb16, const float* kvb32, int64_t w0,
                                 int64_t w1, float scale) {
  const KernelTable& kt = *kernels;
  const int64_t nh = c.num_attention_heads, nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vd = c.v_head_dim,
                kvl = c.kv_lora_rank, qk = c.qk_head_dim(), row = kvl + rope, nw = w1 - w0;
  resize(s.dq, nw * nh * row);
  resize(s.dlat, nw * nh * kvl);
  // Runs of consecutive step rows (a decode-only step is one run).
  s.decode_runs.clear();
  for (int64_t d = 0; d < nw; ++d) {
    const int64_t t = s.head_toks[size_t(w0 + d)].t;
    if (!s.decode_runs.empty() && s.decode_runs.back().t0 + s.decode_runs.back().n == t) ++s.decode_runs.back().n;
    else s.decode_runs.push_back({t, 1, d});
  }
  pool->parallel_for(nh, [&](int64_t h0, int64_t h1, int) {
    for (int64_t h = h0; h < h1; ++h)
      for (const Scratch::DecodeRun& r : s.decode_runs) {
        const float* q = s.q.data() + r.t0 * nh * qk + h * qk;
        float* dq = s.dq.data() + (r.d0 * nh + h) * row;
        const int64_t off = h * (nope + vd) * kvl;  // W_UK_h: kv_b rows [h (nope + vd), + nope)
        if (kvb16) kt.gemm_nn_bf16(q, nh * qk, kvb16 + off, kvl, dq, nh * row, r.n, kvl, nope);
        else kt.gemm_nn(q, nh * qk, kvb32 + off, kvl, dq, nh * row, r.n, kvl, nope);
        for (int64_t j = 0; j < r.n; ++j)
          std::memcpy(dq + j * nh * row + kvl, q + j * nh * qk + nope, size_t(rope) * sizeof(float));
      }
  });
  // Head groups: one per token when there are at least as many tokens as threads, else enough
  // groups that a single sequence still uses every thread.
  const int64_t n_groups = std::clamp<int64_t>(pool->size() / nw, 1, nh), group = (nh + n_groups - 1) / n_groups;
  pool->parallel_for_dynamic(nw * n_groups, 1, [&](int64_t b, int64_t e, int tid) {
    ThreadScratch& t = ts[tid];
    for (int64_t task = b; task < e; ++task) {
      const int64_t d = task / n_groups, h0 = (task % n_groups) * group, ng = std::min(nh, h0 + group) - h0;
      const Scratch::HeadTok& ht = s.head_toks[size_t(w0 + d)];
      resize(t.st, ng * ht.ctx);
      float* sc = t.st.data();  // [ng, ctx]
      kt.gemm_nt(s.dq.data() + (d * nh + h0) * row, row, ht.cache, row, sc, ht.ctx, ng, ht.ctx, row);
      for (int64_t g = 0; g < ng; ++g) {
        float* sg = sc + g * ht.ctx;
        for (int64_t u = 0; u < ht.ctx; ++u) sg[u] *= scale;
        kt.softmax(sg, ht.ctx);
      }
      kt.gemm_nn(sc, ht.ctx, ht.cache, row, s.dlat.data() + (d * nh + h0) * kvl, kvl, ng, kvl, ht.ctx);
    }
  });
  pool->parallel_for(nh, [&](int64_t h0, int64_t h1, int) {
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t r0 = h * (nope + vd) + nope;  // W_UV_h: kv_b rows [r0, r0 + vd)
      WeightView uv;                              // those rows as a bf16 weight of their own
      uv.encoding = WeightEncoding::kBF16;
      uv.rows = vd;
      uv.cols = kvl;
      uv.data = kvb16 ? kvb16 + r0 * kvl : nullptr;
      for (const Scratch::DecodeRun& r : s.decode_runs) {
        const float* o = s.dlat.data() + (r.d0 * nh + h) * kvl;
        float* out = s.attn.data() + r.t0 * nh * vd + h * vd;
        if (kvb16) linear_strided(kt, uv, o, nh * kvl, r.n, out, nh * vd);
        else kt.gemm_nt(o, nh * kvl, kvb32 + r0 * kvl, kvl, out, nh * vd, r.n, vd, kvl);
      }
    }
  });
}

// The absorbed attention of heads [h0, h1) for nq consecutive query tokens (step rows t0..,
// cache positions past..), as matrix products over the whole block, the rows r = (head g,
// query j) of all the group's heads together so that each product is big enough for the
// tile kernels (kernels/ops.h; AMX packs each operand once per product):
//   Q [r, kvl + rope] = [q_nope_g,j W_UK_g | q_pe_g,j]         (one product per head)
//   S [r, ctx] = Q cache^T,  P = causal softmax(scale S)      (ctx = past + nq; query j sees
//                                                               past + j + 1 positions)
//   O [r, kvl] = P cache[:, :kvl],  out_g [nq, v] = O_g W_UV_g^T   (one product per head)
void ModelImpl::attention_block(ThreadScratch& t, const float* cache, const float* kvb32, int64_t h0, int64_t h1,
                                int64_t t0, int64_t past, int64_t nq, float scale) {
  const KernelTable& kt = *kernels;
  const int64_t nh = c.num_attention_heads, nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vd = c.v_head_dim,
                kvl = c.kv_lora_rank, qk = c.qk_head_dim(), row = kvl + rope, ctx = past + nq, rows = (h1 - h0) * nq;
  resize(t.qt, rows * row);
  resize(t.st, rows * ctx);
  resize(t.ot, rows * kvl);
  const float* q0 = s.q.data() + t0 * nh * qk;
  for (int64_t h = h0; h < h1; ++h) {
    float* qh = t.qt.data() + (h - h0) * nq * row;
    kt.gemm_nn(q0 + h * qk, nh * qk, kvb32 + h * (nope + vd) * kvl, kvl, qh, row, nq, kvl, nope);
    for (int64_t j = 0; j < nq; ++j)
      std::memcpy(qh + j * row + kvl, q0 + j * nh * qk + h * qk + nope, size_t(rope) * sizeof(float));
  }
  kt.gemm_nt(t.qt.data(), row, cache, row, t.st.data(), ctx, rows, ctx, row);
  for (int64_t r = 0; r < rows; ++r) {
    float* pr = t.st.data() + r * ctx;
    const int64_t len = past + r % nq + 1;
    for (int64_t u = 0; u < len; ++u) pr[u] *= scale;
    kt.softmax(pr, len);
    std::fill(pr + len, pr + ctx, 0.0f);
  }
  kt.gemm_nn(t.st.data(), ctx, cache, row, t.ot.data(), kvl, rows, kvl, ctx);
  for (int64_t h = h0; h < h1; ++h)
    kt.gemm_nt(t.ot.data() + (h - h0) * nq * kvl, kvl, kvb32 + (h * (nope + vd) + nope) * kvl, kvl,
            s.attn.data() + t0 * nh * vd + h * vd, nh * vd, nq, vd, kvl);
}

// down(silu(gate x) * up x) for T rows (dense layers, shared experts).
void ModelImpl::mlp(const Mlp& m, int64_t T, const float* in, float* out) {
  if (!options.exact_kernels) {
    expert_mlp(*kernels, m, in, T, out, s.moe, pool.get());
    return;
  }
  const int64_t inter = m.gate.rows;
  lin(m.gate, in, T, s.gate.data());
  lin(m.up, in, T, s.up.data());
  kernels->silu_mul(s.gate.data(), s.up.data(), T * inter, s.gate.data());
  lin(m.down, s.gate.data(), T, out);
}

// noaux_tc routing (DeepSeek-V3's inference/model.py Gate, HF DeepseekV3TopkRouter / MoEGate):
// s = sigmoid(x W_gate^T) in f32; choice = s + e_score_correction_bias; with n_group > 1 keep the
// topk_group groups whose top-2 choice sum is largest; top-k by choice; weights = unbiased s of the
// chosen, / (sum + 1e-20) when norm_topk_prob. routed_scaling_factor is applied by moe(), not here
// (the observer sees weights without it). Masked experts and experts of dropped groups have
// choice -inf, as in DeepSeek's reference and vLLM's / SGLang's grouped_topk. HF transformers
// fills dropped groups with 0.0, which picks experts outside the kept groups whenever fewer than
// top_k of the kept ones have a positive choice (a negative correction bias).
void ModelImpl::route(LayerWeights& L, int64_t T) {
  const int64_t E = int64_t(L.experts.size()), k = c.num_experts_per_tok, H = c.hidden_size;
  lin(L.router, s.xn.data(), T, s.router_logits.data());
  const bool sigmoid = c.scoring_func == "sigmoid";
  const int64_t n_group = std::max<int64_t>(c.n_group, 1), gsize = E / n_group;
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < T; ++t) {
    float* sc = s.router_logits.data() + t * E;  // becomes s (scores) in place
    float* ch = s.choice.data() + t * E;
    if (sigmoid) {
      for (int64_t e = 0; e < E; ++e) sc[e] = 1.0f / (1.0f + std::exp(-sc[e]));
    } else {
      kernels->softmax(sc, E);
    }
    for (int64_t e = 0; e < E; ++e) {
      ch[e] = sc[e] + (L.router_bias.empty() ? 0.0f : L.router_bias[e]);
      if (!L.allowed.empty() && !L.allowed[e]) ch[e] = ninf;
    }
    if (n_group > 1 && c.topk_group < n_group) {
      // Group score = sum of the top-2 choice values in each contiguous group.
      float gscore[256];
      SICKLE_CHECK(n_group <= 256, "n_group {} too large", n_group);
      for (int64_t g = 0; g < n_group; ++g) {
        float a = ninf, b2 = ninf;
        for (int64_t e = g * gsize; e < (g + 1) * gsize; ++e) {
          if (ch[e] > a) {
            b2 = a;
            a = ch[e];
          } else if (ch[e] > b2) {
            b2 = ch[e];
          }
        }
        gscore[g] = gsize >= 2 ? a + b2 : a;
      }
      bool keep[256] = {};
      for (int64_t r = 0; r < c.topk_group; ++r) {
        int64_t best = -1;
        for (int64_t g = 0; g < n_group; ++g)
          if (!keep[g] && (best < 0 || gscore[g] > gscore[best])) best = g;
        keep[best] = true;
      }
      for (int64_t g = 0; g < n_group; ++g)
        if (!keep[g]) std::fill(ch + g * gsize, ch + (g + 1) * gsize, ninf);
    }
    int32_t* idx = s.chosen.data() + t * k;
    float* w = s.weights.data() + t * k;
    for (int64_t j = 0; j < k; ++j) {
      int64_t best = -1;
      for (int64_t e = 0; e < E; ++e)
        if (ch[e] != ninf && (best < 0 || ch[e] > ch[best])) best = e;
      SICKLE_CHECK(best >= 0, "no expert left to choose in routing");
      idx[j] = int32_t(best);
      w[j] = sc[best];
      ch[best] = ninf;
    }
    if (c.norm_topk_prob && k > 1) {
      float sum = 0;
      for (int64_t j = 0; j < k; ++j) sum += w[j];
      for (int64_t j = 0; j < k; ++j) w[j] /= sum + 1e-20f;
    }
  }
  (void)H;
}

// y = sum_j w_j * scaling * expert_j(x) + shared(x). kernels/moe.h buckets the step's tokens by
// expert, so each chosen expert's weights are read once per step; unchosen experts cost nothing.
void ModelImpl::moe(LayerWeights& L, int64_t il, int64_t T) {
  const int64_t k = c.num_experts_per_tok, H = c.hidden_size;
  route(L, T);
  const bool want_out = observer && observer->wants_expert_outputs();
  if (want_out) resize(s.expert_out, T * k * H);
  float* acc = s.moe_out.data();  // [T, H] f32 accumulation of the routed experts
  std::fill(acc, acc + T * H, 0.0f);
  const float rsf = float(c.routed_scaling_factor);
  float* eout = want_out ? s.expert_out.data() : nullptr;
  if (options.exact_kernels)
    moe_experts_scalar(*kernels, L.experts, s.xn.data(), T, k, s.chosen.data(), s.weights.data(), rsf, acc, eout);
  else
    moe_experts(*kernels, L.experts, s.xn.data(), T, k, s.chosen.data(), s.weights.data(), rsf, acc, eout, s.moe,
                pool.get());
  if (observer) {
    MoeLayerEvent ev;
    ev.layer = il;
    ev.n_tokens = T;
    ev.k = k;
    ev.hidden = H;
    ev.experts = s.chosen.data();
    ev.weights = s.weights.data();
    ev.expert_out = want_out ? s.expert_out.data() : nullptr;
    observer->on_moe_layer(ev);
  }
  if (L.shared.gate.data) {
    mlp(L.shared, T, s.xn.data(), s.tmp.data());
    for (int64_t i = 0; i < T * H; ++i) s.tmp[i] += acc[i];
  } else {
    std::memcpy(s.tmp.data(), acc, size_t(T * H) * sizeof(float));
  }
}

}  // namespace sickle
