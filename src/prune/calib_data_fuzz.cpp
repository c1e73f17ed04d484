// libFuzzer target for the calibration / evaluation data reader (load_samples, wired to a
// tokenizer and chat format as eval/data.cpp wires it): any file must give either sequences
// that respect the options or a sickle::Error, never a crash, hang, leak or UB.
// Input: 4 bytes of options (format, packing, seq len, shard), then the file's bytes (written
// to an in-memory file: the reader takes paths).
#include <cstdint>
#include <string_view>

#include "base/error.h"
#include "base/fuzz_file.h"
#include "prune/calib_data.h"
#include "tokenizer/chat.h"
#include "tokenizer/testing.h"
#include "tokenizer/tokenizer.h"

namespace {
const sickle::Tokenizer* g_tok = nullptr;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  auto dir = sickle::testing::write_tiny_tiktoken("calib_fuzz", {"ab", "the", " the", "in"});
  g_tok = sickle::Tokenizer::load(dir).release();
  std::filesystem::remove_all(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  static sickle::fuzz::MemFile file("calib");
  sickle::CalibOptions opt;
  opt.format = sickle::DataFormat(data[0] & 3);
  opt.pack = (data[0] >> 2) & 1;
  opt.long_policy = (data[0] >> 3) & 1 ? sickle::LongPolicy::kDrop : sickle::LongPolicy::kSplit;
  opt.max_samples = (data[0] >> 4) & 3;
  opt.seq_len = 1 + data[1] % 64;
  opt.n_shards = 1 + data[2] % 4;
  opt.shard_index = data[3] % opt.n_shards;
  opt.bos_id = g_tok->bos_id();
  const auto& path = file.write(std::string_view(reinterpret_cast<const char*>(data + 4), size - 4));
  // As eval/data.cpp wires it: plain text never parses specials, chat values neither.
  sickle::CalibEncoder enc;
  enc.encode = [](const std::string& s) { return g_tok->encode(s, false); };
  enc.encode_chat = [](const nlohmann::json& m, const nlohmann::ordered_json& tools) {
    const nlohmann::json kwargs = {{"thinking", false}, {"enable_thinking", false}};
    return g_tok->encode(
        sickle::render_chat(*g_tok, m, tools, /*add_generation_prompt=*/false, /*thinking=*/false, kwargs));
  };
  try {
    sickle::CalibReport rep;
    auto seqs = sickle::load_samples({path}, opt, &enc, &rep);
    int64_t used = 0;
    for (const auto& s : seqs) {
      if (s.empty() || int64_t(s.size()) > opt.seq_len) __builtin_trap();
      used += int64_t(s.size());
    }
    if (rep.n_sequences != int64_t(seqs.size()) || rep.tokens_used != used ||
        rep.n_sequences > rep.n_sequences_total)
      __builtin_trap();
    if (opt.max_samples > 0 && rep.n_documents > opt.max_samples) __builtin_trap();
  } catch (const sickle::Error&) {
  }
  return 0;
}
