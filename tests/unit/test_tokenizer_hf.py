#!/usr/bin/env python3
"""tests/unit/test_tokenizer_hf.py: `anvil tokenizer` gives the ids Hugging Face
`tokenizers` gives, token for token, and decodes them back to the text.

Interpreter: the first python3 on the PATH (the pyenv 3.11 on the build machine), where
launch/test.sh installs `tokenizers` 0.23.3 from PyPI; not Debian's /usr/bin/python3.

Usage: python3 test_tokenizer_hf.py /path/to/anvil            (meson: unit suite)
       python3 test_tokenizer_hf.py /path/to/anvil --bench     (throughput, no checks)

Everything is made locally, in a temporary directory: a byte-level BPE is trained with
`tokenizers` on text found on this machine (fortune files, C headers) plus a varied
corpus written below, and its vocab and merges are wrapped into the tokenizer.json
variants that matter:
  gpt2          ByteLevel pre-tokenizer (GPT-2 regex), merges as "a b" strings,
                <|endoftext|> (in the vocab), ByteLevel post-processor
  gpt2_extra    ByteLevel with add_prefix_space, merges as ["a", "b"] pairs, and added
                tokens that are not special: lstrip/rstrip, single_word, normalized
  llama3        Split(Llama-3 regex, Isolated) + ByteLevel(use_regex false),
                ignore_merges, <|begin_of_text|> BOS by TemplateProcessing (inside a
                post-processor Sequence), <|eot_id|>, <|start_header_id|>, reserved
                tokens
  qwen2         NFC normalizer, Split(Qwen2 regex) + ByteLevel, <|endoftext|>,
                <|im_start|>, <|im_end|>, a normalized added token with an accent
Six more files (extra_variants) cover the rarer rules, ids only, and one checks the
regex classes code point by code point (unicode_variant).
For each variant, every line of the test corpus is encoded by `anvil tokenizer encode`
and by tokenizers' encode(line, add_special_tokens=False) (and with --special against
add_special_tokens=True); any difference is a failure. `anvil tokenizer decode` must
give each line back (NFC of it for qwen2; lines where a stripping token swallowed
whitespace are left out of that check). Lines with invalid UTF-8 (HF cannot take them)
must round-trip through anvil alone. Exit 0: all equal; 1: a mismatch, or `tokenizers`
is not installed (launch/test.sh installs it: a skipped exactness test would hide that).
"""
import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import unicodedata

try:
    import tokenizers
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
except ImportError:
    print("FAIL - the Python package `tokenizers` is not installed (launch/test.sh installs it)")
    sys.exit(1)

GPT2_PATTERN = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
VOCAB_SIZE = 6000

# ---- corpus ------------------------------------------------------------------------------

VARIED = [
    "Hello world", "Hello, world!", "The quick brown fox jumps over the lazy dog.",
    "", " ", "  ", "\t", "\t\tindented with tabs", "    four spaces", "trailing spaces   ",
    "  leading and trailing  ", "a  b   c    d     e", "tab\tseparated\tvalues\t",
    "windows line\r", "\r", "lone\rcarriage", "\r\r\r", " \r ", "mixed \t \r \t end",
    "1234567890", "3.14159265358979", "x = 100000000;", "year 2024, 12:30:45", "007",
    "1 22 333 4444 55555 666666", "9999999999999999999999", "v1.2.3-rc4",
    "DON'T", "I'LL", "WE'VE", "SHE'S", "THEY'RE", "I'M", "HE'D", "don't", "i'll",
    "you'Re", "It'S", "'s", "'", "''", "'''s", "rock 'n' roll", "O'Neil's",
    "日本語のテキストです。", "中文字符测试，标点符号！", "한국어 텍스트 테스트",
    "ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ", "漢字かなカナ", "Ｈｅｌｌｏ",
    "👍", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "😀😃😄😁", "emoji 🎉 in 🎈 text", "❤️", "🇯🇵🇫🇷",
    "e\u0301", "cafe\u0301", "café", "A\u030a", "\u00c5", "\u1e9b\u0323", "n\u0303o",
    "\u0301 leading combining", "a\u0301\u0301\u0301", "Ω\u0301", "\u212b", "\u2126",
    "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "हिन्दी भाषा", "Привет, мир!",
    "Γειά σου Κόσμε", "ไทย ภาษา", "Tiếng Việt có dấu",
    "<|endoftext|>", "a<|endoftext|>b", " <|endoftext|> ", "<|endoftext|><|endoftext|>",
    "<|endof", "<|<|endoftext|>|>", "<|im_start|>user hi<|im_end|>", "<|im_start|>",
    "<|begin_of_text|>Hello", "<|eot_id|>", "x<|start_header_id|>assistant<|end_header_id|>",
    "<|reserved_special_token_3|>", "text <mask> text", "<mask>", "  <mask>  ", "a<mask>b",
    "\u3000<mask>\u00a0", "the MASK word", "MASK", "aMASKb", "MASK MASK", "x MASK, y",
    "crème brûlée", "cre\u0300me bru\u0302le\u0301e", "an apple café", "caf\u00e9!",
    "no\u00a0break\u00a0space", "line\u2028separator", "para\u2029graph", "ideo\u3000space",
    "nel\u0085char", "mongolian\u180evowel", "zero\u200bwidth", "bom\ufeffhere", "\u00a0",
    "\u2028", "\u3000\u3000", " \u00a0 ", "\u000b\u000c", "unit\u001fsep", "nul\u0000byte",
    "def f(x):\treturn x ** 2  # square", "for (int i = 0; i < n; i++) { a[i] = 0; }",
    "#include <stdio.h>", "    if (x != NULL && *x == '\\0') return -1;",
    "SELECT * FROM t WHERE a='b';", "https://example.com/path?q=1&r=two#frag",
    "user@example.org", "C:\\Windows\\System32", "$HOME/.config/x.yaml", "a-b_c.d:e;f",
    "!!!???...", "---", "===", "...", "-- -- --", "((()))", "{[<>]}", "#@$%^&*~`|",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "ababababababababababababababababababababababababababababababababababababab",
    " " * 100, "\t" * 40 + "x", "x" + " " * 50 + "y", "=" * 200, "ab" * 700,
    "a" * 5000, "The " * 300, "ΑΒΓ" * 100, "日本" * 300,
]


def fortune_lines():
    out = []
    for p in sorted(glob.glob("/usr/share/games/fortunes/*")):
        if p.endswith(".dat") or p.endswith(".u8") or os.path.islink(p) or os.path.isdir(p):
            continue
        with open(p, "rb") as f:
            out.extend(f.read().decode("utf-8", "replace").split("\n"))
    return out


def code_lines(limit_bytes=1_500_000):
    out, total = [], 0
    for p in sorted(glob.glob("/usr/include/*.h")):
        with open(p, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        out.extend(text.split("\n"))
        total += len(text)
        if total > limit_bytes:
            break
    return out


def fuzz_lines(rng, n):
    """Random mixtures of the fragments most likely to expose a difference."""
    pool = ["a", "b", "the", "The", "DON'T", "'s", "'S", "'ll", "'", " ", "  ", "\t", "\r",
            "\u00a0", "\u3000", "\u2028", "\u0085", "1", "22", "333", "4444", "é", "e\u0301",
            "\u0301", "日本", "語", "한", "👍", "\u200d", "🏽", "ب", "ש", "न", "्", "!", "?",
            ".", ",", "-", "_", "(", ")", "<", ">", "|", "<|endoftext|>", "<|im_end|>",
            "<|eot_id|>", "<mask>", "MASK", "café", "x", "Ω", "ß", "İ", "ſ", "K", "\u000b",
            "<|", "|>", "\\", "\"", "$", "0", "9", "½", "²", "Ⅻ", "٣"]
    out = []
    for _ in range(n):
        k = rng.randint(1, 24)
        out.append("".join(rng.choice(pool) for _ in range(k)))
    return out


def test_corpus(rng):
    fl = [l for l in fortune_lines() if l]
    cl = [l for l in code_lines(600_000) if l]
    lines = list(VARIED)
    lines += rng.sample(fl, min(4000, len(fl)))
    lines += rng.sample(cl, min(4000, len(cl)))
    lines += fuzz_lines(rng, 4000)
    return [l for l in lines if "\n" not in l]


# ---- tokenizers ----------------------------------------------------------------------------

def train(tmp):
    text = "\n".join(fortune_lines() + code_lines() + VARIED * 20 + fuzz_lines(random.Random(1), 3000))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"])
    chunks = [text[i:i + 10000] for i in range(0, len(text), 10000)]
    tok.train_from_iterator(chunks, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [m if isinstance(m, list) else m.split(" ") for m in model["merges"]]
    return model["vocab"], merges


def added(content, id_, special=True, normalized=False, lstrip=False, rstrip=False,
          single_word=False):
    return {"id": id_, "content": content, "single_word": single_word, "lstrip": lstrip,
            "rstrip": rstrip, "normalized": normalized, "special": special}


def bytelevel(prefix=False, regex=True):
    return {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True,
            "use_regex": regex}


def split(pattern):
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
            "invert": False}


def document(vocab, merges, pairs, added_tokens, normalizer, pre, post, ignore_merges=False):
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": added_tokens, "normalizer": normalizer, "pre_tokenizer": pre,
        "post_processor": post, "decoder": bytelevel(True),
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": ignore_merges,
                  "vocab": vocab,
                  "merges": merges if pairs else [a + " " + b for a, b in merges]},
    }


def variants(vocab, merges):
    V = len(vocab)
    eot = vocab["<|endoftext|>"]
    out = {}
    out["gpt2"] = document(vocab, merges, False, [added("<|endoftext|>", eot, normalized=True)],
                           None, bytelevel(False), bytelevel(True))
    out["gpt2_extra"] = document(
        vocab, merges, True,
        [added("<|endoftext|>", eot),
         added("<mask>", V, special=False, lstrip=True, rstrip=True),
         # "MASK" is also a vocab token: tokenizers gives it that id, not the one
         # written here (anvil does the same and warns), which tests that rule too.
         added("MASK", V + 1, special=False, single_word=True),
         added("café", V + 2, special=False, normalized=True)],
        None, bytelevel(True), bytelevel(True))
    names = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
             "<|reserved_special_token_1|>", "<|start_header_id|>", "<|end_header_id|>",
             "<|reserved_special_token_2|>", "<|eot_id|>"] + \
            ["<|reserved_special_token_%d|>" % i for i in range(3, 20)]
    ll = [added(n, V + i) for i, n in enumerate(names)]
    template = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                         {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [V],
                                                         "tokens": ["<|begin_of_text|>"]}}}
    out["llama3"] = document(
        vocab, merges, True, ll, None,
        {"type": "Sequence", "pretokenizers": [split(LLAMA3_PATTERN), bytelevel(False, False)]},
        {"type": "Sequence", "processors": [bytelevel(False), template]}, ignore_merges=True)
    qw = [added("<|endoftext|>", eot), added("<|im_start|>", V), added("<|im_end|>", V + 1),
          added("crème", V + 2, special=False, normalized=True)]
    out["qwen2"] = document(
        vocab, merges, False, qw, {"type": "NFC"},
        {"type": "Sequence", "pretokenizers": [split(QWEN2_PATTERN), bytelevel(False, False)]},
        bytelevel(False))
    return out


# ---- comparing -------------------------------------------------------------------------------

def run_anvil(anvil, args, data):
    r = subprocess.run([anvil, "tokenizer"] + args, input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("anvil tokenizer %s: exit %d: %s" % (
            " ".join(args[:1]), r.returncode, r.stderr.decode("utf-8", "replace").strip()))
    return r.stdout


def parse_ids(out):
    lines = out.decode().split("\n")
    assert lines[-1] == "", "output does not end with a newline"
    return [[int(x) for x in l.split()] for l in lines[:-1]]


def show_mismatch(tok, name, i, line, want, got):
    k = next((j for j in range(min(len(want), len(got))) if want[j] != got[j]),
             min(len(want), len(got)))
    print("  %s line %d: %r" % (name, i + 1, line[:120]))
    print("    first difference at token %d: HF %s  anvil %s" % (
        k, [tok.id_to_token(x) for x in want[max(0, k - 2):k + 3]],
        [tok.id_to_token(x) if x < tok.get_vocab_size() else x for x in got[max(0, k - 2):k + 3]]))


def check_variant(anvil, tmp, name, doc, lines, bad_lines):
    path = os.path.join(tmp, name + ".json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
    tok = Tokenizer.from_file(path)
    data = ("\n".join(lines) + "\n").encode("utf-8")
    failures = 0
    for special in (False, True):
        want = [e.ids for e in tok.encode_batch(lines, add_special_tokens=special)]
        got = parse_ids(run_anvil(anvil, ["encode"] + (["--special"] if special else []) + [path], data))
        if len(got) != len(want):
            print("FAIL - %s: anvil gave %d lines for %d" % (name, len(got), len(want)))
            return 1
        bad = [i for i in range(len(lines)) if got[i] != want[i]]
        for i in bad[:5]:
            show_mismatch(tok, name, i, lines[i], want[i], got[i])
        ntok = sum(len(w) for w in want)
        tag = "add_special_tokens=%s" % special
        if bad:
            print("FAIL - %s (%s): %d of %d lines differ (%d tokens)" % (name, tag, len(bad), len(lines), ntok))
            failures += 1
        else:
            print("ok   - %s (%s): %d lines, %d tokens identical" % (name, tag, len(lines), ntok))
    # decode: the same text as tokenizers' decode (where that is valid UTF-8: HF's
    # ByteLevel decoder mangles non-ASCII added tokens), and decode(encode(x)) == x
    # (NFC(x) under the NFC normalizer) unless add_prefix_space adds a space or a
    # stripping token swallowed whitespace.
    want = [e.ids for e in tok.encode_batch(lines, add_special_tokens=False)]
    ids_text = run_anvil(anvil, ["encode", path], data)
    back = run_anvil(anvil, ["decode", path], ids_text).decode("utf-8").split("\n")[:-1]
    hf_text = tok.decode_batch(want, skip_special_tokens=False)
    if len(back) != len(lines):
        print("FAIL - %s: decode gave %d lines for %d" % (name, len(back), len(lines)))
        return failures + 1
    bad = [i for i in range(len(lines)) if "\ufffd" not in hf_text[i] and back[i] != hf_text[i]]
    for i in bad[:5]:
        print("  %s line %d: HF decodes to %r, anvil to %r" % (name, i + 1, hf_text[i][:80], back[i][:80]))
    if bad:
        print("FAIL - %s: decode differs from tokenizers' decode on %d lines" % (name, len(bad)))
        failures += 1
    else:
        print("ok   - %s: decode == tokenizers' decode on %d lines" % (
            name, sum("\ufffd" not in h for h in hf_text)))
    prefix = doc["pre_tokenizer"].get("add_prefix_space", False)
    strip = "<mask>" in json.dumps(doc["added_tokens"])
    if not prefix:
        expect = [unicodedata.normalize("NFC", l) if doc["normalizer"] else l for l in lines]
        bad = [i for i in range(len(lines))
               if back[i] != expect[i] and not (strip and "<mask>" in lines[i])]
        for i in bad[:5]:
            print("  %s line %d: %r decodes to %r" % (name, i + 1, expect[i][:80], back[i][:80]))
        if bad:
            print("FAIL - %s: decode(encode(x)) != x on %d lines" % (name, len(bad)))
            failures += 1
        else:
            print("ok   - %s: decode(encode(x)) == x on %d lines" % (name, len(lines)))
    # invalid UTF-8 (HF cannot take it): anvil must give the bytes back
    if bad_lines and not prefix and not doc["normalizer"]:
        raw = b"\n".join(bad_lines) + b"\n"
        back = run_anvil(anvil, ["decode", path], run_anvil(anvil, ["encode", path], raw))
        if back != raw:
            print("FAIL - %s: invalid UTF-8 lines do not round-trip" % name)
            failures += 1
        else:
            print("ok   - %s: %d lines of invalid UTF-8 round-trip" % (name, len(bad_lines)))
    return failures


def extra_variants(vocab, merges, rng):
    """Rarer features, ids only (their decoding is lossy by design): a vocab missing
    some bytes (dropped / unk / fuse_unk / byte_fallback), merges listed twice and
    shuffled with a #version line, Split by a String, a regex that can match empty,
    two Split stages with ByteLevel's own regex and prefix space after them, added
    tokens with odd ids, duplicates and overlapping lstrip/rstrip."""
    b2u = bytes_to_unicode()
    V = len(vocab)
    out = {}
    v2 = dict(vocab)
    for b in b"xyzQ\xc3\xa9 ":
        v2.pop(b2u[b], None)
    m2 = [m for m in merges if all(t in v2 for t in (m[0], m[1], m[0] + m[1]))]
    v3 = dict(v2)
    v3["<unk>"] = max(v3.values()) + 1
    for b in range(0x80, 0x100):
        v3.setdefault("<0x%02X>" % b, max(v3.values()) + 1)
    bl = bytelevel(False)
    out["missing_bytes"] = document(v2, m2, True, [], None, bl, None)
    d = document(v3, m2, True, [], None, bl, None)
    d["model"].update(unk_token="<unk>", fuse_unk=True)
    out["unk_fused"] = d
    d = document(v3, m2, True, [], None, bl, None)
    d["model"].update(unk_token="<unk>", byte_fallback=True)
    out["byte_fallback"] = d
    dup = [list(m) for m in merges]
    dup = dup + dup[:300][::-1]
    rng.shuffle(dup)
    d = document(vocab, dup, False, [], None, bl, None)
    d["model"]["merges"] = ["#version: 0.2"] + d["model"]["merges"]
    out["merges_dup_shuffled"] = d
    out["split_string"] = document(vocab, merges, True, [], None, {
        "type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"String": "e.("}, "behavior": "Isolated",
             "invert": False},
            split(r"\s*"), split(LLAMA3_PATTERN), bytelevel(True, True)]}, None)
    out["added_odd"] = document(vocab, merges, True, [
        added("<b>", V + 5), added("<a>", V + 1),
        added("<b>", V + 5, special=False, lstrip=True),
        added(" x", V + 7, special=False, lstrip=True, rstrip=True),
        added("y y", V + 8, rstrip=True), added("Hello", 3), added("<c>", 2)],
        None, bytelevel(True), None)
    return out


def check_ids(anvil, tmp, name, doc, lines):
    """encode only: anvil's ids == tokenizers' ids on every line. Returns failures."""
    path = os.path.join(tmp, name + ".json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
    tok = Tokenizer.from_file(path)
    want = [e.ids for e in tok.encode_batch(lines, add_special_tokens=False)]
    got = parse_ids(run_anvil(anvil, ["encode", path], ("\n".join(lines) + "\n").encode()))
    bad = [i for i in range(len(lines)) if i >= len(got) or got[i] != want[i]]
    for i in bad[:5]:
        show_mismatch(tok, name, i, lines[i], want[i], got[i] if i < len(got) else [])
    if bad or len(got) != len(lines):
        print("FAIL - %s: %d of %d lines differ" % (name, len(bad), len(lines)))
        return 1
    print("ok   - %s: %d lines, %d tokens identical" % (name, len(lines), sum(map(len, want))))
    return 0


def bytes_to_unicode():
    """GPT-2's byte -> character table."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def unicode_variant(rng):
    """Regex classes code point by code point: with the pattern below and ignore_merges,
    "a"+c is one token exactly when c is a letter to the regex engine (likewise "1"+c
    for numbers, U+0301+c for marks, " "+c for white space). The code points are those
    whose class Unicode changed after PCRE2's tables (see data/pretokenize.c), every
    code point below U+0800, and a random sample of the rest."""
    b2u = bytes_to_unicode()
    extra = [(0x1C89, 0x1C8A), (0xA7CB, 0xA7DC), (0x105C0, 0x105F3), (0x10D40, 0x10D85),
             (0x10EC2, 0x10EC4), (0x10EFC, 0x10EFF), (0x116D0, 0x116E3), (0x1123F, 0x11241),
             (0x11380, 0x113E2), (0x11BC0, 0x11BF9), (0x11F00, 0x11F5A), (0x1342F, 0x13455),
             (0x13460, 0x13470), (0x143F0, 0x143FA), (0x16100, 0x16139), (0x16D40, 0x16D79),
             (0x18CFF, 0x18CFF), (0x1B132, 0x1B155), (0x1CCF0, 0x1CCF9), (0x1D2C0, 0x1D2D3),
             (0x1DF25, 0x1DF2A), (0x1E030, 0x1E06D), (0x1E08F, 0x1E08F), (0x1E4D0, 0x1E4F9),
             (0x1E5D0, 0x1E5FA), (0x2B739, 0x2B739), (0x2EBF0, 0x2EC10), (0x2EE50, 0x2EE5D),
             (0x31350, 0x31360), (0x323A0, 0x323AF), (0x897, 0x897), (0xCF3, 0xCF3), (0xECE, 0xECE)]
    cps = set()
    for a, b in extra:
        cps.update(range(a, b + 1))
    cps.update(c for c in range(0x800) if c != 10)
    while len(cps) < 5000:
        c = rng.randrange(0x110000)
        if not 0xD800 <= c < 0xE000:
            cps.add(c)
    vocab = {}
    for b in range(256):
        vocab[b2u[b]] = len(vocab)
    lines = []
    for c in sorted(cps):
        for lead in ("a", "1", "\u0301", " "):
            word = lead + chr(c)
            key = "".join(b2u[x] for x in word.encode("utf-8"))
            if key not in vocab:
                vocab[key] = len(vocab)
            lines.append(word)
    doc = document(vocab, [], True, [], None,
                   {"type": "Sequence", "pretokenizers": [
                       split(r"\p{L}+|\p{N}+|\p{M}+|\s+"), bytelevel(False, False)]},
                   None, ignore_merges=True)
    return doc, lines


def invalid_utf8_lines():
    return [b"\xff", b"abc\x80def", b"\xc3", b"\xc3(", b"caf\xc3\xa9\xe9", b"\xed\xa0\x80 surrogate",
            b"\xf4\x90\x80\x80 too big", b"\xc0\xaf overlong", b"ok \xe6\x97\xa5\xe6\x97 cut",
            b"<|endoftext|>\xfe<|im_end|>", b"  \xa0\xa0  ", b"DON\x92T", b"\xe2\x80\xa8\xff"]


def bench(anvil, tmp, vocab, merges):
    """Single-thread encode throughput of anvil and of tokenizers on ~5 MB of fortunes."""
    text = "\n".join(fortune_lines())
    while len(text.encode()) < 5_000_000:
        text = text + "\n" + text
    data = text.encode()[:5_000_000].decode("utf-8", "ignore")
    lines = data.split("\n")
    path_in = os.path.join(tmp, "bench.txt")
    with open(path_in, "w", encoding="utf-8") as f:
        f.write(data + "\n")
    mb = len(data.encode()) / 1e6
    docs = variants(vocab, merges)
    for name in ("gpt2", "llama3", "qwen2"):
        path = os.path.join(tmp, name + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(docs[name], f, ensure_ascii=False)
        best = 1e9
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([anvil, "tokenizer", "encode", path, path_in], stdout=subprocess.DEVNULL,
                           check=True)
            best = min(best, time.perf_counter() - t0)
        tok = Tokenizer.from_file(path)
        hf_batch = hf_line = 1e9
        for _ in range(3):
            t0 = time.perf_counter()
            tok.encode_batch(lines, add_special_tokens=False)
            hf_batch = min(hf_batch, time.perf_counter() - t0)
            t0 = time.perf_counter()
            for l in lines:
                tok.encode(l, add_special_tokens=False)
            hf_line = min(hf_line, time.perf_counter() - t0)
        print("%-7s %.2f MB, %d lines: anvil %.1f MB/s (whole CLI run)   tokenizers %s: "
              "encode_batch %.1f MB/s, encode per line %.1f MB/s" % (
                  name, mb, len(lines), mb / best, tokenizers.__version__, mb / hf_batch,
                  mb / hf_line))


def main():
    if len(sys.argv) < 2:
        print("usage: test_tokenizer_hf.py /path/to/anvil [--bench]")
        return 2
    anvil = os.path.abspath(sys.argv[1])
    rng = random.Random(20240601)
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = train(tmp)
        if "--bench" in sys.argv[2:]:
            if os.environ.get("RAYON_NUM_THREADS") != "1":
                print("note: set RAYON_NUM_THREADS=1 for single-threaded tokenizers figures")
            bench(anvil, tmp, vocab, merges)
            return 0
        print("trained a byte-level BPE: %d tokens, %d merges" % (len(vocab), len(merges)))
        lines = test_corpus(rng)
        failures = 0
        for name, doc in variants(vocab, merges).items():
            try:
                failures += check_variant(anvil, tmp, name, doc, lines, invalid_utf8_lines())
            except (RuntimeError, subprocess.TimeoutExpired, UnicodeDecodeError) as e:
                print("FAIL - %s: %s" % (name, e))
                failures += 1
        xlines = lines[:3000] + ["<a><b><c>", " <b> Hello  <a>", "Hello<c>x", "y  x  y y z",
                                 " x x  x", "xe.(y", "e.e.((", "Q x y z", "café"] + \
            ["".join(rng.choice(["y", " ", "x", "<b>", "a", "\t", "\u00a0", "e.(", "Q", "é"])
                     for _ in range(12)) for _ in range(1000)] + \
            ["".join(rng.choice("etaoinshrdlu") for _ in range(rng.randint(40, 600)))
             for _ in range(200)]
        for name, doc in extra_variants(vocab, merges, rng).items():
            try:
                failures += check_ids(anvil, tmp, name, doc, xlines)
            except (RuntimeError, subprocess.TimeoutExpired, UnicodeDecodeError) as e:
                print("FAIL - %s: %s" % (name, e))
                failures += 1
        doc, ulines = unicode_variant(rng)
        try:
            failures += check_variant(anvil, tmp, "unicode_classes", doc, ulines, [])
        except (RuntimeError, subprocess.TimeoutExpired, UnicodeDecodeError) as e:
            print("FAIL - unicode_classes: %s" % e)
            failures += 1
        print("%s: %d variants on %d lines, %d more on %d lines, regex classes on %d lines, "
              "%d failed checks" % ("PASS" if failures == 0 else "FAIL", len(variants(vocab, merges)),
                                    len(lines), len(extra_variants(vocab, merges, rng)),
                                    len(xlines), len(ulines), failures))
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
