#!/usr/bin/env bash
# `cxrtriage echo` and `cxrtriage selftest` against real peers: the daemon (reports as files,
# so a report would be seen) and DCMTK's storescp, in a private network namespace (storescp
# listens on all interfaces).
# echo: success with timing (daemon and storescp), then each failure named with exit 1: wrong
# called AE (association rejected, with DICOM's reason), calling AE not on the allow-list,
# closed port (connection refused), a peer that accepts TCP and never answers (timeout, within
# the bound), plus usage errors (exit 2).
# selftest: every check PASS; the row is classified with classify's scores and the marker
# patient ID; its study completes without a report while a real instance's study gets one; a
# second run is a new instance (not a duplicate); with the daemon down it fails naming the
# connection refused.
. "$(dirname "$0")/lib.sh"
need_netns
command -v storescp >/dev/null && command -v storescu >/dev/null ||
  skip "needs DCMTK's storescp and storescu: scripts/deps.sh test"
need_data dicom
D=$CXR_DATA_DIR/dicom

# The daemon: reports as files (no destination), an allow-list with the test's AE titles.
DAEMON_CONF='[dicom]
allowed_calling_aets = ECHOSCU, STORESCU, CXRTRIAGE-SCU, CXRSELFTEST
[triage]
study_quiet_seconds = 1
[report]
mode = send
'
start_daemon daemon
# the config the selftest reads: the daemon's, with the port and state dir it was started with
printf '[dicom]\nport = %s\nallowed_calling_aets = ECHOSCU, STORESCU, CXRTRIAGE-SCU, CXRSELFTEST\n[daemon]\nstate_dir = %s\n' \
  "$DAEMON_PORT" "$DAEMON_STATE" >"$T/selftest.conf"
"$CXRTRIAGE" config check "$T/selftest.conf" >"$T/check.out" 2>&1 || { cat "$T/check.out"; fail "selftest config invalid"; }

# --- echo: success ------------------------------------------------------------------------------
expect_rc 0 "$CXRTRIAGE" echo --count 3 127.0.0.1 "$DAEMON_PORT" CXRTRIAGE
grep -Eq "^association .* accepted in [0-9.]+ ms" "$T/out" || { cat "$T/out"; fail "no association time"; }
grep -Eq "^echo +3/3 answered status 0x0000 \(Success\); round trip min [0-9.]+ avg ([0-9.]+) max" "$T/out" ||
  { cat "$T/out"; fail "no round trip / status"; }
avg=$(sed -n 's/.* avg \([0-9.]*\) max.*/\1/p' "$T/out")
min=$(sed -n 's/.* min \([0-9.]*\) avg.*/\1/p' "$T/out")
# Nagle's delayed ACK would make every echo take ~40 ms; a loaded machine slows some, not all
/usr/bin/python3 -c "import sys; sys.exit(0 if float('$min') < 20 else 1)" ||
  fail "C-ECHO round trip min ${min} ms: Nagle's delayed ACK is back (PEERS.md)"
ok "echo to the daemon: 3/3 Success, round trip min ${min} avg ${avg} ms"

# --- echo: failures, each named -----------------------------------------------------------------
expect_rc 1 "$CXRTRIAGE" echo 127.0.0.1 "$DAEMON_PORT" NOTTHEDAEMON
grep -q "association rejected: .*Rejected Permanent.*Called AE Title Not Recognized" "$T/out" ||
  { cat "$T/out"; fail "wrong called AE: the rejection and its reason are not named"; }
ok "wrong called AE: association rejected, reason named"
expect_rc 1 "$CXRTRIAGE" echo --calling-aet INTRUDER 127.0.0.1 "$DAEMON_PORT" CXRTRIAGE
grep -q "association rejected: .*Calling AE Title Not Recognized" "$T/out" ||
  { cat "$T/out"; fail "calling AE not allowed: not named"; }
wait_log "$DAEMON_LOG" "association.refused.*calling_aet=INTRUDER" 10
ok "calling AE not on the allow-list: rejected and audited"
closed=$(free_port)
expect_rc 1 "$CXRTRIAGE" echo 127.0.0.1 "$closed" CXRTRIAGE
grep -q "connection refused" "$T/out" || { cat "$T/out"; fail "closed port: not named"; }
ok "closed port: connection refused"
# a peer that accepts the TCP connection and never answers
mute=$(free_port)
start_bg mute /usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4); print("listening", flush=True)
conns = []
end = time.time() + 60
while time.time() < end:
    c, _ = s.accept(); conns.append(c)' "$mute"
wait_log "$T/mute.log" listening 10
t0=$(date +%s%N)
expect_rc 1 "$CXRTRIAGE" echo --timeout 2 127.0.0.1 "$mute" CXRTRIAGE
ms=$((($(date +%s%N) - t0) / 1000000))
grep -q "timeout" "$T/out" || { cat "$T/out"; fail "silent peer: not named a timeout"; }
[ "$ms" -lt 10000 ] || fail "silent peer: --timeout 2 took ${ms} ms"
ok "silent peer: timeout after ${ms} ms (--timeout 2)"
expect_rc 2 "$CXRTRIAGE" echo 127.0.0.1 notaport CXRTRIAGE
expect_rc 2 "$CXRTRIAGE" echo --count 0 127.0.0.1 "$DAEMON_PORT" CXRTRIAGE
expect_rc 2 "$CXRTRIAGE" echo 127.0.0.1 "$DAEMON_PORT"
ok "usage errors exit 2"

# --- echo: DCMTK's storescp as the peer ----------------------------------------------------------
sport=$(free_port)
mkdir -p "$T/scp"
start_bg storescp storescp -aet PEERSCP -od "$T/scp" "$sport"
for _ in $(seq 50); do "$CXRTRIAGE" echo --timeout 1 127.0.0.1 "$sport" PEERSCP >/dev/null 2>&1 && break; sleep 0.1; done
expect_rc 0 "$CXRTRIAGE" echo --count 2 127.0.0.1 "$sport" PEERSCP
grep -q "2/2 answered status 0x0000" "$T/out" || { cat "$T/out"; fail "storescp echo"; }
ok "echo to DCMTK's storescp: 2/2 Success"

# --- selftest ------------------------------------------------------------------------------------
expect_rc 0 "$CXRTRIAGE" selftest --config "$T/selftest.conf" --wait 60
cp "$T/out" "$T/selftest1.out"
grep -q "^FAIL" "$T/out" && { cat "$T/out"; fail "selftest printed a FAIL"; }
for step in classify echo store ledger model scores marker; do
  grep -q "^PASS $step:" "$T/out" || { cat "$T/out"; fail "selftest: no PASS line for $step"; }
done
uid1=$(sed -n 's/.*SOP Instance UID \(2\.25\.[0-9]*\)).*/\1/p' "$T/out")
[ -n "$uid1" ] || { cat "$T/out"; fail "selftest did not print its SOP Instance UID"; }
"$CXRTRIAGE" audit show "$uid1" --state-dir "$DAEMON_STATE" >"$T/show.txt"
grep -q "CXRTRIAGE-SELFTEST" "$T/show.txt" || { cat "$T/show.txt"; fail "the row lacks the marker patient ID"; }
grep -q "classified" "$T/show.txt" || { cat "$T/show.txt"; fail "the selftest row is not classified"; }
ok "selftest: all PASS, row classified under CXRTRIAGE-SELFTEST"

# the ledger's scores equal classify --json of the bundled file, here too
"$CXRTRIAGE" classify --json "$CXR_SOURCE_DIR/data/selftest/cxrtriage-selftest.dcm" >"$T/cls.json"
audit_json >"$T/audit.json"
/usr/bin/python3 - "$T/cls.json" "$T/audit.json" "$uid1" <<'PY' || fail "selftest row and classify --json disagree"
import json, sys
c = json.loads(open(sys.argv[1]).readline())
rows = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
row = [r for r in rows if r["sop_instance_uid"] == sys.argv[3]]
assert len(row) == 1, row
got = row[0]["scores"]
for k, v in c["scores"].items():
    assert abs(got[k] - v) <= 1e-6, (k, got[k], v)
print("scores equal:", got)
PY
study1=$(/usr/bin/python3 -c '
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l) if l.strip() else {}
    if r.get("sop_instance_uid") == sys.argv[2]: print(r["study_instance_uid"])' "$T/audit.json" "$uid1")
[ -n "$study1" ] || fail "no study UID for the selftest row"

# Its study completes without a report; a real instance's study gets its report files.
wait_log "$DAEMON_LOG" "study.complete.*report=none\(selftest\)" 30
grep -q "report.skipped.*reason=selftest" "$DAEMON_LOG" || fail "no report.skipped line"
cp "$D/cxr_siim_8bit_explicit_le.dcm" "$T/real.dcm"
new_uids "$T/real.dcm"
scu real -aet STORESCU -- "$T/real.dcm" || { cat "$T/real.scu"; fail "storescu of a real instance"; }
wait_log "$DAEMON_LOG" "study.complete.*report=queued" 30
reports="$DAEMON_STATE/reports"
for _ in $(seq 100); do [ -n "$(ls -A "$reports" 2>/dev/null)" ] && break; sleep 0.1; done
[ -n "$(ls -A "$reports" 2>/dev/null)" ] || fail "the real instance's study got no report file"
if grep -rlq "CXRTRIAGE-SELFTEST" "$reports"; then fail "a report carries the selftest patient"; fi
outbox=$("$CXRTRIAGE" outbox list --state-dir "$DAEMON_STATE" --format json --limit 0 | wc -l)
[ "$outbox" -ge 1 ] || fail "no outbox row for the real study"
"$CXRTRIAGE" outbox list --state-dir "$DAEMON_STATE" --format json --limit 0 | grep -q "$study1" &&
  fail "the selftest study is in the outbox"
grep -rlq "$study1" "$reports" && fail "a report file names the selftest study"
ok "selftest study: no report, no outbox row; a real study: $(ls "$reports" | wc -l) report file(s)"

# A second run is a new instance, not a duplicate.
expect_rc 0 "$CXRTRIAGE" selftest --config "$T/selftest.conf" --wait 60
uid2=$(sed -n 's/.*SOP Instance UID \(2\.25\.[0-9]*\)).*/\1/p' "$T/out")
[ -n "$uid2" ] && [ "$uid2" != "$uid1" ] || fail "second selftest reused the UID"
grep -q "instance.duplicate" "$DAEMON_LOG" && fail "a selftest instance was taken for a duplicate"
ok "second selftest: new UID $uid2, no duplicate"

# With the daemon stopped it fails and says why.
stop_pid "$DAEMON_PID"
expect_rc 1 "$CXRTRIAGE" selftest --config "$T/selftest.conf" --timeout 2
grep -q "^FAIL echo: .*connection refused" "$T/out" || { cat "$T/out"; fail "daemon down: FAIL line does not name it"; }
ok "daemon down: FAIL echo: connection refused"
