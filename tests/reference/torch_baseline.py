#!/usr/bin/env python3
"""tests/reference/torch_baseline.py: the PyTorch trainer anvil's GPU benchmark races.

What it is: the trainer a user would write instead of using anvil, done the way the
fast PyTorch recipes do it (nanoGPT, torchtitan): bf16 autocast over fp32 master
weights, `F.scaled_dot_product_attention(is_causal=True)` (flash attention on an
H100), `torch.compile(model)`, TF32 for the fp32 matmuls that remain, fused AdamW
(`torch.optim.AdamW(fused=True)`), global-norm gradient clipping, gradient
accumulation. tests/bench/gpu_bench.sh runs it against `anvil train` on the same
data and shapes.

What it matches in anvil (so tokens/s and MFU compare like with like):
- the model, as trainer/model.c defines it: GPT-2 (learned positions, LayerNorm with
  bias, GELU tanh, biases everywhere, tied head) and Llama (RMSNorm, RoPE in the
  rotate_half layout with theta and the optional Llama-3 frequency scaling of the
  config, grouped-query attention where query head h reads kv head h // (NH/KVH),
  SwiGLU, optional q/k/v bias, tied or untied head); no vocabulary padding (anvil has
  none with tp=1). q, k and v are one fused Linear (as in nanoGPT): the same
  parameters and FLOPs as anvil's three, in one GEMM. Initialisation follows the same
  rule (normal(0, init_std), residual projections / sqrt(2 L), norms 1, biases 0)
  from torch's RNG, so the weights are not anvil's unless --init-from loads them;
- the config: an anvil YAML config plus `section.key=value` overrides, read with
  anvil's precedence (defaults, preset, file, overrides) and its presets; given the
  effective config that `anvil config` prints (what the benchmark does), every shape
  and hyper-parameter is anvil's by construction;
- the optimizer: AdamW with optim.beta1/beta2/eps, weight decay on the 2-D matrices of
  linear layers only (embeddings wte/wpe/lm_head too with optim.decay_embeddings),
  clipping at optim.grad_clip, the learning rate of trainer/schedule.c each step;
- the data: anvil's token shards (data/shard.c, docs/formats.md: the anvil layout and
  the llm.c one), windows of T+1 tokens, and the same sample stream as data/loader.c:
  files sorted by path, window w of a shard starting at token w*T, step k reading stream
  positions [k*G, (k+1)*G), random order by the same splitmix64 Fisher-Yates
  permutation per epoch. So step k sees exactly anvil's batch k (single rank);
- the FLOP count of trainer/model.c's model_flops_per_token: 6 x (every parameter
  outside the embeddings, plus V*C for the head) + 6 L NH HS T per token; MFU divides
  by --peak-tflops (989 for an H100's dense bf16).

Measured: the first --warmup steps (torch.compile, cuBLAS and allocator warm-up) are
excluded; over the rest, tokens/s = tokens / wall time, ms/step (mean and median),
MFU, and the allocator's peak (torch.cuda.max_memory_allocated). Each step ends with
a synchronisation (the loss is read back), as anvil's does. The result is one JSON
line on stdout (also written to --json FILE); progress goes to stderr.

`--make-shard PATH --tokens N --vocab V` writes a valid anvil shard of synthetic
tokens (Zipf-distributed ranks mapped through a fixed random permutation of the ids,
or uniform) so that the benchmark needs no dataset; numpy only, no torch.

On the CPU (--device cpu, e.g. Debian's torch 1.13) the defaults become fp32, no
compile, unfused AdamW, and attention falls back to plain matmul + softmax when
scaled_dot_product_attention does not exist: a smoke test of everything but speed.

Dimension legend: B micro-batch, T sequence, C channels, NH query heads, KVH key/value
heads, HS head size, F MLP hidden, V vocabulary, G sequences per optimizer step.
"""
import argparse
import contextlib
import glob
import json
import math
import os
import statistics
import sys
import time

import numpy as np

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    _Module = nn.Module
except ImportError:   # --make-shard needs numpy only
    torch = None
    _Module = object

H100_PEAK_TFLOPS = 989.0   # H100 SXM dense bf16 tensor-core peak (no sparsity)


def die(msg):
    print(f"torch_baseline: {msg}", file=sys.stderr)
    sys.exit(2)


# ----------------------------------------------------------------------------
# config: anvil's keys (trainer/config.c), presets (trainer/presets.c) and shape
# resolution (model_config_resolve in trainer/model.c)

# key -> (type, default). Only what the baseline uses; other anvil keys are accepted
# and ignored. Float keys are rounded to float32 as anvil stores them.
KEYS = {
    "model.family": ("enum:gpt2|llama", "gpt2"),
    "model.preset": ("str", ""),
    "model.n_layer": ("int", 0), "model.d_model": ("int", 0), "model.n_head": ("int", 0),
    "model.n_kv_head": ("int", 0), "model.ffn_dim": ("int", 0),
    "model.vocab_size": ("int", 0), "model.max_seq_len": ("int", 0),
    "model.tie_embeddings": ("bool", True), "model.qkv_bias": ("bool", False),
    "model.rope_theta": ("float", 10000.0),
    "model.rope_scaling": ("enum:none|llama3", "none"),
    "model.rope_factor": ("float", 8.0), "model.rope_low_freq_factor": ("float", 1.0),
    "model.rope_high_freq_factor": ("float", 4.0),
    "model.rope_original_max_pos": ("int", 8192),
    "model.norm_eps": ("float", 0.0), "model.init_std": ("float", 0.02),
    "train.steps": ("int", 1000), "train.seq_len": ("int", 256),
    "train.micro_batch": ("int", 8), "train.global_batch_tokens": ("int", 0),
    "train.lr": ("float", 6e-4), "train.min_lr": ("float", 6e-5),
    "train.warmup_steps": ("int", 0),
    "train.schedule": ("enum:cosine|linear|constant|wsd", "cosine"),
    "train.decay_frac": ("float", 0.2), "train.seed": ("int", 1337),
    "train.peak_flops": ("double", 0.0),
    "optim.beta1": ("float", 0.9), "optim.beta2": ("float", 0.95),
    "optim.eps": ("float", 1e-8), "optim.weight_decay": ("float", 0.1),
    "optim.decay_embeddings": ("bool", False), "optim.grad_clip": ("float", 1.0),
    "data.train": ("str", "runs/data/fortunes/train_*.bin"),
    "data.order": ("enum:random|sequential", "random"),
    "data.tokenizer": ("str", ""),
    "parallel.dp": ("str", "auto"), "parallel.tp": ("int", 1), "parallel.pp": ("int", 1),
    "device": ("enum:auto|cpu|cuda", "auto"),
}
SHAPE_KEYS = ("n_layer", "d_model", "n_head", "n_kv_head", "ffn_dim", "vocab_size",
              "max_seq_len", "norm_eps")   # 0 means "from the preset" (KEY_ZERO_PRESET)


def _gpt2(L, C, H):
    return dict(family="gpt2", n_layer=L, d_model=C, n_head=H, n_kv_head=H, ffn_dim=4 * C,
                vocab_size=50257, max_seq_len=1024, tie_embeddings=True, qkv_bias=True,
                rope_theta=10000.0, rope_scaling="none", norm_eps=1e-5)


def _llama(L, C, H, KVH, F_, V, maxT, tie, qkv_bias, theta, scaling, factor, eps):
    return dict(family="llama", n_layer=L, d_model=C, n_head=H, n_kv_head=KVH, ffn_dim=F_,
                vocab_size=V, max_seq_len=maxT, tie_embeddings=tie, qkv_bias=qkv_bias,
                rope_theta=theta, rope_scaling=scaling, rope_factor=factor,
                rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
                rope_original_max_pos=8192, norm_eps=eps)


PRESETS = {   # as trainer/presets.c
    "gpt2-124m": _gpt2(12, 768, 12), "gpt2-350m": _gpt2(24, 1024, 16),
    "gpt2-774m": _gpt2(36, 1280, 20), "gpt2-1558m": _gpt2(48, 1600, 25),
    "llama-1b": _llama(16, 2048, 32, 8, 8192, 128256, 8192, True, False, 500000.0,
                       "llama3", 32.0, 1e-5),
    "smollm-135m": _llama(30, 576, 9, 3, 1536, 49152, 2048, True, False, 10000.0, "none",
                          8.0, 1e-5),
    "qwen2.5-0.5b": _llama(24, 896, 14, 2, 4864, 151936, 32768, True, True, 1e6, "none",
                           8.0, 1e-6),
    "gpt2-tiny": dict(_gpt2(2, 64, 4), ffn_dim=256, vocab_size=257, max_seq_len=256),
    "llama-tiny": _llama(2, 64, 4, 2, 160, 257, 256, False, False, 10000.0, "none", 8.0,
                         1e-5),
}


def _parse_value(key, text):
    typ = KEYS[key][0] if key in KEYS else "str"
    t = text.strip()
    try:
        if typ == "int":
            v = float(t) if any(c in t for c in ".eE") else int(t)
            if v != int(v):
                raise ValueError
            return int(v)
        if typ == "float":
            return float(np.float32(float(t)))
        if typ == "double":
            return float(t)
        if typ == "bool":
            low = t.lower()
            if low in ("true", "yes", "on", "1"):
                return True
            if low in ("false", "no", "off", "0"):
                return False
            raise ValueError
    except ValueError:
        die(f"key '{key}': cannot read '{text}' as {typ}")
    if typ.startswith("enum:") and t not in typ[5:].split("|"):
        die(f"key '{key}': unknown value '{t}' (expected one of: {typ[5:]})")
    return t


def _scalar_text(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(_scalar_text(x) for x in v)
    return str(v)


def _yaml_flat(path):
    """{section.key: text} of an anvil YAML config (nested or flat spelling)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        die(f"config file '{path}': {e.strerror}")
    try:
        import yaml
        doc = yaml.safe_load(text) or {}
    except ImportError:
        doc = _mini_yaml(text)
    except Exception as e:   # yaml.YAMLError and friends
        die(f"{path}: YAML error: {e}")
    if not isinstance(doc, dict):
        die(f"{path}: the top level must be a mapping")
    flat = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                flat[f"{k}.{k2}"] = _scalar_text(v2)
        else:
            flat[str(k)] = _scalar_text(v)
    return flat


def _mini_yaml(text):
    """The subset of YAML anvil's configs use, for Pythons without PyYAML: two levels of
    `key: value`, `# comments`, quoted strings, `[a, b]` lists, `~` / null."""
    def value(s):
        s = s.strip()
        if s.startswith(("'", '"')):
            return s[1:s.index(s[0], 1)]
        s = s.split(" #")[0].strip()
        if s.startswith("[") and s.endswith("]"):
            return [value(x) for x in s[1:-1].split(",") if x.strip()]
        return None if s in ("", "~", "null") else s

    doc, section = {}, None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, rest = line.strip().partition(":")
        if line[0] in " \t":
            if section is None:
                raise ValueError(f"indented line outside a section: {line!r}")
            doc[section][key] = value(rest)
        elif value(rest) is None and not rest.strip().startswith(("'", '"')):
            section = key
            doc[section] = {}
        else:
            section = None
            doc[key] = value(rest)
    return doc


def load_config(path, overrides):
    """The resolved config as {key: value}: defaults, preset, file, overrides."""
    file_kv = _yaml_flat(path) if path else {}
    over = []
    for o in overrides:
        k, eq, v = o.partition("=")
        if not eq:
            die(f"override '{o}': expected section.key=value")
        over.append((k, v))
    cfg = {k: _parse_value(k, _scalar_text(d)) for k, (_, d) in KEYS.items()}
    preset = file_kv.get("model.preset", "")
    for k, v in over:
        if k == "model.preset":
            preset = v
    if preset:
        if preset not in PRESETS:
            die(f"unknown preset '{preset}' (expected one of: {', '.join(PRESETS)})")
        for k, v in PRESETS[preset].items():
            cfg["model." + k] = v
    for k, v in list(file_kv.items()) + over:
        val = _parse_value(k, v)
        if k.startswith("model.") and k[6:] in SHAPE_KEYS and val == 0:
            continue   # a 0 keeps the preset's value
        cfg[k] = val
    # model_config_resolve
    m = {k[6:]: v for k, v in cfg.items() if k.startswith("model.")}
    m["n_layer"] = m["n_layer"] or 4
    m["d_model"] = m["d_model"] or 256
    m["n_head"] = m["n_head"] or 4
    m["n_kv_head"] = m["n_kv_head"] or m["n_head"]
    if not m["vocab_size"]:
        if cfg["data.tokenizer"]:
            die("model.vocab_size is 0 and data.tokenizer is set: give model.vocab_size "
                "(or pass the effective config of `anvil config`)")
        m["vocab_size"] = 257
    m["max_seq_len"] = m["max_seq_len"] or 1024
    m["norm_eps"] = m["norm_eps"] or 1e-5
    if not m["ffn_dim"]:
        m["ffn_dim"] = (4 * m["d_model"] if m["family"] == "gpt2"
                        else ((8 * m["d_model"]) // 3 + 63) // 64 * 64)
    if m["d_model"] % m["n_head"] or m["n_head"] % m["n_kv_head"]:
        die("model.d_model must divide by model.n_head, and n_head by n_kv_head")
    if m["family"] == "gpt2":
        if m["n_kv_head"] != m["n_head"]:
            die("model.n_kv_head must equal model.n_head for the gpt2 family")
        m["qkv_bias"] = True
    for k, v in m.items():
        cfg["model." + k] = v
    cfg["model"] = m
    if cfg["parallel.tp"] != 1 or cfg["parallel.pp"] != 1 or cfg["parallel.dp"] not in (
            "auto", "0", "1"):
        die("the baseline trains on one device: parallel.dp/tp/pp must be 1 (or auto)")
    return cfg


def lr_at(cfg, s):
    """trainer/schedule.c: the learning rate of 0-based step s."""
    lr, lo = cfg["train.lr"], cfg["train.min_lr"]
    S, W = cfg["train.steps"], cfg["train.warmup_steps"]
    if s < W:
        return lr * (s + 1) / W
    sched = cfg["train.schedule"]
    if sched == "constant":
        return lr
    if sched == "wsd":
        decay_start = max(S - round(cfg["train.decay_frac"] * S), W)
        if s < decay_start:
            return lr
        return lr + (lo - lr) * (s - decay_start) / max(S - decay_start, 1)
    p = min(1.0, (s - W) / max(S - W, 1))
    if sched == "linear":
        return lr + (lo - lr) * p
    return lo + 0.5 * (lr - lo) * (1.0 + math.cos(math.pi * p))


# ----------------------------------------------------------------------------
# token shards (data/shard.c, docs/formats.md)

SHARD_MAGIC = 0x4B4F5441          # "ATOK"
SHARD_HEADER_BYTES = 64
LLMC_MAGIC = {20240520: (1, "<u2"), 20240801: (7, "<u4")}   # magic -> (version, dtype)


def read_shard(path):
    """The tokens of one shard as a read-only numpy memmap; exits 2 on a bad file."""
    try:
        size = os.path.getsize(path)
        head = np.fromfile(path, dtype="<u4", count=256 if size >= 1024 else size // 4)
    except OSError as e:
        die(f"shard '{path}': {e.strerror}")
    if size < SHARD_HEADER_BYTES:
        die(f"shard '{path}': shorter than the 64-byte header")
    if head[0] == SHARD_MAGIC:
        if head[1] != 1 or head[2] not in (2, 4):
            die(f"shard '{path}': unsupported version {head[1]} / token_bytes {head[2]}")
        tb, n, off = int(head[2]), int(head[4]) | int(head[5]) << 32, SHARD_HEADER_BYTES
        dtype = "<u2" if tb == 2 else "<u4"
    elif int(head[0]) in LLMC_MAGIC and size >= 1024:
        version, dtype = LLMC_MAGIC[int(head[0])]
        if head[1] != version:
            die(f"shard '{path}': llm.c shard with unsupported version {head[1]}")
        tb, n, off = np.dtype(dtype).itemsize, int(head[2]), 1024
    else:
        die(f"shard '{path}': wrong magic 0x{int(head[0]):08X} (expected 0x{SHARD_MAGIC:08X})")
    if size - off != n * tb:
        die(f"shard '{path}': header says {n} tokens, the file holds {(size - off) / tb:g}")
    if n == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=off, shape=(n,))


def write_shard(path, tokens, vocab):
    """Write tokens (numpy ints < vocab) as an anvil shard, via PATH.tmp + fsync + rename."""
    tb = 2 if vocab <= 65536 else 4
    n = int(tokens.size)
    header = np.zeros(16, dtype="<u4")
    header[:6] = [SHARD_MAGIC, 1, tb, 0, n & 0xFFFFFFFF, n >> 32]
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        chunk = 1 << 24
        for i in range(0, n, chunk):
            f.write(tokens[i:i + chunk].astype("<u2" if tb == 2 else "<u4").tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def synthetic_tokens(n, vocab, seed, dist):
    """n token ids in [0, vocab): Zipf(1.1) ranks through a fixed permutation of the ids
    (frequent tokens spread over the table, as in real text), or uniform."""
    rng = np.random.default_rng(seed)
    if dist == "uniform":
        return rng.integers(0, vocab, size=n, dtype=np.int64)
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    cdf = np.cumsum(ranks ** -1.1)
    cdf /= cdf[-1]
    ids = rng.permutation(vocab)
    out = np.empty(n, dtype=np.int64)
    chunk = 1 << 22
    for i in range(0, n, chunk):
        u = rng.random(min(chunk, n - i))
        out[i:i + len(u)] = ids[np.minimum(np.searchsorted(cdf, u, side="right"), vocab - 1)]
    return out


# The sample stream of data/loader.c. splitmix64 arithmetic is mod 2^64: numpy uint64
# wraps, Python ints are masked.
M64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15
LOADER_SALT = 0x616E76696C646174   # "anvildat"


def _mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _mix64_np(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def loader_permutation(S, seed, epoch):
    """perm_e of docs/formats.md ("The shuffle, exactly") as an int64 array (S)."""
    state = _mix64((seed & M64) ^ _mix64((epoch ^ LOADER_SALT) & M64))
    perm = list(range(S))
    if S < 2:
        return np.array(perm, dtype=np.int64)
    # Draw k (1-based) is mix64(state + k*gamma) and bounds i+1 for i = S-k. A draw is
    # rejected only if below (2^64 - b) mod b < b < 2^32, probability < 2^-32 each:
    # compute all draws at once and redo the rare rejecting tail exactly.
    k = np.arange(1, S, dtype=np.uint64)
    with np.errstate(over="ignore"):
        r = _mix64_np(np.uint64(state) + k * np.uint64(GOLDEN_GAMMA))
    bounds = np.arange(S, 1, -1, dtype=np.uint64)           # i + 1 for i = S-1 .. 1
    with np.errstate(over="ignore"):
        thresholds = (np.uint64(0) - bounds) % bounds       # (2^64 - b) mod b
    bad = np.nonzero(r < thresholds)[0]
    js = (r % bounds).tolist()
    if bad.size:   # exact sequential path from the first rejection on
        first = int(bad[0])
        st = (state + first * GOLDEN_GAMMA) & M64   # the state before draw first+1
        for idx in range(first, S - 1):
            b = S - idx
            t = ((1 << 64) - b) % b
            while True:
                st = (st + GOLDEN_GAMMA) & M64
                v = _mix64(st)
                if v >= t:
                    break
            js[idx] = v % b
    for idx, j in enumerate(js):
        i = S - 1 - idx
        perm[i], perm[j] = perm[j], perm[i]
    return np.array(perm, dtype=np.int64)


class SampleStream:
    """Windows of T+1 tokens at stream positions, as anvil's loader gives them."""

    def __init__(self, patterns, T, random, seed, vocab):
        paths = set()
        for entry in (e.strip() for e in patterns.split(",")):
            if not entry:
                continue
            if any(c in entry for c in "*?["):
                hits = glob.glob(entry)
                if not hits:
                    die(f"data.train: pattern '{entry}' matches no file (make a synthetic "
                        "shard with --make-shard PATH --tokens N --vocab V)")
                paths.update(hits)
            elif os.path.exists(entry):
                paths.add(entry)
            else:
                die(f"data.train: '{entry}': No such file or directory")
        self.paths = sorted(paths, key=os.fsencode)   # byte order, as strcmp
        self.shards = [read_shard(p) for p in self.paths]
        self.T, self.random, self.seed, self.vocab = T, random, seed, vocab
        windows = [max(0, (len(s) - 1) // T) for s in self.shards]
        self.first = np.concatenate([[0], np.cumsum(windows)]).astype(np.int64)
        self.S = int(self.first[-1])
        if self.S == 0:
            die(f"data.train: no shard holds a full window of {T + 1} tokens")
        self.perm, self.perm_epoch = None, -1

    def fill(self, pos, n):
        """Windows at stream positions [pos, pos + n) as int64 (n, T+1)."""
        T = self.T
        out = np.empty((n, T + 1), dtype=np.int64)
        for b in range(n):
            p = pos + b
            epoch, g = divmod(p, self.S)
            if self.random:
                if self.perm_epoch != epoch:
                    self.perm = loader_permutation(self.S, self.seed, epoch)
                    self.perm_epoch = epoch
                g = int(self.perm[g])
            s = int(np.searchsorted(self.first, g, side="right")) - 1
            start = (g - int(self.first[s])) * T
            out[b] = self.shards[s][start:start + T + 1]
        if out.size and int(out.max()) >= self.vocab:
            die(f"data.train: token {int(out.max())} is outside the vocabulary "
                f"(must be < {self.vocab})")
        return out


# ----------------------------------------------------------------------------
# the model (trainer/model.c's definition)

def rope_tables(maxT, HS, m):
    """cos, sin (maxT, HS/2) as kernels/rope_tables.c: float64, rounded once."""
    i = np.arange(HS // 2, dtype=np.float64)
    inv_freq = float(m["rope_theta"]) ** (-2.0 * i / HS)
    if m["rope_scaling"] == "llama3":
        factor, lo, hi = m["rope_factor"], m["rope_low_freq_factor"], m["rope_high_freq_factor"]
        old = float(m["rope_original_max_pos"])
        wavelen = 2.0 * math.pi / inv_freq
        smooth = (old / wavelen - lo) / (hi - lo)
        mid = (1.0 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = np.where(wavelen > old / lo, inv_freq / factor,
                            np.where(wavelen < old / hi, inv_freq, mid))
    ang = np.outer(np.arange(maxT, dtype=np.float64), inv_freq)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


class Norm(_Module):
    """LayerNorm with bias (gpt2) or RMSNorm (llama), over the last dimension in fp32."""

    def __init__(self, C, eps, layernorm):
        super().__init__()
        self.eps, self.layernorm = eps, layernorm
        self.weight = nn.Parameter(torch.ones(C))
        self.bias = nn.Parameter(torch.zeros(C)) if layernorm else None

    def forward(self, x):
        if self.layernorm:
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        xf = x.float()
        return xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def apply_rope(x, cos, sin):
    """x (B, T, H, HS) rotated in rotate_half pairs (i, i + HS/2); cos, sin (T, HS/2)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).to(x.dtype)


class Block(_Module):
    def __init__(self, m, attn_impl):
        super().__init__()
        C, NH, KVH = m["d_model"], m["n_head"], m["n_kv_head"]
        HS, F_ = C // NH, m["ffn_dim"]
        self.gpt2 = m["family"] == "gpt2"
        self.NH, self.KVH, self.HS, self.attn_impl = NH, KVH, HS, attn_impl
        self.norm_1 = Norm(C, m["norm_eps"], self.gpt2)
        self.qkv = nn.Linear(C, (NH + 2 * KVH) * HS, bias=m["qkv_bias"])   # wq | wk | wv
        self.wo = nn.Linear(NH * HS, C, bias=self.gpt2)
        self.norm_2 = Norm(C, m["norm_eps"], self.gpt2)
        if self.gpt2:
            self.fc = nn.Linear(C, F_)
            self.proj = nn.Linear(F_, C)
        else:
            self.gate = nn.Linear(C, F_, bias=False)
            self.up = nn.Linear(C, F_, bias=False)
            self.down = nn.Linear(F_, C, bias=False)

    def attention(self, x, cos, sin):
        B, T, _ = x.shape
        NH, KVH, HS = self.NH, self.KVH, self.HS
        q, k, v = self.qkv(x).split([NH * HS, KVH * HS, KVH * HS], dim=-1)
        q, k, v = q.view(B, T, NH, HS), k.view(B, T, KVH, HS), v.view(B, T, KVH, HS)
        if cos is not None:
            q, k = apply_rope(q, cos[:T], sin[:T]), apply_rope(k, cos[:T], sin[:T])
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)   # (B, H, T, HS)
        gqa_native = self.attn_impl == "sdpa-gqa" and KVH != NH
        if KVH != NH and not gqa_native:   # query head h reads kv head h // (NH/KVH)
            k = k.repeat_interleave(NH // KVH, dim=1)
            v = v.repeat_interleave(NH // KVH, dim=1)
        if self.attn_impl == "manual":
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(HS))          # (B,NH,T,T)
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            att = att.float().masked_fill(~mask, float("-inf")).softmax(-1).to(v.dtype)
            y = att @ v
        elif gqa_native:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(B, T, NH * HS))

    def mlp(self, x):
        if self.gpt2:
            return self.proj(F.gelu(self.fc(x), approximate="tanh"))
        return self.down(F.silu(self.gate(x)) * self.up(x))

    def forward(self, x, cos, sin):
        x = x + self.attention(self.norm_1(x), cos, sin)
        return x + self.mlp(self.norm_2(x))


class Transformer(_Module):
    def __init__(self, m, attn_impl):
        super().__init__()
        C, V = m["d_model"], m["vocab_size"]
        self.m, self.gpt2, self.tied = m, m["family"] == "gpt2", m["tie_embeddings"]
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(m["max_seq_len"], C) if self.gpt2 else None
        self.layers = nn.ModuleList(Block(m, attn_impl) for _ in range(m["n_layer"]))
        self.norm_f = Norm(C, m["norm_eps"], self.gpt2)
        self.lm_head = None if self.tied else nn.Linear(C, V, bias=False)
        if not self.gpt2:
            cos, sin = rope_tables(m["max_seq_len"], C // m["n_head"], m)
            self.register_buffer("rope_cos", torch.from_numpy(cos), persistent=False)
            self.register_buffer("rope_sin", torch.from_numpy(sin), persistent=False)
        self.init_weights()

    def init_weights(self):
        std = self.m["init_std"]
        std_res = std / math.sqrt(2.0 * self.m["n_layer"])
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            elif p.dim() == 1:
                nn.init.ones_(p)
            else:
                res = name.endswith(("wo.weight", "proj.weight", "down.weight"))
                nn.init.normal_(p, 0.0, std_res if res else std)

    def forward(self, idx, targets):
        """idx, targets (B, T) int64 -> mean cross-entropy over the B*T tokens."""
        T = idx.shape[1]
        x = self.wte(idx)                                              # (B, T, C)
        cos = sin = None
        if self.gpt2:
            x = x + self.wpe.weight[:T]
        else:
            cos, sin = self.rope_cos, self.rope_sin
        for layer in self.layers:
            x = layer(x, cos, sin)
        x = self.norm_f(x)
        head = self.wte.weight if self.tied else self.lm_head.weight
        logits = F.linear(x, head)                                     # (B, T, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                               targets.reshape(-1))

    def load_anvil(self, tensors):
        """Copy weights from anvil's named-tensor file (run.final_weights)."""
        def put(p, *names):
            a = np.concatenate([tensors[n] for n in names], axis=0)
            if tuple(a.shape) != tuple(p.shape):
                die(f"--init-from: {names[0]} has shape {a.shape}, expected {tuple(p.shape)}")
            with torch.no_grad():
                p.copy_(torch.from_numpy(a.astype(np.float32)))
        put(self.wte.weight, "wte")
        if self.gpt2:
            put(self.wpe.weight, "wpe")
        for l, blk in enumerate(self.layers):
            pre = f"layers.{l}."
            for norm, nm in ((blk.norm_1, "norm_1"), (blk.norm_2, "norm_2")):
                put(norm.weight, pre + nm + ".weight")
                if norm.bias is not None:
                    put(norm.bias, pre + nm + ".bias")
            put(blk.qkv.weight, *(pre + f"attn.{w}.weight" for w in ("wq", "wk", "wv")))
            if blk.qkv.bias is not None:
                put(blk.qkv.bias, *(pre + f"attn.{w}.bias" for w in ("wq", "wk", "wv")))
            put(blk.wo.weight, pre + "attn.wo.weight")
            mods = (("fc", "proj") if self.gpt2 else ("gate", "up", "down"))
            for nm in mods:
                put(getattr(blk, nm).weight, pre + f"mlp.{nm}.weight")
                if self.gpt2:
                    put(getattr(blk, nm).bias, pre + f"mlp.{nm}.bias")
            if self.gpt2:
                put(blk.wo.bias, pre + "attn.wo.bias")
        put(self.norm_f.weight, "norm_f.weight")
        if self.gpt2:
            put(self.norm_f.bias, "norm_f.bias")
        if not self.tied:
            put(self.lm_head.weight, "lm_head.weight")


def flops_per_token(model, T):
    """trainer/model.c model_flops_per_token: 6 x (parameters outside the embeddings +
    the head's V*C, tied or not) + 6 L NH HS T."""
    m = model.m
    emb = {"wte.weight", "wpe.weight", "lm_head.weight"}
    n = sum(p.numel() for name, p in model.named_parameters() if name not in emb)
    n += m["vocab_size"] * m["d_model"]
    HS = m["d_model"] // m["n_head"]
    return 6.0 * n + 6.0 * m["n_layer"] * m["n_head"] * HS * T


# ----------------------------------------------------------------------------
# training

def make_optimizer(model, cfg, device):
    """AdamW with anvil's groups: decay on linear matrices, embeddings only on request.
    Returns (optimizer, 'fused' | 'foreach' | 'plain')."""
    emb = {"wte.weight", "wpe.weight", "lm_head.weight"}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_emb = name in emb
        if p.dim() == 2 and (cfg["optim.decay_embeddings"] or not is_emb):
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": cfg["optim.weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    kw = dict(lr=cfg["train.lr"], betas=(cfg["optim.beta1"], cfg["optim.beta2"]),
              eps=cfg["optim.eps"])
    if device.type == "cuda":
        try:
            return torch.optim.AdamW(groups, fused=True, **kw), "fused"
        except (TypeError, RuntimeError):
            pass
    try:
        return torch.optim.AdamW(groups, foreach=True, **kw), "foreach"
    except TypeError:
        return torch.optim.AdamW(groups, **kw), "plain"


def train(cfg, args):
    m = cfg["model"]
    dev_name = args.device or cfg["device"]
    if dev_name == "auto":
        dev_name = "cuda" if torch.cuda.is_available() else "cpu"
    if dev_name == "cuda" and not torch.cuda.is_available():
        die("device cuda: torch sees no usable GPU")
    device = torch.device(dev_name)
    cuda = device.type == "cuda"
    dtype = args.dtype or ("bf16" if cuda else "fp32")
    do_compile = args.compile if args.compile is not None else cuda
    if do_compile and not hasattr(torch, "compile"):
        die(f"torch.compile needs PyTorch >= 2.0 (this is {torch.__version__}); "
            "use --no-compile")
    has_sdpa = hasattr(F, "scaled_dot_product_attention")
    attn_impl = args.attention or ("sdpa" if has_sdpa else "manual")
    if attn_impl.startswith("sdpa") and not has_sdpa:
        die(f"scaled_dot_product_attention needs PyTorch >= 2.0 (this is {torch.__version__})")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    B, T = cfg["train.micro_batch"], cfg["train.seq_len"]
    gb = cfg["train.global_batch_tokens"] or B * T
    if gb % (B * T):
        die(f"train.global_batch_tokens ({gb}) is not a multiple of train.micro_batch x "
            f"train.seq_len ({B} x {T})")
    if T > m["max_seq_len"]:
        die(f"train.seq_len ({T}) exceeds model.max_seq_len ({m['max_seq_len']})")
    G, accum, steps = gb // T, gb // (B * T), cfg["train.steps"]
    warmup = min(args.warmup, steps - 1)

    torch.manual_seed(cfg["train.seed"])
    # build on the GPU directly where torch can (2.0+): initialising 1B parameters on
    # the CPU takes a while
    with device if cuda and hasattr(device, "__enter__") else contextlib.nullcontext():
        model = Transformer(m, attn_impl)
    model = model.to(device)
    if args.init_from:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from tensorfile import read_tensorfile
        model.load_anvil(read_tensorfile(args.init_from))
    n_params = sum(p.numel() for p in model.parameters())
    fpt = flops_per_token(model, T)
    opt, adamw_kind = make_optimizer(model, cfg, device)
    step_model = torch.compile(model, mode=args.compile_mode) if do_compile else model
    stream = SampleStream(cfg["data.train"], T, cfg["data.order"] == "random",
                          cfg["train.seed"], m["vocab_size"])
    params = list(model.parameters())
    clip = cfg["optim.grad_clip"]
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                         enabled=dtype == "bf16")
    peak = (args.peak_tflops * 1e12 if args.peak_tflops else cfg["train.peak_flops"] or
            (H100_PEAK_TFLOPS * 1e12 if cuda else 0.0))
    log(f"{m['family']} model: {m['n_layer']} layers, d_model {m['d_model']}, "
        f"{m['n_head']} heads ({m['n_kv_head']} kv), ffn {m['ffn_dim']}, vocab "
        f"{m['vocab_size']} | {n_params / 1e6:.2f}M parameters | {device} {dtype}, "
        f"compile {do_compile}, attention {attn_impl}, AdamW {adamw_kind} | batch {G} x {T} "
        f"in {accum} micro-batches of {B} | data: {stream.S} windows in "
        f"{len(stream.paths)} shard(s)")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    per_step = []
    for step in range(steps):
        t0 = time.perf_counter()
        win = torch.from_numpy(stream.fill(step * G, G))                 # (G, T+1)
        if cuda:
            win = win.pin_memory().to(device, non_blocking=True)
        lr = lr_at(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        for i in range(accum):
            rows = win[i * B:(i + 1) * B]
            x, y = rows[:, :T].contiguous(), rows[:, 1:].contiguous()   # (B, T)
            with amp:
                loss = step_model(x, y)
            (loss / accum).backward()
            loss_sum += loss.detach()
        if clip > 0:
            gnorm = torch.nn.utils.clip_grad_norm_(params, clip)
        else:
            gnorm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_val = (loss_sum / accum).item()   # waits for the step, as anvil's does
        if cuda:
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        per_step.append({"step": step + 1, "loss": loss_val, "lr": lr,
                         "grad_norm": float(gnorm), "ms": 1e3 * dt})
        if (step + 1) % args.log_every == 0 or step == 0 or step + 1 == steps:
            log(f"step {step + 1}/{steps} | loss {loss_val:.4f} | lr {lr:.2e} | norm "
                f"{float(gnorm):.3f} | {gb / dt:.0f} tok/s | {1e3 * dt:.0f} ms")

    timed = per_step[warmup:]
    t_sum = sum(r["ms"] for r in timed) / 1e3
    tps = gb * len(timed) / t_sum
    res = {
        "impl": "pytorch", "family": m["family"], "preset": cfg["model.preset"],
        "n_params": n_params, "micro_batch": B, "seq_len": T, "global_batch_tokens": gb,
        "accum": accum, "steps": steps, "warmup_steps": warmup, "timed_steps": len(timed),
        "tokens_per_s": tps, "ms_per_step": 1e3 * t_sum / len(timed),
        "ms_per_step_median": statistics.median(r["ms"] for r in timed),
        "flops_per_token": fpt, "peak_tflops": peak / 1e12 if peak else None,
        "mfu": fpt * tps / peak if peak else None,
        "peak_mem_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
        "peak_mem_reserved_bytes": torch.cuda.max_memory_reserved(device) if cuda else None,
        "warmup_s": sum(r["ms"] for r in per_step[:warmup]) / 1e3, "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__, "dtype": dtype, "compile": bool(do_compile),
        "compile_mode": args.compile_mode if do_compile else None,
        "attention": attn_impl, "adamw": adamw_kind, "tf32": cuda,
        "data": stream.paths, "loss_first": per_step[0]["loss"],
        "loss_last": per_step[-1]["loss"], "per_step": per_step,
    }
    return res


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(
        description="PyTorch baseline trainer for anvil's GPU benchmark (see the top of "
                    "this file).",
        usage="%(prog)s [CONFIG] [section.key=value ...] [options]\n"
              "       %(prog)s --make-shard PATH --tokens N --vocab V [--dist zipf|uniform]")
    ap.add_argument("args", nargs="*", help="an anvil YAML config (optional), then overrides")
    ap.add_argument("--device", choices=["cpu", "cuda"], help="default: the config's device "
                    "key (auto: cuda if available)")
    ap.add_argument("--dtype", choices=["bf16", "fp32"],
                    help="autocast bf16 (default on cuda) or plain fp32 (default on cpu)")
    ap.add_argument("--compile", dest="compile", action="store_true", default=None,
                    help="torch.compile the model (default on cuda)")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--compile-mode", default="default",
                    help="torch.compile mode (default, max-autotune, ...)")
    ap.add_argument("--attention", choices=["sdpa", "sdpa-gqa", "manual"],
                    help="sdpa (default; kv heads repeated for GQA, as HF's repeat_kv), "
                         "sdpa-gqa (enable_gqa=True, PyTorch >= 2.5), manual (matmuls)")
    ap.add_argument("--warmup", type=int, default=10,
                    help="steps excluded from the figures (compile, warm-up); default 10")
    ap.add_argument("--peak-tflops", type=float,
                    help=f"peak for MFU in TFLOP/s (default: train.peak_flops, else "
                         f"{H100_PEAK_TFLOPS:g} on cuda)")
    ap.add_argument("--json", metavar="FILE", help="also write the result line here")
    ap.add_argument("--log-every", type=int, default=1)
    ap.add_argument("--init-from", metavar="FILE",
                    help="start from anvil's weights (a run.final_weights tensorfile)")
    ap.add_argument("--make-shard", metavar="PATH", help="write a synthetic anvil shard")
    ap.add_argument("--tokens", type=int, help="--make-shard: tokens in the shard")
    ap.add_argument("--vocab", type=int, help="--make-shard: ids are < this")
    ap.add_argument("--dist", choices=["zipf", "uniform"], default="zipf")
    ap.add_argument("--seed", type=int, default=1337, help="--make-shard: RNG seed")
    args = ap.parse_args()

    if args.make_shard:
        if not args.tokens or not args.vocab or args.tokens < 2 or args.vocab < 1:
            die("--make-shard needs --tokens N (>= 2) and --vocab V (>= 1)")
        t0 = time.perf_counter()
        write_shard(args.make_shard, synthetic_tokens(args.tokens, args.vocab, args.seed,
                                                      args.dist), args.vocab)
        log(f"wrote {args.make_shard}: {args.tokens} {args.dist} tokens < {args.vocab} "
            f"({'uint16' if args.vocab <= 65536 else 'uint32'}) in "
            f"{time.perf_counter() - t0:.1f} s")
        return 0
    if torch is None:
        die("PyTorch is not installed")
    config = None
    overrides = list(args.args)
    if overrides and "=" not in overrides[0]:
        config = overrides.pop(0)
    cfg = load_config(config, overrides)
    res = train(cfg, args)
    line = json.dumps(res)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
