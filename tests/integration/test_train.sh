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

# Training chose the triage operating points on its validation split; export recomputes the
# same ones from the split file, sets them by hand, or keeps them, and never touches weights.
grep -q "^triage on validation (n=" "$T/train.out" || { cat "$T/train.out"; fail "train printed no triage figures"; }
expect_rc 0 "$CXRTRIAGE" model info "$out"
thr=$(sed -n 's/^  triage_thresholds = //p' "$T/out")
[[ "$thr" =~ ^COVID-19=0\.[0-9]{4}\;Lung\ Opacity=[01]\.[0-9]{4}\;Normal=[01]\.[0-9]{4}\;Viral\ Pneumonia=[01]\.[0-9]{4}$ ]] ||
  fail "triage_thresholds '$thr'"
grep -q "^  triage_normal_class = Normal$" "$T/out" || fail "triage_normal_class"
grep -q "^  triage_method = validation split of data set fnv1a64:[0-9a-f]*, n=" "$T/out" || fail "triage_method"
grep -q "^triage rule:   cxr-triage-v1 urgent: COVID-19>=.*(source: model)$" "$T/out" || fail "triage rule line"
expect_rc 0 "$CXRTRAIN" export --model "$out" --out "$T/re.cxrm" --data "$CXR_DATA_DIR/cxr4" \
  --split-file "$T/split.csv" --threads 1
grep -q "^triage on validation" "$T/out" || fail "export printed no triage figures"
expect_rc 0 "$CXRTRIAGE" model info "$T/re.cxrm"
[ "$(sed -n 's/^  triage_thresholds = //p' "$T/out")" = "$thr" ] || fail "export recomputed other thresholds"
expect_rc 0 "$CXRTRAIN" export --model "$out" --out "$T/hand.cxrm" --thresholds "COVID-19=0.25, Normal=0.9"
expect_rc 0 "$CXRTRIAGE" model info "$T/hand.cxrm"
grep -q "^  triage_thresholds = COVID-19=0.2500;.*Normal=0.9000;" "$T/out" || fail "--thresholds not stored"
grep -q "^  triage_method = set by hand" "$T/out" || fail "--thresholds method"
expect_rc 1 "$CXRTRAIN" export --model "$out" --out "$T/hand.cxrm" --thresholds "Cats=0.2"
grep -q "'Cats': the model has no such class ('COVID-19', 'Lung Opacity', 'Normal', 'Viral Pneumonia')" "$T/out" ||
  fail "unknown class in --thresholds: $(cat "$T/out")"
expect_rc 2 "$CXRTRAIN" export --model "$out" --out "$T/x.cxrm" --data "$CXR_DATA_DIR/cxr4"
expect_rc 0 "$CXRTRAIN" export --model "$T/hand.cxrm" --out "$T/kept.cxrm"
expect_rc 0 "$CXRTRIAGE" model info "$T/kept.cxrm"
grep -q "^  triage_thresholds = COVID-19=0.2500;" "$T/out" || fail "plain export dropped the thresholds"
cmp <("$CXRTRIAGE" model info "$out" | sed -n '/^architecture:/,/^metadata:/p') \
    <("$CXRTRIAGE" model info "$T/kept.cxrm" | sed -n '/^architecture:/,/^metadata:/p') ||
  fail "export changed the architecture"
ok "triage operating points: chosen by train, recomputed, set by hand or kept by export"

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
