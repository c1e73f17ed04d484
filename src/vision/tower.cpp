#include "vision/tower.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "io/checkpoint.h"
#include "kernels/dispatch.h"
#include "kernels/linear.h"
#include "kernels/ops.h"
#include "runtime/thread_pool.h"

namespace sickle::vision {

namespace {

// torch's cubic_convolution1 / cubic_convolution2 with A = -0.75 (UpSample.h).
void cubic_coeffs(double t, double c[4]) {
  constexpr double A = -0.75;
  auto cc1 = [](double x) { return ((A + 2) * x - (A + 3)) * x * x + 1; };
  auto cc2 = [](double x) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; };
  c[0] = cc2(t + 1.0);
  c[1] = cc1(t);
  c[2] = cc1(1.0 - t);
  c[3] = cc2(2.0 - t);
}

struct Axis {  // for each output index: the first source index (before clamping) and weights
  std::vector<int64_t> i0;
  std::vector<double> w;  // [out, 4]
};

Axis cubic_axis(int64_t in, int64_t out) {
  Axis a;
  a.i0.resize(size_t(out));
  a.w.resize(size_t(out * 4));
  const double scale = double(in) / double(out);
  for (int64_t o = 0; o < out; ++o) {
    const double real = scale * (double(o) + 0.5) - 0.5;  // align_corners=False, not clamped (cubic)
    const double fl = std::floor(real);
    a.i0[size_t(o)] = int64_t(fl) - 1;
    cubic_coeffs(real - fl, &a.w[size_t(o * 4)]);
  }
  return a;
}

// LayerNorm over the last dimension n of each of `rows` rows (f32, two-pass variance as torch).
void layer_norm_rows(const float* x, int64_t rows, int64_t n, const std::vector<float>& w,
                     const std::vector<float>& b, float eps, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* o = out + r * n;
    double mean = 0;
    for (int64_t i = 0; i < n; ++i) mean += xr[i];
    mean /= double(n);
    double var = 0;
    for (int64_t i = 0; i < n; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= double(n);
    const double inv = 1.0 / std::sqrt(var + double(eps));
    for (int64_t i = 0; i < n; ++i) o[i] = float((xr[i] - mean) * inv) * w[size_t(i)] + b[size_t(i)];
  }
}

float gelu_tanh(float x) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
  return 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
}
float gelu_erf(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f)); }

}  // namespace

void interpolate_bicubic_torch(const float* in, int64_t ih, int64_t iw, int64_t C, int64_t oh, int64_t ow,
                               float* out) {
  const Axis ay = cubic_axis(ih, oh), ax = cubic_axis(iw, ow);
  auto clampi = [](int64_t v, int64_t n) { return std::clamp<int64_t>(v, 0, n - 1); };
  std::vector<double> acc(static_cast<size_t>(C));
  for (int64_t oy = 0; oy < oh; ++oy)
    for (int64_t ox = 0; ox < ow; ++ox) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int r = 0; r < 4; ++r) {
        const int64_t y = clampi(ay.i0[size_t(oy)] + r, ih);
        const double wy = ay.w[size_t(oy * 4 + r)];
        for (int s = 0; s < 4; ++s) {
          const int64_t x = clampi(ax.i0[size_t(ox)] + s, iw);
          const double w = wy * ax.w[size_t(ox * 4 + s)];
          const float* src = in + (y * iw + x) * C;
          for (int64_t c = 0; c < C; ++c) acc[size_t(c)] += w * double(src[c]);
        }
      }
      float* dst = out + (oy * ow + ox) * C;
      for (int64_t c = 0; c < C; ++c) dst[c] = float(acc[size_t(c)]);
    }
}

VisionTower::VisionTower(const Checkpoint& ck) {
  const std::string where = (ck.dir() / "config.json").string();
  cfg_ = VisionConfig::from_json(ck.config_json(), ck.config().hidden_size, where);
  media_ = MediaConfig::load(ck.dir());
  if (media_.patch != cfg_.patch)
    fail("{}: preprocessor_config.json patch_size {} differs from vision_config.patch_size {}",
         ck.dir().string(), media_.patch, cfg_.patch);
  if (cfg_.merge_h != media_.merge || cfg_.merge_w != media_.merge)
    fail(
        "{}: preprocessor_config.json merge_kernel_size {} differs from vision_config.merge_kernel_size [{}, "
        "{}]",
        ck.dir().string(), media_.merge, cfg_.merge_h, cfg_.merge_w);
  const int64_t C = cfg_.hidden, P = cfg_.patch, M = cfg_.merge_h * cfg_.merge_w;
  auto linear = [&](const std::string& base, int64_t rows, int64_t cols) {
    Linear l;
    l.w = ck.weight(base);
    if (l.w.rows != rows || l.w.cols != cols)
      fail("{}: '{}' is [{}, {}], vision_config implies [{}, {}]", ck.dir().string(), base + ".weight",
           l.w.rows, l.w.cols, rows, cols);
    l.b = read_f32_tensor(ck, base + ".bias", rows);
    return l;
  };
  auto norm = [&](const std::string& base, int64_t n) {
    return Norm{read_f32_tensor(ck, base + ".weight", n), read_f32_tensor(ck, base + ".bias", n)};
  };
  // The conv is a linear over the flattened (channel, row, column) patch.
  const std::string pw = "vision_tower.patch_embed.proj.weight";
  TensorView t = ck.tensor(pw);
  if (t.shape != std::vector<int64_t>{C, 3, P, P})
    fail("{}: '{}' is {}, vision_config implies [{}, 3, {}, {}]", ck.dir().string(), pw, t.shape_str(), C, P,
         P);
  patch_.w.name = "vision_tower.patch_embed.proj";
  patch_.w.rows = C;
  patch_.w.cols = 3 * P * P;
  patch_.w.data = t.data;
  switch (t.dtype) {
    case DType::BF16: patch_.w.encoding = WeightEncoding::kBF16; break;
    case DType::F16: patch_.w.encoding = WeightEncoding::kF16; break;
    case DType::F32: patch_.w.encoding = WeightEncoding::kF32; break;
    default:
      fail("{}: '{}' has dtype {}, expected BF16, F16 or F32", ck.dir().string(), pw, dtype_name(t.dtype));
  }
  patch_.b = read_f32_tensor(ck, "vision_tower.patch_embed.proj.bias", C);
  pos_ = read_f32_tensor(ck, "vision_tower.patch_embed.pos_emb.weight", cfg_.pos_h * cfg_.pos_w * C);
  for (int64_t i = 0; i < cfg_.layers; ++i) {
    const std::string B = fmt::format("vision_tower.encoder.blocks.{}.", i);
    Block b;
    b.norm0 = norm(B + "norm0", C);
    b.norm1 = norm(B + "norm1", C);
    b.wqkv = linear(B + "wqkv", 3 * C, C);
    b.wo = linear(B + "wo", C, C);
    b.fc0 = linear(B + "mlp.fc0", cfg_.intermediate, C);
    b.fc1 = linear(B + "mlp.fc1", C, cfg_.intermediate);
    blocks_.push_back(std::move(b));
  }
  final_norm_ = norm("vision_tower.encoder.final_layernorm", C);
  pre_norm_ = norm("mm_projector.pre_norm", C);
  proj0_ = linear("mm_projector.proj.0", M * C, M * C);
  proj2_ = linear("mm_projector.proj.2", cfg_.text_hidden, M * C);
}

std::vector<float> VisionTower::encode(const Patches& p, ThreadPool* pool, const KernelTable* table) const {
  const KernelTable& k = table ? *table : kernel_table();
  const int64_t C = cfg_.hidden, P = cfg_.patch, gh = p.grid_h, gw = p.grid_w, n = gh * gw;
  const int64_t H = cfg_.heads, d = cfg_.head_dim;
  if (p.grid_t != 1) fail("vision: video chunks (grid t = {}) are not supported, images only", p.grid_t);
  if (gh % cfg_.merge_h || gw % cfg_.merge_w)
    fail("vision: grid {}x{} is not a multiple of the merge kernel {}x{}", gh, gw, cfg_.merge_h,
         cfg_.merge_w);
  if (gh > VisionConfig::kRopeMax || gw > VisionConfig::kRopeMax)
    fail("vision: grid {}x{} exceeds MoonViT's rotary table ({} per side)", gh, gw, VisionConfig::kRopeMax);
  if (p.values.size() != size_t(n * 3 * P * P))
    fail("vision: {} patch values for a {}x{} grid", p.values.size(), gh, gw);
  auto lin = [&](const Linear& l, const float* x, int64_t rows, float* y) {
    linear_with(k, l.w, x, rows, y, pool);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < l.w.rows; ++c) y[r * l.w.rows + c] += l.b[size_t(c)];
  };

  // Patch embedding + position table (interpolated to the grid when it differs).
  std::vector<float> x(size_t(n * C));
  lin(patch_, p.values.data(), n, x.data());
  std::vector<float> pos;
  const float* posp = pos_.data();
  if (gh != cfg_.pos_h || gw != cfg_.pos_w) {
    pos.resize(size_t(n * C));
    interpolate_bicubic_torch(pos_.data(), cfg_.pos_h, cfg_.pos_w, C, gh, gw, pos.data());
    posp = pos.data();
  }
  for (int64_t i = 0; i < n * C; ++i) x[size_t(i)] += posp[i];

  // 2-D rotary tables [n, d/2]: pair 2k by column * f_k, pair 2k+1 by row * f_k.
  const int64_t half = d / 2;
  std::vector<float> cosv(size_t(n * half)), sinv(size_t(n * half));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const double f = 1.0 / std::pow(10000.0, double(4 * (i / 2)) / double(d));
      const double pos_i = (i % 2 == 0) ? double(t % gw) : double(t / gw);
      cosv[size_t(t * half + i)] = float(std::cos(pos_i * f));
      sinv[size_t(t * half + i)] = float(std::sin(pos_i * f));
    }
  auto rope = [&](float* v, int64_t t) {  // one head's d values of token t
    for (int64_t i = 0; i < half; ++i) {
      const float a = v[2 * i], b = v[2 * i + 1], c = cosv[size_t(t * half + i)],
                  s = sinv[size_t(t * half + i)];
      v[2 * i] = a * c - b * s;
      v[2 * i + 1] = a * s + b * c;
    }
  };

  std::vector<float> h(size_t(n * C)), qkv(size_t(n * 3 * C)), att(size_t(n * C)), tmp(size_t(n * C));
  std::vector<float> mid(size_t(n * cfg_.intermediate));
  const float att_scale = 1.0f / std::sqrt(float(d));
  for (const Block& b : blocks_) {
    layer_norm_rows(x.data(), n, C, b.norm0.w, b.norm0.b, cfg_.ln_eps, h.data());
    lin(b.wqkv, h.data(), n, qkv.data());
    for (int64_t t = 0; t < n; ++t)
      for (int64_t hd = 0; hd < H; ++hd) {
        rope(&qkv[size_t(t * 3 * C + hd * d)], t);      // q
        rope(&qkv[size_t(t * 3 * C + C + hd * d)], t);  // k
      }
    // Full attention within the image: per (head, block of kQBlock queries), S = q k^T scaled,
    // row softmax, o = S v, through the table's f32 GEMMs (S holds kQBlock x n floats).
    constexpr int64_t kQBlock = 64;
    const int64_t nqb = (n + kQBlock - 1) / kQBlock;
    parallel_for_dynamic(pool, H * nqb, 1, [&](int64_t begin, int64_t end, int) {
      std::vector<float> s(static_cast<size_t>(kQBlock * n));
      for (int64_t item = begin; item < end; ++item) {
        const int64_t hd = item / nqb, q0 = (item % nqb) * kQBlock, m = std::min(kQBlock, n - q0);
        const float* qp = &qkv[size_t(q0 * 3 * C + hd * d)];
        k.gemm_nt(qp, 3 * C, &qkv[size_t(C + hd * d)], 3 * C, s.data(), n, m, n, d);
        for (int64_t r = 0; r < m; ++r) {
          float* row = &s[size_t(r * n)];
          for (int64_t j = 0; j < n; ++j) row[j] *= att_scale;
          softmax(row, n);
        }
        k.gemm_nn(s.data(), n, &qkv[size_t(2 * C + hd * d)], 3 * C, &att[size_t(q0 * C + hd * d)], C, m, d,
                  n);
      }
    });
    lin(b.wo, att.data(), n, tmp.data());
    for (int64_t i = 0; i < n * C; ++i) x[size_t(i)] += tmp[size_t(i)];
    layer_norm_rows(x.data(), n, C, b.norm1.w, b.norm1.b, cfg_.ln_eps, h.data());
    lin(b.fc0, h.data(), n, mid.data());
    for (float& v : mid) v = gelu_tanh(v);
    lin(b.fc1, mid.data(), n, tmp.data());
    for (int64_t i = 0; i < n * C; ++i) x[size_t(i)] += tmp[size_t(i)];
  }
  layer_norm_rows(x.data(), n, C, final_norm_.w, final_norm_.b, cfg_.ln_eps, x.data());

  // 2x2 merge (block-major, (ky, kx) inside), pre_norm per patch, projector.
  const int64_t mh = cfg_.merge_h, mw = cfg_.merge_w, M = mh * mw, nb = (gh / mh) * (gw / mw);
  std::vector<float> merged(size_t(nb * M * C));
  for (int64_t by = 0; by < gh / mh; ++by)
    for (int64_t bx = 0; bx < gw / mw; ++bx)
      for (int64_t ky = 0; ky < mh; ++ky)
        for (int64_t kx = 0; kx < mw; ++kx) {
          const int64_t src = (by * mh + ky) * gw + bx * mw + kx;
          const int64_t dst = ((by * (gw / mw) + bx) * M + ky * mw + kx) * C;
          layer_norm_rows(&x[size_t(src * C)], 1, C, pre_norm_.w, pre_norm_.b, cfg_.projector_ln_eps,
                          &merged[size_t(dst)]);
        }
  std::vector<float> hid(size_t(nb * M * C));
  lin(proj0_, merged.data(), nb, hid.data());
  for (float& v : hid) v = gelu_erf(v);
  std::vector<float> out(size_t(nb * cfg_.text_hidden));
  lin(proj2_, hid.data(), nb, out.data());
  return out;
}

}  // namespace sickle::vision
