#!/usr/bin/env bash
# launch/quickstart.sh: the README's first command. Installs what is missing, builds,
# trains a 4096-token byte-level BPE tokenizer on the fortune cookie files that
# Debian's `fortunes` package installs (real English text, ~2.5 MB), turns them into
# token shards with it, and trains the small default model (configs/quickstart.yaml)
# on the CPU for a few minutes, printing the falling loss and samples. Extra arguments
# are config overrides, e.g. `train.steps=100`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh

data=runs/data/fortunes-bpe
mapfile -t files < <(find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.*' | sort)
if [ ! -f "$data/tokenizer.json" ]; then
    ./build/anvil tokenizer train --vocab-size 4096 --special '<|endoftext|>' --doc-sep % \
        --out "$data/tokenizer.json" "${files[@]}"
fi
if [ ! -f "$data/val_000000.bin" ]; then
    ./build/anvil prepare text --tokenizer "$data/tokenizer.json" --out "$data" --doc-sep % \
        "${files[@]}"
fi
exec ./build/anvil train configs/quickstart.yaml "$@"
