#!/usr/bin/env bash
# build.sh - configures and builds one build tree.
#   scripts/build.sh release|debug|asan   -> build/<name>
#   scripts/build.sh fuzz                 -> build/fuzz: clang, every module instrumented for
#                                            libFuzzer + ASan + UBSan, only the fuzz targets
#                                            (tests/fuzz/README.md)
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-release}
case "$kind" in
  release) opts=(-DCMAKE_BUILD_TYPE=Release) ;;
  debug) opts=(-DCMAKE_BUILD_TYPE=Debug) ;;
  asan) opts=(-DCMAKE_BUILD_TYPE=Debug -DCXR_SANITIZE=ON) ;;
  fuzz) opts=(-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug
              -DCXR_FUZZ=ON -DCXR_WERROR=OFF) ;;  # clang warns where gcc does not
  *) echo "build.sh: unknown build '$kind' (release, debug, asan, fuzz)" >&2; exit 2 ;;
esac
cmake -S . -B "build/$kind" "${opts[@]}" >/dev/null
if [ "$kind" = fuzz ]; then
  cmake --build "build/$kind" -j "$(nproc)" --target fuzz_targets
else
  cmake --build "build/$kind" -j "$(nproc)"
fi
