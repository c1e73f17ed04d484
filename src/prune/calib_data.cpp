#include "prune/calib_data.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "base/hash.h"

namespace sickle {
namespace fs = std::filesystem;
using json = nlohmann::json;

DataFormat parse_data_format(std::string_view n) {
  if (n == "text") return DataFormat::kText;
  if (n == "jsonl") return DataFormat::kJsonl;
  if (n == "chat-jsonl") return DataFormat::kChatJsonl;
  if (n == "tokens") return DataFormat::kTokens;
  fail("unknown data format '{}' (expected text, jsonl, chat-jsonl or tokens)", n);
}

std::string_view data_format_name(DataFormat f) {
  switch (f) {
    case DataFormat::kText: return "text";
    case DataFormat::kJsonl: return "jsonl";
    case DataFormat::kChatJsonl: return "chat-jsonl";
    case DataFormat::kTokens: return "tokens";
  }
  return "?";
}

std::string CalibOptions::key() const {
  return fmt::format("format={} samples={} seq_len={} pack={} long={} field={} bos={}",
                     data_format_name(format), max_samples, seq_len, pack ? 1 : 0,
                     long_policy == LongPolicy::kSplit ? "split" : "drop", text_field, bos_id) +
         (specials_in_content ? " content_specials=1" : "");  // absent by default: older keys still match
}

void parse_shard(std::string_view text, int64_t& index, int64_t& n) {
  size_t slash = text.find('/');
  try {
    if (slash == std::string_view::npos) throw std::invalid_argument("no slash");
    size_t p1 = 0, p2 = 0;
    std::string a(text.substr(0, slash)), b(text.substr(slash + 1));
    index = std::stoll(a, &p1);
    n = std::stoll(b, &p2);
    if (p1 != a.size() || p2 != b.size()) throw std::invalid_argument("trailing");
  } catch (const std::exception&) {
    fail("--shard '{}': expected i/n, e.g. 0/4", text);
  }
  if (n < 1 || n > kMaxShards || index < 0 || index >= n)
    fail("--shard {}: need 0 <= i < n <= {}", text, kMaxShards);
}

void check_data_files(const std::vector<fs::path>& files) {
  for (const auto& f : files) {
    struct stat st {};
    if (::stat(f.c_str(), &st) != 0) fail("{}: cannot open: {}", f.string(), std::strerror(errno));
    if (S_ISDIR(st.st_mode))
      fail("{}: is a directory (give the data files in it, e.g. {}/*.jsonl)", f.string(), f.string());
    if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode))
      fail("{}: not a regular file (a device or socket; give a file, or a pipe such as <(zcat data.gz))",
           f.string());
  }
}

namespace {
std::string read_file(const fs::path& p) {
  check_data_files({p});
  std::ifstream in(p, std::ios::binary);
  if (!in) fail("{}: cannot open", p.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

std::vector<std::vector<int32_t>> load_samples(const std::vector<fs::path>& files, const CalibOptions& opt,
                                               const CalibEncoder* enc, CalibReport* report,
                                               std::vector<std::vector<const float*>>* rows_out) {
  if (opt.seq_len < 1) fail("--seq-len {} must be >= 1", opt.seq_len);
  if (opt.n_shards < 1 || opt.shard_index < 0 || opt.shard_index >= opt.n_shards)
    fail("shard {}/{} is out of range", opt.shard_index, opt.n_shards);
  if (files.empty()) fail("no calibration data files given");
  if (opt.format != DataFormat::kTokens && (!enc || !enc->encode))
    fail("data format '{}' needs the model's tokenizer (use --format tokens for pre-tokenized data)",
         data_format_name(opt.format));
  if (opt.format == DataFormat::kChatJsonl && !enc->encode_chat && !enc->encode_chat_rows)
    fail("data format chat-jsonl needs the model's chat format, which is not available");
  CalibReport rep;
  std::vector<std::vector<int32_t>> docs;
  std::vector<std::vector<const float*>> doc_rows;  // per document: empty, or one per token
  auto encode = [&](const std::string& text) {
    // BOS before plain documents (a chat rendering carries whatever its template starts with).
    const bool add_bos = opt.bos_id >= 0;
    std::vector<int32_t> ids;
    if (add_bos) ids.push_back(opt.bos_id);
    std::vector<int32_t> t = enc->encode(text);
    if (add_bos && !t.empty() && t[0] == opt.bos_id) ids.clear();  // already there
    ids.insert(ids.end(), t.begin(), t.end());
    return ids;
  };
  auto full = [&] { return opt.max_samples > 0 && int64_t(docs.size()) >= opt.max_samples; };
  for (const auto& f : files) {
    if (full()) break;
    std::string content = read_file(f);
    rep.files.push_back(DataFileInfo{fs::absolute(f).string(), hex64(hash64(content.data(), content.size())),
                                     uint64_t(content.size())});
    if (opt.format == DataFormat::kText) {
      if (!content.empty()) docs.push_back(encode(content));
      continue;
    }
    std::istringstream lines(content);
    std::string line;
    int64_t lineno = 0;
    while (!full() && std::getline(lines, line)) {
      ++lineno;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      json j;
      try {
        j = json::parse(line);
      } catch (const json::exception& e) {
        fail("{}:{}: not valid JSON: {}", f.string(), lineno, e.what());
      }
      if (!j.is_object()) fail("{}:{}: expected a JSON object", f.string(), lineno);
      switch (opt.format) {
        case DataFormat::kJsonl: {
          auto it = j.find(opt.text_field);
          if (it == j.end() || !it->is_string())
            fail("{}:{}: no string field '{}' (set the field with --text-field)", f.string(), lineno,
                 opt.text_field);
          docs.push_back(encode(it->get<std::string>()));
          break;
        }
        case DataFormat::kChatJsonl: {
          auto it = j.find("messages");
          if (it == j.end() || !it->is_array()) fail("{}:{}: no array field 'messages'", f.string(), lineno);
          // The record's tool declarations, re-read in the record's key order: the template's
          // tojson writes them as the caller ordered them (transformers keeps dict order).
          nlohmann::ordered_json tools;
          if (auto t = j.find("tools"); t != j.end() && !t->is_null()) {
            if (!t->is_array())
              fail("{}:{}: 'tools' must be a list of tool declarations", f.string(), lineno);
            tools = nlohmann::ordered_json::parse(line)["tools"];
          }
          try {
            if (enc->encode_chat_rows) {
              CalibEncoder::Rows r = enc->encode_chat_rows(*it, tools, f);
              if (!r.rows.empty() && r.rows.size() != r.ids.size())
                fail("{} input rows for {} tokens", r.rows.size(), r.ids.size());
              docs.push_back(std::move(r.ids));
              doc_rows.resize(docs.size());
              doc_rows.back() = std::move(r.rows);
            } else {
              docs.push_back(enc->encode_chat(*it, tools));
            }
          } catch (const Error& e) {
            fail("{}:{}: {}", f.string(), lineno, e.what());
          }
          break;
        }
        case DataFormat::kTokens: {
          auto it = j.find("tokens");
          if (it == j.end() || !it->is_array()) fail("{}:{}: no array field 'tokens'", f.string(), lineno);
          std::vector<int32_t> ids;
          for (const auto& v : *it) {
            if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
              fail("{}:{}: 'tokens' holds {}, not a token id", f.string(), lineno, v.dump());
            ids.push_back(int32_t(v.get<int64_t>()));
          }
          if (!ids.empty()) docs.push_back(std::move(ids));
          break;
        }
        case DataFormat::kText: break;
      }
    }
  }
  rep.n_documents = int64_t(docs.size());
  doc_rows.resize(docs.size());
  std::vector<std::vector<int32_t>> seqs;
  std::vector<std::vector<const float*>> seq_rows;  // parallel to seqs, cut the same way
  // Token j of document d's input row (null: its embed_tokens row).
  auto row_of = [&](size_t d, size_t j) -> const float* {
    return doc_rows[d].empty() ? nullptr : doc_rows[d][j];
  };
  // A sequence's rows are kept only when one of them is an input row.
  auto add_seq = [&](std::vector<int32_t> ids, std::vector<const float*> r) {
    if (std::all_of(r.begin(), r.end(), [](const float* p) { return p == nullptr; })) r.clear();
    seqs.push_back(std::move(ids));
    seq_rows.push_back(std::move(r));
  };
  const size_t L = size_t(opt.seq_len);
  if (opt.pack) {
    std::vector<int32_t> cur;
    std::vector<const float*> cur_rows;
    for (size_t d = 0; d < docs.size(); ++d) {
      rep.tokens_total += int64_t(docs[d].size());
      for (size_t j = 0; j < docs[d].size(); ++j) {
        cur.push_back(docs[d][j]);
        cur_rows.push_back(row_of(d, j));
        if (cur.size() == L) {
          add_seq(std::move(cur), std::move(cur_rows));
          cur.clear();
          cur_rows.clear();
        }
      }
    }
    if (!cur.empty()) add_seq(std::move(cur), std::move(cur_rows));
  } else {
    for (size_t d = 0; d < docs.size(); ++d) {
      const auto& doc = docs[d];
      rep.tokens_total += int64_t(doc.size());
      if (doc.empty()) continue;
      if (doc.size() > L && opt.long_policy == LongPolicy::kDrop) {
        ++rep.n_dropped;
        rep.tokens_dropped += int64_t(doc.size());
        continue;
      }
      if (doc.size() > L) ++rep.n_split;
      for (size_t b = 0; b < doc.size(); b += L) {
        const size_t e = std::min(doc.size(), b + L);
        std::vector<const float*> r;
        for (size_t j = b; j < e; ++j) r.push_back(row_of(d, j));
        add_seq(std::vector<int32_t>(doc.begin() + ptrdiff_t(b), doc.begin() + ptrdiff_t(e)), std::move(r));
      }
    }
  }
  rep.n_sequences_total = int64_t(seqs.size());
  std::vector<std::vector<int32_t>> out;
  if (rows_out) rows_out->clear();
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (int64_t(i % size_t(opt.n_shards)) != opt.shard_index) continue;
    rep.tokens_used += int64_t(seqs[i].size());
    out.push_back(std::move(seqs[i]));
    if (rows_out) rows_out->push_back(std::move(seq_rows[i]));
  }
  rep.n_sequences = int64_t(out.size());
  if (report) *report = std::move(rep);
  return out;
}

}  // namespace sickle
