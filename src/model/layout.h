// sickle/model/layout.h — the tensors a checkpoint holds, derived from config.json alone.
//
// Names, dtypes and shapes as the published checkpoints store them (docs/formats.md §2-§3), so
// `inspect` / `plan` can count bytes before anything is downloaded. Each linear's encoding comes
// from the quantization scheme:
//  - compressed-tensors pack-quantized int4 (Kimi-K2-Thinking, K2.5): the Linear modules not
//    matched by `ignore` (plain names match the module or its last components; "re:" entries
//    match from the start of the module name, as compressed-tensors does) are stored as
//    weight_packed I32 [out, in/8] + weight_scale BF16 [out, in/group] + weight_shape I32 [2]:
//    0.5 + 2/group bytes per weight (0.5625 at group 32) plus 8 bytes per linear;
//  - fp8 e4m3 with block scales (DeepSeek-V3): every linear of the text layers (not lm_head, as
//    DeepSeek-V3 ships it) is weight F8_E4M3 [out, in] + weight_scale_inv F32 [ceil(out/B_r),
//    ceil(in/B_c)]: 1 byte per weight plus 4 per block;
//  - everything else (embeddings, norms, routers, lm_head, the vision tower) in `torch_dtype`
//    (bf16 unless the config says float32 / float16); e_score_correction_bias is always F32.
// The router (mlp.gate) is a parameter, not a Linear, so no scheme quantizes it.
// Layers past num_hidden_layers (DeepSeek-V3's MTP layer, num_nextn_predict_layers) are not
// listed: inference does not load them (the download is that much larger).
// Vision (Kimi-K2.5, vision_config): the MoonViT-3D tower and patch-merger projector of
// docs/formats.md §2b from vt_hidden_size / vt_intermediate_size / vt_num_hidden_layers
// (or hidden_size / intermediate_size / num_hidden_layers, as vLLM's KimiK25VisionConfig names
// them); `sickle synth` writes its small towers in the same layout.
#pragma once

#include <nlohmann/json.hpp>
#include <vector>

#include "io/config.h"
#include "model/inspect.h"

namespace sickle {

// `root` is config.json's root object and `c` its parse (ModelConfig::from_json(root)).
// Throws Error naming the field when a shape cannot be derived (e.g. an int4 group that does not
// divide a linear's input width).
std::vector<TensorEntry> tensors_from_config(const nlohmann::json& root, const ModelConfig& c);

}  // namespace sickle
