#!/usr/bin/env bash
# fuzz_long.sh TARGET [RUNS] - a long libFuzzer run of one target of tests/fuzz (built by
# `scripts/build.sh fuzz` into build/fuzz), at low priority, for RUNS executions (default
# 1000000). The working corpus is build/fuzz/corpus/TARGET (kept between runs, started from
# tests/fuzz/corpus/TARGET, and for dicom the files of ../shared/data/dicom when present, cut to
# max_len); crashes go to build/fuzz/artifacts/TARGET/, the log to build/fuzz/logs/TARGET.log.
# Ends with one line for tests/fuzz/README.md:
#   target=T runs=N seconds=S exec_per_s=E corpus_files=F corpus_kb=K cov=C ft=F artifacts=A
# Settings: -max_len per target (below), -rss_limit_mb=2048, -malloc_limit_mb=1024, -timeout=30.
# Run one or two at a time on a shared machine (`nice -n 10` is applied here).
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:?usage: scripts/fuzz_long.sh TARGET [RUNS]}
runs=${2:-1000000}
bin=build/fuzz/tests/fuzz/fuzz_$t
[ -x "$bin" ] || { echo "fuzz_long: $bin missing: run scripts/build.sh fuzz" >&2; exit 2; }
data=${CXR_DATA_DIR:-../shared/data}
case "$t" in
  dicom) max_len=4096 ;;  # the synthetic images fit whole; real files give their headers
  model) max_len=16384 ;;
  pdu) max_len=20000 ;;
  config) max_len=4096 ;;
  http) max_len=65536 ;;
  *) max_len=2048 ;;
esac
corpus=build/fuzz/corpus/$t art=build/fuzz/artifacts/$t log=build/fuzz/logs/$t.log
mkdir -p "$corpus" "$art" "$(dirname "$log")"
seeds=(tests/fuzz/corpus/"$t")
[ "$t" = dicom ] && [ -d "$data/dicom" ] && seeds+=("$data/dicom")
start=$(date +%s)
set +e
nice -n 10 "$bin" -runs="$runs" -max_len="$max_len" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
  -timeout=30 -print_final_stats=1 -artifact_prefix="$art/" "$corpus" "${seeds[@]}" >"$log" 2>&1
rc=$?
set -e
secs=$(( $(date +%s) - start ))
done_line=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE)' "$log" | tail -1)
execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' || true)
[ -n "$execs" ] || execs=$(echo "$done_line" | grep -oE '^#[0-9]+' | tr -d '#')
cov=$(echo "$done_line" | grep -oE 'cov: [0-9]+' | grep -oE '[0-9]+')
ft=$(echo "$done_line" | grep -oE 'ft: [0-9]+' | grep -oE '[0-9]+')
files=$(find "$corpus" -type f | wc -l)
kb=$(du -sk "$corpus" | cut -f1)
arts=$(find "$art" -type f | wc -l)
echo "target=$t runs=${execs:-0} seconds=$secs exec_per_s=$(( ${execs:-0} / (secs > 0 ? secs : 1) )) corpus_files=$files corpus_kb=$kb cov=${cov:-?} ft=${ft:-?} artifacts=$arts exit=$rc"
