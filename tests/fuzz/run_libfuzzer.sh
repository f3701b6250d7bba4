#!/usr/bin/env bash
# run_libfuzzer.sh NAME [SECONDS] - the bounded libFuzzer run of one fuzz target in the test
# suite (registered as fuzz_libfuzzer_NAME in the sanitizer build, tests/fuzz/CMakeLists.txt).
# Builds every target with clang + libFuzzer + ASan + UBSan in build/fuzz, the tree of
# `scripts/build.sh fuzz` (same options, under a lock: parallel tests and a by-hand build share
# it, since the clang build of the modules takes minutes here), then runs fuzz_NAME for SECONDS
# (default 4, or CXR_FUZZ_SECONDS) of new inputs from its seeds, tests/fuzz/corpus/NAME (and for
# dicom the files of ../shared/data/dicom when present, cut to max_len). New inputs go to a
# temporary directory that is removed afterwards. A crash, leak, timeout or out-of-memory fails
# the test; its input is kept in BUILD_DIR/fuzz-artifacts/NAME/ (copy it into corpus/NAME/ as a
# regression input once fixed). Exit 77 (skipped) without clang or its fuzzer runtime.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
name=${1:?usage: run_libfuzzer.sh NAME [SECONDS]}
secs=${2:-${CXR_FUZZ_SECONDS:-4}}
build=${CXR_BUILD_DIR:?run through ctest (CXR_BUILD_DIR)}
data=${CXR_DATA_DIR:-$src/../shared/data}
command -v clang >/dev/null && command -v clang++ >/dev/null ||
  { echo "SKIPPED: needs clang (scripts/deps.sh test)"; exit 77; }
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){(void)d;(void)n;return 0;}\n' >"$probe/p.c"
clang -fsanitize=fuzzer "$probe/p.c" -o "$probe/p" 2>/dev/null ||
  { echo "SKIPPED: clang has no libFuzzer runtime (libclang-rt-14-dev)"; exit 77; }

fb="$src/build/fuzz"
mkdir -p "$fb"
(
  flock 9
  cmake -S "$src" -B "$fb" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_BUILD_TYPE=Debug -DCXR_FUZZ=ON -DCXR_WERROR=OFF >/dev/null
  nice cmake --build "$fb" --target fuzz_targets -j 2 >"$fb/build.log" 2>&1 ||
    { tail -30 "$fb/build.log"; exit 1; }
) 9>"$fb/.build.lock"

case "$name" in
  dicom) max_len=4096 ;;
  model) max_len=16384 ;;
  pdu) max_len=20000 ;;
  config) max_len=4096 ;;
  http) max_len=65536 ;;
  *) max_len=2048 ;;
esac
seeds=("$src/tests/fuzz/corpus/$name")
[ "$name" = dicom ] && [ -d "$data/dicom" ] && seeds+=("$data/dicom")
art="$build/fuzz-artifacts/$name"
mkdir -p "$probe/new" "$art"
set +e
"$fb/tests/fuzz/fuzz_$name" -max_total_time="$secs" -max_len="$max_len" -rss_limit_mb=2048 \
  -malloc_limit_mb=1024 -timeout=30 -print_final_stats=1 -artifact_prefix="$art/" \
  "$probe/new" "${seeds[@]}" >"$probe/log" 2>&1
rc=$?
set -e
grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)' "$probe/log" | tail -25
execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$probe/log" | grep -oE '[0-9]+$' || echo 0)
echo "fuzz_$name: $execs executions in ${secs} s, exit $rc"
if [ "$rc" -ne 0 ] || [ "$execs" -eq 0 ]; then
  echo "FAILED: fuzz_$name found a problem (input in $art/) or did not run"
  exit 1
fi
echo "1 passed, 0 failed"
