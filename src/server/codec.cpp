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
  explicit RealCodec(const Tokenizer& tok) : tok_(tok) {}
  std::vector<int32_t> encode(std::string_view text) const override { return tok_.encode(text, true); }
  int32_t special_id(std::string_view text) const override { return tok_.token_id(text); }
  bool is_special(int32_t id) const override { return tok_.is_special(id); }
  std::string token_text(int32_t id) const override { return tok_.token_text(id); }
  int64_t vocab_size() const override { return tok_.vocab_size(); }
  std::vector<int32_t> stop_ids() const override { return tok_.stop_ids(); }
  std::unique_ptr<TokenTextStream> new_stream() const override { return std::make_unique<RealStream>(tok_); }
  std::string render_chat(const nlohmann::json& messages, const nlohmann::json& tools, bool thinking) const override {
    return sickle::render_chat(tok_, messages, tools, /*add_generation_prompt=*/true, thinking);
  }

 private:
  const Tokenizer& tok_;
};

}  // namespace

std::unique_ptr<TextCodec> make_codec(const Tokenizer& tok) { return std::make_unique<RealCodec>(tok); }

}  // namespace sickle::server
