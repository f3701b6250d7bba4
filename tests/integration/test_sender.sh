#!/usr/bin/env bash
# test_sender.sh - the report sender (hl7.h, snd_*) against real peers on 127.0.0.1:
# tests/tools/webhook_receiver.py (HTTP and HTTPS) and tests/tools/mllp_peer.py (python3-hl7),
# driven by snd_drive, which polls snd_fd() in its own epoll loop and prints each result as JSON.
# Every outcome of the policy in hl7.h is produced by a real peer: delivered with all headers
# (HMAC verified by the receiver), keep-alive, 500, 429 + Retry-After (seconds and HTTP-date),
# 400, 301, a hanging receiver (while another destination keeps flowing), a response cut
# mid-way, untrusted and trusted TLS, connection refused, and the MLLP ACK cases.
. "$(dirname "$0")/lib.sh"

drive="$CXR_BUILD_DIR/hl7/snd_drive"
tools="$CXR_SOURCE_DIR/tests/tools"
[ -x "$drive" ] || fail "no $drive (build the snd_drive target)"
command -v jq >/dev/null || skip "jq is not installed (scripts/deps.sh test)"
command -v openssl >/dev/null || skip "openssl is not installed (scripts/deps.sh test)"
/usr/bin/python3 -c 'import hl7.mllp' 2>/dev/null || skip "python3-hl7 is not installed (scripts/deps.sh test)"

# wait_file FILE [SECONDS]
wait_file() {
  local f=$1 secs=${2:-10}
  for _ in $(seq $((secs * 20))); do [ -f "$f" ] && return 0; sleep 0.05; done
  fail "timed out waiting for $f"
}

# hook NAME ARGS...: starts a webhook receiver logging to $T/NAME.jsonl; sets PORT.
hook() {
  local name=$1; shift
  PORT=$(free_port)
  start_bg "$name" /usr/bin/python3 "$tools/webhook_receiver.py" --port "$PORT" \
    --log "$T/$name.jsonl" --ready "$T/$name.ready" --lifetime 120 "$@"
  wait_file "$T/$name.ready"
}

# mllp NAME MODE: starts an MLLP peer; sets PORT.
mllp() {
  local name=$1 mode=$2
  PORT=$(free_port)
  start_bg "$name" /usr/bin/python3 "$tools/mllp_peer.py" --port "$PORT" --mode "$mode" \
    --log "$T/$name.jsonl" --ready "$T/$name.ready" --lifetime 120
  wait_file "$T/$name.ready"
}

# run OUT ARGS...: snd_drive ARGS (bounded by -t) with its JSON lines in $T/OUT.out.
run() {
  local out=$1 rc=0; shift
  "$drive" "$@" >"$T/$out.out" 2>"$T/$out.err" || rc=$?
  [ $rc -eq 0 ] || { cat "$T/$out.out" "$T/$out.err"; fail "snd_drive ($out) exited $rc"; }
}

# expect OUT JQ_FILTER WHAT: the filter over the results (slurped, summary dropped) must hold.
expect() {
  local out=$1 filter=$2 what=$3
  jq -e -s "[.[] | select(.summary == null)] | $filter" "$T/$out.out" >/dev/null ||
    { cat "$T/$out.out"; fail "$out: $what"; }
  ok "$out: $what"
}

# ---- webhook: delivered, with every header right ----
hook h_ok --token s3cret --hmac-key 'k3y!'
run ok -d "name=default,url=http://127.0.0.1:$PORT/fhir,token=s3cret,hmac=k3y!" -s 0:1 -t 20
expect ok 'length == 1 and .[0].outcome == "DELIVERED" and .[0].http_status == 200 and .[0].detail == "HTTP 200"' \
  "200 -> DELIVERED"
jq -e -s '.[0] | .method == "POST" and .path == "/fhir"
  and .headers["Content-Type"] == "application/fhir+json"
  and .headers["Idempotency-Key"] == "cxr-test-0"
  and .headers["Authorization"] == "Bearer s3cret" and .token_ok == true
  and (.headers["User-Agent"] | startswith("cxrtriage/"))
  and (.headers["X-Cxrtriage-Signature"] | test("^sha256=[0-9a-f]{64}$"))
  and .hmac_ok == true and (.ts_skew_s | fabs) <= 5
  and (.body | fromjson | .id) == "r0"
  and (.headers | has("Expect") | not)' <(grep '"kind": "request"' "$T/h_ok.jsonl") >/dev/null ||
  { cat "$T/h_ok.jsonl"; fail "request headers"; }
ok "headers: POST, Content-Type, Idempotency-Key, Bearer, User-Agent, HMAC verified by the receiver"
# negative control: the receiver's HMAC check rejects a signature made with another key
run badkey -d "name=default,url=http://127.0.0.1:$PORT/fhir,token=s3cret,hmac=other" -s 0:1 -t 20
[ "$(grep '"kind": "request"' "$T/h_ok.jsonl" | tail -n 1 | jq .hmac_ok)" = false ] ||
  fail "the receiver accepted an HMAC made with the wrong key"
ok "receiver rejects an HMAC made with another key (the check is real)"

# ---- keep-alive: 20 sequential requests reuse the connection ----
hook h_keep
run keep -d "name=default,url=http://127.0.0.1:$PORT/" -s 0:20 -t 30
expect keep 'length == 20 and all(.outcome == "DELIVERED")' "20 sequential requests delivered"
conns=$(grep '"kind": "request"' "$T/h_keep.jsonl" | jq -s '[.[].conn] | unique | length')
[ "$conns" -le 2 ] || fail "20 requests used $conns connections (keep-alive broken)"
ok "keep-alive: 20 requests over $conns connection(s)"
# Nagle on either side costs ~40 ms per request (PEERS.md); without it a request takes ~1-3 ms.
expect keep '[.[].ms] | sort | .[10] < 25' \
  "no Nagle stall: median request $(jq -s '[.[] | select(.summary == null) | .ms] | sort | .[10]' "$T/keep.out") ms"

# ---- 5xx, 429 + Retry-After, 4xx, 3xx ----
hook h_500 --actions 500,500,200 --control "$T/h_500.control"
run r500 -d "name=default,url=http://127.0.0.1:$PORT/" -s 0:3 -t 20
expect r500 '.[0].outcome == "RETRY" and .[0].http_status == 500 and .[0].retry_after_s == -1
  and .[1].outcome == "RETRY" and .[2].outcome == "DELIVERED"' "500, 500, 200 -> RETRY, RETRY, DELIVERED"
# the receiver's control file overrides its action list while it exists
echo 502 >"$T/h_500.control"
run r502 -d "name=default,url=http://127.0.0.1:$PORT/" -s 0:1 -t 20
expect r502 '.[0].outcome == "RETRY" and .[0].http_status == 502' "control file: 502 -> RETRY"
rm "$T/h_500.control"

hook h_429 --actions '429:ra=7,429:ra=date+40,503:ra=3'
run r429 -d "name=default,url=http://127.0.0.1:$PORT/" -s 0:3 -t 20
expect r429 '.[0].outcome == "RETRY" and .[0].http_status == 429 and .[0].retry_after_s == 7' \
  "429 Retry-After: 7 -> RETRY, retry_after_s 7"
expect r429 '.[1].outcome == "RETRY" and .[1].retry_after_s >= 37 and .[1].retry_after_s <= 40' \
  "429 Retry-After: <HTTP-date 40 s ahead> -> RETRY, retry_after_s $(jq -s '.[1].retry_after_s' "$T/r429.out")"
expect r429 '.[2].outcome == "RETRY" and .[2].http_status == 503 and .[2].retry_after_s == 3' \
  "503 Retry-After: 3 -> RETRY"

hook h_400 --actions '400,redirect,404'
run r400 -d "name=default,url=http://127.0.0.1:$PORT/" -s 0:3 -t 20
expect r400 '.[0].outcome == "DEAD" and .[0].http_status == 400 and (.[0].response | contains("rejected by webhook_receiver"))' \
  "400 -> DEAD with the response excerpt"
expect r400 '.[1].outcome == "DEAD" and .[1].http_status == 301 and (.[1].detail | contains("/elsewhere"))' \
  "301 -> DEAD, redirect not followed, Location named"
expect r400 '.[2].outcome == "DEAD" and .[2].http_status == 404' "404 -> DEAD"

# ---- a hanging receiver times out while another destination keeps flowing ----
hook h_hang --actions 'hang:15'
hang_port=$PORT
hook h_fast
run hang -d "name=slow,url=http://127.0.0.1:$hang_port/,to=2" -d "name=fast,url=http://127.0.0.1:$PORT/" \
  -s 0:1 -s 1:10 -t 20
expect hang '[.[] | select(.dest == 0)][0] | .outcome == "RETRY" and .http_status == 0
  and (.detail | startswith("timeout after 2 s")) and .ms >= 1900 and .ms < 5000' \
  "hang -> RETRY after the 2 s timeout"
expect hang '([.[] | select(.dest == 1)] | length == 10 and all(.outcome == "DELIVERED"))
  and ([.[] | select(.dest == 1) | .t_ms] | max) < ([.[] | select(.dest == 0) | .t_ms] | max)' \
  "10 requests to another destination delivered while the hung one waited"
gap=$(jq -s '.[] | select(.summary) | .max_tick_gap_ms' "$T/hang.out")
jq -e -s '.[] | select(.summary) | .max_tick_gap_ms < 250 and .max_process_ms < 100' "$T/hang.out" >/dev/null ||
  { cat "$T/hang.out"; fail "the driver's loop stalled"; }
ok "the loop stayed responsive (largest gap between 20 ms ticks: $gap ms)"

# ---- a response cut mid-way; a connection closed without an answer ----
hook h_cut --actions 'cut,close'
run cut -d "name=default,url=http://127.0.0.1:$PORT/" -s 0:2 -t 20
expect cut '.[0].outcome == "RETRY" and .[0].http_status == 200 and (.[0].detail | startswith("response cut"))' \
  "response cut mid-way (200, 20 of 1000 bytes) -> RETRY"
expect cut '.[1].outcome == "RETRY" and .[1].http_status == 0' "closed without an answer -> RETRY"

# ---- connection refused ----
port=$(free_port)
run refused -d "name=default,url=http://127.0.0.1:$port/" -s 0:1 -t 20
expect refused '.[0].outcome == "RETRY" and (.[0].detail | startswith("connection refused"))' \
  "connection refused -> RETRY"

# ---- TLS: untrusted certificate, then trusted through ca_file ----
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$T/tls.key" -out "$T/tls.crt" >"$T/openssl.log" 2>&1 || { cat "$T/openssl.log"; fail "openssl req"; }
hook h_tls --tls-cert "$T/tls.crt" --tls-key "$T/tls.key"
run tls_bad -d "name=default,url=https://127.0.0.1:$PORT/fhir" -s 0:1 -t 20
expect tls_bad '.[0].outcome == "RETRY" and (.[0].detail | startswith("TLS: ")) and .[0].http_status == 0' \
  "untrusted certificate -> RETRY ($(jq -s -r '.[0].detail' "$T/tls_bad.out"))"
grep -q '"kind": "request"' "$T/h_tls.jsonl" && fail "a request reached the receiver over an untrusted TLS connection"
run tls_ok -d "name=default,url=https://127.0.0.1:$PORT/fhir,ca=$T/tls.crt" -s 0:3 -t 20
expect tls_ok 'length == 3 and all(.outcome == "DELIVERED")' "trusted with ca_file -> DELIVERED"

# ---- mutual TLS: the client certificate and key are sent when configured ----
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=cxrtriage-client -keyout "$T/client.key" -out "$T/client.crt" >>"$T/openssl.log" 2>&1 ||
  { cat "$T/openssl.log"; fail "openssl req (client)"; }
hook h_mtls --tls-cert "$T/tls.crt" --tls-key "$T/tls.key" --tls-client-ca "$T/client.crt"
run mtls_none -d "name=default,url=https://127.0.0.1:$PORT/,ca=$T/tls.crt" -s 0:1 -t 20
expect mtls_none '.[0].outcome == "RETRY" and .[0].http_status == 0' \
  "mutual TLS without a client certificate -> RETRY ($(jq -s -r '.[0].detail' "$T/mtls_none.out"))"
run mtls_ok -d "name=default,url=https://127.0.0.1:$PORT/,ca=$T/tls.crt,cert=$T/client.crt,key=$T/client.key" -s 0:1 -t 20
expect mtls_ok '.[0].outcome == "DELIVERED"' "mutual TLS with client_cert/client_key -> DELIVERED"
[ "$(grep -c '"kind": "request"' "$T/h_mtls.jsonl")" = 1 ] || fail "mutual TLS: wrong number of requests reached the receiver"

# ---- MLLP: every ACK case, side by side in one loop ----
specs=()
for m in AA AE AR CA wrong noack broken close; do
  mllp "m_$m" "$m"
  specs+=(-d "name=$m,mllp=127.0.0.1:$PORT,to=2")
done
port=$(free_port)
specs+=(-d "name=refused,mllp=127.0.0.1:$port")
run mllp "${specs[@]}" -s 0:1 -s 1:1 -s 2:1 -s 3:1 -s 4:1 -s 5:1 -s 6:1 -s 7:1 -s 8:1 -t 20
r() { echo "[.[] | select(.dest_name == \"$1\")][0]"; }
expect mllp "$(r AA) | .outcome == \"DELIVERED\" and .ack_code == \"AA\" and (.response | contains(\"MSA|AA|CTL0\"))" "AA -> DELIVERED"
expect mllp "$(r AE) | .outcome == \"DEAD\" and .ack_code == \"AE\"" "AE -> DEAD"
expect mllp "$(r AR) | .outcome == \"RETRY\" and .ack_code == \"AR\"" "AR -> RETRY"
expect mllp "$(r CA) | .outcome == \"DELIVERED\" and .ack_code == \"CA\"" "CA -> DELIVERED"
expect mllp "$(r wrong) | .outcome == \"RETRY\" and .detail == \"MSA-2 'WRONGCTL4000' does not match MSH-10 'CTL4000'\"" \
  "MSA-2 mismatch -> RETRY"
expect mllp "$(r noack) | .outcome == \"RETRY\" and (.detail | startswith(\"timeout after 2 s\")) and .ms >= 1900" \
  "no ACK -> RETRY after the timeout"
expect mllp "$(r broken) | .outcome == \"RETRY\" and (.detail | startswith(\"broken MLLP frame\"))" "broken frame -> RETRY"
expect mllp "$(r close) | .outcome == \"RETRY\" and .detail == \"connection closed without an ACK\"" \
  "closed without an ACK -> RETRY"
expect mllp "$(r refused) | .outcome == \"RETRY\" and .detail == \"connection refused\"" "connection refused -> RETRY"
[ "$(jq -r .control_id "$T/m_AA.jsonl")" = CTL0 ] || fail "the MLLP peer did not get MSH-10 CTL0"
ok "the MLLP peer parsed the framed ORU (MSH-10 CTL0)"
echo "test_sender: all cases passed"
