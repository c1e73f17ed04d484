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
#include <netdb.h>
#include <strings.h>
#include <sys/socket.h>

#include <chrono>
#include <random>

#include "base/error.h"
#include "base/log.h"
#include "server/listener.h"
#include "server/openai.h"
#include "server/output_parser.h"
#include "server/peer.h"
#include "server/structured.h"

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

// httplib's request processing on a Listener connection (httplib::Server::process_request is
// protected; a subclass lends it). `svr_sock_` is what httplib's streaming loops look at to
// see the server stopping: it holds the listener's socket while serving.
class HttplibCore : public httplib::Server {
 public:
  using httplib::Server::process_request;
  void set_serving(int listen_fd) { svr_sock_ = listen_fd; }
  void set_stopping() { svr_sock_ = INVALID_SOCKET; }
};

// A Listener connection as httplib's stream.
class ConnStream final : public httplib::Stream {
 public:
  explicit ConnStream(Connection& c) : c_(c) {}
  using httplib::Stream::write;
  bool is_readable() const override { return c_.readable(); }
  bool is_writable() const override { return c_.writable(); }
  ssize_t read(char* p, size_t n) override { return c_.read(p, n); }
  ssize_t write(const char* p, size_t n) override { return c_.write(p, n); }
  void get_remote_ip_and_port(std::string& ip, int& port) const override { endpoint(true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { endpoint(false, ip, port); }
  // httplib answers 500 to a socket >= FD_SETSIZE, since its own streams select(); this one
  // polls, and nothing else on the server side uses the number.
  socket_t socket() const override { return c_.fd() < FD_SETSIZE ? c_.fd() : INVALID_SOCKET; }

 private:
  // As httplib writes endpoints (numeric host; PeerWatch parses them).
  void endpoint(bool remote, std::string& ip, int& port) const {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    auto* sa = reinterpret_cast<sockaddr*>(&a);
    if ((remote ? getpeername(c_.fd(), sa, &len) : getsockname(c_.fd(), sa, &len)) != 0) return;
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (getnameinfo(sa, len, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0) return;
    ip = host;
    port = std::atoi(serv);
  }
  Connection& c_;
};

// The request being served on this thread: its connection, and whether its body was read.
struct OnThread {
  Connection* conn = nullptr;
  bool body_read = false;
};
thread_local OnThread* tl_served = nullptr;

// The request declares a body (that the server must read, or close the connection).
bool has_body(const httplib::Request& req) {
  return req.has_header("Transfer-Encoding") ||
         (req.has_header("Content-Length") && req.get_header_value("Content-Length") != "0");
}

}  // namespace

struct HttpServer::Impl {
  Scheduler& sched;
  const TextCodec& codec;
  Metrics& metrics;
  HttpOptions opt;
  MarkerIds markers;
  StructuredOutputs structured{codec};  // the grammar engine's vocabulary, built on first use
  int64_t created = unix_now();
  HttplibCore svr;
  std::unique_ptr<Listener> listener;

  // The routes: what is not one of them is 404 before anything else (and counts as `other`).
  struct Route {
    std::string method, path;
    bool auth;
  };
  std::vector<Route> routes;

  Impl(Scheduler& s, const TextCodec& c, Metrics& m, HttpOptions o)
      : sched(s), codec(c), metrics(m), opt(std::move(o)), markers(MarkerIds::from(c)) {
    routes = {{"GET", "/health", false},
              {"GET", "/metrics", !opt.metrics_open},
              {"GET", "/v1/models", true},
              {"POST", "/v1/chat/completions", true},
              {"POST", "/v1/completions", true}};
  }

  const Route* route_of(const httplib::Request& req) const {
    const std::string m = req.method == "HEAD" ? "GET" : req.method;
    for (auto& r : routes)
      if (r.path == req.path && r.method == m) return &r;
    return nullptr;
  }
  std::string path_label(const std::string& path) const {
    for (auto& r : routes)
      if (r.path == path) return path;
    return "other";
  }

  // `Authorization: Bearer KEY`; the scheme is case-insensitive (RFC 9110 §11.1), the key is
  // compared in time independent of where it differs.
  void check_auth(const httplib::Request& req) const {
    if (opt.api_key.empty()) return;
    const std::string h = req.get_header_value("Authorization");
    const size_t sp = h.find(' ');
    const size_t at = sp == std::string::npos ? h.size() : h.find_first_not_of(' ', sp);
    const std::string_view key = at == std::string::npos ? std::string_view() : std::string_view(h).substr(at);
    bool ok = sp == 6 && strncasecmp(h.c_str(), "bearer", 6) == 0 && key.size() == opt.api_key.size();
    unsigned char diff = 0;
    for (size_t i = 0; i < opt.api_key.size() && ok; ++i) diff |= static_cast<unsigned char>(key[i] ^ opt.api_key[i]);
    if (!ok || diff != 0)
      throw ApiError(401, "Incorrect API key provided.", "", "invalid_request_error", "invalid_api_key");
  }

  ApiError too_large() const {
    return ApiError(413, fmt::format("Request body too large (limit {} bytes).", opt.max_body_bytes), "",
                    "invalid_request_error", "request_too_large");
  }

  // Everything decided from the head alone, before a body byte is read: the route, the key,
  // the body's framing and declared size. Unhandled = go on (read the body, run the handler).
  httplib::Server::HandlerResponse precheck(const httplib::Request& req, httplib::Response& res) const {
    try {
      const Route* r = route_of(req);
      if (!r) throw ApiError(404, fmt::format("Unknown path {} {}.", req.method, req.path));
      if (r->auth) check_auth(req);
      if (r->method == "POST") {
        const std::string te = req.get_header_value("Transfer-Encoding");
        const std::string cl = req.get_header_value("Content-Length");
        if (req.has_header("Transfer-Encoding") && strcasecmp(te.c_str(), "chunked") != 0)
          throw ApiError(501, fmt::format("Transfer-Encoding '{}' is not supported (only chunked).", te));
        if (!req.has_header("Transfer-Encoding")) {
          if (!req.has_header("Content-Length")) throw ApiError(411, "A request body needs Content-Length or chunked encoding.");
          if (cl.empty() || cl.size() > 19 || cl.find_first_not_of("0123456789") != std::string::npos)
            throw ApiError(400, fmt::format("Invalid Content-Length '{}'.", cl));
          if (std::stoull(cl) > opt.max_body_bytes) throw too_large();
        }
      }
    } catch (const ApiError& e) {
      send_error(res, e);
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  }

  // The body, at most max_body_bytes after any decoding (413 beyond, while the client may
  // still be sending: the connection closes after the response).
  std::string read_body(const httplib::ContentReader& reader) const {
    std::string body;
    bool over = false;
    const bool ok = reader([&](const char* d, size_t n) {
      if (body.size() + n > opt.max_body_bytes) return !(over = true);
      body.append(d, n);
      return true;
    });
    if (over) throw too_large();
    if (!ok)
      throw ApiError(400, fmt::format("Could not read the request body (malformed chunked encoding or Content-Encoding, "
                                      "or not all of it arrived within {} s).", opt.body_timeout_s));
    if (tl_served) tl_served->body_read = true;
    return body;
  }

  void check_model(const std::string& model) const {
    if (model != opt.model_name)
      throw ApiError(404, fmt::format("The model `{}` does not exist.", model), "model", "invalid_request_error",
                     "model_not_found");
  }

  // A handler (auth, route and body limits were checked by precheck); errors become OpenAI's.
  template <class F>
  httplib::Server::Handler guarded(F fn) {
    return [this, fn](const httplib::Request& req, httplib::Response& res) { with_errors(req, res, [&] { fn(req, res); }); };
  }
  // A POST handler fn(req, body, res): the body is read here, bounded.
  template <class F>
  httplib::Server::HandlerWithContentReader with_body(F fn) {
    return [this, fn](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
      with_errors(req, res, [&] { fn(req, read_body(reader), res); });
    };
  }
  template <class F>
  static void with_errors(const httplib::Request& req, httplib::Response& res, F&& fn) {
    try {
      fn();
    } catch (const ApiError& e) {
      send_error(res, e);
    } catch (const Error& e) {
      send_error(res, ApiError(400, e.what()));
    } catch (const std::exception& e) {
      log_warn("serve: {} {}: {}", req.method, req.path, e.what());
      send_error(res, ApiError(500, fmt::format("internal error: {}", e.what())));
    }
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

  void chat(const httplib::Request& req, const std::string& body, httplib::Response& res) {
    batch_priority();
    ChatRequest r = parse_chat_request(parse_body(body));
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
    // A structured output starts at the first token: no reasoning section before it.
    bool thinking = r.thinking.value_or(opt.default_thinking) && forcing.prefix.empty() && !r.grammar;
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
    if (r.grammar) g.make_constraint = structured.factory(r.grammar);
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

  void completions(const httplib::Request& req, const std::string& body, httplib::Response& res) {
    batch_priority();
    CompletionRequest r = parse_completion_request(parse_body(body));
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
    if (r.grammar) g.make_constraint = structured.factory(r.grammar);
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

  // One request on a connection whose head has arrived (a Listener worker thread).
  bool serve(Connection& c) {
    OnThread served{&c};
    tl_served = &served;
    ConnStream strm(c);
    bool client_closes = false;
    const bool ok = svr.process_request(strm, /*close_connection=*/false, client_closes, nullptr);
    tl_served = nullptr;
    return ok && !client_closes && !c.closing();
  }

  void setup() {
    // Connections (accept, bounds, head deadline) are the Listener's; TCP_NODELAY is set on
    // each there. httplib's timeouts and keep-alive loop are not used; the Keep-Alive header
    // it writes names the listener's idle timeout.
    svr.set_payload_max_length(opt.max_body_bytes);  // read_body bounds decoded bytes too
    svr.set_keep_alive_timeout(time_t(std::max(1.0, opt.idle_timeout_s)));
    svr.set_keep_alive_max_count(1000);
    svr.set_pre_routing_handler([this](const httplib::Request& q, httplib::Response& s) { return precheck(q, s); });
    // `Expect: 100-continue`: refuse before the client sends its body.
    svr.set_expect_100_continue_handler([this](const httplib::Request& q, httplib::Response& s) {
      return precheck(q, s) == httplib::Server::HandlerResponse::Handled ? s.status : 100;
    });
    // A body left unread (refused before it, or past its limit) ends the connection: the next
    // "request" would be its bytes.
    svr.set_post_routing_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!tl_served) return;
      if (has_body(req) && !tl_served->body_read) tl_served->conn->close_after();
      if (tl_served->conn->closing()) {
        res.headers.erase("Keep-Alive");
        res.headers.erase("Connection");
        res.set_header("Connection", "close");
      }
    });
    svr.Get("/health", [](const httplib::Request&, httplib::Response& res) { send_json(res, 200, json{{"status", "ok"}}); });
    svr.Get("/metrics", guarded([this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics.render(sched.gauges()), "text/plain; version=0.0.4");
    }));
    svr.Get("/v1/models", guarded([this](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, models_json(opt.model_name, created, sched.options().max_model_len));
    }));
    svr.Post("/v1/chat/completions", with_body([this](const httplib::Request& q, const std::string& b, httplib::Response& s) {
      chat(q, b, s);
    }));
    svr.Post("/v1/completions", with_body([this](const httplib::Request& q, const std::string& b, httplib::Response& s) {
      completions(q, b, s);
    }));
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
      metrics.on_http(path_label(req.path), res.status);
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
  const auto& o = impl_->opt;
  auto ms = [](double s) { return std::chrono::milliseconds(int64_t(s * 1000)); };
  ListenerOptions lo;
  lo.n_workers = std::max(4, o.n_http_threads);
  lo.max_connections = o.max_connections;
  lo.max_connections_per_ip = o.max_connections_per_ip;
  lo.header_timeout = ms(o.header_timeout_s);
  lo.body_timeout = ms(o.body_timeout_s);
  lo.idle_timeout = ms(o.idle_timeout_s);
  Impl* impl = impl_.get();
  impl_->listener = std::make_unique<Listener>(o.host, o.port, lo, [impl](Connection& c) { return impl->serve(c); },
                                               &impl_->metrics);
  impl_->svr.set_serving(impl_->listener->listen_fd());
  port_ = impl_->listener->port();
  return port_;
}

void HttpServer::listen() {
  SICKLE_CHECK(impl_->listener);
  impl_->listener->run();
}

void HttpServer::stop() {
  if (!impl_ || !impl_->listener) return;
  impl_->svr.set_stopping();
  impl_->listener->stop();
}

}  // namespace sickle::server
