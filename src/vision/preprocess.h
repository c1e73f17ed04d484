// sickle/vision/preprocess.h — decoded RGB pixels to MoonViT patches, as Kimi-K2.5's media
// processor does it (vLLM kimi_k25_vision_fused.py, a port of the HF KimiK25VisionProcessor):
//   1. navit_resize: scale = min(1, sqrt(in_patch_limit / (max(1, W // p) * max(1, H // p))),
//      side * p / W, side * p / H), new size = max(1, int(size * scale)) capped at side * p;
//   2. Pillow's bicubic resize to that size (only when it differs from the image's);
//   3. zero padding right and bottom to a multiple of merge * p (the padding is black: 0 before
//      normalization);
//   4. x / 255, (x - mean) / std per channel (preprocessor_config.json);
//   5. patches [gh * gw, 3, p, p], row-major over the grid; grid_thw = (1, gh, gw);
// tokens per image: (gh / merge) * (gw / merge).
#pragma once

#include <cstdint>
#include <vector>

#include "vision/config.h"

namespace sickle::vision {

struct Image {  // 8-bit RGB, row-major, 3 bytes per pixel
  int64_t width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

struct ResizePlan {
  int64_t new_width = 0, new_height = 0, pad_width = 0, pad_height = 0;
  int64_t grid_h = 0, grid_w = 0;  // patches
  int64_t tokens = 0;              // placeholder tokens (after the merge)
};

ResizePlan navit_resize(int64_t width, int64_t height, const MediaConfig& m);

// Pillow's Image.resize(..., BICUBIC) of an 8-bit RGB image (libImaging/Resample.c: a = -0.5,
// support 2 x max(1, in/out), 22-bit fixed-point weights, horizontal pass first), bit for bit.
Image resize_bicubic_pil(const Image& in, int64_t new_width, int64_t new_height);

struct Patches {
  int64_t grid_t = 1, grid_h = 0, grid_w = 0;
  int64_t tokens = 0;
  std::vector<float> values;  // [grid_h * grid_w, 3 * p * p]
};

Patches preprocess(const Image& img, const MediaConfig& m);

}  // namespace sickle::vision
