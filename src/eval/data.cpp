#include "eval/data.h"

#include <algorithm>
#include <cctype>

#include "base/error.h"
#include "base/file.h"
#include "base/log.h"
#include "eval/metrics.h"
#include "io/checkpoint.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"
#include "vision/data_url.h"
#include "vision/image.h"
#include "vision/prompt.h"
#include "vision/tower.h"

namespace sickle {

namespace {

bool has_scheme(std::string_view url, std::string_view scheme) {  // scheme lower-case, with ':'
  if (url.size() < scheme.size()) return false;
  for (size_t i = 0; i < scheme.size(); ++i)
    if (char(std::tolower(static_cast<unsigned char>(url[i]))) != scheme[i]) return false;
  return true;
}

// A chat-jsonl record as calibration renders it: no generation prompt, thinking off.
RenderedPrompt render_record(const Tokenizer& tok, const nlohmann::json& m,
                             const nlohmann::ordered_json& tools) {
  const nlohmann::json kwargs = {{"thinking", false}, {"enable_thinking", false}};
  return render_chat(tok, m, tools, /*add_generation_prompt=*/false, /*thinking=*/false, kwargs);
}

// chat-jsonl records rendered like encode_chat, their image parts embedded by the vision tower of
// images.checkpoint (built on the first image) and their placeholders expanded.
std::function<CalibEncoder::Rows(const nlohmann::json&, const nlohmann::ordered_json&,
                                 const std::filesystem::path&)>
chat_with_images(const Tokenizer& tok, bool specials, WindowImages& images) {
  if (!images.storage) images.storage = std::make_shared<std::vector<std::vector<float>>>();
  auto tower = std::make_shared<std::unique_ptr<vision::VisionTower>>();
  return [&tok, specials, &images, tower](const nlohmann::json& m, const nlohmann::ordered_json& tools,
                                          const std::filesystem::path& file) {
    RenderedPrompt p = render_record(tok, m, tools);
    CalibEncoder::Rows out;
    out.ids = tok.encode(p, specials);
    if (p.images.empty()) return out;
    const Checkpoint& ck = *images.checkpoint;
    if (!ck.config_json().contains("vision_config"))
      fail(
          "{}: this model has no vision tower (config.json has no vision_config): image parts need a "
          "Kimi-K2.5 checkpoint",
          p.images.front().field);
    if (!*tower) *tower = std::make_unique<vision::VisionTower>(ck);
    vision::ImageEmbeddings emb;
    emb.hidden = (*tower)->config().text_hidden;
    for (const PromptImage& im : p.images) {
      const vision::Image img =
          vision::decode_image(image_part_bytes(im.url, im.field, file.parent_path()), im.field);
      const vision::Patches patches = vision::preprocess(img, (*tower)->media());
      emb.images.push_back((*tower)->encode(patches, images.pool));
      emb.grids.push_back({patches.grid_t, patches.grid_h, patches.grid_w});
    }
    vision::ExpandedPrompt ex = vision::expand_media_placeholders(
        out.ids, vision::media_placeholder_id(ck.config_json(), "config.json"), emb);
    out.ids = std::move(ex.tokens);
    out.rows = std::move(ex.rows);
    images.n_images += int64_t(emb.images.size());
    for (auto& v : emb.images) {
      images.n_image_tokens += int64_t(v.size()) / emb.hidden;
      images.storage->push_back(std::move(v));  // the rows stay where they are
    }
    return out;
  };
}

}  // namespace

std::string image_part_bytes(const std::string& url, const std::string& field,
                             const std::filesystem::path& base_dir) {
  namespace fs = std::filesystem;
  if (url.empty()) fail("{}: empty image url", field);
  if (vision::is_data_url(url)) return vision::decode_data_url(url, field);
  std::string path = url;
  if (has_scheme(url, "file://")) {
    path = url.substr(7);
    if (has_scheme(path, "localhost/")) path = path.substr(9);
    if (path.empty()) fail("{}: file:// URL without a path", field);
  } else if (const size_t colon = url.find(':');
             colon != std::string::npos && colon > 1 && url.find('/') > colon) {
    // A scheme (http:, https:, ftp:...): observe and eval read local files only.
    fail("{}: '{}' URLs are not read (never the network): give a data:image/...;base64 URL or a local path",
         field, url.substr(0, colon));
  }
  fs::path p(path);
  if (p.is_relative()) p = base_dir / p;
  try {
    return read_file(p);
  } catch (const Error& e) {
    fail("{}: {}", field, e.what());  // "messages[i].content[j]: DIR/x.png: cannot read"
  }
}

std::vector<std::vector<int32_t>> load_token_windows(const std::filesystem::path& model_dir,
                                                     const std::vector<std::filesystem::path>& files,
                                                     CalibOptions& opt, CalibReport* report, const char* what,
                                                     WindowImages* images) {
  std::unique_ptr<Tokenizer> tok;
  CalibEncoder enc;
  if (opt.format != DataFormat::kTokens) {
    tok = Tokenizer::load(model_dir);
    const Tokenizer* t = tok.get();
    enc.encode = [t](const std::string& s) {
      return t->encode(s, /*allow_special=*/false);
    };  // plain text is text
    enc.encode_chat = [t, specials = opt.specials_in_content, what](const nlohmann::json& m,
                                                                    const nlohmann::ordered_json& tools) {
      RenderedPrompt p = render_record(*t, m, tools);
      refuse_images(p, what);  // the caller's forward takes no image rows
      return t->encode(p, specials);
    };
    if (images) enc.encode_chat_rows = chat_with_images(*t, opt.specials_in_content, *images);
    if (opt.bos_id < 0) opt.bos_id = tok->bos_id();
  }
  CalibReport local;
  CalibReport& rep = report ? *report : local;
  auto seqs = load_samples(files, opt, opt.format == DataFormat::kTokens ? nullptr : &enc, &rep,
                           images ? &images->rows : nullptr);
  if (images && images->n_images)
    log_info("{}: {} image(s), {} image tokens, embedded by the vision tower", what, images->n_images,
             images->n_image_tokens);
  log_info(
      "{}: {} documents, {} tokens -> {} sequences of <= {} tokens; shard {}/{}: {} sequences, {} tokens "
      "used; "
      "{} documents ({} tokens) dropped as too long, {} split",
      what, rep.n_documents, rep.tokens_total, rep.n_sequences_total, opt.seq_len, opt.shard_index,
      opt.n_shards, rep.n_sequences, rep.tokens_used, rep.n_dropped, rep.tokens_dropped, rep.n_split);
  return seqs;
}

std::vector<uint8_t> line_end_tokens(const std::filesystem::path& model_dir, int64_t vocab) {
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = Tokenizer::load(model_dir);
  } catch (const Error& e) {
    log_info("no tokenizer in {} ({}): no next-line exact-match metric", model_dir.string(), e.what());
    return {};
  }
  std::vector<uint8_t> ends(size_t(std::max<int64_t>(vocab, 0)), 0);
  const int64_t n = std::min(vocab, tok->vocab_size());
  for (int32_t id = 0; id < n; ++id)
    if (!tok->is_special(id) && tok->token_text(id).find('\n') != std::string::npos) ends[size_t(id)] = 1;
  return ends;
}

void clamp_seq_len(CalibOptions& opt, int64_t ctx, const char* what) {
  if (opt.seq_len <= ctx) return;
  log_warn("{}: --seq-len {} exceeds the model's context {}: using {}", what, opt.seq_len, ctx, ctx);
  opt.seq_len = ctx;
}

void limit_scored_tokens(std::vector<std::vector<int32_t>>& windows, int64_t max_tokens,
                         std::vector<std::vector<const float*>>* rows) {
  if (max_tokens <= 0) return;
  int64_t left = max_tokens;
  size_t kept = 0;
  for (; kept < windows.size() && left > 0; ++kept) {
    auto& w = windows[kept];
    std::vector<const float*>* r = rows && !(*rows)[kept].empty() ? &(*rows)[kept] : nullptr;
    for (size_t p = 0; p + 1 < w.size(); ++p) {
      if (r && !scored_position(*r, p)) continue;
      if (left == 0) {  // p is the first prediction over the limit: keep the tokens before it
        w.resize(p + 1);
        if (r) r->resize(p + 1);
        break;
      }
      --left;
    }
  }
  windows.resize(kept);
  if (rows) rows->resize(kept);
}

}  // namespace sickle
