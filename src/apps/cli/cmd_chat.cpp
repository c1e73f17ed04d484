// sickle chat — an interactive conversation in the terminal: the model's chat format
// (tokenizer/chat.h), streaming, history kept in the KV cache, /reset and /exit.
//
// Each turn renders the whole conversation and feeds only the tokens past the common prefix
// with what the cache already holds (the cache is truncated to that prefix), so history costs
// no recomputation unless the template re-renders earlier turns differently. Reads stdin lines,
// so it also works with piped input (no prompt is printed when stdin is not a terminal).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>

#include "apps/cli/command.h"
#include "apps/cli/options.h"
#include "base/error.h"
#include "model/model.h"
#include "model/sampler.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

namespace sickle::cli {
namespace {

struct ChatArgs {
  std::string model_dir, system, thinking = "off", chat_template;
  int64_t n_predict = 1024, ctx = 0;
  int threads = 0;
  bool specials_in_content = false, allow_long_context = false;
  SamplingParams sp;
};

int chat(ChatArgs a) {
  const int64_t positions = check_context(a.ctx, a.model_dir, a.allow_long_context, "-c/--ctx");
  ModelOptions mo;
  mo.n_threads = a.threads;
  mo.max_context = a.ctx > 0 ? a.ctx : std::min<int64_t>(positions, 8192);
  auto model = Model::load(a.model_dir, mo);
  auto tok = Tokenizer::load(a.model_dir);
  apply_chat_template_option(*tok, a.chat_template);
  const int64_t V = model->vocab_size();
  const bool tty = ::isatty(0);
  const auto stop = tok->stop_ids();
  Sampler sampler(a.sp);

  nlohmann::json messages = nlohmann::json::array();
  auto reset = [&] {
    messages = nlohmann::json::array();
    if (!a.system.empty()) messages.push_back({{"role", "system"}, {"content", a.system}});
  };
  reset();
  auto seq = model->new_sequence();
  std::vector<int32_t> cached;  // the tokens the cache holds
  std::vector<float> logits;
  if (tty) std::fprintf(stderr, "sickle chat: /reset clears the conversation, /exit quits.\n");
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
      if (tty) std::fprintf(stderr, "(conversation cleared)\n");
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({{"role", "user"}, {"content", line}});
    std::vector<int32_t> prompt =
        tok->encode(render_chat(*tok, messages, nullptr, true, a.thinking == "on"), a.specials_in_content);
    // Reuse the cached prefix; feed the rest (at least one token, to get logits).
    size_t common = 0;
    while (common < cached.size() && common < prompt.size() && cached[common] == prompt[common]) ++common;
    if (common == prompt.size()) --common;
    if (int64_t(prompt.size()) + 1 > model->max_context()) {
      std::fprintf(stderr,
                   "sickle chat: the conversation (%zu tokens) fills the context of %lld tokens; /reset to "
                   "start over\n",
                   prompt.size(), (long long)model->max_context());
      messages.erase(messages.end() - 1);
      continue;
    }
    seq->truncate(int64_t(common));
    cached.resize(common);
    for (size_t b = common; b < prompt.size(); b += 512)  // chunks keep step scratch bounded
      model->forward(*seq,
                     std::span<const int32_t>(prompt.data() + b, std::min<size_t>(512, prompt.size() - b)),
                     logits);
    cached = prompt;
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
    {"chat", "Interactive chat in the terminal (/reset, /exit)", 61, [](CLI::App& sub) {
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
       sub.add_option("-c,--ctx", a->ctx,
                      "Context length (default: the model's max_position_embeddings, at most 8192)");
       add_allow_long_context(sub, a->allow_long_context);
       add_content_specials_flag(sub, a->specials_in_content);
       add_chat_template_option(sub, a->chat_template);
       return [a] { return chat(*a); };
     }});

}  // namespace
}  // namespace sickle::cli
