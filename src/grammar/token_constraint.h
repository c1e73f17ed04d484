// sickle/grammar/token_constraint.h — grammar-constrained decoding: per step, the set of
// tokens whose bytes keep the output inside the grammar.
//
// Vocabulary: the tokenizer's ordinary tokens as byte strings in a trie (built once per
// tokenizer, shared). A special token is allowed only where the grammar names it by id
// (Grammar::special_token: Kimi's tool-call markers); the stop tokens (EOS, <|im_end|>) only
// once the grammar has matched a complete sentence.
//
// Mask computation (llama.cpp's stack matching + xgrammar's idea of caching per state):
// walk the trie depth-first carrying the matcher state, pruning a subtree as soon as its
// prefix leaves the grammar (and skipping children whose first byte no stack can take), so a
// step costs the size of the *allowed* part of the trie. The bitmask is cached per matcher
// state: inside a string or a number the state after every character is the same, so most
// steps are a lookup. Measured in bench/grammar_bench.cpp (see notes).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "grammar/grammar.h"

namespace sickle {
class Tokenizer;
}

namespace sickle::grammar {

class Vocabulary {
 public:
  // token_bytes[id] = the bytes of token id; special[id] = never inside the grammar;
  // stop_ids = the ids allowed once the grammar is complete.
  Vocabulary(const std::vector<std::string>& token_bytes, const std::vector<bool>& special,
             std::vector<int32_t> stop_ids);
  static std::shared_ptr<const Vocabulary> from_tokenizer(const Tokenizer& tok);
  // The same from lookups (the server's codec): ids [0, n).
  static std::shared_ptr<const Vocabulary> from_lookup(int64_t n,
                                                       const std::function<bool(int32_t)>& is_special,
                                                       const std::function<std::string(int32_t)>& token_bytes,
                                                       std::vector<int32_t> stop_ids);

  int64_t size() const { return n_tokens_; }
  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }
  int64_t n_trie_nodes() const { return int64_t(nodes_.size()); }

 private:
  friend class TokenConstraint;
  struct Node {
    uint8_t byte;
    int32_t child_begin, child_end;  // children are nodes_[child_begin, child_end), sorted by byte
    int32_t tok_begin, tok_end;      // tokens ending here: tokens_[tok_begin, tok_end)
  };
  int64_t n_tokens_;
  std::vector<std::string> bytes_;  // id -> bytes ("" for special tokens)
  std::vector<bool> special_;       // id -> special (matched only by Grammar::special_token)
  std::vector<Node> nodes_;         // nodes_[0] = root (empty prefix)
  std::vector<int32_t> tokens_;
  std::vector<int32_t> stop_ids_;
};

class TokenConstraint {
 public:
  TokenConstraint(std::shared_ptr<const Grammar> grammar, std::shared_ptr<const Vocabulary> vocab);

  // Sets the logits of disallowed tokens to -inf. logits.size() may exceed the vocabulary
  // (padded model vocabularies): ids past it are disallowed.
  void mask(std::span<float> logits);
  // Bit i set = token i allowed now (vocab().size() bits).
  const std::vector<uint64_t>& allowed();
  bool is_allowed(int32_t id);
  // Advance past a sampled token. Returns false (state unchanged) if it is not allowed.
  bool accept(int32_t id);
  // The output so far is a complete sentence of the grammar (a stop token may follow).
  bool complete() const { return Matcher::is_complete(state_); }
  // A stop token was accepted: nothing more may be generated.
  bool finished() const { return finished_; }

  const Vocabulary& vocab() const { return *vocab_; }
  // Figures for benchmarks.
  int64_t n_cache_hits() const { return n_hits_; }
  int64_t n_cache_misses() const { return n_misses_; }

 private:
  void compute(std::vector<uint64_t>& bits);
  void walk(int32_t node, int depth, std::vector<uint64_t>& bits);

  std::shared_ptr<const Vocabulary> vocab_;
  Matcher matcher_;
  Matcher::State state_;
  bool finished_ = false;
  std::vector<std::vector<int32_t>> depth_states_;  // scratch, one per trie depth
  std::vector<int32_t> specials_;                   // scratch: special tokens allowed next
  struct StateHash {
    size_t operator()(const Matcher::State& s) const;
  };
  std::unordered_map<Matcher::State, std::vector<uint64_t>, StateHash> cache_;
  const std::vector<uint64_t>* current_ = nullptr;  // mask of state_, into cache_
  std::vector<uint64_t> finished_bits_;             // all zero: after a stop token
  int64_t n_hits_ = 0, n_misses_ = 0;
  static constexpr size_t kMaxCachedStates = 256;
};

}  // namespace sickle::grammar
