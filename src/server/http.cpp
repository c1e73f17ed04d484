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

#include <algorithm>
#include <chrono>
#include <mutex>
#include <random>
#include <set>

#include "base/error.h"
#include "base/log.h"
#include "server/listener.h"
#include "server/media.h"
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
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

uint64_t random_seed() {
  thread_local std::mt19937_64 rng{std::random_device{}() ^
                                   uint64_t(Clock::now().time_since_epoch().count())};
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

// The request's sampling, logits adjustments and stop ids onto a GenRequest; token ids the
// request names (logit_bias, stop_token_ids) must be in the vocabulary (400 naming the field).
void fill_generation(GenRequest& g, const SamplingFields& r, const TextCodec& codec) {
  const int64_t vocab = codec.vocab_size();
  g.sampling = sampling_of(r);
  g.adjust.presence_penalty = float(r.presence_penalty);
  g.adjust.frequency_penalty = float(r.frequency_penalty);
  g.adjust.repetition_penalty = float(r.repetition_penalty);
  for (auto [id, bias] : r.logit_bias)
    if (id >= vocab)
      throw ApiError(
          400,
          fmt::format("Invalid value for 'logit_bias': token id {} is out of vocabulary [0, {}).", id, vocab),
          "logit_bias");
  g.adjust.logit_bias = r.logit_bias;
  g.adjust.min_tokens = r.min_tokens;
  for (int32_t id : r.stop_token_ids)
    if (id >= vocab)
      throw ApiError(
          400,
          fmt::format("Invalid value for 'stop_token_ids': token id {} is out of vocabulary [0, {}).", id,
                      vocab),
          "stop_token_ids");
  g.stop_token_ids = r.stop_token_ids;
  g.stop_ids = codec.stop_ids();
  g.ignore_eos = r.ignore_eos;
}

OutputOptions output_options(const SamplingFields& r) {
  OutputOptions o;
  o.stops = r.stop;
  o.include_stop_str = r.include_stop_str_in_output;
  o.skip_special_tokens = r.skip_special_tokens;
  return o;
}

// Chat: tool calls are parsed only when the request offers tools and does not say "none"
// (vLLM); parallel_tool_calls false ends the reply after its first call.
OutputOptions output_options(const ChatRequest& r) {
  OutputOptions o = output_options(static_cast<const SamplingFields&>(r));
  o.tool_calls = !r.tools.is_null() && r.tool_choice != "none";
  o.max_tool_calls = r.parallel_tool_calls ? 0 : 1;
  return o;
}

// The seeds of n choices: the request's (or a random) seed for the first, +1 for each next.
std::vector<uint64_t> choice_seeds(uint64_t first, int64_t n) {
  std::vector<uint64_t> seeds;
  for (int64_t i = 0; i < n; ++i) seeds.push_back(first + uint64_t(i));
  return seeds;
}

// Generation ended at this id (EOS or one of the request's stop_token_ids): its text is not
// part of the output unless include_stop_str_in_output (vLLM).
struct StopIds {
  std::vector<int32_t> ids;
  size_t n_model = 0;  // ids[0, n_model) are the model's own (EOS, <|im_end|>)
  bool keep_text = false;
  StopIds(const TextCodec& codec, const SamplingFields& r)
      : ids(codec.stop_ids()), keep_text(r.include_stop_str_in_output) {
    n_model = ids.size();
    ids.insert(ids.end(), r.stop_token_ids.begin(), r.stop_token_ids.end());
  }
  bool is_stop(int32_t id) const { return std::find(ids.begin(), ids.end(), id) != ids.end(); }
  // One of the request's stop_token_ids, not the model's: vLLM reports it as stop_reason.
  bool is_request_stop(int32_t id) const {
    return std::find(ids.begin() + std::ptrdiff_t(n_model), ids.end(), id) != ids.end() &&
           std::find(ids.begin(), ids.begin() + std::ptrdiff_t(n_model), id) ==
               ids.begin() + std::ptrdiff_t(n_model);
  }
};

// vLLM's stop_reason: the stop string that ended the choice, or the request's stop token id;
// null when it ended otherwise (the model's EOS, length, a tool call).
json stop_reason_of(bool by_string, const std::string& stop_string, int32_t stop_token) {
  if (by_string) return stop_string;
  if (stop_token >= 0) return stop_token;
  return nullptr;
}

// Python's str.strip() for ASCII whitespace (transformers strips the final message so).
std::string_view trim_whitespace(std::string_view s) {
  constexpr std::string_view ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
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
  ChatRun(const TextCodec& codec, const MarkerIds& ids, std::shared_ptr<GenHandle> h, const ChatRequest& r,
          bool start_in_reasoning)
      : codec_(codec),
        h_(std::move(h)),
        out_(codec, ids, output_options(r), start_in_reasoning),
        top_logprobs_(r.logprobs ? r.top_logprobs : -1),
        stop_ids_(codec, r),
        min_tokens_(r.min_tokens) {}
  ~ChatRun() { h_->cancel(); }  // no-op once finished; frees the sequence if the client left

  // Waits for tokens; appends what they produce. Returns false once the generation is over
  // (then finish_reason/usage/error are set).
  bool step(OutputDelta& delta, std::vector<TokenLogprob>& lps) {
    if (done_) return false;
    std::vector<GenToken> toks;
    bool alive = h_->next(toks, kPoll);
    for (auto& t : toks) {
      ++n_completion_;
      out_.set_stops_active(n_completion_ > min_tokens_);  // vLLM: stop strings after min_tokens
      const bool is_stop = stop_ids_.is_stop(t.id);
      if (stop_ids_.is_request_stop(t.id)) stop_token_ = t.id;
      if (top_logprobs_ >= 0 && !is_stop) {
        TokenLogprob lp{codec_.token_text(t.id), t.logprob, {}};
        for (auto& [id, l] : t.top) lp.top.push_back(TokenLogprob{codec_.token_text(id), l, {}});
        lps.push_back(std::move(lp));
      }
      if (is_stop && !stop_ids_.keep_text) continue;
      if (!out_.push(t.id, delta)) {
        stopped_by_string_ = true;
        h_->stop();
        alive = false;
        break;
      }
    }
    if (alive) return true;
    out_.finish(delta);
    Finish f = h_->finish();
    if (f == Finish::kError) error_ = h_->error().empty() ? "generation failed" : h_->error();
    finish_reason_ = stopped_by_string_ || f == Finish::kStop ? "stop"
                     : f == Finish::kLength                   ? "length"
                                                              : "abort";
    if (!out_.parser().tool_calls().empty() && finish_reason_ == "stop") finish_reason_ = "tool_calls";
    done_ = true;
    return false;
  }

  Usage usage() const { return Usage{h_->n_prompt(), n_completion_, h_->n_cached()}; }
  const std::string& finish_reason() const { return finish_reason_; }
  json stop_reason() const { return stop_reason_of(stopped_by_string_, out_.stop_string(), stop_token_); }
  const std::string& error() const { return error_; }
  const OutputParser& parser() const { return out_.parser(); }
  void cancel() { h_->cancel(); }

 private:
  const TextCodec& codec_;
  std::shared_ptr<GenHandle> h_;
  ChatOutput out_;
  int64_t top_logprobs_;
  StopIds stop_ids_;
  int64_t min_tokens_;
  int64_t n_completion_ = 0;
  int32_t stop_token_ = -1;  // the request's stop token that ended it
  bool stopped_by_string_ = false, done_ = false;
  std::string finish_reason_, error_;
};

class TextRun {
 public:
  TextRun(const TextCodec& codec, std::shared_ptr<GenHandle> h, const CompletionRequest& r)
      : h_(std::move(h)),
        out_(codec, output_options(r)),
        stop_ids_(codec, r),
        keep_tokens_(r.logprobs.has_value()),
        min_tokens_(r.min_tokens) {}
  ~TextRun() { h_->cancel(); }
  bool step(std::string& text) {
    if (done_) return false;
    std::vector<GenToken> toks;
    bool alive = h_->next(toks, kPoll);
    for (auto& t : toks) {
      ++n_completion_;
      out_.set_stops_active(n_completion_ > min_tokens_);  // vLLM: stop strings after min_tokens
      if (stop_ids_.is_request_stop(t.id)) stop_token_ = t.id;
      if (stop_ids_.is_stop(t.id) && !stop_ids_.keep_text) continue;
      if (keep_tokens_) tokens_.push_back(t);
      if (!out_.push(t.id, text)) {
        stopped_by_string_ = true;
        h_->stop();
        alive = false;
        break;
      }
    }
    if (alive) return true;
    out_.finish(text);
    Finish f = h_->finish();
    if (f == Finish::kError) error_ = h_->error().empty() ? "generation failed" : h_->error();
    finish_reason_ = stopped_by_string_ || f == Finish::kStop ? "stop"
                     : f == Finish::kLength                   ? "length"
                                                              : "abort";
    done_ = true;
    return false;
  }
  Usage usage() const { return Usage{h_->n_prompt(), n_completion_, h_->n_cached()}; }
  const std::string& finish_reason() const { return finish_reason_; }
  json stop_reason() const { return stop_reason_of(stopped_by_string_, out_.stop_string(), stop_token_); }
  const std::string& error() const { return error_; }
  void cancel() { h_->cancel(); }
  // The generated tokens (with logprobs) that made the text; kept when the request wants logprobs.
  const std::vector<GenToken>& tokens() const { return tokens_; }
  const GenHandle& handle() const { return *h_; }

 private:
  std::shared_ptr<GenHandle> h_;
  TextOutput out_;
  StopIds stop_ids_;
  bool keep_tokens_;
  int64_t min_tokens_;
  std::vector<GenToken> tokens_;
  int64_t n_completion_ = 0;
  int32_t stop_token_ = -1;  // the request's stop token that ended it
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
        calls.push_back({{"index", t.index},
                         {"id", t.id},
                         {"type", "function"},
                         {"function", {{"name", t.name}, {"arguments", t.arguments}}}});
      else calls.push_back({{"index", t.index}, {"function", {{"arguments", t.arguments}}}});
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
    if (getnameinfo(sa, len, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
      return;
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
  StructuredOutputs structured{codec};   // the grammar engine's vocabulary, built on first use
  const ImageEncoder* images = nullptr;  // the vision tower (server/media.h), if the model has one
  int64_t created = unix_now();
  HttplibCore svr;
  std::unique_ptr<Listener> listener;

  // The routes: what is not one of them is 404 before anything else (and counts as `other`);
  // a path ending in "{id}" matches any one non-empty segment there (the template is the label).
  struct Route {
    std::string method, path;
    bool auth;
  };
  std::vector<Route> routes;
  std::mutex ignored_mu;
  std::set<std::string> ignored_logged;  // unknown request fields already logged

  Impl(Scheduler& s, const TextCodec& c, Metrics& m, HttpOptions o)
      : sched(s), codec(c), metrics(m), opt(std::move(o)), markers(MarkerIds::from(c)) {
    routes = {{"GET", "/health", false},
              {"GET", "/version", false},
              {"GET", "/metrics", !opt.metrics_open},
              {"GET", "/v1/models", true},
              {"GET", "/v1/models/{id}", true},
              {"POST", "/v1/chat/completions", true},
              {"POST", "/v1/completions", true},
              {"POST", "/tokenize", true},
              {"POST", "/detokenize", true}};
  }

  static bool path_matches(const std::string& tmpl, const std::string& path) {
    const size_t open = tmpl.find('{');
    if (open == std::string::npos) return tmpl == path;
    return path.size() > open && path.compare(0, open, tmpl, 0, open) == 0 &&
           path.find('/', open) == std::string::npos;
  }
  const Route* route_of(const httplib::Request& req) const {
    const std::string m = req.method == "HEAD" ? "GET" : req.method;
    for (auto& r : routes)
      if (path_matches(r.path, req.path) && r.method == m) return &r;
    return nullptr;
  }
  // The methods a path is served with ("" = an unknown path).
  std::string allowed_methods(const std::string& path) const {
    std::string allow;
    for (auto& r : routes)
      if (path_matches(r.path, path)) allow += (allow.empty() ? "" : ", ") + r.method;
    return allow;
  }
  // A bounded label: the route template, or "other".
  std::string path_label(const std::string& path) const {
    for (auto& r : routes)
      if (path_matches(r.path, path)) return r.path;
    return "other";
  }

  // CORS (as Starlette's CORSMiddleware in vLLM): the value of Access-Control-Allow-Origin for
  // this Origin, empty when it is not allowed (or CORS is off).
  std::string cors_origin(const std::string& origin) const {
    if (origin.empty()) return {};
    for (auto& o : opt.allowed_origins)
      if (o == "*") return "*";
      else if (o == origin) return origin;
    return {};
  }

  // `Authorization: Bearer KEY`; the scheme is case-insensitive (RFC 9110 §11.1), the key is
  // compared in time independent of where it differs.
  void check_auth(const httplib::Request& req) const {
    if (opt.api_key.empty()) return;
    const std::string h = req.get_header_value("Authorization");
    const size_t sp = h.find(' ');
    const size_t at = sp == std::string::npos ? h.size() : h.find_first_not_of(' ', sp);
    const std::string_view key =
        at == std::string::npos ? std::string_view() : std::string_view(h).substr(at);
    bool ok = sp == 6 && strncasecmp(h.c_str(), "bearer", 6) == 0 && key.size() == opt.api_key.size();
    unsigned char diff = 0;
    for (size_t i = 0; i < opt.api_key.size() && ok; ++i)
      diff |= static_cast<unsigned char>(key[i] ^ opt.api_key[i]);
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
      const std::string origin = req.get_header_value("Origin");
      if (req.method == "OPTIONS" && !origin.empty() && req.has_header("Access-Control-Request-Method") &&
          !opt.allowed_origins.empty()) {
        // A CORS preflight: answered here, without auth (browsers send no credentials on it).
        const std::string allow = cors_origin(origin);
        if (allow.empty()) throw ApiError(400, fmt::format("Disallowed CORS origin '{}'.", origin));
        res.status = 200;
        res.set_header("Access-Control-Allow-Methods", "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT");
        const std::string hdrs = req.get_header_value("Access-Control-Request-Headers");
        if (!hdrs.empty()) res.set_header("Access-Control-Allow-Headers", hdrs);
        res.set_header("Access-Control-Max-Age", "600");
        res.set_content("OK", "text/plain");
        return httplib::Server::HandlerResponse::Handled;
      }
      const Route* r = route_of(req);
      if (!r) {
        const std::string allow = allowed_methods(req.path);
        if (allow.empty()) throw ApiError(404, fmt::format("Unknown path {} {}.", req.method, req.path));
        res.set_header("Allow", allow);
        throw ApiError(
            405, fmt::format("Method {} is not allowed on {} (allowed: {}).", req.method, req.path, allow),
            "", "invalid_request_error", "method_not_allowed");
      }
      if (r->auth) check_auth(req);
      if (r->method == "POST") {
        // As vLLM: the media type (before any parameters) must be application/json.
        std::string ct = req.get_header_value("Content-Type");
        ct = ct.substr(0, ct.find(';'));
        while (!ct.empty() && ct.back() == ' ') ct.pop_back();
        if (strcasecmp(ct.c_str(), "application/json") != 0)
          throw ApiError(415,
                         fmt::format("Unsupported Media Type: only 'application/json' is allowed (got '{}').",
                                     req.get_header_value("Content-Type")),
                         "", "invalid_request_error", "unsupported_media_type");
        const std::string te = req.get_header_value("Transfer-Encoding");
        const std::string cl = req.get_header_value("Content-Length");
        if (req.has_header("Transfer-Encoding") && strcasecmp(te.c_str(), "chunked") != 0)
          throw ApiError(501, fmt::format("Transfer-Encoding '{}' is not supported (only chunked).", te));
        if (!req.has_header("Transfer-Encoding")) {
          if (!req.has_header("Content-Length"))
            throw ApiError(411, "A request body needs Content-Length or chunked encoding.");
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
      throw ApiError(
          400, fmt::format("Could not read the request body (malformed chunked encoding or Content-Encoding, "
                           "or not all of it arrived within {} s).",
                           opt.body_timeout_s));
    if (tl_served) tl_served->body_read = true;
    return body;
  }

  // `model` may be omitted (the served model) or name it or one of its aliases.
  bool serves(const std::string& model) const {
    return model == opt.model_name ||
           std::find(opt.model_aliases.begin(), opt.model_aliases.end(), model) != opt.model_aliases.end();
  }
  void check_model(const SamplingFields& r) {
    if (!r.model.empty() && !serves(r.model))
      throw ApiError(404, fmt::format("The model `{}` does not exist.", r.model), "model",
                     "invalid_request_error", "model_not_found");
    // Unknown fields (not --strict-api): logged once per name, as vLLM warns.
    for (auto& f : r.ignored_fields) {
      std::lock_guard lk(ignored_mu);
      if (ignored_logged.size() < 1024 && ignored_logged.insert(f).second)
        log_warn("serve: ignoring unknown request field '{}' (logged once; --strict-api refuses them)", f);
    }
  }
  std::vector<std::string> served_names() const {
    std::vector<std::string> names{opt.model_name};
    names.insert(names.end(), opt.model_aliases.begin(), opt.model_aliases.end());
    return names;
  }
  json body_with_defaults(const std::string& text) const {
    json j = parse_body(text);
    apply_sampling_defaults(j, opt.sampling_defaults);
    return j;
  }
  // A legacy completions logprobs list, as vLLM: under echo the prompt's tokens first (the first
  // has no logprob), then the generated ones from `from`; top_logprobs = the chosen token + top k.
  std::vector<CompletionToken> logprob_tokens(const std::vector<int32_t>& prompt_ids, const GenHandle& h,
                                              const std::vector<GenToken>& generated, size_t from) const {
    std::vector<CompletionToken> toks;
    auto entry = [&](const GenToken& t) {
      CompletionToken c{codec.token_text(t.id), double(t.logprob), {}};
      c.top.emplace_back(c.token, double(t.logprob));
      for (auto& [tid, lp] : t.top) c.top.emplace_back(codec.token_text(tid), double(lp));
      return c;
    };
    if (!prompt_ids.empty()) {
      toks.push_back(CompletionToken{codec.token_text(prompt_ids[0]), std::nullopt, {}});
      for (const GenToken& t : h.prompt_logprobs()) toks.push_back(entry(t));
    }
    for (size_t i = from; i < generated.size(); ++i) toks.push_back(entry(generated[i]));
    return toks;
  }
  ParseOptions parse_options() const {
    ParseOptions p;
    p.strict = opt.strict_api;
    return p;
  }

  // A handler (auth, route and body limits were checked by precheck); errors become OpenAI's.
  template <class F>
  httplib::Server::Handler guarded(F fn) {
    return [this, fn](const httplib::Request& req, httplib::Response& res) {
      with_errors(req, res, [&] { fn(req, res); });
    };
  }
  // A POST handler fn(req, body, res): the body is read here, bounded.
  template <class F>
  httplib::Server::HandlerWithContentReader with_body(F fn) {
    return [this, fn](const httplib::Request& req, httplib::Response& res,
                      const httplib::ContentReader& reader) {
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
    send_error(res, ApiError(499, "Client closed the request.", "", "invalid_request_error",
                             "client_closed_request"));
  }

  // vLLM's /tokenize: the ids the completions or chat endpoint would feed the model for the
  // same prompt or conversation.
  void tokenize(const std::string& body, httplib::Response& res) {
    TokenizeRequest r = parse_tokenize_request(parse_body(body), parse_options());
    check_model(r);
    std::vector<int32_t> ids;
    if (r.chat) {
      r.chat->tools = tools_in_order(body);
      const RenderedPrompt prompt = chat_prompt(*r.chat);
      ids = codec.encode(prompt);
      // Each image's placeholder counts as the tokens chat feeds for it (its preprocessing grid;
      // the tower is not run), as vLLM's /tokenize expands multimodal placeholders.
      if (!prompt.images.empty())
        ids = expanded_prompt(ids, prompt.images, images, opt.allowed_local_media_path);
    } else {
      ids = codec.encode(r.prompt);
    }
    json out{{"count", ids.size()},
             {"max_model_len", sched.options().max_model_len},
             {"tokens", ids},
             {"token_strs", nullptr}};
    if (r.return_token_strs) {
      json strs = json::array();
      for (int32_t id : ids) strs.push_back(codec.token_text(id));
      out["token_strs"] = std::move(strs);
    }
    send_json(res, 200, out);
  }

  // vLLM's /detokenize: the text of the ids, special tokens included (HF decode's default).
  void detokenize(const std::string& body, httplib::Response& res) {
    DetokenizeRequest r = parse_detokenize_request(parse_body(body), parse_options());
    check_model(r);
    std::string text;
    for (int32_t id : r.tokens) {
      if (id >= codec.vocab_size())
        throw ApiError(
            400,
            fmt::format("Invalid value for 'tokens': token id {} is out of the vocabulary ({} tokens).", id,
                        codec.vocab_size()),
            "tokens");
      text += codec.token_text(id);
    }
    send_json(res, 200, json{{"prompt", text}});
  }

  // The conversation as the chat endpoint feeds it to the model: tool_choice none hides the
  // tools, a named function shows only itself. A forced tool call (tool_call_grammar) or a
  // structured output starts at the reply's first token, so reasoning is off there.
  // continue_final_message: rendered without a generation prompt and cut right after the
  // final message's content (transformers' apply_chat_template: its last occurrence, else
  // that of the content stripped, as templates that trim it need).
  RenderedPrompt chat_prompt(const ChatRequest& r) const {
    nlohmann::ordered_json tools = r.tools;
    if (r.tool_choice == "none") {
      tools = nullptr;
    } else if (r.tool_choice == "named") {
      nlohmann::ordered_json only = nlohmann::ordered_json::array();
      for (auto& t : r.tools)
        if (t["function"]["name"] == r.tool_choice_name) only.push_back(t);
      tools = only;
    }
    const bool forced = r.tool_choice == "required" || r.tool_choice == "named";
    const bool thinking = r.thinking.value_or(opt.default_thinking) && !forced && !r.grammar;
    RenderedPrompt p;
    try {
      p = codec.render_chat(r.messages, tools, thinking, r.template_kwargs, r.add_generation_prompt);
    } catch (const Error& e) {
      throw ApiError(400, e.what(), "messages");
    }
    if (r.continue_final_message) {
      const std::string text = p.text();
      const std::string final = r.messages.back()["content"].get<std::string>();
      size_t at = text.rfind(final), len = final.size();
      if (at == std::string::npos) {
        const std::string_view trimmed = trim_whitespace(final);
        at = text.rfind(trimmed), len = trimmed.size();
      }
      if (at == std::string::npos)
        throw ApiError(400,
                       "continue_final_message: the final message does not appear in the rendered prompt "
                       "(the chat template drops or changes it).",
                       "continue_final_message");
      p.truncate(at + len);
    }
    return p;
  }

  void chat(const httplib::Request& req, const std::string& body, httplib::Response& res) {
    batch_priority();
    ChatRequest r = parse_chat_request(body_with_defaults(body), parse_options());
    check_model(r);
    r.tools = tools_in_order(body);
    const auto tool_grammar = tool_call_grammar(markers, r);
    const RenderedPrompt prompt = chat_prompt(r);
    GenRequest g;
    g.prompt = codec.encode(prompt);
    // Image parts: placeholders expanded, embedding rows and content keys (server/media.h).
    attach_images(g, prompt.images, images, opt.allowed_local_media_path);
    g.max_tokens = r.max_tokens.value_or(0);
    fill_generation(g, r, codec);
    g.top_logprobs = r.logprobs ? r.top_logprobs : -1;
    if (r.grammar || tool_grammar)
      g.make_constraint = structured.factory(r.grammar ? r.grammar : tool_grammar);
    // A structured output is the reply itself, even after a prompt that opened <think>.
    const bool in_reasoning = !r.grammar && prompt_opens_reasoning(codec, markers, g.prompt);
    // n choices share the prompt (read once, its cache forked); choice i samples with seed + i.
    std::vector<std::shared_ptr<ChatRun>> runs;
    for (auto& h : sched.submit_n(std::move(g), choice_seeds(g.sampling.seed, r.n)))
      runs.push_back(std::make_shared<ChatRun>(codec, markers, std::move(h), r, in_reasoning));
    auto run = runs.front();
    const std::string id = new_request_id("chatcmpl-");
    const int64_t created_at = unix_now();
    const std::string model = opt.model_name;

    if (!r.stream) {
      std::vector<std::vector<TokenLogprob>> lps(runs.size());
      PeerWatch peer = watch(req);
      for (bool more = true; more;) {
        more = false;
        for (size_t i = 0; i < runs.size(); ++i) {
          OutputDelta d;
          more |= runs[i]->step(d, lps[i]);
        }
        if (more && peer.gone()) return client_gone(res, *run);  // the others cancel as they go
      }
      std::vector<ChatChoice> choices;
      Usage usage = run->usage();
      usage.completion_tokens = 0;
      for (size_t i = 0; i < runs.size(); ++i) {
        const ChatRun& x = *runs[i];
        if (!x.error().empty()) throw ApiError(500, x.error(), "", "server_error");
        ChatChoice c;
        c.content = x.parser().content();
        c.reasoning = x.parser().reasoning();
        c.tool_calls = x.parser().tool_calls();
        c.finish_reason = x.finish_reason();
        c.stop_reason = x.stop_reason();
        if (r.logprobs) c.logprobs = std::move(lps[i]);
        choices.push_back(std::move(c));
        usage.completion_tokens += x.usage().completion_tokens;
      }
      send_json(res, 200, chat_completion_json(id, created_at, model, choices, usage));
      return;
    }

    // vLLM: continuous_usage_stats (with include_usage) puts the usage so far in every chunk.
    // n > 1: the choices' chunks interleave, each carrying its index.
    const bool include_usage = r.include_usage, want_logprobs = r.logprobs;
    const bool continuous = r.include_usage && r.continuous_usage;
    auto total_usage = [runs] {
      Usage u = runs.front()->usage();
      for (size_t i = 1; i < runs.size(); ++i) u.completion_tokens += runs[i]->usage().completion_tokens;
      return u;
    };
    auto chunk = [=](size_t index, const json& delta, const std::optional<std::string>& finish,
                     std::vector<TokenLogprob>* lps) {
      json j = chat_chunk_json(id, created_at, model, delta, finish,
                               lps && want_logprobs ? chat_logprobs_json(*lps) : json(), int64_t(index));
      if (finish) j["choices"][0]["stop_reason"] = runs[index]->stop_reason();
      if (include_usage) j["usage"] = continuous ? total_usage().to_json() : json();
      if (lps) lps->clear();
      return sse_event(j);
    };
    auto started = std::make_shared<std::vector<bool>>(runs.size(), false);
    auto ended = std::make_shared<std::vector<bool>>(runs.size(), false);
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    auto cancel_all = [runs] {
      for (auto& x : runs) x->cancel();
    };
    res.set_chunked_content_provider(
        "text/event-stream",
        [=](size_t, httplib::DataSink& sink) {
          std::string buf;
          bool more = false, failed = false;
          for (size_t i = 0; i < runs.size() && !failed; ++i) {
            if ((*ended)[i]) continue;
            if (!(*started)[i]) {
              buf += chunk(i, json{{"role", "assistant"}, {"content", ""}}, std::nullopt, nullptr);
              (*started)[i] = true;
            }
            OutputDelta d;
            std::vector<TokenLogprob> lps;
            const bool alive = runs[i]->step(d, lps);
            if (!d.empty() || (!lps.empty() && alive)) buf += chunk(i, delta_json(d), std::nullopt, &lps);
            if (alive) {
              more = true;
            } else if (!runs[i]->error().empty()) {
              buf += sse_event(ApiError(500, runs[i]->error(), "", "server_error").to_json());
              failed = true;
            } else {
              buf += chunk(i, json::object(), runs[i]->finish_reason(), lps.empty() ? nullptr : &lps);
              (*ended)[i] = true;
            }
          }
          if (failed) {
            cancel_all();
            more = false;
          }
          if (!more) {
            if (include_usage && !failed)
              buf += sse_event(chat_usage_chunk_json(id, created_at, model, total_usage()));
            buf += sse_done();
          }
          if (!buf.empty() && !sink.write(buf.data(), buf.size())) {
            cancel_all();  // the client went away
            return false;
          }
          if (!more) sink.done();
          return true;
        },
        [cancel_all](bool) { cancel_all(); });
  }

  void completions(const httplib::Request& req, const std::string& body, httplib::Response& res) {
    batch_priority();
    CompletionRequest r = parse_completion_request(body_with_defaults(body), parse_options());
    check_model(r);
    // Every prompt of the batch, n choices each, submitted together (they batch in the scheduler).
    struct Item {
      std::shared_ptr<TextRun> run;
      std::string echo;                 // the prompt's text when echo
      std::vector<int32_t> prompt_ids;  // for echo + logprobs
    };
    std::vector<Item> items;
    int64_t n_prompt_tokens = 0;
    for (const CompletionRequest::Prompt& p : r.prompts) {
      GenRequest g;
      std::string echo;
      if (auto* s = std::get_if<std::string>(&p)) {
        g.prompt = codec.encode(*s);
        echo = *s;
      } else {
        g.prompt = std::get<std::vector<int32_t>>(p);
        if (r.echo) {
          auto st = codec.new_stream();
          for (int32_t t : g.prompt)
            if (t >= 0 && t < codec.vocab_size() && !codec.is_special(t)) echo += st->push(t);
          echo += st->flush();
        }
      }
      if (!r.echo) echo.clear();
      g.max_tokens = r.max_tokens.value_or(16);
      g.prompt_only = g.max_tokens == 0;
      fill_generation(g, r, codec);
      if (r.grammar) g.make_constraint = structured.factory(r.grammar);
      g.top_logprobs = r.logprobs.value_or(-1);
      if (r.echo && r.logprobs) g.prompt_logprobs = *r.logprobs;
      const std::vector<int32_t> prompt_ids = r.echo && r.logprobs ? g.prompt : std::vector<int32_t>();
      n_prompt_tokens += int64_t(g.prompt.size());
      const uint64_t seed = g.sampling.seed;
      for (auto& h : sched.submit_n(std::move(g), choice_seeds(seed, r.n)))
        items.push_back(Item{std::make_shared<TextRun>(codec, std::move(h), r), echo, prompt_ids});
    }
    auto run = items.front().run;
    const std::string id = new_request_id("cmpl-");
    const int64_t created_at = unix_now();
    const std::string model = opt.model_name;

    if (!r.stream) {
      std::vector<std::string> texts;
      for (auto& it : items) texts.push_back(it.echo);
      PeerWatch peer = watch(req);
      for (bool more = true; more;) {
        more = false;
        for (size_t i = 0; i < items.size(); ++i) more |= items[i].run->step(texts[i]);
        if (more && peer.gone()) return client_gone(res, *run);  // the others cancel as they go
      }
      std::vector<CompletionChoice> choices;
      Usage usage{n_prompt_tokens, 0, 0};
      for (size_t i = 0; i < items.size(); ++i) {
        const TextRun& x = *items[i].run;
        if (!x.error().empty()) throw ApiError(500, x.error(), "", "server_error");
        usage.completion_tokens += x.usage().completion_tokens;
        if (i % size_t(r.n) == 0) usage.cached_tokens += x.usage().cached_tokens;
        json lps;
        if (r.logprobs)
          lps = completion_logprobs_json(logprob_tokens(items[i].prompt_ids, x.handle(), x.tokens(), 0));
        choices.push_back(
            CompletionChoice{std::move(texts[i]), x.finish_reason(), std::move(lps), x.stop_reason()});
      }
      send_json(res, 200, completion_json(id, created_at, model, choices, usage));
      return;
    }
    // Batches and n > 1: the choices' chunks interleave, each carrying its index.
    const bool include_usage = r.include_usage, continuous = r.include_usage && r.continuous_usage;
    auto total_usage = [items, n_prompt_tokens, n = size_t(r.n)] {
      Usage u{n_prompt_tokens, 0, 0};
      for (size_t i = 0; i < items.size(); ++i) {
        u.completion_tokens += items[i].run->usage().completion_tokens;
        if (i % n == 0) u.cached_tokens += items[i].run->usage().cached_tokens;
      }
      return u;
    };
    auto pending_echo = std::make_shared<std::vector<std::string>>();
    for (auto& it : items) pending_echo->push_back(it.echo);
    auto ended = std::make_shared<std::vector<bool>>(items.size(), false);
    // logprobs: each chunk carries its tokens' (the first, under echo, the prompt's too).
    auto n_sent = std::make_shared<std::vector<size_t>>(items.size(), 0);
    auto offset = std::make_shared<std::vector<int64_t>>(items.size(), 0);
    auto prompt_sent = std::make_shared<std::vector<bool>>(items.size(), false);
    const bool want_logprobs = r.logprobs.has_value();
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [=, this](size_t, httplib::DataSink& sink) {
          std::string buf;
          auto chunk = [&](size_t index, const std::string& t, const std::optional<std::string>& fin) {
            json lps;
            if (want_logprobs) {
              // The prompt's entries go once they are complete: the scheduler sets them before
              // the first token is delivered (or the end, for max_tokens 0).
              const TextRun& x = *items[index].run;
              const bool prompt_now = !(*prompt_sent)[index] && (!x.tokens().empty() || fin);
              if (prompt_now) (*prompt_sent)[index] = true;
              auto toks = logprob_tokens(prompt_now ? items[index].prompt_ids : std::vector<int32_t>(),
                                         x.handle(), x.tokens(), (*n_sent)[index]);
              lps = completion_logprobs_json(toks, (*offset)[index]);
              (*n_sent)[index] = x.tokens().size();
              for (auto& tk : toks) (*offset)[index] += int64_t(tk.token.size());
            }
            json j = completion_chunk_json(id, created_at, model, t, fin, int64_t(index), lps);
            if (fin) j["choices"][0]["stop_reason"] = items[index].run->stop_reason();
            if (include_usage) j["usage"] = continuous ? total_usage().to_json() : json();
            return sse_event(j);
          };
          bool more = false, failed = false;
          for (size_t i = 0; i < items.size() && !failed; ++i) {
            if ((*ended)[i]) continue;
            const TextRun& x = *items[i].run;
            std::string text = std::exchange((*pending_echo)[i], {});
            const bool alive = items[i].run->step(text);
            if (!text.empty()) buf += chunk(i, text, std::nullopt);
            if (alive) {
              more = true;
            } else if (!x.error().empty()) {
              buf += sse_event(ApiError(500, x.error(), "", "server_error").to_json());
              failed = true;
            } else {
              buf += chunk(i, "", x.finish_reason());
              (*ended)[i] = true;
            }
          }
          if (failed) more = false;
          if (!more) {
            if (include_usage && !failed)
              buf += sse_event(completion_usage_chunk_json(id, created_at, model, total_usage()));
            buf += sse_done();
          }
          if (!buf.empty() && !sink.write(buf.data(), buf.size())) return false;
          if (!more) sink.done();
          return true;
        },
        [items](bool) {
          for (auto& it : items) it.run->cancel();
        });
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
    svr.set_pre_routing_handler(
        [this](const httplib::Request& q, httplib::Response& s) { return precheck(q, s); });
    // `Expect: 100-continue`: refuse before the client sends its body.
    svr.set_expect_100_continue_handler([this](const httplib::Request& q, httplib::Response& s) {
      return precheck(q, s) == httplib::Server::HandlerResponse::Handled ? s.status : 100;
    });
    // A body left unread (refused before it, or past its limit) ends the connection: the next
    // "request" would be its bytes.
    svr.set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (const std::string allow = cors_origin(req.get_header_value("Origin")); !allow.empty()) {
        res.set_header("Access-Control-Allow-Origin", allow);
        if (allow != "*") res.set_header("Vary", "Origin");
      }
      if (!tl_served) return;
      if (has_body(req) && !tl_served->body_read) tl_served->conn->close_after();
      if (tl_served->conn->closing()) {
        res.headers.erase("Keep-Alive");
        res.headers.erase("Connection");
        res.set_header("Connection", "close");
      }
    });
    svr.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, json{{"status", "ok"}});
    });
    svr.Get("/metrics", guarded([this](const httplib::Request&, httplib::Response& res) {
              res.set_content(metrics.render(sched.gauges()), "text/plain; version=0.0.4");
            }));
    svr.Get("/version", [this](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, json{{"version", opt.version}});
    });
    svr.Get("/v1/models", guarded([this](const httplib::Request&, httplib::Response& res) {
              send_json(res, 200, models_json(served_names(), created, sched.options().max_model_len));
            }));
    svr.Get(R"(/v1/models/([^/]+))", guarded([this](const httplib::Request& req, httplib::Response& res) {
              const std::string id = req.matches[1];
              if (!serves(id))
                throw ApiError(404, fmt::format("The model `{}` does not exist.", id), "model",
                               "invalid_request_error", "model_not_found");
              const json all = models_json(served_names(), created, sched.options().max_model_len);
              for (const json& card : all["data"])
                if (card["id"] == id) send_json(res, 200, card);
            }));
    svr.Post("/v1/chat/completions", with_body([this](const httplib::Request& q, const std::string& b,
                                                      httplib::Response& s) { chat(q, b, s); }));
    svr.Post("/v1/completions", with_body([this](const httplib::Request& q, const std::string& b,
                                                 httplib::Response& s) { completions(q, b, s); }));
    svr.Post("/tokenize", with_body([this](const httplib::Request&, const std::string& b,
                                           httplib::Response& s) { tokenize(b, s); }));
    svr.Post("/detokenize", with_body([this](const httplib::Request&, const std::string& b,
                                             httplib::Response& s) { detokenize(b, s); }));
    // Errors httplib produces itself (413 body too large, 404 no route, 400 bad request line)
    // get OpenAI's error body too; responses that already have one are left alone.
    svr.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      std::string msg = res.status == 413
                            ? fmt::format("Request body too large (limit {} bytes).", opt.max_body_bytes)
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

HttpServer::HttpServer(Scheduler& scheduler, const TextCodec& codec, Metrics& metrics, HttpOptions options,
                       const ImageEncoder* images)
    : impl_(std::make_unique<Impl>(scheduler, codec, metrics, std::move(options))) {
  impl_->images = images;
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
  impl_->listener = std::make_unique<Listener>(
      o.host, o.port, lo, [impl](Connection& c) { return impl->serve(c); }, &impl_->metrics);
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
