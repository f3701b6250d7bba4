#!/usr/bin/env bash
# Nothing is lost: storescu sends real radiographs over two associations while the daemon is
# killed with SIGKILL at a random moment (the seed is printed); the daemon is restarted. Then
# every instance storescu saw answered Success has exactly one audit row, in a final state, no
# SOP Instance UID has two rows, the ledger passes PRAGMA integrity_check and `audit verify`.
# Rounds: CXR_CRASH_ROUNDS (default 2).
. "$(dirname "$0")/lib.sh"
need_data dicom
command -v storescu >/dev/null || skip "storescu (Debian dcmtk) is not installed: run scripts/deps.sh test"

rounds=${CXR_CRASH_ROUNDS:-2}
seed=${CXR_CRASH_SEED:-$(date +%s)}
echo "seed=$seed rounds=$rounds"
RANDOM=$seed
src="$CXR_DATA_DIR/dicom/cxr_siim_8bit_explicit_le.dcm"
n=24

# n distinct instances in 4 studies (new Study/Series/SOP Instance UIDs per file).
mkdir -p "$T/in"
for i in $(seq -w 1 $n); do cp "$src" "$T/in/img$i.dcm"; done
for s in 0 1 2 3; do
  files=()
  for i in $(seq 1 $n); do [ $((i % 4)) -eq $s ] && files+=("$T/in/img$(printf %02d "$i").dcm"); done
  dcmodify -nb -gst -gse "${files[@]}" >/dev/null 2>&1 || true
  # one study per group: copy the first file's Study UID to the others
  st=$(dcmdump +P StudyInstanceUID "${files[0]}" | sed -n 's/.*\[\(.*\)\].*/\1/p')
  dcmodify -nb -m "StudyInstanceUID=$st" "${files[@]}" >/dev/null
done
dcmodify -nb -gin "$T/in"/*.dcm >/dev/null
[ "$(for f in "$T"/in/*.dcm; do dcmdump +P SOPInstanceUID "$f"; done | sort -u | wc -l)" = $n ] ||
  fail "could not make $n distinct instances"

port=$(free_port)
state="$T/var"
printf '[daemon]\nworkers = 1\nstop_timeout = 10\n[triage]\nstudy_quiet_seconds = 1\n' >"$T/d.conf"
start_daemon_bg() {
  start_bg "daemon$1" "$CXRTRIAGED" --config "$T/d.conf" --port "$port" --state-dir "$state" \
    --http-port "$(free_port)"
  DPID=$LAST_PID
  wait_log "$T/daemon$1.log" "daemon.ready" 60
}

acked="$T/acked.txt"
: >"$acked"
for round in $(seq 1 "$rounds"); do
  start_daemon_bg "$round"
  half=$((n / 2))
  ls "$T"/in/*.dcm | head -n $half >"$T/a.lst"
  ls "$T"/in/*.dcm | tail -n +$((half + 1)) >"$T/b.lst"
  storescu -v -aec CXRTRIAGE 127.0.0.1 "$port" $(cat "$T/a.lst") >"$T/scu_a$round.log" 2>&1 &
  a=$!
  storescu -v -aec CXRTRIAGE 127.0.0.1 "$port" $(cat "$T/b.lst") >"$T/scu_b$round.log" 2>&1 &
  b=$!
  delay=$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.2 + (r % 150) / 100 }')
  sleep "$delay"
  kill -KILL "$DPID"
  wait "$DPID" 2>/dev/null || true
  wait $a 2>/dev/null || true
  wait $b 2>/dev/null || true
  # What storescu saw answered Success: the file of each "Sending file" line followed by Success.
  for l in "$T/scu_a$round.log" "$T/scu_b$round.log"; do
    awk '/Sending file:/ { f = $NF } /Received Store Response \(Success\)/ { if (f != "") print f; f = "" }' "$l"
  done | while read -r f; do dcmdump +P SOPInstanceUID "$f" | sed -n 's/.*\[\(.*\)\].*/\1/p'; done >>"$acked"
  echo "round $round: killed after ${delay}s, acked so far $(sort -u "$acked" | wc -l)"
done

# Restart and let everything settle.
start_daemon_bg final
for _ in $(seq 300); do
  "$CXRTRIAGE" audit list --state-dir "$state" --format json --limit 0 >"$T/rows.json" 2>"$T/audit.err" || true
  /usr/bin/python3 - "$T/rows.json" <<'EOF' && break
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
sys.exit(0 if rows and all(r["state"] != "received" for r in rows) else 1)
EOF
  sleep 0.2
done
stop_pid "$DPID"
[ "$STOP_RC" = 0 ] || fail "daemon exited $STOP_RC on SIGTERM"

/usr/bin/python3 - "$T/rows.json" "$acked" <<'EOF' || fail "invariants broken (above)"
import collections, json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
acked = set(l.strip() for l in open(sys.argv[2]) if l.strip())
by_uid = collections.Counter(r["sop_instance_uid"] for r in rows)
bad = 0
for uid in sorted(acked):
    if by_uid[uid] != 1:
        print(f"acked {uid}: {by_uid[uid]} rows"); bad += 1
for uid, c in by_uid.items():
    if c != 1:
        print(f"{uid}: {c} rows"); bad += 1
for r in rows:
    if r["state"] not in ("classified", "skipped", "failed"):
        print(f"row {r['id']} not final: {r['state']}"); bad += 1
    if r["state"] == "failed":
        print(f"row {r['id']} failed: {r.get('error')}"); bad += 1
print(f"acked={len(acked)} rows={len(rows)} lost={sum(1 for u in acked if by_uid[u] == 0)} "
      f"duplicates={sum(1 for c in by_uid.values() if c > 1)}")
sys.exit(1 if bad or not acked else 0)
EOF
[ "$(sqlite3 "$state/audit.db" 'PRAGMA integrity_check')" = ok ] || fail "integrity_check"
"$CXRTRIAGE" audit verify --state-dir "$state" >"$T/verify.out" 2>&1 || { cat "$T/verify.out"; fail "audit verify"; }
# No temporary file is left in the spool.
[ -z "$(ls -A "$state/spool/tmp" 2>/dev/null)" ] || fail "partial files left in spool/tmp"
ok "$rounds kill -9 rounds: every acknowledged instance has exactly one final row (seed $seed)"
