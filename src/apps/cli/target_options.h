// sickle/apps/cli/target_options.h — the GPU/CPU target flags `inspect` and `plan` share.
#pragma once

#include <CLI/CLI.hpp>

#include <optional>
#include <string>

#include "base/error.h"
#include "base/log.h"
#include "model/inspect.h"

namespace sickle::cli {

struct TargetArgs {
  int64_t gpus = 0;
  std::string gpu_mem, overhead = "2GiB", kv_dtype = "auto", cpu_mem, membw;
  bool ep = false;
  PlanTarget gpu;  // defaults and the numeric flags
  CpuTarget cpu;

  void add_gpu(CLI::App& sub) {
    sub.add_option("--gpus", gpus,
                   "GPU target: number of GPUs (tensor parallel size; expert parallel size with --ep)");
    sub.add_option("--gpu-mem", gpu_mem,
                   "GPU target: memory per GPU (24GiB is what a \"24 GB\" card has; 24GB means 24e9 bytes)");
    sub.add_flag(
        "--ep", ep,
        "GPU target: expert parallelism (whole routed experts per GPU, as vLLM --enable-expert-parallel)");
    sub.add_option(
        "--gpu-memory-utilization", gpu.gpu_memory_utilization,
        "GPU target: fraction of each GPU's memory for weights, activations and KV cache (as vLLM's; default "
        "0.9)");
    sub.add_option(
        "--overhead", overhead,
        "Memory per GPU (and per CPU target) besides weights and KV cache: CUDA context, NCCL, activations, "
        "CUDA graphs (default 2GiB)");
    sub.add_option("--kv-cache-dtype", kv_dtype, "GPU target: auto (bf16 MLA latent) | fp8 (as vLLM's)")
        ->check(CLI::IsMember({"auto", "bf16", "fp8"}));
    sub.add_option("--block-size", gpu.block_size,
                   "GPU target: tokens per KV block (default 64, FlashMLA's)");
    sub.add_option("--max-num-seqs", gpu.max_num_seqs, "Sequences that share the KV cache (default 1)");
    sub.add_option("--context", gpu.context,
                   "Tokens of context each sequence must hold (vLLM's max_model_len); the plan then says "
                   "whether it fits");
  }
  void add_cpu(CLI::App& sub) {
    sub.add_option("--cpu-mem", cpu_mem, "CPU target (sickle run/serve): RAM, e.g. 768GiB");
    sub.add_option("--membw", membw,
                   "CPU target: memory read bandwidth, e.g. 300GB/s (bench/membw measures it)");
    sub.add_option(
        "--bw-fraction", cpu.bw_fraction,
        "CPU target: fraction of --membw sickle's decode reaches (default 0.8: 0.67-0.87 measured, README)");
    sub.add_option("--tok-s", cpu.want_tok_s,
                   "CPU target: a decode speed; the plan says what bandwidth it needs");
  }
  // The GPU target, if --gpus / --gpu-mem were given (errors name the flag).
  std::optional<PlanTarget> gpu_target() {
    if (!gpus && gpu_mem.empty()) {
      if (ep) fail("--ep needs --gpus N --gpu-mem SIZE");
      return std::nullopt;
    }
    if (gpus <= 0) fail("--gpu-mem needs --gpus N (N > 0)");
    if (gpu_mem.empty()) fail("--gpus needs --gpu-mem (e.g. 24GiB)");
    PlanTarget t = gpu;
    t.n_gpus = gpus;
    t.gpu_mem = parse_bytes(gpu_mem, "--gpu-mem");
    t.expert_parallel = ep;
    t.runtime_overhead = parse_bytes(overhead, "--overhead");
    t.kv_bytes_per_value = kv_dtype == "fp8" ? 1 : 2;
    return t;
  }
  std::optional<CpuTarget> cpu_target() {
    if (cpu_mem.empty()) {
      if (!membw.empty() || cpu.want_tok_s > 0) fail("--membw / --tok-s need --cpu-mem SIZE");
      return std::nullopt;
    }
    CpuTarget t = cpu;
    t.mem = parse_bytes(cpu_mem, "--cpu-mem");
    if (!membw.empty()) {
      std::string b = membw;
      if (b.size() > 2 && b.substr(b.size() - 2) == "/s") b.resize(b.size() - 2);
      t.membw = double(parse_bytes(b, "--membw"));
    }
    t.overhead = parse_bytes(overhead, "--overhead");
    t.max_num_seqs = gpu.max_num_seqs;
    t.context = gpu.context;
    return t;
  }
};

}  // namespace sickle::cli
