// sickle export-gguf — write a llama.cpp GGUF (arch deepseek2) of a checkpoint.
#include <cstdio>

#include "apps/cli/command.h"
#include "base/log.h"
#include "model/gguf_export.h"

namespace sickle::cli {
namespace {

Registrar reg{Command{
    "export-gguf", "Write a llama.cpp GGUF (deepseek2; int4 experts -> Q4_0 losslessly)", 80,
    [](CLI::App& sub) -> std::function<int()> {
      struct Args {
        std::string model, out;
        GgufExportOptions opt;
      };
      auto a = std::make_shared<Args>();
      sub.add_option("-m,--model", a->model, "Checkpoint directory")->required();
      sub.add_option("-o,--out", a->out,
                     "Output .gguf file (refused if it exists, unless --force; never in the model directory)")
          ->required();
      sub.add_option("--type", a->opt.type,
                     "Non-expert weights (and experts that are not int4): bf16 | f32 | f16 | q8_0 "
                     "(norms, biases and the router are always f32). bf16 is lossless for bf16 "
                     "checkpoints; f16 can overflow and q8_0 is lossy, and llama.cpp's AMX CPU "
                     "backend (node-llama-cpp 3.21.1) aborted on both at the first graph")
          ->capture_default_str()
          ->check(CLI::IsMember({"bf16", "f32", "f16", "q8_0"}));
      sub.add_flag("--force", a->opt.force, "Replace an existing output file");
      return [a]() {
        if (a->opt.type == "f16" || a->opt.type == "q8_0")
          log_warn(
              "--type {}: llama.cpp's AMX CPU backend (node-llama-cpp 3.21.1, sapphirerapids build) "
              "aborted on such files at the first graph (GGML_ASSERT cur_backend_id != -1); its AVX2 "
              "and AVX-512 builds load them. bf16 (the default) loads on all of them{}",
              a->opt.type, a->opt.type == "f16" ? ", and f16 can overflow bf16 weights" : "");
        a->opt.progress = log_level() >= LogLevel::kInfo;
        GgufExportReport r = export_gguf(a->model, a->out, a->opt);
        std::printf(
            "wrote %s: %lld tensors, %s of tensor data; %lld int4 blocks -> Q4_0 (%lld scales rounded to "
            "f16)\n",
            a->out.c_str(), (long long)r.n_tensors, format_bytes(double(r.data_bytes)).c_str(),
            (long long)r.n_q4_blocks, (long long)r.n_scales_inexact);
        std::printf("non-expert weights: %s\n", a->opt.type.c_str());
        std::printf("tokenizer: %s\n", r.tokenizer.c_str());
        return 0;
      };
    }}};

}  // namespace
}  // namespace sickle::cli
