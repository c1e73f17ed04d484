// Tests of src/prune: criteria and plans on hand-made statistics, the statistics file and its
// merge, calibration data sharding, the rewriter (byte equality, renumbering, slicing), the
// report, re-pruning through the report, bad input, and the equivalence of a pruned model
// with the original model whose dropped experts are masked out of routing.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>

#include "base/error.h"
#include "base/hash.h"
#include "base/test_param_name.h"
#include "io/checkpoint.h"
#include "model/model.h"
#include "model/synth.h"
#include "prune/calib_data.h"
#include "prune/criteria.h"
#include "prune/fingerprint.h"
#include "prune/observer.h"
#include "prune/plan.h"
#include "prune/prune.h"
#include "prune/rewrite.h"
#include "prune/stats.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

#include "base/test_temp_dir.h"

namespace sickle {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

// A fresh directory under the system temp dir, removed at scope exit.
struct TempDir : test_util::TempDir {
  TempDir() : test_util::TempDir("sickle-prune-test") { SICKLE_CHECK(!path.empty()); }
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

fs::path make_synth(const fs::path& dir, const std::string& preset, uint64_t seed = 1) {
  SynthOptions o;
  o.preset = preset;
  o.seed = seed;
  o.progress = false;
  synth_write(synth_plan(o), dir, o);
  return dir;
}

// Hand-made layer: count, gate and norm given per expert (each token same g and norm).
LayerStats hand_layer(const std::vector<double>& count, const std::vector<double>& g,
                      const std::vector<double>& norm) {
  LayerStats l(int64_t(count.size()));
  for (size_t j = 0; j < count.size(); ++j) {
    l.count[j] = count[j];
    l.gate_sum[j] = count[j] * g[j];
    l.reap_sum[j] = count[j] * g[j] * norm[j];
    l.ean_sum[j] = count[j] * norm[j];
    l.ean_sq_sum[j] = count[j] * norm[j] * norm[j];
    l.max_act[j] = count[j] > 0 ? norm[j] / 2 : 0;
  }
  l.tokens = 100;
  return l;
}

ModelConfig flat_config(int64_t n_layers, int64_t E, int64_t k, int64_t n_group = 1, int64_t topk_group = 1) {
  ModelConfig c;
  c.num_hidden_layers = n_layers;
  c.first_k_dense_replace = 1;
  c.n_routed_experts = E;
  c.num_experts_per_tok = k;
  c.n_group = n_group;
  c.topk_group = topk_group;
  return c;
}

// ---------------------------------------------------------------- criteria

TEST(Criteria, EachCriterionFromRawSums) {
  // expert: 0 frequent/small, 1 rare/large, 2 never chosen, 3 medium
  LayerStats l = hand_layer({10, 2, 0, 5}, {0.5, 0.25, 0, 0.4}, {1.0, 8.0, 0, 2.0});
  auto s = [&](Criterion c) { return expert_scores(l, c, 1, 0); };
  EXPECT_EQ(s(Criterion::kReap), (std::vector<double>{0.5, 2.0, 0, 0.8}));
  EXPECT_EQ(s(Criterion::kFrequency), (std::vector<double>{10, 2, 0, 5}));
  EXPECT_EQ(s(Criterion::kWeightedFrequency), (std::vector<double>{5, 0.5, 0, 2}));
  EXPECT_EQ(s(Criterion::kEan), (std::vector<double>{10, 16, 0, 10}));
  EXPECT_EQ(s(Criterion::kEanMean), (std::vector<double>{1, 8, 0, 2}));
  EXPECT_EQ(s(Criterion::kWeightedEan), (std::vector<double>{5, 4, 0, 4}));
  auto r1 = expert_scores(l, Criterion::kRandom, 1, 7), r2 = expert_scores(l, Criterion::kRandom, 1, 7),
       r3 = expert_scores(l, Criterion::kRandom, 1, 8);
  EXPECT_EQ(r1, r2);
  EXPECT_NE(r1, r3);
  for (double x : r1) EXPECT_TRUE(x > 0 && x <= 1);
  // random follows the original id: expert 3 seen through a mapping keeps its score
  LayerStats sub = l.select({1, 3});
  auto rm = expert_scores(sub, Criterion::kRandom, 1, 7, {1, 3});
  EXPECT_EQ(rm[0], r1[1]);
  EXPECT_EQ(rm[1], r1[3]);
  EXPECT_THROW(parse_criterion("reaps"), Error);
  for (const auto& n : criterion_names()) EXPECT_EQ(criterion_name(parse_criterion(n)), n);
}

// ---------------------------------------------------------------- plans

TEST(Plan, UniformKeepsTopScoresInOriginalOrder) {
  ModelConfig c = flat_config(2, 6, 2);
  std::map<int64_t, LayerStats> st;
  st.emplace(1, hand_layer({1, 1, 1, 1, 1, 0}, {1, 1, 1, 1, 1, 0}, {5, 1, 4, 2, 3, 0}));
  PlanOptions o;
  o.keep = 3;
  PrunePlan p = make_plan(c, st, {}, o);
  ASSERT_EQ(p.layers.size(), 1u);
  const LayerPlan& lp = p.layers.at(1);
  EXPECT_EQ(lp.kept, (std::vector<int64_t>{0, 2, 4}));
  EXPECT_EQ(lp.dropped, (std::vector<int64_t>{1, 3, 5}));
  EXPECT_TRUE(lp.order_ok);
  EXPECT_TRUE(lp.ties.empty());
  o.keep = 0;
  o.ratio = 0.5;  // removes half
  EXPECT_EQ(make_plan(c, st, {}, o).layers.at(1).kept, (std::vector<int64_t>{0, 2, 4}));
}

TEST(Plan, TiesAreReported) {
  ModelConfig c = flat_config(2, 4, 1);
  std::map<int64_t, LayerStats> st;
  st.emplace(1, hand_layer({1, 1, 1, 1}, {1, 1, 1, 1}, {3, 2, 2, 1}));
  PlanOptions o;
  o.keep = 2;
  const LayerPlan lp = make_plan(c, st, {}, o).layers.at(1);
  EXPECT_EQ(lp.kept, (std::vector<int64_t>{0, 1}));  // tie broken by lower id
  EXPECT_TRUE(lp.order_ok);
  EXPECT_EQ(lp.ties, (std::vector<int64_t>{1, 2}));
}

TEST(Plan, RefusesImpossibleBudgets) {
  std::map<int64_t, LayerStats> st;
  st.emplace(1, hand_layer(std::vector<double>(8, 1), std::vector<double>(8, 1), {8, 7, 6, 5, 4, 3, 2, 1}));
  PlanOptions o;
  auto msg = [&](const ModelConfig& c, int64_t keep) {
    o.keep = keep;
    try {
      make_plan(c, st, {}, o);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(msg(flat_config(2, 8, 2), 9).find("only 8"), std::string::npos);
  EXPECT_NE(msg(flat_config(2, 8, 4), 3).find("num_experts_per_tok"), std::string::npos);
  // grouped: 4 groups of 2
  EXPECT_NE(msg(flat_config(2, 8, 2, 4, 2), 6).find("multiple of 4"), std::string::npos);
  EXPECT_NE(msg(flat_config(2, 8, 2, 4, 2), 4).find("at least 2 per group"), std::string::npos);
  // 2 groups of 4, top-6 with topk_group 1: 1 group x 3 kept < 6
  EXPECT_NE(msg(flat_config(2, 8, 3, 2, 1), 4).find("topk_group"), std::string::npos);
  EXPECT_EQ(msg(flat_config(2, 8, 2, 2, 1), 4), "");
  // statistics of a different expert count
  EXPECT_NE(msg(flat_config(2, 16, 2), 4).find("16"), std::string::npos);
}

TEST(Plan, GroupsKeepTheSameCountEach) {
  ModelConfig c = flat_config(2, 8, 2, 2, 1);  // groups {0..3}, {4..7}
  std::map<int64_t, LayerStats> st;
  // group 0 has the 4 best experts; a flat top-4 would take them all
  st.emplace(1, hand_layer(std::vector<double>(8, 1), std::vector<double>(8, 1), {10, 9, 8, 7, 1, 2, 4, 3}));
  PlanOptions o;
  o.keep = 4;
  const LayerPlan lp = make_plan(c, st, {}, o).layers.at(1);
  EXPECT_EQ(lp.kept, (std::vector<int64_t>{0, 1, 6, 7}));
  EXPECT_FALSE(lp.order_ok);  // 6 and 7 kept over 2 and 3: the group rule, reported
  EXPECT_EQ(lp.out_of_order, (std::vector<int64_t>{6, 7}));
}

TEST(Plan, GlobalBudgetSameTotalNormalizedWithFloor) {
  ModelConfig c = flat_config(3, 6, 2);
  std::map<int64_t, LayerStats> st;
  // layer 1: one dominant expert (normalized scores small elsewhere); layer 2: flat
  st.emplace(1, hand_layer(std::vector<double>(6, 1), std::vector<double>(6, 1), {100, 1, 1, 1, 1, 1}));
  st.emplace(2,
             hand_layer(std::vector<double>(6, 1), std::vector<double>(6, 1), {10, 9.9, 9.8, 9.7, 9.6, 9.5}));
  PlanOptions o;
  o.keep = 4;
  o.budget = Budget::kGlobal;
  PrunePlan p = make_plan(c, st, {}, o);
  EXPECT_EQ(p.total_kept, 8);
  EXPECT_FALSE(p.is_uniform);
  EXPECT_EQ(p.layers.at(1).kept.size(), 2u);  // the floor (top_k = 2)
  EXPECT_EQ(p.layers.at(2).kept.size(), 6u);
  o.budget = Budget::kUniform;
  EXPECT_TRUE(make_plan(c, st, {}, o).is_uniform);
}

TEST(Plan, SuperExpertsKeptWhateverTheirScore) {
  ModelConfig c = flat_config(2, 16, 2);
  std::vector<double> norm(16, 1.0);
  for (int j = 0; j < 16; ++j) norm[size_t(j)] = 2.0 + 0.01 * j;
  LayerStats l = hand_layer(std::vector<double>(16, 1), std::vector<double>(16, 1), norm);
  l.gate_sum[5] = l.reap_sum[5] = 0.001;  // lowest REAP score...
  l.max_act[5] = 1000;                    // ...but an extreme activation
  std::map<int64_t, LayerStats> st;
  st.emplace(1, l);
  EXPECT_EQ(find_super_experts(l, 3.0), (std::vector<int64_t>{5}));
  PlanOptions o;
  o.keep = 4;
  auto without = make_plan(c, st, {}, o).layers.at(1).kept;
  EXPECT_EQ(std::count(without.begin(), without.end(), 5), 0);
  o.keep_super_experts = true;
  auto with = make_plan(c, st, {}, o).layers.at(1);
  EXPECT_EQ(std::count(with.kept.begin(), with.kept.end(), 5), 1);
  EXPECT_EQ(with.kept.size(), 4u);
  EXPECT_FALSE(with.order_ok);
}

// ---------------------------------------------------------------- statistics file

ExpertStats sample_stats(const std::string& fp, int64_t shard, int64_t n) {
  ExpertStats s;
  s.meta.model_fingerprint = fp;
  s.meta.data = {DataFileInfo{"/data/a.jsonl", "0123456789abcdef", 10}};
  s.meta.data_format = "tokens";
  s.meta.data_options = "x";
  s.meta.seq_len = 64;
  s.meta.n_shards = n;
  s.meta.shards = {shard};
  s.meta.samples = 3;
  s.meta.tokens = 100 + shard;
  std::mt19937_64 rng(uint64_t(shard) + 1);
  std::uniform_real_distribution<double> u(0, 10);
  for (int64_t il : {1, 2}) {
    LayerStats l(5);
    l.tokens = 100 + double(shard);
    for (int j = 0; j < 5; ++j) {
      l.count[size_t(j)] = std::floor(u(rng));
      l.gate_sum[size_t(j)] = u(rng);
      l.reap_sum[size_t(j)] = u(rng);
      l.ean_sum[size_t(j)] = u(rng);
      l.ean_sq_sum[size_t(j)] = u(rng);
      l.max_act[size_t(j)] = u(rng);
    }
    s.layers.emplace(il, l);
  }
  return s;
}

TEST(Stats, SaveLoadRoundTripIsExact) {
  TempDir t;
  ExpertStats s = sample_stats("abc", 1, 3);
  s.save(t.path / "s.safetensors");
  ExpertStats r = ExpertStats::load(t.path / "s.safetensors");
  EXPECT_EQ(r.meta.model_fingerprint, "abc");
  EXPECT_EQ(r.meta.shards, (std::vector<int64_t>{1}));
  EXPECT_EQ(r.meta.n_shards, 3);
  EXPECT_EQ(r.meta.tokens, 101);
  EXPECT_EQ(r.meta.data_key(), s.meta.data_key());
  ASSERT_EQ(r.layers.size(), 2u);
  for (const auto& [il, l] : s.layers) {
    const auto& q = r.layers.at(il);
    EXPECT_EQ(q.tokens, l.tokens);
    EXPECT_EQ(q.count, l.count);
    EXPECT_EQ(q.reap_sum, l.reap_sum);
    EXPECT_EQ(q.max_act, l.max_act);
    EXPECT_EQ(q.ean_sq_sum, l.ean_sq_sum);
  }
  // The file follows the documented layout: layers.<L>.<stat> F64 [n], layers.<L>.tokens F64 [1].
  auto f = SafetensorsFile::open(t.path / "s.safetensors");
  EXPECT_EQ(f->view("layers.2.reap_sum").shape, (std::vector<int64_t>{5}));
  EXPECT_EQ(f->view("layers.2.tokens").shape, (std::vector<int64_t>{1}));
  EXPECT_EQ(f->view("layers.1.count").dtype, DType::F64);
  EXPECT_FALSE(describe_stats(r).empty());
}

TEST(Stats, LoadRejectsForeignOrDamagedFiles) {
  TempDir t;
  ExpertStats s = sample_stats("abc", 0, 1);
  s.layers.at(1).reap_sum[2] = -1;  // sums are never negative
  s.save(t.path / "bad.safetensors");
  EXPECT_THROW(ExpertStats::load(t.path / "bad.safetensors"), Error);
  std::ofstream(t.path / "junk.safetensors") << "not a file";
  EXPECT_THROW(ExpertStats::load(t.path / "junk.safetensors"), Error);
}

// Values the file sets are bounded where they are read: tensor names are canonical (sscanf's
// "%ld" took "layers.+0." or "layers. 1." for other layers' names), shard counts are small
// enough to list (n_shards = 10^18 made merge list 10^18 missing shards), and counts cannot
// overflow when shards are summed.
TEST(Stats, LoadBoundsWhatTheFileSets) {
  TempDir t;
  auto edited = [&](const ExpertStats& s, const std::string& from, const std::string& to) {
    s.save(t.path / "s.safetensors");
    std::ifstream in(t.path / "s.safetensors", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    EXPECT_EQ(from.size(), to.size());  // the header keeps its length
    for (size_t p = bytes.find(from); p != std::string::npos; p = bytes.find(from, p + to.size()))
      bytes.replace(p, from.size(), to);
    std::ofstream(t.path / "e.safetensors", std::ios::binary | std::ios::trunc) << bytes;
    try {
      ExpertStats::load(t.path / "e.safetensors");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  ExpertStats s = sample_stats("abc", 0, 1);
  s.layers.erase(1);
  s.layers.emplace(10, s.layers.at(2));
  s.layers.erase(2);  // layer 10 only
  EXPECT_EQ(edited(s, "layers.10.", "layers.10."), "");
  EXPECT_NE(edited(s, "layers.10.", "layers.+0.").find("'layers.+0."), std::string::npos);
  EXPECT_NE(edited(s, "layers.10.", "layers. 9.").find("'layers. 9."), std::string::npos);
  EXPECT_NE(edited(s, "layers.10.", "layers.01.").find("'layers.01."), std::string::npos);
  s.meta.n_shards = 1000000000000000000;
  EXPECT_NE(edited(s, "x", "x").find("n_shards = 1000000000000000000"), std::string::npos);
  int64_t i = 0, n = 0;  // observe --shard refuses the splits load would refuse
  EXPECT_THROW(parse_shard("0/1000000000000000000", i, n), Error);
  EXPECT_NO_THROW(parse_shard("65535/65536", i, n));
  s.meta.n_shards = 1;
  s.meta.tokens = -5;
  EXPECT_NE(edited(s, "x", "x").find("'tokens' = -5"), std::string::npos);
  // Merging cannot wrap the token count around.
  ExpertStats a = sample_stats("abc", 0, 2), b = sample_stats("abc", 1, 2);
  a.meta.tokens = b.meta.tokens = INT64_MAX / 2 + 1;
  EXPECT_THROW(merge_stats({a, b}, {"a", "b"}, {}, nullptr), Error);
}

TEST(Stats, MergeSumsExactlyAndRefusesBadShards) {
  std::vector<ExpertStats> parts = {sample_stats("fp", 0, 3), sample_stats("fp", 1, 3),
                                    sample_stats("fp", 2, 3)};
  std::vector<std::string> labels = {"a", "b", "c"};
  std::vector<int64_t> missing = {99};
  ExpertStats m = merge_stats(parts, labels, {}, &missing);
  EXPECT_TRUE(missing.empty());
  EXPECT_EQ(m.meta.shards, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(m.meta.tokens, 100 + 101 + 102);
  for (int64_t il : {1, 2})
    for (size_t j = 0; j < 5; ++j) {
      const auto& a = parts[0].layers.at(il);
      const auto& b = parts[1].layers.at(il);
      const auto& c = parts[2].layers.at(il);
      EXPECT_EQ(m.layers.at(il).count[j], a.count[j] + b.count[j] + c.count[j]);
      EXPECT_EQ(m.layers.at(il).reap_sum[j], a.reap_sum[j] + b.reap_sum[j] + c.reap_sum[j]);
      EXPECT_EQ(m.layers.at(il).max_act[j], std::max({a.max_act[j], b.max_act[j], c.max_act[j]}));
    }
  // missing shard: warned (reported), refused with require_complete
  std::vector<ExpertStats> two = {parts[0], parts[2]};
  ExpertStats p = merge_stats(two, {"a", "c"}, {}, &missing);
  EXPECT_EQ(missing, (std::vector<int64_t>{1}));
  MergeOptions strict;
  strict.require_complete = true;
  EXPECT_THROW(merge_stats(two, {"a", "c"}, strict, nullptr), Error);
  // overlap: the same shard twice, or a shard of another split
  EXPECT_THROW(merge_stats({parts[0], parts[0]}, {"a", "a2"}, {}, nullptr), Error);
  EXPECT_THROW(merge_stats({parts[0], sample_stats("fp", 1, 2)}, {"a", "x"}, {}, nullptr), Error);
  // another model
  try {
    merge_stats({parts[0], sample_stats("other", 1, 3)}, {"a", "x"}, {}, nullptr);
    ADD_FAILURE() << "merged statistics of different models";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("different models"), std::string::npos);
  }
  // different data: refused unless allowed
  ExpertStats d = sample_stats("fp", 1, 3);
  d.meta.data[0].hash = "ffffffffffffffff";
  EXPECT_THROW(merge_stats({parts[0], d}, {"a", "d"}, {}, nullptr), Error);
  MergeOptions allow;
  allow.allow_different_data = true;
  EXPECT_EQ(merge_stats({parts[0], d}, {"a", "d"}, allow, nullptr).meta.data.size(), 2u);
}

// ---------------------------------------------------------------- calibration data

TEST(CalibData, ShardsPartitionTheSequencesAndLongPolicies) {
  TempDir t;
  {
    std::ofstream f(t.path / "t.jsonl");
    for (int i = 0; i < 7; ++i) {
      json j;
      std::vector<int> ids;
      for (int k = 0; k < 3 + i * 2; ++k) ids.push_back(i * 100 + k);
      j["tokens"] = ids;
      f << j.dump() << "\n\n";
    }
  }
  CalibOptions o;
  o.format = DataFormat::kTokens;
  o.seq_len = 8;
  CalibReport rep;
  auto all = load_samples({t.path / "t.jsonl"}, o, nullptr, &rep);
  EXPECT_EQ(rep.n_documents, 7);
  EXPECT_EQ(rep.tokens_total, 3 * 7 + 2 * 21);
  int64_t n = 0;
  for (auto& s : all) {
    EXPECT_LE(s.size(), 8u);
    n += int64_t(s.size());
  }
  EXPECT_EQ(n, rep.tokens_total);  // packing keeps every token
  std::vector<std::vector<int32_t>> merged(all.size());
  for (int64_t i = 0; i < 3; ++i) {
    o.shard_index = i;
    o.n_shards = 3;
    auto part = load_samples({t.path / "t.jsonl"}, o, nullptr, nullptr);
    for (size_t k = 0; k < part.size(); ++k) merged[size_t(i) + 3 * k] = part[k];
  }
  EXPECT_EQ(merged, all);
  o.shard_index = 0;
  o.n_shards = 1;
  o.pack = false;
  o.long_policy = LongPolicy::kDrop;
  load_samples({t.path / "t.jsonl"}, o, nullptr, &rep);
  EXPECT_EQ(rep.n_dropped, 4);  // lengths 3,5,7 fit; 9..15 do not
  EXPECT_EQ(rep.tokens_dropped, 9 + 11 + 13 + 15);
  o.long_policy = LongPolicy::kSplit;
  o.max_samples = 4;
  auto split = load_samples({t.path / "t.jsonl"}, o, nullptr, &rep);
  EXPECT_EQ(rep.n_documents, 4);
  EXPECT_EQ(split.size(), 5u);  // 3, 5, 7, 9 -> 8 + 1
  std::ofstream(t.path / "bad.jsonl") << "{\"tokens\": [1, -2]}\n";
  EXPECT_THROW(load_samples({t.path / "bad.jsonl"}, o, nullptr, nullptr), Error);
  o.format = DataFormat::kText;
  EXPECT_THROW(load_samples({t.path / "t.jsonl"}, o, nullptr, nullptr), Error);  // needs a tokenizer
}

TEST(CalibData, TextJsonlAndChatThroughARealTokenizer) {
  const fs::path tok_dir = fs::path(SICKLE_SOURCE_DIR) / "tests" / "golden" / "tokenizer" / "deepseek_v3";
  auto tok = Tokenizer::load(tok_dir);
  ASSERT_GE(tok->bos_id(), 0);
  TempDir t;
  const std::string a = "The quick brown fox.\nSecond line <｜User｜> stays text.",
                    b = "def f(x):\n    return x * 2\n";
  std::ofstream(t.path / "a.txt") << a;
  std::ofstream(t.path / "b.jsonl") << json{{"text", a}}.dump() << "\n" << json{{"text", b}}.dump() << "\n";
  const json msgs =
      json::array({{{"role", "user"}, {"content", "2+2?"}}, {{"role", "assistant"}, {"content", "4"}}});
  std::ofstream(t.path / "c.jsonl") << json{{"messages", msgs}}.dump() << "\n";
  CalibEncoder enc;
  enc.encode = [&](const std::string& s) { return tok->encode(s, false); };
  enc.encode_chat = [&](const json& m, const nlohmann::ordered_json& tools) {
    EXPECT_TRUE(tools.is_null());  // c.jsonl declares none
    return tok->encode(render_chat(*tok, m, json(), false, false));
  };
  CalibOptions o;
  o.pack = false;
  o.seq_len = 4096;
  o.bos_id = tok->bos_id();
  auto with_bos = [&](std::vector<int32_t> ids) {
    ids.insert(ids.begin(), tok->bos_id());
    return ids;
  };
  o.format = DataFormat::kText;
  auto s1 = load_samples({t.path / "a.txt"}, o, &enc, nullptr);
  ASSERT_EQ(s1.size(), 1u);
  EXPECT_EQ(s1[0], with_bos(tok->encode(a, false)));  // special-token text in data is not a control token
  o.format = DataFormat::kJsonl;
  auto s2 = load_samples({t.path / "b.jsonl"}, o, &enc, nullptr);
  ASSERT_EQ(s2.size(), 2u);
  EXPECT_EQ(s2[1], with_bos(tok->encode(b, false)));
  o.format = DataFormat::kChatJsonl;
  auto s3 = load_samples({t.path / "c.jsonl"}, o, &enc, nullptr);
  ASSERT_EQ(s3.size(), 1u);
  const std::vector<int32_t> want = tok->encode(render_chat(*tok, msgs, json(), false, false).text(), true);
  EXPECT_EQ(s3[0], want);  // the template decides about BOS; never doubled
  EXPECT_LE(std::count(s3[0].begin(), s3[0].end(), tok->bos_id()), 1);
}

// Input rows (image embeddings, CalibEncoder::encode_chat_rows) follow their tokens through
// packing, splitting, dropping and sharding; a sequence without any keeps no row list.
TEST(CalibData, InputRowsFollowTheirTokensThroughPackingAndShards) {
  TempDir t;
  std::ofstream(t.path / "c.jsonl") << R"({"messages":[{"role":"user","content":"a"}]})"
                                    << "\n"
                                    << R"({"messages":[{"role":"user","content":"b"}]})"
                                    << "\n"
                                    << R"({"messages":[{"role":"user","content":"c"}]})"
                                    << "\n";
  static float buf[512];
  // Record a: ids 100..102; b: 200..204 with 202, 203 image positions; c: 300..303.
  auto is_image = [](int32_t id) { return id == 202 || id == 203; };
  CalibEncoder enc;
  enc.encode = [](const std::string&) { return std::vector<int32_t>{1}; };
  enc.encode_chat_rows = [&](const json& m, const nlohmann::ordered_json&, const fs::path& file) {
    EXPECT_EQ(file, t.path / "c.jsonl");
    const std::string c = m[0]["content"];
    const int n = c == "a" ? 3 : c == "b" ? 5 : 4, base = c == "a" ? 100 : c == "b" ? 200 : 300;
    CalibEncoder::Rows r;
    for (int j = 0; j < n; ++j) r.ids.push_back(base + j);
    if (c == "b")
      for (int32_t id : r.ids) r.rows.push_back(is_image(id) ? &buf[id] : nullptr);
    return r;
  };
  auto check = [&](const std::vector<std::vector<int32_t>>& seqs,
                   const std::vector<std::vector<const float*>>& rows) {
    ASSERT_EQ(seqs.size(), rows.size());
    for (size_t i = 0; i < seqs.size(); ++i) {
      const bool any = std::any_of(seqs[i].begin(), seqs[i].end(), is_image);
      ASSERT_EQ(rows[i].size(), any ? seqs[i].size() : 0u) << "sequence " << i;
      for (size_t j = 0; j < rows[i].size(); ++j)
        EXPECT_EQ(rows[i][j], is_image(seqs[i][j]) ? &buf[seqs[i][j]] : nullptr) << i << "," << j;
    }
  };
  CalibOptions o;
  o.format = DataFormat::kChatJsonl;
  o.seq_len = 4;
  std::vector<std::vector<const float*>> rows;
  auto packed = load_samples({t.path / "c.jsonl"}, o, &enc, nullptr, &rows);  // a0 a1 a2 b0 | b1..b4 | c
  ASSERT_EQ(packed.size(), 3u);
  EXPECT_EQ(packed[1], (std::vector<int32_t>{201, 202, 203, 204}));
  check(packed, rows);
  EXPECT_TRUE(rows[0].empty() && !rows[1].empty() && rows[2].empty());
  o.n_shards = 2;
  o.shard_index = 1;
  auto shard = load_samples({t.path / "c.jsonl"}, o, &enc, nullptr, &rows);
  ASSERT_EQ(shard.size(), 1u);
  EXPECT_EQ(shard[0], packed[1]);
  check(shard, rows);
  o.n_shards = 1;
  o.shard_index = 0;
  o.pack = false;
  auto split = load_samples({t.path / "c.jsonl"}, o, &enc, nullptr, &rows);  // a | b0..b3 | b4 | c
  ASSERT_EQ(split.size(), 4u);
  check(split, rows);
  EXPECT_FALSE(rows[1].empty());
  o.long_policy = LongPolicy::kDrop;
  auto dropped = load_samples({t.path / "c.jsonl"}, o, &enc, nullptr, &rows);  // a | c
  ASSERT_EQ(dropped.size(), 2u);
  check(dropped, rows);
}

// A chat-jsonl record's tools reach the renderer as the record wrote them (key order kept, as
// transformers' apply_chat_template gets them); a 'tools' that is not a list is an error naming
// the line.
TEST(CalibData, ChatRecordToolsKeepTheirKeyOrder) {
  TempDir t;
  const std::string tools =
      R"([{"type":"function","function":{"name":"zeta","parameters":{"type":"object","required":["b"],)"
      R"("properties":{"b":{"type":"string"},"a":{"type":"integer"}}}}}])";
  std::ofstream(t.path / "c.jsonl") << R"({"tools":)" << tools
                                    << R"(,"messages":[{"role":"user","content":"x"}]})"
                                    << "\n"
                                    << R"({"messages":[{"role":"user","content":"y"}],"tools":{"name":"f"}})"
                                    << "\n";
  std::vector<std::string> seen;
  CalibEncoder enc;
  enc.encode = [](const std::string&) { return std::vector<int32_t>{1}; };
  enc.encode_chat = [&](const json&, const nlohmann::ordered_json& tl) {
    seen.push_back(tl.dump());
    return std::vector<int32_t>{1, 2, 3};
  };
  CalibOptions o;
  o.format = DataFormat::kChatJsonl;
  o.seq_len = 16;
  o.max_samples = 1;
  load_samples({t.path / "c.jsonl"}, o, &enc, nullptr);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], tools);
  o.max_samples = 0;
  try {
    load_samples({t.path / "c.jsonl"}, o, &enc, nullptr);
    ADD_FAILURE() << "accepted a 'tools' object";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("c.jsonl:2: 'tools' must be a list"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- observer

// One MoE event of layer 1: 2 tokens, k = 2, hidden 3; its arrays are the test's to change.
struct SampleEvent {
  int32_t experts[4] = {0, 2, 2, 3};  // [2 tokens, k=2]
  float weights[4] = {0.75f, 0.25f, 0.5f, 0.5f};
  float out[12] = {3, 4, 0, -2, 0, 0, 1, 0, 0, 0, 0, -5};  // [2, 2, hidden=3]
  MoeLayerEvent event() const {
    MoeLayerEvent e;
    e.layer = 1;
    e.n_tokens = 2;
    e.k = 2;
    e.hidden = 3;
    e.experts = experts;
    e.weights = weights;
    e.expert_out = out;
    return e;
  }
};

TEST(Observer, AccumulatesRawSumsFromEvents) {
  ModelConfig c = flat_config(2, 4, 2);
  StatsObserver obs(c);
  obs.on_moe_layer(SampleEvent{}.event());
  const LayerStats& l = obs.layers().at(1);
  EXPECT_EQ(l.tokens, 2);
  EXPECT_EQ(l.count, (std::vector<double>{1, 0, 2, 1}));
  EXPECT_DOUBLE_EQ(l.reap_sum[0], 0.75 * 5);
  EXPECT_DOUBLE_EQ(l.reap_sum[2], 0.25 * 2 + 0.5 * 1);
  EXPECT_DOUBLE_EQ(l.ean_sq_sum[2], 4 + 1);
  EXPECT_DOUBLE_EQ(l.max_act[3], 5);
  EXPECT_DOUBLE_EQ(l.gate_sum[2], 0.75);
}

// A NaN/Inf expert output or gate weight is an error naming the layer and the expert: the
// statistics never hold one (prune would refuse them only after the whole observation).
TEST(Observer, NonFiniteOutputOrWeightIsAnErrorNamingTheExpert) {
  ModelConfig c = flat_config(2, 4, 2);
  SampleEvent ev;
  float* out = ev.out;
  float* weights = ev.weights;
  auto message = [&] {
    StatsObserver obs(c);
    try {
      obs.on_moe_layer(ev.event());
    } catch (const Error& err) {
      return std::string(err.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message(), "no error");
  out[10] = std::numeric_limits<float>::quiet_NaN();  // token 1, slot 1: expert 3
  EXPECT_EQ(message(), "layer 1 (expert 3 output): non-finite activation (NaN) in the observed statistics");
  out[10] = 0;
  weights[1] = std::numeric_limits<float>::infinity();  // token 0, slot 1: expert 2
  EXPECT_EQ(message(), "layer 1 (expert 2 output): non-finite activation (Inf) in the observed statistics");
}

// ---------------------------------------------------------------- rewriter and model-level tests

// Statistics of `dir` from its own forward pass over deterministic random tokens.
ExpertStats observe_random(const fs::path& dir, int n_seq, int len, uint64_t seed, int64_t shard = 0,
                           int64_t n_shards = 1) {
  auto model = Model::load(dir, ModelOptions{1, 0, 512});
  StatsObserver obs(model->config());
  model->set_observer(&obs);
  std::mt19937 rng{uint32_t(seed)};
  std::vector<float> logits;
  for (int s = 0; s < n_seq; ++s) {
    std::vector<int32_t> toks(static_cast<size_t>(len));
    for (auto& t : toks) t = int32_t(rng() % uint32_t(model->vocab_size()));
    if (s % n_shards != shard) continue;
    auto seq = model->new_sequence();
    model->forward(*seq, toks, logits);
  }
  model->set_observer(nullptr);
  ExpertStats st;
  st.meta.model_fingerprint = model_fingerprint(model->checkpoint());
  st.meta.n_shards = n_shards;
  st.meta.shards = {shard};
  st.meta.seq_len = len;
  st.meta.data_format = "tokens";
  st.layers = obs.take();
  return st;
}

class RewriteTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RewriteTest, CopiesBytesRenumbersSlicesAndReports) {
  TempDir t;
  fs::path src = make_synth(t.path / "src", GetParam());
  ExpertStats st = observe_random(src, 3, 24, 5);
  st.save(t.path / "st.safetensors");
  PruneRequest req;
  req.model_dir = src;
  req.stats_path = t.path / "st.safetensors";
  req.out = t.path / "out";
  req.plan.keep = 8;
  req.progress = false;
  PruneOutcome res = prune_model(req);
  auto a = Checkpoint::open(src);
  auto b = Checkpoint::open(req.out);
  const ModelConfig& ca = a->config();
  EXPECT_EQ(b->config().n_routed_experts, 8);
  EXPECT_EQ(b->config().num_experts_per_tok, ca.num_experts_per_tok);
  const json report = json::parse(slurp(req.out / "prune_report.json"));
  EXPECT_EQ(report["criterion"], "reap");
  EXPECT_EQ(report["stats"]["model_fingerprint"], st.meta.model_fingerprint);
  EXPECT_EQ(report["output_fingerprint"], model_fingerprint(*b));
  EXPECT_TRUE(report["check"]["every_kept_score_ge_every_dropped"].get<bool>() ||
              ca.n_group > 1);  // grouped layouts may keep below-boundary experts by rule
  {  // the report says the vision tower (tiny-kimi only) was kept as is, and how much of it
    int64_t n_vision = 0;
    for (const auto& name : a->tensor_names())
      n_vision += name.rfind("vision_tower.", 0) == 0 || name.rfind("mm_projector.", 0) == 0;
    if (n_vision) {
      EXPECT_EQ(report["vision"]["tensors"], n_vision);
      EXPECT_TRUE(report["vision"]["bit_exact"].get<bool>());
    } else {
      EXPECT_FALSE(report.contains("vision"));
    }
  }
  int64_t n_expert_tensors_out = 0;
  for (const auto& name : b->tensor_names()) {
    const TensorView vb = b->tensor(name);
    std::string src_name = name;
    std::vector<int64_t> rows;
    // Map the output name back to its source.
    const std::string head = ca.tensor_prefix + "model.layers.";
    if (name.rfind(head, 0) == 0) {
      size_t p = head.size(), q = name.find('.', p);
      int64_t il = std::stoll(name.substr(p, q - p));
      std::string rest = name.substr(q + 1);
      if (ca.is_moe_layer(il)) {
        const auto& kept = report["layers"][std::to_string(il)]["kept"];
        if (rest.rfind("mlp.experts.", 0) == 0) {
          size_t r = rest.find('.', 12);
          int64_t e = std::stoll(rest.substr(12, r - 12));
          ASSERT_LT(e, 8);
          src_name =
              fmt::format("{}{}.mlp.experts.{}{}", head, il, kept[size_t(e)].get<int64_t>(), rest.substr(r));
          ++n_expert_tensors_out;
        } else if (rest == "mlp.gate.weight" || rest == "mlp.gate.e_score_correction_bias") {
          rows = kept.get<std::vector<int64_t>>();
        }
      }
    }
    ASSERT_TRUE(a->has(src_name)) << name << " -> " << src_name;
    const TensorView va = a->tensor(src_name);
    EXPECT_EQ(va.dtype, vb.dtype) << name;
    if (rows.empty()) {
      EXPECT_EQ(va.shape, vb.shape) << name;
      ASSERT_EQ(va.nbytes(), vb.nbytes());
      EXPECT_EQ(0, std::memcmp(va.data, vb.data, va.nbytes())) << name << " differs from " << src_name;
    } else {
      ASSERT_EQ(vb.shape[0], int64_t(rows.size())) << name;
      size_t row_bytes = va.nbytes() / size_t(va.shape[0]);
      for (size_t i = 0; i < rows.size(); ++i)
        EXPECT_EQ(0, std::memcmp(va.data + size_t(rows[i]) * row_bytes, vb.data + i * row_bytes, row_bytes))
            << name << " row " << i;
    }
  }
  // Every kept expert's tensors are there, no dropped one is.
  int64_t per_expert = 0, n_moe = 0;
  for (const auto& name : a->tensor_names())
    if (name.find(".mlp.experts.0.") != std::string::npos &&
        name.find("layers." + std::to_string(ca.first_k_dense_replace) + ".") != std::string::npos)
      ++per_expert;
  for (int64_t il = 0; il < ca.num_hidden_layers; ++il) n_moe += ca.is_moe_layer(il);
  EXPECT_EQ(n_expert_tensors_out, per_expert * 8 * n_moe);
  EXPECT_EQ(res.rewrite.n_verified, int64_t(b->tensor_names().size()));
  // Source untouched, no temp dirs left beside the output.
  for (const auto& e : fs::directory_iterator(t.path))
    EXPECT_NE(e.path().filename().string().rfind(".out.tmp", 0), 0u) << e.path();
}

TEST_P(RewriteTest, PrunedLogitsEqualMaskedOriginal) {
  for (Budget budget : {Budget::kUniform, Budget::kGlobal}) {
    SCOPED_TRACE(budget == Budget::kGlobal ? "global budget" : "uniform budget");
    TempDir t;
    fs::path src = make_synth(t.path / "src", GetParam());
    ExpertStats st = observe_random(src, 3, 24, 9);
    st.save(t.path / "st.safetensors");
    PruneRequest req;
    req.model_dir = src;
    req.stats_path = t.path / "st.safetensors";
    req.out = t.path / "out";
    req.plan.keep = 8;
    req.plan.budget = budget;
    req.progress = false;
    PruneOutcome res = prune_model(req);
    if (budget == Budget::kGlobal && GetParam() == "tiny-kimi") {
      EXPECT_FALSE(res.plan.is_uniform);
    }
    auto orig = Model::load(src, ModelOptions{1, 0, 512});
    auto pruned = Model::load(req.out, ModelOptions{1, 0, 512});
    for (const auto& [il, lp] : res.plan.layers) {
      std::vector<uint8_t> allowed(size_t(lp.n_experts), 0);
      for (int64_t j : lp.kept) allowed[size_t(j)] = 1;
      orig->set_expert_mask(il, allowed);
    }
    std::mt19937 rng(3);
    std::vector<int32_t> toks(40);
    for (auto& x : toks) x = int32_t(rng() % uint32_t(orig->vocab_size()));
    std::vector<float> la, lb;
    auto sa = orig->new_sequence(), sb = pruned->new_sequence();
    orig->forward(*sa, toks, la, true);
    pruned->forward(*sb, toks, lb, true);
    ASSERT_EQ(la.size(), lb.size());
    double mx = 0, diff = 0;
    for (size_t i = 0; i < la.size(); ++i) {
      mx = std::max(mx, double(std::fabs(la[i])));
      diff = std::max(diff, double(std::fabs(la[i] - lb[i])));
    }
    EXPECT_LE(diff, 1e-4 * mx) << "max |pruned - masked| " << diff << " of max |logit| " << mx;
    // And the mask matters: unmasked logits differ (the test could fail).
    auto plain = Model::load(src, ModelOptions{1, 0, 512});
    std::vector<float> lc;
    auto sc = plain->new_sequence();
    plain->forward(*sc, toks, lc, true);
    double d2 = 0;
    for (size_t i = 0; i < la.size(); ++i) d2 = std::max(d2, double(std::fabs(lc[i] - lb[i])));
    EXPECT_GT(d2, 1e-3 * mx);
  }
}

TEST_P(RewriteTest, RepruneThroughReportEqualsDirectPrune) {
  TempDir t;
  fs::path src = make_synth(t.path / "src", GetParam());
  ExpertStats st = observe_random(src, 3, 24, 11);
  st.save(t.path / "st.safetensors");
  auto run = [&](const fs::path& model, int64_t keep, const fs::path& out) {
    PruneRequest req;
    req.model_dir = model;
    req.stats_path = t.path / "st.safetensors";
    req.out = out;
    req.plan.keep = keep;
    req.progress = false;
    return prune_model(req);
  };
  run(src, 12, t.path / "p12");
  run(t.path / "p12", 8, t.path / "p12_8");
  run(src, 8, t.path / "p8");
  for (const char* f : {"config.json", "model.safetensors.index.json", "model-00001-of-00001.safetensors"})
    EXPECT_EQ(hash64(slurp(t.path / "p12_8" / f).data(), slurp(t.path / "p12_8" / f).size()),
              hash64(slurp(t.path / "p8" / f).data(), slurp(t.path / "p8" / f).size()))
        << f;
  const json r2 = json::parse(slurp(t.path / "p12_8" / "prune_report.json"));
  const json r1 = json::parse(slurp(t.path / "p8" / "prune_report.json"));
  ASSERT_EQ(r2["ancestors"].size(), 2u);
  EXPECT_EQ(r2["ancestors"][1]["layers"], r1["ancestors"][0]["layers"]);  // same experts of the grandparent
  // A third generation: the grandparent's statistics still apply (tiny-dsv3 cannot go below
  // 8 = 4 groups x 2).
  if (GetParam() != "tiny-kimi") return;
  run(t.path / "p12_8", 4, t.path / "p12_8_4");
  run(src, 4, t.path / "p4");
  EXPECT_EQ(slurp(t.path / "p12_8_4" / "model-00001-of-00001.safetensors"),
            slurp(t.path / "p4" / "model-00001-of-00001.safetensors"));
}

TEST_P(RewriteTest, BadInputLeavesNoOutput) {
  TempDir t;
  fs::path src = make_synth(t.path / "src", GetParam());
  fs::path other = make_synth(t.path / "other", GetParam() == "tiny-kimi" ? "tiny-dsv3" : "tiny-kimi");
  observe_random(other, 1, 8, 1).save(t.path / "other.safetensors");
  observe_random(src, 2, 16, 1).save(t.path / "st.safetensors");
  PruneRequest req;
  req.model_dir = src;
  req.out = t.path / "out";
  req.progress = false;
  req.plan.keep = 8;
  auto expect_error = [&](const std::string& needle) {
    try {
      prune_model(req);
      ADD_FAILURE() << "no error (expected one mentioning '" << needle << "')";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(req.out));
    for (const auto& e : fs::directory_iterator(t.path))
      EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << "left behind: " << e.path();
  };
  req.stats_path = t.path / "other.safetensors";
  expect_error("another model");
  req.stats_path = t.path / "st.safetensors";
  req.plan.keep = 17;
  expect_error("only 16");
  req.plan.keep = 3;
  expect_error("num_experts_per_tok");
  req.plan.keep = 8;
  ::setenv("SICKLE_FAULT_ENOSPC_AFTER", "100000", 1);
  expect_error("No space left on device");
  ::unsetenv("SICKLE_FAULT_ENOSPC_AFTER");
  // and the same request then succeeds; the source is unchanged
  const std::string before = slurp(src / "model.safetensors");
  prune_model(req);
  EXPECT_TRUE(fs::exists(req.out / "prune_report.json"));
  EXPECT_EQ(slurp(src / "model.safetensors"), before);
  // refuses to overwrite without force
  EXPECT_THROW(prune_model(req), Error);
}

TEST(ObserveShards, MergeOfShardsEqualsOneRun) {
  TempDir t;
  fs::path src = make_synth(t.path / "src", "tiny-dsv3");
  ExpertStats full = observe_random(src, 6, 20, 4);
  std::vector<ExpertStats> parts;
  for (int64_t i = 0; i < 3; ++i) parts.push_back(observe_random(src, 6, 20, 4, i, 3));
  ExpertStats m = merge_stats(parts, {"0", "1", "2"}, {}, nullptr);
  for (const auto& [il, l] : full.layers) {
    const auto& q = m.layers.at(il);
    EXPECT_EQ(q.tokens, l.tokens);
    EXPECT_EQ(q.count, l.count);
    EXPECT_EQ(q.max_act, l.max_act);
    for (size_t j = 0; j < l.count.size(); ++j) {
      EXPECT_NEAR(q.reap_sum[j], l.reap_sum[j], 1e-12 * std::max(1.0, l.reap_sum[j]));
      EXPECT_NEAR(q.ean_sq_sum[j], l.ean_sq_sum[j], 1e-12 * std::max(1.0, l.ean_sq_sum[j]));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Synth, RewriteTest, ::testing::Values("tiny-kimi", "tiny-dsv3"),
                         test_util::DashToUnderscore());

}  // namespace
}  // namespace sickle
