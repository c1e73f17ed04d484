// sickle/grammar/grammar.h — byte-level context-free grammars and their pushdown matcher.
//
// The structured-output engine (issue 16 item 2). A Grammar is a set of rules; a rule is a
// list of alternatives; an alternative is a sequence of elements, each a byte class (one byte
// out of a 256-bit set) or a reference to a rule — llama.cpp's GBNF model, but over bytes
// rather than code points, so a tokenizer's byte-level tokens can be matched without
// decoding (a token may end in the middle of a UTF-8 character or span several symbols).
// Front ends compile JSON Schema (json_schema.h), a regex subset and a choice list
// (regex_grammar.h) into this form; they never produce left recursion.
//
// Matcher: the state after some bytes is the set of parse stacks that survive them
// (llama.cpp's "stacks"), each stack a hash-consed linked list of positions so a state is a
// short sorted vector of ints: cheap to copy, compare and use as a cache key. Stack id 0 is
// the empty stack: the grammar has matched a complete sentence.
#pragma once

#include <bitset>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sickle::grammar {

using ByteSet = std::bitset<256>;

// One element of an alternative: a terminal (terminal >= 0) or a rule (rule >= 0). A terminal
// is a byte class (one byte out of a 256-bit set) or a special token matched by its id
// (special_token(): tokens such as Kimi's <|tool_call_begin|> are not byte sequences of the
// vocabulary; the matcher steps over them with step_token, never with bytes).
struct Element {
  int32_t terminal = -1;
  int32_t rule = -1;
};
using Sequence = std::vector<Element>;

class Grammar {
 public:
  // ---- building (front ends) ----
  int32_t new_rule(std::string name);
  void add_alternative(int32_t rule, Sequence seq);
  Element bytes(const ByteSet& set);  // one byte out of `set` (interned)
  Element byte(uint8_t b);
  Element special_token(int32_t id);  // exactly the special token `id` (interned)
  Element byte_range(uint8_t lo, uint8_t hi);
  static Element ref(int32_t rule) { return Element{-1, rule}; }
  static Sequence literal_seq(std::string_view text, Grammar& g);
  // Helpers that return a rule (as an element) for common shapes.
  Element alt(std::string name, std::vector<Sequence> alts);
  Element optional(Sequence seq);  // seq | ""
  Element star(Sequence seq);      // seq*  (right recursive)
  // seq{min,max}; max < 0: unbounded. Error when the expansion would pass the size limit.
  Sequence repeat(Sequence seq, int64_t min, int64_t max);
  // Any valid UTF-8 character of 2..4 bytes (no surrogates, no overlongs), one rule, shared.
  Element utf8_multibyte();
  void set_root(int32_t rule) { root_ = rule; }
  // Sizes limit what an untrusted schema can make us allocate.
  static constexpr int64_t kMaxElements = 1 << 20;

  // ---- reading ----
  int32_t root() const { return root_; }
  int64_t n_rules() const { return int64_t(rules_.size()); }
  int64_t n_elements() const { return n_elements_; }
  // Whole-string match (tests, validation of forced output).
  bool accepts(std::string_view text) const;
  // GBNF-like listing for debugging and error messages.
  std::string dump() const;

 private:
  friend class Matcher;
  Element terminal(std::string key, const ByteSet& set, int32_t token);
  struct Rule {
    std::string name;
    std::vector<Sequence> alts;
  };
  std::vector<Rule> rules_;
  std::vector<ByteSet> terminals_;                           // empty for a special token
  std::vector<int32_t> terminal_token_;                      // the special token's id, -1 for a byte class
  std::unordered_map<std::string, int32_t> terminal_index_;  // ByteSet::to_string or "#id" -> id
  int32_t root_ = -1;
  int32_t utf8_rule_ = -1;
  int64_t n_elements_ = 0;
};

// The pushdown matcher over one grammar. Not thread-safe (its memo tables grow as it runs);
// one per generated sequence. The grammar must outlive it.
class Matcher {
 public:
  using State = std::vector<int32_t>;  // sorted stack ids; {} = dead; contains 0 = complete

  explicit Matcher(std::shared_ptr<const Grammar> grammar);
  State initial();
  // State after one more byte ({} if the byte is not allowed).
  void step(const State& from, uint8_t b, State& to);
  // State after one special token ({} if no stack of `from` takes it).
  void step_token(const State& from, int32_t token, State& to);
  // Union of the bytes any stack of `s` may take next.
  ByteSet next_bytes(const State& s) const;
  // The special tokens any stack of `s` may take next (appended to `out`, may repeat).
  void next_tokens(const State& s, std::vector<int32_t>& out) const;
  static bool is_complete(const State& s) { return !s.empty() && s.front() == 0; }
  int64_t n_stack_nodes() const { return int64_t(nodes_.size()); }
  const Grammar& grammar() const { return *grammar_; }

 private:
  static constexpr int32_t kEnd = -1;  // end of an alternative in flat_
  struct Node {
    int32_t pos;     // index into flat_
    int32_t parent;  // stack id below, 0 = empty
    int32_t depth;
  };
  int32_t intern(int32_t pos, int32_t parent);
  const std::vector<int32_t>& closure(int32_t id);
  void expand(int32_t id, std::vector<int32_t>& out, std::vector<int32_t>& visiting);
  // The stacks of `from` whose top terminal takes the input (`takes(terminal)`), advanced.
  template <class Takes>
  void advance(const State& from, Takes takes, State& to);

  std::shared_ptr<const Grammar> grammar_;
  // Every alternative of every rule, flattened: an element code per position, kEnd after each
  // alternative. code >= 0: terminal id; code <= -2: rule id -(code + 2).
  std::vector<int32_t> flat_;
  std::vector<std::vector<int32_t>> alt_starts_;  // per rule
  std::vector<ByteSet> terminals_;
  std::vector<int32_t> terminal_token_;
  std::vector<Node> nodes_;                      // id -> node; nodes_[0] = empty stack
  std::unordered_map<uint64_t, int32_t> index_;  // (pos, parent) -> id
  std::vector<std::vector<int32_t>> closure_;    // id -> stacks with a terminal on top (or 0)
  std::vector<uint8_t> closure_done_;
};

}  // namespace sickle::grammar
