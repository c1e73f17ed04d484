// bench/vision_bench — Kimi-K2.5's vision encoder (MoonViT tower + projector): time per image at a
// few resolutions, and its FLOP rate as a fraction of the machine's matmul peak measured in the
// same run (the same kernel table and threads on a hot bf16 linear of 2048 x 2048 x 256 tokens).
//
//   build/bench/vision_bench [-m MODEL_DIR] [-t THREADS] [WxH ...]
//   default: a `sickle synth --preset tiny-kimi` model in a temp dir (a 32-wide toy tower: the
//   fractions are tiny there; give a real Kimi-K2.5 directory for meaningful ones), sizes
//   224x224 448x448 896x672.
// FLOPs counted: patch embed, wqkv / wo / MLP linears, attention (QK^T and PV: 4 n^2 C per block),
// merge projector; norms, rotary, softmax and GELU not counted.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "base/numeric.h"
#include "base/test_temp_dir.h"
#include "io/checkpoint.h"
#include "kernels/dispatch.h"
#include "kernels/linear.h"
#include "model/synth.h"
#include "runtime/thread_pool.h"
#include "vision/tower.h"

using namespace sickle;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Best-of-5 FLOP/s of one bf16 linear through the CPU's kernel table (weights hot in cache).
double matmul_peak(ThreadPool* pool) {
  const int64_t R = 2048, Cc = 2048, n = 256;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0, 0.02f);
  std::vector<uint16_t> w(size_t(R * Cc));
  for (auto& v : w) v = f32_to_bf16(nd(rng));
  std::vector<float> x(size_t(n * Cc)), y(size_t(n * R));
  for (auto& v : x) v = nd(rng);
  WeightView wv;
  wv.name = "peak";
  wv.encoding = WeightEncoding::kBF16;
  wv.rows = R;
  wv.cols = Cc;
  wv.data = w.data();
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    linear(wv, x.data(), n, y.data(), pool);
    best = std::max(best, 2.0 * double(R * Cc * n) / seconds_since(t0));
  }
  return best;
}

double encoder_flops(const vision::VisionConfig& c, int64_t gh, int64_t gw) {
  const double n = double(gh * gw), C = double(c.hidden), I = double(c.intermediate),
               M = double(c.merge_h * c.merge_w);
  double f = 2 * n * 3 * double(c.patch * c.patch) * C;
  f += double(c.layers) * (2 * n * C * 3 * C + 4 * n * n * C + 2 * n * C * C + 4 * n * C * I);
  f += 2 * (n / M) * (M * C) * (M * C) + 2 * (n / M) * (M * C) * double(c.text_hidden);
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model;
  int threads = 2;
  std::vector<std::pair<int64_t, int64_t>> sizes;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-m" && i + 1 < argc) model = argv[++i];
    else if (a == "-t" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (auto x = a.find('x'); x != std::string::npos)
      sizes.emplace_back(std::stoll(a.substr(0, x)), std::stoll(a.substr(x + 1)));
    else {
      std::fprintf(stderr, "usage: vision_bench [-m MODEL_DIR] [-t THREADS] [WxH ...]\n");
      return 2;
    }
  }
  if (sizes.empty()) sizes = {{224, 224}, {448, 448}, {896, 672}};
  test_util::TempDir tmp("sickle-vision-bench");
  if (model.empty()) {
    SynthOptions o;
    o.preset = "tiny-kimi";
    o.seed = 1;
    o.progress = false;
    synth_write(synth_plan(o), tmp.path / "m", o);
    model = (tmp.path / "m").string();
  }
  ThreadPool pool(threads);
  auto ck = Checkpoint::open(model);
  vision::VisionTower tower(*ck);
  const double peak = matmul_peak(&pool);
  std::printf("kernels %s, %d threads: bf16 matmul peak %.1f GFLOP/s (2048x2048 x 256 tokens, best of 5)\n",
              kernel_table().name, pool.size(), peak / 1e9);
  std::printf("%-10s %7s %7s %10s %10s %9s\n", "image", "patches", "tokens", "ms/image", "GFLOP/s",
              "of peak");
  for (auto [w, h] : sizes) {
    vision::Image im{w, h, std::vector<uint8_t>(size_t(w * h * 3))};
    for (size_t i = 0; i < im.rgb.size(); ++i) im.rgb[i] = uint8_t((i * 2654435761u) >> 24);
    vision::Patches p = vision::preprocess(im, tower.media());
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      auto e = tower.encode(p, &pool);
      best = std::min(best, seconds_since(t0));
    }
    const double rate = encoder_flops(tower.config(), p.grid_h, p.grid_w) / best;
    std::printf("%-10s %7lld %7lld %10.2f %10.2f %8.1f%%\n", fmt::format("{}x{}", w, h).c_str(),
                (long long)(p.grid_h * p.grid_w), (long long)p.tokens, best * 1e3, rate / 1e9,
                100 * rate / peak);
  }
  return 0;
}
