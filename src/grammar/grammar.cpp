// sickle/grammar/grammar.cpp — grammar building and the pushdown matcher (see grammar.h).
#include "grammar/grammar.h"

#include <algorithm>

#include <fmt/format.h>

#include "base/error.h"

namespace sickle::grammar {

// ---- building ----

int32_t Grammar::new_rule(std::string name) {
  rules_.push_back(Rule{std::move(name), {}});
  return int32_t(rules_.size() - 1);
}

void Grammar::add_alternative(int32_t rule, Sequence seq) {
  SICKLE_CHECK(rule >= 0 && rule < int32_t(rules_.size()), "rule {}", rule);
  n_elements_ += int64_t(seq.size()) + 1;
  if (n_elements_ > kMaxElements)
    fail("grammar: the compiled grammar passes {} elements (bounds such as maxLength/maxItems too large?)",
         kMaxElements);
  rules_[size_t(rule)].alts.push_back(std::move(seq));
}

Element Grammar::terminal(std::string key, const ByteSet& set, int32_t token) {
  auto it = terminal_index_.find(key);
  if (it != terminal_index_.end()) return Element{it->second, -1};
  terminals_.push_back(set);
  terminal_token_.push_back(token);
  int32_t id = int32_t(terminals_.size() - 1);
  terminal_index_.emplace(std::move(key), id);
  return Element{id, -1};
}

Element Grammar::bytes(const ByteSet& set) { return terminal(set.to_string(), set, -1); }

Element Grammar::special_token(int32_t token) {
  SICKLE_CHECK(token >= 0, "special token id {}", token);
  // No byte takes it; the key is never a ByteSet string (those are 0s and 1s).
  return terminal(fmt::format("#{}", token), ByteSet(), token);
}

Element Grammar::byte(uint8_t b) {
  ByteSet s;
  s.set(b);
  return bytes(s);
}

Element Grammar::byte_range(uint8_t lo, uint8_t hi) {
  ByteSet s;
  for (int b = lo; b <= hi; ++b) s.set(size_t(b));
  return bytes(s);
}

Sequence Grammar::literal_seq(std::string_view text, Grammar& g) {
  Sequence seq;
  for (char c : text) seq.push_back(g.byte(uint8_t(c)));
  return seq;
}

Element Grammar::alt(std::string name, std::vector<Sequence> alts) {
  int32_t r = new_rule(std::move(name));
  for (auto& a : alts) add_alternative(r, std::move(a));
  return ref(r);
}

Element Grammar::optional(Sequence seq) {
  std::vector<Sequence> alts;
  alts.push_back(std::move(seq));
  alts.emplace_back();
  return alt("opt", std::move(alts));
}

Element Grammar::star(Sequence seq) {
  int32_t r = new_rule("star");
  seq.push_back(ref(r));
  add_alternative(r, std::move(seq));
  add_alternative(r, {});
  return ref(r);
}

Sequence Grammar::repeat(Sequence seq, int64_t min, int64_t max) {
  SICKLE_CHECK(min >= 0 && (max < 0 || max >= min), "repeat {} {}", min, max);
  // Keep the copies one element each.
  Element item = seq.size() == 1 ? seq[0] : alt("item", {seq});
  int64_t n_copies = min + (max < 0 ? 1 : max - min);
  if (n_copies * 3 + n_elements_ > kMaxElements)
    fail("grammar: a repetition {{{},{}}} is too large to compile (limit {} elements)", min, max,
         kMaxElements);
  Sequence out(size_t(min), item);
  if (max < 0) {
    out.push_back(star({item}));
  } else if (max > min) {
    // Nested optionals: item (item (item)?)?)? — the tail accepts 0..max-min more.
    Sequence tail;
    for (int64_t k = 0; k < max - min; ++k) {
      Sequence body{item};
      body.insert(body.end(), tail.begin(), tail.end());
      tail = {optional(std::move(body))};
    }
    out.insert(out.end(), tail.begin(), tail.end());
  }
  return out;
}

Element Grammar::utf8_multibyte() {
  if (utf8_rule_ >= 0) return ref(utf8_rule_);
  // RFC 3629 §4 well-formed sequences (no overlongs, no surrogates, <= U+10FFFF).
  Element cont = byte_range(0x80, 0xBF);
  utf8_rule_ = new_rule("utf8");
  add_alternative(utf8_rule_, {byte_range(0xC2, 0xDF), cont});
  add_alternative(utf8_rule_, {byte(0xE0), byte_range(0xA0, 0xBF), cont});
  ByteSet e_mid;
  for (int b = 0xE1; b <= 0xEC; ++b) e_mid.set(size_t(b));
  e_mid.set(0xEE).set(0xEF);
  add_alternative(utf8_rule_, {bytes(e_mid), cont, cont});
  add_alternative(utf8_rule_, {byte(0xED), byte_range(0x80, 0x9F), cont});
  add_alternative(utf8_rule_, {byte(0xF0), byte_range(0x90, 0xBF), cont, cont});
  add_alternative(utf8_rule_, {byte_range(0xF1, 0xF3), cont, cont, cont});
  add_alternative(utf8_rule_, {byte(0xF4), byte_range(0x80, 0x8F), cont, cont});
  return ref(utf8_rule_);
}

namespace {
std::string describe(const ByteSet& s) {
  if (s.count() == 1)
    for (int b = 0; b < 256; ++b)
      if (s[size_t(b)])
        return b >= 0x20 && b < 0x7F && b != '\'' && b != '\\' ? fmt::format("'{}'", char(b))
                                                               : fmt::format("\\x{:02X}", b);
  std::string out = "[";
  for (int b = 0; b < 256;) {
    if (!s[size_t(b)]) {
      ++b;
      continue;
    }
    int e = b;
    while (e + 1 < 256 && s[size_t(e + 1)]) ++e;
    out += e == b ? fmt::format("\\x{:02X}", b) : fmt::format("\\x{:02X}-\\x{:02X}", b, e);
    b = e + 1;
  }
  return out + "]";
}
}  // namespace

std::string Grammar::dump() const {
  std::string out;
  for (size_t r = 0; r < rules_.size(); ++r) {
    out += fmt::format("{}{} ::=", rules_[r].name, r);
    for (size_t a = 0; a < rules_[r].alts.size(); ++a) {
      out += a ? " |" : "";
      for (const Element& e : rules_[r].alts[a])
        out += e.terminal < 0 ? fmt::format(" {}{}", rules_[size_t(e.rule)].name, e.rule)
               : terminal_token_[size_t(e.terminal)] >= 0
                   ? fmt::format(" <token {}>", terminal_token_[size_t(e.terminal)])
                   : fmt::format(" {}", describe(terminals_[size_t(e.terminal)]));
      if (rules_[r].alts[a].empty()) out += " \"\"";
    }
    out += int32_t(r) == root_ ? "   (root)\n" : "\n";
  }
  return out;
}

bool Grammar::accepts(std::string_view text) const {
  // A non-owning shared_ptr: the matcher lives only in this call.
  Matcher m(std::shared_ptr<const Grammar>(std::shared_ptr<const Grammar>{}, this));
  Matcher::State s = m.initial(), next;
  for (char c : text) {
    m.step(s, uint8_t(c), next);
    if (next.empty()) return false;
    s.swap(next);
  }
  return Matcher::is_complete(s);
}

// ---- matcher ----

Matcher::Matcher(std::shared_ptr<const Grammar> grammar) : grammar_(std::move(grammar)) {
  const Grammar& g = *grammar_;
  SICKLE_CHECK(g.root_ >= 0, "grammar has no root rule");
  terminals_ = g.terminals_;
  terminal_token_ = g.terminal_token_;
  alt_starts_.resize(g.rules_.size());
  for (size_t r = 0; r < g.rules_.size(); ++r)
    for (const Sequence& alt : g.rules_[r].alts) {
      alt_starts_[r].push_back(int32_t(flat_.size()));
      for (const Element& e : alt) flat_.push_back(e.terminal >= 0 ? e.terminal : -(e.rule + 2));
      flat_.push_back(kEnd);
    }
  nodes_.push_back(Node{kEnd, 0, 0});
  closure_.emplace_back(1, 0);
  closure_done_.push_back(1);
}

int32_t Matcher::intern(int32_t pos, int32_t parent) {
  if (flat_[size_t(pos)] == kEnd) return parent;  // finished alternative: return to the caller
  uint64_t key = (uint64_t(uint32_t(pos)) << 32) | uint32_t(parent);
  auto [it, inserted] = index_.emplace(key, int32_t(nodes_.size()));
  if (inserted) {
    nodes_.push_back(Node{pos, parent, nodes_[size_t(parent)].depth + 1});
    closure_.emplace_back();
    closure_done_.push_back(0);
  }
  return it->second;
}

// Stacks reachable from `id` without reading a byte whose top is a terminal, or 0 when the
// whole input can end here. `visiting` breaks cycles through nullable rules ((a*)*).
void Matcher::expand(int32_t id, std::vector<int32_t>& out, std::vector<int32_t>& visiting) {
  if (id == 0) {
    out.push_back(0);
    return;
  }
  if (std::find(visiting.begin(), visiting.end(), id) != visiting.end()) return;
  visiting.push_back(id);
  const Node n = nodes_[size_t(id)];
  int32_t code = flat_[size_t(n.pos)];
  if (code >= 0) {
    out.push_back(id);
  } else {
    // Generated grammars are not left recursive; a stack this deep means one is (a bug).
    SICKLE_CHECK(n.depth < 100000, "grammar: left recursion in rule {}", -(code + 2));
    int32_t rule = -(code + 2);
    int32_t cont = intern(n.pos + 1, n.parent);  // tail position: no frame is pushed
    for (int32_t start : alt_starts_[size_t(rule)]) expand(intern(start, cont), out, visiting);
  }
}

const std::vector<int32_t>& Matcher::closure(int32_t id) {
  if (!closure_done_[size_t(id)]) {
    std::vector<int32_t> out, visiting;
    expand(id, out, visiting);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    closure_[size_t(id)] = std::move(out);  // nodes_ may have grown: index again
    closure_done_[size_t(id)] = 1;
  }
  return closure_[size_t(id)];
}

Matcher::State Matcher::initial() {
  int32_t root = grammar_->root_;
  State s;
  for (int32_t start : alt_starts_[size_t(root)]) {
    const auto& c = closure(intern(start, 0));
    s.insert(s.end(), c.begin(), c.end());
  }
  std::sort(s.begin(), s.end());
  s.erase(std::unique(s.begin(), s.end()), s.end());
  return s;
}

template <class Takes>
void Matcher::advance(const State& from, Takes takes, State& to) {
  to.clear();
  for (int32_t id : from) {
    if (id == 0) continue;
    Node n = nodes_[size_t(id)];
    if (!takes(flat_[size_t(n.pos)])) continue;
    const auto& c = closure(intern(n.pos + 1, n.parent));
    to.insert(to.end(), c.begin(), c.end());
  }
  if (to.size() > 1) {
    std::sort(to.begin(), to.end());
    to.erase(std::unique(to.begin(), to.end()), to.end());
  }
}

void Matcher::step(const State& from, uint8_t b, State& to) {
  advance(
      from, [&](int32_t t) { return terminals_[size_t(t)][b]; }, to);
}

void Matcher::step_token(const State& from, int32_t token, State& to) {
  advance(
      from, [&](int32_t t) { return terminal_token_[size_t(t)] == token; }, to);
}

ByteSet Matcher::next_bytes(const State& s) const {
  ByteSet out;
  for (int32_t id : s)
    if (id != 0) out |= terminals_[size_t(flat_[size_t(nodes_[size_t(id)].pos)])];
  return out;
}

void Matcher::next_tokens(const State& s, std::vector<int32_t>& out) const {
  for (int32_t id : s)
    if (id != 0)
      if (int32_t tok = terminal_token_[size_t(flat_[size_t(nodes_[size_t(id)].pos)])]; tok >= 0)
        out.push_back(tok);
}

}  // namespace sickle::grammar
