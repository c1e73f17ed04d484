// sickle serve — an OpenAI-compatible HTTP server with continuous batching (server/).
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include "apps/cli/command.h"
#include "apps/cli/options.h"
#include "base/error.h"
#include "base/log.h"
#include "model/model.h"
#include "server/codec.h"
#include "server/http.h"
#include "server/media.h"
#include "server/metrics.h"
#include "server/openai.h"
#include "server/scheduler.h"
#include "server/scripted_engine.h"
#include "tokenizer/tokenizer.h"

namespace sickle::cli {
namespace {

struct ServeArgs {
  std::string model_dir, host = "127.0.0.1", api_key;
  std::vector<std::string> served_names;
  int port = 8000, threads = 0, http_threads = 64;
  bool bf16_acts = false;
  int64_t max_num_seqs = 8, max_model_len = 0, prefill_chunk = 256, kv_cache_mb = 0, prefix_cache = 32;
  double max_body_mb = 8;
  bool allow_long_context = false;
  server::HttpOptions http;  // connection bounds and timeouts, --metrics-open
  std::string thinking = "on";
  std::string script;  // protocol tests: scripted replies instead of the model
  bool specials_in_content = false;
  std::string generation_config = "auto";
  std::string chat_template;  // a template file instead of the checkpoint's
};

// --generation-config: the sampling defaults requests get when they leave a field out (vLLM):
// "auto" reads the model's generation_config.json, "vllm" / "none" use none, another value is
// a directory holding a generation_config.json.
nlohmann::json sampling_defaults(const std::string& mode, const std::string& model_dir) {
  if (mode == "vllm" || mode == "none") return nlohmann::json::object();
  const std::filesystem::path dir =
      mode == "auto" ? std::filesystem::path(model_dir) : std::filesystem::path(mode);
  const std::filesystem::path file = dir / "generation_config.json";
  if (!std::filesystem::exists(file)) {
    if (mode != "auto") fail("--generation-config: {} does not exist", file.string());
    return nlohmann::json::object();
  }
  std::ifstream in(file);
  nlohmann::json gc = nlohmann::json::parse(in, nullptr, false);
  if (gc.is_discarded() || !gc.is_object())
    fail("--generation-config: {} is not a JSON object", file.string());
  nlohmann::json d = server::sampling_defaults_from_generation_config(gc);
  if (!d.empty())
    log_info(
        "serve: sampling defaults from {} (requests may override; --generation-config vllm to ignore): {}",
        file.string(), d.dump());
  return d;
}

int run_serve(const ServeArgs& a) {
  // Signals go to one waiting thread (sigwait), not to whichever thread runs: stop() is not
  // async-signal-safe. Broken client sockets must not kill the server.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  if (a.script.empty()) check_context(a.max_model_len, a.model_dir, a.allow_long_context, "--max-model-len");
  log_info("serve: loading {}", a.model_dir);
  auto tok = Tokenizer::load(a.model_dir);
  apply_chat_template_option(*tok, a.chat_template);
  auto codec = server::make_codec(*tok, a.specials_in_content);
  std::unique_ptr<Model> model;
  std::unique_ptr<server::Engine> engine;
  std::unique_ptr<server::ImageEncoder> images;  // the vision tower, when the model has one
  if (!a.script.empty()) {
    std::ifstream in(a.script);
    if (!in) fail("--script: cannot open {}", a.script);
    nlohmann::json rules = nlohmann::json::parse(in, nullptr, false);
    if (rules.is_discarded()) fail("--script: {} is not valid JSON", a.script);
    engine = server::make_scripted_engine(*codec, rules, a.max_model_len > 0 ? a.max_model_len : 8192);
    log_info("serve: SCRIPTED replies from {} (protocol testing; the model is not loaded)", a.script);
  } else {
    ModelOptions mo;
    mo.n_threads = a.threads;
    mo.bf16_activations = a.bf16_acts;
    mo.max_context = a.max_model_len;
    model = Model::load(a.model_dir, mo);
    engine = server::make_engine(*model);
    images = server::make_image_encoder(model->checkpoint());
    if (images) log_info("serve: vision tower loaded: image_url parts are accepted");
  }

  server::SchedulerOptions so;
  so.max_num_seqs = a.max_num_seqs;
  // Default: the model's context, capped at 32768 tokens (each sequence may reserve this much
  // of the KV budget; raise it explicitly for longer contexts).
  so.max_model_len = a.max_model_len > 0 ? a.max_model_len : std::min<int64_t>(engine->max_context(), 32768);
  so.prefill_chunk = a.prefill_chunk;
  so.kv_budget_bytes = uint64_t(a.kv_cache_mb) << 20;
  so.prefix_cache_entries = a.prefix_cache;
  server::HttpOptions ho = a.http;
  ho.host = a.host;
  ho.port = a.port;
  ho.api_key = a.api_key;
  // As vLLM: the first --served-model-name is the id responses carry, the others are aliases.
  ho.model_name = a.served_names.empty()
                      ? std::filesystem::path(a.model_dir).lexically_normal().filename().string()
                      : a.served_names.front();
  if (ho.model_name.empty())
    ho.model_name = std::filesystem::path(a.model_dir).parent_path().filename().string();
  if (a.served_names.size() > 1) ho.model_aliases.assign(a.served_names.begin() + 1, a.served_names.end());
  server::Metrics metrics(ho.model_name);
  server::Scheduler sched(*engine, so, &metrics);
  ho.version = SICKLE_VERSION;
  ho.sampling_defaults = sampling_defaults(a.generation_config, a.model_dir);
  ho.max_body_bytes = size_t(a.max_body_mb * 1024 * 1024);
  ho.n_http_threads = a.http_threads;
  if (a.thinking != "on" && a.thinking != "off") fail("--thinking: expected on or off, got '{}'", a.thinking);
  ho.default_thinking = a.thinking == "on";
  server::HttpServer http(sched, *codec, metrics, ho, images.get());
  int port = http.bind();
  const auto& opt = sched.options();
  log_info("serve: model '{}', max-num-seqs {}, max-model-len {}, prefill chunk {}, KV budget {}",
           ho.model_name, opt.max_num_seqs, opt.max_model_len, opt.prefill_chunk,
           format_bytes(double(opt.kv_budget_bytes)));
  // The line scripts wait for (with --port 0 it is the only way to learn the port).
  std::printf("sickle serve: listening on http://%s:%d\n", a.host.c_str(), port);
  std::fflush(stdout);

  std::thread sig([&] {
    int s = 0;
    sigwait(&set, &s);
    log_info("serve: signal {}, stopping", s);
    http.stop();
  });
  http.listen();
  sched.stop();
  // listen() also returns on stop() from elsewhere; wake the signal thread so it can be joined.
  pthread_kill(sig.native_handle(), SIGTERM);
  sig.join();
  return 0;
}

const Registrar reg{Command{
    "serve",
    "OpenAI-compatible HTTP server (chat, completions, tools, reasoning, SSE) with continuous batching", 60,
    [](CLI::App& sub) -> std::function<int()> {
      auto a = std::make_shared<ServeArgs>();
      sub.add_option("-m,--model", a->model_dir, "Model directory (config.json, safetensors, tokenizer)")
          ->required();
      sub.add_option("--host", a->host, "Address to bind (loopback by default)")->capture_default_str();
      sub.add_option("--port", a->port, "Port (0 = pick a free one and print it)")->capture_default_str();
      sub.add_option("--api-key", a->api_key, "Require `Authorization: Bearer KEY` on /v1/* and /metrics");
      sub.add_flag("--metrics-open", a->http.metrics_open,
                   "Serve /metrics without the key even with --api-key");
      sub.add_option(
             "--served-model-name", a->served_names,
             "Model id(s) clients may send as `model` (repeatable or space-separated; the first is the id "
             "responses carry; default: the directory name). `model` may also be omitted")
          ->expected(1, 16);
      sub.add_option("--generation-config", a->generation_config,
                     "Sampling defaults for fields a request leaves out (temperature, top_p, top_k, min_p, "
                     "repetition_penalty): auto = the model's generation_config.json, vllm|none = none, or a "
                     "directory holding a generation_config.json")
          ->capture_default_str();
      sub.add_flag(
          "--strict-api", a->http.strict_api,
          "Refuse unknown request fields with 400 (default: ignore them, logging each name once, as vLLM)");
      sub.add_option(
             "--allowed-origins", a->http.allowed_origins,
             "CORS: browser origins allowed to call the API, e.g. https://app.example.com, or '*' for any "
             "(default: none, no CORS headers)")
          ->expected(1, 64)
          ->delimiter(',');
      sub.add_option(
             "--allowed-local-media-path", a->http.allowed_local_media_path,
             "Let image_url parts read file:///... images under DIR (symlinks resolved; the real path "
             "must stay inside DIR). Default: off; data:image/...;base64 URLs always work, the "
             "network is never used")
          ->check(CLI::ExistingDirectory)
          ->option_text("DIR");
      sub.add_option("--max-num-seqs", a->max_num_seqs, "Sequences decoded together per step")
          ->check(CLI::Range(int64_t(1), int64_t(4096)))
          ->capture_default_str();
      sub.add_option("--max-model-len", a->max_model_len,
                     "Prompt + completion tokens per request (0 = the model's, at most 32768)")
          ->capture_default_str();
      add_allow_long_context(sub, a->allow_long_context);
      sub.add_option("--prefill-chunk", a->prefill_chunk,
                     "Prompt tokens per step, over all sequences (chunked prefill)")
          ->check(CLI::Range(int64_t(1), int64_t(1) << 20))
          ->capture_default_str();
      sub.add_option("--kv-cache-mb", a->kv_cache_mb,
                     "KV cache budget in MiB (0 = max-num-seqs sequences of max-model-len)")
          ->capture_default_str();
      sub.add_option("--prefix-cache", a->prefix_cache, "Finished sequences kept for prefix reuse (0 = off)")
          ->capture_default_str();
      add_threads_option(sub, a->threads);
      add_bf16_acts_option(sub, a->bf16_acts);
      sub.add_option("--http-threads", a->http_threads,
                     "HTTP worker threads (a request holds one while served, a stream to its end; idle or "
                     "slow connections none)")
          ->check(CLI::Range(1, 4096))
          ->capture_default_str();
      sub.add_option("--max-body-mb", a->max_body_mb,
                     "Largest request body accepted, chunked or not (413 beyond)")
          ->capture_default_str();
      sub.add_option("--max-connections", a->http.max_connections, "Open connections in total (503 beyond)")
          ->check(CLI::Range(1, 1 << 20))
          ->capture_default_str();
      sub.add_option("--max-connections-per-ip", a->http.max_connections_per_ip,
                     "Open connections per client address (503 beyond; 0 = only --max-connections)")
          ->check(CLI::Range(0, 1 << 20))
          ->capture_default_str();
      sub.add_option("--header-timeout", a->http.header_timeout_s,
                     "Seconds for a whole request head, from accept or (kept-alive) its first byte; 408 "
                     "beyond. Slow heads hold no thread")
          ->check(CLI::Range(0.1, 3600.0))
          ->capture_default_str();
      sub.add_option("--body-timeout", a->http.body_timeout_s,
                     "Seconds for a whole request body, after its head")
          ->check(CLI::Range(0.1, 3600.0))
          ->capture_default_str();
      sub.add_option("--thinking", a->thinking,
                     "Default for chat requests without chat_template_kwargs.thinking: on|off")
          ->capture_default_str();
      add_content_specials_flag(sub, a->specials_in_content);  // /v1/completions prompts always parse them
      add_chat_template_option(sub, a->chat_template);
      sub.add_option("--script", a->script,
                     "Testing: reply from a JSON script [{when, reply}] instead of running the model "
                     "(tokenizer from -m)");
      return [a] { return run_serve(*a); };
    }}};

}  // namespace
}  // namespace sickle::cli
