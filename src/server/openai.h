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

// How request bodies are read.
struct ParseOptions {
  // Unknown top-level fields: a 400 naming the field (strict, `serve --strict-api`, and the
  // default here), or ignored and listed in `ignored_fields` (vLLM's default; the server logs
  // each name once).
  bool strict = true;
};

// Sampling and stopping fields shared by both endpoints.
struct SamplingFields {
  std::string model;                        // empty = not given (optional, as vLLM: the served model)
  std::vector<std::string> ignored_fields;  // unknown fields when not strict
  int64_t n = 1;                            // choices per prompt
  bool stream = false;
  bool include_usage = false;         // stream_options.include_usage
  bool continuous_usage = false;      // stream_options.continuous_usage_stats (vLLM): usage in every chunk
  std::optional<int64_t> max_tokens;  // max_tokens or max_completion_tokens
  double temperature = 1.0;           // OpenAI's default
  double top_p = 1.0;
  int64_t top_k = 0;   // vLLM extension; 0 = off
  double min_p = 0.0;  // vLLM extension
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;  // at most 4 (OpenAI's limit)
  bool ignore_eos = false;        // vLLM extension (benchmarks)
  // Logits adjustments (model/sampler.h LogitsAdjust has the semantics, vLLM's).
  double presence_penalty = 0;                        // [-2, 2]
  double frequency_penalty = 0;                       // [-2, 2]
  double repetition_penalty = 1;                      // (0, 100]; vLLM extension
  std::vector<std::pair<int32_t, float>> logit_bias;  // {"id": bias}, bias in [-100, 100]
  int64_t min_tokens = 0;                             // vLLM extension
  std::vector<int32_t> stop_token_ids;                // vLLM extension
  bool include_stop_str_in_output = false;            // vLLM extension
  bool skip_special_tokens = true;                    // vLLM extension
  std::shared_ptr<const grammar::Grammar> grammar;    // structured output (server/structured.h); null = none
};

struct ChatRequest : SamplingFields {
  nlohmann::json messages;           // normalized: content is a string (or null)
  nlohmann::ordered_json tools;      // array or null; the caller's key order once tools_in_order set it
  std::string tool_choice = "auto";  // none | auto | required | the named function
  std::string tool_choice_name;      // set when tool_choice names a function
  bool parallel_tool_calls = true;   // false: the reply ends after its first tool call
  bool logprobs = false;
  int64_t top_logprobs = 0;      // 0..20
  std::optional<bool> thinking;  // chat_template_kwargs.thinking (or enable_thinking)
  nlohmann::json template_kwargs = nlohmann::json::object();  // chat_template_kwargs, every key (vLLM)
  // vLLM's chat-template switches (transformers' apply_chat_template): add_generation_prompt
  // false renders the conversation alone; continue_final_message renders it and cuts the text
  // right after the final message's content, so the reply continues that message.
  bool add_generation_prompt = true;
  bool continue_final_message = false;
};

struct CompletionRequest : SamplingFields {
  using Prompt = std::variant<std::string, std::vector<int32_t>>;
  Prompt prompt;                // the first (or only) prompt
  std::vector<Prompt> prompts;  // all of them: a list of strings or of token-id lists is a batch
  bool echo = false;
  std::optional<int64_t> logprobs;  // legacy completions logprobs (0..20, vLLM's max_logprobs)
};

// Both throw ApiError (400) naming the offending field.
ChatRequest parse_chat_request(const nlohmann::json& body, const ParseOptions& options = {});
CompletionRequest parse_completion_request(const nlohmann::json& body, const ParseOptions& options = {});
// The body's `tools` with the caller's key order, from the raw text (nlohmann::json sorts
// object keys; a template's tojson writes them as sent, as transformers does); null when
// absent or empty. Call after parse_chat_request validated the same body.
nlohmann::ordered_json tools_in_order(const std::string& body_text);

// vLLM's /tokenize: a prompt ({prompt, add_special_tokens}) or a conversation ({messages,
// tools, add_generation_prompt, chat_template_kwargs, add_special_tokens}, parsed as a chat
// request), plus return_token_strs. Tokens are exactly what the completions / chat endpoints
// would feed the model: no BOS is added to a prompt, so add_special_tokens: true is refused for
// prompts (vLLM's default there), and likewise for conversations (vLLM's default there is false).
struct TokenizeRequest : SamplingFields {
  std::optional<ChatRequest> chat;  // the messages form
  std::string prompt;               // the prompt form
  bool return_token_strs = false;
};
TokenizeRequest parse_tokenize_request(const nlohmann::json& body, const ParseOptions& options = {});
// vLLM's /detokenize: {model?, tokens: [ids]}; ids are range-checked by the caller (vocabulary).
struct DetokenizeRequest : SamplingFields {
  std::vector<int32_t> tokens;
};
DetokenizeRequest parse_detokenize_request(const nlohmann::json& body, const ParseOptions& options = {});

// The sampling defaults of a model's generation_config.json as request fields (vLLM's
// --generation-config auto): temperature, top_p, top_k, min_p, repetition_penalty. Fields of
// other kinds, and values of the wrong type, are left out.
nlohmann::json sampling_defaults_from_generation_config(const nlohmann::json& generation_config);
// Fills the fields `body` leaves out (absent or null) from `defaults`.
void apply_sampling_defaults(nlohmann::json& body, const nlohmann::json& defaults);

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
  nlohmann::json stop_reason;  // vLLM's: the stop string or stop token id that ended it, else null
};

// `id` like "chatcmpl-...", `created` in unix seconds.
nlohmann::json chat_completion_json(const std::string& id, int64_t created, const std::string& model,
                                    const ChatChoice& choice, const Usage& usage);
// n > 1: choice i gets index i.
nlohmann::json chat_completion_json(const std::string& id, int64_t created, const std::string& model,
                                    const std::vector<ChatChoice>& choices, const Usage& usage);
// A chat.completion.chunk with `delta` (role/content/reasoning_content/tool_calls) and an
// optional finish reason; `usage` null except in the final usage chunk.
nlohmann::json chat_chunk_json(const std::string& id, int64_t created, const std::string& model,
                               const nlohmann::json& delta, const std::optional<std::string>& finish_reason,
                               const nlohmann::json& logprobs = nullptr, int64_t index = 0);
// The last chunk when stream_options.include_usage: empty choices, usage set.
nlohmann::json chat_usage_chunk_json(const std::string& id, int64_t created, const std::string& model,
                                     const Usage& usage);

// One token of a legacy completions `logprobs` object; logprob and top are null for the first
// prompt token under echo (nothing predicts it), as OpenAI and vLLM answer.
struct CompletionToken {
  std::string token;
  std::optional<double> logprob;
  std::vector<std::pair<std::string, double>> top;  // the chosen token and the top k, best first
};
// {"tokens", "token_logprobs", "top_logprobs", "text_offset"}; offsets count bytes from `offset0`.
nlohmann::json completion_logprobs_json(const std::vector<CompletionToken>& tokens, int64_t offset0 = 0);

nlohmann::json completion_json(const std::string& id, int64_t created, const std::string& model,
                               const std::string& text, const std::string& finish_reason, const Usage& usage,
                               const nlohmann::json& logprobs = nullptr);
struct CompletionChoice {
  std::string text, finish_reason;
  nlohmann::json logprobs;     // null or completion_logprobs_json
  nlohmann::json stop_reason;  // as ChatChoice::stop_reason
};
// Batched prompts and n > 1: choice i gets index i (prompt-major, as vLLM orders them).
nlohmann::json completion_json(const std::string& id, int64_t created, const std::string& model,
                               const std::vector<CompletionChoice>& choices, const Usage& usage);
nlohmann::json completion_chunk_json(const std::string& id, int64_t created, const std::string& model,
                                     const std::string& text, const std::optional<std::string>& finish_reason,
                                     int64_t index = 0, const nlohmann::json& logprobs = nullptr);
nlohmann::json completion_usage_chunk_json(const std::string& id, int64_t created, const std::string& model,
                                           const Usage& usage);

// The model list: one card per served id (the name and its aliases).
nlohmann::json models_json(const std::vector<std::string>& ids, int64_t created, int64_t max_model_len);

// json::dump that never throws: token text can be partial UTF-8; invalid bytes become U+FFFD.
std::string dump_json(const nlohmann::json& j);

// Server-sent events framing.
std::string sse_event(const nlohmann::json& j);
inline const char* sse_done() { return "data: [DONE]\n\n"; }

// A random id with the given prefix ("chatcmpl-", "cmpl-").
std::string new_request_id(const char* prefix);

}  // namespace sickle::server
