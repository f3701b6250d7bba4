#!/usr/bin/env bash
# The operator's endpoints of the running daemon: /healthz; /readyz with its five checks, and
# failing for real (a spool watermark above the free space: 503 naming spool_space); /metrics
# passing `promtool check metrics` (Debian's prometheus) before and after storescu sent a real
# chest radiograph and a real non-chest CR, with the counters, the stage histograms, the score
# histogram and the model's digest moving as they must; the embedded page with ETag / 304 and
# its security headers.
. "$(dirname "$0")/lib.sh"
need_data dicom
command -v jq >/dev/null || skip "needs jq: scripts/deps.sh test"
command -v promtool >/dev/null || skip "needs promtool (Debian package prometheus): scripts/deps.sh test"
command -v storescu >/dev/null || skip "needs DCMTK's storescu: scripts/deps.sh test"
D="$CXR_DATA_DIR/dicom"

start_daemon ops
U="http://127.0.0.1:$DAEMON_HTTP"
C=(curl -sS -m 30)
grep -q "http.listen url=http://127.0.0.1:$DAEMON_HTTP/" "$DAEMON_LOG" || fail "the log does not name the URL"

[ "$("${C[@]}" -o "$T/h.json" -w '%{http_code}' "$U/healthz")" = 200 ] || fail "healthz"
jq -e '. == {"status": "ok"}' "$T/h.json" >/dev/null || fail "healthz body: $(cat "$T/h.json")"
[ "$("${C[@]}" -o "$T/r.json" -w '%{http_code}' "$U/readyz")" = 200 ] || fail "readyz: $(cat "$T/r.json")"
jq -e '.ready == true and ([.checks[].name] == ["model","database","spool_space","workers","listener"])
       and ([.checks[].ok] | all) and (.checks[3].detail == "1 of 1 alive")' "$T/r.json" >/dev/null ||
  fail "readyz body: $(cat "$T/r.json")"
ok "healthz and readyz (5 checks ok)"

metric() { # NAME{LABELS} from $T/m.txt (0 when absent)
  awk -v k="$1" '$1 == k { print $2; f = 1 } END { if (!f) print 0 }' "$T/m.txt"
}
"${C[@]}" -D "$T/m.hdr" -o "$T/m.txt" "$U/metrics" || fail "metrics"
grep -qi '^content-type: text/plain; version=0.0.4' "$T/m.hdr" || fail "metrics content type: $(cat "$T/m.hdr")"
promtool check metrics <"$T/m.txt" >"$T/promtool.out" 2>&1 || { cat "$T/promtool.out"; fail "promtool check metrics (idle)"; }
digest=$("$CXRTRIAGE" classify --json "$D/cxr_siim_8bit_explicit_le.dcm" | jq -r .model_digest)
grep -q "^cxrtriage_model_info{digest=\"$digest\",name=\"cxr4-default.cxrm\"} 1$" "$T/m.txt" ||
  fail "model_info: $(grep model_info "$T/m.txt")"
r0=$(metric cxrtriage_instances_received_total); c0=$(metric cxrtriage_instances_classified_total)
s0=$(metric cxrtriage_instances_skipped_total)
inf0=$(metric 'cxrtriage_stage_duration_seconds_count{stage="infer"}')
sc0=$(metric 'cxrtriage_score_count{class="Normal"}')
ok "metrics pass promtool while idle"

cp "$D/cxr_siim_8bit_explicit_le.dcm" "$T/chest.dcm"
cp "$D/pydicomdata_RG3_J2KR_CR.dcm" "$T/extremity.dcm"
new_uids "$T/chest.dcm" "$T/extremity.dcm"
ts_profiles "$T/ts.cfg"
scu send -- "$T/chest.dcm" || fail "storescu: $(tail -5 "$T/send.scu")"
scu send_j2k -xf "$T/ts.cfg" J2KL -- "$T/extremity.dcm" || fail "storescu J2K: $(tail -5 "$T/send_j2k.scu")"
wait_rows 2
"${C[@]}" -o "$T/m.txt" "$U/metrics" || fail "metrics"
promtool check metrics <"$T/m.txt" >"$T/promtool.out" 2>&1 || { cat "$T/promtool.out"; fail "promtool check metrics (after traffic)"; }
[ "$(metric cxrtriage_instances_received_total)" -eq $((r0 + 2)) ] || fail "received: $(metric cxrtriage_instances_received_total)"
[ "$(metric cxrtriage_instances_classified_total)" -eq $((c0 + 1)) ] || fail "classified"
[ "$(metric cxrtriage_instances_skipped_total)" -eq $((s0 + 1)) ] || fail "skipped"
[ "$(metric 'cxrtriage_stage_duration_seconds_count{stage="infer"}')" -eq $((inf0 + 1)) ] || fail "infer histogram"
[ "$(metric 'cxrtriage_stage_duration_seconds_count{stage="receive"}')" -ge 2 ] || fail "receive histogram"
[ "$(metric 'cxrtriage_stage_duration_seconds_bucket{stage="infer",le="+Inf"}')" -eq $((inf0 + 1)) ] || fail "+Inf bucket"
[ "$(metric 'cxrtriage_score_count{class="Normal"}')" -eq $((sc0 + 1)) ] || fail "score histogram"
t=$(( $(metric 'cxrtriage_triage_total{triage="urgent"}') + $(metric 'cxrtriage_triage_total{triage="routine"}') + $(metric 'cxrtriage_triage_total{triage="normal"}') ))
[ "$t" -eq 1 ] || fail "triage counter sum $t"
grep -q '^cxrtriage_outbox_reports{state="pending"} ' "$T/m.txt" || fail "outbox gauge"
grep -q '^cxrtriage_associations_refused_total 0$' "$T/m.txt" || fail "refused"
grep -q '^cxrtriage_queue_depth ' "$T/m.txt" || fail "queue depth"
grep -q '^cxrtriage_process_start_time_seconds ' "$T/m.txt" || fail "start time"
ok "after storescu sent a chest and a non-chest CR: received +2, classified +1, skipped +1, infer and score histograms +1; promtool passes"

# The page: ETag and 304, no-cache, CSP, nosniff
"${C[@]}" -D "$T/p.hdr" -o "$T/index.html" "$U/" || fail "GET /"
grep -qi '^content-type: text/html' "$T/p.hdr" || fail "page type"
grep -qi "^content-security-policy: default-src 'self'" "$T/p.hdr" || fail "CSP"
grep -qi '^x-content-type-options: nosniff' "$T/p.hdr" || fail "nosniff"
grep -qi '^cache-control: no-cache' "$T/p.hdr" || fail "cache-control"
etag=$(sed -n 's/^[Ee][Tt][Aa][Gg]: *\(.*\)\r$/\1/p' "$T/p.hdr")
[ -n "$etag" ] || fail "no ETag"
[ "$("${C[@]}" -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" "$U/index.html")" = 304 ] || fail "304"
[ "$("${C[@]}" -o /dev/null -w '%{http_code}' -H 'If-None-Match: "other"' "$U/")" = 200 ] || fail "200 on another etag"
ok "the page: ETag $etag -> 304, no-cache, CSP, nosniff"
stop_pid "$DAEMON_PID"
[ "$STOP_RC" -eq 0 ] || fail "daemon exit $STOP_RC"

# readyz fails for real: a watermark above the disk's free space. The listener refuses
# associations then, so start the daemon by hand (start_daemon waits for a C-ECHO).
printf '[daemon]\nmin_free_mb = 1048576\n[report]\nmode = shadow\n[http]\ntimeout_s = 1\nmax_connections = 2\nthreads = 1\n' >"$T/full.conf"
hp=$(free_port)
start_bg full "$CXRTRIAGED" --config "$T/full.conf" --port "$(free_port)" --http-port "$hp" \
  --state-dir "$T/full.state"
wait_log "$T/full.log" "daemon.ready" 30
code=$("${C[@]}" -o "$T/r.json" -w '%{http_code}' "http://127.0.0.1:$hp/readyz")
[ "$code" = 503 ] || fail "readyz with a full disk: $code $(cat "$T/r.json")"
jq -e '.ready == false and ([.checks[] | select(.ok == false) | .name] == ["spool_space"])
       and .error.code == "not_ready" and (.error.message | test("spool_space"))
       and (.checks[2].detail | test("watermark 1048576 MB"))' "$T/r.json" >/dev/null ||
  fail "readyz 503 body: $(cat "$T/r.json")"
[ "$("${C[@]}" -o /dev/null -w '%{http_code}' "http://127.0.0.1:$hp/healthz")" = 200 ] || fail "healthz stays 200"
ok "readyz 503 naming spool_space when free space is under min_free_mb; healthz still 200"

# Connection limits (threads = 1: MHD spreads the limit over its threads): with max_connections = 2 a third connection is
# not served while two idle ones are open; timeout_s = 1 closes those, then it is served.
/usr/bin/python3 - "$hp" <<'PY' || fail "connection limit and idle timeout"
import socket, sys, time
port = int(sys.argv[1])
req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
t0 = time.time()
a = socket.create_connection(("127.0.0.1", port), timeout=5)
b = socket.create_connection(("127.0.0.1", port), timeout=5)
time.sleep(0.2)
c = socket.create_connection(("127.0.0.1", port), timeout=5)
c.sendall(req)
c.settimeout(0.5)
try:
    got = c.recv(100)
    assert got == b"", f"a third connection was served while two were open: {got!r}"
except socket.timeout:
    pass  # waits: not served while the two idle ones hold the slots
a.settimeout(5)
assert a.recv(100) == b"", "idle connection got data"
waited = time.time() - t0
assert waited < 3.5, f"idle connection closed after {waited:.1f} s (timeout_s = 1)"
c.settimeout(5)
got = c.recv(100)
assert got.startswith(b"HTTP/1.1 200"), f"the third connection, once slots were free: {got!r}"
print(f"third connection waited; idle ones closed after {waited:.1f} s; then it was served")
PY
ok "max_connections = 2: a third connection waits while two idle ones are open; timeout_s = 1 closes them, then it is served"
