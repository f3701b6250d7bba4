#!/usr/bin/env bash
# build.sh - configures and builds one build tree.
#   scripts/build.sh release|debug|asan   -> build/<name>
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-release}
case "$kind" in
  release) opts=(-DCMAKE_BUILD_TYPE=Release) ;;
  debug) opts=(-DCMAKE_BUILD_TYPE=Debug) ;;
  asan) opts=(-DCMAKE_BUILD_TYPE=Debug -DCXR_SANITIZE=ON) ;;
  *) echo "build.sh: unknown build '$kind' (release, debug, asan)" >&2; exit 2 ;;
esac
cmake -S . -B "build/$kind" "${opts[@]}" >/dev/null
cmake --build "build/$kind" -j "$(nproc)"
