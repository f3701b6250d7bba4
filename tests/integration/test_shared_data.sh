#!/usr/bin/env bash
# The shared data set is where CXR_DATA_DIR says, with its manifests; skipped (77) when absent.
. "$(dirname "$0")/lib.sh"
need_data dicom
need_data cxr4
n=$(tail -n +2 "$CXR_DATA_DIR/dicom/MANIFEST.csv" | wc -l)
[ "$n" -ge 50 ] || fail "dicom/MANIFEST.csv lists only $n files"
while IFS=, read -r file _; do
  [ -f "$CXR_DATA_DIR/dicom/$file" ] || fail "manifest names a missing file: $file"
done < <(tail -n +2 "$CXR_DATA_DIR/dicom/MANIFEST.csv")
for c in COVID Lung_Opacity Normal Viral_Pneumonia; do
  [ "$(ls "$CXR_DATA_DIR/cxr4/$c" | wc -l)" -gt 100 ] || fail "cxr4/$c is nearly empty"
done
ok "shared data present ($n DICOM files)"
