#!/usr/bin/env bash
# run_libfuzzer.sh [BUILD_DIR] [RUNS] - builds tests/fuzz/fuzz_dicom.c with clang + libFuzzer
# (ASan + UBSan) in BUILD_DIR/fuzz-clang and runs it for RUNS executions over the seed corpus
# (tests/fuzz/corpus/dicom and ../shared/data/dicom when present). New inputs go to a temporary
# directory that is removed afterwards. Exit 77 (skipped) without clang or its fuzzer runtime.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-${CXR_BUILD_DIR:?give BUILD_DIR or run through ctest}}
runs=${2:-${CXR_FUZZ_RUNS:-3000}}
data=${CXR_DATA_DIR:-$src/../shared/data}
command -v clang >/dev/null && command -v clang++ >/dev/null ||
  { echo "SKIPPED: needs clang (scripts/deps.sh test)"; exit 77; }
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){(void)d;(void)n;return 0;}\n' >"$probe/p.c"
clang -fsanitize=fuzzer "$probe/p.c" -o "$probe/p" 2>/dev/null ||
  { echo "SKIPPED: clang has no libFuzzer runtime (libclang-rt-14-dev)"; exit 77; }

fb="$build/fuzz-clang"
cmake -S "$src" -B "$fb" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=Debug -DCXR_FUZZ=ON -DCXR_WERROR=OFF -DCXR_DATA_DIR="$data" >/dev/null
cmake --build "$fb" --target fuzz_dicom -j 2 >/dev/null
seeds=("$src/tests/fuzz/corpus/dicom")
[ -d "$data/dicom" ] && seeds+=("$data/dicom" "$data/dicom/bad")
mkdir "$probe/new"
mkdir -p "$build/fuzz-artifacts"
# Big seeds are cut to max_len: they become truncated-file cases, and runs stay fast.
# A crash or leak fails the test; its input is kept in BUILD_DIR/fuzz-artifacts/.
"$fb/dicom/fuzz_dicom" -runs="$runs" -max_len=131072 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
  -timeout=60 -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/" \
  "$probe/new" "${seeds[@]}" 2>&1 | grep -vE '^#[0-9]+\s+(NEW|REDUCE)' | tail -25
echo "1 passed, 0 failed"
