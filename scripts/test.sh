#!/usr/bin/env bash
# test.sh - installs what is missing, builds, and runs the whole test suite through ctest:
# the release build (with the static checks), then everything again under ASan + UBSan.
# Tests needing ../shared/data report themselves skipped (with the reason) when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build test
jobs=$(nproc)
scripts/build.sh release
ctest --test-dir build/release --output-on-failure -j "$jobs" --timeout 900
scripts/build.sh asan
ctest --test-dir build/asan --output-on-failure -j "$jobs" --timeout 900
