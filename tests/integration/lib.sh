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

# ---------------------------------------------------------------------------------------------
# Real peers: private network namespace, the daemon, the audit ledger, Orthanc.
# ---------------------------------------------------------------------------------------------

# need_netns: re-runs the calling test script inside a private network namespace (only a
# loopback interface, brought up here), unless it already runs in one. Call it right after
# sourcing lib.sh, before starting anything. Why: storescp 3.6.7 and Orthanc 1.10 cannot bind
# to loopback only (PEERS.md), so a test that starts them must give them a namespace where
# loopback is all there is; the daemon and every client then run in the same namespace, so
# they reach each other on 127.0.0.1 and lib.sh's PID bookkeeping and cleanup work unchanged.
# How: `unshare -n` (no --fork) unshares and execs in the same process, so `exec unshare -n
# bash SCRIPT` keeps the test's PID (ctest's timeout still kills the right process); the
# namespace dies with the last process in it. Namespaces nest (a test run from a namespaced
# harness works), and setpriv (used by start_orthanc) keeps the namespace: it is a property of
# the process, not of the user. Needs root (CAP_SYS_ADMIN): otherwise the test is skipped.
# For a single command instead of a whole script: in_netns CMD... (below).
need_netns() {
  [ "${CXR_IN_NETNS:-}" = 1 ] && return 0
  command -v unshare >/dev/null && command -v ip >/dev/null ||
    skip "needs unshare (util-linux) and ip (iproute2): scripts/deps.sh test"
  unshare -n true 2>/dev/null || skip "cannot create a network namespace (needs root / CAP_SYS_ADMIN)"
  # exec skips the EXIT trap: remove this run's directory first; the re-run makes its own.
  rm -rf "$T"
  trap - EXIT
  exec unshare -n -- env CXR_IN_NETNS=1 bash -c \
    'ip link set lo up || { echo "FAIL: ip link set lo up in the new namespace" >&2; exit 1; }
     exec bash "$0" "$@"' "$0" "$@"
}

# in_netns CMD...: runs CMD in a new private network namespace with loopback up, waits for it
# and returns its status. Everything CMD talks to must run inside CMD (e.g. bash -c '...').
in_netns() {
  unshare -n -- sh -c 'ip link set lo up && exec "$@"' in_netns "$@"
}

# start_daemon NAME [ARGS...]: starts cxrtriaged on a free DICOM port and HTTP port with its
# own state directory $T/NAME.state; config from $DAEMON_CONF (INI text, default below) into
# $T/NAME.conf unless ARGS has --config. Waits for `daemon.ready` and then for the DICOM
# listener to answer C-ECHO. Sets DAEMON_PID DAEMON_PORT DAEMON_HTTP DAEMON_STATE DAEMON_LOG
# DAEMON_AET. The C-ECHO calls as $DAEMON_ECHO_AET (default ECHOSCU: allow it in a config with
# allowed_calling_aets). The PID is stopped by the cleanup trap (or stop_pid). While the daemon itself
# logs `daemon.incomplete ... does not yet listen`, the test is skipped (77), never passed.
DAEMON_CONF_DEFAULT='[triage]
study_quiet_seconds = 1
[report]
mode = shadow
'
start_daemon() {
  local name=$1 a has_conf=0 secs=${DAEMON_READY_SECONDS:-30}; shift
  for a in "$@"; do [ "$a" = --config ] && has_conf=1; done
  DAEMON_PORT=$(free_port); DAEMON_HTTP=$(free_port)
  while [ "$DAEMON_HTTP" = "$DAEMON_PORT" ]; do DAEMON_HTTP=$(free_port); done
  DAEMON_STATE="$T/$name.state"; DAEMON_LOG="$T/$name.log"; DAEMON_AET=CXRTRIAGE
  local conf=()
  if [ $has_conf = 0 ]; then
    printf '%s\n' "${DAEMON_CONF:-$DAEMON_CONF_DEFAULT}" >"$T/$name.conf"
    conf=(--config "$T/$name.conf")
  fi
  start_bg "$name" "$CXRTRIAGED" "${conf[@]}" --port "$DAEMON_PORT" --http-port "$DAEMON_HTTP" \
    --state-dir "$DAEMON_STATE" --foreground "$@"
  DAEMON_PID=$LAST_PID
  local i
  for i in $(seq $((secs * 10))); do
    grep -q "daemon.ready" "$DAEMON_LOG" 2>/dev/null && break
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$DAEMON_LOG"; fail "cxrtriaged exited before daemon.ready"; }
    sleep 0.1
  done
  grep -q "daemon.ready" "$DAEMON_LOG" || fail "cxrtriaged: no daemon.ready within ${secs}s"
  # A build that says it does not listen yet gets 2 s, a real one 10 s.
  local tries=100
  grep -q "daemon.incomplete.*does not yet listen" "$DAEMON_LOG" && tries=20
  for i in $(seq $tries); do
    echoscu -to 2 -ta 2 -aet "${DAEMON_ECHO_AET:-ECHOSCU}" -aec "$DAEMON_AET" 127.0.0.1 "$DAEMON_PORT" \
      >/dev/null 2>&1 && return 0
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$DAEMON_LOG"; fail "cxrtriaged exited after daemon.ready"; }
    sleep 0.1
  done
  grep -q "daemon.incomplete.*does not yet listen" "$DAEMON_LOG" &&
    skip "cxrtriaged does not listen for DICOM yet (it logs daemon.incomplete)"
  fail "cxrtriaged logged daemon.ready but does not answer C-ECHO on 127.0.0.1:$DAEMON_PORT"
}

# audit_json [STATE_DIR]: prints the audit ledger, one JSON object per line.
audit_json() {
  "$CXRTRIAGE" audit list --state-dir "${1:-$DAEMON_STATE}" --format json --limit 0
}

# wait_rows N [SECONDS]: waits until the ledger holds at least N rows, all in a final state
# (classified, skipped, failed); fails on more than N rows or on the timeout. Leaves the
# ledger in $T/audit.json.
wait_rows() {
  local want=$1 secs=${2:-60} st="" i
  for i in $(seq $((secs * 5))); do
    if audit_json >"$T/audit.json" 2>"$T/audit.err"; then
      st=$(/usr/bin/python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
fin = sum(r.get("state") in ("classified", "skipped", "failed") for r in rows)
print(len(rows), fin)' "$T/audit.json")
      set -- "$want" $st
      [ "$2" -gt "$want" ] && fail "audit ledger has $2 rows, wanted $want"
      [ "$2" -eq "$want" ] && [ "$3" -eq "$want" ] && return 0
    fi
    sleep 0.2
  done
  cat "$T/audit.err" >&2 || true
  fail "wanted $want final rows within ${secs}s; have (rows final): ${st:-none}"
}

# start_orthanc [DAEMON_PORT]: starts Orthanc (Debian package) as the test PACS, with its
# config, storage and index in $T/orthanc (owned by the orthanc user; $T is opened to o+x so
# that user can reach them). It knows the daemon as the modality `cxrtriage` (AE CXRTRIAGE on
# 127.0.0.1:DAEMON_PORT, default $DAEMON_PORT). Runs it with setpriv, which execs, so $! is
# Orthanc itself (runuser left Orthanc defunct on SIGTERM; PEERS.md). Waits for the REST API.
# Sets ORTHANC_PID ORTHANC_URL ORTHANC_DICOM. Needs need_netns: Orthanc listens on all
# interfaces. Never `wait` on ORTHANC_PID outside stop_pid (it only ends when told).
start_orthanc() {
  local dport=${1:-${DAEMON_PORT:-11112}} http secs=${ORTHANC_READY_SECONDS:-40} i
  [ -x /usr/sbin/Orthanc ] || skip "needs Orthanc: scripts/deps.sh test"
  [ "$(id -u)" = 0 ] || skip "start_orthanc needs root (it runs Orthanc as the orthanc user)"
  id orthanc >/dev/null 2>&1 || skip "needs the orthanc user (Debian package orthanc)"
  http=$(free_port); ORTHANC_DICOM=$(free_port)
  while [ "$ORTHANC_DICOM" = "$http" ]; do ORTHANC_DICOM=$(free_port); done
  mkdir -p "$T/orthanc/storage" "$T/orthanc/index"
  cat >"$T/orthanc/config.json" <<JSON
{ "Name": "TEST_PACS", "StorageDirectory": "$T/orthanc/storage", "IndexDirectory": "$T/orthanc/index",
  "Plugins": [], "HttpPort": $http, "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
  "DicomAet": "ORTHANC", "DicomPort": $ORTHANC_DICOM, "DicomCheckCalledAet": false,
  "DicomAlwaysAllowStore": true, "DicomModalitiesInDatabase": false, "SaveJobs": false,
  "StorageCompression": false, "DicomScpTimeout": 30,
  "DicomModalities": { "cxrtriage": { "AET": "CXRTRIAGE", "Host": "127.0.0.1", "Port": $dport } } }
JSON
  chown -R orthanc:orthanc "$T/orthanc"
  chmod o+x "$T"
  start_bg orthanc setpriv --reuid=orthanc --regid=orthanc --init-groups \
    /usr/sbin/Orthanc "$T/orthanc/config.json"
  ORTHANC_PID=$LAST_PID
  ORTHANC_URL="http://127.0.0.1:$http"
  for i in $(seq $((secs * 10))); do
    curl -sf -m 2 "$ORTHANC_URL/system" >/dev/null 2>&1 && return 0
    kill -0 "$ORTHANC_PID" 2>/dev/null || fail "Orthanc exited while starting"
    sleep 0.1
  done
  fail "Orthanc's REST API did not answer within ${secs}s"
}

# orthanc_load FILE...: uploads files to Orthanc (POST /instances); their Orthanc instance IDs
# go to $T/orthanc_ids, one a line.
orthanc_load() {
  local f
  : >"$T/orthanc_ids"
  for f in "$@"; do
    curl -sf -m 30 --data-binary "@$f" "$ORTHANC_URL/instances" >"$T/orthanc_up.json" ||
      fail "Orthanc refused $f"
    /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ID"])' \
      "$T/orthanc_up.json" >>"$T/orthanc_ids"
  done
}

# orthanc_send_to_daemon FILE...: loads the files into Orthanc, then has it push them to the
# daemon the way a PACS routes (POST /modalities/cxrtriage/store, synchronous). Fails unless
# Orthanc reports every instance sent. Orthanc's answer is left in $T/orthanc_store.json.
orthanc_send_to_daemon() {
  orthanc_load "$@"
  local body
  body=$(/usr/bin/python3 -c 'import json,sys
print(json.dumps({"Resources": [l.strip() for l in open(sys.argv[1]) if l.strip()], "Synchronous": True}))' \
    "$T/orthanc_ids")
  curl -sf -m 120 -X POST --data "$body" "$ORTHANC_URL/modalities/cxrtriage/store" \
    >"$T/orthanc_store.json" || fail "Orthanc could not send to the daemon (see its log)"
  /usr/bin/python3 -c 'import json,sys
r = json.load(open(sys.argv[1]))
sys.exit(0 if r.get("FailedInstancesCount", 1) == 0 and r.get("InstancesCount") == int(sys.argv[2]) else 1)' \
    "$T/orthanc_store.json" "$#" || { cat "$T/orthanc_store.json"; fail "Orthanc's store did not send all $# instances"; }
}

# scu NAME [STORESCU OPTIONS...] -- PATHS...: sends to the daemon with storescu (verbose, log in
# $T/NAME.scu, bounded timeouts, called AE $DAEMON_AET unless OPTIONS give -aec); returns
# storescu's status. Host and port go before the paths (storescu wants them before +sd DIR).
# scu_successes NAME...: how many C-STORE answers were Success in those logs.
scu() {
  local name=$1 opts=() ; shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  local aec=(-aec "$DAEMON_AET") o
  for o in "${opts[@]}"; do [ "$o" = -aec ] && aec=(); done
  timeout 170 storescu -v -to 10 -ta 10 -td 60 "${aec[@]}" "${opts[@]}" \
    127.0.0.1 "$DAEMON_PORT" "$@" >"$T/$name.scu" 2>&1
}
scu_successes() {
  local n=0 f
  for f in "$@"; do n=$((n + $(grep -c "Received Store Response (Success)" "$T/$f.scu" || true))); done
  echo "$n"
}

# new_uids FILE...: gives copies of the shared data set's files (which share SOP Instance UIDs
# across encodings) fresh SOP Instance UIDs in place, keeping their transfer syntax. Use on
# copies in $T only.
new_uids() {
  chmod u+w "$@"
  dcmodify -q -nb -gin "$@" >/dev/null
}

# ts_profiles FILE: writes a storescu association config (storescu -xf FILE NAME) with one
# profile per transfer syntax (ILE ELE EBE DEFL JPEGB JPEGE JPEGLL JLSL JLSNL J2KL J2K RLE),
# each proposing exactly that syntax for CR, DX and SC images. With -xe/-xb/-xs... storescu
# proposes several and the SCP picks; with a profile it sends in that syntax or not at all.
ts_profiles() {
  local out=$1 e name
  local -a list=(ILE:1.2.840.10008.1.2 ELE:1.2.840.10008.1.2.1 EBE:1.2.840.10008.1.2.2
    DEFL:1.2.840.10008.1.2.1.99 JPEGB:1.2.840.10008.1.2.4.50 JPEGE:1.2.840.10008.1.2.4.51
    JPEGLL:1.2.840.10008.1.2.4.70 JLSL:1.2.840.10008.1.2.4.80 JLSNL:1.2.840.10008.1.2.4.81
    J2KL:1.2.840.10008.1.2.4.90 J2K:1.2.840.10008.1.2.4.91 RLE:1.2.840.10008.1.2.5)
  {
    echo "[[TransferSyntaxes]]"
    for e in "${list[@]}"; do printf '[TS_%s]\nTransferSyntax1 = %s\n' "${e%%:*}" "${e#*:}"; done
    echo "[[PresentationContexts]]"
    for e in "${list[@]}"; do
      name=${e%%:*}
      printf '[PC_%s]\n' "$name"
      printf 'PresentationContext1 = ComputedRadiographyImageStorage\\TS_%s\n' "$name"
      printf 'PresentationContext2 = DigitalXRayImageStorageForPresentation\\TS_%s\n' "$name"
      printf 'PresentationContext3 = SecondaryCaptureImageStorage\\TS_%s\n' "$name"
    done
    echo "[[Profiles]]"
    for e in "${list[@]}"; do printf '[%s]\nPresentationContexts = PC_%s\n' "${e%%:*}" "${e%%:*}"; done
  } >"$out"
}

# check_scores FILE...: the ledger ($T/audit.json, from wait_rows) against
# `cxrtriage classify --json` on the same files: each file's SOP Instance UID has exactly one
# row; where classify scores the file, the row is classified with the same model digest, all
# four scores within 1e-6 and a triage; where classify skips it, the row is skipped with a
# gate_reason; where classify cannot read it, the row is failed with an error.
check_scores() {
  local f
  "$CXRTRIAGE" classify --json "$@" >"$T/classify.json" 2>"$T/classify.err" || true
  : >"$T/uids.tsv"
  for f in "$@"; do
    printf '%s\t%s\n' "$f" "$(dcmdump -q +P 0008,0018 "$f" | sed -n 's/.*\[\(.*\)\].*/\1/p' | head -n1)" \
      >>"$T/uids.tsv"
  done
  /usr/bin/python3 - "$T/audit.json" "$T/classify.json" "$T/uids.tsv" <<'PY' || fail "ledger and classify disagree"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cls = {}
for l in open(sys.argv[2]):
    if l.strip():
        o = json.loads(l)
        cls[o["file"]] = o
uids = [l.rstrip("\n").split("\t") for l in open(sys.argv[3]) if l.strip()]
bad = []
for f, uid in uids:
    mine = [r for r in rows if r.get("sop_instance_uid") == uid]
    c = cls.get(f)
    if len(mine) != 1:
        bad.append(f"{f}: {len(mine)} rows for SOP Instance UID {uid}")
        continue
    r = mine[0]
    if c is None or "error" in c:
        if r.get("state") != "failed" or not r.get("error"):
            bad.append(f"{f}: classify cannot read it, row is {r.get('state')} error={r.get('error')!r}")
    elif c["verdict"] == "skipped":
        if r.get("state") != "skipped" or not r.get("gate_reason") or r.get("scores"):
            bad.append(f"{f}: classify skips it ({c['reason']}), row is {r.get('state')} "
                       f"gate_reason={r.get('gate_reason')!r}")
    else:
        s = r.get("scores") or {}
        if r.get("state") != "classified":
            bad.append(f"{f}: row is {r.get('state')} ({r.get('error') or r.get('gate_reason')}), classify scores it")
            continue
        if r.get("model_digest") != c["model_digest"]:
            bad.append(f"{f}: model digest {r.get('model_digest')} != classify's {c['model_digest']}")
        if r.get("triage") not in ("urgent", "routine", "normal"):
            bad.append(f"{f}: triage {r.get('triage')!r}")
        if set(s) != set(c["scores"]):
            bad.append(f"{f}: classes {sorted(s)} != {sorted(c['scores'])}")
        for k, v in c["scores"].items():
            if k in s and abs(float(s[k]) - v) > 1e-6:
                bad.append(f"{f}: {k} daemon {s[k]} classify {v}")
for b in bad:
    print("  " + b, file=sys.stderr)
print(f"check_scores: {len(uids)} files, {len(bad)} disagreements", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}
