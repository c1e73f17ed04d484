// sickle/server/http.cpp — see http.h.
//
// Debian's cpp-httplib is a compiled library built with these options; the header's class
// layouts depend on them, so they must match (cpp-httplib.pc Cflags).
#define CPPHTTPLIB_OPENSSL_SUPPORT
#define CPPHTTPLIB_ZLIB_SUPPORT
#define CPPHTTPLIB_BROTLI_SUPPORT
#include <httplib.h>

#include "server/http.h"

#include <fmt/format.h>

#include <chrono>
#include <random>

#include "base/error.h"
#include "base/log.h"
#include "server/openai.h"
#include "server/output_parser.h"
#include "server/peer.h"

#include <pthread.h>
#include <sched.h>

namespace sickle::server {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kPoll = std::chrono::milliseconds(100);

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

uint64_t random_seed() {
  thread_local std::mt19937_64 rng{std::random_device{}() ^ uint64_t(Clock::now().time_since_epoch().count())};
  return rng();
}

void send_json(httplib::Response& res, int status, const json& j) {
  res.status = status;
  res.set_content(dump_json(j), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) { send_json(res, e.status, e.to_json()); }

SamplingParams sampling_of(const SamplingFields& r) {
  SamplingParams p;
  p.temperature = float(r.temperature);
  p.top_p = float(r.top_p);
  p.top_k = int(r.top_k);
  p.min_p = float(r.min_p);
  p.seed = r.seed ? *r.seed : random_seed();
  return p;
}

// HTTP threads wake for every token of every stream; under the default policy each wakeup may
// preempt the inference thread. SCHED_BATCH (any user may set it) disfavors them at wakeup.
void batch_priority() {
  static thread_local bool done = [] {
    sched_param p{};
    pthread_setschedparam(pthread_self(), SCHED_BATCH, &p);
    return true;
  }();
  (void)done;
}

// One chat generation, consumed by the streaming and the non-streaming paths alike.
class ChatRun {
 public:
  // `forced`: the reply's opening that the prompt forced (ToolForcing::prefix), read first.
  ChatRun(const TextCodec& codec, const MarkerIds& ids, std::shared_ptr<GenHandle> h, const ChatRequest& r,
          bool start_in_reasoning, std::string_view forced = {})
      : codec_(codec), h_(std::move(h)), out_(codec, ids, r.stop, start_in_reasoning),
        top_logprobs_(r.logprobs ? r.top_logprobs : -1), stop_ids_(codec.stop_ids()) {
    if (!forced.empty()) out_.prime(forced, forced_);
  }
  ~ChatRun() { h_->cancel(); }  // no-op once finished; frees the sequence if the client left

  // Waits for tokens; appends what they produce. Returns false once the generation is over
  // (then finish_reason/usage/error are set).
  bool step(OutputDelta& delta, std::vector<TokenLogprob>& lps) {
    if (done_) return false;
    if (!forced_.empty()) delta.append(std::exchange(forced_, {}));
    std::vector<GenToken> toks;
    bool alive = h_->next(toks, kPoll);
    for (auto& t : toks) {
      ++n_completion_;
      const bool is_stop = std::find(stop_ids_.begin(), stop_ids_.end(), t.id) != stop_ids_.end();
      if (top_logprobs_ >= 0 && !is_stop) {
        TokenLogprob lp{codec_.token_text(t.id), t.logprob, {}};
        for (auto& [id, l] : t.top) lp.top.push_back(TokenLogprob{codec_.token_text(id), l, {}});
        lps.push_back(std::move(lp));
      }
      if (!out_.push(t.id, delta)) {
        stopped_by_string_ = true;
        h_->cancel();
        alive = false;
        break;
      }
    }
    if (alive) return true;
    out_.finish(delta);
    Finish f = h_->finish();
    if (f == Finish::kError) error_ = h_->error().empty() ? "generation failed" : h_->error();
    finish_reason_ = stopped_by_string_ || f == Finish::kStop ? "stop" : f == Finish::kLength ? "length" : "abort";
    if (!out_.parser().tool_calls().empty() && finish_reason_ == "stop") finish_reason_ = "tool_calls";
    done_ = true;
    return false;
  }

  Usage usage() const { return Usage{h_->n_prompt(), n_completion_, h_->n_cached()}; }
  const std::string& finish_reason() const { return finish_reason_; }
  const std::string& error() const { return error_; }
  const OutputParser& parser() const { return out_.parser(); }
  void cancel() { h_->cancel(); }

 private:
  const TextCodec& codec_;
  std::shared_ptr<GenHandle> h_;
  ChatOutput out_;
  int64_t top_logprobs_;
  std::vector<int32_t> stop_ids_;
  int64_t n_completion_ = 0;
  bool stopped_by_string_ = false, done_ = false;
  std::string finish_reason_, error_;
  OutputDelta forced_;  // deltas of the forced opening, sent with the first step's
};

class TextRun {
 public:
  TextRun(const TextCodec& codec, std::shared_ptr<GenHandle> h, const CompletionRequest& r)
      : h_(std::move(h)), out_(codec, r.stop) {}
  ~TextRun() { h_->cancel(); }
  bool step(std::string& text) {
    if (done_) return false;
    std::vector<GenToken> toks;
    bool alive = h_->next(toks, kPoll);
    for (auto& t : toks) {
      ++n_completion_;
      if (!out_.push(t.id, text)) {
        stopped_by_string_ = true;
        h_->cancel();
        alive = false;
        break;
      }
    }
    if (alive) return true;
    out_.finish(text);
    Finish f = h_->finish();
    if (f == Finish::kError) error_ = h_->error().empty() ? "generation failed" : h_->error();
    finish_reason_ = stopped_by_string_ || f == Finish::kStop ? "stop" : f == Finish::kLength ? "length" : "abort";
    done_ = true;
    return false;
  }
  Usage usage() const { return Usage{h_->n_prompt(), n_completion_, h_->n_cached()}; }
  const std::string& finish_reason() const { return finish_reason_; }
  const std::string& error() const { return error_; }
  void cancel() { h_->cancel(); }

 private:
  std::shared_ptr<GenHandle> h_;
  TextOutput out_;
  int64_t n_completion_ = 0;
  bool stopped_by_string_ = false, done_ = false;
  std::string finish_reason_, error_;
};

json delta_json(const OutputDelta& d) {
  json j = json::object();
  if (!d.reasoning.empty()) j["reasoning_content"] = d.reasoning;
  if (!d.content.empty()) j["content"] = d.content;
  if (!d.tool_calls.empty()) {
    json calls = json::array();
    for (auto& t : d.tool_calls) {
      if (t.is_first)
        calls.push_back({{"index", t.index}, {"id", t.id}, {"type", "function"},
                         {"function", {{"name", t.name}, {"arguments", t.arguments}}}});
      else
        calls.push_back({{"index", t.index}, {"function", {{"arguments", t.arguments}}}});
    }
    j["tool_calls"] = calls;
  }
  return j;
}

}  // namespace

struct HttpServer::Impl {
  Scheduler& sched;
  const TextCodec& codec;
  Metrics& metrics;
  HttpOptions opt;
  MarkerIds markers;
  int64_t created = unix_now();
  httplib::Server svr;

  Impl(Scheduler& s, const TextCodec& c, Metrics& m, HttpOptions o)
      : sched(s), codec(c), metrics(m), opt(std::move(o)), markers(MarkerIds::from(c)) {}

  void check_auth(const httplib::Request& req) const {
    if (opt.api_key.empty()) return;
    std::string h = req.get_header_value("Authorization");
    const std::string expect = "Bearer " + opt.api_key;
    // Length-independent comparison time is not needed on loopback, but costs nothing.
    bool ok = h.size() == expect.size();
    unsigned char diff = 0;
    for (size_t i = 0; i < expect.size() && ok; ++i) diff |= static_cast<unsigned char>(h[i] ^ expect[i]);
    if (!ok || diff != 0)
      throw ApiError(401, "Incorrect API key provided.", "", "invalid_request_error", "invalid_api_key");
  }

  void check_model(const std::string& model) const {
    if (model != opt.model_name)
      throw ApiError(404, fmt::format("The model `{}` does not exist.", model), "model", "invalid_request_error",
                     "model_not_found");
  }

  template <class F>
  httplib::Server::Handler guarded(F fn, bool needs_auth = true) {
    return [this, fn, needs_auth](const httplib::Request& req, httplib::Response& res) {
      try {
        if (needs_auth) check_auth(req);
        fn(req, res);
      } catch (const ApiError& e) {
        send_error(res, e);
      } catch (const Error& e) {
        send_error(res, ApiError(400, e.what()));
      } catch (const std::exception& e) {
        log_warn("serve: {} {}: {}", req.method, req.path, e.what());
        send_error(res, ApiError(500, fmt::format("internal error: {}", e.what())));
      }
    };
  }

  static PeerWatch watch(const httplib::Request& req) {
    return PeerWatch(req.local_addr, req.local_port, req.remote_addr, req.remote_port);
  }

  // The client of a non-streaming request left while it waited: stop its sequence (the
  // scheduler frees the cache at its next step). 499 (nginx's "client closed request") only
  // shows in the access metrics; nobody reads the response.
  template <class Run>
  static void client_gone(httplib::Response& res, Run& run) {
    run.cancel();
    send_error(res, ApiError(499, "Client closed the request.", "", "invalid_request_error", "client_closed_request"));
  }

  void chat(const httplib::Request& req, httplib::Response& res) {
    batch_priority();
    ChatRequest r = parse_chat_request(parse_body(req.body));
    check_model(r.model);
    json tools = r.tools;
    if (r.tool_choice == "none") {
      tools = nullptr;
    } else if (r.tool_choice == "named") {
      json only = json::array();
      for (auto& t : r.tools)
        if (t["function"]["name"] == r.tool_choice_name) only.push_back(t);
      tools = only;
    }
    // tool_choice required / named: the reply starts with the tool call's opening (Kimi
    // markers; without them, only the tool list above is narrowed). The forced call comes
    // right after the generation prompt, so reasoning is skipped (`<think></think>`).
    const ToolForcing forcing = tool_forcing(markers, r.tool_choice, r.tool_choice_name, r.messages);
    bool thinking = r.thinking.value_or(opt.default_thinking) && forcing.prefix.empty();
    RenderedPrompt prompt;
    try {
      prompt = codec.render_chat(r.messages, tools, thinking);
    } catch (const Error& e) {
      throw ApiError(400, e.what(), "messages");
    }
    prompt.add_template(forcing.prefix);
    GenRequest g;
    g.prompt = codec.encode(prompt);
    g.max_tokens = r.max_tokens.value_or(0);
    g.sampling = sampling_of(r);
    g.stop_ids = codec.stop_ids();
    // A named choice is one call: it ends with its <|tool_call_end|> (finish_reason tool_calls).
    if (forcing.named) g.stop_ids.push_back(markers.ids[int(Marker::kCallEnd)]);
    g.ignore_eos = r.ignore_eos;
    g.top_logprobs = r.logprobs ? r.top_logprobs : -1;
    const int32_t think_id = markers.ids[int(Marker::kThinkBegin)];
    const bool in_reasoning = think_id >= 0 && !g.prompt.empty() && g.prompt.back() == think_id;
    auto run = std::make_shared<ChatRun>(codec, markers, sched.submit(std::move(g)), r, in_reasoning, forcing.prefix);
    const std::string id = new_request_id("chatcmpl-");
    const int64_t created_at = unix_now();
    const std::string model = opt.model_name;

    if (!r.stream) {
      OutputDelta all;
      std::vector<TokenLogprob> lps;
      PeerWatch peer = watch(req);
      while (true) {
        OutputDelta d;
        bool more = run->step(d, lps);
        all.append(std::move(d));
        if (!more) break;
        if (peer.gone()) return client_gone(res, *run);
      }
      if (!run->error().empty()) throw ApiError(500, run->error(), "", "server_error");
      ChatChoice c;
      c.content = run->parser().content();
      c.reasoning = run->parser().reasoning();
      c.tool_calls = run->parser().tool_calls();
      c.finish_reason = run->finish_reason();
      if (r.logprobs) c.logprobs = std::move(lps);
      send_json(res, 200, chat_completion_json(id, created_at, model, c, run->usage()));
      return;
    }

    const bool include_usage = r.include_usage, want_logprobs = r.logprobs;
    auto chunk = [=](const json& delta, const std::optional<std::string>& finish, std::vector<TokenLogprob>* lps) {
      json j = chat_chunk_json(id, created_at, model, delta, finish,
                               lps && want_logprobs ? chat_logprobs_json(*lps) : json());
      if (include_usage) j["usage"] = nullptr;
      if (lps) lps->clear();
      return sse_event(j);
    };
    auto started = std::make_shared<bool>(false);
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [=](size_t, httplib::DataSink& sink) {
          std::string buf;
          if (!*started) {
            buf += chunk(json{{"role", "assistant"}, {"content", ""}}, std::nullopt, nullptr);
            *started = true;
          }
          OutputDelta d;
          std::vector<TokenLogprob> lps;
          bool more = run->step(d, lps);
          if (!d.empty() || (!lps.empty() && more)) buf += chunk(delta_json(d), std::nullopt, &lps);
          if (!more) {
            if (!run->error().empty()) {
              buf += sse_event(ApiError(500, run->error(), "", "server_error").to_json());
            } else {
              buf += chunk(json::object(), run->finish_reason(), lps.empty() ? nullptr : &lps);
              if (include_usage) buf += sse_event(chat_usage_chunk_json(id, created_at, model, run->usage()));
            }
            buf += sse_done();
          }
          if (!buf.empty() && !sink.write(buf.data(), buf.size())) {
            run->cancel();  // the client went away
            return false;
          }
          if (!more) sink.done();
          return true;
        },
        [run](bool) { run->cancel(); });
  }

  void completions(const httplib::Request& req, httplib::Response& res) {
    batch_priority();
    CompletionRequest r = parse_completion_request(parse_body(req.body));
    check_model(r.model);
    GenRequest g;
    std::string echo;
    if (auto* s = std::get_if<std::string>(&r.prompt)) {
      g.prompt = codec.encode(*s);
      echo = *s;
    } else {
      g.prompt = std::get<std::vector<int32_t>>(r.prompt);
      if (r.echo) {
        auto st = codec.new_stream();
        for (int32_t t : g.prompt)
          if (t >= 0 && t < codec.vocab_size() && !codec.is_special(t)) echo += st->push(t);
        echo += st->flush();
      }
    }
    g.max_tokens = r.max_tokens.value_or(16);
    g.sampling = sampling_of(r);
    g.stop_ids = codec.stop_ids();
    g.ignore_eos = r.ignore_eos;
    auto run = std::make_shared<TextRun>(codec, sched.submit(std::move(g)), r);
    const std::string id = new_request_id("cmpl-");
    const int64_t created_at = unix_now();
    const std::string model = opt.model_name;
    if (!r.echo) echo.clear();

    if (!r.stream) {
      std::string text = echo;
      PeerWatch peer = watch(req);
      while (run->step(text))
        if (peer.gone()) return client_gone(res, *run);
      if (!run->error().empty()) throw ApiError(500, run->error(), "", "server_error");
      send_json(res, 200, completion_json(id, created_at, model, text, run->finish_reason(), run->usage()));
      return;
    }
    const bool include_usage = r.include_usage;
    auto pending_echo = std::make_shared<std::string>(echo);
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [=](size_t, httplib::DataSink& sink) {
          std::string text = std::exchange(*pending_echo, {}), buf;
          bool more = run->step(text);
          auto chunk = [&](const std::string& t, const std::optional<std::string>& fin) {
            json j = completion_chunk_json(id, created_at, model, t, fin);
            if (include_usage) j["usage"] = nullptr;
            return sse_event(j);
          };
          if (!text.empty()) buf += chunk(text, std::nullopt);
          if (!more) {
            if (!run->error().empty()) {
              buf += sse_event(ApiError(500, run->error(), "", "server_error").to_json());
            } else {
              buf += chunk("", run->finish_reason());
              if (include_usage) buf += sse_event(completion_usage_chunk_json(id, created_at, model, run->usage()));
            }
            buf += sse_done();
          }
          if (!buf.empty() && !sink.write(buf.data(), buf.size())) return false;
          if (!more) sink.done();
          return true;
        },
        [run](bool) {});
  }

  void setup() {
    const int n_threads = std::max(4, opt.n_http_threads);
    svr.new_task_queue = [n_threads] { return new httplib::ThreadPool(size_t(n_threads)); };
    // Streaming writes one small SSE event per step: without TCP_NODELAY, Nagle holds the
    // second small segment until the client's delayed ACK (~40 ms on Linux loopback).
    svr.set_tcp_nodelay(true);
    svr.set_payload_max_length(opt.max_body_bytes);
    svr.set_read_timeout(30, 0);
    svr.set_write_timeout(30, 0);
    svr.set_keep_alive_max_count(1000);
    svr.Get("/health", [](const httplib::Request&, httplib::Response& res) { send_json(res, 200, json{{"status", "ok"}}); });
    svr.Get("/metrics", guarded(
                            [this](const httplib::Request&, httplib::Response& res) {
                              res.set_content(metrics.render(sched.gauges()), "text/plain; version=0.0.4");
                            },
                            false));
    svr.Get("/v1/models", guarded([this](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, models_json(opt.model_name, created, sched.options().max_model_len));
    }));
    svr.Post("/v1/chat/completions", guarded([this](const httplib::Request& q, httplib::Response& s) { chat(q, s); }));
    svr.Post("/v1/completions", guarded([this](const httplib::Request& q, httplib::Response& s) { completions(q, s); }));
    // Errors httplib produces itself (413 body too large, 404 no route, 400 bad request line)
    // get OpenAI's error body too; responses that already have one are left alone.
    svr.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      std::string msg = res.status == 413   ? fmt::format("Request body too large (limit {} bytes).", opt.max_body_bytes)
                        : res.status == 404 ? fmt::format("Unknown path {} {}.", req.method, req.path)
                                            : fmt::format("HTTP error {}.", res.status);
      ApiError e(res.status, msg, "", "invalid_request_error", res.status == 413 ? "request_too_large" : "");
      res.set_content(dump_json(e.to_json()), "application/json");
    });
    svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      metrics.on_http(req.path, res.status);
      log_debug("serve: {} {} -> {}", req.method, req.path, res.status);
    });
  }
};

HttpServer::HttpServer(Scheduler& scheduler, const TextCodec& codec, Metrics& metrics, HttpOptions options)
    : impl_(std::make_unique<Impl>(scheduler, codec, metrics, std::move(options))) {
  impl_->setup();
}

HttpServer::~HttpServer() { stop(); }

int HttpServer::bind() {
  auto& o = impl_->opt;
  if (o.port == 0) {
    port_ = impl_->svr.bind_to_any_port(o.host);
    if (port_ <= 0) fail("serve: cannot bind {}: no free port", o.host);
  } else {
    if (!impl_->svr.bind_to_port(o.host, o.port)) fail("serve: cannot bind {}:{} (in use or not permitted)", o.host, o.port);
    port_ = o.port;
  }
  return port_;
}

void HttpServer::listen() { impl_->svr.listen_after_bind(); }

void HttpServer::stop() {
  if (impl_ && impl_->svr.is_running()) impl_->svr.stop();
}

}  // namespace sickle::server
