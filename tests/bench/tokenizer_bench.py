#!/usr/bin/env python3
"""Tokenizer encode throughput, anvil vs Hugging Face `tokenizers`, on one and two cores.

A benchmark, not a test. Builds the same GPT-2- and Llama-3-style tokenizer.json files
the exactness test uses (a byte-level BPE trained locally with `tokenizers`, see
tests/unit/test_tokenizer_hf.py), makes ~20 MB of fortune-cookie text, and times:
  - anvil, 1 core: `anvil tokenizer encode TOK FILE` (the single-threaded CLI, whole run);
  - anvil, 1 and 2 cores: `anvil prepare text --tokenizer TOK --doc-sep %` with
    OMP_NUM_THREADS=1/2 (whole run: reading, tokenizing documents in parallel, writing
    shards; the text is cut into documents of 50 lines, since prepare parallelizes over
    documents);
  - tokenizers, 1 and 2 cores: `Tokenizer.encode_batch(lines)` with RAYON_NUM_THREADS=1/2
    (each in its own process, since rayon reads the variable once).
Best of 3 runs each; prints a markdown table for docs/perf.md.
usage: python3 tests/bench/tokenizer_bench.py [build/anvil]   (pyenv python3 with tokenizers)
"""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "unit"))
import test_tokenizer_hf as th  # noqa: E402  (tokenizer builders shared with the test)

HF_WORKER = r"""
import sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
lines = open(sys.argv[2], encoding="utf-8").read().split("\n")
best = 1e9
for _ in range(3):
    t0 = time.perf_counter()
    tok.encode_batch(lines, add_special_tokens=False)
    best = min(best, time.perf_counter() - t0)
print(best)
"""


def best_of(cmd, env=None, n=3):
    best = 1e9
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True, env=env)
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    anvil = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/anvil")
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = th.train(tmp)
        text = "\n".join(th.fortune_lines())
        while len(text.encode()) < 20_000_000:
            text = text + "\n" + text
        data = text.encode()[:20_000_000].decode("utf-8", "ignore")
        # documents of 50 lines, separated by '%' lines (prepare --doc-sep %): prepare
        # parallelizes over documents, as a corpus of many documents allows.
        lines = data.split("\n")
        data = "\n".join(l if i % 50 else "%\n" + l for i, l in enumerate(lines))
        path_in = os.path.join(tmp, "bench.txt")
        with open(path_in, "w", encoding="utf-8") as f:
            f.write(data)
        mb = len(data.encode()) / 1e6
        docs = th.variants(vocab, merges)
        rows = []
        for name in ("gpt2", "llama3"):
            tok = os.path.join(tmp, name + ".json")
            with open(tok, "w", encoding="utf-8") as f:
                json.dump(docs[name], f, ensure_ascii=False)
            r = {"cli1": best_of([anvil, "tokenizer", "encode", tok, path_in])}
            for t in (1, 2):
                env = dict(os.environ, OMP_NUM_THREADS=str(t))
                r[f"prep{t}"] = best_of([anvil, "prepare", "text", "--tokenizer", tok,
                                         "--out", os.path.join(tmp, "out"), "--val-frac",
                                         "0", "--doc-sep", "%", path_in], env=env)
                env = dict(os.environ, RAYON_NUM_THREADS=str(t))
                out = subprocess.run([sys.executable, "-c", HF_WORKER, tok, path_in], env=env,
                                     check=True, capture_output=True, text=True).stdout
                r[f"hf{t}"] = float(out.strip())
            rows.append((name, r))
        print(f"text: {mb:.1f} MB of fortune cookies, {len(vocab)}-token byte-level BPE; MB/s, best of 3")
        print("| tokenizer | anvil CLI, 1 core | anvil prepare, 1 core | anvil prepare, 2 cores | "
              "tokenizers encode_batch, 1 core | tokenizers encode_batch, 2 cores |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, r in rows:
            print(f"| {name} | {mb / r['cli1']:.1f} | {mb / r['prep1']:.1f} | {mb / r['prep2']:.1f} "
                  f"| {mb / r['hf1']:.1f} | {mb / r['hf2']:.1f} |")


if __name__ == "__main__":
    main()
