// sickle chat-template — print the exact prompt the checkpoint's own chat template makes of a
// conversation (transformers' apply_chat_template(tokenize=False)); tokenizer files suffice.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "apps/cli/command.h"
#include "base/error.h"
#include "base/file.h"
#include "template/chat_template.h"

namespace sickle::cli {
namespace {

using ojson = nlohmann::ordered_json;

ojson read_json_file(const std::string& path, const char* flag) {
  const std::string text = read_file(path, flag);
  try {
    return ojson::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{} {}: not JSON: {}", flag, path, e.what());
  }
}

Registrar reg{Command{
    "chat-template", "Print the prompt the model's own chat template renders for a conversation", 55,
    [](CLI::App& sub) -> std::function<int()> {
      struct Args {
        std::string model_dir, messages, tools, template_file;
        std::vector<std::string> sets;
        bool no_generation_prompt = false, spans = false;
      };
      auto a = std::make_shared<Args>();
      sub.add_option(
             "-m,--model", a->model_dir,
             "Model directory: chat_template.jinja, or tokenizer_config.json with `chat_template` (no "
             "weights needed)")
          ->required();
      sub.add_option("--messages", a->messages,
                     "JSON file: the OpenAI-style message list [{\"role\": ..., \"content\": ...}, ...]")
          ->required();
      sub.add_option("--tools", a->tools,
                     "JSON file: the tool list [{\"type\": \"function\", \"function\": {...}}]");
      sub.add_flag("--no-generation-prompt", a->no_generation_prompt,
                   "Do not end with the assistant's turn opener (add_generation_prompt=False)");
      sub.add_option("--set", a->sets,
                     "KEY=VALUE chat_template_kwargs entry (repeatable), e.g. --set thinking=false or "
                     "--set enable_thinking=false; VALUE is JSON, or a plain string when it is not");
      sub.add_option("--template", a->template_file,
                     "Render this Jinja file instead of the checkpoint's template");
      sub.add_flag(
          "--spans", a->spans,
          "Print the prompt as JSON spans [{\"text\", \"value\"}]: value=true marks message data, whose "
          "special-token strings stay plain text when encoded");
      sub.footer(
          "Example:\n  sickle chat-template -m models/brown-kimi --messages conv.json --set thinking=false\n"
          "The output is byte for byte what python's transformers renders (tokenize=False); no newline is "
          "added.");
      return [a]() {
        ChatRequest req;
        req.messages = read_json_file(a->messages, "--messages");
        if (!a->tools.empty()) req.tools = read_json_file(a->tools, "--tools");
        req.add_generation_prompt = !a->no_generation_prompt;
        for (const auto& kv : a->sets) {
          size_t eq = kv.find('=');
          if (eq == std::string::npos || eq == 0) fail("--set {}: expected KEY=VALUE", kv);
          std::string v = kv.substr(eq + 1);
          ojson val = ojson::parse(v, nullptr, /*allow_exceptions=*/false);
          req.kwargs[kv.substr(0, eq)] = val.is_discarded() ? ojson(v) : val;
        }
        ojson cfg = read_tokenizer_config(a->model_dir);
        ChatTemplateSource src;
        if (!a->template_file.empty()) {
          src = {read_file(a->template_file, "--template"), a->template_file};
        } else if (auto found = find_chat_template(a->model_dir, cfg, !req.tools.is_null())) {
          src = *found;
        } else {
          fail(
              "{}: no chat template (neither chat_template.jinja nor tokenizer_config.json chat_template); "
              "pass one with --template FILE",
              a->model_dir);
        }
        tmpl::Template t(src.source, src.origin);
        RenderedPrompt p = render_chat_template(t, cfg, req);
        if (a->spans) {
          ojson out = ojson::array();
          for (const auto& s : p.spans) out.push_back({{"text", s.text}, {"value", s.is_value}});
          std::printf("%s\n", out.dump(1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
        } else {
          std::string text = p.text();
          std::fwrite(text.data(), 1, text.size(), stdout);
        }
        return 0;
      };
    }}};

}  // namespace
}  // namespace sickle::cli
