#!/usr/bin/env bash
# The daemon as an operator runs it: duplicates (acknowledge, then rescore after SIGHUP),
# the calling-AE allow-list reloaded on SIGHUP without a restart, a spool file without a row
# picked up at start, shadow mode, SIGTERM within the bound, and new associations refused
# while free disk is under the watermark and accepted again by themselves when it clears.
. "$(dirname "$0")/lib.sh"
need_data dicom
command -v storescu >/dev/null || skip "storescu (Debian dcmtk) is not installed: run scripts/deps.sh test"

good="$CXR_DATA_DIR/dicom/cxr_siim_8bit_explicit_le.dcm"
port=$(free_port)
state="$T/var"
rows() { "$CXRTRIAGE" audit list --state-dir "$state" --format json --limit 0; }
wait_final() { # N: waits until N rows exist, all final
  for _ in $(seq 200); do
    rows >"$T/rows.json" 2>/dev/null || true
    /usr/bin/python3 -c '
import json,sys
r=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
sys.exit(0 if len(r)==int(sys.argv[2]) and all(x["state"]!="received" for x in r) else 1)' "$T/rows.json" "$1" && return 0
    sleep 0.1
  done
  cat "$T/rows.json"; fail "wanted $1 final rows"
}
send() { storescu -aet "${AET:-STORESCU}" -aec CXRTRIAGE 127.0.0.1 "$port" "$@"; }

cat >"$T/d.conf" <<EOF
[dicom]
allowed_calling_aets = STORESCU
duplicates = acknowledge
[triage]
study_quiet_seconds = 0
[report]
mode = shadow
EOF
start_bg daemon "$CXRTRIAGED" --config "$T/d.conf" --port "$port" --state-dir "$state" --http-port "$(free_port)"
pid=$LAST_PID
wait_log "$T/daemon.log" "daemon.ready"
grep -q "report_mode=shadow" "$T/daemon.log" || fail "shadow mode not stated at start"

send "$good" || fail "storescu to the daemon failed"
wait_final 1
send "$good" || fail "a duplicate must still be answered Success"
wait_log "$T/daemon.log" "instance.duplicate.*policy=acknowledge"
wait_final 1
id=$(rows | /usr/bin/python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["id"])')
"$CXRTRIAGE" audit show "$id" --state-dir "$state" >"$T/show.txt"
grep -q "duplicate" "$T/show.txt" || { cat "$T/show.txt"; fail "the duplicate is not in the instance's history"; }
[ "$(ls "$state/spool/in" | wc -l)" = 1 ] || fail "an acknowledged duplicate left its spool file"
grep -q "study.complete.*report=shadow" "$T/daemon.log" || fail "shadow mode: study completion should say not sent"
ok "duplicate acknowledged: one row, event in its history, shadow mode"

# An unknown calling AE is refused and audited; after SIGHUP with it allowed, it is accepted.
if AET=OTHERAE send "$good" >"$T/scu.log" 2>&1; then fail "OTHERAE should have been refused"; fi
wait_log "$T/daemon.log" "association.refused.*OTHERAE"
sed -i 's/^allowed_calling_aets = .*/allowed_calling_aets = STORESCU, OTHERAE@127.0.0.1/; s/^duplicates = .*/duplicates = rescore/' "$T/d.conf"
kill -HUP "$pid"
wait_log "$T/daemon.log" "daemon.reload.*OTHERAE"
AET=OTHERAE send "$good" || fail "OTHERAE refused after the reload"
wait_final 2
rows | /usr/bin/python3 -c '
import json,sys
r=[json.loads(l) for l in sys.stdin if l.strip()]
dups=[x for x in r if x.get("duplicate_of")]
assert len(dups)==1, r
assert r[0]["scores"]==r[1]["scores"], "a re-score of the same file must give the same scores"' ||
  fail "rescore did not make a linked second row"
kill -0 "$pid" || fail "daemon died"
ok "allow-list and duplicate policy reloaded on SIGHUP without a restart; rescore links the rows"

# SIGTERM: exits 0 within the bound.
t0=$(date +%s)
stop_pid "$pid" TERM 35
[ "$STOP_RC" = 0 ] || fail "exit $STOP_RC on SIGTERM"
[ $(( $(date +%s) - t0 )) -le 31 ] || fail "stop took longer than stop_timeout"
grep -q "daemon.exit status=0" "$T/daemon.log" || fail "no daemon.exit line"

# A durable spool file with no row (a crash between the file and its row) is picked up.
uid=1.2.826.0.1.3680043.10.9999.$RANDOM$RANDOM
cp "$good" "$T/orphan.dcm"
dcmodify -nb -m "SOPInstanceUID=$uid" "$T/orphan.dcm" >/dev/null
cp "$T/orphan.dcm" "$state/spool/in/$uid.1700000000000-1.dcm"
start_bg daemon2 "$CXRTRIAGED" --config "$T/d.conf" --port "$port" --state-dir "$state" --http-port "$(free_port)"
pid=$LAST_PID
wait_log "$T/daemon2.log" "daemon.ready"
grep -q "spool.recovered" "$T/daemon2.log" || fail "the orphan spool file was not picked up"
wait_final 3
rows | grep -q "\"$uid\"" || fail "no row for the recovered file"
stop_pid "$pid"
ok "a spool file without a row is recovered at start"

# Disk watermark: the state directory on a small tmpfs in a private mount namespace.
if unshare -m true 2>/dev/null; then
  mkdir -p "$T/small"
  cat >"$T/w.conf" <<EOF
[daemon]
min_free_mb = 20
[triage]
study_quiet_seconds = 0
EOF
  start_bg daemon3 unshare -m --propagation private sh -c \
    "mount -t tmpfs -o size=40m tmpfs '$T/small' && exec '$CXRTRIAGED' --config '$T/w.conf' --port $port --state-dir '$T/small/var' --http-port $(free_port)"
  pid=$LAST_PID
  wait_log "$T/daemon3.log" "daemon.ready"
  send "$good" || fail "refused with space free"
  nsenter -t "$pid" -m dd if=/dev/zero of="$T/small/fill" bs=1M count=25 status=none 2>/dev/null || true
  wait_log "$T/daemon3.log" "admission.refusing.*reason=disk"
  if send "$good" >"$T/scu.log" 2>&1; then fail "accepted under the disk watermark"; fi
  grep -qi "reject" "$T/scu.log" || { cat "$T/scu.log"; fail "storescu did not see a rejection"; }
  nsenter -t "$pid" -m rm -f "$T/small/fill"
  wait_log "$T/daemon3.log" "admission.accepting"
  send "$good" || fail "not accepting again after space returned"
  stop_pid "$pid"
  ok "refuses under the disk watermark and accepts again by itself"
else
  echo "note: no mount namespaces here; the watermark case is covered by tests/reliability"
fi
