// bench/kernels_bench — linear kernels in GB/s of weight bytes (decode) and GFLOP/s (prefill),
// each against the machine's memory read bandwidth measured at start-up in the same run.
//
//   build-*/bench/kernels_bench [--benchmark_filter=int4] [google-benchmark flags]
//   env: SICKLE_BENCH_THREADS (default 2), SICKLE_BENCH_MIB (cold working set, default 1024),
//        SICKLE_KERNELS=scalar|avx2|avx512|amx (default: best for the CPU),
//        SICKLE_BENCH_BESTOF=N: instead, N interleaved rounds of bandwidth / decode kernels, best
//        of each (the fair comparison on a machine shared with other busy processes)
//
// "cold" benchmarks cycle through copies of the weight spanning SICKLE_BENCH_MIB so each call
// streams from memory as decode does (a 1 MiB expert would otherwise sit in cache); "hot" ones
// reuse one copy (cache-resident: the kernel's compute limit). Counters: GB/s = weight bytes
// (data + scales) per second, bw_frac = that / measured read bandwidth (re-measured right before
// each cold benchmark: membw_GB/s), GFLOP/s = 2 rows cols n, fma_frac (hot) = rows cols n per
// second / the f32 FMA peak of the threads.
#include <benchmark/benchmark.h>
#include <immintrin.h>

#include <algorithm>
#include <chrono>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/cpu.h"
#include "base/numeric.h"
#include "kernels/dispatch.h"
#include "kernels/linear.h"
#include "kernels/moe.h"
#include "kernels/ops.h"
#include "runtime/membw.h"
#include "runtime/thread_pool.h"

namespace {

using namespace sickle;

int g_threads = 2;
size_t g_cold_bytes = size_t(1) << 30;
double g_membw = 0;
std::unique_ptr<ThreadPool> g_pool;

// The machine is often shared: measure the bandwidth again right before each memory-bound
// benchmark so its fraction compares figures taken under the same load.
double membw_now() {
  g_membw = measure_read_bandwidth(g_pool.get(), std::min<size_t>(g_cold_bytes, size_t(512) << 20), 3)
                .read_bytes_per_s();
  return g_membw;
}

// K copies of one random weight, each a separate allocation (so cold calls stream memory).
struct WeightSet {
  std::vector<std::vector<uint8_t>> data;
  std::vector<std::vector<uint16_t>> scales;
  std::vector<WeightView> views;
};

std::shared_ptr<WeightSet> make_set(WeightEncoding enc, int64_t rows, int64_t cols, bool cold) {
  auto s = std::make_shared<WeightSet>();
  WeightView w;
  w.name = "bench";
  w.encoding = enc;
  w.rows = rows;
  w.cols = cols;
  std::mt19937 rng(42);
  size_t bytes = enc == WeightEncoding::kInt4Group ? size_t(rows * cols / 2) : size_t(rows * cols) * 2;
  std::vector<uint8_t> proto(bytes);
  for (auto& b : proto) b = uint8_t(rng());
  if (enc == WeightEncoding::kBF16)  // finite, weight-like values
    for (size_t i = 0; i < bytes / 2; ++i) {
      uint16_t h = f32_to_bf16(float(int(rng() % 2001) - 1000) * 1e-5f);
      std::memcpy(&proto[2 * i], &h, 2);
    }
  std::vector<uint16_t> sproto;
  if (enc == WeightEncoding::kInt4Group) {
    w.group_size = 32;
    w.scale_cols = cols / 32;
    sproto.resize(size_t(rows * w.scale_cols));
    for (auto& v : sproto) v = f32_to_bf16(0.01f + float(rng() % 100) * 1e-4f);
  }
  uint64_t per = w.storage_bytes();
  size_t copies = cold ? std::max<size_t>(2, g_cold_bytes / per) : 1;
  for (size_t k = 0; k < copies; ++k) {
    s->data.push_back(proto);
    if (!sproto.empty()) s->scales.push_back(sproto);
  }
  for (size_t k = 0; k < copies; ++k) {
    WeightView v = w;
    v.data = s->data[k].data();
    if (!sproto.empty()) v.scale_bf16 = s->scales[k].data();
    s->views.push_back(v);
  }
  return s;
}

double fma_peak_macs() {
  static const double peak = [] {
    const double p = measure_fma_peak_macs(nullptr);
    if (p > 0) std::printf("f32 FMA peak (one thread): %.1f GMAC/s\n", p / 1e9);
    return p;
  }();
  return peak;
}

void run_linear(benchmark::State& state, WeightEncoding enc, int64_t rows, int64_t cols, int64_t n, bool cold,
                bool bf16_acts = false) {
  auto set = make_set(enc, rows, cols, cold);
  if (cold) membw_now();
  std::vector<float> x(size_t(n * cols)), y(size_t(n * rows));
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  size_t k = 0;
  for (auto _ : state) {
    if (bf16_acts) linear_bf16_acts(kernel_table(), set->views[k], x.data(), n, y.data(), g_pool.get());
    else linear(set->views[k], x.data(), n, y.data(), g_pool.get());
    benchmark::DoNotOptimize(y.data());
    if (++k == set->views.size()) k = 0;
  }
  double bytes = double(set->views[0].storage_bytes()) * double(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(rows) * double(cols) * double(n) * double(state.iterations()) / 1e9,
                         benchmark::Counter::kIsRate);
  state.counters["bw_frac"] = benchmark::Counter(bytes / g_membw, benchmark::Counter::kIsRate);
  state.counters["membw_GB/s"] = g_membw / 1e9;
  // Prefill (hot): the fraction of the f32 FMA peak of the pool's threads (one thread's, measured
  // once, times their count).
  if (!cold && fma_peak_macs() > 0)
    state.counters["fma_frac"] = benchmark::Counter(
        double(rows) * double(cols) * double(n) * double(state.iterations()) /
            (fma_peak_macs() * double(g_pool ? g_pool->size() : 1)),
        benchmark::Counter::kIsRate);
  // bf16 activations on AVX512_BF16: VDPBF16PS does twice an FMA's multiply-adds per instruction,
  // so its peak is 2x the f32 FMA peak (dot_frac: the fraction of that).
  if (!cold && bf16_acts && kernel_table().linear_bf16_dot && fma_peak_macs() > 0)
    state.counters["dot_frac"] =
        benchmark::Counter(double(rows) * double(cols) * double(n) * double(state.iterations()) /
                               (2 * fma_peak_macs() * double(g_pool ? g_pool->size() : 1)),
                           benchmark::Counter::kIsRate);
  state.SetLabel(std::string(kernel_table().name) + (cold ? " cold" : " hot") +
                 (bf16_acts ? " bf16 acts" : ""));
}

// Routed experts of one MoE layer of `synth --preset mini` (64 experts of [1024, 2048] int4,
// top-8) over T tokens: "layers" copies of the layer spanning the cold working set, each call
// uses the next layer with a fresh random routing. GB/s counts the chosen experts' bytes.
// per_expert_linear: the same work as three linear() calls per chosen expert (a parallel
// region each), for comparison with moe_experts' three regions per layer.
void run_moe(benchmark::State& state, int64_t T, bool cold, bool per_expert_linear = false) {
  const int64_t E = 64, H = 2048, I = 1024, k = 8;
  auto gate = make_set(WeightEncoding::kInt4Group, I, H, false);
  auto down = make_set(WeightEncoding::kInt4Group, H, I, false);
  const uint64_t per_expert = 3 * gate->views[0].storage_bytes();
  const size_t n_layers = cold ? std::max<size_t>(2, g_cold_bytes / (per_expert * E)) : 1;
  // Each expert: its own copy of gate, up (same bytes as gate) and down.
  std::vector<std::vector<uint8_t>> mem;
  std::vector<std::vector<uint16_t>> smem;
  std::vector<std::vector<ExpertMlp>> layers(n_layers);
  mem.reserve(n_layers * E * 3);
  smem.reserve(n_layers * E * 3);
  for (size_t l = 0; l < n_layers; ++l)
    for (int64_t e = 0; e < E; ++e) {
      ExpertMlp m{gate->views[0], gate->views[0], down->views[0]};
      for (WeightView* w : {&m.gate, &m.up, &m.down}) {
        const WeightSet& src = w == &m.down ? *down : *gate;
        mem.push_back(src.data[0]);
        smem.push_back(src.scales[0]);
        w->data = mem.back().data();
        w->scale_bf16 = smem.back().data();
      }
      layers[l].push_back(m);
    }
  if (cold) membw_now();
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<float> x(size_t(T * H)), out(size_t(T * H));
  for (auto& v : x) v = nd(rng);
  std::vector<int32_t> chosen(size_t(T * k));
  std::vector<float> w(size_t(T * k), 0.125f);
  MoeScratch scratch;
  std::vector<float> lin_g(static_cast<size_t>(2 * I + H));
  size_t l = 0;
  uint64_t bytes = 0;
  std::vector<uint8_t> used(static_cast<size_t>(E));
  for (auto _ : state) {
    state.PauseTiming();
    std::fill(used.begin(), used.end(), 0);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t s = 0; s < k; ++s) {
        int32_t e;
        do e = int32_t(rng() % E);
        while ([&] {
          for (int64_t j = 0; j < s; ++j)
            if (chosen[size_t(t * k + j)] == e) return true;
          return false;
        }());
        chosen[size_t(t * k + s)] = e;
        used[size_t(e)] = 1;
      }
    for (uint8_t u : used) bytes += u ? per_expert : 0;
    state.ResumeTiming();
    if (!per_expert_linear) {
      moe_experts(layers[l], x.data(), T, k, chosen.data(), w.data(), 1.0f, out.data(), nullptr, scratch,
                  g_pool.get());
    } else {
      std::vector<float>& g = lin_g;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t s = 0; s < k; ++s) {
          const ExpertMlp& m = layers[l][size_t(chosen[size_t(t * k + s)])];
          linear(m.gate, x.data() + t * H, 1, g.data(), g_pool.get());
          linear(m.up, x.data() + t * H, 1, g.data() + I, g_pool.get());
          silu_mul(g.data(), g.data() + I, I, g.data());
          linear(m.down, g.data(), 1, g.data() + 2 * I, g_pool.get());
          axpy(w[size_t(t * k + s)], g.data() + 2 * I, out.data() + t * H, H);
        }
    }
    benchmark::DoNotOptimize(out.data());
    if (++l == n_layers) l = 0;
  }
  state.counters["GB/s"] = benchmark::Counter(double(bytes) / 1e9, benchmark::Counter::kIsRate);
  state.counters["bw_frac"] = benchmark::Counter(double(bytes) / g_membw, benchmark::Counter::kIsRate);
  state.counters["membw_GB/s"] = g_membw / 1e9;
  state.counters["GFLOP/s"] =
      benchmark::Counter(6.0 * double(H) * double(I) * double(T * k) * double(state.iterations()) / 1e9,
                         benchmark::Counter::kIsRate);
  state.SetLabel(std::string(kernel_table().name) + (cold ? " cold" : " hot") + " layers=" +
                 std::to_string(n_layers) + (per_expert_linear ? " linear() per expert" : " moe_experts"));
}

// Best-of-N interleaved rounds: on a machine shared with other busy processes every figure is
// low by a varying factor; alternating one bandwidth pass and one pass of each kernel over its
// cold working set, and keeping each one's best round, compares both at their least-disturbed.
void best_of_rounds(int rounds) {
  auto i4a = make_set(WeightEncoding::kInt4Group, 1024, 2048, true);
  auto i4b = make_set(WeightEncoding::kInt4Group, 2048, 1024, true);
  auto head = make_set(WeightEncoding::kBF16, 32000, 2048, true);
  // Kimi-K2.5's routed expert shapes (gate/up [2048, 7168], down [7168, 2048]: 7.3 MB each).
  auto k2a = make_set(WeightEncoding::kInt4Group, 2048, 7168, true);
  auto k2b = make_set(WeightEncoding::kInt4Group, 7168, 2048, true);
  // mini's routed experts: each "layer" of 64 experts is gate/up from i4a and down from i4b copies.
  const int64_t E = 64, H = 2048, I = 1024, k = 8;
  std::vector<float> x(static_cast<size_t>(32000 * 2)), y(static_cast<size_t>(32000 * 2)),
      out(static_cast<size_t>(H));
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  MoeScratch scratch;
  double best_bw = 0, best[6] = {0, 0, 0, 0, 0, 0};
  auto now = [] { return std::chrono::steady_clock::now(); };
  auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  for (int r = 0; r < rounds; ++r) {
    best_bw = std::max(best_bw, measure_read_bandwidth(g_pool.get(), g_cold_bytes, 1).read_bytes_per_s());
    const WeightSet* sets[5] = {i4a.get(), i4b.get(), head.get(), k2a.get(), k2b.get()};
    for (int j = 0; j < 5; ++j) {
      const int slot = j < 3 ? j : j + 1;
      auto t0 = now();
      uint64_t bytes = 0;
      for (const WeightView& w : sets[j]->views) {
        linear(w, x.data(), 1, y.data(), g_pool.get());
        bytes += w.storage_bytes();
      }
      best[slot] = std::max(best[slot], double(bytes) / secs(t0, now()));
    }
    // Decode through moe_experts: 8 distinct experts per call, experts assembled from the copies.
    const size_t n_exp = std::min(i4a->views.size() / 2, i4b->views.size());
    auto t0 = now();
    uint64_t bytes = 0;
    std::vector<ExpertMlp> layer(static_cast<size_t>(E));
    std::vector<int32_t> chosen(static_cast<size_t>(k));
    std::vector<float> wts(static_cast<size_t>(k), 0.125f);
    for (size_t base = 0; base + size_t(E) <= n_exp; base += size_t(E)) {
      for (int64_t e = 0; e < E; ++e)
        layer[size_t(e)] = {i4a->views[2 * (base + size_t(e))], i4a->views[2 * (base + size_t(e)) + 1],
                            i4b->views[base + size_t(e)]};
      for (int64_t call = 0; call < E / k; ++call) {
        for (int64_t s = 0; s < k; ++s) chosen[size_t(s)] = int32_t(call * k + s);
        moe_experts(layer, x.data(), 1, k, chosen.data(), wts.data(), 1.0f, out.data(), nullptr, scratch,
                    g_pool.get());
        for (int64_t s = 0; s < k; ++s) {
          const ExpertMlp& m = layer[size_t(chosen[size_t(s)])];
          bytes += m.gate.storage_bytes() + m.up.storage_bytes() + m.down.storage_bytes();
        }
      }
    }
    if (bytes) best[3] = std::max(best[3], double(bytes) / secs(t0, now()));
  }
  std::printf("best of %d interleaved rounds, %d threads: memory read %.2f GB/s\n", rounds, g_pool->size(),
              best_bw / 1e9);
  const char* names[6] = {"int4 GEMV 1024x2048 n=1",
                          "int4 GEMV 2048x1024 n=1",
                          "bf16 GEMV 32000x2048 n=1",
                          "moe_experts mini decode (8 of 64 experts, T=1)",
                          "int4 GEMV 2048x7168 n=1 (Kimi expert gate/up)",
                          "int4 GEMV 7168x2048 n=1 (Kimi expert down)"};
  for (int j = 0; j < 6; ++j)
    std::printf("  %-48s %6.2f GB/s  = %.2f of memory bandwidth\n", names[j], best[j] / 1e9,
                best[j] / best_bw);
  (void)I;
}

void add(const std::string& name, WeightEncoding enc, int64_t rows, int64_t cols, int64_t n, bool cold,
         bool bf16_acts = false) {
  benchmark::RegisterBenchmark(
      name.c_str(), [=](benchmark::State& s) { run_linear(s, enc, rows, cols, n, cold, bf16_acts); })
      ->UseRealTime()
      ->MinTime(0.5);
}

}  // namespace

void run_gemm_f32(benchmark::State& st, const KernelTable& kt, int64_t m, int64_t n, int64_t k, bool nt) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<float> a(size_t(m * k)), b(size_t(k * n)), c(size_t(m * n));
  for (float& v : a) v = nd(rng);
  for (float& v : b) v = nd(rng);
  for (auto _ : st) {
    if (nt) kt.gemm_nt(a.data(), k, b.data(), k, c.data(), n, m, n, k);
    else kt.gemm_nn(a.data(), k, b.data(), n, c.data(), n, m, n, k);
    benchmark::DoNotOptimize(c.data());
  }
  const double macs = double(m * n * k) * double(st.iterations());
  st.counters["GMAC/s"] = benchmark::Counter(macs / 1e9, benchmark::Counter::kIsRate);
  if (fma_peak_macs() > 0)
    st.counters["fma_frac"] = benchmark::Counter(macs / fma_peak_macs(), benchmark::Counter::kIsRate);
}

// Decode attention at long context, as Attention::decode_by_positions runs it: one token's 16
// heads (mini; [q_abs | q_pe] rows of 576) against `layers` caches of ctx positions (distinct
// memory, so every call streams its cache as a real step does), by chunks of 256 positions
// handed out dynamically: scores (gemm_nt), softmax, then values (gemm_nn over the chunk's
// latents, which the scores pass left in L2). Counters: GMAC/s of both products, fma_frac of the
// pool's FMA peak, and the cache bytes read per second against the bandwidth (bw_frac).
void run_decode_attention(benchmark::State& st, const KernelTable& kt, int64_t ctx) {
  const int64_t nh = 16, kvl = 512, row = 576, chunk = 256;
  const int64_t per_layer = ctx * row;
  const int64_t layers = std::max<int64_t>(2, int64_t(g_cold_bytes / 4) / per_layer);
  std::vector<float> cache(size_t(layers * per_layer)), q(size_t(nh * row));
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (float& v : cache) v = nd(rng) * 0.1f;
  for (float& v : q) v = nd(rng) * 0.1f;
  const int64_t n_chunks = (ctx + chunk - 1) / chunk;
  const int nt = g_pool->size();
  std::vector<std::vector<float>> sc(size_t(nt), std::vector<float>(size_t(nh * chunk)));
  std::vector<float> part(size_t(n_chunks * nh * kvl));
  membw_now();
  int64_t l = 0;
  for (auto _ : st) {
    const float* c = cache.data() + l * per_layer;
    g_pool->parallel_for_dynamic(n_chunks, 1, [&](int64_t b, int64_t e, int tid) {
      for (int64_t ch = b; ch < e; ++ch) {
        const int64_t u0 = ch * chunk, len = std::min(chunk, ctx - u0);
        float* s = sc[size_t(tid)].data();
        kt.gemm_nt(q.data(), row, c + u0 * row, row, s, len, nh, len, row);
        for (int64_t h = 0; h < nh; ++h) kt.softmax(s + h * len, len);
        kt.gemm_nn(s, len, c + u0 * row, row, part.data() + ch * nh * kvl, kvl, nh, kvl, len);
      }
    });
    benchmark::DoNotOptimize(part.data());
    if (++l == layers) l = 0;
  }
  const double it = double(st.iterations());
  const double macs = double(nh) * double(ctx) * double(row + kvl) * it;
  st.counters["GMAC/s"] = benchmark::Counter(macs / 1e9, benchmark::Counter::kIsRate);
  if (fma_peak_macs() > 0)
    st.counters["fma_frac"] = benchmark::Counter(macs / (fma_peak_macs() * nt), benchmark::Counter::kIsRate);
  const double bytes = double(per_layer) * 4 * it;
  st.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsRate);
  st.counters["bw_frac"] = benchmark::Counter(bytes / g_membw, benchmark::Counter::kIsRate);
  st.SetLabel(std::string(kt.name) + " layers=" + std::to_string(layers));
}

int main(int argc, char** argv) {
  if (const char* t = std::getenv("SICKLE_BENCH_THREADS")) g_threads = std::atoi(t);
  if (const char* m = std::getenv("SICKLE_BENCH_MIB")) g_cold_bytes = size_t(std::atoll(m)) << 20;
  g_pool = std::make_unique<ThreadPool>(g_threads);
  MemBandwidth bw = measure_read_bandwidth(g_pool.get(), g_cold_bytes, 5);
  g_membw = bw.read_bytes_per_s();
  std::printf("memory read bandwidth: %.2f GB/s (%d threads, %zu MiB); kernels: %s\n", g_membw / 1e9,
              bw.n_threads, bw.buffer_bytes >> 20, kernel_table().name);
  if (const char* r = std::getenv("SICKLE_BENCH_BESTOF")) {
    best_of_rounds(std::atoi(r));
    return 0;
  }
  using E = WeightEncoding;
  // Decode: one token (and a small batch), mini-sized experts and an lm_head-sized bf16 matrix.
  for (bool cold : {true, false}) {
    std::string c = cold ? "/cold" : "/hot";
    add("int4_gemv/1024x2048/n1" + c, E::kInt4Group, 1024, 2048, 1, cold);
    add("int4_gemv/2048x1024/n1" + c, E::kInt4Group, 2048, 1024, 1, cold);
    add("int4_gemv/1024x2048/n4" + c, E::kInt4Group, 1024, 2048, 4, cold);
    add("int4_gemv/1024x2048/n8" + c, E::kInt4Group, 1024, 2048, 8, cold);
    add("int4_gemv/1024x2048/n12" + c, E::kInt4Group, 1024, 2048, 12, cold);
    add("int4_gemv/1024x2048/n16" + c, E::kInt4Group, 1024, 2048, 16, cold);
    add("bf16_gemv/2048x2048/n8" + c, E::kBF16, 2048, 2048, 8, cold);
    add("bf16_gemv/32000x2048/n1" + c, E::kBF16, 32000, 2048, 1, cold);
  }
  for (int64_t T : {1, 4, 8})
    benchmark::RegisterBenchmark(("moe_mini/T" + std::to_string(T) + "/cold").c_str(),
                                 [=](benchmark::State& st) { run_moe(st, T, true); })
        ->UseRealTime()
        ->MinTime(1.0);
  benchmark::RegisterBenchmark("moe_mini_per_expert_linear/T1/cold",
                               [=](benchmark::State& st) { run_moe(st, 1, true, true); })
      ->UseRealTime()
      ->MinTime(1.0);
  benchmark::RegisterBenchmark("moe_mini/T128", [=](benchmark::State& st) { run_moe(st, 128, false); })
      ->UseRealTime()
      ->MinTime(1.0);
  // Prefill: many tokens per weight read (compute bound).
  for (int64_t n : {16, 128, 512}) {
    add("int4_gemm/1024x2048/n" + std::to_string(n), E::kInt4Group, 1024, 2048, n, false);
    add("bf16_gemm/2048x2048/n" + std::to_string(n), E::kBF16, 2048, 2048, n, false);
  }
  // Kimi-K2.5 widths in prefill: an expert's gate/up at the ~57 tokens each of 72 experts gets
  // from a 512-token prompt (top-8), and a 7168-wide bf16 weight over 512 tokens.
  add("int4_gemm/2048x7168/n64", E::kInt4Group, 2048, 7168, 64, false);
  // ... and with the expert's weights streaming from memory, as in a real prefill (each expert is
  // read once per layer).
  add("int4_gemm/2048x7168/n64/cold", E::kInt4Group, 2048, 7168, 64, true);
  // ... and at the ~14 tokens each of a 128-token prompt's (the outer tiles start at 16).
  for (int64_t n : {12, 14, 16, 20})
    add("int4_gemm/2048x7168/n" + std::to_string(n) + "/cold", E::kInt4Group, 2048, 7168, n, true);
  add("bf16_gemm/2048x7168/n512", E::kBF16, 2048, 7168, 512, false);
  // The same products with activations rounded to bf16 (linear_bf16_acts, --bf16-acts).
  for (int64_t n : {16, 64, 256})
    add("bf16acts_gemm/2048x2048/n" + std::to_string(n), E::kBF16, 2048, 2048, n, false, true);
  add("bf16acts_gemm/2048x7168/n512", E::kBF16, 2048, 7168, 512, false, true);
  add("bf16acts_gemv/32000x2048/n1/cold", E::kBF16, 32000, 2048, 1, true, true);
  // Attention's f32 products (one thread; the prefill block of 8 heads x 32 queries = 256 rows,
  // decode of 16 heads over 300 positions), on every table this CPU runs: GMAC/s and the
  // fraction of the FMA peak (16 f32 multiply-adds per vector FMA at the measured rate).
  for (const KernelTable* kt : runnable_kernel_tables()) {
    if (std::string(kt->name) == "scalar") continue;
    struct Shape {
      const char* name;
      int64_t m, n, k;
      bool nt;
    };
    for (Shape sh : {Shape{"prefill_scores_nt/256x512x576", 256, 512, 576, true},
                     Shape{"prefill_values_nn/256x512x512", 256, 512, 512, false},
                     Shape{"prefill_qabs_nn/32x512x128", 32, 512, 128, false},
                     Shape{"decode_scores_nt/16x300x576", 16, 300, 576, true},
                     Shape{"decode_values_nn/16x512x300", 16, 512, 300, false}})
      benchmark::RegisterBenchmark(
          (std::string("gemm_f32/") + sh.name + "/" + kt->name).c_str(),
          [=](benchmark::State& st) { run_gemm_f32(st, *kt, sh.m, sh.n, sh.k, sh.nt); })
          ->UseRealTime()
          ->MinTime(0.5);
  }
  // Decode attention over an 8k context (cold: the cache streams from memory), every table.
  for (const KernelTable* kt : runnable_kernel_tables()) {
    if (std::string(kt->name) == "scalar") continue;
    benchmark::RegisterBenchmark((std::string("decode_attention/ctx8192/cold/") + kt->name).c_str(),
                                 [=](benchmark::State& st) { run_decode_attention(st, *kt, 8192); })
        ->UseRealTime()
        ->MinTime(1.0);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
