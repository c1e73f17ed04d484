#include "eval/data.h"

#include <algorithm>

#include "base/error.h"
#include "base/log.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

namespace sickle {

std::vector<std::vector<int32_t>> load_token_windows(const std::filesystem::path& model_dir,
                                                     const std::vector<std::filesystem::path>& files,
                                                     CalibOptions& opt, CalibReport* report,
                                                     const char* what) {
  std::unique_ptr<Tokenizer> tok;
  CalibEncoder enc;
  if (opt.format != DataFormat::kTokens) {
    tok = Tokenizer::load(model_dir);
    const Tokenizer* t = tok.get();
    enc.encode = [t](const std::string& s) {
      return t->encode(s, /*allow_special=*/false);
    };  // plain text is text
    enc.encode_chat = [t, specials = opt.specials_in_content](const nlohmann::json& m,
                                                              const nlohmann::ordered_json& tools) {
      const nlohmann::json kwargs = {{"thinking", false}, {"enable_thinking", false}};
      RenderedPrompt p =
          render_chat(*t, m, tools, /*add_generation_prompt=*/false, /*thinking=*/false, kwargs);
      refuse_images(p, "observe/eval chat-jsonl");  // the calibration forward has no image rows
      return t->encode(p, specials);
    };
    if (opt.bos_id < 0) opt.bos_id = tok->bos_id();
  }
  CalibReport local;
  CalibReport& rep = report ? *report : local;
  auto seqs = load_samples(files, opt, opt.format == DataFormat::kTokens ? nullptr : &enc, &rep);
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

void limit_scored_tokens(std::vector<std::vector<int32_t>>& windows, int64_t max_tokens) {
  if (max_tokens <= 0) return;
  int64_t left = max_tokens;
  std::vector<std::vector<int32_t>> kept;
  for (auto& w : windows) {
    if (left <= 0) break;
    if (int64_t(w.size()) - 1 > left) w.resize(size_t(left + 1));
    left -= int64_t(w.size()) - 1;
    kept.push_back(std::move(w));
  }
  windows = std::move(kept);
}

}  // namespace sickle
