// sickle inspect — facts about a checkpoint, and a memory plan for a GPU target.
#include <cstdio>

#include "apps/cli/command.h"
#include "base/error.h"
#include "base/log.h"
#include "io/checkpoint.h"
#include "model/inspect.h"

namespace sickle::cli {
namespace {

Registrar reg{Command{
    "inspect", "Architecture, parameters, bytes by component/encoding, KV cache, memory plan", 10,
    [](CLI::App& sub) -> std::function<int()> {
      struct Args {
        std::string dir, gpu_mem, overhead = "2GiB";
        int64_t gpus = 0, scale_layers = 0;
        bool json = false, ep = false;
      };
      auto a = std::make_shared<Args>();
      sub.add_option("dir", a->dir, "Model directory (config.json + safetensors)")->required();
      sub.add_flag("--json", a->json, "Machine-readable output");
      sub.add_option("--gpus", a->gpus, "Memory plan: number of GPUs");
      sub.add_option("--gpu-mem", a->gpu_mem, "Memory plan: memory per GPU (24GiB, 80GB, ...)");
      sub.add_flag("--ep", a->ep, "Memory plan: expert parallelism (whole routed experts per GPU)");
      sub.add_option("--overhead", a->overhead, "Memory plan: runtime memory per GPU besides weights and KV");
      sub.add_option("--scale-layers", a->scale_layers,
                     "Report the model as if it had N layers (repeats the last layer): for checkpoints cut to a "
                     "few layers, e.g. synth kimi-k2.5-layers with --scale-layers 61");
      return [a]() {
        auto ck = Checkpoint::open(a->dir);  // validates every shard and the layout against config.json
        ModelReport r = analyze_checkpoint(*ck);
        if (a->scale_layers) r = scale_layers(r, a->scale_layers);
        std::unique_ptr<MemoryPlan> plan;
        if (a->gpus || !a->gpu_mem.empty()) {
          if (a->gpus <= 0) fail("--gpu-mem needs --gpus N (N > 0)");
          if (a->gpu_mem.empty()) fail("--gpus needs --gpu-mem (e.g. 24GiB)");
          PlanTarget t;
          t.n_gpus = a->gpus;
          t.gpu_mem = parse_bytes(a->gpu_mem, "--gpu-mem");
          t.expert_parallel = a->ep;
          t.runtime_overhead = parse_bytes(a->overhead, "--overhead");
          plan = std::make_unique<MemoryPlan>(plan_memory(r, t));
        } else if (a->ep) {
          fail("--ep needs --gpus N --gpu-mem SIZE");
        }
        if (a->json) std::printf("%s\n", report_json(r, plan.get()).dump(2).c_str());
        else std::fputs(format_report(r, plan.get()).c_str(), stdout);
        return 0;
      };
    }}};

}  // namespace
}  // namespace sickle::cli
