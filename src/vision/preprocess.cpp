#include "vision/preprocess.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

namespace sickle::vision {

ResizePlan navit_resize(int64_t width, int64_t height, const MediaConfig& m) {
  if (width <= 0 || height <= 0) fail("image: size {}x{} is empty", width, height);
  const int64_t p = m.patch, side = m.patch_limit_on_one_side;
  const double s1 = std::sqrt(double(m.in_patch_limit) /
                              (std::max(1.0, double(width / p)) * std::max(1.0, double(height / p))));
  const double s2 = double(side * p) / double(width), s3 = double(side * p) / double(height);
  const double scale = std::min({1.0, s1, s2, s3});
  ResizePlan r;
  // Python's int() truncates toward zero; the values are positive.
  r.new_width = std::min(std::max<int64_t>(1, int64_t(double(width) * scale)), side * p);
  r.new_height = std::min(std::max<int64_t>(1, int64_t(double(height) * scale)), side * p);
  const int64_t f = m.merge * p;
  r.pad_width = (f - r.new_width % f) % f;
  r.pad_height = (f - r.new_height % f) % f;
  r.grid_w = (r.new_width + r.pad_width) / p;
  r.grid_h = (r.new_height + r.pad_height) / p;
  r.tokens = (r.grid_h / m.merge) * (r.grid_w / m.merge);
  return r;
}

namespace {

constexpr int kPrecision = 22;  // Pillow's PRECISION_BITS for 8-bit images (32 - 8 - 2)

double bicubic_pil(double x) {  // Pillow's bicubic_filter, a = -0.5
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

struct Taps {
  std::vector<int64_t> first, count;
  std::vector<int32_t> k;  // [out, ksize]
  int64_t ksize = 0;
};

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for the box [0, in_size).
Taps taps(int64_t in_size, int64_t out_size) {
  Taps t;
  const double scale = double(in_size) / double(out_size);
  const double fscale = std::max(scale, 1.0);
  const double support = 2.0 * fscale;
  t.ksize = int64_t(std::ceil(support)) * 2 + 1;
  t.first.resize(size_t(out_size));
  t.count.resize(size_t(out_size));
  t.k.assign(size_t(out_size * t.ksize), 0);
  std::vector<double> w(size_t(t.ksize));
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = (double(xx) + 0.5) * scale;
    int64_t xmin = int64_t(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int64_t xmax = int64_t(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0;
    for (int64_t x = 0; x < xmax; ++x) {
      w[size_t(x)] = bicubic_pil((double(x + xmin) - center + 0.5) / fscale);
      ww += w[size_t(x)];
    }
    for (int64_t x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? w[size_t(x)] / ww : w[size_t(x)];
      t.k[size_t(xx * t.ksize + x)] =
          int32_t(v < 0 ? -0.5 + v * (1 << kPrecision) : 0.5 + v * (1 << kPrecision));
    }
    t.first[size_t(xx)] = xmin;
    t.count[size_t(xx)] = xmax;
  }
  return t;
}

inline uint8_t clip8(int64_t ss) {
  const int64_t v = ss >> kPrecision;  // arithmetic shift: floor
  return uint8_t(std::clamp<int64_t>(v, 0, 255));
}

}  // namespace

Image resize_bicubic_pil(const Image& in, int64_t nw, int64_t nh) {
  if (nw <= 0 || nh <= 0) fail("image: resize to {}x{}", nw, nh);
  Image cur = in;
  if (nw != in.width) {
    const Taps t = taps(in.width, nw);
    Image out{nw, cur.height, std::vector<uint8_t>(size_t(nw * cur.height * 3))};
    for (int64_t y = 0; y < cur.height; ++y)
      for (int64_t xx = 0; xx < nw; ++xx)
        for (int c = 0; c < 3; ++c) {
          int64_t ss = int64_t(1) << (kPrecision - 1);
          const int32_t* k = &t.k[size_t(xx * t.ksize)];
          for (int64_t x = 0; x < t.count[size_t(xx)]; ++x)
            ss += int64_t(cur.rgb[size_t((y * cur.width + t.first[size_t(xx)] + x) * 3 + c)]) * k[x];
          out.rgb[size_t((y * nw + xx) * 3 + c)] = clip8(ss);
        }
    cur = std::move(out);
  }
  if (nh != in.height) {
    const Taps t = taps(in.height, nh);
    Image out{cur.width, nh, std::vector<uint8_t>(size_t(cur.width * nh * 3))};
    for (int64_t yy = 0; yy < nh; ++yy) {
      const int32_t* k = &t.k[size_t(yy * t.ksize)];
      for (int64_t x = 0; x < cur.width; ++x)
        for (int c = 0; c < 3; ++c) {
          int64_t ss = int64_t(1) << (kPrecision - 1);
          for (int64_t y = 0; y < t.count[size_t(yy)]; ++y)
            ss += int64_t(cur.rgb[size_t(((t.first[size_t(yy)] + y) * cur.width + x) * 3 + c)]) * k[y];
          out.rgb[size_t((yy * cur.width + x) * 3 + c)] = clip8(ss);
        }
    }
    cur = std::move(out);
  }
  return cur;
}

Patches preprocess(const Image& img, const MediaConfig& m) {
  if (img.rgb.size() != size_t(img.width * img.height * 3))
    fail("image: {} bytes for {}x{} RGB", img.rgb.size(), img.width, img.height);
  const ResizePlan r = navit_resize(img.width, img.height, m);
  const Image resized = (r.new_width != img.width || r.new_height != img.height)
                            ? resize_bicubic_pil(img, r.new_width, r.new_height)
                            : img;
  const int64_t p = m.patch;
  Patches out;
  out.grid_h = r.grid_h;
  out.grid_w = r.grid_w;
  out.tokens = r.tokens;
  out.values.assign(size_t(r.grid_h * r.grid_w * 3 * p * p), 0.0f);
  float lut[3][256];
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) lut[c][v] = float((double(v) / 255.0 - m.mean[c]) / m.std[c]);
  for (int64_t gy = 0; gy < r.grid_h; ++gy)
    for (int64_t gx = 0; gx < r.grid_w; ++gx) {
      float* dst = &out.values[size_t((gy * r.grid_w + gx) * 3 * p * p)];
      for (int c = 0; c < 3; ++c)
        for (int64_t py = 0; py < p; ++py)
          for (int64_t px = 0; px < p; ++px) {
            const int64_t y = gy * p + py, x = gx * p + px;
            const uint8_t v = (y < resized.height && x < resized.width)
                                  ? resized.rgb[size_t((y * resized.width + x) * 3 + c)]
                                  : uint8_t(0);  // padding
            dst[(c * p + py) * p + px] = lut[c][v];
          }
    }
  return out;
}

}  // namespace sickle::vision
