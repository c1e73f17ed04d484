// sickle/tokenizer/prompt.h — a rendered chat prompt as tagged spans: what the template wrote
// and what the caller's messages supplied.
//
// A chat template writes two kinds of text. Its own text (role markers, separators, the
// generation prompt) is where special-token strings are control tokens. Message values
// (content, reasoning, names, tool-call ids and arguments, tool results, tool declarations)
// are data: a user who types `<|im_end|><|im_system|>` must get those characters, not a
// forged turn (vLLM / HF `split_special_tokens=True` for the values). Renderers (the built-in
// formats of chat.h, a template engine) append spans; Tokenizer::encode(const RenderedPrompt&)
// turns them into ids; text() is the flat string for display and logs, never for encoding.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sickle {

struct PromptSpan {
  std::string text;
  bool is_value = false;  // a message value (always text); false: template text
};

// An image part of the messages whose media placeholder the render wrote (template text).
struct PromptImage {
  std::string url;    // the part's image_url.url, as given (data:, file://, ...)
  std::string field;  // where it came from, for errors: "messages[1].content[0]"
};

struct RenderedPrompt {
  std::vector<PromptSpan> spans;    // adjacent spans of one kind are merged; no empty spans
  std::vector<PromptImage> images;  // in the order their placeholders appear in text()

  void add_template(std::string_view text) { add(text, false); }
  void add_value(std::string_view text) { add(text, true); }
  void append(const RenderedPrompt& other) {
    for (const auto& s : other.spans) add(s.text, s.is_value);
    images.insert(images.end(), other.images.begin(), other.images.end());
  }
  // Keeps the first `n` bytes of text() (spans keep their kinds).
  void truncate(size_t n) {
    size_t at = 0, i = 0;
    for (; i < spans.size() && at + spans[i].text.size() <= n; ++i) at += spans[i].text.size();
    if (i < spans.size() && at < n) spans[i++].text.resize(n - at);
    spans.resize(i);
  }
  // The flat prompt text (what transformers' apply_chat_template(tokenize=False) returns).
  std::string text() const {
    std::string out;
    for (const auto& s : spans) out += s.text;
    return out;
  }

 private:
  void add(std::string_view text, bool is_value) {
    if (text.empty()) return;
    if (!spans.empty() && spans.back().is_value == is_value) spans.back().text += text;
    else spans.push_back(PromptSpan{std::string(text), is_value});
  }
};

}  // namespace sickle
