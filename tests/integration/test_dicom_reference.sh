#!/usr/bin/env bash
# Every file of ../shared/data/dicom against real tools: dcm2pnm/dcmj2pnm/dcml2pnm renderings
# (Pearson r >= 0.99), opj_decompress for JPEG 2000 and gdcmconv for JPEG-LS DCMTK rejects (exact
# samples), ImageMagick for PNG/JPEG;
# bad/ files fail with the expected kind of error. The work is in test_dicom_reference.py.
. "$(dirname "$0")/lib.sh"
need_data dicom
for tool in dcm2pnm dcmj2pnm dcml2pnm opj_decompress gdcmconv convert; do
  command -v $tool >/dev/null || skip "needs $tool (scripts/deps.sh test)"
done
/usr/bin/python3 -c 'import numpy, pydicom' 2>/dev/null || skip "needs python3-numpy and python3-pydicom"
args=()
[ "${CXR_SANITIZE:-0}" = 1 ] && args+=(--quick)
/usr/bin/python3 "$CXR_SOURCE_DIR/tests/integration/test_dicom_reference.py" "$CXRTRIAGE" \
  "$CXR_DATA_DIR" "$T" "${args[@]}"
