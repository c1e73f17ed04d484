#include "vision/config.h"

#include <fmt/format.h>

#include "base/error.h"
#include "io/checkpoint.h"
#include "vision/preprocess.h"

namespace sickle::vision {
using json = nlohmann::json;

namespace {

int64_t positive(const json& v, std::initializer_list<const char*> keys, const std::string& where,
                 int64_t dflt = 0) {
  for (const char* k : keys) {
    auto it = v.find(k);
    if (it == v.end() || it->is_null()) continue;
    if (!it->is_number_integer() || it->get<int64_t>() <= 0)
      fail("{}: vision_config.{} must be a positive integer, got {}", where, k, it->dump());
    return it->get<int64_t>();
  }
  if (dflt > 0) return dflt;
  fail("{}: vision_config needs a positive integer '{}'", where, *keys.begin());
}

void expect_str(const json& v, const char* key, const char* supported, const std::string& where) {
  auto it = v.find(key);
  if (it == v.end() || it->is_null()) return;
  if (!it->is_string() || it->get<std::string>() != supported)
    fail("{}: vision_config.{} = {} is not supported (sickle runs '{}', as Kimi-K2.5 ships)", where, key,
         it->dump(), supported);
}

}  // namespace

VisionConfig VisionConfig::from_json(const json& root, int64_t text_hidden, const std::string& where) {
  auto vit = root.find("vision_config");
  if (vit == root.end() || !vit->is_object())
    fail("{}: no vision_config object: this model has no vision tower", where);
  const json& v = *vit;
  VisionConfig c;
  c.hidden = positive(v, {"vt_hidden_size", "hidden_size"}, where);
  c.intermediate = positive(v, {"vt_intermediate_size", "intermediate_size"}, where);
  c.heads = positive(v, {"vt_num_attention_heads", "num_attention_heads"}, where);
  c.layers = positive(v, {"vt_num_hidden_layers", "num_hidden_layers"}, where);
  c.patch = positive(v, {"patch_size"}, where, 14);
  c.pos_h = positive(v, {"init_pos_emb_height"}, where, 64);
  c.pos_w = positive(v, {"init_pos_emb_width"}, where, 64);
  c.pos_t = positive(v, {"init_pos_emb_time"}, where, 4);
  c.text_hidden = positive(v, {"text_hidden_size"}, where, text_hidden);
  if (c.hidden % c.heads || (c.hidden / c.heads) % 4)
    fail("{}: vision_config: hidden size {} over {} heads must give a head width divisible by 4 (2-D rotary)",
         where, c.hidden, c.heads);
  c.head_dim = c.hidden / c.heads;
  if (auto m = v.find("merge_kernel_size"); m != v.end()) {
    if (!m->is_array() || m->size() != 2 || !(*m)[0].is_number_integer() || !(*m)[1].is_number_integer() ||
        (*m)[0].get<int64_t>() <= 0 || (*m)[1].get<int64_t>() <= 0)
      fail("{}: vision_config.merge_kernel_size must be [h, w] of positive integers, got {}", where,
           m->dump());
    c.merge_h = (*m)[0].get<int64_t>();
    c.merge_w = (*m)[1].get<int64_t>();
  }
  expect_str(v, "pos_emb_type", "divided_fixed", where);
  expect_str(v, "merge_type", "sd2_tpool", where);
  expect_str(v, "mm_projector_type", "patchmerger", where);
  expect_str(v, "video_attn_type", "spatial_temporal", where);
  expect_str(v, "norm_type", "layernorm", where);
  expect_str(v, "activation_func", "gelu_pytorch_tanh", where);
  expect_str(v, "projector_hidden_act", "gelu", where);
  expect_str(v, "pos_emb_interpolation_mode", "bicubic", where);
  if (auto e = v.find("projector_ln_eps"); e != v.end() && e->is_number())
    c.projector_ln_eps = e->get<float>();
  return c;
}

MediaConfig MediaConfig::from_json(const json& root, const std::string& where) {
  MediaConfig m;
  auto it = root.find("media_proc_cfg");
  if (it == root.end()) return m;
  if (!it->is_object()) fail("{}: media_proc_cfg must be an object", where);
  const json& c = *it;
  auto get = [&](const char* key, int64_t& out) {
    auto f = c.find(key);
    if (f == c.end() || f->is_null()) return;
    if (!f->is_number_integer() || f->get<int64_t>() <= 0)
      fail("{}: media_proc_cfg.{} must be a positive integer, got {}", where, key, f->dump());
    out = f->get<int64_t>();
  };
  get("patch_size", m.patch);
  get("in_patch_limit", m.in_patch_limit);
  get("patch_limit_on_one_side", m.patch_limit_on_one_side);
  if (auto f = c.find("merge_kernel_size"); f != c.end()) {
    // A scalar, or [h, w] of which the processor uses the first (vLLM's loader does the same).
    const json& s = f->is_array() && !f->empty() ? (*f)[0] : *f;
    if (!s.is_number_integer() || s.get<int64_t>() <= 0)
      fail("{}: media_proc_cfg.merge_kernel_size must be a positive integer, got {}", where, f->dump());
    m.merge = s.get<int64_t>();
  }
  if (auto f = c.find("fixed_output_tokens"); f != c.end() && !f->is_null())
    fail("{}: media_proc_cfg.fixed_output_tokens = {} is not supported (Kimi-K2.5 ships null)", where,
         f->dump());
  auto triple = [&](const char* key, std::array<double, 3>& out, bool nonzero) {
    auto f = c.find(key);
    if (f == c.end()) return;
    if (!f->is_array() || f->size() != 3)
      fail("{}: media_proc_cfg.{} must be 3 numbers, got {}", where, key, f->dump());
    for (int i = 0; i < 3; ++i) {
      if (!(*f)[i].is_number() || (nonzero && (*f)[i].get<double>() == 0.0))
        fail("{}: media_proc_cfg.{} must be 3 {}numbers, got {}", where, key, nonzero ? "non-zero " : "",
             f->dump());
      out[i] = (*f)[i].get<double>();
    }
  };
  triple("image_mean", m.mean, false);
  triple("image_std", m.std, true);
  return m;
}

MediaConfig MediaConfig::load(const std::filesystem::path& model_dir) {
  const auto p = model_dir / "preprocessor_config.json";
  if (!std::filesystem::exists(p)) return MediaConfig{};
  return from_json(read_json_file(p), p.string());
}

namespace {

std::filesystem::path model_dir_of(const std::filesystem::path& p) {
  return std::filesystem::is_directory(p) ? p : p.parent_path();
}

}  // namespace

nlohmann::json vision_json(const json& root, int64_t text_hidden, const std::filesystem::path& model_path) {
  if (!root.contains("vision_config")) return nullptr;
  const VisionConfig c = VisionConfig::from_json(root, text_hidden, "config.json");
  const MediaConfig m = MediaConfig::load(model_dir_of(model_path));
  json sizes = json::array();
  for (const auto& wh : kInspectSizes) {
    const ResizePlan r = navit_resize(wh[0], wh[1], m);
    sizes.push_back(
        {{"width", wh[0]}, {"height", wh[1]}, {"patches", r.grid_h * r.grid_w}, {"tokens", r.tokens}});
  }
  return {{"hidden", c.hidden},
          {"layers", c.layers},
          {"heads", c.heads},
          {"intermediate", c.intermediate},
          {"patch", c.patch},
          {"merge", {c.merge_h, c.merge_w}},
          {"text_hidden", c.text_hidden},
          {"in_patch_limit", m.in_patch_limit},
          {"patch_limit_on_one_side", m.patch_limit_on_one_side},
          {"tokens_per_image", sizes}};
}

std::string format_vision(const json& root, int64_t text_hidden, const std::filesystem::path& model_path) {
  const json j = vision_json(root, text_hidden, model_path);
  if (j.is_null()) return "";
  std::string sizes;
  for (const auto& s : j["tokens_per_image"])
    sizes += fmt::format("{}{}x{} -> {}", sizes.empty() ? "" : ", ", s["width"].get<int64_t>(),
                         s["height"].get<int64_t>(), s["tokens"].get<int64_t>());
  return fmt::format(
      "{:<11}MoonViT {} blocks x {} ({} heads, MLP {}), patch {}, {}x{} merge -> projector -> {}\n"
      "{:<11}tokens per image: {} (at most {} patches, {} a side)\n",
      "vision", j["layers"].get<int64_t>(), j["hidden"].get<int64_t>(), j["heads"].get<int64_t>(),
      j["intermediate"].get<int64_t>(), j["patch"].get<int64_t>(), j["merge"][0].get<int64_t>(),
      j["merge"][1].get<int64_t>(), j["text_hidden"].get<int64_t>(), "", sizes,
      j["in_patch_limit"].get<int64_t>(), j["patch_limit_on_one_side"].get<int64_t>());
}

}  // namespace sickle::vision
