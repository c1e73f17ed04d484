// Rendering cost of the chat-template engine for a 50-turn conversation (100 messages, with
// a tool declaration), to set against prefill of the same prompt: prints microseconds per
// render (parse excluded and included) and bytes rendered per second.
//   build/bench/template_bench [tokenizer_config.json ...]   (default: models/brown-kimi's)
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "template/template.h"

using ojson = nlohmann::ordered_json;

int main(int argc, char** argv) try {
  std::vector<std::string> configs;
  for (int i = 1; i < argc; ++i) configs.push_back(argv[i]);
  if (configs.empty())
    configs.push_back(std::string(SICKLE_SOURCE_DIR) + "/models/brown-kimi/tokenizer_config.json");
  ojson values;
  values["messages"] = ojson::array();
  values["messages"].push_back({{"role", "system"}, {"content", "You are a helpful assistant."}});
  for (int t = 0; t < 50; ++t) {
    values["messages"].push_back(
        {{"role", "user"},
         {"content", "Question " + std::to_string(t) +
                         ": explain the cache hierarchy of a modern CPU in a few sentences, please."}});
    values["messages"].push_back({{"role", "assistant"},
                                  {"content", "Answer " + std::to_string(t) +
                                                  ": registers, L1, L2 and L3 caches, then DRAM; each level "
                                                  "is larger and slower than the one before."}});
  }
  values["tools"] =
      ojson::parse(R"([{"type": "function", "function": {"name": "search", "description": "Web search",
      "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}])");
  values["add_generation_prompt"] = true;
  for (const auto& path : configs) {
    std::ifstream f(path);
    if (!f) sickle::fail("{}: cannot read", path);
    std::stringstream ss;
    ss << f.rdbuf();
    ojson cfg = ojson::parse(ss.str());
    std::string src = cfg.at("chat_template").get<std::string>();
    const int n = 200;
    auto t0 = std::chrono::steady_clock::now();
    size_t bytes = 0;
    for (int i = 0; i < n; ++i)
      bytes = sickle::tmpl::Template(src, path).render(values, ojson::object()).text().size();
    auto t1 = std::chrono::steady_clock::now();
    sickle::tmpl::Template t(src, path);
    for (int i = 0; i < n; ++i) t.render(values, ojson::object());
    auto t2 = std::chrono::steady_clock::now();
    double with_parse = std::chrono::duration<double, std::micro>(t1 - t0).count() / n;
    double render = std::chrono::duration<double, std::micro>(t2 - t1).count() / n;
    std::printf("%s: 101 messages -> %zu bytes; render %.1f us (%.1f MB/s), parse+render %.1f us\n",
                path.c_str(), bytes, render, bytes / render, with_parse);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "template_bench: %s\n", e.what());
  return 1;
}
