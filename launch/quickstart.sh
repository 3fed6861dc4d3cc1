#!/usr/bin/env bash
# launch/quickstart.sh: the README's first command. Installs what is missing, builds,
# turns the fortune cookie files that Debian's `fortunes` package installs (real
# English text, ~3 MB) into byte-level token shards, and trains the small default model
# (configs/quickstart.yaml) on the CPU for a few minutes, printing the falling loss and
# samples. Extra arguments are config overrides, e.g. `train.steps=100`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh

data=runs/data/fortunes
if [ ! -f "$data/val_000000.bin" ]; then
    mapfile -t files < <(find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.*' | sort)
    ./build/anvil prepare text --out "$data" --doc-sep % "${files[@]}"
fi
exec ./build/anvil train configs/quickstart.yaml "$@"
