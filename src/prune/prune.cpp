#include "prune/prune.h"

#include <sys/mman.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "base/hash.h"
#include "base/log.h"
#include "io/output_path.h"
#include "prune/fingerprint.h"

namespace sickle {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
std::string file_hash(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) fail("{}: cannot open", p.string());
  Hasher h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), std::streamsize(buf.size()));
    h.update(buf.data(), size_t(in.gcount()));
  }
  return h.hex();
}
}  // namespace

MappedStats map_stats_to_model(const Checkpoint& ck, const ExpertStats& stats) {
  const ModelConfig& cfg = ck.config();
  const std::string fp = model_fingerprint(ck);
  MappedStats m;
  auto check_layers = [&](const std::string& label) {
    for (int64_t il = 0; il < cfg.num_hidden_layers; ++il) {
      if (!cfg.is_moe_layer(il)) continue;
      if (!stats.layers.count(il)) fail("statistics ({}) have no entry for MoE layer {}", label, il);
    }
  };
  if (stats.meta.model_fingerprint == fp) {
    check_layers("model " + fp);
    for (const auto& [il, l] : stats.layers) {
      if (!cfg.is_moe_layer(il)) continue;
      m.layers.emplace(il, l);
    }
    m.via = "direct";
    return m;
  }
  const fs::path rp = ck.dir() / "prune_report.json";
  std::error_code ec;
  std::string ancestors_seen;
  if (fs::exists(rp, ec)) {
    json r = read_json_file(rp);
    if (r.contains("ancestors") && r["ancestors"].is_array()) {
      for (const auto& a : r["ancestors"]) {
        std::string afp = a.value("fingerprint", std::string());
        ancestors_seen += (ancestors_seen.empty() ? "" : ", ") + afp;
        if (afp != stats.meta.model_fingerprint) continue;
        check_layers("ancestor " + afp);
        for (int64_t il = 0; il < cfg.num_hidden_layers; ++il) {
          if (!cfg.is_moe_layer(il)) continue;
          std::string key = std::to_string(il);
          if (!a.contains("layers") || !a["layers"].contains(key))
            fail("{}: ancestor {} has no mapping for layer {}", rp.string(), afp, il);
          std::vector<int64_t> ids;
          try {
            ids = a["layers"][key].get<std::vector<int64_t>>();
          } catch (const json::exception& e) {
            fail("{}: ancestor {} layer {} mapping is malformed: {}", rp.string(), afp, il, e.what());
          }
          const LayerStats& l = stats.layers.at(il);
          if (int64_t(ids.size()) != cfg.n_experts(il))
            fail("{}: layer {} maps {} experts but the model has {}", rp.string(), il, ids.size(),
                 cfg.n_experts(il));
          for (int64_t id : ids)
            if (id < 0 || id >= l.n_experts())
              fail("{}: layer {} maps to expert {} but the statistics have {} experts", rp.string(), il, id,
                   l.n_experts());
          m.layers.emplace(il, l.select(ids));
          m.origin_ids.emplace(il, ids);
        }
        m.via = fmt::format("mapped from ancestor {} through {}", afp, rp.string());
        return m;
      }
    }
  }
  fail(
      "statistics were gathered on model {} but {} is model {}{}: refusing to prune with another model's "
      "statistics",
      stats.meta.model_fingerprint, ck.dir().string(), fp,
      ancestors_seen.empty()
          ? std::string(" (and it has no prune_report.json naming that model as an ancestor)")
          : fmt::format(" (its prune_report.json names ancestors {})", ancestors_seen));
}

PruneOutcome plan_prune(const Checkpoint& ck, const ExpertStats& stats, const PruneRequest& req) {
  MappedStats ms = map_stats_to_model(ck, stats);
  PruneOutcome out;
  out.plan = make_plan(ck.config(), ms.layers, ms.origin_ids, req.plan);
  const PrunePlan& plan = out.plan;
  const std::string src_fp = model_fingerprint(ck);
  json r;
  r["format"] = "sickle-prune-report";
  r["sickle_version"] = SICKLE_VERSION;
  r["created"] = utc_now_iso();
  r["source"] = {{"dir", fs::absolute(ck.dir()).string()}, {"fingerprint", src_fp}};
  r["criterion"] = std::string(criterion_name(req.plan.criterion));
  r["budget"] = req.plan.budget == Budget::kGlobal ? "global" : "uniform";
  if (req.plan.keep > 0) r["keep"] = req.plan.keep;
  else r["ratio"] = req.plan.ratio;
  r["seed"] = req.plan.seed;
  r["keep_super_experts"] = req.plan.keep_super_experts;
  r["super_expert_rule"] =
      fmt::format("max_act > mean + {} sd of the layer's chosen experts' max_act", req.plan.super_sigma);
  r["stats"] = {{"path", fs::absolute(req.stats_path).string()},
                {"file_hash", req.stats_path.empty() ? std::string() : file_hash(req.stats_path)},
                {"model_fingerprint", stats.meta.model_fingerprint},
                {"samples", stats.meta.samples},
                {"tokens", stats.meta.tokens},
                {"shards", stats.meta.shards},
                {"n_shards", stats.meta.n_shards},
                {"mapped", ms.via}};
  json layers = json::object();
  bool all_ok = true;
  int64_t n_ties = 0;
  for (const auto& [il, lp] : plan.layers) {
    json jl;
    jl["n_experts"] = lp.n_experts;
    jl["kept"] = lp.kept;
    jl["dropped"] = lp.dropped;
    jl["scores"] = lp.scores;  // indexed by the parent's expert id
    jl["super_experts"] = lp.super_experts;
    jl["order_ok"] = lp.order_ok;
    jl["min_kept_score"] = lp.min_kept_score;
    jl["max_dropped_score"] = lp.max_dropped_score;
    jl["ties"] = lp.ties;
    jl["out_of_order"] = lp.out_of_order;
    layers[std::to_string(il)] = jl;
    all_ok = all_ok && lp.order_ok;
    n_ties += lp.ties.empty() ? 0 : 1;
  }
  r["layers"] = layers;
  r["total_kept"] = plan.total_kept;
  r["check"] = {{"every_kept_score_ge_every_dropped", all_ok}, {"layers_with_ties_at_boundary", n_ties}};
  r["warnings"] = plan.warnings;
  // Lineage: for the parent and every ancestor, the ancestor's id of each new expert, so
  // statistics of any ancestor can prune this model again (map_stats_to_model).
  json ancestors = json::array();
  {
    json a;
    a["fingerprint"] = src_fp;
    json al = json::object();
    for (const auto& [il, lp] : plan.layers) al[std::to_string(il)] = lp.kept;
    a["layers"] = al;
    ancestors.push_back(a);
  }
  const fs::path parent_report = ck.dir() / "prune_report.json";
  std::error_code ec;
  if (fs::exists(parent_report, ec)) {
    json pr = read_json_file(parent_report);
    if (pr.contains("ancestors") && pr["ancestors"].is_array()) {
      for (const auto& pa : pr["ancestors"]) {
        json a;
        a["fingerprint"] = pa.value("fingerprint", std::string());
        json al = json::object();
        bool ok = pa.contains("layers") && pa["layers"].is_object();
        for (const auto& [il, lp] : plan.layers) {
          std::string key = std::to_string(il);
          if (!ok || !pa["layers"].contains(key)) {
            ok = false;
            break;
          }
          auto ids = pa["layers"][key].get<std::vector<int64_t>>();
          std::vector<int64_t> composed;
          for (int64_t k : lp.kept) {
            if (k >= int64_t(ids.size())) {
              ok = false;
              break;
            }
            composed.push_back(ids[size_t(k)]);
          }
          al[key] = composed;
        }
        if (!ok) {
          log_warn("{}: ancestor {} has an unusable mapping; lineage stops here", parent_report.string(),
                   a["fingerprint"].dump());
          break;
        }
        a["layers"] = al;
        ancestors.push_back(a);
      }
    }
  }
  r["ancestors"] = ancestors;
  out.report = std::move(r);
  return out;
}

namespace {
// "VmHWM ... RssAnon ... RssFile" of this process, for --verbose memory accounting.
std::string memory_line() {
  std::ifstream in("/proc/self/status");
  std::string line, out;
  while (std::getline(in, line))
    if (line.rfind("VmHWM", 0) == 0 || line.rfind("RssAnon", 0) == 0 || line.rfind("RssFile", 0) == 0) {
      line.erase(std::remove(line.begin(), line.end(), '\t'), line.end());
      out += line + "  ";
    }
  return out;
}

// Drop the source mappings' pages from this process (they stay in the page cache): opening
// and validating touches a page per quantized weight's shape tensor, which otherwise counts
// as resident memory for the rest of the run.
void release_source_pages(const Checkpoint& ck) {
  for (const auto& f : ck.files()) {
    const MappedFile& m = f->file();
    if (m.size() > 0) ::madvise(const_cast<std::byte*>(m.data()), m.size(), MADV_DONTNEED);
  }
}
}  // namespace

PruneOutcome prune_model(const PruneRequest& req) {
  check_output(req.out, OutputKind::kDirectory, req.force,
               {{"model directory", req.model_dir}, {"--stats file", req.stats_path}});
  auto ck = Checkpoint::open(req.model_dir);
  log_debug("memory after opening the source: {}", memory_line());
  release_source_pages(*ck);
  ExpertStats stats = ExpertStats::load(req.stats_path);
  PruneOutcome out = plan_prune(*ck, stats, req);
  for (const auto& w : out.plan.warnings) log_warn("{}", w);
  if (!out.plan.is_uniform)
    log_warn(
        "layers keep different expert counts: written as 'sickle_experts_per_layer' in config.json, which "
        "sickle "
        "loads; vLLM and HF transformers read only n_routed_experts and will not load this checkpoint");
  RewriteOptions ro;
  ro.out = req.out;
  ro.force = req.force;
  ro.max_shard_bytes = req.max_shard_bytes;
  ro.progress = req.progress;
  release_source_pages(*ck);
  out.rewrite = rewrite_pruned(*ck, out.plan, out.report, ro);
  log_debug("memory after writing: {}", memory_line());
  out.report["output_fingerprint"] = out.rewrite.out_fingerprint;
  return out;
}

}  // namespace sickle
