#include "vision/prompt.h"

#include "base/error.h"

namespace sickle::vision {

int32_t media_placeholder_id(const nlohmann::json& root, const std::string& where) {
  auto it = root.find("media_placeholder_token_id");
  if (it == root.end() || !it->is_number_integer() || it->get<int64_t>() < 0 ||
      it->get<int64_t>() > INT32_MAX)
    fail("{}: no media_placeholder_token_id: the model does not take images", where);
  return int32_t(it->get<int64_t>());
}

ExpandedPrompt expand_media_placeholders(std::span<const int32_t> prompt, int32_t media_id,
                                         const ImageEmbeddings& images) {
  size_t n = 0;
  for (int32_t t : prompt) n += t == media_id;
  if (n != images.images.size())
    fail("the prompt has {} media placeholder(s) (token {}, <|media_pad|>) for {} image(s)", n, media_id,
         images.images.size());
  ExpandedPrompt out;
  size_t next = 0;
  for (int32_t t : prompt) {
    if (t != media_id) {
      out.tokens.push_back(t);
      out.rows.push_back(nullptr);
      out.image.push_back(-1);
      continue;
    }
    const std::vector<float>& e = images.images[next];
    for (size_t r = 0; r < e.size() / size_t(images.hidden); ++r) {
      out.tokens.push_back(media_id);
      out.rows.push_back(e.data() + r * size_t(images.hidden));
      out.image.push_back(int32_t(next));
    }
    ++next;
  }
  return out;
}

}  // namespace sickle::vision
