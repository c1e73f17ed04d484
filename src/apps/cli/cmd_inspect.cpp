// sickle inspect — facts about a checkpoint (or a config.json alone), and a memory plan.
#include <cstdio>

#include "apps/cli/command.h"
#include "apps/cli/target_options.h"
#include "base/error.h"
#include "model/inspect.h"
#include "vision/config.h"

namespace sickle::cli {
namespace {

Registrar reg{Command{
    "inspect", "Architecture, parameters, bytes by component/encoding, KV cache, memory plan", 10,
    [](CLI::App& sub) -> std::function<int()> {
      struct Args {
        std::string dir;
        int64_t scale_layers = 0;
        bool json = false;
        TargetArgs target;
      };
      auto a = std::make_shared<Args>();
      sub.add_option(
             "dir", a->dir,
             "Model directory (config.json + safetensors), or config.json alone: without *.safetensors the "
             "bytes come from the quantization scheme (see `sickle plan`)")
          ->required();
      sub.add_flag("--json", a->json, "Machine-readable output");
      a->target.add_gpu(sub);
      sub.add_option(
          "--scale-layers", a->scale_layers,
          "Report the model as if it had N layers (repeats the last layer): for checkpoints cut to a "
          "few layers, e.g. synth kimi-k2.5-layers with --scale-layers 61");
      return [a]() {
        ModelSource src = load_model_source(a->dir);
        ModelReport r = analyze_source(src);
        if (a->scale_layers) r = scale_layers(r, a->scale_layers);
        std::unique_ptr<MemoryPlan> plan;
        if (auto t = a->target.gpu_target()) plan = std::make_unique<MemoryPlan>(plan_memory(r, *t));
        const int64_t H = src.config.hidden_size;
        if (a->json) {
          nlohmann::json j = report_json(r, plan.get());
          if (nlohmann::json v = vision::vision_json(src.root, H, a->dir); !v.is_null()) j["vision"] = v;
          std::printf("%s\n", j.dump(2).c_str());
        } else {
          std::fputs(format_report(r, plan.get()).c_str(), stdout);
          std::fputs(vision::format_vision(src.root, H, a->dir).c_str(), stdout);
        }
        return 0;
      };
    }}};

}  // namespace
}  // namespace sickle::cli
