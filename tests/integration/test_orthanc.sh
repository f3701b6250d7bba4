#!/usr/bin/env bash
# Orthanc as the hospital PACS routing a study to the daemon: Orthanc (Debian package, its own
# JSON config and storage in $T, run as the orthanc user) is loaded with one study of several
# instances in several transfer syntaxes, then told over REST to send the study to the daemon
# (POST /modalities/cxrtriage/store, synchronous) as a PACS routing rule would. Every instance
# gets one final row, the scores equal `cxrtriage classify --json`'s, and C-ECHO from Orthanc
# (POST /modalities/cxrtriage/echo) succeeds. The daemon allows Orthanc as ORTHANC@127.0.0.1.
# Orthanc listens on all interfaces (no bind option in 1.10), so the whole test runs in a
# private network namespace (need_netns).
. "$(dirname "$0")/lib.sh"
need_data dicom
need_netns "$@"
D=$CXR_DATA_DIR/dicom
command -v storescu >/dev/null || skip "needs DCMTK: scripts/deps.sh test"
command -v curl >/dev/null || skip "needs curl: scripts/deps.sh test"

# One study: 5 chest images in 5 encodings and one lateral (skipped), fresh SOP Instance UIDs,
# one Study and Series Instance UID for all.
mkdir -p "$T/study"
i=0
for f in cxr_siim_8bit_explicit_le.dcm cxr_siim_8bit_implicit_le.dcm cxr_siim_8bit_j2k_lossless.dcm \
  txrv_siim_cxr_1.2.276.0.7230010.3.1.4.8323329.6904.dcm cxr_rg1_15bit_mono1_half_rle.dcm \
  cxr_rg1_15bit_mono1_half_explicit_le.dcm; do
  i=$((i + 1))
  cp "$D/$f" "$T/study/i$i.dcm"
done
new_uids "$T"/study/*.dcm
study=1.2.826.0.1.3680043.8.498.$(date +%s)$$.1
dcmodify -q -nb -m "(0020,000d)=$study" -m "(0020,000e)=$study.1" \
  -m "(0020,0013)=1" "$T"/study/*.dcm
dcmodify -q -nb -m "(0018,5101)=LL" "$T/study/i6.dcm"
n=$(ls "$T"/study/*.dcm | wc -l)

DAEMON_CONF='[dicom]
allowed_calling_aets = ECHOSCU, ORTHANC@127.0.0.1
[triage]
study_quiet_seconds = 1
[report]
mode = shadow'
start_daemon daemon
start_orthanc "$DAEMON_PORT"
ok "Orthanc and the daemon up (Orthanc REST $ORTHANC_URL, DICOM $ORTHANC_DICOM)"

curl -sf -m 30 -X POST --data '{}' "$ORTHANC_URL/modalities/cxrtriage/echo" >/dev/null ||
  fail "C-ECHO from Orthanc to the daemon failed"
ok "C-ECHO from Orthanc"

orthanc_send_to_daemon "$T"/study/*.dcm
ok "Orthanc sent the study ($n instances) to the daemon"

wait_rows "$n" 60
ok "$n rows, all final"
check_scores "$T"/study/*.dcm
ok "scores equal classify's"

/usr/bin/python3 - "$T/audit.json" "$study" <<'PY' || fail "rows not of the routed study"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
bad = [r["sop_instance_uid"] for r in rows if r.get("study_instance_uid") != sys.argv[2]]
sk = [r for r in rows if r["state"] == "skipped"]
if bad or len(sk) != 1 or "viewposition" not in (sk[0].get("gate_reason") or "").lower():
    print("study mismatch:", bad, "skipped:", [(r["sop_instance_uid"], r.get("gate_reason")) for r in sk])
    sys.exit(1)
PY
ok "all rows of the study; the lateral skipped"

stop_pid "$ORTHANC_PID" TERM 20
stop_pid "$DAEMON_PID" TERM 30
[ "$STOP_RC" = 0 ] || fail "daemon exit status $STOP_RC on SIGTERM"
ok "both stopped"
