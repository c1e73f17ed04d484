// sickle/server/scripted_engine.h — an Engine that replays scripted replies, for end-to-end
// protocol tests (`sickle serve --script FILE`): tool calls, reasoning, stop strings and
// streaming deltas need a model that emits them on cue, which a random or small demo model
// never does. Everything else (tokenizer, chat template, scheduler, parser, HTTP) is real.
//
// FILE: [{"when": "substring of the prompt text", "reply": "assistant text"}, ...]; the first
// rule whose `when` occurs in the prompt wins; no match replies "OK". The reply is written as
// the text after the prompt's generation prefix (`<think>` or `<think></think>`), so with
// thinking on a reply looks like "reasoning</think>answer". Markers in the reply (<think>,
// <|tool_call_begin|>, ...) are encoded as their special ids. After the reply: <|im_end|>.
//
// An opening the prompt forced after the generation prompt (tool_choice required / named)
// counts as produced: a reply that continues it (`{"city": "Paris"}<|tool_call_end|>...`) is
// emitted after it.
//
// The next token is a pure function of the sequence's tokens, so batching and prefix caching
// behave as with a real model.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>

#include "server/codec.h"
#include "server/scheduler.h"

namespace sickle::server {

std::unique_ptr<Engine> make_scripted_engine(const TextCodec& codec, const nlohmann::json& rules,
                                             int64_t max_context = 8192);

}  // namespace sickle::server
