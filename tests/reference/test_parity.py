"""tests/reference/test_parity.py: anvil's CPU model and optimizer against the
independent PyTorch float64 reference in model.py.

Usage: python3 test_parity.py PATH/TO/test_model_dump
(meson runs it with /usr/bin/python3, where Debian's python3-torch lives.)

For each case, test_model_dump builds a model from config overrides, dumps its initial
weights, one batch with its logits, loss and every gradient, then 10 AdamW steps (their
batches, losses, gradient norms, learning rates) and the final weights. The reference
loads the same weights and batches and recomputes everything in float64.

Every tensor comparison uses the relative error ||anvil - ref||_2 / ||ref||_2 with the
Frobenius norm over the whole tensor, and must be below TOL. Exit 0 when all checks
pass, 1 when any fails or torch is missing (launch/test.sh installs it: a parity
test that skips itself would hide a broken set-up).
"""
import math
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"FAIL: {e} (install python3-torch for /usr/bin/python3: launch/test.sh does)")
    sys.exit(1)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Reference, Shape, lr_cosine, read_tensorfile  # noqa: E402

TOL = 1e-4          # relative Frobenius error, fp32 model against a float64 reference
LR_TOL = 1e-5       # learning rates are computed in fp32 by anvil
KEY_BIAS_FINAL_TOL = 1e-3   # llama's key bias after the 10 steps (near_zero_gradient)
STEPS = 10          # AdamW steps that test_model_dump runs

# Shape keys common to every case: 2 layers, C=64, 4 query heads, T=16.
COMMON = ["model.n_layer=2", "model.d_model=64", "model.n_head=4", "model.vocab_size=101",
          "model.max_seq_len=32", "train.seq_len=16"]
# The 10-step run: warmup then cosine. optim.grad_clip is set per case (below) so that
# the clip bites on every step in some cases and on only some steps in another (the
# output lists the gradient norms and how many steps were clipped).
TRAIN = dict(lr=1e-3, min_lr=1e-4, warmup=3, steps=STEPS, weight_decay=0.1)
TRAIN_OVERRIDES = [f"train.lr={TRAIN['lr']}", f"train.min_lr={TRAIN['min_lr']}",
                   f"train.warmup_steps={TRAIN['warmup']}", f"train.steps={TRAIN['steps']}",
                   "train.schedule=cosine", f"optim.weight_decay={TRAIN['weight_decay']}"]
# AdamW's remaining settings are the config defaults (optim.beta1/beta2/eps);
# meta_f confirms anvil used these.
BETAS, ADAM_EPS = (0.9, 0.95), 1e-8

LLAMA3_SCALING = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                      original_max_position_embeddings=16)

# name, overrides, what the overrides mean for the reference model, grad_clip
CASES = [
    ("gpt2_tied",
     ["model.family=gpt2", "model.tie_embeddings=true", "train.micro_batch=2", "train.seed=11"],
     dict(norm_eps=1e-5), 3.0),
    ("llama_gqa_untied",
     ["model.family=llama", "model.n_kv_head=2", "model.ffn_dim=160",
      "model.tie_embeddings=false", "model.norm_eps=1e-6", "train.micro_batch=3",
      "train.seed=22"],
     dict(norm_eps=1e-6, rope_theta=10000.0), 0.5),
    ("llama_gqa_tied_qkv_bias",
     ["model.family=llama", "model.n_kv_head=2", "model.ffn_dim=160",
      "model.tie_embeddings=true", "model.qkv_bias=true", "model.rope_theta=10000",
      "model.norm_eps=1e-5", "train.micro_batch=2", "train.seed=33"],
     dict(norm_eps=1e-5, rope_theta=10000.0), 0.5),
    ("llama_mqa_untied_rope_llama3",
     ["model.family=llama", "model.n_kv_head=1", "model.tie_embeddings=false",
      "model.rope_theta=500000", "model.rope_scaling=llama3", "model.rope_factor=8",
      "model.rope_low_freq_factor=1", "model.rope_high_freq_factor=4",
      "model.rope_original_max_pos=16", "model.norm_eps=1e-5", "train.micro_batch=2",
      "train.seed=44"],
     dict(norm_eps=1e-5, rope_theta=500000.0, rope_scaling=LLAMA3_SCALING), 0.5),
    # the cuda backend pads the vocabulary to a multiple of 64 (V 101 -> Vp 128): the
    # padding rows must change nothing, here checked on the cpu backend
    ("llama_untied_vocab_padded_64",
     ["--vocab-multiple=64", "model.family=llama", "model.n_kv_head=2",
      "model.ffn_dim=160", "model.tie_embeddings=false", "model.norm_eps=1e-5",
      "train.micro_batch=2", "train.seed=55"],
     dict(norm_eps=1e-5, rope_theta=10000.0), 0.5),
    ("gpt2_tied_vocab_padded_64",
     ["--vocab-multiple=64", "model.family=gpt2", "model.tie_embeddings=true",
      "train.micro_batch=2", "train.seed=66"],
     dict(norm_eps=1e-5), 3.0),
]


def zero_in_exact_arithmetic(shape, name):
    """GPT-2's key bias adds q . b_k to every score of a query's row, which softmax
    removes: its gradient is exactly zero, and whatever a float computation returns is
    rounding noise (which AdamW then normalises into small random updates). Llama's key
    bias is rotated by RoPE differently at each position, so it does get a gradient."""
    return shape.family == "gpt2" and name.endswith(".attn.wk.bias")


def near_zero_gradient(shape, name):
    """Llama's key bias does get a gradient, but only through RoPE: its pairs of low
    frequency barely rotate over the test's T positions (angle t * theta^(-2i/HS)), so
    their gradient is nearly GPT-2's exact zero and of the size of fp32 rounding, which
    AdamW's normalisation turns into updates of about lr. Its final values then depend
    on the order of fp32 sums: 5.3e-5 and 7.2e-5 with q, k and v as three matmuls,
    1.0e-4 and 7.3e-5 with the stacked projection (2026-11-30), both correct; the
    difference sits in the lowest-frequency pair (elements 7 and 15 of each 16-wide
    head), whose reference gradient is below 1e-7. The gradient itself is checked at
    TOL like every other."""
    return shape.family == "llama" and name.endswith(".attn.wk.bias")


class Checker:
    """Counts checks, prints one line each, and keeps the worst error per case."""

    def __init__(self):
        self.passed = self.failed = 0
        self.worst = {}

    def check(self, case, what, ok, detail):
        print(f"{'ok  ' if ok else 'FAIL'} {case:30s} {what:40s} {detail}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1

    def rel(self, case, kind, what, got, ref, tol=TOL):
        """Relative Frobenius error of anvil's `got` against the reference `ref`."""
        got = torch.as_tensor(np.asarray(got, dtype=np.float64))
        if isinstance(ref, torch.Tensor):
            ref = ref.detach().to(torch.float64)
        else:   # python floats: keep all 53 bits (torch.tensor would make float32)
            ref = torch.as_tensor(np.asarray(ref, dtype=np.float64))
        if got.shape != ref.shape:
            self.check(case, what, False, f"shape {tuple(got.shape)} != {tuple(ref.shape)}")
            return
        den = ref.norm().item()
        err = (got - ref).norm().item()
        rel = err / den if den > 0 else err
        if not math.isfinite(rel):
            rel = math.inf
        key = (case, kind)
        self.worst[key] = max(self.worst.get(key, 0.0), rel)
        self.check(case, what, rel < tol, f"rel_err={rel:.3e} (tol {tol:g}, |ref|={den:.4g})")


def run_dump(exe, out, overrides):
    """Run test_model_dump; return None, or why it failed."""
    cmd = [exe, out] + overrides
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{' '.join(cmd)}: {e}"
    if r.returncode != 0:
        return f"{' '.join(cmd)} exited {r.returncode}: {(r.stdout + r.stderr).strip()}"
    return None


def check_config(ck, case, shape, mf, extra, clip):
    """meta_f holds the config anvil resolved; a mismatch means an override (or a
    default) was not what the reference assumes, which would make every later
    comparison meaningless."""
    sc = extra.get("rope_scaling")
    expect = {
        "norm_eps": (mf[0], extra["norm_eps"]),
        "lr": (mf[7], TRAIN["lr"]), "min_lr": (mf[8], TRAIN["min_lr"]),
        "warmup_steps": (mf[9], TRAIN["warmup"]), "steps": (mf[10], TRAIN["steps"]),
        "optim.beta1": (mf[11], BETAS[0]), "optim.beta2": (mf[12], BETAS[1]),
        "optim.eps": (mf[13], ADAM_EPS), "optim.weight_decay": (mf[14], TRAIN["weight_decay"]),
        "optim.grad_clip": (mf[15], clip),
        "optim.decay_embeddings": (mf[16], 0.0),
    }
    if shape.family == "llama":
        expect["rope_theta"] = (mf[1], extra["rope_theta"])
        expect["rope_scaling"] = (mf[2], 1.0 if sc else 0.0)
        if sc:
            expect["rope_factor"] = (mf[3], sc["factor"])
            expect["rope_low_freq_factor"] = (mf[4], sc["low_freq_factor"])
            expect["rope_high_freq_factor"] = (mf[5], sc["high_freq_factor"])
            expect["rope_original_max_pos"] = (mf[6], sc["original_max_position_embeddings"])
    bad = [f"{k}={float(g):g} (want {w:g})" for k, (g, w) in expect.items()
           if abs(float(g) - w) > 1e-6 * max(1.0, abs(w))]
    ck.check(case, "resolved config", not bad, "; ".join(bad) if bad else "as overridden")
    return not bad


def run_case(ck, exe, tmp, case, overrides, extra, clip):
    out = os.path.join(tmp, case + ".bin")
    why = run_dump(exe, out, COMMON + TRAIN_OVERRIDES + [f"optim.grad_clip={clip}"] + overrides)
    if why:
        ck.check(case, "test_model_dump", False, why)
        return
    d = read_tensorfile(out)
    shape = Shape.from_meta(d["meta"], **extra)
    print(f"---- {case}: L={shape.L} C={shape.C} NH={shape.NH} KVH={shape.KVH} HS={shape.HS} "
          f"F={shape.F} V={shape.V} Vp={shape.Vp} maxT={shape.maxT} family={shape.family} "
          f"tied={shape.tied} qkv_bias={shape.qkv_bias} B={shape.B} T={shape.T}")
    if not check_config(ck, case, shape, d["meta_f"], extra, clip):
        return

    names = [n for n, _ in shape.param_shapes()]
    dumped = {n for n in d if n.startswith("grad.")}
    missing = [n for n in names if n not in d or "grad." + n not in d]
    extra_t = sorted(n[5:] for n in dumped if n[5:] not in set(names))
    ck.check(case, "tensor names", not missing and not extra_t,
             f"{len(names)} tensors" + (f"; missing {missing}" if missing else "")
             + (f"; unexpected {extra_t}" if extra_t else ""))
    if missing:
        return

    # ---- forward and backward at init ----------------------------------------------
    ref = Reference(shape, d)
    tok = torch.as_tensor(d["tokens"].astype(np.int64))
    inputs, targets = tok[:, :-1], tok[:, 1:]
    logits = ref.forward(inputs)
    loss = ref.loss(logits, targets)
    loss.backward()
    V = shape.V
    ck.rel(case, "logits", "logits[:, :, :V]", d["logits"][..., :V], logits[..., :V])
    if shape.Vp > V:
        pad = np.abs(d["logits"][..., V:] - logits[..., V:].detach().numpy()).max()
        print(f"info {case:30s} padded logit columns [V, Vp): max |anvil - ref| = {pad:.3e}"
              " (not part of the loss)")
    ck.rel(case, "loss", "loss", d["loss"], loss.detach().reshape(1))
    gnorm = math.sqrt(sum(float(t.grad.pow(2).sum()) for t in ref.params.values()))
    for n in names:
        if zero_in_exact_arithmetic(shape, n):
            noise = float(np.linalg.norm(d["grad." + n].astype(np.float64))) / gnorm
            ck.check(case, "grad." + n, noise < TOL,
                     f"zero in exact arithmetic: |anvil|/|all grads|={noise:.3e} (tol {TOL:g})")
            continue
        ck.rel(case, "grad", "grad." + n, d["grad." + n], ref.params[n].grad)

    # ---- 10 AdamW steps --------------------------------------------------------------
    ref = Reference(shape, d)
    opt = ref.adamw(TRAIN["lr"], BETAS, ADAM_EPS, TRAIN["weight_decay"])
    params = list(ref.params.values())
    losses, norms, lrs = [], [], []
    for s in range(STEPS):
        lr = lr_cosine(s, TRAIN["lr"], TRAIN["min_lr"], TRAIN["warmup"], TRAIN["steps"])
        for g in opt.param_groups:
            g["lr"] = lr
        tok = torch.as_tensor(d[f"tokens.{s}"].astype(np.int64))
        ref.zero_grad()
        loss = ref.loss(ref.forward(tok[:, :-1]), tok[:, 1:])
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        losses.append(loss.item())
        norms.append(gn.item())
        lrs.append(lr)
    clipped = sum(n > clip for n in norms)
    print(f"info {case:30s} grad norms (ref) {['%.4f' % n for n in norms]}: "
          f"clip {clip} bites on {clipped}/{STEPS} steps")
    print(f"info {case:30s} grad norms (anvil) {['%.4f' % n for n in d['grad_norms']]}")
    for s in range(STEPS):
        ck.rel(case, "train", f"step {s} lr", d["lrs"][s:s + 1], [lrs[s]],
               tol=LR_TOL)
        ck.rel(case, "train", f"step {s} loss", d["train_losses"][s:s + 1],
               [losses[s]])
        ck.rel(case, "train", f"step {s} grad norm", d["grad_norms"][s:s + 1],
               [norms[s]])
    for n in names:
        if zero_in_exact_arithmetic(shape, n):
            # its updates are AdamW acting on rounding noise: only check they stay
            # within what AdamW can move a weight (about lr per step)
            drift = float(np.abs(d["final." + n] - d[n]).max())
            bound = 2 * sum(lrs)
            ck.check(case, "final." + n, drift <= bound,
                     f"no gradient: max |final - init| = {drift:.3e} (bound 2*sum(lr) = "
                     f"{bound:.3e})")
            continue
        ck.rel(case, "final", "final." + n, d["final." + n], ref.params[n],
               tol=KEY_BIAS_FINAL_TOL if near_zero_gradient(shape, n) else TOL)


def main():
    if len(sys.argv) != 2:
        print("usage: test_parity.py PATH/TO/test_model_dump")
        return 2
    exe = os.path.abspath(sys.argv[1])
    ck = Checker()
    print(f"parity: anvil fp32 CPU model vs PyTorch {torch.__version__} float64 reference;"
          f" error = ||anvil - ref||_2 / ||ref||_2 (Frobenius over the whole tensor),"
          f" tolerance {TOL:g}")
    with tempfile.TemporaryDirectory(prefix="anvil-parity-") as tmp:
        for case, overrides, extra, clip in CASES:
            run_case(ck, exe, tmp, case, overrides, extra, clip)
    print("---- worst relative error per case")
    for case, _, _, _ in CASES:
        parts = [f"{kind}={ck.worst[(case, kind)]:.2e}"
                 for kind in ("logits", "loss", "grad", "train", "final")
                 if (case, kind) in ck.worst]
        print(f"{case:30s} " + (" ".join(parts) if parts else "(not compared)"))
    print(f"parity: {ck.passed} passed, {ck.failed} failed")
    return 1 if ck.failed else 0


if __name__ == "__main__":
    sys.exit(main())
