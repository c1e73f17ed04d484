// sickle/server/codec.cpp — the real tokenizer behind server::TextCodec (a thin adapter).
#include "server/codec.h"

#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

namespace sickle::server {

namespace {

class RealStream : public TokenTextStream {
 public:
  explicit RealStream(const Tokenizer& tok) : dec_(tok, /*skip_special=*/true) {}
  std::string push(int32_t id) override { return dec_.push(id); }
  std::string flush() override { return dec_.flush(); }

 private:
  StreamDecoder dec_;
};

class RealCodec : public TextCodec {
 public:
  RealCodec(const Tokenizer& tok, bool specials_in_content)
      : tok_(tok), specials_in_content_(specials_in_content) {}
  std::vector<int32_t> encode(std::string_view text) const override { return tok_.encode(text, true); }
  std::vector<int32_t> encode(const RenderedPrompt& prompt) const override {
    return tok_.encode(prompt, specials_in_content_);
  }
  int32_t special_id(std::string_view text) const override { return tok_.token_id(text); }
  bool is_special(int32_t id) const override { return tok_.is_special(id); }
  std::string token_text(int32_t id) const override { return tok_.token_text(id); }
  int64_t vocab_size() const override { return tok_.vocab_size(); }
  std::vector<int32_t> stop_ids() const override { return tok_.stop_ids(); }
  std::unique_ptr<TokenTextStream> new_stream() const override { return std::make_unique<RealStream>(tok_); }
  using TextCodec::render_chat;
  RenderedPrompt render_chat(const nlohmann::json& messages, const nlohmann::ordered_json& tools,
                             bool thinking, const nlohmann::json& template_kwargs,
                             bool add_generation_prompt) const override {
    nlohmann::json kwargs = template_kwargs.is_object() ? template_kwargs : nlohmann::json::object();
    kwargs["thinking"] = thinking;
    kwargs["enable_thinking"] = thinking;
    return sickle::render_chat(tok_, messages, tools, add_generation_prompt, thinking, kwargs);
  }

 private:
  const Tokenizer& tok_;
  bool specials_in_content_;
};

}  // namespace

std::unique_ptr<TextCodec> make_codec(const Tokenizer& tok, bool specials_in_content) {
  return std::make_unique<RealCodec>(tok, specials_in_content);
}

}  // namespace sickle::server
