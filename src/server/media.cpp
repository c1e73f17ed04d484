// sickle/server/media.cpp — see media.h.
#include "server/media.h"

#include <fmt/format.h>

#include <filesystem>

#include "base/error.h"
#include "base/file.h"
#include "base/hash.h"
#include "io/checkpoint.h"
#include "server/openai.h"
#include "tokenizer/tokenizer.h"
#include "vision/data_url.h"
#include "vision/image.h"
#include "vision/prompt.h"
#include "vision/tower.h"

namespace sickle::server {

namespace fs = std::filesystem;

namespace {

class TowerEncoder : public ImageEncoder {
 public:
  explicit TowerEncoder(const Checkpoint& ck)
      : tower_(ck), media_id_(vision::media_placeholder_id(ck.config_json(), "config.json")) {}
  int32_t placeholder_id() const override { return media_id_; }
  int64_t hidden() const override { return tower_.config().text_hidden; }
  vision::Patches preprocess(const vision::Image& img) const override {
    return vision::preprocess(img, tower_.media());
  }
  int64_t tokens(const vision::Image& img) const override {
    return vision::navit_resize(img.width, img.height, tower_.media()).tokens;
  }
  std::vector<float> encode(const vision::Patches& p, ThreadPool* pool) const override {
    return tower_.encode(p, pool);
  }

 private:
  vision::VisionTower tower_;
  int32_t media_id_;
};

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  return true;
}

[[noreturn]] void bad_url(const std::string& field, const std::string& why) {
  throw ApiError(400, fmt::format("{}.image_url.url: {}", field, why), field + ".image_url.url");
}

std::string file_url_bytes(std::string_view url, const std::string& field, const std::string& allowed) {
  if (allowed.empty())
    bad_url(field,
            "file:// URLs are off; start the server with --allowed-local-media-path DIR to read images "
            "under DIR.");
  std::string_view path = url.substr(7);  // file://
  if (starts_with_nocase(path, "localhost/")) path.remove_prefix(9);
  if (path.empty() || path.front() != '/')
    bad_url(field, "expected an absolute path: file:///DIR/image.png.");
  std::error_code ec;
  const fs::path real = fs::canonical(fs::path(path), ec);
  if (ec) bad_url(field, fmt::format("cannot open {}: {}", path, ec.message()));
  const fs::path root = fs::canonical(fs::path(allowed), ec);
  if (ec) bad_url(field, fmt::format("--allowed-local-media-path {}: {}", allowed, ec.message()));
  // Inside the root: the relative path from it does not climb out.
  const fs::path rel = real.lexically_relative(root);
  if (rel.empty() || *rel.begin() == "..")
    bad_url(field, fmt::format("{} is outside --allowed-local-media-path ({}).", path, root.string()));
  if (!fs::is_regular_file(real, ec)) bad_url(field, fmt::format("{} is not a regular file.", path));
  try {
    return read_file(real, field);
  } catch (const Error& e) {
    bad_url(field, e.what());
  }
}

}  // namespace

std::unique_ptr<ImageEncoder> make_image_encoder(const Checkpoint& ck) {
  if (!ck.config_json().contains("vision_config")) return nullptr;
  return std::make_unique<TowerEncoder>(ck);
}

std::string image_url_bytes(const std::string& url, const std::string& field,
                            const std::string& allowed_local_media_path) {
  if (vision::is_data_url(url)) {
    try {
      return vision::decode_data_url(url, field + ".image_url.url");
    } catch (const Error& e) {
      throw ApiError(400, e.what(), field + ".image_url.url");
    }
  }
  if (starts_with_nocase(url, "file://")) return file_url_bytes(url, field, allowed_local_media_path);
  const size_t colon = url.find(':');
  bad_url(field, fmt::format("'{}' URLs are not accepted: sickle serve never fetches from the network; send "
                             "the image as a data:image/...;base64 URL (or file:// with "
                             "--allowed-local-media-path).",
                             colon == std::string::npos ? url.substr(0, 16) : url.substr(0, colon)));
}

uint64_t image_key(const vision::Image& img) {
  Hasher h(0x696d616765ull);  // "image"
  const int64_t dims[2] = {img.width, img.height};
  h.update(dims, sizeof dims);
  h.update(img.rgb.data(), img.rgb.size());
  const uint64_t k = h.digest();
  return k ? k : 1;
}

namespace {

void require_encoder(const std::vector<PromptImage>& images, const ImageEncoder* encoder) {
  if (!encoder)
    throw ApiError(400,
                   fmt::format("{}: this model has no vision tower (config.json has no vision_config); "
                               "image parts are not supported.",
                               images.front().field),
                   images.front().field);
}

// Runs f(decoded image) for a part; any Error (bad bytes, a size the processor refuses) is a
// 400 with its message naming the part.
template <class F>
void with_image(const PromptImage& im, const std::string& allowed_local_media_path, F&& f) {
  try {
    f(vision::decode_image(image_url_bytes(im.url, im.field, allowed_local_media_path), im.field));
  } catch (const Error& e) {
    throw ApiError(400, e.what(), im.field);
  }
}

vision::ExpandedPrompt expand(std::span<const int32_t> prompt, int32_t media_id,
                              const vision::ImageEmbeddings& images) {
  try {
    return vision::expand_media_placeholders(prompt, media_id, images);
  } catch (const Error& e) {
    throw ApiError(400, e.what(), "messages");
  }
}

}  // namespace

std::vector<int32_t> expanded_prompt(const std::vector<int32_t>& prompt,
                                     const std::vector<PromptImage>& images, const ImageEncoder* encoder,
                                     const std::string& allowed_local_media_path) {
  if (images.empty()) return prompt;
  require_encoder(images, encoder);
  vision::ImageEmbeddings sizes;  // one float per token: only the counts matter
  sizes.hidden = 1;
  for (const PromptImage& im : images)
    with_image(im, allowed_local_media_path, [&](const vision::Image& img) {
      sizes.images.emplace_back(size_t(encoder->tokens(img)), 0.0f);
    });
  return expand(prompt, encoder->placeholder_id(), sizes).tokens;
}

void attach_images(GenRequest& g, const std::vector<PromptImage>& images, const ImageEncoder* encoder,
                   const std::string& allowed_local_media_path) {
  if (images.empty()) return;
  require_encoder(images, encoder);
  auto emb = std::make_shared<vision::ImageEmbeddings>();
  emb->hidden = encoder->hidden();
  std::vector<uint64_t> keys;
  std::vector<std::shared_ptr<const vision::Patches>> patches;
  for (const PromptImage& im : images) {
    with_image(im, allowed_local_media_path, [&](const vision::Image& img) {
      keys.push_back(image_key(img));
      patches.push_back(std::make_shared<const vision::Patches>(encoder->preprocess(img)));
    });
    // The rows are written by the image's prepare job; their places (and the prompt's length)
    // are known now.
    const vision::Patches& p = *patches.back();
    emb->images.emplace_back(size_t(p.tokens * emb->hidden), 0.0f);
    emb->grids.push_back({p.grid_t, p.grid_h, p.grid_w});
  }
  vision::ExpandedPrompt ex = expand(g.prompt, encoder->placeholder_id(), *emb);
  // Each image position's key: its image's.
  g.prompt_keys.assign(ex.tokens.size(), 0);
  for (size_t j = 0; j < ex.image.size(); ++j)
    if (ex.image[j] >= 0) g.prompt_keys[j] = keys[size_t(ex.image[j])];
  for (size_t i = 0; i < patches.size(); ++i)
    g.prepare.push_back([encoder, emb, i, p = patches[i]](ThreadPool* pool) {
      const std::vector<float> rows = encoder->encode(*p, pool);
      std::vector<float>& dst = emb->images[i];
      if (rows.size() != dst.size())
        fail("image {}: the tower gave {} floats for {} tokens x {}", i, rows.size(), p->tokens, emb->hidden);
      std::copy(rows.begin(), rows.end(), dst.begin());
    });
  g.prompt = std::move(ex.tokens);
  g.embed_rows = std::move(ex.rows);
  g.embed_storage = std::move(emb);
}

}  // namespace sickle::server
