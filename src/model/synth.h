// sickle/model/synth.h — random but valid DeepSeek-V3-family checkpoints in the real on-disk
// layout, for tests and benchmarks (`sickle synth`).
//
// Presets (dimensions in synth.cpp's preset table; docs/formats.md §1 for the real models):
//   tiny-kimi        Kimi-K2.5 nested layout (KimiK25ForConditionalGeneration, text_config,
//                    `language_model.` prefix, a small MoonViT tower + projector in the real
//                    layout and preprocessor_config.json), int4 routed experts,
//                    n_group 1, yarn rope_scaling. hidden 64, 3 layers (first dense).
//   tiny-dsv3        DeepSeek-V3 flat layout, n_group 4 / topk_group 2, fp8 block weights,
//                    `rope_parameters` (with rope_theta inside) instead of rope_scaling.
//   mini             ~4.8 B parameters Kimi-shaped (flat layout), int4 experts, for speed work.
//   kimi-k2.5-layers Kimi-K2.5's real dimensions (hidden 7168, 384 experts of width 2048,
//                    vocab 163840, the released MoonViT tower) with few layers, for scale tests. Streams:
//                    never in RAM.
//
// Values (all from a counter-based generator, so any byte range of any tensor is computed
// independently of the others: deterministic for a seed and for any chunking):
//   linear weights  ~ N(0, 1/sqrt(fan_in)) so a unit-RMS input gives unit-RMS outputs;
//   embeddings      ~ N(0, 1); norms ~ 1 + N(0, 0.1); e_score_correction_bias ~ N(0, 0.1) (f32);
//   int4            q = clamp(round(2.5 z), -8, 7), scale = std/2.52 x U(0.75, 1.25) per group,
//                   so dequantized values have the linear's std;
//   fp8             value / scale_inv rounded to e4m3, scale_inv = std x 5/448 x U(0.75, 1.25)
//                   per 128x128 block (no saturation: |z| <= 2 sqrt 3).
// "N(0,1)" is an Irwin-Hall sum of four uniforms (unit variance, |z| <= 3.46): pure integer and
// float arithmetic, identical on every libm/libstdc++.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/dtype.h"

namespace sickle {

struct SynthOptions {
  std::string preset;  // tiny-kimi | tiny-dsv3 | mini | kimi-k2.5-layers
  uint64_t seed = 0;
  DType dtype = DType::BF16;  // non-expert float weights: BF16 or F32
  std::string quant;          // "" = the preset's default; "int4" | "fp8" | "none"
  int64_t n_layers = 0;       // 0 = the preset's default
  int64_t n_experts = 0;      // 0 = the preset's default routed-expert count
  uint64_t max_shard_bytes = 5ull << 30;
  bool force = false;
  bool progress = true;
};

// How a tensor's bytes are generated (see the header comment).
struct SynthGen {
  enum class Kind { kNormal, kNorm, kBias, kInt4Packed, kInt4Scale, kShape, kFp8, kFp8Scale };
  Kind kind = Kind::kNormal;
  float std = 1;               // of the logical (dequantized) values
  int64_t rows = 0, cols = 0;  // logical shape of a linear (quantized kinds, kShape)
  int64_t group = 0;           // int4 group size; fp8 block size (square)
  uint64_t key = 0;            // stream of the values (shared by a weight and its scale)
};

struct SynthTensor {
  std::string name;
  DType dtype = DType::BF16;
  std::vector<int64_t> shape;  // as stored
  SynthGen gen;
  uint64_t nbytes() const;
};

struct SynthPlan {
  nlohmann::json config;             // config.json, written verbatim
  nlohmann::json preprocessor;       // preprocessor_config.json (nested presets), null: none
  std::vector<SynthTensor> tensors;  // in write order
  uint64_t total_bytes() const;
};

const std::vector<std::string>& synth_presets();

// The config and the tensor list of a preset, without generating any bytes. Throws Error for an
// unknown preset or incompatible options.
SynthPlan synth_plan(const SynthOptions& opt);

// Fills bytes [offset, offset + n) of tensor t. offset and n must be multiples of its element
// size (4 for int4 words).
void synth_fill(const SynthTensor& t, uint64_t offset, std::byte* dst, size_t n);

// Writes the checkpoint (config.json, safetensors shards, index) through CheckpointWriter,
// streaming tensor by tensor in chunks: memory stays bounded whatever the model size.
void synth_write(const SynthPlan& plan, const std::filesystem::path& out_dir, const SynthOptions& opt);

}  // namespace sickle
