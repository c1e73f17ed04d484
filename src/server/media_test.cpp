// Image parts of chat requests (server/media.h): url sources, errors naming the part, and the
// placeholders, rows and content keys attach_images gives the scheduler.
#include "server/media.h"

#include <gtest/gtest.h>
#include <png.h>

#include <cstring>
#include <fstream>

#include "base/test_temp_dir.h"
#include "server/openai.h"
#include "tokenizer/testing.h"

namespace sickle::server {
namespace {

std::string png_bytes(int w, int h, uint8_t salt) {
  png_image im;
  std::memset(&im, 0, sizeof im);
  im.version = PNG_IMAGE_VERSION;
  im.width = png_uint_32(w);
  im.height = png_uint_32(h);
  im.format = PNG_FORMAT_RGB;
  std::vector<uint8_t> rgb(size_t(w * h * 3));
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = uint8_t(i * 13 + salt);
  png_alloc_size_t size = 0;
  png_image_write_to_memory(&im, nullptr, &size, 0, rgb.data(), 0, nullptr);
  std::string buf(size, '\0');
  png_image_write_to_memory(&im, buf.data(), &size, 0, rgb.data(), 0, nullptr);
  return buf;
}

std::string data_url(const std::string& bytes) { return "data:image/png;base64," + testing::base64(bytes); }

// Error message and param of image_url_bytes / attach_images, or "no error".
template <class F>
std::pair<std::string, std::string> api_error(F f) {
  try {
    f();
  } catch (const ApiError& e) {
    return {e.message, e.param};
  }
  return {"no error", ""};
}

// A tower stand-in: tokens = pixels / 4 (at least 1), row r = (r, first byte, ...).
class FakeEncoder : public ImageEncoder {
 public:
  int32_t placeholder_id() const override { return 9; }
  int64_t hidden() const override { return 2; }
  vision::Patches preprocess(const vision::Image& img) const override {
    vision::Patches p;
    p.tokens = std::max<int64_t>(1, img.width * img.height / 4);
    p.values.assign(1, float(img.rgb[0]));
    return p;
  }
  int64_t tokens(const vision::Image& img) const override {
    return std::max<int64_t>(1, img.width * img.height / 4);
  }
  std::vector<float> encode(const vision::Patches& p, ThreadPool* /*pool*/) const override {
    std::vector<float> out;
    for (int64_t r = 0; r < p.tokens; ++r) out.insert(out.end(), {float(r), p.values[0]});
    return out;
  }
};

TEST(ServeMedia, DataAndLocalUrlsAndTheirErrors) {
  const std::string png = png_bytes(2, 2, 1);
  EXPECT_EQ(image_url_bytes(data_url(png), "messages[0].content[1]", ""), png);
  auto e = api_error([] { image_url_bytes("https://example.com/a.png", "messages[0].content[1]", ""); });
  EXPECT_NE(e.first.find("never fetches from the network"), std::string::npos) << e.first;
  EXPECT_EQ(e.second, "messages[0].content[1].image_url.url");
  e = api_error([] { image_url_bytes("data:image/png;base64,@@@", "messages[2].content[0]", ""); });
  EXPECT_NE(e.first.find("messages[2].content[0].image_url.url: the data: URL's payload is not valid base64"),
            std::string::npos)
      << e.first;
  e = api_error([] { image_url_bytes("data:text/plain;base64,AAAA", "m", ""); });
  EXPECT_NE(e.first.find("text/plain"), std::string::npos) << e.first;

  test_util::TempDir dir, other;
  std::filesystem::create_directory(dir.path / "in");
  std::ofstream(dir.path / "in" / "a.png", std::ios::binary) << png;
  std::ofstream(other.path / "b.png", std::ios::binary) << png;
  std::filesystem::create_symlink(other.path / "b.png", dir.path / "in" / "link.png");
  const std::string root = (dir.path / "in").string();
  const std::string url = "file://" + root + "/a.png";
  EXPECT_EQ(image_url_bytes(url, "f", root), png);
  e = api_error([&] { image_url_bytes(url, "f", ""); });  // off by default
  EXPECT_NE(e.first.find("--allowed-local-media-path"), std::string::npos) << e.first;
  e = api_error([&] {
    image_url_bytes("file://" + root + "/../in/../../" + other.path.filename().string() + "/b.png", "f",
                    root);
  });
  EXPECT_NE(e.first.find("outside --allowed-local-media-path"), std::string::npos) << e.first;
  e = api_error([&] { image_url_bytes("file://" + root + "/link.png", "f", root); });  // symlink out
  EXPECT_NE(e.first.find("outside --allowed-local-media-path"), std::string::npos) << e.first;
}

TEST(ServeMedia, AttachExpandsPlaceholdersWithRowsAndContentKeys) {
  FakeEncoder enc;
  const std::string a = png_bytes(4, 2, 1), b = png_bytes(4, 2, 2);  // 2 tokens each
  GenRequest g;
  g.prompt = {1, 9, 2, 9, 3};
  attach_images(g, {{data_url(a), "messages[0].content[0]"}, {data_url(b), "messages[0].content[2]"}}, &enc,
                "");
  EXPECT_EQ(g.prompt, (std::vector<int32_t>{1, 9, 9, 2, 9, 9, 3}));
  ASSERT_EQ(g.embed_rows.size(), 7u);
  // The tower runs later, one job per image (on the scheduler's thread): the rows are placed but
  // not written yet.
  ASSERT_EQ(g.prepare.size(), 2u);
  EXPECT_EQ(g.embed_rows[2][0], 0.0f);
  for (auto& job : g.prepare) job(nullptr);
  ASSERT_EQ(g.prompt_keys.size(), 7u);
  for (size_t j : {0u, 3u, 6u}) {
    EXPECT_EQ(g.embed_rows[j], nullptr);
    EXPECT_EQ(g.prompt_keys[j], 0u);
  }
  EXPECT_EQ(g.embed_rows[2][0], 1.0f);  // the image's second row
  EXPECT_NE(g.prompt_keys[1], 0u);
  EXPECT_EQ(g.prompt_keys[1], g.prompt_keys[2]);
  EXPECT_NE(g.prompt_keys[1], g.prompt_keys[4]);  // different pixels, different key
  EXPECT_EQ(g.prompt_keys[4], g.prompt_keys[5]);

  EXPECT_EQ(g.embed_rows[1][1], 1.0f);  // image a's first byte (salt 1): the job wrote its own image
  EXPECT_EQ(g.embed_rows[4][1], 2.0f);
  // /tokenize's counts: the same token counts, without running the tower.
  EXPECT_EQ(
      expanded_prompt({1, 9, 2, 9}, {{data_url(png_bytes(8, 4, 0)), "a"}, {data_url(a), "b"}}, &enc, ""),
      (std::vector<int32_t>{1, 9, 9, 9, 9, 9, 9, 9, 9, 2, 9, 9}));

  // The same pixels give the same key (the scheduler's cache relies on it).
  GenRequest g2;
  g2.prompt = {9};
  attach_images(g2, {{data_url(a), "x"}}, &enc, "");
  EXPECT_EQ(g2.prompt_keys[0], g.prompt_keys[1]);

  // Bad bytes: a 400 with the decoder's message, naming the part.
  GenRequest bad;
  bad.prompt = {9};
  auto e = api_error([&] {
    attach_images(bad, {{data_url(a.substr(0, a.size() / 2)), "messages[1].content[3]"}}, &enc, "");
  });
  EXPECT_NE(e.first.find("messages[1].content[3]"), std::string::npos) << e.first;
  EXPECT_EQ(e.second, "messages[1].content[3]");
  e = api_error([&] {
    expanded_prompt({9}, {{data_url(a.substr(0, 20)), "messages[2].content[0]"}}, &enc, "");
  });
  EXPECT_EQ(e.second, "messages[2].content[0]") << e.first;
  // No tower: a 400 naming the part.
  e = api_error([&] { attach_images(bad, {{data_url(a), "messages[0].content[1]"}}, nullptr, ""); });
  EXPECT_NE(e.first.find("messages[0].content[1]: this model has no vision tower"), std::string::npos)
      << e.first;
  e = api_error([&] { expanded_prompt({9}, {{data_url(a), "messages[0].content[1]"}}, nullptr, ""); });
  EXPECT_NE(e.first.find("messages[0].content[1]: this model has no vision tower"), std::string::npos)
      << e.first;
}

}  // namespace
}  // namespace sickle::server
