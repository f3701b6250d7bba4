#!/usr/bin/env bash
# test_web_browser.sh - the daemon's web page in a real headless Chromium (Debian's chromium,
# driven by playwright-core from npm, installed into the build tree by tests/browser/setup.sh),
# against the REAL daemon: upload a real DICOM radiograph (Enter on the drop zone, file picker)
# and a real PNG (drag and drop), see the four scores (equal to `cxrtriage classify`) and the
# heat map; toggle the overlay with the keyboard; a text file and a non-chest CR show the API's
# errors (415, 422 with the gate's reason); the audit lists the uploads, pages, filters them and
# opens a detail; a study sent over DICOM (storescu) whose
# accession looks like markup is shown as text, and its detail lists its report's delivery
# attempts; the outbox shows that report dead (the webhook answered 400), Retry puts it back
# and it is delivered; behind [http] auth = bearer the page asks for the token. At 1366x768 and 768x1024, with a screenshot of every step in
# $CXR_BUILD_DIR/tests/artifacts/web/. Console errors and CSP violations fail the test.
#   test_web_browser.sh          everything (it_web_browser); without a heat map from the daemon
#                                (501) the page scores without it, which is checked, and noted
#   test_web_browser.sh heatmap  the uploads with their heat maps and the overlay switch only
#                                (it_web_heatmap): fails while the daemon answers heatmap=1 with 501
MODE=${1:-all}
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/report_lib.sh"
need_data dicom
need_data cxr4
command -v storescu >/dev/null || skip "needs DCMTK's storescu: scripts/deps.sh test"
command -v dcmodify >/dev/null || skip "needs DCMTK's dcmodify: scripts/deps.sh test"
command -v jq >/dev/null || skip "needs jq: scripts/deps.sh test"

NODE_DIR="$CXR_BUILD_DIR/tests/browser"
ART="$CXR_BUILD_DIR/tests/artifacts/web"
[ "$MODE" = heatmap ] && ART="$CXR_BUILD_DIR/tests/artifacts/web-heatmap"
rc=0
bash "$CXR_SOURCE_DIR/tests/browser/setup.sh" "$NODE_DIR" >"$T/setup.out" 2>&1 || rc=$?
[ $rc -eq 77 ] && skip "$(tr '\n' ' ' <"$T/setup.out")"
[ $rc -eq 0 ] || { cat "$T/setup.out"; fail "tests/browser/setup.sh exited $rc"; }
rm -rf "$ART"
mkdir -p "$ART"

# --- the files and what `cxrtriage classify` says of them --------------------------------------
DCM="$CXR_DATA_DIR/dicom/cxr_siim_8bit_explicit_le.dcm" # a frontal CR the gate accepts
[ -f "$DCM" ] || skip "needs $DCM"
NONCHEST="$CXR_DATA_DIR/dicom/pydicomdata_RG3_J2KR_CR.dcm" # a real CR of an extremity: the gate refuses it
[ -f "$NONCHEST" ] || skip "needs $NONCHEST"
"$CXRTRIAGE" classify --json "$DCM" >"$T/dcm.json" || fail "cxrtriage classify $DCM"
jq -e '.verdict == "applicable"' "$T/dcm.json" >/dev/null || fail "the gate refuses $DCM: $(cat "$T/dcm.json")"
# The PNG: the first of cxr4/Normal (sorted) that classify scores, preferring one whose triage
# is not urgent so that the two uploads show two different triage banners.
# (no `| head` in a pipeline: with pipefail, sort killed by SIGPIPE would end the test silently)
find "$CXR_DATA_DIR/cxr4/Normal" -name '*.png' | sort >"$T/all_pngs"
head -n 12 "$T/all_pngs" >"$T/pngs"
[ -s "$T/pngs" ] || skip "no PNG under $CXR_DATA_DIR/cxr4/Normal"
mapfile -t pngs <"$T/pngs"
"$CXRTRIAGE" classify --json "${pngs[@]}" >"$T/pngs.json" 2>/dev/null || true
PNG=$(jq -rs '([.[] | select(.verdict == "applicable" and .triage != "urgent")] +
               [.[] | select(.verdict == "applicable")]) | .[0].file // empty' "$T/pngs.json")
[ -n "$PNG" ] || fail "classify scores none of the first PNGs of cxr4/Normal"
jq -c --arg f "$PNG" 'select(.file == $f)' "$T/pngs.json" >"$T/png.json"

# --- the daemon, with a webhook that refuses the first report (400: dead at once) ---------------
hook web --actions 400,200
DAEMON_CONF="[triage]
study_quiet_seconds = 1
[report]
mode = send
[webhook]
url = http://127.0.0.1:$HOOK_PORT/fhir
format = fhir
retry_initial = 1
retry_max = 2"
start_daemon web
URL="http://127.0.0.1:$DAEMON_HTTP"
for _ in $(seq 100); do curl -sf -m 2 -o /dev/null "$URL/healthz" && break; sleep 0.1; done
curl -sf -m 5 -o "$T/index.html" "$URL/" || fail "the daemon does not serve its page at $URL/"

DICOM_ROW=null DEAD=null ACC=
if [ "$MODE" != heatmap ]; then
  # A DICOM study whose accession looks like markup: the page must show it as text.
  ACC='<b>X</b>&1'
  make_study "$T/study" 1
  dcmodify -q -nb -i "AccessionNumber=$ACC" "$T/study/img1.dcm" >/dev/null
  scu study -- "$T/study/img1.dcm" || { cat "$T/study.scu"; fail "storescu of the study"; }
  wait_rows 1 60
  DICOM_ROW=$(jq -rs 'map(select(.source != "upload"))[0].id' "$T/audit.json")
  wait_jq 60 "the study's report refused by the webhook (dead)" outbox_json 'length == 1 and .[0].state == "dead"'
  DEAD=$(outbox_json | jq '.[0].id')
  ok "a DICOM study (instance $DICOM_ROW) with its report $DEAD dead (webhook answered 400)"
fi

# Does this daemon serve the heat map? (A build without Grad-CAM answers 501 not_implemented,
# before scoring: it_web_browser checks that the page scores without it, it_web_heatmap fails.)
hm=$(curl -sS -m 120 -o "$T/hm.json" -w '%{http_code}' -H 'Content-Type: application/octet-stream' \
  --data-binary "@$DCM" "$URL/api/v1/classify?heatmap=1")
case $hm in
  200) HEATMAP=true ;;
  501) HEATMAP=false
       [ "$MODE" = heatmap ] && fail "the daemon serves no heat map: POST /api/v1/classify?heatmap=1 answers 501: $(jq -r .error.message "$T/hm.json")"
       echo "# the daemon answers heatmap=1 with 501: $(jq -r .error.message "$T/hm.json")" ;;
  *) fail "POST /api/v1/classify?heatmap=1 answered $hm: $(head -c 300 "$T/hm.json")" ;;
esac
if [ "$HEATMAP" = true ]; then
  jq -e '(.image | startswith("data:image/png;base64,")) and (.heatmap.png | startswith("data:image/png;base64,"))
         and (.heatmap.class | type) == "string" and .timings_ms.heatmap > 0' "$T/hm.json" >/dev/null ||
    fail "heatmap=1: no image or heat map in $(jq -c '{image: (.image // "" | .[0:30]), heatmap: (.heatmap // {} | del(.png))}' "$T/hm.json")"
fi

jq -n --arg url "$URL" --arg art "$ART" --arg dcm "$DCM" --arg png "$PNG" --arg acc "$ACC" --arg nonchest "$NONCHEST" \
  --argjson row "$DICOM_ROW" --argjson dead "$DEAD" --argjson heatmap "$HEATMAP" --arg mode "$MODE" \
  --slurpfile de "$T/dcm.json" --slurpfile pe "$T/png.json" '
  def exp($c): {scores: $c.scores, top: $c.top, triage: $c.triage, model_digest: $c.model_digest};
  {url: $url, artifacts: $art, accession: $acc, heatmap: $heatmap, mode: $mode, nonchest: $nonchest, dicom_study_row: $row, dead_report: $dead,
   dicom: {path: $dcm, expect: exp($de[0])}, png: {path: $png, expect: exp($pe[0])}}' >"$T/web.json"

echo "# PNG: $PNG"
echo "# screenshots: $ART"
rc=0
(cd "$NODE_DIR" && timeout 600 node web_test.cjs "$T/web.json") || rc=$?
[ $rc -eq 0 ] || fail "the browser test failed (exit $rc); screenshots in $ART"
if [ "$MODE" != heatmap ]; then
  # The same page in front of a daemon with [http] auth = bearer: it asks for the token.
  stop_pid "$DAEMON_PID"
  [ "$STOP_RC" -eq 0 ] || fail "cxrtriaged exited $STOP_RC (sanitizer report in its log?)"
  printf 'tok-%s-%s\n' "$RANDOM" "$RANDOM" >"$T/token"
  chmod 600 "$T/token"
  DAEMON_CONF="[http]
auth = bearer
token_file = $T/token"
  start_daemon auth
  jq -n --arg url "http://127.0.0.1:$DAEMON_HTTP" --arg art "$ART" --arg tok "$(head -n1 "$T/token")" \
    '{url: $url, artifacts: $art, mode: "auth", token: $tok, dicom: {expect: {model_digest: ""}}}' >"$T/auth.json"
  (cd "$NODE_DIR" && timeout 300 node web_test.cjs "$T/auth.json") || fail "the browser test of the bearer sign-in failed"
fi
stop_pid "$DAEMON_PID"
[ "$STOP_RC" -eq 0 ] || fail "cxrtriaged exited $STOP_RC (sanitizer report in its log?)"
n=$(find "$ART" -name '*.png' | wc -l)
want=15
[ "$MODE" = heatmap ] && want=4
[ "$n" -ge $want ] || fail "only $n screenshots in $ART"
ok "web page ($MODE) in chromium at 1366x768 and 768x1024: $n screenshots in $ART"
