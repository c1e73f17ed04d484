// sickle/server/openai.h — OpenAI request/response types for /v1/chat/completions and
// /v1/completions: parsing with validation (errors shaped as OpenAI's error object) and the
// builders of responses and SSE chunks.
//
// Request bodies are untrusted: every field is type-checked and a wrong one names the field
// (`param`) and the expected type, with HTTP status 400, as api.openai.com answers.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace sickle::grammar {
class Grammar;
}

namespace sickle::server {

// An error the client gets as `{"error": {"message", "type", "param", "code"}}` with `status`.
class ApiError : public std::exception {
 public:
  ApiError(int status, std::string message, std::string param = {}, std::string type = {},
           std::string code = {});
  const char* what() const noexcept override { return message.c_str(); }
  nlohmann::json to_json() const;

  int status = 400;
  std::string message, param, type, code;
};

// Sampling and stopping fields shared by both endpoints.
struct SamplingFields {
  std::string model;
  bool stream = false;
  bool include_usage = false;          // stream_options.include_usage
  std::optional<int64_t> max_tokens;   // max_tokens or max_completion_tokens
  double temperature = 1.0;            // OpenAI's default
  double top_p = 1.0;
  int64_t top_k = 0;                   // vLLM extension; 0 = off
  double min_p = 0.0;                  // vLLM extension
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;       // at most 4 (OpenAI's limit)
  bool ignore_eos = false;             // vLLM extension (benchmarks)
  std::shared_ptr<const grammar::Grammar> grammar;  // structured output (server/structured.h); null = none
};

struct ChatRequest : SamplingFields {
  nlohmann::json messages;             // normalized: content is a string (or null)
  nlohmann::json tools;                // array or null
  std::string tool_choice = "auto";    // none | auto | required | the named function
  std::string tool_choice_name;        // set when tool_choice names a function
  bool logprobs = false;
  int64_t top_logprobs = 0;            // 0..20
  std::optional<bool> thinking;        // chat_template_kwargs.thinking (or enable_thinking)
};

struct CompletionRequest : SamplingFields {
  std::variant<std::string, std::vector<int32_t>> prompt;
  bool echo = false;
  std::optional<int64_t> logprobs;     // legacy completions logprobs (0..5)
};

// Both throw ApiError (400) naming the offending field.
ChatRequest parse_chat_request(const nlohmann::json& body);
CompletionRequest parse_completion_request(const nlohmann::json& body);
// Parses the raw body text; malformed JSON or a non-object is a 400.
nlohmann::json parse_body(const std::string& text);

// ---- responses ----

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
  nlohmann::json to_json() const;
};

struct ToolCall {
  std::string id, name, arguments;
};

// One alternative for logprobs.
struct TokenLogprob {
  std::string token;
  double logprob = 0;
  std::vector<TokenLogprob> top;  // only on the chosen token
};
nlohmann::json chat_logprobs_json(const std::vector<TokenLogprob>& tokens);

struct ChatChoice {
  std::string content, reasoning;
  std::vector<ToolCall> tool_calls;
  std::string finish_reason;  // stop | length | tool_calls
  std::optional<std::vector<TokenLogprob>> logprobs;
};

// `id` like "chatcmpl-...", `created` in unix seconds.
nlohmann::json chat_completion_json(const std::string& id, int64_t created, const std::string& model,
                                    const ChatChoice& choice, const Usage& usage);
// A chat.completion.chunk with `delta` (role/content/reasoning_content/tool_calls) and an
// optional finish reason; `usage` null except in the final usage chunk.
nlohmann::json chat_chunk_json(const std::string& id, int64_t created, const std::string& model,
                               const nlohmann::json& delta, const std::optional<std::string>& finish_reason,
                               const nlohmann::json& logprobs = nullptr);
// The last chunk when stream_options.include_usage: empty choices, usage set.
nlohmann::json chat_usage_chunk_json(const std::string& id, int64_t created, const std::string& model,
                                     const Usage& usage);

nlohmann::json completion_json(const std::string& id, int64_t created, const std::string& model,
                               const std::string& text, const std::string& finish_reason, const Usage& usage);
nlohmann::json completion_chunk_json(const std::string& id, int64_t created, const std::string& model,
                                     const std::string& text, const std::optional<std::string>& finish_reason);
nlohmann::json completion_usage_chunk_json(const std::string& id, int64_t created, const std::string& model,
                                           const Usage& usage);

nlohmann::json models_json(const std::string& model, int64_t created, int64_t max_model_len);

// json::dump that never throws: token text can be partial UTF-8; invalid bytes become U+FFFD.
std::string dump_json(const nlohmann::json& j);

// Server-sent events framing.
std::string sse_event(const nlohmann::json& j);
inline const char* sse_done() { return "data: [DONE]\n\n"; }

// A random id with the given prefix ("chatcmpl-", "cmpl-").
std::string new_request_id(const char* prefix);

}  // namespace sickle::server
