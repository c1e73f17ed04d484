// sickle/server/media.h — the images of a chat request (OpenAI image_url parts, rendered as
// Kimi-K2.5 media placeholders: tokenizer/prompt.h RenderedPrompt::images) to what the scheduler
// feeds the model: each placeholder expanded to its image's token count, the projected rows for
// those positions (GenRequest::embed_rows) and a content key per position (GenRequest::
// prompt_keys: a hash of the decoded pixels, so the prefix cache reuses an image only for the
// same image).
//
// Sources, as vLLM: `data:image/...;base64,...` URLs; `file://` paths only under
// --allowed-local-media-path DIR (symlinks resolved; the real path must stay inside DIR); never
// the network (http(s) and anything else are a 400 naming the part). Bad image bytes are a 400
// with the decoder's message; a model without a vision tower is a 400 naming the part.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "server/scheduler.h"
#include "tokenizer/prompt.h"
#include "vision/preprocess.h"

namespace sickle {
class Checkpoint;
class ThreadPool;
}

namespace sickle::server {

class ImageEncoder {
 public:
  virtual ~ImageEncoder() = default;
  virtual int32_t placeholder_id() const = 0;  // config.json media_placeholder_token_id
  virtual int64_t hidden() const = 0;          // floats per embedding row
  // The processor's patches of a decoded image (throws Error on a bad image).
  virtual vision::Patches preprocess(const vision::Image& img) const = 0;
  // The placeholder tokens of a decoded image (preprocess(img).tokens, from the resize plan
  // alone).
  virtual int64_t tokens(const vision::Image& img) const = 0;
  // Projected rows [p.tokens * hidden()]. Called on the scheduler's inference thread with the
  // model's pool (GenRequest::prepare), never beside a model step.
  virtual std::vector<float> encode(const vision::Patches& p, ThreadPool* pool) const = 0;
};

// The checkpoint's tower and projector; nullptr when config.json has no vision_config.
std::unique_ptr<ImageEncoder> make_image_encoder(const Checkpoint& ck);

// The bytes behind an image part's url (`field` names the part in errors: ApiError 400).
// `allowed_local_media_path` empty: file:// is refused.
std::string image_url_bytes(const std::string& url, const std::string& field,
                            const std::string& allowed_local_media_path);

// Decodes, preprocesses and places `images` (in placeholder order) into g on the calling (HTTP)
// thread: g.prompt's placeholders expand to the images' token counts (known from the patch
// grid); g.embed_rows, g.prompt_keys and g.embed_storage are set, the rows still unwritten; one
// g.prepare job per image runs the tower into them on the inference thread (scheduler.h), so
// the tower uses the model's threads without competing with its steps. No images: g is left as
// it is. `encoder` null with images: a 400 naming the first part. `encoder` must outlive g's
// jobs (serve: it outlives the scheduler).
void attach_images(GenRequest& g, const std::vector<PromptImage>& images, const ImageEncoder* encoder,
                   const std::string& allowed_local_media_path);

// `prompt` with its placeholders expanded as attach_images expands them, from each image's
// token count alone (its preprocessing grid; the tower is not run): what /tokenize reports.
// Errors as attach_images.
std::vector<int32_t> expanded_prompt(const std::vector<int32_t>& prompt,
                                     const std::vector<PromptImage>& images, const ImageEncoder* encoder,
                                     const std::string& allowed_local_media_path);

// The content key of a decoded image: never 0 (0 marks text positions).
uint64_t image_key(const vision::Image& img);

}  // namespace sickle::server
