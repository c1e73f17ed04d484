// sickle/vision/prompt.h — the prompt side of Kimi-K2.5's images: each media placeholder token
// (config.json media_placeholder_token_id, `<|media_pad|>` inside `<|media_begin|>image
// <|media_content|><|media_pad|><|media_end|>`) becomes as many placeholders as its image has
// tokens, left to right, and those positions take the image's projected rows instead of
// embed_tokens rows (Model StepItem::embed_rows).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>
#include <vector>

#include "vision/embed.h"

namespace sickle::vision {

// config.json's media_placeholder_token_id; throws Error naming `where` if it is missing.
int32_t media_placeholder_id(const nlohmann::json& root, const std::string& where);

struct ExpandedPrompt {
  std::vector<int32_t> tokens;
  std::vector<const float*> rows;  // per token: a row of `images` (placeholders) or null
  std::vector<int32_t> image;      // per token: the index of its image, or -1 (text)
};

// Throws Error when the prompt's placeholder count differs from the number of images.
ExpandedPrompt expand_media_placeholders(std::span<const int32_t> prompt, int32_t media_id,
                                         const ImageEmbeddings& images);

}  // namespace sickle::vision
