// sickle/grammar/token_constraint.cpp — vocabulary trie and per-step token masks (see token_constraint.h).
#include "grammar/token_constraint.h"

#include <algorithm>
#include <deque>
#include <limits>

#include "base/error.h"
#include "tokenizer/tokenizer.h"

namespace sickle::grammar {

Vocabulary::Vocabulary(const std::vector<std::string>& token_bytes, const std::vector<bool>& special,
                       std::vector<int32_t> stop_ids)
    : n_tokens_(int64_t(token_bytes.size())),
      bytes_(token_bytes),
      special_(special),
      stop_ids_(std::move(stop_ids)) {
  SICKLE_CHECK(special.size() == token_bytes.size(), "{} flags for {} tokens", special.size(),
               token_bytes.size());
  std::vector<int32_t> order;
  for (size_t id = 0; id < token_bytes.size(); ++id)
    if (!special[id] && !token_bytes[id].empty()) order.push_back(int32_t(id));
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return token_bytes[size_t(a)] < token_bytes[size_t(b)]; });
  // Breadth first, so the children of a node are contiguous: each pending node owns the range
  // of sorted tokens sharing its prefix.
  struct Pending {
    int32_t node;
    size_t lo, hi, depth;
  };
  nodes_.push_back(Node{0, 0, 0, 0, 0});
  std::deque<Pending> queue{{0, 0, order.size(), 0}};
  while (!queue.empty()) {
    Pending p = queue.front();
    queue.pop_front();
    size_t i = p.lo;
    nodes_[size_t(p.node)].tok_begin = int32_t(tokens_.size());
    while (i < p.hi && token_bytes[size_t(order[i])].size() == p.depth) tokens_.push_back(order[i++]);
    nodes_[size_t(p.node)].tok_end = int32_t(tokens_.size());
    nodes_[size_t(p.node)].child_begin = int32_t(nodes_.size());
    while (i < p.hi) {
      uint8_t b = uint8_t(token_bytes[size_t(order[i])][p.depth]);
      size_t j = i;
      while (j < p.hi && uint8_t(token_bytes[size_t(order[j])][p.depth]) == b) ++j;
      nodes_.push_back(Node{b, 0, 0, 0, 0});
      queue.push_back({int32_t(nodes_.size() - 1), i, j, p.depth + 1});
      i = j;
    }
    nodes_[size_t(p.node)].child_end = int32_t(nodes_.size());
  }
}

std::shared_ptr<const Vocabulary> Vocabulary::from_lookup(
    int64_t n, const std::function<bool(int32_t)>& is_special,
    const std::function<std::string(int32_t)>& token_bytes, std::vector<int32_t> stop_ids) {
  std::vector<std::string> bytes(static_cast<size_t>(n));
  std::vector<bool> special(size_t(n), false);
  for (int64_t id = 0; id < n; ++id) {
    special[size_t(id)] = is_special(int32_t(id));
    if (!special[size_t(id)]) bytes[size_t(id)] = token_bytes(int32_t(id));
  }
  return std::make_shared<Vocabulary>(bytes, special, std::move(stop_ids));
}

std::shared_ptr<const Vocabulary> Vocabulary::from_tokenizer(const Tokenizer& tok) {
  return from_lookup(
      tok.vocab_size(), [&](int32_t id) { return tok.is_special(id); },
      [&](int32_t id) { return tok.token_text(id); }, tok.stop_ids());
}

size_t TokenConstraint::StateHash::operator()(const Matcher::State& s) const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the stack ids
  for (int32_t v : s) h = (h ^ uint32_t(v)) * 1099511628211ull;
  return size_t(h);
}

TokenConstraint::TokenConstraint(std::shared_ptr<const Grammar> grammar,
                                 std::shared_ptr<const Vocabulary> vocab)
    : vocab_(std::move(vocab)), matcher_(std::move(grammar)) {
  state_ = matcher_.initial();
  depth_states_.resize(64);  // scratch states, one per trie level; walk() grows it for longer tokens
}

void TokenConstraint::walk(int32_t node, int depth, std::vector<uint64_t>& bits) {
  const size_t d = size_t(depth);
  if (depth_states_.size() < d + 2) depth_states_.resize(d + 2);
  ByteSet next = matcher_.next_bytes(depth_states_[d]);
  if (next.none()) return;
  const auto& n = vocab_->nodes_[size_t(node)];
  for (int32_t c = n.child_begin; c < n.child_end; ++c) {
    const auto& child = vocab_->nodes_[size_t(c)];
    if (!next[child.byte]) continue;
    // Indexed each time: the recursion below may grow depth_states_.
    matcher_.step(depth_states_[d], child.byte, depth_states_[d + 1]);
    if (depth_states_[d + 1].empty()) continue;
    for (int32_t t = child.tok_begin; t < child.tok_end; ++t) {
      int32_t id = vocab_->tokens_[size_t(t)];
      bits[size_t(id) >> 6] |= uint64_t(1) << (id & 63);
    }
    if (child.child_begin < child.child_end) walk(c, depth + 1, bits);
  }
}

void TokenConstraint::compute(std::vector<uint64_t>& bits) {
  bits.assign(size_t((vocab_->size() + 63) / 64), 0);
  if (finished_) return;
  depth_states_[0] = state_;
  walk(0, 0, bits);
  // Special tokens the grammar names (Grammar::special_token) are not in the trie.
  specials_.clear();
  matcher_.next_tokens(state_, specials_);
  for (int32_t id : specials_)
    if (id < vocab_->size()) bits[size_t(id) >> 6] |= uint64_t(1) << (id & 63);
  if (complete())
    for (int32_t id : vocab_->stop_ids())
      if (id >= 0 && id < vocab_->size()) bits[size_t(id) >> 6] |= uint64_t(1) << (id & 63);
}

const std::vector<uint64_t>& TokenConstraint::allowed() {
  if (current_) return *current_;
  if (finished_) {
    finished_bits_.assign(size_t((vocab_->size() + 63) / 64), 0);
    current_ = &finished_bits_;
    return *current_;
  }
  auto it = cache_.find(state_);
  if (it != cache_.end()) {
    ++n_hits_;
  } else {
    ++n_misses_;
    if (cache_.size() >= kMaxCachedStates) cache_.clear();
    it = cache_.emplace(state_, std::vector<uint64_t>()).first;
    compute(it->second);
  }
  current_ = &it->second;
  return *current_;
}

bool TokenConstraint::is_allowed(int32_t id) {
  if (id < 0 || id >= vocab_->size()) return false;
  return (allowed()[size_t(id) >> 6] >> (id & 63)) & 1;
}

void TokenConstraint::mask(std::span<float> logits) {
  const std::vector<uint64_t>& bits = allowed();
  const float neg_inf = -std::numeric_limits<float>::infinity();
  int64_t n = std::min<int64_t>(int64_t(logits.size()), vocab_->size());
  // A word at a time: all-allowed words (inside strings, most of them) cost one compare.
  for (int64_t w = 0; w * 64 < n; ++w) {
    uint64_t word = bits[size_t(w)];
    if (word == ~uint64_t(0)) continue;
    int64_t end = std::min<int64_t>(n, (w + 1) * 64);
    for (int64_t i = w * 64; i < end; ++i)
      if (!((word >> (i & 63)) & 1)) logits[size_t(i)] = neg_inf;
  }
  for (size_t i = size_t(n); i < logits.size(); ++i) logits[i] = neg_inf;
}

bool TokenConstraint::accept(int32_t id) {
  if (finished_ || id < 0 || id >= vocab_->size()) return false;
  const auto& stops = vocab_->stop_ids();
  if (std::find(stops.begin(), stops.end(), id) != stops.end()) {
    if (!complete()) return false;
    finished_ = true;
    current_ = nullptr;
    return true;
  }
  if (!is_allowed(id)) return false;
  const std::string& bytes = vocab_->bytes_[size_t(id)];
  Matcher::State next;
  Matcher::State cur = state_;
  if (vocab_->special_[size_t(id)]) {  // allowed, so the grammar names it: no bytes to read
    matcher_.step_token(cur, id, next);
    if (next.empty()) return false;
    state_ = std::move(next);
    current_ = nullptr;
    return true;
  }
  for (char c : bytes) {
    matcher_.step(cur, uint8_t(c), next);
    if (next.empty()) return false;
    cur.swap(next);
  }
  state_ = std::move(cur);
  current_ = nullptr;
  return true;
}

}  // namespace sickle::grammar
