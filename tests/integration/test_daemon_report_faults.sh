#!/usr/bin/env bash
# test_daemon_report_faults.sh - report delivery through the REAL daemon when things go wrong
# (issue point 8), against webhook_receiver.py failing on demand:
#   a. the webhook answers 500 for a while, then 200 (retry_initial 1, retry_max 2): every
#      report of 3 studies arrives, each idempotency key answered 200 exactly once, and
#      `outbox show` records the failed attempts (attempts >= 2, one 500 each) before delivery.
#   b. SIGKILL while reports are pending (receiver answering 503), restart with the receiver
#      answering 200: every report delivered, each with the SAME MSH-10 (ORU) / DiagnosticReport
#      identifier (FHIR) before and after the kill, no report lost, none with two identifiers.
#   c. a receiver that hangs (timeout 5 s) does not delay scoring: while a report hangs, 3 more
#      images are received and classified within a couple of seconds (timings_ms in the ledger).
#   d. a correction: the same study scored again by another model (same weights, other digest;
#      [dicom] duplicates = rescore) -> the new ORU has OBR-25 = C and an NTE naming the first
#      MSH-10, the FHIR DiagnosticReport is "corrected" with the same identifier, and
#      `outbox list` shows is_correction true and corrects = the first report's id.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/report_lib.sh"
need_report_tools

# ids_by_key REQUESTS_JSON: {key: [identifier of each request in order]} where the identifier is
# MSH-10 for an ORU and the DiagnosticReport identifier for a Bundle.
ids_by_key() {
  /usr/bin/python3 - "$1" <<'EOF'
import json, sys
out = {}
for r in json.load(open(sys.argv[1])):
    k = r["headers"].get("Idempotency-Key")
    b = r["body"]
    if r["headers"].get("Content-Type") == "application/fhir+json":
        dr = [e["resource"] for e in json.loads(b)["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
        ident = dr[0]["identifier"][0]["value"] if len(dr) == 1 else "?"
    else:
        msh = [s for s in b.split("\r") if s.startswith("MSH|")]
        ident = msh[0].split("|")[9] if msh else "?"
    out.setdefault(k, []).append([ident, r["action"]])
print(json.dumps(out))
EOF
}

conf() { # URL [EXTRA INI LINES]: a send-mode config with one webhook, both formats, fast retries
  DAEMON_CONF="[triage]
study_quiet_seconds = ${QUIET:-1}
[report]
mode = send
[webhook]
url = $1
format = both
retry_initial = 1
retry_max = 2
timeout = ${HOOK_TIMEOUT:-10}
${2:-}"
}

# ---------------------------------------------------------------------------------------------
# a. 500 for a while, then 200
# ---------------------------------------------------------------------------------------------
hook ha --control "$T/ha.control"
echo 500 >"$T/ha.control"
conf "http://127.0.0.1:$HOOK_PORT/a"
start_daemon fa
for s in 1 2 3; do make_study "$T/a$s" 1; done
scu a -- "$T/a1/img1.dcm" "$T/a2/img1.dcm" "$T/a3/img1.dcm" || fail "storescu a"
wait_rows 3 60
wait_jq 40 "6 reports, each answered 500 at least twice" "ids_by_key <(requests $HOOK_LOG)" \
  'length == 6 and all(.[]; length >= 2 and all(.[]; .[1] == "500"))'
rm "$T/ha.control"
wait_jq 40 "all 6 reports delivered after the receiver recovered" outbox_json 'length == 6 and all(.state == "delivered")'
requests "$HOOK_LOG" >"$T/ha.req.json"
ids_by_key "$T/ha.req.json" >"$T/ha.ids.json"
outbox_json >"$T/oa.json"
jq -e --slurpfile ids "$T/ha.ids.json" '([.[].idempotency_key] | sort) == ($ids[0] | keys | sort)
  and all(.[]; .idempotency_key as $k | ($ids[0][$k] | map(select(.[1] == "200")) | length) == 1
               and ($ids[0][$k] | map(.[0]) | unique | length) == 1)' "$T/oa.json" >/dev/null ||
  { cat "$T/ha.ids.json"; fail "a: not every key answered 200 exactly once with one identifier"; }
for id in $(jq -r '.[].id' "$T/oa.json"); do
  "$CXRTRIAGE" outbox show "$id" --state-dir "$DAEMON_STATE" --format json >"$T/show.json"
  jq -e '.state == "delivered" and .attempts >= 2 and (.delivery_attempts | length) == .attempts + 1
    and ([.delivery_attempts[] | select(.outcome != "delivered")] | all(.status == 500))
    and .delivery_attempts[-1].outcome == "delivered" and .delivery_attempts[-1].status == 200' \
    "$T/show.json" >/dev/null || { jq -c 'del(.body)' "$T/show.json"; fail "a: outbox show $id"; }
done
ok "a: 500 then 200: 6 reports of 3 studies delivered, one 200 per key, $(jq '[.[].attempts] | add' "$T/oa.json") failed attempts recorded"
stop_pid "$DAEMON_PID"

# ---------------------------------------------------------------------------------------------
# b. SIGKILL while reports are pending, restart, delivered with the same identifiers
# ---------------------------------------------------------------------------------------------
hook hb --control "$T/hb.control"
echo 503 >"$T/hb.control"
conf "http://127.0.0.1:$HOOK_PORT/b"
start_daemon fb
for s in 1 2; do make_study "$T/b$s" 1; done
scu b -- "$T/b1/img1.dcm" "$T/b2/img1.dcm" || fail "storescu b"
wait_rows 2 60
wait_jq 30 "4 reports tried (503)" "ids_by_key <(requests $HOOK_LOG)" 'length == 4'
stop_pid "$DAEMON_PID" KILL
cp "$DAEMON_LOG" "$T/fb-killed.log"
requests "$HOOK_LOG" >"$T/hb.before.json"
ids_by_key "$T/hb.before.json" >"$T/hb.ids.before.json"
OUTBOX_STATE=$DAEMON_STATE outbox_json >"$T/ob.before.json"
jq -e 'length == 4 and all(.state == "pending")' "$T/ob.before.json" >/dev/null || { cat "$T/ob.before.json"; fail "b: before the restart"; }
rm "$T/hb.control"
start_daemon fb # the same state directory
wait_jq 40 "the 4 reports delivered after the restart" outbox_json 'length == 4 and all(.state == "delivered")'
requests "$HOOK_LOG" >"$T/hb.after.json"
ids_by_key "$T/hb.after.json" >"$T/hb.ids.json"
outbox_json >"$T/ob.after.json"
/usr/bin/python3 - "$T/hb.ids.before.json" "$T/hb.ids.json" "$T/ob.after.json" <<'EOF' || fail "b: identifiers across the kill"
import json, sys
before, after, ob = (json.load(open(p)) for p in sys.argv[1:4])
bad = []
keys = sorted(r["idempotency_key"] for r in ob)
if sorted(after) != keys:
    bad.append(f"keys received {sorted(after)} != outbox {keys}")
for r in ob:
    k = r["idempotency_key"]
    want = r["control_id"] if r["format"] == "hl7" else r["report_id"]
    seen = after.get(k, [])
    idents = {i for i, _ in seen}
    if idents != {want}:
        bad.append(f"{k}: identifiers {idents}, outbox {want}")
    if {i for i, _ in before.get(k, [])} != {want}:
        bad.append(f"{k}: before the kill {before.get(k)}")
    n_ok = sum(1 for _, a in seen[len(before.get(k, [])):] if a == "200")
    if n_ok != 1:
        bad.append(f"{k}: {n_ok} requests answered 200 after the restart")
for b in bad:
    print("  " + b, file=sys.stderr)
print("b: %d reports, %d requests before the kill, %d after" % (len(ob), sum(map(len, before.values())),
      sum(map(len, after.values())) - sum(map(len, before.values()))), file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
jq -e --slurpfile b "$T/ob.before.json" '[.[] | {id, idempotency_key, control_id, report_id}] == [$b[0][] | {id, idempotency_key, control_id, report_id}]' \
  "$T/ob.after.json" >/dev/null || fail "b: the outbox rows changed identity across the kill"
ok "b: SIGKILL with 4 reports pending; after the restart all delivered, same MSH-10 / DiagnosticReport identifier as before"
stop_pid "$DAEMON_PID"

# ---------------------------------------------------------------------------------------------
# c. a hanging receiver does not delay scoring
# ---------------------------------------------------------------------------------------------
hook hc --actions hang:30
QUIET=0 HOOK_TIMEOUT=5 conf "http://127.0.0.1:$HOOK_PORT/c"
start_daemon fc
make_study "$T/c1" 1
scu c1 -- "$T/c1/img1.dcm" || fail "storescu c1"
wait_jq 20 "a report is hanging at the receiver" "requests $HOOK_LOG" 'length >= 1'
make_study "$T/c2" 3
t0=$(date +%s%N)
scu c2 -- "$T/c2"/img*.dcm || fail "storescu c2"
wait_rows 4 20
t1=$(date +%s%N)
outbox_json >"$T/oc.json"
jq -e 'all(.state == "pending") and all(.delivered_at == null)' "$T/oc.json" >/dev/null ||
  fail "c: a report was not hanging any more (the check would prove nothing)"
jq -e -s --arg s "$STUDY_UID" '[.[] | select(.state == "classified")] | length == 4' "$T/audit.json" >/dev/null ||
  fail "c: not every row classified"
wall=$(((t1 - t0) / 1000000))
/usr/bin/python3 - "$T/audit.json" "$wall" "${CXR_SANITIZE:-0}" <<'EOF' || fail "c: scoring waited on the sender"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows.sort(key=lambda r: r["id"])
last3 = rows[-3:]
tot = [sum(v for v in r["timings_ms"].values() if v and v > 0) for r in last3]
commit = [r["timings_ms"].get("commit", 0) for r in last3]
slow = sys.argv[3] in ("1", "ON", "TRUE", "true")  # ASan -O0: inference ~1 s per image
print("c: 3 images stored and classified in %s ms wall (storescu start to last row final); "
      "per-image receive..commit ms %s; waiting for the loop thread (commit) ms %s"
      % (sys.argv[2], [round(t) for t in tot], [round(c, 1) for c in commit]), file=sys.stderr)
# The loop thread (the one SQLite writer, which also runs the sender) never stalled: each result
# was committed within 500 ms of being ready; and all 3 were final well within the 5 s the
# hanging request holds the sender (release: within a couple of seconds).
ok = max(commit) < 500 and int(sys.argv[2]) < (15000 if slow else 4000) and (slow or max(tot) < 2000)
sys.exit(0 if ok else 1)
EOF
ok "c: with a report hanging at the receiver, 3 new images classified within ${wall} ms"
stop_pid "$DAEMON_PID"
[ "$STOP_RC" = 0 ] || fail "c: daemon exited $STOP_RC on SIGTERM with a hanging request"

# ---------------------------------------------------------------------------------------------
# d. correction: the same study scored again by another model
# ---------------------------------------------------------------------------------------------
"$CXRTRAIN" export --model "$CXR_SOURCE_DIR/model/weights/cxr4-default.cxrm" --out "$T/other.cxrm" \
  --thresholds "COVID-19=0.5" >"$T/export.out" 2>&1 || { cat "$T/export.out"; fail "cxrtriage-train export"; }
hook hd
conf "http://127.0.0.1:$HOOK_PORT/d"
start_daemon fd
make_study "$T/d1" 1
scu d1 -- "$T/d1/img1.dcm" || fail "storescu d1"
wait_jq 30 "first reports delivered" outbox_json 'length == 2 and all(.state == "delivered")'
outbox_json >"$T/od1.json"
first_hl7=$(jq -r '.[] | select(.format == "hl7") | .id' "$T/od1.json")
first_fhir=$(jq -r '.[] | select(.format == "fhir") | .id' "$T/od1.json")
first_ctl=$(jq -r '.[] | select(.format == "hl7") | .control_id' "$T/od1.json")
first_rid=$(jq -r '.[] | select(.format == "fhir") | .report_id' "$T/od1.json")
first_digest=$(jq -r '.[0].model_digest' "$T/od1.json")
stop_pid "$DAEMON_PID"
conf "http://127.0.0.1:$HOOK_PORT/d" "[model]
path = $T/other.cxrm
[dicom]
duplicates = rescore"
start_daemon fd
grep -q "model.loaded path='$T/other.cxrm'" "$DAEMON_LOG" || fail "d: the other model is not loaded"
scu d2 -- "$T/d1/img1.dcm" || fail "storescu d2 (re-send)"
wait_jq 30 "correction reports delivered" outbox_json 'length == 4 and all(.state == "delivered")'
outbox_json >"$T/od2.json"
jq -e --argjson h "$first_hl7" --argjson f "$first_fhir" --arg d "$first_digest" '
  ([.[] | select(.is_correction)] | length) == 2
  and ([.[] | select(.is_correction and .format == "hl7")][0] | .corrects == $h and .model_digest != $d)
  and ([.[] | select(.is_correction and .format == "fhir")][0] | .corrects == $f and .model_digest != $d)
  and ([.[] | select(.is_correction | not)] | all(.corrects == null))
  and ([.[].idempotency_key] | unique | length) == 4' "$T/od2.json" >/dev/null ||
  { jq -c '.[] | {id, format, is_correction, corrects, model_digest, idempotency_key}' "$T/od2.json"; fail "d: outbox correction links"; }
new_ctl=$(jq -r '.[] | select(.is_correction and .format == "hl7") | .control_id' "$T/od2.json")
key_hl7=$(jq -r '.[] | select(.is_correction and .format == "hl7") | .idempotency_key' "$T/od2.json")
key_fhir=$(jq -r '.[] | select(.is_correction and .format == "fhir") | .idempotency_key' "$T/od2.json")
[ "$new_ctl" != "$first_ctl" ] || fail "d: the correction reuses MSH-10 $first_ctl"
requests "$HOOK_LOG" >"$T/hd.req.json"
jq -r --arg k "$key_hl7" '[.[] | select(.headers["Idempotency-Key"] == $k)][0].body' "$T/hd.req.json" | tr '\r' '\n' >"$T/corr.hl7"
jq -r --arg k "$key_fhir" '[.[] | select(.headers["Idempotency-Key"] == $k)][0].body' "$T/hd.req.json" >"$T/corr.json"
[ "$(awk -F'|' '/^MSH\|/ { print $10 }' "$T/corr.hl7")" = "$new_ctl" ] || fail "d: received correction MSH-10"
[ "$(awk -F'|' '/^OBR\|/ { print $26 }' "$T/corr.hl7")" = C ] || { cat "$T/corr.hl7"; fail "d: OBR-25 is not C"; }
grep -E "^NTE\|" "$T/corr.hl7" | grep -q "$first_ctl" || { cat "$T/corr.hl7"; fail "d: no NTE names the previous MSH-10 $first_ctl"; }
awk -F'|' '/^OBX\|/ { if ($12 != "C") bad = 1 } END { exit bad }' "$T/corr.hl7" || fail "d: an OBX-11 is not C"
jq -e --arg r "$first_rid" '[.entry[].resource | select(.resourceType == "DiagnosticReport")] | length == 1
  and .[0].status == "corrected" and .[0].identifier[0].value == $r' "$T/corr.json" >/dev/null ||
  fail "d: FHIR DiagnosticReport not corrected / identifier changed"
jq -e '[.entry[].resource | select(.resourceType == "Observation")] | all(.status == "corrected")' "$T/corr.json" >/dev/null ||
  fail "d: an Observation of the correction is not corrected"
ok "d: correction by another model: OBR-25 C, NTE names $first_ctl, DiagnosticReport corrected ($first_rid), corrects = $first_hl7/$first_fhir"
stop_pid "$DAEMON_PID"
[ "$STOP_RC" = 0 ] || fail "daemon exited $STOP_RC on SIGTERM"
echo "all daemon report fault checks passed"
