// sickle/model/model.cpp — the DeepSeek-V3 / Kimi-K2 forward pass (docs/formats.md §5, HF
// modeling_deepseek semantics). One layer is: attention (MLA, absorbed form) then MLP (dense
// for il < first_k_dense_replace, else MoE with the noaux_tc router and shared experts), each
// wrapped in RMSNorm + residual. All activations are f32; weights stay in their native
// encoding (kernels/linear.h reads bf16, fp8 block and int4 group directly).
//
// Buffer convention: row-major, outermost first; [T, ...] means one row per token of the step.
#include "model/model.h"

#include <unistd.h>

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
#include "model/attention.h"
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
  for (const auto& layer_cache : cache_) b += layer_cache.capacity() * sizeof(float);
  return b;
}

// Grows geometrically (x1.5, at least 256 tokens), so a decode step allocates only when it
// crosses a capacity boundary.
void Sequence::reserve(int64_t n_tokens) {
  if (n_tokens <= capacity_) return;
  int64_t cap = std::max<int64_t>({n_tokens, capacity_ + capacity_ / 2, 256});
  for (auto& layer_cache : cache_) layer_cache.resize(size_t(cap * row_));
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
std::string nonfinite_what(int64_t layer, const std::string& stage,
                           const std::vector<NonFiniteError::Hit>& hits) {
  SICKLE_CHECK(!hits.empty(), "NonFiniteError without a hit");
  std::string s = nonfinite_text(layer, stage, hits.front());
  if (hits.size() > 1) s += fmt::format(" (and in {} more sequences of the step)", hits.size() - 1);
  return s;
}
}  // namespace

NonFiniteError::NonFiniteError(int64_t layer_, std::string stage_, std::vector<Hit> hits_)
    : Error(nonfinite_what(layer_, stage_, hits_)),
      layer(layer_),
      stage(std::move(stage_)),
      hits(std::move(hits_)) {}

std::string NonFiniteError::describe(const Hit& h) const { return nonfinite_text(layer, stage, h); }

// ---------------------------------------------------------------------------------------------
// Weights

namespace {

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
  LargeVector<float> kv_b_f32;  // [n_heads * (nope + v), kv_lora] or empty
  WeightView o;                 // [H, n_heads * v]
  bool is_moe = false;
  Mlp dense;                       // first_k_dense_replace layers
  WeightView router;               // [E, H]
  std::vector<float> router_bias;  // [E] e_score_correction_bias (choice only)
  Mlp shared;                      // shared experts (I = moe_I * n_shared)
  // The routed experts [0, E) (I = moe_I), then, when the shared experts have their shape, the
  // shared expert again at [E]: a small step runs it in the routed experts' call (moe()).
  std::vector<Mlp> expert_mlps;
  int64_t n_experts = 0;  // E
  std::span<const Mlp> experts() const { return {expert_mlps.data(), size_t(n_experts)}; }
  bool shared_in_experts() const { return int64_t(expert_mlps.size()) > n_experts; }
  std::vector<uint8_t> allowed;    // [E] expert mask; empty = all allowed
};

// Step scratch, sized for `cap` tokens; grows (rarely) when a step has more tokens.
struct StepScratch {
  int64_t cap = 0;
  LargeVector<float> x;                   // [T, H] residual stream
  LargeVector<float> xn;                  // [T, H] normed input of the current block
  LargeVector<float> q_lat;               // [T, q_lora]
  LargeVector<float> q;                   // [T, n_heads * (nope + rope)]
  LargeVector<float> kv_lat;              // [T, kv_lora + rope]
  LargeVector<float> attn;                // [T, n_heads * v]
  LargeVector<float> tmp;                 // [T, H] block output before the residual add
  LargeVector<float> gate, up;            // [T, I_max] exact_kernels only
  LargeVector<float> rope_cos, rope_sin;  // [T, rope / 2]
  LargeVector<float> router_logits;       // [T, E_max]
  LargeVector<float> choice;              // [T, E_max] scratch for routing
  std::vector<int32_t> chosen;            // [T, k]
  std::vector<int32_t> chosen_shared;     // [T, k + 1]: chosen, then the shared expert (moe())
  std::vector<float> weights_shared;      // [T, k + 1]: routed_scaling_factor x weights, then 1
  LargeVector<float> weights;             // [T, k] without routed_scaling_factor
  LargeVector<float> moe_out;             // [T, H]
  MoeScratch moe;                         // kernels/moe.h buffers (grow-only)
  LargeVector<float> expert_out;          // [T, k, H] only when an observer wants it
  std::vector<int64_t> pos;               // [T] absolute position of each token
  std::vector<int32_t> tok;               // [T]
  std::vector<int64_t> item_tok0;         // [n_items + 1] first token of each item in the step
  LargeVector<float> head_rows;           // [rows, H] normed rows that need logits (grows to the most)
  std::vector<int64_t> head_tok;          // [rows] the step token of each of them
  std::vector<AttentionItem> attn_items;  // [n_items] this step's attention work (model/attention.h)
};

struct ModelImpl {
  std::unique_ptr<Checkpoint> ck;
  ModelConfig config;
  ModelOptions options;
  const KernelTable* kernels = nullptr;  // options.kernels or kernel_table(); never null once loaded
  std::unique_ptr<ThreadPool> pool;
  ForwardObserver* observer = nullptr;
  bool check_finite = true;  // ModelOptions::check_finite and not SICKLE_CHECK_FINITE=0
  int64_t max_context = 0;
  float softmax_scale = 0;
  std::vector<float> inv_freq;    // [rope / 2] YaRN inverse frequencies
  float rope_mscale = 1;          // cos/sin multiplier
  WeightView embed;               // [V, H]
  WeightView lm_head;             // [V, H] (embed when tied)
  std::vector<float> final_norm;  // [H]
  std::vector<LayerWeights> layers;
  int64_t max_inter = 0, max_experts = 0;
  StepScratch step;
  std::unique_ptr<Attention> attn;  // MLA over the latent cache, with its own scratch

  void reserve_step(int64_t n_tokens);
  void attention(LayerWeights& L, int64_t il, std::span<StepItem> items,
                 const std::vector<int64_t>& item_tok0, int64_t T);
  void mlp(const Mlp& m, int64_t T, const float* in, float* out);
  // exact: the scalar specification kernels (linear_scalar, moe_experts_scalar), e.g. int4 with
  // f32 activations instead of int8-quantized ones. For golden tests and debugging.
  void lin(const WeightView& w, const float* x, int64_t n, float* y) {
    if (options.bf16_activations) {
      if (options.exact_kernels) linear_bf16_acts_scalar(w, x, n, y, pool.get());
      else linear_bf16_acts(*kernels, w, x, n, y, pool.get());
    } else if (options.exact_kernels) {
      linear_scalar(w, x, n, y, pool.get());
    } else {
      linear_with(*kernels, w, x, n, y, pool.get());
    }
  }
  void moe(LayerWeights& L, int64_t il, int64_t T);
  void route(LayerWeights& L, int64_t T);
  // rows [n_rows, width] hold a NaN or Inf: throws NonFiniteError naming the items of the step
  // they belong to (row r is step token tok_of_row[r], or r when tok_of_row is null).
  [[noreturn]] void throw_nonfinite(int64_t layer, const char* stage, const float* rows, int64_t n_rows,
                                    int64_t width, const int64_t* tok_of_row, size_t n_items) const;
};

namespace {
template <class T, class A>
void resize(std::vector<T, A>& v, int64_t n) {
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
  if (T <= step.cap) return;
  const int64_t H = config.hidden_size, nh = config.num_attention_heads;
  resize(step.x, T * H);
  resize(step.xn, T * H);
  resize(step.q_lat, T * std::max<int64_t>(config.q_lora_rank, 1));
  resize(step.q, T * nh * config.qk_head_dim());
  resize(step.kv_lat, T * (config.kv_lora_rank + config.qk_rope_head_dim));
  resize(step.attn, T * nh * config.v_head_dim);
  resize(step.tmp, T * H);
  if (options.exact_kernels) {  // mlp()'s buffers; the fused path uses step.moe's
    resize(step.gate, T * max_inter);
    resize(step.up, T * max_inter);
  }
  resize(step.rope_cos, T * config.qk_rope_head_dim / 2);
  resize(step.rope_sin, T * config.qk_rope_head_dim / 2);
  const int64_t k = config.num_experts_per_tok;
  if (max_experts > 0) {
    resize(step.router_logits, T * max_experts);
    resize(step.choice, T * max_experts);
    resize(step.chosen, T * k);
    resize(step.weights, T * k);
    resize(step.moe_out, T * H);
  }
  resize(step.pos, T);
  resize(step.tok, T);
  step.cap = T;
}

// ---------------------------------------------------------------------------------------------
// Load

Model::Model() : impl_(std::make_unique<ModelImpl>()) {}
Model::~Model() = default;

std::unique_ptr<Model> Model::load(const std::filesystem::path& dir, const ModelOptions& options) {
  std::unique_ptr<Model> m(new Model());
  ModelImpl& impl = *m->impl_;
  impl.ck = Checkpoint::open(dir);
  impl.config = impl.ck->config();
  impl.options = options;
  impl.kernels = options.kernels ? options.kernels : &kernel_table();
  if (options.bf16_activations && !options.exact_kernels && impl.kernels->linear_bf16_dot == nullptr)
    log_warn("--bf16-acts: the {} kernels have no bf16 dot product (it needs AVX512_BF16): activations are "
             "rounded to bf16, but the products run no faster than without the flag",
             impl.kernels->name);
  const ModelConfig& config = impl.config;
  const Checkpoint& ck = *impl.ck;
  const TensorNames& N = ck.names();
  const std::string where = (dir / "config.json").string();
  if (config.topk_method != "noaux_tc" && config.topk_method != "greedy")
    fail("{}: topk_method '{}' is not supported (noaux_tc or greedy)", where, config.topk_method);
  if (config.scoring_func != "sigmoid" && config.scoring_func != "softmax")
    fail("{}: scoring_func '{}' is not supported (sigmoid or softmax)", where, config.scoring_func);
  if (config.qk_rope_head_dim % 2)
    fail("{}: qk_rope_head_dim = {} must be even", where, config.qk_rope_head_dim);
  if (config.num_experts_per_tok <= 0 && config.n_routed_experts > 0)
    fail("{}: num_experts_per_tok = {} must be positive", where, config.num_experts_per_tok);

  const char* check_env = std::getenv("SICKLE_CHECK_FINITE");
  impl.check_finite = options.check_finite && !(check_env && std::string_view(check_env) == "0");
  impl.max_context = options.max_context > 0 ? options.max_context : config.max_position_embeddings;
  if (impl.max_context <= 0)
    fail("{}: max_position_embeddings = {} must be positive", where, config.max_position_embeddings);

  // RoPE and the attention scale (rope.h cites the formulas).
  RopeParams rp = rope_params(config);
  impl.inv_freq = rp.inv_freq;
  impl.rope_mscale = rp.cos_sin_scale;
  impl.softmax_scale = rp.softmax_scale;

  impl.embed = ck.weight(N.embed().substr(0, N.embed().size() - 7));
  impl.lm_head = ck.has_weight(N.lm_head().substr(0, N.lm_head().size() - 7))
                     ? ck.weight(N.lm_head().substr(0, N.lm_head().size() - 7))
                     : impl.embed;  // tie_word_embeddings (validate_layout required lm_head otherwise)
  impl.final_norm = read_f32_tensor(ck, N.final_norm(), config.hidden_size);

  impl.layers.resize(size_t(config.num_hidden_layers));
  impl.max_inter = 1;
  for (int64_t il = 0; il < config.num_hidden_layers; ++il) {
    LayerWeights& L = impl.layers[il];
    auto W = [&](const char* rest) { return ck.weight(N.layer(il, rest)); };
    L.attn_norm = read_f32_tensor(ck, N.layer(il, "input_layernorm.weight"), config.hidden_size);
    L.ffn_norm = read_f32_tensor(ck, N.layer(il, "post_attention_layernorm.weight"), config.hidden_size);
    if (config.q_lora_rank > 0) {
      L.q_a = W("self_attn.q_a_proj");
      L.q_b = W("self_attn.q_b_proj");
      L.q_a_norm = read_f32_tensor(ck, N.layer(il, "self_attn.q_a_layernorm.weight"), config.q_lora_rank);
    } else {
      L.q = W("self_attn.q_proj");
    }
    L.kv_a = W("self_attn.kv_a_proj_with_mqa");
    L.kv_a_norm = read_f32_tensor(ck, N.layer(il, "self_attn.kv_a_layernorm.weight"), config.kv_lora_rank);
    L.kv_b = W("self_attn.kv_b_proj");
    if (uint64_t(L.kv_b.rows) * L.kv_b.cols * 4 <= options.kv_b_copy_max_bytes) {
      L.kv_b_f32.resize(size_t(L.kv_b.rows * L.kv_b.cols));
      for (int64_t r = 0; r < L.kv_b.rows; ++r) L.kv_b.dequant_row(r, L.kv_b_f32.data() + r * L.kv_b.cols);
    }
    L.o = W("self_attn.o_proj");
    L.is_moe = config.is_moe_layer(il);
    if (!L.is_moe) {
      L.dense = {W("mlp.gate_proj"), W("mlp.up_proj"), W("mlp.down_proj")};
      impl.max_inter = std::max(impl.max_inter, config.intermediate_size);
      continue;
    }
    const int64_t E = config.n_experts(il);
    if (E < config.num_experts_per_tok)
      fail("{}: layer {} has {} experts but num_experts_per_tok = {}", where, il, E,
           config.num_experts_per_tok);
    if (config.n_group > 1 && E % config.n_group)
      fail("{}: layer {} has {} experts, not divisible by n_group = {}", where, il, E, config.n_group);
    impl.max_experts = std::max(impl.max_experts, E);
    L.router = W("mlp.gate");
    const std::string bias_name = N.layer(il, "mlp.gate.e_score_correction_bias");
    if (ck.has(bias_name)) L.router_bias = read_f32_tensor(ck, bias_name, E);
    if (config.n_shared_experts > 0) {
      L.shared = {W("mlp.shared_experts.gate_proj"), W("mlp.shared_experts.up_proj"),
                  W("mlp.shared_experts.down_proj")};
      impl.max_inter = std::max(impl.max_inter, L.shared.gate.rows);
    }
    L.expert_mlps.resize(size_t(E));
    L.n_experts = E;
    for (int64_t e = 0; e < E; ++e)
      L.expert_mlps[e] = {ck.weight(N.expert(il, e, "gate_proj")), ck.weight(N.expert(il, e, "up_proj")),
                          ck.weight(N.expert(il, e, "down_proj"))};
    impl.max_inter = std::max(impl.max_inter, config.moe_intermediate_size);
    const Mlp& sh = L.shared;
    const Mlp& e0 = L.expert_mlps.front();
    if (sh.gate.data && sh.gate.rows == e0.gate.rows && sh.gate.cols == e0.gate.cols &&
        sh.up.rows == e0.up.rows && sh.up.cols == e0.up.cols && sh.down.rows == e0.down.rows &&
        sh.down.cols == e0.down.cols)
      L.expert_mlps.push_back(sh);
  }

  impl.pool = std::make_unique<ThreadPool>(options.n_threads);
  // Page tables for every weight filled now (after the configuration checked out), not by
  // faults inside the first tokens: each first touch of a weight page is a fault (64 KiB of
  // fault-around each), and a token that routes to experts not used before pays for them — on
  // a VM guest ~0.3 s over mini's first decode tokens. Then every page read once from user
  // space by all threads (MappedFile::touch_pages): under a shadow-paging hypervisor the first
  // access to a page still exits to the host, whatever the guest's page tables hold —
  // kimi-k2.5-72 on this project's 2-vCPU VM: first 1-token forward 1.16-1.34 s -> 0.23-0.32 s
  // (llama.cpp's warm-up run, all experts active, takes the same cost out of its first
  // request). Only when the files fit in a fraction of RAM: a model larger than memory is read
  // as it runs, and populating it all would evict itself.
  if (options.prefault) {
    uint64_t bytes = 0;
    for (const auto& f : impl.ck->files()) bytes += f->file().size();
    const uint64_t ram = uint64_t(sysconf(_SC_PHYS_PAGES)) * uint64_t(sysconf(_SC_PAGESIZE));
    if (bytes <= ram / 10 * 8) {
      constexpr size_t kTouchRange = size_t(64) << 20;
      for (const auto& f : impl.ck->files()) {
        const MappedFile& mf = f->file();
        mf.prefault();
        impl.pool->parallel_for_dynamic(
            int64_t((mf.size() + kTouchRange - 1) / kTouchRange), 1, [&](int64_t b, int64_t e, int) {
              for (int64_t i = b; i < e; ++i)
                (void)mf.touch_pages(size_t(i) * kTouchRange, size_t(i + 1) * kTouchRange);
            });
      }
    }
  }
  impl.attn = std::make_unique<Attention>(MlaDims{.n_heads = config.num_attention_heads,
                                                  .nope = config.qk_nope_head_dim,
                                                  .rope = config.qk_rope_head_dim,
                                                  .v = config.v_head_dim,
                                                  .kv_lora = config.kv_lora_rank},
                                          impl.pool->size());
  impl.reserve_step(std::max<int64_t>(options.max_step_tokens, 1));
  return m;
}

const ModelConfig& Model::config() const { return impl_->config; }
const Checkpoint& Model::checkpoint() const { return *impl_->ck; }
ThreadPool& Model::pool() { return *impl_->pool; }
int64_t Model::max_context() const { return impl_->max_context; }
void Model::set_observer(ForwardObserver* obs) { impl_->observer = obs; }

void Model::set_expert_mask(int64_t il, std::vector<uint8_t> allowed) {
  const ModelConfig& config = impl_->config;
  if (il < 0 || il >= config.num_hidden_layers)
    fail("expert mask: layer {} out of range [0, {})", il, config.num_hidden_layers);
  LayerWeights& L = impl_->layers[il];
  if (!L.is_moe) fail("expert mask: layer {} is a dense layer", il);
  if (allowed.empty()) {
    L.allowed.clear();
    return;
  }
  const int64_t E = L.n_experts;
  if (int64_t(allowed.size()) != E)
    fail("expert mask: layer {} has {} experts, mask has {}", il, E, allowed.size());
  int64_t n_allowed = 0;
  for (uint8_t a : allowed) n_allowed += a != 0;
  if (n_allowed < config.num_experts_per_tok)
    fail("expert mask: layer {} allows {} experts, fewer than num_experts_per_tok = {}", il, n_allowed,
         config.num_experts_per_tok);
  if (config.n_group > 1 && config.topk_group < config.n_group) {
    // Experts of dropped groups are -inf in route(): whichever topk_group groups a token keeps
    // must hold num_experts_per_tok allowed experts, i.e. the topk_group emptiest groups do.
    const int64_t gsize = E / config.n_group;
    std::vector<int64_t> per_group(size_t(config.n_group), 0);
    for (int64_t e = 0; e < E; ++e) per_group[size_t(e / gsize)] += allowed[size_t(e)] != 0;
    std::sort(per_group.begin(), per_group.end());
    int64_t worst = 0;
    for (int64_t g = 0; g < config.topk_group; ++g) worst += per_group[size_t(g)];
    if (worst < config.num_experts_per_tok)
      fail(
          "expert mask: layer {}: the {} groups (of {}) with fewest allowed experts hold {}, fewer than "
          "num_experts_per_tok = {} (group-limited routing could run out of experts)",
          il, config.topk_group, config.n_group, worst, config.num_experts_per_tok);
  }
  L.allowed = std::move(allowed);
}

std::unique_ptr<Sequence> Model::new_sequence() const {
  return std::unique_ptr<Sequence>(new Sequence(this, impl_->config.num_hidden_layers,
                                                impl_->config.kv_lora_rank + impl_->config.qk_rope_head_dim));
}

uint64_t Model::active_bytes_per_token() const {
  const ModelImpl& impl = *impl_;
  const int64_t H = impl.config.hidden_size;
  uint64_t b = impl.lm_head.storage_bytes() +
               impl.embed.storage_bytes() / uint64_t(std::max<int64_t>(impl.embed.rows, 1)) + uint64_t(H) * 4;
  for (const auto& L : impl.layers) {
    b += L.q_a.data ? L.q_a.storage_bytes() + L.q_b.storage_bytes() : L.q.storage_bytes();
    b += L.kv_a.storage_bytes() + L.kv_b.storage_bytes() + L.o.storage_bytes();
    if (!L.is_moe) {
      b += L.dense.gate.storage_bytes() + L.dense.up.storage_bytes() + L.dense.down.storage_bytes();
      continue;
    }
    b += L.router.storage_bytes();
    if (L.shared.gate.data)
      b += L.shared.gate.storage_bytes() + L.shared.up.storage_bytes() + L.shared.down.storage_bytes();
    uint64_t all = 0;
    for (const auto& e : L.experts())
      all += e.gate.storage_bytes() + e.up.storage_bytes() + e.down.storage_bytes();
    b += all / uint64_t(L.n_experts) * uint64_t(impl.config.num_experts_per_tok);
  }
  return b;
}

// ---------------------------------------------------------------------------------------------
// Forward

void Model::forward(Sequence& seq, std::span<const int32_t> tokens, std::vector<float>& logits,
                    bool all_logits, std::span<const float* const> embed_rows) {
  StepItem item{&seq, tokens, all_logits, embed_rows};
  forward(std::span<StepItem>(&item, 1), logits);
}

void Model::forward(std::span<StepItem> items, std::vector<float>& logits) {
  ModelImpl& impl = *impl_;
  const ModelConfig& config = impl.config;
  const int64_t H = config.hidden_size, V = config.vocab_size;
  // Validate everything before touching any sequence.
  int64_t T = 0, n_rows = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const StepItem& it = items[i];
    SICKLE_CHECK(it.seq != nullptr && it.seq->owner_ == this, "StepItem {} has no sequence of this model", i);
    for (size_t j = 0; j < i; ++j)
      if (items[j].seq == it.seq) fail("forward: items {} and {} name the same sequence", j, i);
    if (it.tokens.empty()) fail("forward: item {} has no tokens", i);
    if (!it.embed_rows.empty() && it.embed_rows.size() != it.tokens.size())
      fail("forward: item {} has {} embedding overrides for {} tokens", i, it.embed_rows.size(),
           it.tokens.size());
    if (it.seq->n_past() + int64_t(it.tokens.size()) > impl.max_context)
      fail("forward: sequence would hold {} tokens, more than the context of {} tokens",
           it.seq->n_past() + it.tokens.size(), impl.max_context);
    for (int32_t t : it.tokens)
      if (t < 0 || t >= V) fail("forward: token id {} is outside the vocabulary [0, {})", t, V);
    T += int64_t(it.tokens.size());
    n_rows += it.all_logits ? int64_t(it.tokens.size()) : 1;
  }
  if (T == 0) {
    logits.clear();
    return;
  }
  impl.reserve_step(T);
  std::vector<int64_t>& item_tok0 = impl.step.item_tok0;
  if (item_tok0.size() < items.size() + 1) item_tok0.resize(items.size() + 1);  // grows once per batch size
  {
    int64_t t0 = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      item_tok0[i] = t0;
      Sequence& sq = *items[i].seq;
      sq.reserve(sq.n_past() + int64_t(items[i].tokens.size()));
      for (size_t j = 0; j < items[i].tokens.size(); ++j) {
        impl.step.pos[t0 + j] = sq.n_past() + int64_t(j);
        impl.step.tok[t0 + j] = items[i].tokens[j];
      }
      t0 += int64_t(items[i].tokens.size());
    }
    item_tok0[items.size()] = t0;
  }
  StepScratch& step = impl.step;

  // Embeddings: one row of embed_tokens per token, or the item's override row.
  impl.pool->parallel_for(T, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) impl.embed.dequant_row(step.tok[t], step.x.data() + t * H);
  });
  for (size_t i = 0; i < items.size(); ++i)
    for (size_t j = 0; j < items[i].embed_rows.size(); ++j)
      if (const float* row = items[i].embed_rows[j])
        std::copy(row, row + H, step.x.data() + (item_tok0[i] + int64_t(j)) * H);
  if (impl.check_finite && !all_finite(step.x.data(), T * H))
    impl.throw_nonfinite(-1, "embedding", step.x.data(), T, H, nullptr, items.size());
  // RoPE tables for this step's positions: angle = pos * inv_freq_i in f32 (as HF: outer(t, inv_freq)).
  const int64_t half = config.qk_rope_head_dim / 2;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < half; ++i) {
      float angle = float(step.pos[t]) * impl.inv_freq[i];
      step.rope_cos[t * half + i] = float(std::cos(double(angle))) * impl.rope_mscale;
      step.rope_sin[t * half + i] = float(std::sin(double(angle))) * impl.rope_mscale;
    }

  // x += tmp (a block's output), stopping at the first NaN/Inf in the residual stream.
  auto residual = [&](int64_t il, const char* stage) {
    if (!impl.check_finite) {
      for (int64_t i = 0; i < T * H; ++i) step.x[i] += step.tmp[i];
    } else if (!add_all_finite(step.x.data(), step.tmp.data(), T * H)) {
      impl.throw_nonfinite(il, stage, step.x.data(), T, H, nullptr, items.size());
    }
  };
  const float eps = float(config.rms_norm_eps);
  for (int64_t il = 0; il < config.num_hidden_layers; ++il) {
    LayerWeights& L = impl.layers[il];
    // h = x + attn(norm(x))
    for (int64_t t = 0; t < T; ++t)
      rmsnorm(step.x.data() + t * H, L.attn_norm.data(), eps, H, step.xn.data() + t * H);
    impl.attention(L, il, items, item_tok0, T);
    impl.lin(L.o, step.attn.data(), T, step.tmp.data());
    residual(il, "attention");
    // x = h + mlp(norm(h))
    for (int64_t t = 0; t < T; ++t)
      rmsnorm(step.x.data() + t * H, L.ffn_norm.data(), eps, H, step.xn.data() + t * H);
    if (L.is_moe) impl.moe(L, il, T);
    else impl.mlp(L.dense, T, step.xn.data(), step.tmp.data());
    residual(il, L.is_moe ? "moe" : "mlp");
    if (impl.observer && impl.observer->wants_hidden()) {
      HiddenEvent ev{il, T, H, step.x.data()};
      impl.observer->on_hidden(ev);
    }
  }

  // Final norm and lm_head over the rows that need logits.
  int64_t r = 0;
  resize(step.head_tok, n_rows);
  resize(step.head_rows, n_rows * H);
  for (size_t i = 0; i < items.size(); ++i) {
    int64_t n = int64_t(items[i].tokens.size());
    int64_t first = items[i].all_logits ? 0 : n - 1;
    for (int64_t j = first; j < n; ++j, ++r) {
      step.head_tok[r] = item_tok0[i] + j;
      rmsnorm(step.x.data() + (item_tok0[i] + j) * H, impl.final_norm.data(), eps, H,
              step.head_rows.data() + r * H);
    }
  }
  logits.resize(size_t(n_rows * V));
  impl.lin(impl.lm_head, step.head_rows.data(), n_rows, logits.data());
  if (impl.check_finite && !all_finite(logits.data(), n_rows * V))
    impl.throw_nonfinite(-1, "logits", logits.data(), n_rows, V, step.head_tok.data(), items.size());
  for (auto& it : items) it.seq->n_past_ += int64_t(it.tokens.size());
}

void ModelImpl::throw_nonfinite(int64_t layer, const char* stage, const float* rows, int64_t n_rows,
                                int64_t width, const int64_t* tok_of_row, size_t n_items) const {
  std::vector<NonFiniteError::Hit> hits;
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* p = rows + r * width;
    if (all_finite(p, width)) continue;
    const int64_t t = tok_of_row ? tok_of_row[r] : r;
    // The item holding step token t: item_tok0 is ascending, item i has [item_tok0[i], item_tok0[i + 1]).
    const size_t item =
        size_t(std::upper_bound(step.item_tok0.begin(), step.item_tok0.begin() + n_items + 1, t) -
               step.item_tok0.begin()) -
        1;
    if (!hits.empty() && hits.back().item == item) continue;  // rows come in item order: its first only
    hits.push_back({item, step.pos[t], std::any_of(p, p + width, [](float v) { return std::isnan(v); })});
  }
  throw NonFiniteError(layer, stage, std::move(hits));
}

// MLA in the absorbed form (DeepSeek-V2 paper §2.1.2 / docs/formats.md §5), for prefill and
// decode alike. Here, per token: q = q_b(norm(q_a x)) [heads, nope + rope] with q_pe roped;
// kv_a x = [c | k_pe], and the cache row of the token gets norm(c) and rope(k_pe). Then
// model/attention.h attends over the cache (its header gives the formulas).
void ModelImpl::attention(LayerWeights& L, int64_t il, std::span<StepItem> items,
                          const std::vector<int64_t>& item_tok0, int64_t T) {
  const int64_t nh = config.num_attention_heads, nope = config.qk_nope_head_dim,
                rope = config.qk_rope_head_dim, kvl = config.kv_lora_rank, qk = config.qk_head_dim(),
                half = rope / 2, row = kvl + rope;
  // Queries.
  if (config.q_lora_rank > 0) {
    lin(L.q_a, step.xn.data(), T, step.q_lat.data());
    for (int64_t t = 0; t < T; ++t)
      rmsnorm(step.q_lat.data() + t * config.q_lora_rank, L.q_a_norm.data(), 1e-6f, config.q_lora_rank,
              step.q_lat.data() + t * config.q_lora_rank);
    lin(L.q_b, step.q_lat.data(), T, step.q.data());
  } else {
    lin(L.q, step.xn.data(), T, step.q.data());
  }
  // Latent and rope key; q_a/kv_a layernorms use eps 1e-6 (HF/Moonshot construct them without the config's
  // eps).
  lin(L.kv_a, step.xn.data(), T, step.kv_lat.data());
  auto rotate = [&](float* x, int64_t t) {  // interleaved pairs (x[2i], x[2i+1]) by angle pos * inv_freq_i
    const float* cs = step.rope_cos.data() + t * half;
    const float* sn = step.rope_sin.data() + t * half;
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
      float* kv = step.kv_lat.data() + t * row;
      float* dst = cache + (sq.n_past_ + j) * row;
      rmsnorm(kv, L.kv_a_norm.data(), 1e-6f, kvl, dst);
      std::memcpy(dst + kvl, kv + kvl, size_t(rope) * sizeof(float));
      rotate(dst + kvl, t);
      for (int64_t h = 0; h < nh; ++h) rotate(step.q.data() + t * nh * qk + h * qk + nope, t);
    }
  }
  // The rest (scores over the cache, softmax, the value side) is model/attention.h's, by the
  // strategy it picks per item from kv_b's forms and the item's size.
  KvbForms kv_b;
  kv_b.view = &L.kv_b;
  kv_b.f32 = L.kv_b_f32.empty() ? nullptr : L.kv_b_f32.data();
  // exact_kernels: kv_b only as f32 (the copy) or dequantized, like the reference.
  if (L.kv_b.encoding == WeightEncoding::kBF16 && !options.exact_kernels)
    kv_b.bf16 = static_cast<const uint16_t*>(L.kv_b.data);
  step.attn_items.clear();
  for (size_t i = 0; i < items.size(); ++i)
    step.attn_items.push_back({items[i].seq->cache_[il].data(), items[i].seq->n_past_,
                               int64_t(items[i].tokens.size()), item_tok0[i]});
  attn->run(*kernels, *pool, kv_b, step.attn_items, step.q.data(), step.attn.data(), softmax_scale);
}

// down(silu(gate x) * up x) for T rows (dense layers, shared experts).
void ModelImpl::mlp(const Mlp& m, int64_t T, const float* in, float* out) {
  if (!options.exact_kernels) {
    expert_mlp(*kernels, m, in, T, out, step.moe, pool.get(), options.bf16_activations);
    return;
  }
  const int64_t inter = m.gate.rows;
  lin(m.gate, in, T, step.gate.data());
  lin(m.up, in, T, step.up.data());
  kernels->silu_mul(step.gate.data(), step.up.data(), T * inter, step.gate.data());
  lin(m.down, step.gate.data(), T, out);
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
  const int64_t E = L.n_experts, k = config.num_experts_per_tok, H = config.hidden_size;
  lin(L.router, step.xn.data(), T, step.router_logits.data());
  const bool sigmoid = config.scoring_func == "sigmoid";
  const int64_t n_group = std::max<int64_t>(config.n_group, 1), gsize = E / n_group;
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < T; ++t) {
    float* sc = step.router_logits.data() + t * E;  // becomes s (scores) in place
    float* ch = step.choice.data() + t * E;
    if (sigmoid) {
      for (int64_t e = 0; e < E; ++e) sc[e] = 1.0f / (1.0f + std::exp(-sc[e]));
    } else {
      kernels->softmax(sc, E);
    }
    for (int64_t e = 0; e < E; ++e) {
      ch[e] = sc[e] + (L.router_bias.empty() ? 0.0f : L.router_bias[e]);
      if (!L.allowed.empty() && !L.allowed[e]) ch[e] = ninf;
    }
    if (n_group > 1 && config.topk_group < n_group) {
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
      for (int64_t r = 0; r < config.topk_group; ++r) {
        int64_t best = -1;
        for (int64_t g = 0; g < n_group; ++g)
          if (!keep[g] && (best < 0 || gscore[g] > gscore[best])) best = g;
        keep[best] = true;
      }
      for (int64_t g = 0; g < n_group; ++g)
        if (!keep[g]) std::fill(ch + g * gsize, ch + (g + 1) * gsize, ninf);
    }
    int32_t* idx = step.chosen.data() + t * k;
    float* w = step.weights.data() + t * k;
    for (int64_t j = 0; j < k; ++j) {
      int64_t best = -1;
      for (int64_t e = 0; e < E; ++e)
        if (ch[e] != ninf && (best < 0 || ch[e] > ch[best])) best = e;
      SICKLE_CHECK(best >= 0, "no expert left to choose in routing");
      idx[j] = int32_t(best);
      w[j] = sc[best];
      ch[best] = ninf;
    }
    if (config.norm_topk_prob && k > 1) {
      float sum = 0;
      for (int64_t j = 0; j < k; ++j) sum += w[j];
      for (int64_t j = 0; j < k; ++j) w[j] /= sum + 1e-20f;
    }
  }
  (void)H;
}

// Steps of at most this many tokens run the shared expert in the routed experts' call (moe()).
constexpr int64_t kFuseSharedMaxTokens = 16;

// y = sum_j w_j * scaling * expert_j(x) + shared(x). kernels/moe.h buckets the step's tokens by
// expert, so each chosen expert's weights are read once per step; unchosen experts cost nothing.
void ModelImpl::moe(LayerWeights& L, int64_t il, int64_t T) {
  const int64_t k = config.num_experts_per_tok, H = config.hidden_size;
  route(L, T);
  const bool want_out = observer && observer->wants_expert_outputs();
  if (want_out) resize(step.expert_out, T * k * H);
  float* acc = step.moe_out.data();  // [T, H] f32 accumulation of the routed experts
  const float rsf = float(config.routed_scaling_factor);
  float* eout = want_out ? step.expert_out.data() : nullptr;
  // A small step (decode, a batch of decodes) runs the shared expert as one more slot of the
  // routed experts' call: one set of parallel regions per layer instead of two, and its rows
  // share the dynamic split with the routed experts'. The sums are the same (slot weights
  // rsf x w as moe_experts forms them, then 1 x shared added last: shared + routed in either
  // order). Prefill steps keep two calls: a mixed call would gather f32 inputs for every entry.
  const bool fuse_shared = options.fuse_shared_experts && !options.exact_kernels && !want_out &&
                           L.shared_in_experts() && T <= kFuseSharedMaxTokens;
  if (fuse_shared) {
    const int64_t k1 = k + 1;
    step.chosen_shared.resize(size_t(T * k1));
    step.weights_shared.resize(size_t(T * k1));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t j = 0; j < k; ++j) {
        step.chosen_shared[size_t(t * k1 + j)] = step.chosen[size_t(t * k + j)];
        step.weights_shared[size_t(t * k1 + j)] = rsf * step.weights[size_t(t * k + j)];
      }
      step.chosen_shared[size_t(t * k1 + k)] = int32_t(L.n_experts);
      step.weights_shared[size_t(t * k1 + k)] = 1.0f;
    }
    float* out = step.tmp.data();
    std::fill(out, out + T * H, 0.0f);
    moe_experts(*kernels, L.expert_mlps, step.xn.data(), T, k1, step.chosen_shared.data(),
                step.weights_shared.data(), 1.0f, out, nullptr, step.moe, pool.get(),
                options.bf16_activations);
  } else {
    std::fill(acc, acc + T * H, 0.0f);
    if (options.exact_kernels)
      moe_experts_scalar(*kernels, L.experts(), step.xn.data(), T, k, step.chosen.data(), step.weights.data(),
                         rsf, acc, eout, options.bf16_activations);
    else
      moe_experts(*kernels, L.experts(), step.xn.data(), T, k, step.chosen.data(), step.weights.data(), rsf,
                  acc, eout, step.moe, pool.get(), options.bf16_activations);
  }
  if (observer) {
    MoeLayerEvent ev;
    ev.layer = il;
    ev.n_tokens = T;
    ev.k = k;
    ev.hidden = H;
    ev.experts = step.chosen.data();
    ev.weights = step.weights.data();
    ev.expert_out = want_out ? step.expert_out.data() : nullptr;
    observer->on_moe_layer(ev);
  }
  if (fuse_shared) return;
  if (L.shared.gate.data) {
    mlp(L.shared, T, step.xn.data(), step.tmp.data());
    for (int64_t i = 0; i < T * H; ++i) step.tmp[i] += acc[i];
  } else {
    std::memcpy(step.tmp.data(), acc, size_t(T * H) * sizeof(float));
  }
}

}  // namespace sickle
