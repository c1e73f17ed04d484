// Kimi-K2.5 vision: config parsing, the processor's resize (against Pillow), the position-table
// interpolation (against torch), and the tower + projector against tools/reference/vision_ref.py
// (float64) on sickle synth's tiny-kimi tower, on every kernel table this CPU runs.
// Goldens: tests/golden/vision/tiny_kimi.safetensors (tools/reference/make_vision_goldens.py).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "base/error.h"
#include "base/test_temp_dir.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "kernels/dispatch.h"
#include "kernels/kernels_test_util.h"
#include "model/synth.h"
#include "model/synth_testing.h"
#include "runtime/thread_pool.h"
#include "vision/prompt.h"
#include "vision/tower.h"

namespace sickle::vision {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

fs::path golden_path() {
  const char* s = std::getenv("SICKLE_SOURCE_DIR");
  return fs::path(s ? s : SICKLE_SOURCE_DIR) / "tests/golden/vision/tiny_kimi.safetensors";
}

// make_vision_goldens.py's test_image.
Image test_image(int64_t w, int64_t h) {
  Image im{w, h, std::vector<uint8_t>(size_t(w * h * 3))};
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t c = 0; c < 3; ++c)
        im.rgb[size_t((y * w + x) * 3 + c)] =
            uint8_t((x * 3 + y * 5 + c * 80 + (x * 7919 + y * 104729 + c * 31337) % 61) % 256);
  return im;
}

std::vector<std::pair<int64_t, int64_t>> parse_sizes(const std::string& s) {
  std::vector<std::pair<int64_t, int64_t>> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t x = s.find('x', i), e = s.find_first_of(";:", x);
    out.emplace_back(std::stoll(s.substr(i, x - i)),
                     std::stoll(s.substr(x + 1, e == std::string::npos ? e : e - x - 1)));
    i = e == std::string::npos ? s.size() : e + 1;
  }
  return out;
}

TEST(VisionConfig, ParsesTheReleasedConfigAndRejectsOtherVariants) {
  json root = {{"vision_config", test_util::kimi_k25_vision_config()}};
  VisionConfig c = VisionConfig::from_json(root, 7168, "config.json");
  EXPECT_EQ(c.hidden, 1152);
  EXPECT_EQ(c.heads, 16);
  EXPECT_EQ(c.head_dim, 72);
  EXPECT_EQ(c.layers, 27);
  EXPECT_EQ(c.intermediate, 4304);
  EXPECT_EQ(c.text_hidden, 7168);
  EXPECT_EQ(c.pos_h, 64);
  for (auto [key, value] : std::vector<std::pair<std::string, json>>{{"mm_projector_type", "patchmergerv2"},
                                                                     {"pos_emb_type", "learnable"},
                                                                     {"merge_type", "sd2"},
                                                                     {"vt_hidden_size", -3},
                                                                     {"vt_num_attention_heads", 7}}) {
    json bad = root;
    bad["vision_config"][key] = value;
    try {
      VisionConfig::from_json(bad, 7168, "config.json");
      ADD_FAILURE() << "accepted " << key << " = " << value.dump();
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(key == "vt_num_attention_heads" ? "heads" : key), std::string::npos) << what;
    }
  }
  EXPECT_THROW(VisionConfig::from_json(json::object(), 64, "config.json"), Error);
  json m = {{"media_proc_cfg", {{"image_std", {0.5, 0, 0.5}}}}};
  EXPECT_THROW(MediaConfig::from_json(m, "preprocessor_config.json"), Error);
}

// 1024x1024 at the released limits: 73 x 73 patches, no resize, padded to 1036 = 37 x 28 -> 1369.
TEST(VisionConfig, InspectFactsCountTokensPerImage) {
  json root = {{"vision_config", test_util::kimi_k25_vision_config()}};
  json j = vision_json(root, 7168, "/nonexistent/config.json");  // no preprocessor: the release's
  EXPECT_EQ(j["layers"], 27);
  EXPECT_EQ(j["in_patch_limit"], 16384);
  EXPECT_EQ(j["tokens_per_image"][0]["tokens"], 37 * 37);
  const std::string text = format_vision(root, 7168, "/nonexistent/config.json");
  EXPECT_NE(text.find("1024x1024 -> 1369"), std::string::npos) << text;
  EXPECT_TRUE(vision_json(json::object(), 7168, "x").is_null());
  EXPECT_EQ(format_vision(json::object(), 7168, "x"), "");
}

// Hand-computed from the processor's formula with the released limits (16384 patches, 512 a side).
TEST(VisionPreprocess, NavitResizeFollowsTheProcessorsLimits) {
  MediaConfig m;
  ResizePlan r = navit_resize(1000, 800, m);  // 71 x 57 patches < 16384: no resize
  EXPECT_EQ(r.new_width, 1000);
  EXPECT_EQ(r.new_height, 800);
  EXPECT_EQ(r.pad_width, 8);    // 1008 = 36 x 28
  EXPECT_EQ(r.pad_height, 12);  // 812 = 29 x 28
  EXPECT_EQ(r.tokens, 36 * 29);
  r = navit_resize(4000, 3000, m);  // scale sqrt(16384 / (285 * 214)) = 0.51830
  EXPECT_EQ(r.new_width, 2073);     // int(4000 * 0.51830) = int(2073.2)
  EXPECT_EQ(r.new_height, 1554);    // int(1554.9)
  EXPECT_EQ(r.grid_w, 150);         // 2073 + 27 = 2100 = 75 x 28
  EXPECT_EQ(r.grid_h, 112);         // 1554 + 14 = 1568 = 56 x 28
  EXPECT_EQ(r.tokens, 75 * 56);
  r = navit_resize(10, 10, m);  // one merge block, mostly padding
  EXPECT_EQ(r.grid_h, 2);
  EXPECT_EQ(r.tokens, 1);
  r = navit_resize(20000, 20, m);  // 512 patches a side at most
  EXPECT_EQ(r.new_width, 512 * 14);
  EXPECT_EQ(r.new_height, 7);
  EXPECT_THROW(navit_resize(0, 5, m), Error);
}

TEST(VisionPreprocess, BicubicResizeEqualsPillowBitForBit) {
  auto g = SafetensorsFile::open(golden_path());
  auto cases = parse_sizes(g->metadata().at("resizes"));
  ASSERT_EQ(cases.size() % 2, 0u);
  for (size_t i = 0; i < cases.size() / 2; ++i) {
    auto [w, h] = cases[2 * i];
    auto [nw, nh] = cases[2 * i + 1];
    SCOPED_TRACE(fmt::format("{}x{} -> {}x{}", w, h, nw, nh));
    Image out = resize_bicubic_pil(test_image(w, h), nw, nh);
    TensorView want = g->view(fmt::format("pil.{}", i));
    ASSERT_EQ(want.shape, (std::vector<int64_t>{nh, nw, 3}));
    int diffs = 0;
    for (size_t k = 0; k < out.rgb.size(); ++k) diffs += out.rgb[k] != want.as<uint8_t>()[k];
    EXPECT_EQ(diffs, 0);
  }
}

TEST(VisionTower, PositionTableInterpolationEqualsTorchBicubic) {
  auto g = SafetensorsFile::open(golden_path());
  std::vector<float> table(3 * 4 * 2);
  for (size_t i = 0; i < table.size(); ++i) table[i] = float(std::sin(double(i)) * 3);
  std::vector<float> out(5 * 7 * 2);
  interpolate_bicubic_torch(table.data(), 3, 4, 2, 5, 7, out.data());
  TensorView want = g->view("interp");
  for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], want.as<float>()[i], 1e-6) << i;
  // Same size: the identity (the tower then uses the table as stored).
  std::vector<float> same(table.size());
  interpolate_bicubic_torch(table.data(), 3, 4, 2, 3, 4, same.data());
  for (size_t i = 0; i < table.size(); ++i) EXPECT_NEAR(same[i], table[i], 1e-6);
}

TEST(VisionPrompt, PlaceholdersExpandInOrderToTheirImagesRows) {
  ImageEmbeddings e;
  e.hidden = 2;
  e.images = {{1, 2, 3, 4, 5, 6}, {7, 8}};  // 3 tokens, then 1
  const std::vector<int32_t> prompt = {4, 9, 3, 9, 5};
  ExpandedPrompt x = expand_media_placeholders(prompt, 9, e);
  EXPECT_EQ(x.tokens, (std::vector<int32_t>{4, 9, 9, 9, 3, 9, 5}));
  ASSERT_EQ(x.rows.size(), 7u);
  EXPECT_EQ(x.rows[0], nullptr);
  EXPECT_EQ(x.rows[1], e.images[0].data());
  EXPECT_EQ(x.rows[3], e.images[0].data() + 4);
  EXPECT_EQ(x.rows[4], nullptr);
  EXPECT_EQ(x.rows[5], e.images[1].data());
  EXPECT_EQ(x.rows[6], nullptr);
  EXPECT_EQ(x.image, (std::vector<int32_t>{-1, 0, 0, 0, -1, 1, -1}));
  try {
    expand_media_placeholders(std::vector<int32_t>{4, 9, 5}, 9, e);
    ADD_FAILURE() << "one placeholder for two images accepted";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("1 media placeholder(s)"), std::string::npos) << err.what();
  }
  EXPECT_THROW(media_placeholder_id(json::object(), "config.json"), Error);
  EXPECT_EQ(media_placeholder_id(json{{"media_placeholder_token_id", 163605}}, "config.json"), 163605);
}

class VisionTowerTables : public ::testing::TestWithParam<const KernelTable*> {};

// Square with padding, wide, tall, smaller than one merge block, larger than the patch limit.
TEST_P(VisionTowerTables, EmbeddingsEqualTheFloat64Reference) {
  test_util::TempDir t("sickle-vision-test");
  SynthOptions o = test_util::synth_options("tiny-kimi");
  synth_write(synth_plan(o), t.path / "m", o);
  auto ck = Checkpoint::open(t.path / "m");
  VisionTower tower(*ck);
  auto g = SafetensorsFile::open(golden_path());
  auto sizes = parse_sizes(g->metadata().at("sizes"));
  TensorView grids = g->view("grid_thw");
  ThreadPool pool(2);
  for (size_t i = 0; i < sizes.size(); ++i) {
    auto [w, h] = sizes[i];
    SCOPED_TRACE(fmt::format("{}x{}", w, h));
    Patches p = preprocess(test_image(w, h), tower.media());
    ASSERT_EQ(p.grid_h, grids.as<int64_t>()[i * 3 + 1]);
    ASSERT_EQ(p.grid_w, grids.as<int64_t>()[i * 3 + 2]);
    std::vector<float> e = tower.encode(p, &pool, GetParam());
    TensorView want = g->view(fmt::format("image.{}", i));
    ASSERT_EQ(want.shape, (std::vector<int64_t>{p.tokens, tower.config().text_hidden}));
    double maxref = 0, maxdiff = 0;
    for (size_t k = 0; k < e.size(); ++k) {
      maxref = std::max(maxref, std::fabs(double(want.as<float>()[k])));
      maxdiff = std::max(maxdiff, std::fabs(double(e[k]) - double(want.as<float>()[k])));
    }
    EXPECT_LT(maxdiff, 1e-4 * maxref) << "max diff " << maxdiff << " max |ref| " << maxref;
  }
}

INSTANTIATE_TEST_SUITE_P(Tables, VisionTowerTables, ::testing::ValuesIn(runnable_kernel_tables()),
                         testing_util::TableName());

}  // namespace
}  // namespace sickle::vision
