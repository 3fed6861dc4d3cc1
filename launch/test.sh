#!/usr/bin/env bash
# launch/test.sh: the README's second command. Installs what is missing (including the
# test-only python3-torch), builds, and runs every meson test suite that needs no GPU.
# Extra arguments go to `meson test` (e.g. --suite unit).
set -euo pipefail
cd "$(dirname "$0")/.."
ANVIL_SETUP_TEST_DEPS=1 bash launch/setup.sh
# Hugging Face `tokenizers` (PyPI) for the tokenizer exactness tests, installed for the
# first python3 on PATH (the one those tests run with). Pinned: exactness is checked
# against one known version.
if ! python3 -c 'import tokenizers, sys; sys.exit(tokenizers.__version__ != "0.23.3")' 2>/dev/null; then
    python3 -m pip install -q --disable-pip-version-check "tokenizers==0.23.3"
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
exec meson test -C build --print-errorlogs "$@"
