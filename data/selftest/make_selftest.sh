#!/usr/bin/env bash
# make_selftest.sh - rebuilds cxrtriage-selftest.dcm, the radiograph `cxrtriage selftest` sends.
# TEST DATA, NOT A PATIENT: a public NIH ChestX-ray8 "No Finding" image (see README.md) re-encoded
# losslessly as a DICOM Secondary Capture with DCMTK's img2dcm, under the marker patient ID the
# daemon recognises (CXRTRIAGE-SELFTEST: scored and audited, never reported to the EHR).
#   data/selftest/make_selftest.sh [CXR4_DIR]   (default ../shared/data/cxr4)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=${1:-$here/../../../shared/data/cxr4}/Normal/nih__00001280_004.png
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 "$here/png2bmp.py" "$src" "$tmp/in.bmp"
img2dcm -i BMP "$tmp/in.bmp" "$tmp/out.dcm" \
  -k "PatientName=CXRTRIAGE^SELFTEST" -k "PatientID=CXRTRIAGE-SELFTEST" \
  -k "PatientBirthDate=" -k "PatientSex=O" \
  -k "StudyDescription=cxrtriage selftest - TEST DATA, not a patient" \
  -k "SeriesDescription=cxrtriage selftest - TEST DATA, not a patient" \
  -k "AccessionNumber=SELFTEST" -k "StudyID=SELFTEST" \
  -k "BodyPartExamined=CHEST" -k "ViewPosition=PA" -k "ConversionType=WSD" \
  -k "ImageComments=TEST DATA. NIH ChestX-ray8 image 00001280_004.png (NIH Clinical Center, public, no restrictions on use; Wang et al., CVPR 2017), 256x256 8-bit, re-encoded by cxrtriage data/selftest/make_selftest.sh"
mv "$tmp/out.dcm" "$here/cxrtriage-selftest.dcm"
echo "wrote $here/cxrtriage-selftest.dcm ($(stat -c %s "$here/cxrtriage-selftest.dcm") bytes)"
