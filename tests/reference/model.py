"""tests/reference/model.py: an independent PyTorch (float64) reference of anvil's two
model families, its AdamW set-up and its learning-rate schedule.

Written from the published definitions (GPT-2; Llama 2/3 as in Hugging Face
transformers, with Qwen2's optional q/k/v bias), not from anvil's C code, so that
test_parity.py can hold the C model against something that shares none of its bugs.
Everything runs in float64, so the difference to anvil's fp32 CPU model is anvil's own
rounding error.

Only the tensor *names* and *shapes* are taken from anvil (trainer/model.h), because the
weights come from anvil's dump; the file format is trainer/tensorfile.h.

Dimension legend: B batch, T time, C channels, NH query heads, KVH key/value heads,
HS head size, F MLP hidden channels, V vocabulary, Vp padded vocabulary (rows of wte).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

# the named-tensor exchange file (trainer/tensorfile.h)
from tensorfile import read_tensorfile, write_tensorfile  # noqa: E402,F401


# ----------------------------------------------------------------------------
# the shape of a model

class Shape:
    """Model shape and hyper-parameters; fields as in anvil's dump 'meta'."""

    META = ("L", "C", "NH", "KVH", "HS", "F", "V", "Vp", "maxT", "family", "tied",
            "qkv_bias", "B", "T")

    def __init__(self, **kw):
        self.L = self.C = self.NH = self.KVH = self.HS = self.F = 0
        self.V = self.Vp = self.maxT = self.B = self.T = 0
        self.family = "gpt2"
        self.tied = True
        self.qkv_bias = False
        self.norm_eps = 1e-5
        self.rope_theta = 10000.0
        self.rope_scaling = None       # None or dict(factor, low_freq_factor,
        #                                high_freq_factor, original_max_position_embeddings)
        for k, v in kw.items():
            if not hasattr(self, k):
                raise KeyError(k)
            setattr(self, k, v)

    @classmethod
    def from_meta(cls, meta, **kw):
        d = dict(zip(cls.META, [int(x) for x in meta]))
        d["family"] = {0: "gpt2", 1: "llama"}[d["family"]]
        d["tied"] = bool(d["tied"])
        d["qkv_bias"] = bool(d["qkv_bias"])
        d.update(kw)
        return cls(**d)

    def param_shapes(self):
        """[(name, shape)] of every parameter, with anvil's global names."""
        C, HS, F_, L = self.C, self.HS, self.F, self.L
        gpt2 = self.family == "gpt2"
        out = [("wte", (self.Vp, C))]
        if gpt2:
            out.append(("wpe", (self.maxT, C)))
        for layer in range(L):
            p = f"layers.{layer}."
            out.append((p + "norm_1.weight", (C,)))
            if gpt2:
                out.append((p + "norm_1.bias", (C,)))
            for w, rows in (("wq", self.NH * HS), ("wk", self.KVH * HS), ("wv", self.KVH * HS)):
                out.append((p + f"attn.{w}.weight", (rows, C)))
                if gpt2 or self.qkv_bias:
                    out.append((p + f"attn.{w}.bias", (rows,)))
            out.append((p + "attn.wo.weight", (C, self.NH * HS)))
            if gpt2:
                out.append((p + "attn.wo.bias", (C,)))
            out.append((p + "norm_2.weight", (C,)))
            if gpt2:
                out.append((p + "norm_2.bias", (C,)))
                out += [(p + "mlp.fc.weight", (F_, C)), (p + "mlp.fc.bias", (F_,)),
                        (p + "mlp.proj.weight", (C, F_)), (p + "mlp.proj.bias", (C,))]
            else:
                out += [(p + "mlp.gate.weight", (F_, C)), (p + "mlp.up.weight", (F_, C)),
                        (p + "mlp.down.weight", (C, F_))]
        out.append(("norm_f.weight", (C,)))
        if gpt2:
            out.append(("norm_f.bias", (C,)))
        if not self.tied:
            out.append(("lm_head.weight", (self.Vp, C)))
        return out


# ----------------------------------------------------------------------------
# RoPE (Hugging Face "rotate_half" layout, Llama-3 frequency scaling as in
# transformers' _compute_llama3_parameters)

def rope_inv_freq(HS, theta, scaling=None):
    """inv_freq (HS/2) in float64."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, HS, 2, dtype=torch.float64) / HS))
    if scaling is None:
        return inv_freq
    factor = scaling["factor"]
    low_ff = scaling["low_freq_factor"]
    high_ff = scaling["high_freq_factor"]
    old_ctx = scaling["original_max_position_embeddings"]
    low_freq_wavelen = old_ctx / low_ff
    high_freq_wavelen = old_ctx / high_ff
    wavelen = 2 * math.pi / inv_freq
    # long wavelengths (low frequencies) are slowed down by `factor`
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    # the band in between is interpolated smoothly
    smooth = (old_ctx / wavelen - low_ff) / (high_ff - low_ff)
    smoothed = (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, inv_freq_llama)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, cos, sin):
    """x (B, H, T, HS); cos, sin (T, HS)."""
    return x * cos + rotate_half(x) * sin


# ----------------------------------------------------------------------------
# the model

class Reference:
    """The transformer as plain functions over a dict of float64 leaf tensors."""

    def __init__(self, shape, weights):
        """weights: {name: array} holding at least every parameter of `shape`."""
        self.s = shape
        self.params = {}
        for name, shp in shape.param_shapes():
            a = np.asarray(weights[name], dtype=np.float64)
            if tuple(a.shape) != tuple(shp):
                raise ValueError(f"{name}: shape {a.shape}, expected {shp}")
            self.params[name] = torch.tensor(a, dtype=torch.float64, requires_grad=True)
        if shape.family == "llama":
            inv_freq = rope_inv_freq(shape.HS, shape.rope_theta, shape.rope_scaling)
            t = torch.arange(shape.maxT, dtype=torch.float64)
            freqs = torch.outer(t, inv_freq)                  # (maxT, HS/2)
            emb = torch.cat((freqs, freqs), dim=-1)           # (maxT, HS)
            self.cos, self.sin = emb.cos(), emb.sin()

    def _norm(self, x, name):
        s, p = self.s, self.params
        if s.family == "gpt2":
            return F.layer_norm(x, (s.C,), p[name + ".weight"], p[name + ".bias"], s.norm_eps)
        rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + s.norm_eps)
        return x * rstd * p[name + ".weight"]

    def _linear(self, x, name):
        return F.linear(x, self.params[name + ".weight"], self.params.get(name + ".bias"))

    def _attention(self, x, pre):
        s = self.s
        B, T, _ = x.shape
        q = self._linear(x, pre + "wq").view(B, T, s.NH, s.HS).transpose(1, 2)   # (B,NH,T,HS)
        k = self._linear(x, pre + "wk").view(B, T, s.KVH, s.HS).transpose(1, 2)  # (B,KVH,T,HS)
        v = self._linear(x, pre + "wv").view(B, T, s.KVH, s.HS).transpose(1, 2)
        if s.family == "llama":
            q = apply_rope(q, self.cos[:T], self.sin[:T])
            k = apply_rope(k, self.cos[:T], self.sin[:T])
        if s.KVH != s.NH:   # query head h reads kv head h // (NH/KVH)
            k = k.repeat_interleave(s.NH // s.KVH, dim=1)
            v = v.repeat_interleave(s.NH // s.KVH, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(s.HS)                          # (B,NH,T,T)
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, s.NH * s.HS)                  # (B,T,NH*HS)
        return self._linear(y, pre + "wo")

    def _mlp(self, x, pre):
        if self.s.family == "gpt2":
            h = F.gelu(self._linear(x, pre + "fc"), approximate="tanh")
            return self._linear(h, pre + "proj")
        h = F.silu(self._linear(x, pre + "gate")) * self._linear(x, pre + "up")
        return self._linear(h, pre + "down")

    def forward(self, idx):
        """idx (B, T) int64 -> logits (B, T, Vp)."""
        s, p = self.s, self.params
        T = idx.shape[1]
        x = F.embedding(idx, p["wte"])                         # (B,T,C)
        if s.family == "gpt2":
            x = x + p["wpe"][:T]
        for layer in range(s.L):
            pre = f"layers.{layer}."
            x = x + self._attention(self._norm(x, pre + "norm_1"), pre + "attn.")
            x = x + self._mlp(self._norm(x, pre + "norm_2"), pre + "mlp.")
        x = self._norm(x, "norm_f")
        head = p["wte"] if s.tied else p["lm_head.weight"]
        return x @ head.t()                                    # (B,T,Vp)

    def loss(self, logits, targets):
        """Mean cross-entropy over the real vocabulary (padded columns take no part)."""
        V = self.s.V
        return F.cross_entropy(logits[..., :V].reshape(-1, V), targets.reshape(-1))

    def zero_grad(self):
        for t in self.params.values():
            t.grad = None

    # ---- optimizer -----------------------------------------------------------

    def adamw(self, lr, betas, eps, weight_decay, decay_embeddings=False):
        """torch.optim.AdamW with weight decay on 2-D matrices only; embeddings (wte,
        wpe, an untied lm_head) are decayed only with decay_embeddings."""
        embeddings = {"wte", "wpe", "lm_head.weight"}
        decay, no_decay = [], []
        for name, t in self.params.items():
            is_emb = name in embeddings
            (decay if t.dim() == 2 and (decay_embeddings or not is_emb) else no_decay).append(t)
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def lr_cosine(s, lr, min_lr, warmup, steps):
    """Linear warmup to lr over `warmup` steps, then cosine from lr to min_lr over the
    remaining steps (s is 0-based)."""
    if s < warmup:
        return lr * (s + 1) / warmup
    p = (s - warmup) / max(1, steps - warmup)
    p = min(1.0, p)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * p))
