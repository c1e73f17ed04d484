// libFuzzer target for tokenizer loading: tiktoken.model + tokenizer_config.json (Kimi) or
// tokenizer.json + tokenizer_config.json (HF). Any files must give either a tokenizer that
// encodes and decodes within its vocabulary or a sickle::Error, never a crash, hang, leak, UB
// or an allocation sized by an id in the file (issue 21: id 300000000 allocated 24 GB).
// Input: 1 byte selecting the format, then the first file, "\n----\n", the config file.
#include <cstdint>
#include <string_view>

#include "base/error.h"
#include "base/fuzz_file.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static sickle::fuzz::MemFile model_file("tokenizer"), config_file("tokenizer_config");
  const bool hf = data[0] & 1;
  auto [model, config] = sickle::fuzz::split_once(
      std::string_view(reinterpret_cast<const char*>(data + 1), size - 1), "\n----\n");
  const auto& m = model_file.write(model);
  const auto& c = config_file.write(config);
  try {
    auto tok = hf ? sickle::Tokenizer::load_hf(m, config.empty() ? std::filesystem::path() : c)
                  : sickle::Tokenizer::load_tiktoken(m, c);
    const int64_t V = tok->vocab_size();
    for (int32_t id : {tok->bos_id(), tok->eos_id()})
      if (id >= V) __builtin_trap();
    for (int32_t id : tok->stop_ids())
      if (id < 0 || id >= V) __builtin_trap();
    for (std::string_view text :
         {std::string_view("Hello, world! 123 \xe4\xb8\xad\xe6\x96\x87 <|im_end|>"), model.substr(0, 64)}) {
      for (bool special : {true, false}) {
        auto ids = tok->encode(text, special);
        for (int32_t id : ids)
          if (id < 0 || id >= V) __builtin_trap();
        (void)tok->decode(ids);
      }
    }
  } catch (const sickle::Error&) {
  }
  return 0;
}
