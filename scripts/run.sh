#!/usr/bin/env bash
# run.sh - installs what is missing, builds, and runs the daemon in the foreground with its
# embedded defaults (DICOM 127.0.0.1:11112, HTTP 127.0.0.1:8080, state under ./var, the bundled
# model). Extra arguments go to cxrtriaged (e.g. --config FILE, --port 4242). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
scripts/build.sh release >&2
exec build/release/daemon/cxrtriaged --foreground "$@"
