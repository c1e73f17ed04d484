// sickle run — generate from a prompt, streaming text (or ids) to stdout, figures to stderr.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>

#include "apps/cli/command.h"
#include "apps/cli/options.h"
#include "base/error.h"
#include "base/log.h"
#include "io/writer.h"
#include "model/model.h"
#include "model/perf.h"
#include "model/sampler.h"
#include "runtime/membw.h"
#include "runtime/thread_pool.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"
#include "vision/embed.h"
#include "vision/prompt.h"

namespace sickle::cli {
namespace {

namespace fs = std::filesystem;

struct RunArgs {
  std::string model_dir, prompt, tokens, dump_logits, thinking = "off", chat_template, dump_image_embeddings;
  std::vector<std::string> images;
  int64_t n_predict = 128, ctx = 0;
  int threads = 0;
  bool bf16_acts = false;
  bool chat = false, print_ids = false, ignore_eos = false, specials_in_content = false,
       allow_long_context = false, warmup = false;
  double membw_gbs = 0;
  SamplingParams sp;
};

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, ',')) {
    if (part.empty()) continue;
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != part.size() || v < 0 || v > INT32_MAX) fail("--tokens: '{}' is not a token id", part);
    ids.push_back(int32_t(v));
  }
  if (ids.empty()) fail("--tokens: no token ids in '{}'", s);
  return ids;
}

bool has_tokenizer(const fs::path& dir) {
  return fs::exists(dir / "tiktoken.model") || fs::exists(dir / "tokenizer.json");
}

// One F32 tensor `logits` [rows, vocab] as a single safetensors file.
void write_logits(const fs::path& file, std::vector<float>&& rows, int64_t vocab) {
  write_safetensors_file(file, [&](CheckpointWriter& w) {
    w.add("logits", DType::F32, {int64_t(rows.size()) / vocab, vocab}, TensorSource::from_vector(rows));
  });
}

// --image with --dump-image-embeddings: the vision tower only, no text generation.
int dump_images(const RunArgs& a) {
  check_output(a.dump_image_embeddings, OutputKind::kFile, /*force=*/true, {{"model directory", a.model_dir}},
               "--dump-image-embeddings");
  auto ck = Checkpoint::open(a.model_dir);
  ThreadPool pool(a.threads);
  vision::write_image_embeddings(a.dump_image_embeddings, vision::embed_image_files(*ck, a.images, &pool));
  return 0;
}

int run(const RunArgs& a) {
  if (!a.dump_image_embeddings.empty()) {
    if (a.images.empty()) fail("--dump-image-embeddings needs at least one --image FILE");
    return dump_images(a);
  }
  check_context(a.ctx, a.model_dir, a.allow_long_context, "-c/--ctx");
  if (!a.dump_logits.empty())
    check_output(a.dump_logits, OutputKind::kFile, /*force=*/true, {{"model directory", a.model_dir}},
                 "--dump-logits");
  ModelOptions mo;
  mo.n_threads = a.threads;
  mo.bf16_activations = a.bf16_acts;
  mo.max_context = a.ctx;
  auto model = Model::load(a.model_dir, mo);
  const int64_t V = model->vocab_size();
  std::unique_ptr<Tokenizer> tok;
  if (has_tokenizer(a.model_dir)) tok = Tokenizer::load(a.model_dir);
  if (tok) apply_chat_template_option(*tok, a.chat_template);

  std::vector<int32_t> prompt;
  if (!a.tokens.empty()) {
    prompt = parse_ids(a.tokens);
  } else {
    if (!tok) fail("{}: no tokenizer (tiktoken.model or tokenizer.json); use --tokens", a.model_dir);
    if (a.prompt.empty() && !a.chat) fail("run: give a prompt with -p or token ids with --tokens");
    if (a.chat) {
      nlohmann::json messages = nlohmann::json::array({{{"role", "user"}, {"content", a.prompt}}});
      prompt =
          tok->encode(render_chat(*tok, messages, nullptr, true, a.thinking == "on"), a.specials_in_content);
    } else {
      // With images, <|media_pad|> in the text is the placeholder token.
      prompt = tok->encode(a.prompt, /*allow_special=*/!a.images.empty());
    }
    if (prompt.empty()) fail("run: the prompt encodes to no tokens");
  }
  // Images: each placeholder becomes the image's tokens, their rows the projected embeddings.
  vision::ImageEmbeddings images;
  std::vector<const float*> embed_rows;
  if (!a.images.empty()) {
    const int32_t media = vision::media_placeholder_id(model->checkpoint().config_json(), a.model_dir);
    images = vision::embed_image_files(model->checkpoint(), a.images, &model->pool());
    vision::ExpandedPrompt ex = vision::expand_media_placeholders(prompt, media, images);
    prompt = std::move(ex.tokens);
    embed_rows = std::move(ex.rows);
  }
  if (int64_t(prompt.size()) > model->max_context())
    fail("run: the prompt has {} tokens, more than the context of {} tokens", prompt.size(),
         model->max_context());
  std::vector<int32_t> stop;
  if (tok) stop = tok->stop_ids();
  else if (model->config().eos_token_id) stop.push_back(int32_t(*model->config().eos_token_id));
  if (a.ignore_eos) stop.clear();

  Sampler sampler(a.sp);
  auto seq = model->new_sequence();
  std::vector<float> logits, dump;
  const bool dumping = !a.dump_logits.empty();
  RunFigures fig;
  fig.n_prompt = int64_t(prompt.size());
  fig.active_bytes_per_token = model->active_bytes_per_token();

  // Prefill in chunks of kPrefillChunk tokens: step scratch stays bounded (O(chunk x hidden)).
  constexpr size_t kPrefillChunk = 512;
  auto prefill = [&](bool keep) {
    for (size_t b = 0; b < prompt.size(); b += kPrefillChunk) {
      size_t n = std::min(kPrefillChunk, prompt.size() - b);
      std::span<const float* const> rows;
      if (!embed_rows.empty()) rows = std::span<const float* const>(embed_rows.data() + b, n);
      model->forward(*seq, std::span<const int32_t>(prompt.data() + b, n), logits, keep && dumping, rows);
      if (keep && dumping) dump.insert(dump.end(), logits.begin(), logits.end());
    }
  };
  if (a.warmup) {
    // As llama-bench: the prompt (and one decode step) once, untimed, so the figures are the
    // steady state (step scratch and the KV cache already touched), then forgotten.
    prefill(false);
    if (a.n_predict > 0 && seq->n_past() < model->max_context()) {
      const int32_t first = prompt.back();
      model->forward(*seq, std::span<const int32_t>(&first, 1), logits);
    }
    seq->truncate(0);
  }
  // The host's bandwidth can halve within a minute when it is shared: measure it on both sides of
  // the timed run and divide by the better, so the printed fraction is not inflated by a dip.
  std::optional<ReadBandwidthProbe> probe;
  double bandwidth_before = 0;
  if (a.membw_gbs <= 0) {
    probe.emplace(&model->pool(), size_t(256) << 20);
    bandwidth_before = probe->measure().read_bytes_per_s();
  }
  auto t0 = std::chrono::steady_clock::now();
  prefill(true);
  fig.prefill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const float* last = logits.data() + logits.size() - V;

  std::unique_ptr<StreamDecoder> sd;
  if (tok && !a.print_ids) sd = std::make_unique<StreamDecoder>(*tok);
  std::vector<int32_t> generated;
  auto t1 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < a.n_predict; ++i) {
    int32_t id = sampler.sample(last, V);
    generated.push_back(id);
    bool is_stop = std::find(stop.begin(), stop.end(), id) != stop.end();
    if (sd && !is_stop) {
      std::string piece = sd->push(id);
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    // Feed the token unless generation ends here; when dumping, feed it anyway so the dump
    // covers every position (prompt + generated).
    bool done = is_stop || i + 1 == a.n_predict || seq->n_past() + 1 > model->max_context();
    if (done && !(dumping && seq->n_past() < model->max_context())) break;
    std::span<const int32_t> one(&generated.back(), 1);
    model->forward(*seq, one, logits);
    ++fig.n_generated;
    if (dumping) dump.insert(dump.end(), logits.begin(), logits.end());
    last = logits.data();
    if (done) break;
  }
  fig.decode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  fig.cache_bytes_per_token = decode_cache_bytes_per_token(model->config(), fig.n_prompt, fig.n_generated);
  if (sd) {
    std::string rest = sd->flush();
    std::fwrite(rest.data(), 1, rest.size(), stdout);
    std::fputc('\n', stdout);
  } else if (a.print_ids || !tok) {
    for (size_t i = 0; i < generated.size(); ++i) std::printf(i ? " %d" : "%d", generated[i]);
    std::printf("\n");
  }
  std::fflush(stdout);
  if (dumping) write_logits(a.dump_logits, std::move(dump), V);

  const char* src = "given";
  if (a.membw_gbs > 0) {
    fig.bandwidth = a.membw_gbs * 1e9;
  } else {
    fig.bandwidth = std::max(bandwidth_before, probe->measure().read_bytes_per_s());
    src = "measured";
  }
  std::fprintf(stderr, "%s\n", format_figures(fig, src).c_str());
  return 0;
}

Registrar reg(
    {"run", "Generate text from a prompt (streams to stdout; figures to stderr)", 60, [](CLI::App& sub) {
       auto a = std::make_shared<RunArgs>();
       sub.add_option("-m,--model", a->model_dir, "Model directory")->required();
       sub.add_option("-p,--prompt", a->prompt, "Prompt text");
       sub.add_option("-n,--n-predict", a->n_predict, "Tokens to generate")
           ->capture_default_str()
           ->check(CLI::Range(int64_t(0), int64_t(1) << 30));
       sub.add_option("--temperature", a->sp.temperature, "0 = greedy")->capture_default_str();
       sub.add_option("--top-p", a->sp.top_p, "Nucleus sampling mass")->capture_default_str();
       sub.add_option("--top-k", a->sp.top_k, "Keep the k most likely (0 = off)")->capture_default_str();
       sub.add_option("--min-p", a->sp.min_p, "Drop tokens below min_p x p_max (0 = off)")
           ->capture_default_str();
       sub.add_option("--seed", a->sp.seed, "Sampling seed")->capture_default_str();
       sub.add_flag("--chat", a->chat, "Wrap the prompt as one user turn in the model's chat format");
       add_chat_template_option(sub, a->chat_template);
       add_content_specials_flag(sub, a->specials_in_content);
       sub.add_option("--thinking", a->thinking, "Chat: open a <think> block (on) or an empty one (off)")
           ->check(CLI::IsMember({"on", "off"}))
           ->capture_default_str();
       sub.add_option("--tokens", a->tokens, "Prompt as token ids, comma-separated (no tokenizer needed)");
       sub.add_flag("--print-ids", a->print_ids,
                    "Print generated ids (space-separated, one line) instead of text");
       sub.add_option("--dump-logits", a->dump_logits,
                      "Write logits [positions, vocab] (every prompt position, then each generated token fed "
                      "back) to a safetensors file "
                      "(replaced if it exists; never a file of the model)");
       sub.add_option("--image", a->images,
                      "Image file (PNG or JPEG) for Kimi-K2.5's vision tower, repeatable: the prompt holds "
                      "one <|media_pad|> "
                      "(media_placeholder_token_id) per image, in order");
       sub.add_option("--dump-image-embeddings", a->dump_image_embeddings,
                      "Write each --image's projected embeddings (F32 image.<i> [tokens, text hidden]) and "
                      "their patch grids "
                      "(I64 grid_thw [images, 3]) to a safetensors file, then exit");
       add_threads_option(sub, a->threads, "-t,--threads");
       add_bf16_acts_option(sub, a->bf16_acts);
       sub.add_option("-c,--ctx", a->ctx, "Context length (0 = max_position_embeddings)")
           ->capture_default_str();
       add_allow_long_context(sub, a->allow_long_context);
       sub.add_option("--membw", a->membw_gbs,
                      "Machine memory bandwidth in GB/s for the figures (default: measured before and after "
                      "the timed run, the better of the two)");
       sub.add_flag("--ignore-eos", a->ignore_eos, "Do not stop at stop tokens");
       sub.add_flag("--warmup", a->warmup,
                    "Benchmarking: run the prompt and one decode step once, untimed, before the timed "
                    "run (as llama-bench does), so the figures exclude first-touch costs of fresh "
                    "scratch and KV-cache memory. Output and sampling are unchanged");
       return [a] { return run(*a); };
     }});

}  // namespace
}  // namespace sickle::cli
