// sickle plan — how far to prune for a deployment, from config.json alone ("why 72?").
#include <cstdio>

#include "apps/cli/command.h"
#include "apps/cli/target_options.h"
#include "base/error.h"
#include "prune/deploy.h"

namespace sickle::cli {
namespace {

Registrar reg{Command{
    "plan",
    "Deployment planner from config.json alone: what-if --keep, --fit, vLLM-like GPU placement, CPU targets",
    11, [](CLI::App& sub) -> std::function<int()> {
      sub.footer(
          "Examples:\n"
          "  sickle plan /models/Kimi-K2.5 --keep 72 --gpus 8 --gpu-mem 24GiB --ep --gpu-memory-utilization "
          "0.95\n"
          "  sickle plan config.json --fit --gpus 8 --gpu-mem 24GiB --ep --context 32768\n"
          "  sickle plan /models/Kimi-K2.5 --keep 192 --cpu-mem 768GiB --membw 300GB/s\n"
          "Only config.json is needed: bytes come from the quantization scheme (int4 g32 + bf16 scales = "
          "0.5625 "
          "B/weight, fp8 + f32 128x128 block scales, bf16), or from the safetensors headers when shards are "
          "present. "
          "The GPU plan places the model as vLLM does: TP for attention, dense and shared MLPs, embeddings; "
          "whole "
          "experts per GPU with --ep; q_a/kv_a down-projections, routers, norms replicated; the MLA latent "
          "cache "
          "(not split by TP) gets gpu_mem x utilization - weights - overhead.");
      struct Args {
        std::string dir;
        DeployRequest req;
        bool json = false;
        TargetArgs target;
      };
      auto a = std::make_shared<Args>();
      sub.add_option("dir", a->dir, "Model directory or its config.json (safetensors shards optional)")
          ->required();
      auto* keep = sub.add_option("--keep", a->req.keep,
                                  "What-if: experts kept per MoE layer (as `sickle prune --keep`)");
      auto* ratio =
          sub.add_option("--ratio", a->req.ratio, "What-if: fraction of each layer's experts removed");
      keep->excludes(ratio);
      sub.add_flag("--fit", a->req.fit,
                   "Solve for the largest --keep that fits the target with --context tokens for each of "
                   "--max-num-seqs "
                   "sequences (routable counts only), and say which term binds");
      sub.add_flag("--even-experts", a->req.even_experts,
                   "--fit with --ep: only multiples of --gpus (vLLM's EPLB needs an even split)");
      sub.add_option("--scale-layers", a->req.scale_layers,
                     "Plan the model as if it had N layers (for checkpoints cut to a few layers)");
      sub.add_flag("--json", a->json, "Machine-readable output");
      a->target.add_gpu(sub);
      a->target.add_cpu(sub);
      return [a]() {
        a->req.gpu = a->target.gpu_target();
        a->req.cpu = a->target.cpu_target();
        if (a->req.keep < 0) fail("--keep must be positive, got {}", a->req.keep);
        if (a->req.ratio != -1 && !(a->req.ratio >= 0 && a->req.ratio < 1))
          fail("--ratio must be in [0, 1), got {}", a->req.ratio);
        Deployment d = plan_deployment(load_model_source(a->dir), a->req);
        if (a->json) std::printf("%s\n", deployment_json(d).dump(2).c_str());
        else std::fputs(format_deployment(d).c_str(), stdout);
        return 0;
      };
    }}};

}  // namespace
}  // namespace sickle::cli
