// sickle/vision/tower.h — Kimi-K2.5's MoonViT tower and patch-merger projector (images, t = 1),
// with the semantics of vLLM's kimi_k25_vit.py:
//   x = conv14(patches) + pos, pos = the [h0, w0, C] table as stored when the grid is h0 x w0,
//       else torch F.interpolate(mode="bicubic", align_corners=False) of it to the grid;
//   per block: x += wo(attn(rope2d(q), rope2d(k), v)) on LayerNorm0(x), full attention within
//       the image, scale head_dim^-0.5, q/k/v from the fused wqkv [3, heads, head_dim];
//       x += fc1(gelu_tanh(fc0(LayerNorm1(x))));
//   rope2d: adjacent pairs (2i, 2i+1) of each head; pair 2k turns by col * f_k, pair 2k+1 by
//       row * f_k, f_k = 10000^(-4k / head_dim);
//   final LayerNorm; 2x2 merge (block (by, bx) gathers rows (2by + ky, 2bx + kx), ky-major);
//   projector: pre_norm LayerNorm per patch, [4C] -> proj.0 -> gelu (erf) -> proj.2 -> text hidden.
// LayerNorm eps 1e-5. Weights stay in their stored encoding; every matmul goes through the
// kernel tables (kernels/linear.h); activations and attention are f32.
#pragma once

#include <cstdint>
#include <vector>

#include "io/weights.h"
#include "vision/config.h"
#include "vision/preprocess.h"

namespace sickle {
class Checkpoint;
class ThreadPool;
struct KernelTable;
}  // namespace sickle

namespace sickle::vision {

// torch.nn.functional.interpolate(x, size=(oh, ow), mode="bicubic", align_corners=False) of a
// channels-last table in [ih, iw, C] into out [oh, ow, C] (A = -0.75, edge samples clamped).
void interpolate_bicubic_torch(const float* in, int64_t ih, int64_t iw, int64_t C, int64_t oh, int64_t ow,
                               float* out);

class VisionTower {
 public:
  // Maps the weights of ck (vision_tower.* / mm_projector.*); errors name the tensor at fault.
  explicit VisionTower(const Checkpoint& ck);

  const VisionConfig& config() const { return cfg_; }
  const MediaConfig& media() const { return media_; }

  // Projected embeddings [p.tokens, text_hidden] of one image. `table` null: the CPU's best.
  std::vector<float> encode(const Patches& p, ThreadPool* pool, const KernelTable* table = nullptr) const;

 private:
  struct Linear {
    WeightView w;
    std::vector<float> b;
  };
  struct Norm {
    std::vector<float> w, b;
  };
  struct Block {
    Norm norm0, norm1;
    Linear wqkv, wo, fc0, fc1;
  };
  VisionConfig cfg_;
  MediaConfig media_;
  Linear patch_;
  std::vector<float> pos_;  // [pos_h, pos_w, C]
  std::vector<Block> blocks_;
  Norm final_norm_, pre_norm_;
  Linear proj0_, proj2_;
};

}  // namespace sickle::vision
