"""The tiny training corpus of the multi-rank and e2e tests, shared by them.

prepare_corpus(anvil, tmp, words): a repetitive text ("wordN of line M." with N and M
cycling through 97 and 13 values) written to tmp/t.txt and tokenized byte-level by
`anvil prepare text` into tmp/data, with no validation split. Returns the shard
pattern for data.train (tmp/data/train_*.bin). Standard library only, so both the
pyenv python3 and Debian's /usr/bin/python3 can import it.
"""
import os
import subprocess


def prepare_corpus(anvil, tmp, words=4000):
    text = os.path.join(tmp, "t.txt")
    with open(text, "w") as f:
        f.write(" ".join(f"word{(i * 7919) % 97} of line {i % 13}." for i in range(words)))
    subprocess.run([anvil, "prepare", "text", "--out", os.path.join(tmp, "data"),
                    "--val-frac", "0", text], check=True, capture_output=True)
    return os.path.join(tmp, "data", "train_*.bin")
