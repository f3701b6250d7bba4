#!/usr/bin/env bash
# A tiny end-to-end training run on real chest X-rays (a few dozen of ../shared/data/cxr4):
# the loss falls, the model file round-trips (eval of the saved file reproduces the test
# figures recorded at training time), --resume continues, and bad input is named.
. "$(dirname "$0")/lib.sh"
need_data cxr4

arch="$CXR_SOURCE_DIR/tests/data/tiny.arch"
out="$T/tiny.cxrm"
"$CXRTRAIN" train --data "$CXR_DATA_DIR/cxr4" --arch "$arch" --out "$out" \
  --max-per-class 16 --epochs 4 --val 0.25 --test 0.25 --no-augment --lr 0.003 --batch 8 \
  --warmup 0 --patience 10 --seed 7 --split-file "$T/split.csv" --no-progress \
  >"$T/train.out" 2>"$T/train.log" || { cat "$T/train.out" "$T/train.log"; fail "train failed"; }
[ -s "$out" ] || fail "no model written"
[ -s "$out.history.json" ] || fail "no history written"
[ "$(tail -n +2 "$T/split.csv" | wc -l)" -eq 64 ] || fail "split file does not list 64 images"
/usr/bin/python3 - "$out.history.json" <<'PY' || fail "training loss did not fall"
import json, sys
h = json.load(open(sys.argv[1]))["epochs"]
first, last = h[0]["train_loss"], h[-1]["train_loss"]
print(f"train loss {first:.4f} -> {last:.4f}")
sys.exit(0 if last < first else 1)
PY
ok "loss falls"

# The saved file loads, and scoring it again reproduces the test accuracy recorded in it.
expect_rc 0 "$CXRTRIAGE" model info "$out"
grep -q "test_accuracy" "$T/out" || fail "model info lacks the test metadata"
want=$(grep -o 'test_accuracy[^0-9]*[0-9.]*' "$T/out" | grep -o '[0-9.]*$')
expect_rc 0 "$CXRTRAIN" eval --model "$out" --data "$CXR_DATA_DIR/cxr4" --split-file "$T/split.csv" \
  --split test --out-dir "$T/eval" --bootstrap 50
got=$(grep -o '^accuracy [0-9.]*' "$T/out" | grep -o '[0-9.]*$')
/usr/bin/python3 -c "import sys; sys.exit(0 if abs(float('$want') - float('$got')) < 1e-6 else 1)" ||
  fail "eval of the saved model gives accuracy $got, training recorded $want"
[ -s "$T/eval/report.html" ] && [ -s "$T/eval/report.json" ] && [ -s "$T/eval/predictions.csv" ] ||
  fail "eval outputs missing"
ok "model round-trips (test accuracy $got)"

# --resume continues from the checkpoint to the new epoch count.
"$CXRTRAIN" train --data "$CXR_DATA_DIR/cxr4" --arch "$arch" --out "$out" \
  --max-per-class 16 --epochs 5 --val 0.25 --test 0.25 --no-augment --lr 0.003 --batch 8 \
  --warmup 0 --patience 10 --seed 7 --split-file "$T/split.csv" --no-progress --resume \
  >"$T/resume.out" 2>"$T/resume.log" || { cat "$T/resume.log"; fail "resume failed"; }
grep -q "resuming .* at epoch 5" "$T/resume.log" || { cat "$T/resume.log"; fail "did not resume at epoch 5"; }
grep -q '^epoch 5/5' "$T/resume.log" || fail "epoch 5 not run"
ok "resume"

# Bad input is named: a corrupt image and an unknown class when fine-tuning.
mkdir -p "$T/bad/COVID" "$T/bad/Normal"
for c in COVID Normal; do
  files=("$CXR_DATA_DIR/cxr4/$c"/*.png)
  cp "${files[@]:0:6}" "$T/bad/$c/"
done
first=("$T"/bad/COVID/*.png)
head -c 300 "${first[0]}" >"$T/bad/Normal/corrupt.png"
expect_rc 1 "$CXRTRAIN" train --data "$T/bad" --arch "$arch" --out "$T/b.cxrm" --epochs 1 --no-progress
grep -q "corrupt.png" "$T/out" || { cat "$T/out"; fail "corrupt image not named"; }
rm "$T/bad/Normal/corrupt.png"
mkdir "$T/bad/Cats"
cp "${first[0]}" "$T/bad/Cats/cat.png"
expect_rc 1 "$CXRTRAIN" train --data "$T/bad" --init-from "$out" --out "$T/b.cxrm" --epochs 1 --no-progress
grep -q "unknown class folder 'Cats'" "$T/out" || { cat "$T/out"; fail "unknown class not named"; }
ok "bad input named"

# The bundled model scores a real radiograph from DICOM by default, with its digest.
need_data dicom
bundled="$CXR_SOURCE_DIR/model/weights/cxr4-default.cxrm"
[ -s "$bundled" ] || fail "no bundled model at $bundled"
digest=$("$CXRTRIAGE" model info "$bundled" | sed -n 's/^digest: *sha256://p')
expect_rc 0 "$CXRTRIAGE" classify --json "$CXR_DATA_DIR/dicom/cxr_rg1_15bit_mono1_half_jpegls.dcm"
/usr/bin/python3 - "$T/out" "$digest" <<'PY' || { cat "$T/out"; fail "classify with the bundled model"; }
import json, sys
r = json.loads(open(sys.argv[1]).readline())
s = r["scores"]
assert set(s) == {"COVID-19", "Lung Opacity", "Normal", "Viral Pneumonia"}, s
assert abs(sum(s.values()) - 1) < 1e-3 and r["verdict"] == "applicable", r
assert r["model_digest"] == sys.argv[2], (r["model_digest"], sys.argv[2])
print("bundled model:", r["top"], s)
PY
ok "bundled model scores a real DICOM radiograph"
