#!/usr/bin/env bash
# launch/setup.sh: install what anvil needs from Debian's packages, then configure and
# build it into build/. Idempotent: installs only what is missing, reconfigures only
# when needed. Works on a fresh Debian 12 machine as root (or with sudo), with no
# terminal (CI).
#
# Packages: meson + ninja + pkg-config (build), Open MPI (required from the start),
# libfyaml (configs), HDF5 for Open MPI + h5dump (checkpoints), PCRE2 + jansson + utf8proc (tokenizer), OpenBLAS built for OpenMP (matmuls), fortunes (the default corpus
# of real English text), python3-torch + numpy (the PyTorch reference in
# tests/reference, for /usr/bin/python3; h5py reads checkpoints in the tests).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential meson ninja-build pkg-config libopenmpi-dev openmpi-bin
          libfyaml-dev libopenblas-openmp-dev libpcre2-dev libjansson-dev libutf8proc-dev
          libhdf5-openmpi-dev hdf5-tools fortunes fortunes-min)
if [ "${ANVIL_SETUP_TEST_DEPS:-0}" = 1 ]; then
    packages+=(python3-torch python3-numpy python3-h5py-serial)
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The CUDA toolkit's usual home is not on PATH by default; with nvcc found, meson
# builds the cuda backend (the `cuda` feature is auto). No toolkit: a cpu-only build.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH="/usr/local/cuda/bin:$PATH"
fi

if [ ! -f build/build.ninja ]; then
    meson setup build --buildtype=release >/dev/null
fi
# quiet when it works; the compiler's messages when it does not
if ! ninja -C build > build/ninja.log 2>&1; then
    grep -v '^\[' build/ninja.log | tail -40 >&2
    echo "setup: build failed (full log: build/ninja.log)" >&2
    exit 1
fi
echo "setup: built build/anvil"
