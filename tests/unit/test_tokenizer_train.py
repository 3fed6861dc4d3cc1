#!/usr/bin/env python3
"""tests/unit/test_tokenizer_train.py: `anvil tokenizer train` against Hugging Face
`tokenizers` (PyPI, 0.23 at the time of writing).

    python3 test_tokenizer_train.py /path/to/anvil      (exit 0 pass, 1 fail or `tokenizers` missing: launch/test.sh installs it)

Interpreter: the first python3 on the PATH (the pyenv 3.11 on the build machine), where
launch/test.sh installs `tokenizers` 0.23.3; not Debian's /usr/bin/python3.

The corpus is made locally: the fortune files in /usr/share/games/fortunes (documents
separated by "%" lines), or, where they are missing, the Python standard library's
sources. Every 20th document is held out. Checks, strongest first:
  1. the written tokenizer.json loads with `tokenizers`, has the asked vocab size and
     is byte for byte what `tokenizers` writes when it saves it again (same layout);
     the 256 byte tokens come first in byte order, the merged tokens next in merge
     order, the special token last; every merge's parts and result are tokens;
  2. the merges equal, one for one, those of an independent Python implementation of
     the documented algorithm (pair counts over the words that HF's own ByteLevel
     pre-tokenizer gives, most frequent pair first, ties to the smaller pair of byte
     strings): this checks pre-tokenization, counting, merging and the tie rule;
  3. HF's BpeTrainer on the same documents learns the same merges up to the order of
     tied pairs (its ties go by internal id): most of the first 1000 merges agree and
     both tokenizers compress the held-out text within 2% of each other;
  4. `anvil tokenizer encode` gives the same ids as HF for every line of a varied
     held-out text (prose, code, whitespace runs, CRLF, digits, CJK, emoji, special
     tokens in the text);
  5. the result does not depend on the number of OpenMP threads;
  6. bad input (missing file, vocab size < 257, unknown option, unwritable output) is
     one line on stderr, exit code 2, and leaves an existing output untouched.
"""
import collections
import glob
import heapq
import json
import os
import subprocess
import sys
import sysconfig
import tempfile

try:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
except ImportError:
    print("FAIL: the Python package `tokenizers` is not installed (launch/test.sh installs it)")
    sys.exit(1)

VOCAB = 2000
EOT = "<|endoftext|>"
FAILURES = []


def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what)
    if not cond:
        FAILURES.append(what)
    return cond


def split_docs(text, sep):
    """Documents of `text` cut at lines equal to sep, as anvil's --doc-sep does."""
    docs, doc, line, n = [], 0, 0, len(text)
    while line < n:
        nl = text.find("\n", line)
        end = nl if nl >= 0 else n
        nxt = end + 1 if nl >= 0 else n
        if text[line:end].rstrip("\r") == sep:
            docs.append(text[doc:line])
            doc = nxt
        line = nxt
    docs.append(text[doc:])
    return [d for d in docs if d.strip()]


def corpus_documents():
    """The training + held-out documents (each ends with a newline)."""
    files = sorted(f for f in glob.glob("/usr/share/games/fortunes/*")
                   if "." not in os.path.basename(f) and os.path.isfile(f))
    docs = []
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            docs += split_docs(fh.read(), "%")
    if sum(len(d) for d in docs) < 500_000:   # no fortunes: Python's own sources
        docs, size = [], 0
        for f in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py"))):
            with open(f, encoding="utf-8", errors="replace") as fh:
                docs.append(fh.read())
            size += len(docs[-1])
            if size > 2_500_000:
                break
    # A "%" line inside a document would split it again when anvil reads the file, and
    # anvil cuts special tokens out of the training text (the references do not).
    docs = [d.replace("\n%\n", "\n%%\n").replace(EOT, "") for d in docs]
    return [d if d.endswith("\n") else d + "\n" for d in docs]


def run(cmd, env=None):
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


# ---- the independent reference of the documented algorithm ------------------------------

def byte_level_tables():
    """GPT-2's bytes_to_unicode, as a map from character to byte."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}, [chr(c) for b, c in sorted(zip(bs, cs))]


def reference_merges(docs, vocab_size, n_special, min_frequency=2):
    """Byte-level BPE by the rule anvil documents: words from HF's ByteLevel
    pre-tokenizer, pair counts weighted by word frequency (overlaps included), the
    most frequent pair first, ties to the smallest (left bytes, right bytes)."""
    char_to_byte, _ = byte_level_tables()
    as_bytes = lambda tok: bytes(char_to_byte[c] for c in tok)
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    counts = collections.Counter()
    for d in docs:
        for piece, _ in pre.pre_tokenize_str(d):
            counts[piece] += 1
    words = [(list(w), c) for w, c in counts.items()]
    pairs, where = collections.Counter(), collections.defaultdict(set)
    for i, (w, c) in enumerate(words):
        for p in zip(w, w[1:]):
            pairs[p] += c
            where[p].add(i)
    heap = [(-c, as_bytes(a), as_bytes(b), a, b) for (a, b), c in pairs.items()]
    heapq.heapify(heap)
    vocab, merges = set(char_to_byte), []
    while len(vocab) + n_special < vocab_size and heap:
        neg, _, _, a, b = heapq.heappop(heap)
        if pairs[(a, b)] != -neg:
            continue   # stale entry
        if -neg < min_frequency:
            break
        merges.append((a, b))
        ab = a + b
        vocab.add(ab)
        before = {}
        for i in list(where[(a, b)]):
            w, c = words[i]
            for p in zip(w, w[1:]):
                before.setdefault(p, pairs[p])
                pairs[p] -= c
            out, k = [], 0
            while k < len(w):
                if k + 1 < len(w) and w[k] == a and w[k + 1] == b:
                    out.append(ab)
                    k += 2
                else:
                    out.append(w[k])
                    k += 1
            words[i] = (out, c)
            for p in zip(out, out[1:]):
                before.setdefault(p, pairs[p])
                pairs[p] += c
                where[p].add(i)
        for p, old in before.items():
            if pairs[p] != old and pairs[p] > 0:
                heapq.heappush(heap, (-pairs[p], as_bytes(p[0]), as_bytes(p[1]), p[0], p[1]))
    return merges


def hf_trained(docs, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(docs, trainer=trainer)
    return tok


def bytes_per_token(tok, docs):
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    n_ids = sum(len(e.ids) for e in tok.encode_batch(docs))
    return n_bytes / n_ids


# ---- the held-out text for encoding -------------------------------------------------------

VARIED_LINES = [
    "The quick brown fox jumps over the lazy dog.",
    "It's what they'll say: we're sure you've done it, I'm told he'd go. DON'T SHOUT'S",
    "    indented by four spaces, then\ttabs\t\tand   runs     of      spaces   ",
    "trailing spaces and CRLF   \r",
    "\r",
    "",
    "   ",
    "int main(int argc, char **argv) { return argc > 1 ? atoi(argv[1]) : -1; }",
    "def f(x):  # comment\treturn {'a': [1, 2.5e-3, 0x1F], \"b\": None}",
    "for (size_t i = 0; i < n; i++) s += a[i] * b[i];   // dot product",
    "3.14159 2718281828 1,000,000 $12.99 50% 0.5 1e10 2024-01-31 12:34:56",
    "1234567890123456789012345678901234567890",
    "日本語のテキストと中文文本，还有한국어 텍스트。",
    "Emoji: 😀👍🏽🎉 👩‍👩‍👧‍👦 🇫🇷 ❤️ ✨",
    "Ünïcödé: naïve café résumé façade Ångström – “quotes” ‘single’ … ½ ² ∑ ∞ ≠",
    "Ελληνικά, кириллица, עברית, العربية, हिन्दी, ไทย",
    "non-breaking\u00a0space, ideographic\u3000space, next-line\u0085char, zwsp\u200bhere",
    "text with <|endoftext|> inside and<|endoftext|>glued<|endoftext|><|endoftext|> twice",
    "<|endoftext|>",
    "<|endoftext| > almost, <|endoftext and |endoftext|> fragments",
    "Mixed: AbCdEf GHIJ klmn OPqr 'quoted' \"double\" (paren) [bracket] {brace}",
    "!!!??? ... --- *** ### @@@ ~~~ ``` ''' \"\"\" ;;; ::: ,,, ___",
    "URL https://example.com/path?q=1&r=two#frag and mail someone@example.org",
    "a" * 300,
    "ab " * 100,
    "\x01\x02 control \x7f chars \x1b[31mred\x1b[0m",
]


def main():
    if len(sys.argv) != 2:
        print("usage: test_tokenizer_train.py /path/to/anvil", file=sys.stderr)
        return 2
    anvil = os.path.abspath(sys.argv[1])
    docs = corpus_documents()
    train = [d for i, d in enumerate(docs) if i % 20 != 7]
    held = [d for i, d in enumerate(docs) if i % 20 == 7]
    with tempfile.TemporaryDirectory(prefix="anvil_tok_train_") as tmp:
        train_path = os.path.join(tmp, "train.txt")
        with open(train_path, "w", encoding="utf-8", newline="") as fh:
            fh.write("".join(d + "%\n" for d in train))
        print(f"corpus: {len(train)} training documents "
              f"({os.path.getsize(train_path) / 1e6:.2f} MB), {len(held)} held out")

        # -- 1. train, load, layout
        out = os.path.join(tmp, "tokenizer.json")
        cmd = [anvil, "tokenizer", "train", "--vocab-size", str(VOCAB), "--special", EOT,
               "--doc-sep", "%", "--out", out, train_path]
        r = run(cmd)
        print(r.stdout.strip())
        if not check(r.returncode == 0, "anvil tokenizer train exits 0" + (
                f" (got {r.returncode}: {r.stderr.strip()[-300:]})" if r.returncode else "")):
            return 1
        check(len(r.stdout.strip().splitlines()) == 1, "one summary line on stdout")
        check(not os.path.exists(out + ".tmp"), "no OUT.tmp left behind")
        try:
            tok = Tokenizer.from_file(out)
        except Exception as e:   # noqa: BLE001 - any load error is the failure reported
            check(False, f"tokenizers.Tokenizer.from_file loads the file ({e})")
            return 1
        check(True, "tokenizers.Tokenizer.from_file loads the file")
        with open(out, encoding="utf-8") as fh:
            text = fh.read()
        check(tok.to_str(pretty=True) == text,
              "the file is byte for byte what tokenizers writes when it saves it")
        check(tok.get_vocab_size() == VOCAB, f"vocab size {tok.get_vocab_size()} == {VOCAB}")
        j = json.loads(text)
        vocab, merges = j["model"]["vocab"], [tuple(m) for m in j["model"]["merges"]]
        _, byte_chars = byte_level_tables()
        check(all(vocab.get(byte_chars[b]) == b for b in range(256)),
              "ids 0..255 are the byte tokens in byte order")
        check(j["added_tokens"] == [{"id": VOCAB - 1, "content": EOT, "single_word": False,
                                     "lstrip": False, "rstrip": False, "normalized": False,
                                     "special": True}],
              f"{EOT} is the special token with the last id")
        check(tok.token_to_id(EOT) == VOCAB - 1, f"tokenizers maps {EOT} to {VOCAB - 1}")
        check(all(a in vocab and b in vocab and a + b in vocab for a, b in merges),
              f"all {len(merges)} merges have their parts and result in the vocab")
        new_tokens = list(dict.fromkeys(a + b for a, b in merges))
        check([vocab[t] for t in new_tokens] == list(range(256, 256 + len(new_tokens))) and
              256 + len(new_tokens) + 1 == VOCAB,
              "merged tokens have ids 256.. in the order of their first merge")

        # -- 2. the independent reference of the same algorithm
        ref = reference_merges(train, VOCAB, 1)
        same = next((i for i, (x, y) in enumerate(zip(ref, merges)) if x != y),
                    min(len(ref), len(merges)))
        check(ref == merges, f"merges equal the Python reference's ({len(merges)} vs "
                             f"{len(ref)}, identical for the first {same})")

        # -- 3. HF's own trainer
        hf = hf_trained(train, VOCAB)
        hf_merges = [tuple(m) for m in json.loads(hf.to_str())["model"]["merges"]]
        prefix = next((i for i, (x, y) in enumerate(zip(merges, hf_merges)) if x != y),
                      min(len(merges), len(hf_merges)))
        n = min(1000, len(merges), len(hf_merges))
        common = len(set(merges[:n]) & set(hf_merges[:n]))
        print(f"HF BpeTrainer: {len(hf_merges)} merges; the first {prefix} are identical; "
              f"{common} of the first {n} agree as sets; "
              f"{len(set(merges) & set(hf_merges))} of all")
        check(common >= 0.9 * n, f"at least 90% of the first {n} merges agree with HF's "
                                 f"trainer as sets ({common})")
        bpt_anvil, bpt_hf = bytes_per_token(tok, held), bytes_per_token(hf, held)
        print(f"held-out bytes per token: anvil {bpt_anvil:.4f}, HF trainer {bpt_hf:.4f}")
        check(abs(bpt_anvil / bpt_hf - 1) < 0.02, "compression within 2% of HF's trainer")

        # -- 4. anvil's encoder == HF's, line by line
        lines = VARIED_LINES + [ln for d in held for ln in d.split("\n")]
        enc_path = os.path.join(tmp, "heldout.txt")
        with open(enc_path, "w", encoding="utf-8", newline="") as fh:
            fh.write("\n".join(lines) + "\n")
        r = run([anvil, "tokenizer", "encode", out, enc_path])
        if check(r.returncode == 0, "anvil tokenizer encode exits 0" + (
                f" (got {r.returncode}: {r.stderr.strip()[-300:]})" if r.returncode else "")):
            got = [[int(x) for x in ln.replace(",", " ").split()]
                   for ln in r.stdout.split("\n")[:len(lines)]]
            want = [e.ids for e in tok.encode_batch(lines)]
            bad = [i for i in range(len(lines)) if i >= len(got) or got[i] != want[i]]
            check(len(r.stdout.split("\n")) >= len(lines), f"one output line per input line "
                                                           f"({len(lines)})")
            for i in bad[:5]:
                print(f"  line {i} {lines[i][:60]!r}: anvil {got[i][:20] if i < len(got) else None}"
                      f" HF {want[i][:20]}")
            check(not bad, f"anvil and HF give the same ids on all {len(lines)} held-out lines "
                           f"({sum(len(w) for w in want)} ids)")

        # -- 5. threads
        out1 = os.path.join(tmp, "one_thread.json")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        r = run(cmd[:-2] + [out1, train_path], env=env)
        with open(out1, encoding="utf-8") as fh:
            check(r.returncode == 0 and fh.read() == text,
                  "one OpenMP thread writes the same file")

        # -- 6. bad input
        before = text
        bad_cases = [
            ("missing input file", ["--vocab-size", "300", "--out", out,
                                    os.path.join(tmp, "no_such_file.txt")]),
            ("--vocab-size 256", ["--vocab-size", "256", "--out", out, train_path]),
            ("--vocab-size missing", ["--out", out, train_path]),
            ("--vocab-size not a number", ["--vocab-size", "lots", "--out", out, train_path]),
            ("unknown option", ["--vocab-size", "300", "--frobnicate", "--out", out,
                                train_path]),
            # a directory cannot be made below a regular file
            ("unwritable output", ["--vocab-size", "300", "--out",
                                   os.path.join(train_path, "sub", "t.json"), train_path]),
            ("output is a directory", ["--vocab-size", "300", "--out", tmp, train_path]),
            ("no input files", ["--vocab-size", "300", "--out", out]),
        ]
        for what, args in bad_cases:
            r = run([anvil, "tokenizer", "train"] + args)
            err = r.stderr.strip().splitlines()
            check(r.returncode == 2 and len(err) == 1 and
                  err[0].startswith("anvil: tokenizer train: "),
                  f"{what}: exit 2 with one line ({r.returncode}: {r.stderr.strip()!r})")
        with open(out, encoding="utf-8") as fh:
            check(fh.read() == before, "failed runs left the existing output untouched")

    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
