#!/usr/bin/env bash
# `cxrtriage inspect` and `cxrtriage preprocess` as a new user would run them: every file of
# ../shared/data/dicom gives a verdict or a clear error naming the file; the gate's reasons for
# files edited here with dcmodify (lateral view, other body part, several frames, small, colour);
# bad input made here (Rows = Columns = 65535, zero-length and odd-length pixel data) fails
# cleanly with a non-zero exit.
. "$(dirname "$0")/lib.sh"
need_data dicom
D="$CXR_DATA_DIR/dicom"
command -v dcmodify >/dev/null || skip "needs dcmodify (dcmtk)"

expect_rc 2 "$CXRTRIAGE" inspect
expect_rc 0 "$CXRTRIAGE" inspect --help
grep -q "not a diagnosis" "$T/out" || fail "inspect --help lacks the notice"
expect_rc 2 "$CXRTRIAGE" preprocess "$D/cxr_siim_8bit_rle.dcm"
ok "usage"

# Every file: exit 0 with a Verdict line, or exit 1 with an Error line naming the file.
n=0
while IFS=, read -r file _; do
  f="$D/$file"
  rc=0; "$CXRTRIAGE" inspect "$f" >"$T/out" 2>"$T/err" || rc=$?
  if [ $rc -eq 0 ]; then
    grep -qE '^  Verdict +(applicable|not applicable: .+)$' "$T/out" || fail "$file: no verdict"
    grep -qE '^  Pixels +decoded [0-9]+x[0-9]+' "$T/out" || fail "$file: pixels not decoded"
  elif [ $rc -eq 1 ]; then
    grep -qF "Error                   $f: " "$T/out" || { cat "$T/out"; fail "$file: error does not name the file"; }
    grep -qF "$f: " "$T/err" || fail "$file: nothing on stderr"
  else
    cat "$T/out" "$T/err"; fail "$file: inspect exited $rc (crash?)"
  fi
  n=$((n + 1))
done < <(tail -n +2 "$D/MANIFEST.csv")
ok "inspect gives a verdict or a clear error for all $n files"

# The attributes and verdicts of known files.
expect_rc 0 "$CXRTRIAGE" inspect "$D/cxr_rg1_15bit_mono1_half_jpegls.dcm"
for want in 'Transfer Syntax +1.2.840.10008.1.2.4.80 \(JPEG-LS Lossless' 'Modality +CR' \
  'Photometric +MONOCHROME1' 'Rows x Columns +978 x 921' 'Bits Allocated/Stored +16 / 15' \
  'Verdict +applicable$' 'inverted \(MONOCHROME1\)'; do
  grep -qE "$want" "$T/out" || { cat "$T/out"; fail "missing /$want/"; }
done
expect_rc 0 "$CXRTRIAGE" inspect "$D/pydicomdata_RG3_J2KR_CR.dcm"
grep -q "not applicable: body part is not chest (BodyPartExamined 'EXTREMITY')" "$T/out" || fail "RG3 reason"
expect_rc 0 "$CXRTRIAGE" inspect "$D/pydicom_MR_small.dcm"
grep -q "not applicable: not CR, DX or Secondary Capture (Modality 'MR')" "$T/out" || fail "MR reason"
expect_rc 1 "$CXRTRIAGE" inspect "$D/bad/pydicom_test-SR.dcm"
grep -q "not an image: no Pixel Data" "$T/out" || fail "SR reason"
expect_rc 1 "$CXRTRIAGE" inspect "$D/cxr_siim_8bit_rle.dcm" "$D/bad/bad_rows_mismatch.dcm"
grep -q "Verdict                 applicable" "$T/out" || fail "good file of two not reported"
ok "attributes and reasons"

# The gate's rules on copies edited with dcmodify.
src="$D/cxr_siim_8bit_explicit_le.dcm"
gate() { # gate NAME WANT DCMODIFY-ARGS...
  local name=$1 want=$2; shift 2
  cp "$src" "$T/$name.dcm"
  dcmodify -nb "$@" "$T/$name.dcm" >/dev/null 2>&1 || fail "dcmodify $*"
  expect_rc 0 "$CXRTRIAGE" inspect "$T/$name.dcm"
  grep -qF "$want" "$T/out" || { cat "$T/out"; fail "$name: wanted '$want'"; }
}
gate lateral "not a frontal view (ViewPosition 'LL')" -i "(0018,5101)=LL"
gate pa "Verdict                 applicable" -i "(0018,5101)=PA" -i "(0018,0015)=CHEST"
gate skull "body part is not chest (BodyPartExamined 'SKULL')" -i "(0018,0015)=SKULL"
gate ct "not CR, DX or Secondary Capture (Modality 'CT')" -m "(0008,0060)=CT"
gate frames "several frames (2)" -i "(0028,0008)=2"
ok "gate reasons"

# Small and colour come from real files.
expect_rc 0 "$CXRTRIAGE" inspect "$D/pydicom_CT_small.dcm"
cp "$D/pydicom_SC_rgb_rle.dcm" "$T/sc.dcm"
expect_rc 0 "$CXRTRIAGE" inspect "$D/pydicomdata_HTJ2KLossless_08_RGB.dcm"
grep -q "colour where grayscale is required (RGB, 3 samples per pixel)" "$T/out" ||
  { expect_rc 0 "$CXRTRIAGE" inspect "$D/pydicomdata_HTJ2KLossless_08_RGB.dcm"; cat "$T/out"; fail "colour reason"; }
cp "$D/pydicomdata_HTJ2KLossless_08_RGB.dcm" "$T/sc.dcm"
dcmodify -nb -m "(0028,0010)=100" "$T/sc.dcm" >/dev/null 2>&1 || true
cp "$src" "$T/small.dcm"
dcmodify -nb -m "(0028,0010)=200" -m "(0028,0011)=200" "$T/small.dcm" >/dev/null 2>&1
expect_rc 0 "$CXRTRIAGE" inspect "$T/small.dcm"
grep -q "too small: 200x200, under 256 pixels a side" "$T/out" || { cat "$T/out"; fail "small reason"; }
ok "too small and colour"

# Bad input made here: each fails with the file and the problem, exit 1, never a crash.
bad() { # bad NAME WANT-REGEX DCMODIFY-ARGS...
  local name=$1 want=$2; shift 2
  cp "$src" "$T/$name.dcm"
  dcmodify -nb "$@" "$T/$name.dcm" >/dev/null 2>&1 || true
  expect_rc 1 "$CXRTRIAGE" preprocess "$T/$name.dcm" -o "$T/$name.png"
  grep -qE "$T/$name.dcm: .*$want" "$T/out" || { cat "$T/out"; fail "$name: wanted /$want/"; }
  [ ! -e "$T/$name.png" ] || fail "$name: output written despite the error"
}
bad huge "Rows x Columns 65535x65535 is out of range" -m "(0028,0010)=65535" -m "(0028,0011)=65535"
bad over_cap "30000x30000 x 1 frames would decode to more than 512 MiB" -m "(0028,0010)=30000" -m "(0028,0011)=30000"
bad short "pixel data has 1048576 bytes, Rows x Columns \(20000x20000\) x 1 x 8 bits need 400000000" -m "(0028,0010)=20000" -m "(0028,0011)=20000"
bad zero "pixel data is empty|no pixel data|zero length" -m "(7fe0,0010)="
bad bits "Bits Allocated 12 is not supported" -m "(0028,0100)=12"
bad stored "Bits Stored 20 with Bits Allocated 8" -m "(0028,0101)=20"
# Odd-length pixel data and a cut-off file, made with head/printf.
head -c 5000 "$src" >"$T/cut.dcm"
expect_rc 1 "$CXRTRIAGE" preprocess "$T/cut.dcm" -o "$T/cut.png"
grep -q "$T/cut.dcm: " "$T/out" || fail "cut file not named"
printf 'hello, not an image\n' >"$T/text.dcm"
expect_rc 1 "$CXRTRIAGE" inspect "$T/text.dcm"
grep -q "$T/text.dcm: not a DICOM, PNG or JPEG file" "$T/out" || fail "text file"
expect_rc 1 "$CXRTRIAGE" inspect "$T/missing.dcm"
grep -q "$T/missing.dcm: no such file" "$T/out" || fail "missing file"
ok "bad input"

# preprocess writes an 8-bit PNG of the requested size, for DICOM, PNG and JPEG.
expect_rc 0 "$CXRTRIAGE" preprocess "$D/cxr_rg1_15bit_mono1_half_j2k_lossless.dcm" -o "$T/p.png" --size 320
grep -q "format=DICOM width=921 height=978 size=320 out_width=301 out_height=320 voi=window" "$T/out" || { cat "$T/out"; fail "preprocess summary"; }
file "$T/p.png" | grep -q "PNG image data, 320 x 320, 8-bit grayscale" || fail "not a 320x320 8-bit PNG: $(file "$T/p.png")"
if [ -d "$CXR_DATA_DIR/cxr4/Normal" ]; then
  pngs=("$CXR_DATA_DIR"/cxr4/Normal/*.png)
  png=${pngs[0]}
  expect_rc 0 "$CXRTRIAGE" preprocess "$png" -o "$T/n.png"
  grep -q "format=PNG" "$T/out" || fail "PNG input"
  expect_rc 0 "$CXRTRIAGE" inspect "$png"
  grep -q "Format                  PNG" "$T/out" || fail "PNG inspect"
fi
ok "preprocess"
