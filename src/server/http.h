// sickle/server/http.h — the OpenAI-compatible HTTP front end (cpp-httplib).
//
// GET /v1/models, /health, /metrics; POST /v1/chat/completions, /v1/completions (JSON or SSE
// streaming). HTTP threads parse and validate, render the chat prompt, tokenize, submit to the
// Scheduler and turn its tokens into OpenAI responses; the model itself is only touched by the
// scheduler's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "server/codec.h"
#include "server/metrics.h"
#include "server/scheduler.h"

namespace sickle::server {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;               // 0 = any free port (see HttpServer::port())
  std::string api_key;           // empty = no authentication
  std::string model_name;        // the id clients must send as `model`
  size_t max_body_bytes = 8u << 20;
  int n_http_threads = 64;       // each streaming client holds one while it streams
  bool default_thinking = true;  // when a chat request does not say
};

class HttpServer {
 public:
  HttpServer(Scheduler& scheduler, const TextCodec& codec, Metrics& metrics, HttpOptions options);
  ~HttpServer();
  // Binds the socket (throws sickle::Error naming host:port on failure); returns the port.
  int bind();
  int port() const { return port_; }
  // Serves until stop(). Call after bind().
  void listen();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace sickle::server
