#!/usr/bin/env bash
# The JSON API of the running daemon with curl and jq: POST /api/v1/classify with a real DICOM
# and a real PNG (the scores equal `cxrtriage classify`'s), as a raw body and as multipart, 413
# before the body is read, 415 on a text file, 422 on a real non-chest CR (the gate's reason),
# 405 and 404; the uploads audited as source "upload" and paged through /api/v1/instances;
# an instance's detail with its events; uploads never in a study nor in the outbox while a
# storescu send of the same daemon completes its study and queues reports; /api/v1/status;
# POST /api/v1/outbox/{id}/retry on a ledger with a dead, a delivered and a pending report.
. "$(dirname "$0")/lib.sh"
need_data dicom
need_data cxr4
command -v jq >/dev/null || skip "needs jq: scripts/deps.sh test"
command -v storescu >/dev/null || skip "needs DCMTK's storescu: scripts/deps.sh test"
D="$CXR_DATA_DIR/dicom"
PNG=$(find "$CXR_DATA_DIR/cxr4/Normal" -name '*.png' | sort | sed -n 1p) # sed reads it all: no SIGPIPE under pipefail
[ -n "$PNG" ] || skip "no PNG under $CXR_DATA_DIR/cxr4/Normal"
DCM="$D/cxr_siim_8bit_explicit_le.dcm"
NONCHEST="$D/pydicomdata_RG3_J2KR_CR.dcm" # a real CR of an extremity: the gate refuses it

# mode = send: a completed study gets report files, so "uploads are not reported" can fail.
DAEMON_CONF='[triage]
study_quiet_seconds = 1
[report]
mode = send
[http]
max_body_mb = 2'
start_daemon api
U="http://127.0.0.1:$DAEMON_HTTP"
C=(curl -sS -m 60)

# code METHOD PATH [CURL ARGS...]: the status; the body in $T/body
code() {
  local m=$1 p=$2; shift 2
  "${C[@]}" -o "$T/body" -w '%{http_code}' -X "$m" "$@" "$U$p"
}
is_error() { # STATUS CODE: the body is the contract's error object
  jq -e --argjson s "$1" --arg c "$2" '.error.status == $s and .error.code == $c and (.error.message | length > 0)' \
    "$T/body" >/dev/null || fail "error body for $1 $2: $(cat "$T/body")"
}

# classify: scores equal the CLI's for the same file
"$CXRTRIAGE" classify --json "$DCM" "$PNG" >"$T/cli.json"
same_scores() { # FILE: $T/body's scores against the CLI's line for FILE
  jq -e --slurpfile cli "$T/cli.json" --arg f "$1" '
    ($cli[] | select(.file == $f)) as $c
    | .scores as $s
    | ($c.scores | keys) == ($s | keys)
      and ([$c.scores | to_entries[] | (($s[.key] - .value) | fabs) < 1e-5] | all)
      and .model_digest == $c.model_digest and .triage == $c.triage' "$T/body" >/dev/null ||
    fail "scores of $1 differ from cxrtriage classify: $(jq -c .scores "$T/body") vs $(grep -F "\"$1\"" "$T/cli.json")"
}
# The DICOM is larger than max_body_mb = 2? Then send a copy that fits: the daemon's limit is
# what we test below with a file that does not fit.
[ "$(stat -c %s "$DCM")" -lt $((2 << 20)) ] || fail "test file $DCM is over 2 MB"
[ "$(code POST /api/v1/classify -H 'Content-Type: application/dicom' --data-binary "@$DCM")" = 200 ] ||
  fail "classify DICOM: $(cat "$T/body")"
same_scores "$DCM"
jq -e '.format == "dicom" and .gate.applicable == true and (.id | type) == "number" and .width > 0
       and .height > 0 and (.classes | length) == 4 and (.top_class | type) == "string"
       and (.timings_ms.decode >= 0) and (.timings_ms.infer > 0) and (.timings_ms.total > 0)
       and (.disclaimer | test("not a diagnosis"))' "$T/body" >/dev/null || fail "classify body: $(cat "$T/body")"
ID_DCM=$(jq .id "$T/body")
UPLOADS=1
ok "classify a real DICOM: 200, the CLI's scores, id $ID_DCM"

[ "$(code POST /api/v1/classify -H 'Content-Type: application/octet-stream' --data-binary "@$PNG")" = 200 ] ||
  fail "classify PNG: $(cat "$T/body")"
same_scores "$PNG"
jq -e '.format == "png"' "$T/body" >/dev/null || fail "format png"
UPLOADS=$((UPLOADS + 1))
[ "$(code POST /api/v1/classify -F "file=@$PNG;type=image/png")" = 200 ] || fail "multipart: $(cat "$T/body")"
UPLOADS=$((UPLOADS + 1))
same_scores "$PNG"
[ "$(code POST /api/v1/classify -F "other=@$PNG")" = 400 ] || fail "multipart without a file part"
is_error 400 bad_request
ok "classify a real PNG as the body and as multipart/form-data (400 without the part \"file\")"

printf 'patient notes, not an image\n' >"$T/notes.txt"
[ "$(code POST /api/v1/classify -H 'Content-Type: image/png' --data-binary "@$T/notes.txt")" = 415 ] ||
  fail "415 on text: $(cat "$T/body")"
is_error 415 unsupported_media_type
jq -e '.error.message | test("70 61 74")' "$T/body" >/dev/null || fail "415 names the first bytes"
[ "$(code POST /api/v1/classify --data-binary '')" = 400 ] || fail "empty body"
head -c $((3 << 20)) /dev/urandom >"$T/big.bin"
t0=$(date +%s%N)
[ "$(code POST /api/v1/classify --data-binary "@$T/big.bin")" = 413 ] || fail "413: $(cat "$T/body")"
is_error 413 payload_too_large
[ "$(code POST /api/v1/classify -H 'Transfer-Encoding: chunked' --data-binary "@$T/big.bin")" = 413 ] ||
  fail "413 chunked (no Content-Length)"
ok "415 on a text file, 400 on an empty body, 413 over max_body_mb (with and without Content-Length) in $(( ($(date +%s%N) - t0) / 1000000 )) ms"

[ "$(code POST /api/v1/classify --data-binary "@$NONCHEST")" = 422 ] || fail "422: $(cat "$T/body")"
UPLOADS=$((UPLOADS + 1))
is_error 422 unprocessable
jq -e '.gate.applicable == false and (.gate.reason | length > 0) and .error.message == .gate.reason
       and .scores == null' "$T/body" >/dev/null || fail "422 body: $(cat "$T/body")"
ok "422 on a real non-chest CR: $(jq -r .gate.reason "$T/body")"

# heatmap=1: the model's input and the Grad-CAM overlay as PNG data URLs, same size; scores unchanged
[ "$(code POST '/api/v1/classify?heatmap=1' --data-binary "@$DCM")" = 200 ] || fail "heatmap=1: $(head -c 300 "$T/body")"
same_scores "$DCM"
jq -e '(.image | startswith("data:image/png;base64,")) and (.heatmap.png | startswith("data:image/png;base64,"))
       and .heatmap.class == .top_class and (.heatmap.grid | length) == 2 and .timings_ms.heatmap > 0' "$T/body" >/dev/null ||
  fail "heatmap body: $(jq -c '{heatmap: (.heatmap | if . then {class, grid} else . end), heatmap_error, timings_ms}' "$T/body")"
jq -r .image "$T/body" | sed 's/^data:image\/png;base64,//' | base64 -d >"$T/image.png"
jq -r .heatmap.png "$T/body" | sed 's/^data:image\/png;base64,//' | base64 -d >"$T/heatmap.png"
file "$T/image.png" | grep -q "PNG image data, 224 x 224, 8-bit grayscale" || fail "image: $(file "$T/image.png")"
file "$T/heatmap.png" | grep -q "PNG image data, 224 x 224, 8-bit/color RGBA" || fail "heat map: $(file "$T/heatmap.png")"
[ "$(code POST '/api/v1/classify?heatmap=1&class=Normal' --data-binary "@$DCM")" = 200 ] || fail "class=Normal"
UPLOADS=$((UPLOADS + 2))
jq -e '.heatmap.class == "Normal"' "$T/body" >/dev/null || fail "class=Normal: $(jq -c .heatmap.class "$T/body")"
[ "$(code POST '/api/v1/classify?heatmap=1&class=Nope' --data-binary "@$DCM")" = 400 ] || fail "class=Nope"
is_error 400 bad_request
ok "heatmap=1: 224 x 224 grey input and RGBA Grad-CAM overlay as data URLs, for the top class or class=Normal; 400 on an unknown class"

[ "$(code DELETE /api/v1/classify)" = 405 ] || fail "405"
is_error 405 method_not_allowed
[ "$(code GET /api/v1/nothing)" = 404 ] || fail "404"
is_error 404 not_found
[ "$(code GET /api/v1/instances/999999)" = 404 ] || fail "404 instance"
[ "$(code GET '/api/v1/instances?limit=0')" = 400 ] || fail "400 limit=0"
is_error 400 bad_request
[ "$(code GET '/api/v1/instances?since=yesterday-ish')" = 400 ] || fail "400 since"
[ "$(code GET '/api/v1/instances?state=lost')" = 400 ] || fail "400 state"
ok "405, 404 and 400 as JSON errors"

# Every scored or skipped upload is audited (source upload, no peer, no AE): UPLOADS of them
# (400/413/415 are not). Paged UPLOADS-1 + 1, then nothing after the last.
[ "$(code GET '/api/v1/instances?source=upload&limit=1000')" = 200 ] || fail "instances"
n=$(jq '.items | length' "$T/body")
[ "$n" -eq "$UPLOADS" ] || fail "$n upload rows, $UPLOADS uploads were scored or skipped"
jq -e '.next_after_id == null and ([.items[] | .source == "upload" and .peer == "" and .calling_aet == ""] | all)' \
  "$T/body" >/dev/null || fail "upload rows: $(cat "$T/body")"
[ "$(code GET "/api/v1/instances?source=upload&limit=$((n - 1))")" = 200 ] || fail "page 1"
jq -e --argjson n "$((n - 1))" '(.items | length) == $n and .next_after_id == .items[-1].id' "$T/body" >/dev/null ||
  fail "page 1: $(cat "$T/body")"
after=$(jq .next_after_id "$T/body")
[ "$(code GET "/api/v1/instances?source=upload&limit=$((n - 1))&after_id=$after")" = 200 ] || fail "page 2"
jq -e --argjson a "$after" '(.items | length) == 1 and .items[0].id < $a and .next_after_id == null' \
  "$T/body" >/dev/null || fail "page 2, the last: $(cat "$T/body")"
last=$(jq '.items[-1].id' "$T/body")
[ "$(code GET "/api/v1/instances?source=upload&after_id=$last")" = 200 ] || fail "after the last"
jq -e '.items == [] and .next_after_id == null' "$T/body" >/dev/null || fail "after_id $last: $(cat "$T/body")"
[ "$(code GET '/api/v1/instances?source=upload&state=skipped')" = 200 ] || fail "state filter"
jq -e '(.items | length) == 1 and (.items[0].gate_reason | length > 0)' "$T/body" >/dev/null ||
  fail "the 422 upload audited as skipped: $(cat "$T/body")"
ok "$n uploads audited (source upload, no peer, no AE), paged $((n - 1)) + 1 + 0"

[ "$(code GET "/api/v1/instances/$ID_DCM")" = 200 ] || fail "instance detail"
jq -e --argjson id "$ID_DCM" '.id == $id and .state == "classified" and (.scores | length) == 4
       and (.events | length) >= 2 and (.events[0] | has("at") and has("kind") and has("detail"))
       and .reports == []' "$T/body" >/dev/null || fail "detail: $(cat "$T/body")"
ok "instance detail with its events"

# A real C-STORE of another file completes its study and queues reports; the uploads do not.
cp "$D/cxr_siim_8bit_implicit_le.dcm" "$T/sent.dcm"
new_uids "$T/sent.dcm"
dcmodify -q -nb -gst -gse "$T/sent.dcm" >/dev/null # its own study, not the uploads'
scu send -- "$T/sent.dcm" || fail "storescu"
for _ in $(seq 100); do
  [ "$(code GET '/api/v1/outbox')" = 200 ] && [ "$(jq '.items | length' "$T/body")" -gt 0 ] && break
  sleep 0.2
done
jq -e '(.items | length) > 0' "$T/body" >/dev/null || fail "the C-STORE's study queued no report: $(cat "$T/body")"
upload_study=$(dcmdump -q +P 0020,000d "$DCM" | sed -n 's/.*\[\(.*\)\].*/\1/p' | sed -n 1p)
sent_study=$(dcmdump -q +P 0020,000d "$T/sent.dcm" | sed -n 's/.*\[\(.*\)\].*/\1/p' | sed -n 1p)
jq -e --arg u "$upload_study" --arg s "$sent_study" '[.items[].study_instance_uid] | (index($u) == null) and (index($s) != null)' \
  "$T/body" >/dev/null || fail "outbox: $(jq -c '[.items[].study_instance_uid]' "$T/body") (upload study $upload_study)"
[ "$(code GET '/api/v1/studies')" = 200 ] || fail "studies"
jq -e --arg u "$upload_study" --arg s "$sent_study" '
  ([.items[].study_instance_uid] | index($u) == null)
  and ([.items[] | select(.study_instance_uid == $s) | .state == "complete" and .n_instances == 1
        and (.triage | type) == "string" and (.top_class | type) == "string"] == [true])' "$T/body" >/dev/null ||
  fail "studies: $(cat "$T/body")"
! grep -rqs "$upload_study" "$DAEMON_STATE/reports" || fail "a report file names the upload's study"
ok "uploads are in no study and no report; the C-STORE's study completed with $(jq '.items | length' "$T/body") study and its reports queued"

[ "$(code GET /api/v1/status)" = 200 ] || fail "status"
jq -e '.counts.received >= 5 and .counts.classified >= 4 and .counts.skipped >= 1 and (.model_digest | length) == 64
       and (.listener | test("AE CXRTRIAGE")) and (.outbox.pending + .outbox.delivered + .outbox.dead) > 0
       and (.disclaimer | length > 0) and (.uptime_s >= 0) and (.kernel | length > 0)' "$T/body" >/dev/null ||
  fail "status: $(cat "$T/body")"
ok "status"
stop_pid "$DAEMON_PID"
[ "$STOP_RC" -eq 0 ] || fail "cxrtriaged exited $STOP_RC (sanitizer report in its log?)"

# The retry endpoint on a ledger with report 1 delivered, 2 dead, 3 pending (tests/tools/store_fill)
mkdir -p "$T/retry.state"
"$CXR_BUILD_DIR/store/store_fill" "$T/retry.state/audit.db" >/dev/null || fail "store_fill"
DAEMON_CONF='[report]
mode = shadow'
start_daemon retry
U="http://127.0.0.1:$DAEMON_HTTP"
[ "$(code GET '/api/v1/outbox?state=dead')" = 200 ] || fail "outbox dead"
jq -e '[.items[].id] == [2]' "$T/body" >/dev/null || fail "dead list: $(cat "$T/body")"
key=$(jq -r '.items[0].idempotency_key' "$T/body")
[ "$(code GET '/api/v1/outbox?limit=1')" = 200 ] || fail "outbox page"
jq -e '(.items | length) == 1 and .next_after_id == 3' "$T/body" >/dev/null || fail "outbox paging: $(cat "$T/body")"
[ "$(code POST /api/v1/outbox/2/retry)" = 200 ] || fail "retry 2: $(cat "$T/body")"
jq -e --arg k "$key" '.id == 2 and .state == "pending" and .idempotency_key == $k and (.attempts | type) == "array"' \
  "$T/body" >/dev/null || fail "retry body: $(cat "$T/body")"
[ "$(code POST /api/v1/outbox/1/retry)" = 409 ] || fail "retry delivered: $(cat "$T/body")"
is_error 409 conflict
[ "$(code POST /api/v1/outbox/999/retry)" = 404 ] || fail "retry unknown"
is_error 404 not_found
[ "$(code GET /api/v1/outbox/2/retry)" = 405 ] || fail "GET retry"
[ "$(code GET /api/v1/instances/1)" = 200 ] || fail "instance 1"
jq -e '(.reports | length) == 2 and ([.reports[].attempts | length] | add) >= 2' "$T/body" >/dev/null ||
  fail "instance 1's study reports with attempts: $(cat "$T/body")"
"$CXRTRIAGE" audit verify --state-dir "$T/retry.state" >"$T/verify.out" 2>&1 || { cat "$T/verify.out"; fail "audit verify after the retry"; }
ok "retry: dead -> pending with its idempotency key, 409 delivered, 404 unknown; the ledger verifies"
stop_pid "$DAEMON_PID"
[ "$STOP_RC" -eq 0 ] || fail "cxrtriaged exited $STOP_RC (sanitizer report in its log?)"
