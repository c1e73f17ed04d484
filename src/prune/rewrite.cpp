#include "prune/rewrite.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <set>
#include <thread>
#include <unordered_map>

#include "base/error.h"
#include "base/hash.h"
#include "base/log.h"
#include "io/writer.h"
#include "prune/fingerprint.h"

namespace sickle {
namespace fs = std::filesystem;
using json = nlohmann::json;

bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t i2 = i, j2 = j;
      while (i2 < a.size() && std::isdigit(static_cast<unsigned char>(a[i2]))) ++i2;
      while (j2 < b.size() && std::isdigit(static_cast<unsigned char>(b[j2]))) ++j2;
      std::string_view na(a.data() + i, i2 - i), nb(b.data() + j, j2 - j);
      while (na.size() > 1 && na[0] == '0') na.remove_prefix(1);
      while (nb.size() > 1 && nb[0] == '0') nb.remove_prefix(1);
      if (na.size() != nb.size()) return na.size() < nb.size();
      if (na != nb) return na < nb;
      i = i2;
      j = j2;
      continue;
    }
    if (a[i] != b[j]) return a[i] < b[j];
    ++i;
    ++j;
  }
  if ((a.size() - i) != (b.size() - j)) return (a.size() - i) < (b.size() - j);
  return a < b;
}

json pruned_config(const Checkpoint& src, const PrunePlan& plan) {
  json root = src.config_json();
  json& text = text_config_of(root);
  const ModelConfig& cfg = src.config();
  int64_t max_kept = 0;
  for (const auto& [il, lp] : plan.layers) max_kept = std::max<int64_t>(max_kept, int64_t(lp.kept.size()));
  text["n_routed_experts"] = max_kept;
  if (&text != &root && root.contains("n_routed_experts")) root["n_routed_experts"] = max_kept;
  if (plan.is_uniform) {
    text.erase("sickle_experts_per_layer");
  } else {
    std::vector<int64_t> per_layer(size_t(cfg.num_hidden_layers), 0);
    for (const auto& [il, lp] : plan.layers) per_layer[size_t(il)] = int64_t(lp.kept.size());
    text["sickle_experts_per_layer"] = per_layer;
  }
  return root;
}

namespace {

struct OutTensor {
  std::string name;  // output name
  const SafetensorsFile* file = nullptr;
  const TensorInfo* info = nullptr;
  std::vector<int64_t> rows;  // empty: whole tensor; else the sliced rows
  std::vector<int64_t> shape;
};

// Parses "<prefix>model.layers.<il>.<rest>"; returns false for other names.
bool parse_layer_name(const std::string& name, const std::string& prefix, int64_t& il, std::string& rest) {
  const std::string head = prefix + "model.layers.";
  if (name.compare(0, head.size(), head) != 0) return false;
  size_t p = head.size(), q = p;
  while (q < name.size() && std::isdigit(static_cast<unsigned char>(name[q]))) ++q;
  if (q == p || q >= name.size() || name[q] != '.') return false;
  il = std::stoll(name.substr(p, q - p));
  rest = name.substr(q + 1);
  return true;
}

// Hash of the tensor's output bytes, read from the source file with pread into a small buffer:
// touching the mapping instead would count every source page in this process's RSS.
uint64_t source_hash(const OutTensor& t, std::vector<std::byte>& buf) {
  TensorSource s = t.rows.empty() ? TensorSource::from_file(*t.file, *t.info)
                                  : TensorSource::rows_from_file(*t.file, *t.info, t.rows);
  Hasher h;
  for (const auto& c : s.chunks) {
    if (c.src_fd < 0) {
      h.update(c.ptr, c.size);
      continue;
    }
    uint64_t off = c.src_offset;
    size_t left = c.size;
    while (left > 0) {
      ssize_t n = ::pread(c.src_fd, buf.data(), std::min(left, buf.size()), off_t(off));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        fail("{}: read failed at offset {}: {}", t.file->path().string(), off, std::strerror(errno));
      h.update(buf.data(), size_t(n));
      off += uint64_t(n);
      left -= size_t(n);
    }
  }
  return h.digest();
}

}  // namespace

RewriteResult rewrite_pruned(const Checkpoint& src, const PrunePlan& plan, json report,
                             const RewriteOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  const ModelConfig& cfg = src.config();
  const std::string& prefix = cfg.tensor_prefix;
  RewriteResult res;
  std::unordered_map<int64_t, std::vector<int64_t>> new_id;  // il -> old id -> new id (-1 dropped)
  for (const auto& [il, lp] : plan.layers) {
    auto& m = new_id[il];
    m.assign(size_t(lp.n_experts), -1);
    for (size_t i = 0; i < lp.kept.size(); ++i) m[size_t(lp.kept[i])] = int64_t(i);
  }
  std::vector<OutTensor> outs;
  std::set<int64_t> untouched_moe;  // layers with experts that the plan does not cover (MTP)
  for (const auto& f : src.files()) {
    for (const auto& t : f->tensors()) {
      OutTensor o{t.name, f.get(), &t, {}, t.shape};
      int64_t il;
      std::string rest;
      if (parse_layer_name(t.name, prefix, il, rest)) {
        auto it = new_id.find(il);
        if (it != new_id.end()) {
          const auto& ids = it->second;
          if (rest.rfind("mlp.experts.", 0) == 0) {
            size_t p = 12, q = p;
            while (q < rest.size() && std::isdigit(static_cast<unsigned char>(rest[q]))) ++q;
            if (q == p || q >= rest.size() || rest[q] != '.')
              fail("{}: cannot parse expert id in tensor '{}'", src.dir().string(), t.name);
            int64_t e = std::stoll(rest.substr(p, q - p));
            if (e < 0 || e >= int64_t(ids.size()))
              fail("{}: tensor '{}' names expert {} but layer {} has {} experts", src.dir().string(), t.name,
                   e, il, ids.size());
            if (ids[size_t(e)] < 0) {
              ++res.n_dropped;
              continue;
            }
            o.name =
                fmt::format("{}model.layers.{}.mlp.experts.{}{}", prefix, il, ids[size_t(e)], rest.substr(q));
            if (ids[size_t(e)] != e) ++res.n_renamed;
          } else if (rest == "mlp.gate.weight" || rest == "mlp.gate.e_score_correction_bias") {
            const auto& lp = plan.layers.at(il);
            if (t.shape.empty() || t.shape[0] != lp.n_experts)
              fail("{}: tensor '{}' has shape {}, expected {} rows (one per expert)", src.dir().string(),
                   t.name, shape_to_string(t.shape), lp.n_experts);
            o.rows = lp.kept;
            o.shape[0] = int64_t(lp.kept.size());
            ++res.n_sliced;
          }
        } else if (rest.rfind("mlp.experts.", 0) == 0 && il >= cfg.num_hidden_layers) {
          untouched_moe.insert(il);
        }
      }
      outs.push_back(std::move(o));
    }
  }
  for (int64_t il : untouched_moe)
    log_warn("layer {} (beyond num_hidden_layers: the MTP layer, unused by inference) is copied unpruned",
             il);
  std::sort(outs.begin(), outs.end(),
            [](const OutTensor& a, const OutTensor& b) { return natural_less(a.name, b.name); });

  json config = pruned_config(src, plan);
  ModelConfig out_cfg = ModelConfig::from_json(config, (opt.out / "config.json").string());
  std::vector<TensorSignature> sig;
  uint64_t total = 0;
  for (const auto& o : outs) {
    sig.push_back(TensorSignature{o.name, o.info->dtype, o.shape});
    uint64_t row_bytes = o.rows.empty() ? 0 : o.info->nbytes() / uint64_t(o.info->shape[0]);
    total += o.rows.empty() ? o.info->nbytes() : row_bytes * o.rows.size();
  }
  res.out_fingerprint = model_fingerprint(out_cfg, std::move(sig));
  report["output_fingerprint"] = res.out_fingerprint;

  // Refuse early rather than fail near the end: the output needs `total` bytes.
  {
    fs::path parent = opt.out.has_parent_path() ? opt.out.parent_path() : fs::path(".");
    struct statvfs vs {};
    if (::statvfs(parent.c_str(), &vs) == 0) {
      uint64_t avail = uint64_t(vs.f_bavail) * uint64_t(vs.f_frsize);
      if (avail < total)
        fail("{}: not enough free space: the pruned checkpoint needs {}, {} is available", parent.string(),
             format_bytes(double(total)), format_bytes(double(avail)));
    }
  }

  WriterOptions wo;
  wo.force = opt.force;
  wo.max_shard_bytes = opt.max_shard_bytes;
  wo.always_index = true;
  CheckpointWriter writer(opt.out, wo);
  // Hash the sources on a second thread that trails the writer: it hashes a tensor only once
  // the writer has copied it, so it reads pages the copy just brought into the page cache
  // instead of competing with the copy for the disk.
  std::atomic<uint64_t> copied{0};
  std::atomic<bool> abandon{false};
  auto hashes = std::async(std::launch::async, [&outs, &copied, &abandon] {
    std::unordered_map<std::string, uint64_t> h;
    std::vector<std::byte> buf(8u << 20);
    uint64_t need = 0;
    for (const auto& o : outs) {
      need +=
          o.rows.empty() ? o.info->nbytes() : o.info->nbytes() / uint64_t(o.info->shape[0]) * o.rows.size();
      while (copied.load() < need && !abandon.load())
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      if (abandon.load()) break;
      h.emplace(o.name, source_hash(o, buf));
    }
    return h;
  });
  struct Abandon {  // on any exit (error included), never leave the hasher waiting
    std::atomic<bool>& flag;
    ~Abandon() { flag = true; }
  } abandon_guard{abandon};
  {
    std::unique_ptr<Progress> bar;
    if (opt.progress) bar = std::make_unique<Progress>("prune", total, "B");
    writer.on_bytes = [&](uint64_t n) {
      copied += n;
      if (bar) bar->add(n);
    };
    for (const auto& o : outs) {
      TensorSource s = o.rows.empty() ? TensorSource::from_file(*o.file, *o.info)
                                      : TensorSource::rows_from_file(*o.file, *o.info, o.rows);
      writer.add(o.name, o.info->dtype, o.shape, std::move(s));
    }
    // Non-tensor files: tokenizer, chat template, generation config, custom code...
    for (auto it = fs::recursive_directory_iterator(src.dir()); it != fs::recursive_directory_iterator();
         ++it) {
      const fs::path rel = fs::relative(it->path(), src.dir());
      const std::string top = rel.begin()->string();
      if (!top.empty() && top[0] == '.') {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (!it->is_regular_file()) continue;
      const std::string fname = rel.string();
      if (it->path().extension() == ".safetensors" || fname == "model.safetensors.index.json" ||
          fname == "config.json" || fname == "prune_report.json")
        continue;
      writer.copy_file(it->path(), fname);
      ++res.n_files_copied;
    }
    writer.write_text("config.json", config.dump(2) + "\n");
    // Kimi-K2.5's vision tower and projector: copied as stored, like every tensor checksummed
    // against the source before the output is committed (a mismatch removes the output).
    int64_t n_vision = 0;
    uint64_t vision_bytes = 0;
    for (const auto& o : outs)
      if (o.name.rfind("vision_tower.", 0) == 0 || o.name.rfind("mm_projector.", 0) == 0) {
        ++n_vision;
        vision_bytes += o.info->nbytes();
      }
    if (n_vision)
      report["vision"] = {{"tensors", n_vision},
                          {"bytes", vision_bytes},
                          {"bit_exact", true},
                          {"note", "vision_tower.* and mm_projector.* copied unchanged; checksums verified"}};
    writer.write_text("prune_report.json", report.dump(1) + "\n");
    auto t_commit = std::chrono::steady_clock::now();
    auto written = writer.commit();
    auto t_verify = std::chrono::steady_clock::now();
    if (bar) bar->finish();
    copied = UINT64_MAX;  // everything landed (also covers any byte not reported by on_bytes)
    auto expect = hashes.get();
    auto t_end = std::chrono::steady_clock::now();
    res.seconds_copy = std::chrono::duration<double>(t_commit - t0).count();
    res.seconds_commit = std::chrono::duration<double>(t_verify - t_commit).count();
    res.seconds_source_hash_wait = std::chrono::duration<double>(t_end - t_verify).count();
    std::string bad;
    for (const auto& w : written) {
      auto it = expect.find(w.name);
      if (it == expect.end()) {
        bad = fmt::format("unexpected tensor '{}' in {}", w.name, w.file);
        break;
      }
      if (it->second != w.checksum) {
        bad = fmt::format("tensor '{}' in {}: checksum {} of the written bytes differs from the source's {}",
                          w.name, w.file, hex64(w.checksum), hex64(it->second));
        break;
      }
      ++res.n_verified;
    }
    if (bad.empty() && written.size() != expect.size())
      bad = fmt::format("{} tensors landed, {} expected", written.size(), expect.size());
    if (!bad.empty()) {
      std::error_code ec;
      fs::remove_all(opt.out, ec);
      fail("{}: verification failed, output removed: {}", opt.out.string(), bad);
    }
  }
  res.tensor_bytes = total;
  res.n_tensors = int64_t(outs.size());
  res.config = std::move(config);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace sickle
