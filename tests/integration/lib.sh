# lib.sh - the integration-test harness, sourced by every tests/integration/test_*.sh.
#
# Gives each test a private temporary directory, free loopback ports, helpers to start our
# programs in the background and wait until they are ready, and a trap that always stops what
# the test started (by PID) and removes the directory, whether the test passes, fails or is
# interrupted. Exit 77 means skipped: ctest reports it as such, never as passed.
set -euo pipefail

: "${CXR_BUILD_DIR:?run through ctest (CXR_BUILD_DIR not set)}"
: "${CXR_SOURCE_DIR:?run through ctest (CXR_SOURCE_DIR not set)}"
CXR_DATA_DIR=${CXR_DATA_DIR:-}
CXRTRIAGED="$CXR_BUILD_DIR/daemon/cxrtriaged"
CXRTRIAGE="$CXR_BUILD_DIR/cli/cxrtriage"
CXRTRAIN="$CXR_BUILD_DIR/trainer/cxrtriage-train"
export TCP_NODELAY=1 # DCMTK peers: no Nagle delay (see PEERS.md)

T=$(mktemp -d "${TMPDIR:-/tmp}/cxr-it.XXXXXX")
_pids=()

_cleanup() {
  local rc=$?
  for pid in "${_pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
    for f in "$T"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 40 "$f"; }; done
  fi
  rm -rf "$T"
  exit $rc
}
trap _cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $*" >&2; exit 1; }
# skip REASON: exit 77 (ctest's "skipped") printing why. Used only when a prerequisite is
# missing: the shared data set beside the checkout (need_data) or a tool or Python package that
# scripts/deps.sh installs; CI runs deps.sh and has the data, so there nothing is skipped.
skip() { echo "SKIPPED: $*"; exit 77; }
ok() { echo "ok - $*"; }

# need_data SUBDIR: skip (77) with the reason when the shared data set is absent.
need_data() {
  [ -n "$CXR_DATA_DIR" ] && [ -d "$CXR_DATA_DIR/$1" ] ||
    skip "needs the shared data set at '${CXR_DATA_DIR:-<unset>}/$1' (set -DCXR_DATA_DIR)"
}

# free_port: prints a TCP port that was free on 127.0.0.1 a moment ago.
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_bg NAME CMD...: starts CMD in the background, output in $T/NAME.log; sets LAST_PID.
start_bg() {
  local name=$1; shift
  "$@" >"$T/$name.log" 2>&1 &
  LAST_PID=$!
  _pids+=("$LAST_PID")
}

# wait_log FILE PATTERN [SECONDS]: waits until FILE contains PATTERN (grep -E).
wait_log() {
  local file=$1 pat=$2 secs=${3:-20}
  for _ in $(seq $((secs * 10))); do
    grep -qE "$pat" "$file" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "timed out after ${secs}s waiting for /$pat/ in $file"
}

# stop_pid PID [SIGNAL] [SECONDS]: sends SIGNAL (TERM), waits for the exit; sets STOP_RC.
# (Not in $(...): wait only works on children of this shell.)
stop_pid() {
  local pid=$1 sig=${2:-TERM} secs=${3:-10}
  STOP_RC=0
  kill -"$sig" "$pid"
  for _ in $(seq $((secs * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && fail "pid $pid did not exit within ${secs}s of SIG$sig"
  wait "$pid" || STOP_RC=$?
}

# expect_rc WANT CMD...: runs CMD, output in $T/out, fails unless it exits WANT.
expect_rc() {
  local want=$1 rc=0; shift
  "$@" >"$T/out" 2>&1 || rc=$?
  [ "$rc" -eq "$want" ] || { cat "$T/out"; fail "'$*' exited $rc, wanted $want"; }
}
