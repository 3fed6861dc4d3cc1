#!/usr/bin/env bash
# launch/test.sh: the README's second command. Installs what is missing (including the
# test-only python3-torch), builds, and runs every meson test suite that needs no GPU.
# Extra arguments go to `meson test` (e.g. --suite unit).
set -euo pipefail
cd "$(dirname "$0")/.."
ANVIL_SETUP_TEST_DEPS=1 bash launch/setup.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
exec meson test -C build --print-errorlogs "$@"
