// sickle chat — an interactive conversation in the terminal: the model's chat format
// (tokenizer/chat.h), streaming, history kept in the KV cache, /image, /reset and /exit.
//
// Each turn renders the whole conversation and feeds only the tokens past the common prefix
// with what the cache already holds (the cache is truncated to that prefix), so history costs
// no recomputation unless the template re-renders earlier turns differently. Reads stdin lines,
// so it also works with piped input (no prompt is printed when stdin is not a terminal).
//
// Images (a model with a vision tower, Kimi-K2.5): `/image FILE` decodes and encodes FILE at
// once (the tower runs on the model's threads) and attaches it to the next user message, as an
// image_url part before its text; the message's media placeholders expand to the images' tokens
// and take their projected rows (vision/prompt.h), for this and every later turn. The cached
// prefix is matched on (token, image) so a different image never reuses another's cache.
// `-v` logs each turn's prompt size, image tokens and cache reuse.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>

#include "apps/cli/command.h"
#include "apps/cli/options.h"
#include "base/error.h"
#include "base/log.h"
#include "io/checkpoint.h"
#include "model/model.h"
#include "model/sampler.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"
#include "vision/image.h"
#include "vision/prompt.h"
#include "vision/tower.h"

namespace sickle::cli {
namespace {

struct ChatArgs {
  std::string model_dir, system, thinking = "off", chat_template;
  int64_t n_predict = 1024, ctx = 0;
  int threads = 0;
  bool bf16_acts = false;
  bool specials_in_content = false, allow_long_context = false;
  SamplingParams sp;
};

// The images of a chat session: those of the messages sent (in conversation order, the order
// of their placeholders) and those waiting for the next user message.
struct ChatImages {
  struct Pending {
    std::string file;
    std::vector<float> rows;  // [tokens, text hidden]
    int64_t tokens = 0;
  };
  std::unique_ptr<vision::VisionTower> tower;  // null: the model has no vision tower
  int32_t media_id = -1;
  vision::ImageEmbeddings sent;     // the rows of the sent messages' images, in order
  std::vector<uint64_t> sent_keys;  // unique within the session: image positions in the cache
  std::vector<Pending> pending;
  uint64_t next_key = 1;

  // `/image ARG`: attach, or list the pending images (no ARG). Messages go to stderr.
  void command(const std::string& arg, Model& model, const std::string& model_dir) {
    if (arg.empty()) {
      if (pending.empty()) std::fprintf(stderr, "(no image attached; /image FILE attaches one)\n");
      for (size_t i = 0; i < pending.size(); ++i)
        std::fprintf(stderr, "(image %zu: %s, %lld tokens)\n", i + 1, pending[i].file.c_str(),
                     (long long)pending[i].tokens);
      return;
    }
    if (!tower) {
      std::fprintf(stderr,
                   "sickle chat: /image: %s has no vision tower (config.json has no vision_config); images "
                   "need a vision model such as Kimi-K2.5\n",
                   model_dir.c_str());
      return;
    }
    try {
      const vision::Patches p = vision::preprocess(vision::read_image_file(arg), tower->media());
      pending.push_back(Pending{arg, tower->encode(p, &model.pool()), p.tokens});
      std::fprintf(stderr, "(image %s: %lld tokens, attached to your next message)\n", arg.c_str(),
                   (long long)p.tokens);
    } catch (const Error& e) {
      std::fprintf(stderr, "sickle chat: /image %s: %s\n", arg.c_str(), e.what());
    }
  }

  // The user message's content: the pending images as image_url parts, then the text. The
  // pending images become sent ones.
  nlohmann::json send(const std::string& text) {
    if (pending.empty()) return text;
    nlohmann::json parts = nlohmann::json::array();
    for (Pending& im : pending) {
      parts.push_back({{"type", "image_url"}, {"image_url", {{"url", "file://" + im.file}}}});
      sent.images.push_back(std::move(im.rows));
      sent_keys.push_back(next_key++);
    }
    pending.clear();
    parts.push_back({{"type", "text"}, {"text", text}});
    return parts;
  }
  // Back to `n` sent images (a message that could not be sent is dropped with its images).
  void unsend(size_t n) {
    sent.images.resize(n);
    sent_keys.resize(n);
  }
  void clear() {
    unsend(0);
    pending.clear();
  }

  // The prompt's placeholders expanded to the sent images' tokens, their rows, and the content
  // key of each position (0: text).
  vision::ExpandedPrompt expand(const std::vector<int32_t>& prompt, std::vector<uint64_t>& keys) const {
    vision::ExpandedPrompt ex;
    if (sent.images.empty()) {
      ex.tokens = prompt;
    } else {
      ex = vision::expand_media_placeholders(prompt, media_id, sent);
    }
    keys.assign(ex.tokens.size(), 0);
    for (size_t j = 0; j < ex.image.size(); ++j)
      if (ex.image[j] >= 0) keys[j] = sent_keys[size_t(ex.image[j])];
    return ex;
  }
};

int chat(ChatArgs a) {
  const int64_t positions = check_context(a.ctx, a.model_dir, a.allow_long_context, "-c/--ctx");
  ModelOptions mo;
  mo.n_threads = a.threads;
  mo.bf16_activations = a.bf16_acts;
  mo.max_context = a.ctx > 0 ? a.ctx : std::min<int64_t>(positions, 8192);
  auto model = Model::load(a.model_dir, mo);
  auto tok = Tokenizer::load(a.model_dir);
  apply_chat_template_option(*tok, a.chat_template);
  const int64_t V = model->vocab_size();
  const bool tty = ::isatty(0);
  const auto stop = tok->stop_ids();
  Sampler sampler(a.sp);
  ChatImages images;
  const nlohmann::json& config = model->checkpoint().config_json();
  if (config.contains("vision_config")) {
    images.tower = std::make_unique<vision::VisionTower>(model->checkpoint());
    images.media_id = vision::media_placeholder_id(config, a.model_dir + "/config.json");
    images.sent.hidden = images.tower->config().text_hidden;
  }

  nlohmann::json messages = nlohmann::json::array();
  auto reset = [&] {
    messages = nlohmann::json::array();
    if (!a.system.empty()) messages.push_back({{"role", "system"}, {"content", a.system}});
    images.clear();
  };
  reset();
  auto seq = model->new_sequence();
  std::vector<int32_t> cached;        // the tokens the cache holds
  std::vector<uint64_t> cached_keys;  // their content keys (ChatImages::expand)
  std::vector<float> logits;
  if (tty)
    std::fprintf(stderr, "sickle chat: /reset clears the conversation, /exit quits%s.\n",
                 images.tower ? ", /image FILE attaches an image to your next message" : "");
  std::string line;
  for (;;) {
    if (tty) {
      std::fprintf(stderr, "> ");
      std::fflush(stderr);
    }
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      reset();
      seq->truncate(0);
      cached.clear();
      cached_keys.clear();
      if (tty) std::fprintf(stderr, "(conversation cleared)\n");
      continue;
    }
    if (line == "/image" || line.rfind("/image ", 0) == 0) {
      std::string arg = line.substr(6);  // the file, without surrounding blanks
      arg.erase(0, arg.find_first_not_of(" \t"));
      arg.erase(arg.find_last_not_of(" \t\r") + 1);
      images.command(arg, *model, a.model_dir);
      continue;
    }
    if (line.empty()) continue;
    const size_t n_sent = images.sent.images.size();
    messages.push_back({{"role", "user"}, {"content", images.send(line)}});
    auto drop_message = [&] {
      messages.erase(messages.end() - 1);
      if (images.sent.images.size() > n_sent)
        std::fprintf(stderr, "(its %zu image(s) were dropped with it)\n", images.sent.images.size() - n_sent);
      images.unsend(n_sent);
    };
    std::vector<uint64_t> keys;
    vision::ExpandedPrompt ex;
    try {
      ex = images.expand(
          tok->encode(render_chat(*tok, messages, nullptr, true, a.thinking == "on"), a.specials_in_content),
          keys);
    } catch (const Error& e) {
      std::fprintf(stderr, "sickle chat: %s\n", e.what());
      drop_message();
      continue;
    }
    const std::vector<int32_t>& prompt = ex.tokens;
    if (int64_t(prompt.size()) + 1 > model->max_context()) {
      std::fprintf(stderr,
                   "sickle chat: the conversation (%zu tokens) fills the context of %lld tokens; /reset to "
                   "start over\n",
                   prompt.size(), (long long)model->max_context());
      drop_message();
      continue;
    }
    // Reuse the cached prefix (the same tokens and, at image positions, the same image); feed the
    // rest (at least one token, to get logits).
    size_t common = 0;
    while (common < cached.size() && common < prompt.size() && cached[common] == prompt[common] &&
           cached_keys[common] == keys[common])
      ++common;
    if (common == prompt.size()) --common;
    const size_t n_image = keys.size() - size_t(std::count(keys.begin(), keys.end(), uint64_t{0}));
    log_debug("chat: prompt {} tokens ({} of images), {} reused from the cache, {} fed", prompt.size(),
              n_image, common, prompt.size() - common);
    seq->truncate(int64_t(common));
    cached.resize(common);
    for (size_t b = common; b < prompt.size(); b += 512) {  // chunks keep step scratch bounded
      const size_t n = std::min<size_t>(512, prompt.size() - b);
      std::span<const float* const> rows;
      if (!images.sent.images.empty()) rows = std::span<const float* const>(ex.rows.data() + b, n);
      model->forward(*seq, std::span<const int32_t>(prompt.data() + b, n), logits, false, rows);
    }
    cached = prompt;
    cached_keys = keys;
    StreamDecoder sd(*tok);
    std::vector<int32_t> reply;
    for (int64_t i = 0; i < a.n_predict; ++i) {
      int32_t id = sampler.sample(logits.data(), V);
      if (std::find(stop.begin(), stop.end(), id) != stop.end()) break;
      reply.push_back(id);
      std::string piece = sd.push(id);
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      if (seq->n_past() + 1 >= model->max_context()) break;
      model->forward(*seq, std::span<const int32_t>(&id, 1), logits);
      cached.push_back(id);
      cached_keys.push_back(0);
    }
    std::string rest = sd.flush();
    std::fwrite(rest.data(), 1, rest.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    // The assistant turn as the template will render it next time (reasoning split off).
    std::string text = tok->decode(reply, /*skip_special=*/false);
    nlohmann::json turn = {{"role", "assistant"}, {"content", text}};
    auto think_end = text.find("</think>");
    if (think_end != std::string::npos) {
      std::string reasoning = text.substr(0, think_end);
      if (reasoning.rfind("<think>", 0) == 0) reasoning = reasoning.substr(7);
      turn["reasoning_content"] = reasoning;
      turn["content"] = text.substr(think_end + 8);
    }
    messages.push_back(turn);
  }
  return 0;
}

Registrar reg(
    {"chat", "Interactive chat in the terminal (/image FILE, /reset, /exit)", 61, [](CLI::App& sub) {
       auto a = std::make_shared<ChatArgs>();
       sub.add_option("-m,--model", a->model_dir, "Model directory (with a tokenizer)")->required();
       sub.add_option("--system", a->system, "System prompt");
       sub.add_option("-n,--n-predict", a->n_predict, "Most tokens per reply")->capture_default_str();
       sub.add_option("--temperature", a->sp.temperature, "0 = greedy")->capture_default_str();
       sub.add_option("--top-p", a->sp.top_p, "Nucleus sampling mass")->capture_default_str();
       sub.add_option("--top-k", a->sp.top_k, "Keep the k most likely (0 = off)")->capture_default_str();
       sub.add_option("--min-p", a->sp.min_p, "Drop tokens below min_p x p_max (0 = off)")
           ->capture_default_str();
       sub.add_option("--seed", a->sp.seed, "Sampling seed")->capture_default_str();
       sub.add_option("--thinking", a->thinking, "Open a <think> block (on) or an empty one (off)")
           ->check(CLI::IsMember({"on", "off"}))
           ->capture_default_str();
       add_threads_option(sub, a->threads, "-t,--threads");
       add_bf16_acts_option(sub, a->bf16_acts);
       sub.add_option("-c,--ctx", a->ctx,
                      "Context length (default: the model's max_position_embeddings, at most 8192)");
       add_allow_long_context(sub, a->allow_long_context);
       add_content_specials_flag(sub, a->specials_in_content);
       add_chat_template_option(sub, a->chat_template);
       return [a] { return chat(*a); };
     }});

}  // namespace
}  // namespace sickle::cli
