#!/usr/bin/env bash
# test_daemon_reports.sh - a new user's path through the REAL daemon: storescu sends a study,
# cxrtriaged scores it and delivers its reports, checked at the receiving end with the real
# HL7 and FHIR validators (tests/validators, as test_reports.sh runs them).
#   1. [webhook] to webhook_receiver.py, format both, bearer token and HMAC key: one study of 2
#      images -> exactly one HL7 and one FHIR request, right Content-Type, Authorization, a
#      valid HMAC (verified by the receiver), the Idempotency-Key that `outbox list` shows; the
#      ORU passes python-hl7 + npm hl7v2 strict + ORU_R01 structure, the Bundle the three FHIR
#      validators + no empty values; the FHIR scores equal the ledger's study result (highest
#      per class over the 2 images) to 4 decimals.
#   2. No destination: the two reports are files under <state_dir>/reports/ (no temporary left
#      beside them), and they validate too.
#   3. Shadow mode: nothing sent, no file written, nothing queued.
#   4. [mllp] to mllp_peer.py: AA -> delivered with the outbox's MSH-10; AE -> dead (outbox list
#      --state dead), then `outbox retry ID` with the peer answering AA -> delivered with the
#      SAME MSH-10 and idempotency key.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/report_lib.sh"
need_report_tools

val="$CXR_SOURCE_DIR/tests/validators"
vdir="$CXR_BUILD_DIR/validators"
rc=0
bash "$val/setup.sh" "$vdir" >"$T/setup.out" 2>&1 || rc=$?
[ $rc -eq 77 ] && skip "$(cat "$T/setup.out")"
[ $rc -eq 0 ] || { cat "$T/setup.out"; fail "validator setup failed ($rc)"; }

# validate DIR: every DIR/*.hl7 through python-hl7 + hl7v2 strict + ORU_R01 structure, every
# DIR/*.json through the three FHIR validators + the jq no-empty-values check.
validate() {
  local dir=$1 f e
  /usr/bin/python3 - "$dir"/*.hl7 <<'EOF' || fail "python-hl7 parse of $dir/*.hl7"
import sys, hl7
for p in sys.argv[1:]:
    m = hl7.parse(open(p, newline="").read())
    assert str(m.segment("MSH")[9]) == "ORU^R01^ORU_R01", (p, str(m.segment("MSH")[9]))
    assert str(m.segment("MSH")[12]) == "2.5.1", p
    for seg in ("PID", "ORC", "OBR", "OBX"):
        m.segment(seg)
print("python-hl7: %d ORU parsed" % (len(sys.argv) - 1))
EOF
  node "$vdir/check_hl7.mjs" "$dir"/*.hl7 >"$T/hl7v2.out" 2>&1 || { cat "$T/hl7v2.out"; fail "hl7v2 strict / ORU_R01 structure ($dir)"; }
  node "$vdir/check_fhir.cjs" "$dir"/*.json >"$T/fhir.out" 2>&1 || { cat "$T/fhir.out"; fail "FHIR validators ($dir)"; }
  for f in "$dir"/*.json; do
    e=$(jq '[paths(((type=="array" or type=="object") and length==0) or (type=="string" and length==0) or type=="null")] | length' "$f")
    [ "$e" = 0 ] || fail "$(basename "$f"): $e empty values (jq)"
  done
}

# ---------------------------------------------------------------------------------------------
# 1. webhook, both formats, token + HMAC
# ---------------------------------------------------------------------------------------------
hook h1 --token tok-e2e --hmac-key 'hm@c-k3y'
DAEMON_CONF="[triage]
study_quiet_seconds = 1
[report]
mode = send
[webhook]
url = http://127.0.0.1:$HOOK_PORT/ehr/cxr
format = both
bearer_token = tok-e2e
hmac_key = hm@c-k3y"
start_daemon d1
make_study "$T/s1" 2 "$SRC_A" "$SRC_B"
scu s1 -- "$T/s1"/img1.dcm "$T/s1"/img2.dcm || { cat "$T/s1.scu"; fail "storescu s1"; }
[ "$(scu_successes s1)" = 2 ] || fail "storescu: not 2 Successes"
wait_rows 2 60
wait_jq 30 "2 reports delivered" outbox_json 'length == 2 and all(.state == "delivered")'
sleep 1.5 # nothing more may arrive (a duplicate send would show here)
requests "$HOOK_LOG" >"$T/h1.req.json"
outbox_json >"$T/ob1.json"
jq -e 'length == 2' "$T/h1.req.json" >/dev/null || { jq -c '.[] | {n,action,path}' "$T/h1.req.json"; fail "receiver got $(jq length "$T/h1.req.json") requests, wanted exactly 2"; }
jq -e '[.[].headers["Content-Type"]] | sort == ["application/fhir+json", "x-application/hl7-v2+er7"]' "$T/h1.req.json" >/dev/null ||
  fail "content types: $(jq -c '[.[].headers["Content-Type"]]' "$T/h1.req.json")"
jq -e 'all(.method == "POST" and .path == "/ehr/cxr" and .headers["Authorization"] == "Bearer tok-e2e"
  and .token_ok == true and .hmac_ok == true and (.headers["X-Cxrtriage-Signature"] | test("^sha256=[0-9a-f]{64}$"))
  and (.ts_skew_s | fabs) <= 5 and (.headers["User-Agent"] | startswith("cxrtriage/")))' "$T/h1.req.json" >/dev/null ||
  { jq -c '.[] | del(.body)' "$T/h1.req.json"; fail "method, path, Authorization or HMAC"; }
ok "webhook: exactly one HL7 and one FHIR POST, Bearer token, HMAC verified by the receiver"
# Idempotency keys: those the outbox shows, one per format, each sent exactly once.
jq -e --slurpfile ob "$T/ob1.json" '([.[].headers["Idempotency-Key"]] | sort) == ([$ob[0][].idempotency_key] | sort)
  and ([.[].headers["Idempotency-Key"]] | unique | length) == 2
  and all(.headers["Idempotency-Key"] | test("^cxr-[0-9a-f]{32}"))' "$T/h1.req.json" >/dev/null ||
  fail "Idempotency-Key: received $(jq -c '[.[].headers["Idempotency-Key"]]' "$T/h1.req.json"), outbox $(jq -c '[.[].idempotency_key]' "$T/ob1.json")"
jq -e --arg s "$STUDY_UID" 'all(.study_instance_uid == $s and .attempts == 0 and .delivered_at != null and .last_status == 200 and .is_correction == false)' "$T/ob1.json" >/dev/null ||
  { jq -c . "$T/ob1.json"; fail "outbox rows"; }
ok "Idempotency-Key of each request is the one \`outbox list\` shows ($(jq -r '[.[].idempotency_key] | join(", ")' "$T/ob1.json"))"
mkdir "$T/got1"
jq -r '.[] | select(.headers["Content-Type"] == "x-application/hl7-v2+er7") | .body' "$T/h1.req.json" | head -c -1 >"$T/got1/oru.hl7"
jq -r '.[] | select(.headers["Content-Type"] == "application/fhir+json") | .body' "$T/h1.req.json" >"$T/got1/bundle.json"
# the ORU's MSH-10 is the outbox's control id
ctl=$(jq -r '.[] | select(.format == "hl7") | .control_id' "$T/ob1.json")
[ "$(msh10 "$(cat "$T/got1/oru.hl7")")" = "$ctl" ] || fail "MSH-10 $(msh10 "$(cat "$T/got1/oru.hl7")") != outbox control id $ctl"
validate "$T/got1"
ok "received ORU: python-hl7, hl7v2 strict, ORU_R01 structure; Bundle: 3 FHIR validators, no empty values"
# Scores: the Bundle's score Observations == highest per class over the 2 ledger rows (4 dp).
/usr/bin/python3 - "$T/audit.json" "$T/got1/bundle.json" "$STUDY_UID" <<'EOF' || fail "FHIR scores != ledger study result"
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r.get("study_instance_uid", r.get("study_uid")) == sys.argv[3]] or rows
assert len(rows) == 2 and all(r["state"] == "classified" for r in rows), [r["state"] for r in rows]
want = {}
for r in rows:
    for k, v in r["scores"].items():
        want[k] = max(want.get(k, 0.0), float(v))
code = lambda n: re.sub(r"[^A-Z0-9]+", "_", n.upper()).strip("_") or "_"
b = json.load(open(sys.argv[2]))
got = {}
for e in b["entry"]:
    res = e["resource"]
    if res["resourceType"] == "Observation" and "valueQuantity" in res:
        codes = [c["code"] for c in res["code"].get("coding", [])]
        got[tuple(codes)] = res["valueQuantity"]["value"]
bad = []
for k, v in want.items():
    hit = [val for codes, val in got.items() if code(k) + "_PROB" in codes]
    if len(hit) != 1:
        bad.append(f"{k}: {len(hit)} Observations (codes {list(got)})")
    elif abs(hit[0] - round(v, 4)) > 1e-9:
        bad.append(f"{k}: FHIR {hit[0]} ledger max {v:.6f}")
if len(got) != len(want):
    bad.append(f"{len(got)} score Observations for {len(want)} classes")
print("scores:", {k: round(v, 4) for k, v in want.items()}, file=sys.stderr)
for x in bad:
    print("  " + x, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
ok "FHIR Observation scores = the ledger's highest score per class over the 2 images (4 dp)"
stop_pid "$DAEMON_PID"

# ---------------------------------------------------------------------------------------------
# 2. no destination: files under <state_dir>/reports/
# ---------------------------------------------------------------------------------------------
DAEMON_CONF="[triage]
study_quiet_seconds = 1
[report]
mode = send"
start_daemon d2
grep -q "report.files" "$DAEMON_LOG" || fail "no report.files notice at start"
make_study "$T/s2" 2 "$SRC_A" "$SRC_B"
scu s2 -- "$T/s2"/img1.dcm "$T/s2"/img2.dcm || fail "storescu s2"
wait_rows 2 60
wait_jq 30 "2 reports written" outbox_json 'length == 2 and all(.state == "delivered")'
[ "$(grep -c 'report.written' "$DAEMON_LOG")" = 2 ] || fail "wanted 2 report.written lines"
ls -la "$DAEMON_STATE/reports" >"$T/reports.ls"
n=$(find "$DAEMON_STATE/reports" -type f | wc -l)
[ "$n" = 2 ] || { cat "$T/reports.ls"; fail "$n files under reports/, wanted 2 (a temporary left behind?)"; }
ls "$DAEMON_STATE/reports" | grep -Eq '^report-[0-9]{6}-study\.hl7$' || { cat "$T/reports.ls"; fail "no report-NNNNNN-study.hl7"; }
ls "$DAEMON_STATE/reports" | grep -Eq '^report-[0-9]{6}-study\.json$' || { cat "$T/reports.ls"; fail "no report-NNNNNN-study.json"; }
# each file is exactly the outbox's body (complete, not a partial write)
for f in "$DAEMON_STATE/reports"/*; do
  id=$((10#$(basename "$f" | sed -E 's/^report-0*([0-9]+)-.*/\1/')))
  "$CXRTRIAGE" outbox show "$id" --body --state-dir "$DAEMON_STATE" --format json | jq -j .body >"$T/body.$id"
  cmp -s "$f" "$T/body.$id" || fail "$(basename "$f") differs from report $id's body in the outbox"
  [ "$(stat -c %a "$f")" = 600 ] || fail "$(basename "$f") mode $(stat -c %a "$f"), wanted 600"
done
mkdir "$T/got2"
cp "$DAEMON_STATE/reports"/*.hl7 "$DAEMON_STATE/reports"/*.json "$T/got2/"
validate "$T/got2"
grep -q "$STUDY_UID" "$T/got2"/*.json || fail "the Bundle file does not name the study"
ok "no destination: 2 complete files (= outbox bodies, mode 600, no temporary) under reports/, both validate"
stop_pid "$DAEMON_PID"

# ---------------------------------------------------------------------------------------------
# 3. shadow: nothing sent, nothing written
# ---------------------------------------------------------------------------------------------
before=$(grep -c '"kind": "request"' "$HOOK_LOG")
DAEMON_CONF="[triage]
study_quiet_seconds = 1
[report]
mode = shadow
[webhook]
url = http://127.0.0.1:$HOOK_PORT/ehr/cxr
format = both"
start_daemon d3
make_study "$T/s3" 1
scu s3 -- "$T/s3"/img1.dcm || fail "storescu s3"
wait_rows 1 60
wait_log "$DAEMON_LOG" "study.complete.*report=shadow" 20
sleep 1.5 # two sender ticks and more: anything queued would have been sent
[ "$(grep -c '"kind": "request"' "$HOOK_LOG")" = "$before" ] || fail "shadow mode sent a request"
[ -z "$(find "$DAEMON_STATE/reports" -type f 2>/dev/null)" ] || fail "shadow mode wrote a report file"
[ "$(outbox_json | jq length)" = 0 ] || fail "shadow mode queued reports"
ok "shadow: study complete, nothing sent, no file, nothing queued"
stop_pid "$DAEMON_PID"

# ---------------------------------------------------------------------------------------------
# 4. MLLP: AA delivers; AE -> dead; outbox retry with the peer on AA -> same MSH-10 and key
# ---------------------------------------------------------------------------------------------
mllp m_aa AA
mport=$MLLP_PORT
DAEMON_CONF="[triage]
study_quiet_seconds = 1
[report]
mode = send
[mllp]
host = 127.0.0.1
port = $mport
retry_initial = 1
retry_max = 2"
start_daemon d4
make_study "$T/s4" 1
scu s4 -- "$T/s4"/img1.dcm || fail "storescu s4"
wait_jq 30 "MLLP report delivered" outbox_json 'length == 1 and .[0].state == "delivered"'
ctl=$(outbox_json | jq -r '.[0].control_id')
jq -e -s --arg c "$ctl" 'length == 1 and .[0].control_id == $c' "$MLLP_LOG" >/dev/null ||
  { cat "$MLLP_LOG"; fail "the MLLP peer did not get exactly one ORU with MSH-10 $ctl"; }
mkdir "$T/got4"
jq -j -s '.[0].message' "$MLLP_LOG" >"$T/got4/mllp.hl7"
node "$vdir/check_hl7.mjs" "$T/got4/mllp.hl7" >"$T/hl7v2.out" 2>&1 || { cat "$T/hl7v2.out"; fail "MLLP ORU: hl7v2 strict"; }
grep -q "$STUDY_UID" "$T/got4/mllp.hl7" || fail "MLLP ORU does not name the study"
ok "MLLP AA: one ORU (MSH-10 $ctl, hl7v2 strict) delivered"

stop_pid "$MLLP_PID"
mllp m_ae AE "$mport"
make_study "$T/s5" 1
uid5=$STUDY_UID
scu s5 -- "$T/s5"/img1.dcm || fail "storescu s5"
wait_jq 30 "the AE'd report is dead" "outbox_json --state dead" 'length == 1'
outbox_json --state dead >"$T/dead.json"
jq -e --arg s "$uid5" '.[0].study_instance_uid == $s' "$T/dead.json" >/dev/null || fail "dead report is not the second study's"
wait_log "$DAEMON_LOG" "report.dead" 5
dead_id=$(jq -r '.[0].id' "$T/dead.json"); dead_ctl=$(jq -r '.[0].control_id' "$T/dead.json")
dead_key=$(jq -r '.[0].idempotency_key' "$T/dead.json")
jq -e -s --arg c "$dead_ctl" 'length >= 1 and all(.control_id == $c)' "$MLLP_LOG" >/dev/null || fail "AE peer log"
ok "MLLP AE: report $dead_id dead, visible in \`outbox list --state dead\`"
stop_pid "$MLLP_PID"
mllp m_aa2 AA "$mport"
"$CXRTRIAGE" outbox retry "$dead_id" --state-dir "$DAEMON_STATE" >"$T/retry.out" 2>&1 || { cat "$T/retry.out"; fail "outbox retry $dead_id"; }
wait_jq 30 "retried report delivered" "$CXRTRIAGE outbox show $dead_id --state-dir $DAEMON_STATE --format json" '.state == "delivered"'
"$CXRTRIAGE" outbox show "$dead_id" --state-dir "$DAEMON_STATE" --format json >"$T/retried.json"
jq -e --arg c "$dead_ctl" --arg k "$dead_key" '.control_id == $c and .idempotency_key == $k' "$T/retried.json" >/dev/null ||
  fail "after retry: control id / key changed"
jq -e -s --arg c "$dead_ctl" 'length == 1 and .[0].control_id == $c and .[0].mode == "AA"' "$MLLP_LOG" >/dev/null ||
  { cat "$MLLP_LOG"; fail "the AA peer did not get the retried ORU with MSH-10 $dead_ctl"; }
[ "$(msh10 "$(jq -r -s '.[0].message' "$MLLP_LOG")")" = "$dead_ctl" ] || fail "MSH-10 in the retried message"
ok "outbox retry $dead_id: delivered to the AA peer with the same MSH-10 ($dead_ctl) and idempotency key"
stop_pid "$DAEMON_PID"
[ "$STOP_RC" = 0 ] || fail "daemon exited $STOP_RC on SIGTERM"
echo "all daemon report checks passed"
