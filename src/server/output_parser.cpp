// sickle/server/output_parser.cpp — see output_parser.h.
#include "server/output_parser.h"

#include <algorithm>

namespace sickle::server {

namespace {
constexpr const char* kMarkerText[int(Marker::kCount)] = {
    "<think>",
    "</think>",
    "<|tool_calls_section_begin|>",
    "<|tool_calls_section_end|>",
    "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>",
    "<|tool_call_end|>",
};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\n' || s.front() == '\t' || s.front() == '\r'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// Length of the longest suffix of `text` that is a proper prefix of one of `patterns`.
template <class Patterns>
size_t held_suffix(std::string_view text, const Patterns& patterns) {
  size_t best = 0;
  for (std::string_view p : patterns) {
    size_t max_len = std::min(text.size(), p.size() - 1);
    for (size_t len = max_len; len > best; --len)
      if (text.substr(text.size() - len) == p.substr(0, len)) {
        best = len;
        break;
      }
  }
  return best;
}

// Kimi's tool-call id "functions.NAME:IDX": the name is after the last '.' and before ':'.
std::string tool_name_of(std::string_view id) {
  size_t colon = id.rfind(':');
  std::string_view base = colon == std::string_view::npos ? id : id.substr(0, colon);
  size_t dot = base.rfind('.');
  return std::string(dot == std::string_view::npos ? base : base.substr(dot + 1));
}
}  // namespace

const char* marker_text(Marker m) { return kMarkerText[int(m)]; }

MarkerIds MarkerIds::from(const TextCodec& codec) {
  MarkerIds m;
  for (int i = 0; i < int(Marker::kCount); ++i) m.ids[i] = codec.special_id(kMarkerText[i]);
  return m;
}

MarkerIds MarkerIds::none() {
  MarkerIds m;
  std::fill(std::begin(m.ids), std::end(m.ids), -1);
  return m;
}

void OutputDelta::append(OutputDelta&& d) {
  content += d.content;
  reasoning += d.reasoning;
  for (auto& t : d.tool_calls) {
    if (!tool_calls.empty() && tool_calls.back().index == t.index && !t.is_first)
      tool_calls.back().arguments += t.arguments;
    else tool_calls.push_back(std::move(t));
  }
}

OutputParser::OutputParser(const MarkerIds& ids, bool start_in_reasoning, bool tool_calls,
                           int64_t max_tool_calls)
    : ids_(ids),
      state_(start_in_reasoning ? State::kReasoning : State::kContent),
      tool_calls_(tool_calls),
      max_tool_calls_(max_tool_calls) {}

namespace {
bool is_tool_marker(int m) { return m != int(Marker::kThinkBegin) && m != int(Marker::kThinkEnd); }
}  // namespace

void OutputParser::push(int32_t id, std::string_view text, OutputDelta& out) {
  if (done_) return;
  if (id >= 0) {
    for (int m = 0; m < int(Marker::kCount); ++m) {
      if (ids_.ids[m] == id) {
        if (!tool_calls_ && is_tool_marker(m)) return;  // a special token without text
        // Held-back text before a marker token cannot continue into a marker: a broken tag,
        // dropped (drop_broken_tag); the rest is plain text.
        drop_broken_tag(pending_);
        scan(out, /*final=*/true);
        on_marker(Marker(m), out);
        return;
      }
    }
  }
  if (text.empty()) return;
  pending_ += text;
  scan(out, /*final=*/false);
}

// The starts of markers that end `text`, one after another ("<think</thi": 11 bytes). Held
// back while undecided; dropped when a marker follows them (drop_broken_tag).
namespace {
size_t fragment_chain(std::string_view text) {
  size_t n = 0;
  while (size_t h = held_suffix(text.substr(0, text.size() - n), kMarkerText)) n += h;
  return n;
}
}  // namespace

// A marker that directly follows the start of another (`<think</think>`, or "<thi" then a
// marker token): the fragment is dropped, so that it cannot join the text after the marker
// into marker text ("<think" + "> hi") in content or reasoning.
void OutputParser::drop_broken_tag(std::string& text) { text.resize(text.size() - fragment_chain(text)); }

void OutputParser::finish(OutputDelta& out) {
  if (!done_) scan(out, /*final=*/true);
}

void OutputParser::scan(OutputDelta& out, bool final) {
  while (!pending_.empty()) {
    size_t best_pos = std::string::npos;
    int best_m = -1;
    if (pending_.find('<') != std::string::npos) {
      for (int m = 0; m < int(Marker::kCount); ++m) {
        if (!tool_calls_ && is_tool_marker(m)) continue;
        size_t pos = pending_.find(kMarkerText[m]);
        if (pos < best_pos) best_pos = pos, best_m = m;
      }
    }
    if (best_m >= 0) {
      std::string before = pending_.substr(0, best_pos);
      drop_broken_tag(before);
      emit_text(before, out);
      pending_.erase(0, best_pos + std::char_traits<char>::length(kMarkerText[best_m]));
      on_marker(Marker(best_m), out);
      continue;
    }
    size_t hold = final ? 0 : fragment_chain(pending_);
    emit_text(std::string_view(pending_).substr(0, pending_.size() - hold), out);
    pending_.erase(0, pending_.size() - hold);
    break;
  }
}

void OutputParser::emit_text(std::string_view text, OutputDelta& out) {
  if (text.empty() || done_) return;
  switch (state_) {
    case State::kContent:
      content_ += text;
      out.content += text;
      break;
    case State::kReasoning:
      reasoning_ += text;
      out.reasoning += text;
      break;
    case State::kSection: break;  // whitespace between calls
    case State::kCallName: call_id_ += text; break;
    case State::kCallArgs: {
      if (skip_args_) break;
      int64_t index = int64_t(calls_.size()) - 1;
      calls_.back().arguments += text;
      if (!out.tool_calls.empty() && out.tool_calls.back().index == index) {
        out.tool_calls.back().arguments += text;
      } else {
        ToolCallDelta d;
        d.index = index;
        d.arguments = std::string(text);
        out.tool_calls.push_back(std::move(d));
      }
      break;
    }
  }
}

void OutputParser::on_marker(Marker m, OutputDelta& out) {
  auto open_call = [&] {
    std::string id(trim(call_id_));
    call_id_.clear();
    // A call without a function name is unusable by any client: its arguments are dropped.
    skip_args_ = tool_name_of(id).empty();
    if (skip_args_) return;
    calls_.push_back(ToolCall{id, tool_name_of(id), ""});
    ToolCallDelta d;
    d.index = int64_t(calls_.size()) - 1;
    d.is_first = true;
    d.id = calls_.back().id;
    d.name = calls_.back().name;
    out.tool_calls.push_back(std::move(d));
  };
  switch (m) {
    case Marker::kThinkBegin:
      if (state_ == State::kContent) state_ = State::kReasoning;
      break;
    case Marker::kThinkEnd:
      if (state_ == State::kReasoning) state_ = State::kContent;
      break;
    case Marker::kSectionBegin:
      if (state_ == State::kContent || state_ == State::kReasoning) state_ = State::kSection;
      break;
    case Marker::kCallBegin:
      // A call begun without its section marker (or after an unterminated call) still counts.
      call_id_.clear();
      state_ = State::kCallName;
      break;
    case Marker::kArgBegin:
      if (state_ == State::kCallName) {
        open_call();
        state_ = State::kCallArgs;
      }
      break;
    case Marker::kCallEnd:
      if (state_ == State::kCallName) open_call();  // a call without arguments
      if (state_ == State::kCallName || state_ == State::kCallArgs) state_ = State::kSection;
      if (max_tool_calls_ > 0 && int64_t(calls_.size()) >= max_tool_calls_) done_ = true;
      break;
    case Marker::kSectionEnd:
      if (state_ != State::kReasoning) state_ = State::kContent;
      break;
    case Marker::kCount: break;
  }
}

// ---- stop strings ----

std::string StopMatcher::push(std::string_view text) {
  if (stopped_) return {};
  pending_ += text;
  if (stops_.empty() || !active_) return std::exchange(pending_, {});
  size_t best = std::string::npos, best_len = 0;
  const std::string* best_stop = nullptr;
  for (auto& s : stops_) {
    const size_t at = pending_.find(s);
    if (at < best || (at == best && at != std::string::npos && s.size() > best_len))
      best = at, best_len = s.size(), best_stop = &s;
  }
  if (best != std::string::npos) {
    stopped_ = true;
    matched_ = *best_stop;
    std::string out = pending_.substr(0, best + (include_stop_ ? best_len : 0));
    pending_.clear();
    return out;
  }
  size_t hold = held_suffix(pending_, stops_);
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopMatcher::flush() {
  if (stopped_) return {};
  return std::exchange(pending_, {});
}

bool prompt_opens_reasoning(const TextCodec& codec, const MarkerIds& ids,
                            const std::vector<int32_t>& prompt) {
  const int32_t think = ids.ids[int(Marker::kThinkBegin)];
  if (think < 0) return false;
  for (auto it = prompt.rbegin(); it != prompt.rend(); ++it) {
    if (*it == think) return true;
    if (codec.is_special(*it)) return false;
    const std::string text = codec.token_text(*it);
    if (!trim(text).empty() || text.empty()) return false;
  }
  return false;
}

// ---- pipelines ----

ChatOutput::ChatOutput(const TextCodec& codec, const MarkerIds& ids, OutputOptions text,
                       bool start_in_reasoning)
    : codec_(codec),
      ids_(ids),
      stream_(codec.new_stream()),
      stop_(std::move(text.stops), text.include_stop_str),
      skip_special_(text.skip_special_tokens),
      parser_(ids, start_in_reasoning, text.tool_calls, text.max_tool_calls) {}

bool ChatOutput::push(int32_t id, OutputDelta& out) {
  if (stop_.stopped() || parser_.done()) return false;
  if (codec_.is_special(id)) {
    bool marker = false;
    for (int32_t m : ids_.ids) marker |= m == id;
    if (marker) {
      parser_.push(-1, stop_.flush(), out);
      parser_.push(id, {}, out);
    } else if (!skip_special_) {
      parser_.push(-1, stop_.push(stream_->flush() + codec_.token_text(id)), out);
    }  // else: other special tokens carry no text
  } else {
    parser_.push(-1, stop_.push(stream_->push(id)), out);
  }
  return !stop_.stopped() && !parser_.done();
}

void ChatOutput::finish(OutputDelta& out) {
  std::string tail = stop_.push(stream_->flush());
  tail += stop_.flush();
  parser_.push(-1, tail, out);
  parser_.finish(out);
}

TextOutput::TextOutput(const TextCodec& codec, OutputOptions text)
    : codec_(codec),
      stream_(codec.new_stream()),
      stop_(std::move(text.stops), text.include_stop_str),
      skip_special_(text.skip_special_tokens) {}

bool TextOutput::push(int32_t id, std::string& out) {
  if (stop_.stopped()) return false;
  if (codec_.is_special(id)) {
    if (skip_special_) return true;
    out += stop_.push(stream_->flush() + codec_.token_text(id));
    return !stop_.stopped();
  }
  out += stop_.push(stream_->push(id));
  return !stop_.stopped();
}

void TextOutput::finish(std::string& out) {
  out += stop_.push(stream_->flush());
  out += stop_.flush();
}

}  // namespace sickle::server
