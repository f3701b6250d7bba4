# report_lib.sh - helpers for the daemon's report-delivery tests (test_daemon_reports.sh,
# test_daemon_report_faults.sh), sourced after lib.sh: real receivers (webhook_receiver.py,
# mllp_peer.py) on free loopback ports, tracked by PID through lib.sh's start_bg; studies made
# from the shared data set with fresh UIDs; reading the outbox and the receiver's request log.

TOOLS="$CXR_SOURCE_DIR/tests/tools"
SRC_A="$CXR_DATA_DIR/dicom/cxr_siim_8bit_explicit_le.dcm"
SRC_B="$CXR_DATA_DIR/dicom/cxr_rg1_15bit_mono1_half_explicit_le.dcm"

need_report_tools() {
  need_data dicom
  command -v storescu >/dev/null || skip "storescu (Debian dcmtk) is not installed: scripts/deps.sh test"
  command -v dcmodify >/dev/null || skip "dcmodify (Debian dcmtk) is not installed: scripts/deps.sh test"
  command -v jq >/dev/null || skip "jq is not installed (scripts/deps.sh test)"
  /usr/bin/python3 -c 'import hl7.mllp' 2>/dev/null || skip "python3-hl7 is not installed (scripts/deps.sh test)"
}

# wait_file FILE [SECONDS]
wait_file() {
  local f=$1 secs=${2:-10}
  for _ in $(seq $((secs * 20))); do [ -f "$f" ] && return 0; sleep 0.05; done
  fail "timed out waiting for $f"
}

# hook NAME [ARGS...]: a webhook receiver logging to $T/NAME.jsonl. Sets HOOK_PORT HOOK_PID HOOK_LOG.
hook() {
  local name=$1; shift
  HOOK_PORT=$(free_port)
  HOOK_LOG="$T/$name.jsonl"
  rm -f "$T/$name.ready"
  start_bg "$name" /usr/bin/python3 "$TOOLS/webhook_receiver.py" --port "$HOOK_PORT" \
    --log "$HOOK_LOG" --ready "$T/$name.ready" --lifetime 600 "$@"
  HOOK_PID=$LAST_PID
  wait_file "$T/$name.ready"
}

# mllp NAME MODE [PORT]: an MLLP peer answering MODE (AA, AE, ...) logging to $T/NAME.jsonl.
# Sets MLLP_PORT MLLP_PID MLLP_LOG.
mllp() {
  local name=$1 mode=$2
  MLLP_PORT=${3:-$(free_port)}
  MLLP_LOG="$T/$name.jsonl"
  rm -f "$T/$name.ready"
  start_bg "$name" /usr/bin/python3 "$TOOLS/mllp_peer.py" --port "$MLLP_PORT" --mode "$mode" \
    --log "$MLLP_LOG" --ready "$T/$name.ready" --lifetime 600
  MLLP_PID=$LAST_PID
  wait_file "$T/$name.ready"
}

# make_study DIR N [FILE...]: N copies of the FILEs (cycled; default SRC_A) in DIR, made into
# one new study: one fresh Study Instance UID, fresh Series and SOP Instance UIDs, the same
# patient (STUDY_PATIENT, default E2E-0001) and accession, and a positive UTC offset: the RG1
# file's "-0400" is valid HL7 (DTM ...[+/-ZZZZ]) but npm hl7v2 1.8.0 strict parsing strips
# every '-' from a date (hl7v2-dictionary toHL7DateTime) and then rejects it. Sets STUDY_UID.
make_study() {
  local dir=$1 n=$2 i files=()
  shift 2
  local srcs=("$@")
  [ ${#srcs[@]} -gt 0 ] || srcs=("$SRC_A")
  mkdir -p "$dir"
  for i in $(seq 1 "$n"); do
    cp "${srcs[$(((i - 1) % ${#srcs[@]}))]}" "$dir/img$i.dcm"
    files+=("$dir/img$i.dcm")
  done
  chmod u+w "${files[@]}"
  dcmodify -q -nb -gst "${files[0]}" >/dev/null
  STUDY_UID=$(dcmdump -q +P StudyInstanceUID "${files[0]}" | sed -n 's/.*\[\(.*\)\].*/\1/p' | head -n1)
  [ -n "$STUDY_UID" ] || fail "make_study: no Study Instance UID in ${files[0]}"
  dcmodify -q -nb -i "StudyInstanceUID=$STUDY_UID" -i "PatientID=${STUDY_PATIENT:-E2E-0001}" \
    -i "PatientName=E2E^Test" -i "TimezoneOffsetFromUTC=+0200" -i "AccessionNumber=ACC${STUDY_UID: -8}" -gse -gin "${files[@]}" >/dev/null
}

# outbox_json [ARGS...]: `cxrtriage outbox list --format json` of $DAEMON_STATE as one JSON array.
outbox_json() {
  "$CXRTRIAGE" outbox list --state-dir "${OUTBOX_STATE:-$DAEMON_STATE}" --format json "$@" | jq -s 'if length == 1 and (.[0] | type) == "array" then .[0] else . end'
}

# requests LOG: the receiver's request records as one JSON array.
requests() { grep '"kind": "request"' "$1" | jq -s . ; }

# wait_jq SECONDS WHAT CMD FILTER: waits until `CMD | jq -e FILTER` holds (CMD is eval'ed).
wait_jq() {
  local secs=$1 what=$2 cmd=$3 filter=$4 i
  for i in $(seq $((secs * 5))); do
    eval "$cmd" 2>/dev/null | jq -e "$filter" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  eval "$cmd" 2>&1 | head -c 3000
  fail "timed out after ${secs}s: $what"
}

# msh10 ER7: MSH-10 of an ORU (segments ended by CR).
msh10() { printf '%s' "$1" | tr '\r' '\n' | awk -F'|' '/^MSH\|/ { print $10; exit }'; }
