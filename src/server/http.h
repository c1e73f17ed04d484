// sickle/server/http.h — the OpenAI-compatible HTTP front end (cpp-httplib).
//
// GET /v1/models, /v1/models/{id}, /health, /version, /metrics; POST /v1/chat/completions,
// /v1/completions (JSON or SSE streaming). A known path with another method is 405; a POST whose
// Content-Type is not application/json is 415 (as vLLM); CORS (preflight OPTIONS included) for
// --allowed-origins. HTTP threads parse and validate, render the chat prompt, tokenize, submit to the
// Scheduler and turn its tokens into OpenAI responses; the model itself is only touched by the
// scheduler's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "server/codec.h"
#include "server/metrics.h"
#include "server/scheduler.h"

namespace sickle::server {

class ImageEncoder;

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                         // 0 = any free port (see HttpServer::port())
  std::string api_key;                     // empty = no authentication
  bool metrics_open = false;               // /metrics without the key even when api_key is set
  std::string model_name;                  // the served id (responses name it; `model` may be omitted)
  std::vector<std::string> model_aliases;  // more ids clients may send as `model`
  bool strict_api = false;  // unknown request fields are a 400 (else ignored, logged once each)
  std::vector<std::string> allowed_origins;  // CORS: origins allowed ("*" = any); empty = no CORS
  std::string version;                       // what GET /version reports
  nlohmann::json sampling_defaults;  // request fields a request may leave out (generation_config.json)
  size_t max_body_bytes = 8u << 20;  // after decoding (chunked, gzip), whatever the framing
  int n_http_threads = 64;           // each request holds one while it is served (streams: to the end)
  int max_connections = 1024;        // open connections in total (503 beyond)
  int max_connections_per_ip = 256;  // per client address (0 = only the total bound)
  double header_timeout_s = 10;      // the whole request head, from accept or (kept-alive) its first byte
  double body_timeout_s = 60;        // the whole request body, from the end of its head
  double idle_timeout_s = 5;         // a kept-alive connection waiting for its next request
  bool default_thinking = true;      // when a chat request does not say
  // file:// image urls are read only under this directory (vLLM's flag); empty = refused.
  std::string allowed_local_media_path;
};

class HttpServer {
 public:
  // `images`: the model's vision tower (server/media.h); null = image parts are a 400.
  HttpServer(Scheduler& scheduler, const TextCodec& codec, Metrics& metrics, HttpOptions options,
             const ImageEncoder* images = nullptr);
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
