#!/usr/bin/env bash
# hostile_peers.sh [--quick|--long] - hostile and slow DICOM peers against the real daemon
# (issue 13 point 3), on 127.0.0.1. The PDU-level peers are tests/tools/dicom_pdu_peer.py (raw
# socket, PDUs written by hand); normal traffic is DCMTK's storescu/echoscu.
#  1. Stalls: a peer that connects and says nothing, one that stops in the middle of its
#     A-ASSOCIATE-RQ (both ended by [dicom] acse_timeout), one that stops in the middle of a
#     P-DATA-TF PDU and one that stops in the middle of a C-STORE data set (both ended by
#     [dicom] dimse_timeout: DCMTK's socket timeouts, dicom/adapter/dcm_scp.cpp). Each is
#     released within its timeout + STALL_MARGIN s; the time is measured and printed.
#  2. Limits: with max_associations associations held open (raw peers, admitted), more attempts
#     (storescu, and a raw A-ASSOCIATE-RQ) get an A-ASSOCIATE-RJ "rejected transient, local
#     limit exceeded", logged; the held ones then each store an instance (Success) and release;
#     then max_associations + 4 silent connections (every listener thread busy): one more is
#     closed at once and logged, and the daemon serves again after acse_timeout; then a burst
#     of more concurrent storescu than the limit: each one is either refused at association (an
#     A-ASSOCIATE-RJ, or closed at once while every thread is busy) or stores everything.
#  3. Malformed PDUs: wrong PDU length, truncated PDU then close, PDU length 0xFFFFFFFF (before
#     and after association), unknown PDU type (before and after association), garbage right
#     after an A-ASSOCIATE-RQ, a P-DATA-TF before any association, 5000 and 15000 presentation
#     contexts (one fits in 1 MiB, one does not), AE titles of control bytes, a 4000-byte user
#     information sub-item, a C-STORE whose peer closes half-way through the data set.
#  After every case: the event is in the daemon's log and in the audit ledger (its text
#  asserted), a normal storescu send still gets Success, no *.part file is left in spool/tmp,
#  and the broken instance has neither a spool file nor a ledger row. At the end every instance
#  that got Success has exactly one final row (classified), and `cxrtriage audit verify` passes.
# Quick: acse 4 s, dimse 5 s, limit 3, one round (about a minute). Long: the shipped defaults
# (acse 30 s, dimse 30 s), limit 4, 5 rounds of the malformed cases, a burst of 12 storescu.
# Last line: hostile_ok=yes|no (exit 0 only with yes).
RELIAB_FLAG=hostile_ok
. "$(dirname "$0")/faults_lib.sh" "$@"
need_data dicom
for t in storescu echoscu dcmodify dcmdump jq; do
  command -v $t >/dev/null || skip "$t is not installed (scripts/deps.sh test)"
done

PEER=(/usr/bin/python3 "$CXR_SOURCE_DIR/tests/tools/dicom_pdu_peer.py")
SRC="$CXR_DATA_DIR/dicom/cxr_siim_8bit_explicit_le.dcm"
if [ "$RELIAB_MODE" = long ]; then
  ACSE=30 DIMSE=30 IDLE=60 LIMIT=4 ROUNDS=5 BURST=12
else
  ACSE=4 DIMSE=5 IDLE=30 LIMIT=3 ROUNDS=1 BURST=6
fi
STALL_MARGIN=${STALL_MARGIN:-3} # seconds beyond the configured timeout (poll granularity, load)
echo "mode=$RELIAB_MODE acse_timeout=$ACSE dimse_timeout=$DIMSE idle_timeout=$IDLE max_associations=$LIMIT rounds=$ROUNDS"

DAEMON_CONF="[triage]
study_quiet_seconds = 1
[report]
mode = shadow
[dicom]
max_associations = $LIMIT
acse_timeout = $ACSE
dimse_timeout = $DIMSE
idle_timeout = $IDLE
"
start_daemon hostile
SPOOL="$DAEMON_STATE/spool"
[ -d "$SPOOL/tmp" ] && [ -d "$SPOOL/in" ] || fail "no spool/tmp and spool/in under $DAEMON_STATE"

# A pool of fresh instances (one dcmodify for all): next_file sets FILE to an unused one.
POOL=200
mkdir -p "$T/pool"
for i in $(seq 1 $POOL); do cp "$SRC" "$T/pool/f$i.dcm"; done
new_uids "$T"/pool/f*.dcm
NEXT=0
next_file() {
  NEXT=$((NEXT + 1))
  [ $NEXT -le $POOL ] || fail "the instance pool ($POOL) is used up"
  FILE="$T/pool/f$NEXT.dcm"
}
uid_of() { dcmdump -q +P SOPInstanceUID "$1" | sed -n 's/.*\[\(.*\)\].*/\1/p' | head -n1; }

SUCCESS=0      # instances storescu or a raw peer saw answered Success
BROKEN_UIDS=() # instances sent only in part: no row, no file
NORMAL=0

# peer NAME ARGS...: runs dicom_pdu_peer.py; its JSON result in $T/NAME.json and in $R.
peer() {
  local name=$1; shift
  "${PEER[@]}" --port "$DAEMON_PORT" "$@" >"$T/$name.json" 2>"$T/$name.err" ||
    { cat "$T/$name.err"; fail "$name: dicom_pdu_peer.py failed"; }
  R=$(cat "$T/$name.json")
}
field() { jq -r "$1" <<<"$R"; }

# log_count REGEX: lines of the daemon's log matching REGEX (grep -E).
log_count() { grep -cE "$1" "$DAEMON_LOG" || true; }

# expect_event WHAT REGEX BEFORE_LOG BEFORE_LEDGER: a new log line and a new ledger event match.
# The ledger gets the same "kind detail" text (association.released excepted: not audited).
expect_event() {
  local what=$1 rx=$2 blog=$3 bled=$4 i n=0 m=0
  for i in $(seq 100); do
    n=$(log_count "$rx")
    [ "$n" -gt "$blog" ] && break
    sleep 0.1
  done
  [ "$n" -gt "$blog" ] || { tail -n 20 "$DAEMON_LOG"; fail "$what: no new /$rx/ in the daemon's log"; }
  [ "$bled" = - ] && return 0
  for i in $(seq 50); do
    m=$(ledger_events "$rx")
    [ "$m" -gt "$bled" ] && return 0
    sleep 0.1
  done
  sqlite3 "file:$DAEMON_STATE/audit.db?mode=ro" "SELECT kind, detail FROM events ORDER BY id DESC LIMIT 5" || true
  fail "$what: the daemon logged /$rx/ but the audit ledger has no such event"
}

# still_serves WHAT: a normal storescu send gets Success; no *.part is left in spool/tmp.
still_serves() {
  local what=$1 i
  next_file
  NORMAL=$((NORMAL + 1))
  scu "normal$NORMAL" -- "$FILE" || { cat "$T/normal$NORMAL.scu"; fail "$what: storescu failed afterwards"; }
  [ "$(scu_successes "normal$NORMAL")" = 1 ] || fail "$what: no Success for a normal send afterwards"
  SUCCESS=$((SUCCESS + 1))
  for i in $(seq 50); do
    compgen -G "$SPOOL/tmp/*.part" >/dev/null || return 0
    sleep 0.1
  done
  ls -la "$SPOOL/tmp"
  fail "$what: a half-written *.part file is left in spool/tmp"
}

# no_trace WHAT UID: no spool file and no ledger row for UID.
no_trace() {
  local what=$1 uid=$2
  compgen -G "$SPOOL/in/$uid.*" >/dev/null && fail "$what: a spool file of the broken instance $uid"
  audit_json | jq -e --arg u "$uid" 'select(.sop_instance_uid == $u)' >/dev/null &&
    fail "$what: a ledger row for the broken instance $uid"
  return 0
}

# case_run NAME EXPECT_OUTCOME_REGEX EVENT_REGEX [PEER ARGS...]: one malformed-PDU case.
case_run() {
  local name=$1 want=$2 rx=$3 blog bled out; shift 3
  blog=$(log_count "$rx")
  bled=$(ledger_events "$rx")
  peer "$name" --wait 60 "$@"
  out=$(field .outcome)
  [[ "$out" =~ ^($want)$ ]] || { echo "$R"; fail "$name: the daemon answered '$out', wanted /$want/"; }
  expect_event "$name" "$rx" "$blog" "$bled"
  still_serves "$name"
  ok "$name: $out ($(field '.detail | tostring' | cut -c1-80)); logged /$rx/; still serves"
}

# ---------------------------------------------------------------------------------------------
# 1. stalls: released after the configured timeout
# ---------------------------------------------------------------------------------------------
STALLS=()
# stall NAME TIMEOUT_NAME TIMEOUT EVENT_REGEX PEER ARGS...
stall() {
  local name=$1 tname=$2 tmo=$3 rx=$4 blog bled el; shift 4
  blog=$(log_count "$rx")
  bled=$(ledger_events "$rx")
  peer "$name" --wait $((tmo + 30)) "$@"
  el=$(field .elapsed_s)
  [[ "$(field .outcome)" =~ ^(closed|reset|aborted)$ ]] ||
    { echo "$R"; fail "$name: not released within $((tmo + 30)) s (outcome $(field .outcome))"; }
  /usr/bin/python3 -c 'import sys; e, t, m = map(float, sys.argv[1:]); sys.exit(0 if t - 0.5 <= e <= t + m else 1)' \
    "$el" "$tmo" "$STALL_MARGIN" ||
    fail "$name: released after $el s; wanted $tname=$tmo s (+$STALL_MARGIN s margin, -0.5 s)"
  expect_event "$name" "$rx" "$blog" "$bled"
  STALLS+=("$name=${el}s")
  ok "$name: released after $el s ($tname=$tmo s, margin $STALL_MARGIN s; $(field .outcome))"
}
stall stall-silent acse_timeout "$ACSE" 'association\.timeout .*phase=associate-rq reason=timeout' silent
still_serves stall-silent
stall stall-mid-associate-rq acse_timeout "$ACSE" 'association\.timeout .*phase=associate-rq reason=timeout' stall-rq
still_serves stall-mid-associate-rq
stall stall-mid-pdata dimse_timeout "$DIMSE" 'association\.(aborted|timeout) .*calling_aet=HOSTILE ' stall-pdata
still_serves stall-mid-pdata
# mid data set: the *.part file exists while the peer stalls, and is gone after the release
next_file
uid=$(uid_of "$FILE")
"${PEER[@]}" --port "$DAEMON_PORT" --file "$FILE" --wait $((DIMSE + 30)) stall-dataset \
  >"$T/stall-ds.json" 2>"$T/stall-ds.err" &
sp=$!
_pids+=("$sp")
seen_part=no
for i in $(seq 50); do
  compgen -G "$SPOOL/tmp/*.part" >/dev/null && { seen_part=yes; break; }
  sleep 0.1
done
wait "$sp" || fail "stall-mid-dataset: dicom_pdu_peer.py failed"
[ $seen_part = yes ] || fail "stall-mid-dataset: no *.part file in spool/tmp while the data set was half sent"
R=$(cat "$T/stall-ds.json")
el=$(field .elapsed_s)
/usr/bin/python3 -c 'import sys; e, t, m = map(float, sys.argv[1:]); sys.exit(0 if t - 0.5 <= e <= t + m else 1)' \
  "$el" "$DIMSE" "$STALL_MARGIN" || { echo "$R"; fail "stall-mid-dataset: released after $el s; wanted dimse_timeout=$DIMSE s"; }
wait_log "$DAEMON_LOG" "store\.failed .*calling_aet=HOSTILE .*reason=receive: " 10
STALLS+=("stall-mid-dataset=${el}s")
still_serves stall-mid-dataset
no_trace stall-mid-dataset "$uid"
BROKEN_UIDS+=("$uid")
ok "stall-mid-dataset: released after $el s (dimse_timeout=$DIMSE s); the *.part seen during the stall is gone; no row, no file"

# ---------------------------------------------------------------------------------------------
# 2. more concurrent associations than max_associations
# ---------------------------------------------------------------------------------------------
refused_rx="association\.refused .*reason=too-many-associations limit=$LIMIT"
blog=$(log_count "$refused_rx")
bled=$(ledger_events "$refused_rx")
hold_files=()
for i in $(seq 1 "$LIMIT"); do next_file; hold_files+=("$FILE"); done
rm -f "$T/go"
"${PEER[@]}" --port "$DAEMON_PORT" --file "${hold_files[0]}" --file-list "${hold_files[@]}" \
  --go "$T/go" --wait 60 hold "$LIMIT" >"$T/hold.json" 2>"$T/hold.err" &
hp=$!
_pids+=("$hp")
wait_log "$T/hold.err" '"held"' 20
held=$(jq -c .held "$T/hold.err")
jq -e --argjson n "$LIMIT" 'length == $n and all(.[]; . == "accepted")' <<<"$held" >/dev/null ||
  fail "limit: the first $LIMIT associations were not all accepted: $held"
# the limit is reached: a raw A-ASSOCIATE-RQ and K storescu at once are refused
peer over --wait 20 associate
jq -e '.outcome == "rejected" and .detail.result == 2 and .detail.source == 3 and .detail.reason == 2' \
  <<<"$R" >/dev/null || { echo "$R"; fail "limit: an A-ASSOCIATE-RQ over the limit was not rejected (transient, local limit exceeded)"; }
rj_pids=()
for k in 1 2 3; do
  next_file
  scu "over$k" -- "$FILE" &
  rj_pids+=($!)
  _pids+=($!)
done
for p in "${rj_pids[@]}"; do wait "$p" && fail "limit: a storescu over the limit succeeded"; done
for k in 1 2 3; do
  grep -qi "Association Rejected" "$T/over$k.scu" && grep -qi "Local limit exceeded" "$T/over$k.scu" ||
    { cat "$T/over$k.scu"; fail "limit: storescu over$k was not rejected with 'local limit exceeded'"; }
  [ "$(scu_successes "over$k")" = 0 ] || fail "limit: storescu over$k stored something"
done
expect_event limit "$refused_rx" "$((blog + 3))" "$((bled + 3))"
# the admitted ones complete
touch "$T/go"
wait "$hp" || { cat "$T/hold.err"; fail "limit: the holding peer failed"; }
R=$(cat "$T/hold.json")
jq -e --argjson n "$LIMIT" '.outcome == "stored" and (.detail.results | length == $n)
  and all(.detail.results[]; .status == 0 and .release == "released")' <<<"$R" >/dev/null ||
  { echo "$R"; fail "limit: the admitted associations did not all store Success and release"; }
SUCCESS=$((SUCCESS + LIMIT))
ok "limit $LIMIT: $LIMIT held associations admitted; 1 raw RQ + 3 storescu rejected (transient, local limit exceeded), logged and audited; the $LIMIT admitted then stored Success and released"
# a flood of silent connections: the listener runs at most max_associations + 4 connection
# threads (the 4 only to refuse properly); past that it closes new connections at once, logged
# "too-many-connections", and serves again as soon as the silent ones reach acse_timeout
blog=$(log_count 'association\.refused .*reason=too-many-connections')
bled=$(ledger_events 'association\.refused .*reason=too-many-connections')
fpids=()
for k in $(seq 1 $((LIMIT + 4))); do
  "${PEER[@]}" --port "$DAEMON_PORT" --wait $((ACSE + 30)) silent >"$T/flood$k.json" 2>"$T/flood$k.err" &
  fpids+=($!)
  _pids+=($!)
done
sleep 1
peer flood-extra --wait 10 associate
[[ "$(field .outcome)" =~ ^(closed|reset)$ ]] && [ "$(field '.elapsed_s < 2')" = true ] ||
  { echo "$R"; fail "flood: a connection past max_associations + 4 was not closed at once"; }
expect_event flood 'association\.refused .*reason=too-many-connections' "$blog" "$bled"
for p in "${fpids[@]}"; do wait "$p" || fail "flood: a silent peer failed"; done
jq -e -s --argjson t "$ACSE" 'all(.outcome == "closed" or .outcome == "reset") and all(.elapsed_s <= $t + 3)' \
  "$T"/flood*.json >/dev/null || { cat "$T"/flood*.json; fail "flood: the silent connections were not ended by acse_timeout"; }
still_serves flood
ok "flood: $((LIMIT + 4)) silent connections held every thread; one more was closed at once (too-many-connections, logged and audited); all released by acse_timeout=$ACSE s; then served again"
# a burst of BURST storescu (3 instances each) at once: all or nothing for each
sleep 0.5 # the held associations' threads end just after their A-RELEASE-RP
bpids=()
for k in $(seq 1 $BURST); do
  fs=()
  for j in 1 2 3; do next_file; fs+=("$FILE"); done
  scu "burst$k" -- "${fs[@]}" &
  bpids+=($!)
  _pids+=($!)
done
# (refused: an A-ASSOCIATE-RJ; or, while all max_associations + 4 threads are busy, the
# connection closed at once, logged too-many-connections)
b_ok=0 b_rj=0 b_cl=0
for k in $(seq 1 $BURST); do
  if wait "${bpids[$((k - 1))]}"; then
    [ "$(scu_successes "burst$k")" = 3 ] || fail "burst: storescu $k exited 0 with $(scu_successes "burst$k") of 3 Success"
    b_ok=$((b_ok + 1))
  else
    [ "$(scu_successes "burst$k")" = 0 ] || fail "burst: storescu $k was refused after storing"
    if grep -qi "Association Rejected" "$T/burst$k.scu"; then
      b_rj=$((b_rj + 1))
    elif grep -qi "Association Request Failed" "$T/burst$k.scu"; then
      b_cl=$((b_cl + 1))
    else
      cat "$T/burst$k.scu"
      fail "burst: storescu $k failed without being refused at association"
    fi
  fi
done
[ "$b_ok" -ge 1 ] || fail "burst: no storescu admitted"
[ "$(log_count 'association\.refused .*reason=too-many-connections')" -ge "$((blog + 1 + b_cl))" ] ||
  fail "burst: $b_cl connections closed at once, but not as many too-many-connections in the log"
SUCCESS=$((SUCCESS + 3 * b_ok))
ok "burst of $BURST concurrent storescu (limit $LIMIT): $b_ok stored all 3, $b_rj rejected (A-ASSOCIATE-RJ), $b_cl closed at once (every thread busy), none in between"
still_serves burst

# ---------------------------------------------------------------------------------------------
# 3. malformed PDUs and a peer that leaves mid-data-set
# ---------------------------------------------------------------------------------------------
for round in $(seq 1 $ROUNDS); do
  [ "$ROUNDS" = 1 ] || echo "--- malformed PDUs, round $round of $ROUNDS"
  case_run bad-length 'closed|reset|aborted' 'association\.aborted .*phase=associate-rq reason=malformed-associate-rq'  bad-length
  case_run truncated 'closed|reset' 'association\.aborted .*phase=associate-rq reason=closed-mid-associate-rq' truncated
  # ended at once, not after acse_timeout (the listener used to poll a half RQ until then)
  [ "$(field '.elapsed_s < 2')" = true ] || fail "truncated: released after $(field .elapsed_s) s, not at once"
  case_run oversized 'closed|reset' 'association\.aborted .*phase=associate-rq reason=associate-rq-too-large' oversized
  case_run unknown-type 'closed|reset' 'association\.aborted .*phase=associate-rq reason=not-an-associate-rq' unknown-type
  case_run pdata-first 'closed|reset' 'association\.aborted .*phase=associate-rq reason=not-an-associate-rq' pdata-first
  case_run garbage-after-rq 'aborted|closed|reset' 'association\.aborted .*calling_aet=HOSTILE .*by=us reason=.*Unrecognized PDU type' garbage-after-rq
  case_run oversized-pdata 'aborted|closed|reset' 'association\.aborted .*calling_aet=HOSTILE .*Illegal PDU Length 4294967295' oversized-pdata
  case_run unknown-type-assoc 'aborted|closed|reset' 'association\.aborted .*calling_aet=HOSTILE .*Unrecognized PDU type' unknown-type-assoc
  # 5000 contexts (~365 KB, over the socket's default receive buffer, under 1 MiB): answered at
  # once (PS3.8's 128 IDs) and released, not stalled until acse_timeout; 15000 (~1.1 MB): refused
  blog=$(log_count 'association\.released .*calling_aet=HOSTILE')
  peer many-contexts --wait 20 many-contexts 5000
  jq -e '.outcome == "accepted" and .detail.contexts.count == 128 and .detail.release == "released" and .elapsed_s < 3' \
    <<<"$R" >/dev/null || { echo "$R"; fail "many-contexts 5000: not accepted and released at once"; }
  expect_event many-contexts 'association\.released .*calling_aet=HOSTILE' "$blog" -
  still_serves many-contexts
  ok "many-contexts: 5000 proposed (~365 KB RQ) -> 128 answered in $(field .elapsed_s) s, released"
  case_run too-many-contexts 'closed|reset' 'association\.aborted .*phase=associate-rq reason=associate-rq-too-large' many-contexts 15000
  # AE titles that are not PS3.5 AE text make the RQ malformed: checked (and the connection
  # ended) before DCMTK parses it, as DCMTK 3.6.7 leaks on malformed RQs (tests/fuzz/fuzz_pdu.c)
  case_run long-aet 'closed|reset|aborted' 'association\.aborted .*phase=associate-rq reason=malformed-associate-rq' long-aet
  # the control bytes of the AE titles never reach the log
  if LC_ALL=C grep -naP '[\x00-\x08\x0b-\x1f\x7f-\xff]' "$DAEMON_LOG" >"$T/ctl.txt"; then
    cat -v "$T/ctl.txt" | head -n 3
    fail "long-aet: control or 8-bit bytes in the daemon's log"
  fi
  case_run long-user-item 'closed|reset|aborted' 'association\.aborted .*phase=associate-rq reason=malformed-associate-rq' long-user-item
  next_file
  uid=$(uid_of "$FILE")
  case_run half-store sent-half-and-closed 'store\.failed .*calling_aet=HOSTILE .*reason=receive: ' --file "$FILE" half-store
  no_trace half-store "$uid"
  BROKEN_UIDS+=("$uid")
done

# ---------------------------------------------------------------------------------------------
# the ledger: one final row for every Success, none for the broken instances; the chain holds
# ---------------------------------------------------------------------------------------------
wait_rows "$SUCCESS" 120
jq -e -s 'all(.state == "classified")' "$T/audit.json" >/dev/null ||
  { jq -c -s '[.[] | select(.state != "classified") | {sop_instance_uid, state, error, gate_reason}]' "$T/audit.json"; fail "a stored instance was not classified"; }
jq -e -s '[.[].sop_instance_uid] | length == (unique | length)' "$T/audit.json" >/dev/null || fail "an instance has two rows"
for u in "${BROKEN_UIDS[@]}"; do no_trace final "$u"; done
compgen -G "$SPOOL/tmp/*.part" >/dev/null && fail "a *.part file is left in spool/tmp at the end"
"$CXRTRIAGE" audit verify --state-dir "$DAEMON_STATE" >"$T/verify.out" 2>&1 || { cat "$T/verify.out"; fail "audit verify"; }
kill -0 "$DAEMON_PID" || fail "the daemon is gone"
stop_pid "$DAEMON_PID" TERM 30
[ "$STOP_RC" = 0 ] || fail "the daemon exited $STOP_RC on SIGTERM"
echo "hostile: $SUCCESS instances answered Success, $SUCCESS rows, all classified; ${#BROKEN_UIDS[@]} broken instances without trace; $(cat "$T/verify.out")"
echo "stall_release: ${STALLS[*]} (acse_timeout=$ACSE dimse_timeout=$DIMSE margin=${STALL_MARGIN}s)"
