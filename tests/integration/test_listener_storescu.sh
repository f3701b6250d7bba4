#!/usr/bin/env bash
# The daemon's DICOM listener against DCMTK's echoscu and storescu (real peers, loopback):
# C-ECHO; one file; a directory of many; 4 parallel associations; every transfer syntax of the
# data set proposed alone (so the daemon receives exactly that syntax); calling AE not in the
# allow-list and a wrong called AE refused; lateral, non-chest, non-CR and too-small images
# skipped with their reason; broken pixel data received and audited as failed, the daemon
# still serving; one ledger row per instance storescu saw answered Success; and the daemon's
# scores equal `cxrtriage classify --json`'s for the same files. Files are copies in $T with
# fresh SOP Instance UIDs (the data set's encodings of one image share theirs).
# Note: storescu 3.6.7 proposes uncompressed syntaxes only and cannot transcode compressed
# files (it has no decoders registered): compressed files go with a -xf profile (ts_profiles).
. "$(dirname "$0")/lib.sh"
need_data dicom
D=$CXR_DATA_DIR/dicom
command -v storescu >/dev/null || skip "needs DCMTK's storescu: scripts/deps.sh test"
/usr/bin/python3 -c 'import pydicom, numpy' 2>/dev/null || skip "needs python3-pydicom: scripts/deps.sh test"

# --- the files, prepared before the daemon starts --------------------------------------------
mkdir -p "$T/ts" "$T/many" "$T/par" "$T/gate" "$T/bad"
# transfer syntax profile -> a chest file already in that syntax (uncompressed profiles get a
# file in another uncompressed syntax: storescu converts it, so the daemon receives the profile's)
ts_files=(
  ILE:cxr_siim_8bit_explicit_le.dcm
  ELE:cxr_siim_8bit_implicit_le.dcm
  EBE:cxr_rg1_15bit_mono1_half_explicit_le.dcm
  DEFL:cxr_siim_8bit_deflated.dcm
  JPEGB:txrv_siim_cxr_1.2.276.0.7230010.3.1.4.8323329.6904.dcm
  JPEGE:cxr_siim_12bit_jpeg_extended.dcm
  JPEGLL:cxr_rg1_15bit_mono1_half_jpeg_lossless.dcm
  JLSL:cxr_rg1_15bit_mono1_half_jpegls.dcm
  JLSNL:cxr_siim_8bit_jpegls_nearlossless.dcm
  J2KL:cxr_rg1_15bit_mono1_half_j2k_lossless.dcm
  J2K:cxr_siim_8bit_j2k_lossy.dcm
  RLE:cxr_rg1_15bit_mono1_half_rle.dcm
)
for e in "${ts_files[@]}"; do cp "$D/${e#*:}" "$T/ts/${e%%:*}.dcm"; done
cp "$D/cxr_siim_8bit_explicit_le.dcm" "$T/one.dcm"
for i in $(seq -w 1 12); do cp "$D/cxr_siim_8bit_explicit_le.dcm" "$T/many/m$i.dcm"; done
for i in $(seq -w 1 12); do cp "$D/cxr_rg1_15bit_mono1_half_explicit_le.dcm" "$T/par/p$i.dcm"; done
cp "$D/cxr_siim_8bit_explicit_le.dcm" "$T/gate/lateral.dcm"
cp "$D/pydicomdata_RG3_J2KR_CR.dcm" "$T/gate/extremity.dcm" # real CR, BodyPartExamined EXTREMITY
cp "$D/pydicom_CT_small.dcm" "$T/gate/ct.dcm"                 # CT: other_sop_classes = skip
cp "$D/bad/bad_rows_mismatch.dcm" "$T/bad/short_pixels.dcm"   # PixelData shorter than Rows x Cols
cp "$D/cxr_siim_8bit_implicit_le.dcm" "$T/after_bad.dcm"
/usr/bin/python3 - "$D/cxr_siim_8bit_explicit_le.dcm" "$T/gate/small.dcm" <<'PY'
import sys, pydicom
ds = pydicom.dcmread(sys.argv[1])
a = ds.pixel_array[384:512, 448:576].copy()   # 128x128 of the lung field: a real, too small CR
ds.Rows, ds.Columns = a.shape
ds.PixelData = a.tobytes()
ds.save_as(sys.argv[2])
PY
new_uids "$T"/ts/*.dcm "$T/one.dcm" "$T"/many/*.dcm "$T"/par/*.dcm "$T"/gate/*.dcm "$T"/bad/*.dcm "$T/after_bad.dcm"
dcmodify -q -nb -m "(0018,5101)=LL" "$T/gate/lateral.dcm"
ts_profiles "$T/ts.cfg"

DAEMON_CONF='[daemon]
workers = 2
threads_per_worker = 1
[dicom]
allowed_calling_aets = STORESCU, ECHOSCU
max_associations = 8
other_sop_classes = skip
duplicates = acknowledge
[triage]
study_quiet_seconds = 1
[report]
mode = shadow'
start_daemon daemon
logs=()

# --- C-ECHO -----------------------------------------------------------------------------------
timeout 30 echoscu -v -to 10 -aec CXRTRIAGE 127.0.0.1 "$DAEMON_PORT" >"$T/echo.scu" 2>&1 ||
  { cat "$T/echo.scu"; fail "C-ECHO to the daemon failed"; }
ok "C-ECHO"

# --- one file, a directory, 4 parallel associations --------------------------------------------
scu one -- "$T/one.dcm" || { cat "$T/one.scu"; fail "storescu of one file failed"; }
[ "$(scu_successes one)" = 1 ] || fail "one file: no Success"
logs+=(one)
ok "one file"

scu many +sd -- "$T/many" || { cat "$T/many.scu"; fail "storescu of a directory failed"; }
[ "$(scu_successes many)" = 12 ] || fail "directory: $(scu_successes many) Success of 12"
logs+=(many)
ok "a directory of 12 in one association"

pids=()
for k in 1 2 3 4; do
  files=()
  for f in "$T"/par/p*.dcm; do
    n=${f##*/p}; n=${n%.dcm}
    [ $(((10#$n - 1) % 4 + 1)) = "$k" ] && files+=("$f")
  done
  scu "par$k" -- "${files[@]}" &
  pids+=($!)
  _pids+=($!) # stopped by the cleanup trap if the test fails before they end
  logs+=("par$k")
done
for p in "${pids[@]}"; do wait "$p" || fail "a parallel storescu failed (see $T/par*.scu)"; done
[ "$(scu_successes par1 par2 par3 par4)" = 12 ] || fail "parallel: $(scu_successes par1 par2 par3 par4) Success of 12"
ok "4 parallel associations"

# --- each transfer syntax alone ----------------------------------------------------------------
for e in "${ts_files[@]}"; do
  p=${e%%:*}
  scu "ts_$p" +v -xf "$T/ts.cfg" "$p" -- "$T/ts/$p.dcm" ||
    { cat "$T/ts_$p.scu"; fail "transfer syntax $p: storescu failed"; }
  grep -q "Accepted Transfer Syntax" "$T/ts_$p.scu" || fail "transfer syntax $p: not accepted"
  [ "$(scu_successes "ts_$p")" = 1 ] || fail "transfer syntax $p: no Success"
  logs+=("ts_$p")
done
ok "transfer syntaxes: ${ts_files[*]%%:*}"

# --- association refusals ----------------------------------------------------------------------
before=$(grep -c "association.refused" "$DAEMON_LOG" || true)
scu aet_other -aet OTHER -- "$T/one.dcm" && fail "calling AE OTHER (not allowed) was accepted"
grep -qiE "reject|refus|abort" "$T/aet_other.scu" || { cat "$T/aet_other.scu"; fail "no rejection seen by storescu"; }
[ "$(scu_successes aet_other)" = 0 ] || fail "calling AE OTHER stored something"
wait_log "$DAEMON_LOG" "association.refused" 10
ok "unknown calling AE refused"
scu aec_wrong -aec WRONG -- "$T/one.dcm" && fail "called AE WRONG was accepted"
[ "$(scu_successes aec_wrong)" = 0 ] || fail "called AE WRONG stored something"
for _ in $(seq 50); do
  [ "$(grep -c "association.refused" "$DAEMON_LOG" || true)" -ge $((before + 2)) ] && break
  sleep 0.1
done
[ "$(grep -c "association.refused" "$DAEMON_LOG" || true)" -ge $((before + 2)) ] ||
  fail "wrong called AE: no second association.refused in the daemon's log"
ok "wrong called AE refused"

# --- the gate: lateral, non-chest, non-CR, too small --------------------------------------------
# storescu 3.6.7 proposes uncompressed syntaxes only and then fails to transcode a J2K file
# (-R does not change that; +sp is --scan-pattern): the J2K extremity goes with its profile.
scu gate -- "$T/gate/lateral.dcm" "$T/gate/small.dcm" "$T/gate/ct.dcm" ||
  { cat "$T/gate.scu"; fail "storescu of the gate files failed"; }
scu gate_j2k -xf "$T/ts.cfg" J2KL -- "$T/gate/extremity.dcm" ||
  { cat "$T/gate_j2k.scu"; fail "storescu of the J2K extremity failed"; }
[ "$(scu_successes gate gate_j2k)" = 4 ] || fail "gate files: $(scu_successes gate gate_j2k) Success of 4"
logs+=(gate gate_j2k)

# --- broken pixel data, then a good one ----------------------------------------------------------
scu bad -- "$T/bad/short_pixels.dcm" || { cat "$T/bad.scu"; fail "storescu of the broken file failed"; }
logs+=(bad)
scu after_bad -- "$T/after_bad.dcm" || { cat "$T/after_bad.scu"; fail "daemon stopped serving after a broken file"; }
[ "$(scu_successes after_bad)" = 1 ] || fail "no Success after the broken file"
logs+=(after_bad)
timeout 30 echoscu -to 10 -aec CXRTRIAGE 127.0.0.1 "$DAEMON_PORT" >/dev/null 2>&1 || fail "no C-ECHO after the broken file"
ok "broken pixel data: the daemon still serves"

# --- the ledger ----------------------------------------------------------------------------------
sent=("$T/one.dcm" "$T"/many/*.dcm "$T"/par/*.dcm "$T"/ts/*.dcm "$T"/gate/*.dcm
  "$T/bad/short_pixels.dcm" "$T/after_bad.dcm")
want=$(scu_successes "${logs[@]}")
[ "$want" = "${#sent[@]}" ] || fail "storescu saw $want Success for ${#sent[@]} files sent"
wait_rows "$want" 60
ok "$want rows for $want Success answers, all final"

check_scores "${sent[@]}"
ok "scores equal classify's; skipped and failed rows where classify skips or cannot read"

# The audit's pixel hash: SHA-256 of "WxHxC:16" and the samples as 16-bit little-endian (at
# most 16 significant bits), recomputed here with pydicom for an 8-bit and a 15-bit image, and
# the same for every lossless encoding of the same pixels.
/usr/bin/python3 - "$T/audit.json" "$T/uids.tsv" "$T/one.dcm" "$T/par/p01.dcm" "$T/ts/ELE.dcm" \
  "$T/ts/EBE.dcm" "$T/ts/RLE.dcm" "$T/ts/J2KL.dcm" <<'PY' || fail "pixel_sha256 is not the hash of the decoded samples"
import hashlib, json, sys
import numpy as np, pydicom
rows = {}
for l in open(sys.argv[1]):
    if l.strip():
        r = json.loads(l)
        rows[r["sop_instance_uid"]] = r
uid = dict(l.rstrip("\n").split("\t") for l in open(sys.argv[2]) if l.strip())
def want(path):
    ds = pydicom.dcmread(path)
    a = ds.pixel_array
    dt = "<i2" if int(ds.PixelRepresentation) else "<u2"
    h = hashlib.sha256(f"{ds.Columns}x{ds.Rows}x{ds.SamplesPerPixel}:16".encode())
    h.update(np.ascontiguousarray(a).astype(dt).tobytes())
    return h.hexdigest()
one, p01 = want(sys.argv[3]), want(sys.argv[4])
for f, w in [(sys.argv[3], one), (sys.argv[4], p01), (sys.argv[5], one), (sys.argv[6], p01),
             (sys.argv[7], p01), (sys.argv[8], p01)]:
    got = rows[uid[f]]["pixel_sha256"]
    assert got == w, f"{f}: {got} != {w}"
print("pixel hashes: 6 rows agree with pydicom")
PY
ok "pixel_sha256: the decoded samples at 16 bits, the same for every lossless encoding"

/usr/bin/python3 - "$T/audit.json" "$T/uids.tsv" <<'PY' || fail "gate reasons or failure not audited as expected"
import json, sys
rows = {}
for l in open(sys.argv[1]):
    if l.strip():
        r = json.loads(l)
        rows[r["sop_instance_uid"]] = r
uid = {f.rsplit("/", 1)[-1]: u for f, u in (l.rstrip("\n").split("\t") for l in open(sys.argv[2]))}
want = {"lateral.dcm": "ViewPosition", "extremity.dcm": "EXTREMITY", "ct.dcm": "CT", "small.dcm": "small"}
bad = 0
for f, word in want.items():
    r = rows[uid[f]]
    if r["state"] != "skipped" or word.lower() not in (r.get("gate_reason") or "").lower():
        print(f"{f}: state {r['state']} gate_reason {r.get('gate_reason')!r}, wanted skipped mentioning {word!r}")
        bad += 1
r = rows[uid["short_pixels.dcm"]]
if r["state"] != "failed" or not r.get("error") or r.get("scores"):
    print(f"short_pixels.dcm: state {r['state']} error {r.get('error')!r}")
    bad += 1
for r in rows.values():
    t = r.get("timings_ms") or {}
    if r["state"] == "classified" and not all(k in t for k in ("receive", "queue", "decode", "preprocess", "infer", "commit")):
        print(f"{r['sop_instance_uid']}: timings_ms {t}")
        bad += 1
sys.exit(1 if bad else 0)
PY
ok "lateral, non-chest, CT and too-small skipped with their reasons; broken pixels failed"

stop_pid "$DAEMON_PID" TERM 30
[ "$STOP_RC" = 0 ] || fail "exit status $STOP_RC on SIGTERM"
grep -q "daemon.exit" "$DAEMON_LOG" || fail "no daemon.exit in the log"
ok "graceful stop"
