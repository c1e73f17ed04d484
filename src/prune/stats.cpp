#include "prune/stats.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <numeric>
#include <set>

#include "base/error.h"
#include "base/hash.h"
#include "base/log.h"
#include "io/output_path.h"
#include "io/safetensors.h"

namespace sickle {
namespace fs = std::filesystem;
using json = nlohmann::json;

LayerStats::LayerStats(int64_t n)
    : count(size_t(n)),
      gate_sum(size_t(n)),
      reap_sum(size_t(n)),
      ean_sum(size_t(n)),
      ean_sq_sum(size_t(n)),
      max_act(size_t(n)) {}

void LayerStats::add(const LayerStats& o) {
  SICKLE_CHECK(o.n_experts() == n_experts(), "{} vs {}", o.n_experts(), n_experts());
  tokens += o.tokens;
  for (size_t j = 0; j < count.size(); ++j) {
    count[j] += o.count[j];
    gate_sum[j] += o.gate_sum[j];
    reap_sum[j] += o.reap_sum[j];
    ean_sum[j] += o.ean_sum[j];
    ean_sq_sum[j] += o.ean_sq_sum[j];
    max_act[j] = std::max(max_act[j], o.max_act[j]);
  }
}

LayerStats LayerStats::select(const std::vector<int64_t>& ids) const {
  LayerStats r(int64_t(ids.size()));
  r.tokens = tokens;
  for (size_t i = 0; i < ids.size(); ++i) {
    size_t j = size_t(ids[i]);
    SICKLE_CHECK(ids[i] >= 0 && j < count.size());
    r.count[i] = count[j];
    r.gate_sum[i] = gate_sum[j];
    r.reap_sum[i] = reap_sum[j];
    r.ean_sum[i] = ean_sum[j];
    r.ean_sq_sum[i] = ean_sq_sum[j];
    r.max_act[i] = max_act[j];
  }
  return r;
}

std::string StatsMeta::data_key() const {
  json j = json::array();
  for (const auto& d : data) j.push_back(d.hash);
  return j.dump() + "|" + data_format + "|" + data_options + "|" + std::to_string(seq_len);
}

std::string utc_now_iso() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

namespace {
std::vector<double>& stat_ref(LayerStats& l, std::string_view name) {
  if (name == "count") return l.count;
  if (name == "gate_sum") return l.gate_sum;
  if (name == "reap_sum") return l.reap_sum;
  if (name == "ean_sum") return l.ean_sum;
  if (name == "ean_sq_sum") return l.ean_sq_sum;
  SICKLE_CHECK(name == "max_act");
  return l.max_act;
}

std::map<std::string, std::string> meta_to_map(const StatsMeta& m) {
  json data = json::array();
  for (const auto& d : m.data) data.push_back({{"path", d.path}, {"hash", d.hash}, {"bytes", d.bytes}});
  return {{"format", "sickle-expert-stats"},
          {"stats_version", "1"},
          {"model_fingerprint", m.model_fingerprint},
          {"model_dir", m.model_dir},
          {"data", data.dump()},
          {"data_format", m.data_format},
          {"data_options", m.data_options},
          {"samples", std::to_string(m.samples)},
          {"tokens", std::to_string(m.tokens)},
          {"seq_len", std::to_string(m.seq_len)},
          {"n_shards", std::to_string(m.n_shards)},
          {"shards", json(m.shards).dump()},
          {"sickle_version", m.sickle_version},
          {"created", m.created}};
}

// A count from the metadata: a non-negative integer (they are summed when shards merge).
int64_t meta_int(const std::map<std::string, std::string>& md, const std::string& key,
                 const std::string& label) {
  auto it = md.find(key);
  if (it == md.end()) fail("{}: metadata field '{}' is missing", label, key);
  const std::string& s = it->second;
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty())
    fail("{}: metadata field '{}' = '{}' is not an integer", label, key, s);
  if (v < 0) fail("{}: metadata field '{}' = {} is negative", label, key, v);
  return v;
}

int64_t checked_sum(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) fail("the merged {} ({} + {}) overflow 64 bits", what, a, b);
  return r;
}

std::string meta_str(const std::map<std::string, std::string>& md, const std::string& key,
                     const std::string& label) {
  auto it = md.find(key);
  if (it == md.end()) fail("{}: metadata field '{}' is missing", label, key);
  return it->second;
}
}  // namespace

void ExpertStats::save(const fs::path& path) const {
  json header = json::object();
  header["__metadata__"] = meta_to_map(meta);
  uint64_t off = 0;
  std::vector<const std::vector<double>*> order;
  std::vector<double> tokens_buf;
  tokens_buf.reserve(layers.size());
  for (const auto& [il, l] : layers) tokens_buf.push_back(l.tokens);
  size_t li = 0;
  for (const auto& [il, l] : layers) {
    auto& ml = const_cast<LayerStats&>(l);
    for (const char* s : kStatNames) {
      const auto& v = stat_ref(ml, s);
      SICKLE_CHECK(int64_t(v.size()) == l.n_experts());
      header[fmt::format("layers.{}.{}", il, s)] = {
          {"dtype", "F64"}, {"shape", {v.size()}}, {"data_offsets", {off, off + v.size() * 8}}};
      off += v.size() * 8;
      order.push_back(&v);
    }
    header[fmt::format("layers.{}.tokens", il)] = {
        {"dtype", "F64"}, {"shape", {1}}, {"data_offsets", {off, off + 8}}};
    off += 8;
    order.push_back(nullptr);  // placeholder for tokens
    ++li;
  }
  std::string text = header.dump();
  while (text.size() % 8) text.push_back(' ');
  std::string bytes;
  uint64_t n = text.size();
  bytes.append(reinterpret_cast<const char*>(&n), 8);
  bytes += text;
  li = 0;
  for (const auto* v : order) {
    if (v) {
      bytes.append(reinterpret_cast<const char*>(v->data()), v->size() * 8);
    } else {
      bytes.append(reinterpret_cast<const char*>(&tokens_buf[li++]), 8);
    }
  }
  TempOutput tmp(path, OutputKind::kFile);  // `.<name>.tmp-XXXXXX`, removed unless committed
  const int fd = tmp.fd();
  const std::string label = tmp.path().string();
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t w = ::write(fd, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("{}: write failed: {}", label, std::strerror(errno));
    }
    p += w;
    left -= size_t(w);
  }
  if (::fsync(fd) != 0) fail("{}: cannot flush: {}", label, std::strerror(errno));
  tmp.commit(/*replace=*/true);
}

ExpertStats ExpertStats::load(const fs::path& path) {
  auto f = SafetensorsFile::open(path);
  const std::string label = path.string();
  const auto& md = f->metadata();
  auto fmt_it = md.find("format");
  if (fmt_it == md.end() || fmt_it->second != "sickle-expert-stats")
    fail("{}: not a sickle statistics file (metadata 'format' should be 'sickle-expert-stats')", label);
  ExpertStats s;
  s.meta.model_fingerprint = meta_str(md, "model_fingerprint", label);
  if (auto it = md.find("model_dir"); it != md.end()) s.meta.model_dir = it->second;
  try {
    json data = json::parse(meta_str(md, "data", label));
    for (const auto& d : data)
      s.meta.data.push_back(DataFileInfo{d.at("path").get<std::string>(), d.at("hash").get<std::string>(),
                                         d.value("bytes", uint64_t(0))});
    s.meta.shards = json::parse(meta_str(md, "shards", label)).get<std::vector<int64_t>>();
  } catch (const json::exception& e) {
    fail("{}: metadata 'data' or 'shards' is malformed: {}", label, e.what());
  }
  if (auto it = md.find("data_format"); it != md.end()) s.meta.data_format = it->second;
  if (auto it = md.find("data_options"); it != md.end()) s.meta.data_options = it->second;
  if (auto it = md.find("sickle_version"); it != md.end()) s.meta.sickle_version = it->second;
  if (auto it = md.find("created"); it != md.end()) s.meta.created = it->second;
  s.meta.samples = meta_int(md, "samples", label);
  s.meta.tokens = meta_int(md, "tokens", label);
  s.meta.seq_len = meta_int(md, "seq_len", label);
  s.meta.n_shards = meta_int(md, "n_shards", label);
  if (s.meta.n_shards < 1 || s.meta.n_shards > kMaxShards)
    fail("{}: n_shards = {} is outside [1, {}]", label, s.meta.n_shards, kMaxShards);
  for (int64_t i : s.meta.shards)
    if (i < 0 || i >= s.meta.n_shards)
      fail("{}: shard index {} out of range for n_shards {}", label, i, s.meta.n_shards);

  // Group tensors by layer; every layer needs every stat with one consistent length.
  // Names are exactly what save() writes: "layers.01.count" or "layers.+1.count" would name
  // layer 1 too.
  std::map<int64_t, std::map<std::string, const TensorInfo*>> by_layer;
  for (const auto& t : f->tensors()) {
    int64_t il = -1;
    std::string_view name = t.name, rest;
    if (name.starts_with("layers.")) {
      rest = name.substr(7);
      auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), il);
      if (ec != std::errc()) il = -1;
      rest = rest.substr(size_t(end - rest.data()));
    }
    const std::string stat = rest.empty() ? std::string() : std::string(rest.substr(1));
    if (il < 0 || stat.empty() || fmt::format("layers.{}.{}", il, stat) != name ||
        stat.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") != std::string::npos)
      fail("{}: unexpected tensor '{}' (expected layers.<L>.<stat>)", label, t.name);
    if (t.dtype != DType::F64)
      fail("{}: tensor '{}' has dtype {}, expected F64", label, t.name, dtype_name(t.dtype));
    by_layer[il][stat] = &t;
  }
  for (const auto& [il, m] : by_layer) {
    auto tk = m.find("tokens");
    if (tk == m.end()) fail("{}: layer {} has no 'layers.{}.tokens'", label, il, il);
    if (tk->second->shape != std::vector<int64_t>{1})
      fail("{}: 'layers.{}.tokens' has shape {}, expected [1]", label, il,
           shape_to_string(tk->second->shape));
    auto c = m.find("count");
    if (c == m.end()) fail("{}: layer {} has no 'layers.{}.count'", label, il, il);
    if (c->second->shape.size() != 1) fail("{}: 'layers.{}.count' must be 1-D", label, il);
    int64_t n = c->second->shape[0];
    LayerStats l(n);
    std::memcpy(&l.tokens, f->view(*tk->second).data, 8);
    for (const char* sn : kStatNames) {
      auto it = m.find(sn);
      if (it == m.end()) fail("{}: layer {} has no 'layers.{}.{}'", label, il, il, sn);
      if (it->second->shape != std::vector<int64_t>{n})
        fail("{}: 'layers.{}.{}' has shape {}, expected [{}] like layers.{}.count", label, il, sn,
             shape_to_string(it->second->shape), n, il);
      auto& v = stat_ref(l, sn);
      std::memcpy(v.data(), f->view(*it->second).data, size_t(n) * 8);
      for (double x : v)
        if (!std::isfinite(x) || x < 0) fail("{}: 'layers.{}.{}' has a bad value {}", label, il, sn, x);
    }
    if (m.size() != std::size(kStatNames) + 1) fail("{}: layer {} has unexpected statistics", label, il);
    s.layers.emplace(il, std::move(l));
  }
  return s;
}

ExpertStats merge_stats(const std::vector<ExpertStats>& parts, const std::vector<std::string>& labels,
                        const MergeOptions& opt, std::vector<int64_t>* missing) {
  SICKLE_CHECK(!parts.empty() && parts.size() == labels.size());
  const ExpertStats& a = parts[0];
  bool same_data = true;
  for (size_t i = 1; i < parts.size(); ++i) {
    const ExpertStats& b = parts[i];
    if (b.meta.model_fingerprint != a.meta.model_fingerprint)
      fail(
          "{}: statistics are of model {} but {} is of model {}: refusing to merge statistics of different "
          "models",
          labels[i], b.meta.model_fingerprint, labels[0], a.meta.model_fingerprint);
    if (b.layers.size() != a.layers.size())
      fail("{}: {} layers but {} has {}", labels[i], b.layers.size(), labels[0], a.layers.size());
    for (const auto& [il, l] : a.layers) {
      auto it = b.layers.find(il);
      if (it == b.layers.end())
        fail("{}: has no statistics for layer {} (present in {})", labels[i], il, labels[0]);
      if (it->second.n_experts() != l.n_experts())
        fail("{}: layer {} has {} experts but {} has {}", labels[i], il, it->second.n_experts(), labels[0],
             l.n_experts());
    }
    if (b.meta.data_key() != a.meta.data_key()) same_data = false;
  }
  if (!same_data && !opt.allow_different_data)
    fail(
        "{} and the other inputs were computed on different calibration data or settings (data files, "
        "format, "
        "packing, seq len): pass --allow-different-data to sum them anyway",
        labels[0]);
  ExpertStats out;
  out.meta = a.meta;
  out.meta.created = utc_now_iso();
  if (same_data) {
    // Shards of one run: same n, disjoint indices.
    std::map<int64_t, size_t> owner;
    for (size_t i = 0; i < parts.size(); ++i) {
      if (parts[i].meta.n_shards != a.meta.n_shards)
        fail("{}: is a shard of {} but {} is a shard of {}: shards of different splits overlap", labels[i],
             parts[i].meta.n_shards, labels[0], a.meta.n_shards);
      for (int64_t s : parts[i].meta.shards) {
        auto [it, ok] = owner.emplace(s, i);
        if (!ok)
          fail("{}: shard {}/{} is also in {}: refusing to count the same samples twice", labels[i], s,
               a.meta.n_shards, labels[it->second]);
      }
    }
    out.meta.shards.clear();
    for (const auto& [s, _] : owner) out.meta.shards.push_back(s);
    std::vector<int64_t> miss;
    for (int64_t s = 0; s < a.meta.n_shards; ++s)
      if (!owner.count(s)) miss.push_back(s);
    if (!miss.empty() && opt.require_complete)
      fail("shards {} of {} are missing (merge is incomplete and --require-complete was given)",
           json(miss).dump(), a.meta.n_shards);
    if (missing) *missing = miss;
  } else {
    // Different calibration sets: each input stands for its own data; record them all.
    for (size_t i = 1; i < parts.size(); ++i)
      for (const auto& d : parts[i].meta.data) out.meta.data.push_back(d);
    out.meta.data_options = "combined";
    if (missing) missing->clear();
  }
  out.meta.samples = 0;
  out.meta.tokens = 0;
  for (const auto& p : parts) {
    out.meta.samples = checked_sum(out.meta.samples, p.meta.samples, "sample counts");
    out.meta.tokens = checked_sum(out.meta.tokens, p.meta.tokens, "token counts");
  }
  out.layers = a.layers;
  for (size_t i = 1; i < parts.size(); ++i)
    for (const auto& [il, l] : parts[i].layers) out.layers.at(il).add(l);
  return out;
}

std::string describe_stats(const ExpertStats& s, int64_t n_top) {
  std::string o;
  const auto& m = s.meta;
  o += fmt::format("model fingerprint  {}\n", m.model_fingerprint);
  if (!m.model_dir.empty()) o += fmt::format("model dir          {}\n", m.model_dir);
  o += fmt::format("created            {} (sickle {})\n", m.created, m.sickle_version);
  o += fmt::format("data               {} ({})\n", m.data_format, m.data_options);
  for (const auto& d : m.data)
    o += fmt::format("  {}  {}  {}\n", d.hash, format_bytes(double(d.bytes)), d.path);
  std::string shards;
  for (int64_t i : m.shards) shards += (shards.empty() ? "" : ",") + std::to_string(i);
  o += fmt::format("samples / tokens   {} / {}   seq len {}   shards {{{}}} of {}\n", m.samples, m.tokens,
                   m.seq_len, shards, m.n_shards);
  o += fmt::format("\n{:>5} {:>10} {:>7} {:>6} {:>9}  {:<40}  {}\n", "layer", "tokens", "experts", "unused",
                   "imbalance", "top REAP (id:score)", "bottom REAP among chosen");
  for (const auto& [il, l] : s.layers) {
    int64_t n = l.n_experts();
    int64_t unused = 0;
    double max_c = 0, sum_c = 0;
    std::vector<std::pair<double, int64_t>> reap;
    for (int64_t j = 0; j < n; ++j) {
      double c = l.count[size_t(j)];
      if (c == 0) ++unused;
      max_c = std::max(max_c, c);
      sum_c += c;
      if (c > 0) reap.emplace_back(l.reap_sum[size_t(j)] / c, j);
    }
    std::sort(reap.begin(), reap.end(),
              [](auto& x, auto& y) { return x.first != y.first ? x.first > y.first : x.second < y.second; });
    // Load imbalance: the busiest expert's load over the mean load (1 = perfectly balanced).
    double imbalance = (n > 0 && sum_c > 0) ? max_c / (sum_c / double(n)) : 0;
    std::string top, bottom;
    for (int64_t i = 0; i < std::min<int64_t>(n_top, int64_t(reap.size())); ++i)
      top += fmt::format("{}{}:{:.3g}", i ? " " : "", reap[size_t(i)].second, reap[size_t(i)].first);
    for (int64_t i = 0; i < std::min<int64_t>(n_top, int64_t(reap.size())); ++i) {
      const auto& r = reap[reap.size() - 1 - size_t(i)];
      bottom += fmt::format("{}{}:{:.3g}", i ? " " : "", r.second, r.first);
    }
    o += fmt::format("{:>5} {:>10.0f} {:>7} {:>6} {:>8.2f}x  {:<40}  {}\n", il, l.tokens, n, unused,
                     imbalance, top, bottom);
  }
  return o;
}

}  // namespace sickle
