#!/usr/bin/env bash
# `cxrtriage model info FILE` on a real model file written by the engine, and on damaged ones.
. "$(dirname "$0")/lib.sh"

MK="$CXR_BUILD_DIR/model/test_model_mk"
digest=$("$MK" compact "$T/m.cxrm")

expect_rc 0 "$CXRTRIAGE" model info "$T/m.cxrm"
grep -q "sha256:$digest" "$T/out" || fail "digest not shown"
grep -q "224 x 224, 1 channel, preprocessing 'cxr-pixel-v1', mean 0.5, std 0.25" "$T/out" ||
  fail "input spec not shown: $(cat "$T/out")"
grep -q "'COVID-19', 'Lung Opacity', 'Normal', 'Viral Pneumonia'" "$T/out" || fail "classes"
params=$(awk '/^parameters:/ {print $2}' "$T/out")
[ "$params" -gt 100000 ] && [ "$params" -lt 2000000 ] || fail "parameter count '$params'"
grep -qE '^FLOPs/image: +[0-9.]+ M' "$T/out" || fail "FLOPs"
grep -qE '^  [0-9]+ +conv ' "$T/out" || fail "architecture table"
grep -q "note = test model" "$T/out" || fail "metadata"
grep -q "^triage rule:   cxr-triage-v1 urgent: COVID-19>=0.5 Lung Opacity>=0.5 Viral Pneumonia>=0.5; normal: Normal>=0.5 (source: default)$" "$T/out" ||
  fail "triage rule not shown: $(cat "$T/out")"
grep -qE '^conv kernel: +(avx512|avx2|generic|im2col) \(' "$T/out" || fail "kernel not shown"
ok "model info shows architecture, input, classes, triage rule, metadata, digest and the conv kernel"

"$CXRTRAIN" export --model "$T/m.cxrm" --out "$T/t.cxrm" --thresholds "COVID-19=0.412,Normal=0.6" >/dev/null
expect_rc 0 "$CXRTRIAGE" model info "$T/t.cxrm"
grep -q "^triage rule:   cxr-triage-v1 urgent: COVID-19>=0.412 Lung Opacity>=0.5 Viral Pneumonia>=0.5; normal: Normal>=0.6 (source: model)$" "$T/out" ||
  fail "stored triage rule not shown: $(cat "$T/out")"
"$CXRTRAIN" export --model "$T/m.cxrm" --out "$T/bad-rule.cxrm" --set "triage_normal_class=Healthy" >/dev/null
expect_rc 1 "$CXRTRIAGE" model info "$T/bad-rule.cxrm"
grep -q "^triage rule:   invalid: metadata triage_normal_class: class 'Healthy' is not one of" "$T/out" ||
  fail "malformed triage metadata not reported: $(cat "$T/out")"
ok "model info shows the stored triage rule and refuses a malformed one"

CXR_KERNEL=im2col expect_rc 0 "$CXRTRIAGE" model info "$T/m.cxrm"
grep -qE '^conv kernel: +im2col \(chosen by CXR_KERNEL' "$T/out" || fail "CXR_KERNEL=im2col not followed: $(grep kernel "$T/out")"
CXR_KERNEL=nonsense expect_rc 0 "$CXRTRIAGE" model info "$T/m.cxrm"
grep -q "CXR_KERNEL='nonsense' ignored" "$T/out" || fail "bad CXR_KERNEL not reported: $(grep kernel "$T/out")"
ok "model info follows CXR_KERNEL and says when it ignores it"

printf 'NOTAMODEL-----------------------------------------------------------' >"$T/bad.cxrm"
expect_rc 1 "$CXRTRIAGE" model info "$T/bad.cxrm"
grep -q "wrong magic" "$T/out" || fail "wrong magic not reported: $(cat "$T/out")"
head -c 1000 "$T/m.cxrm" >"$T/short.cxrm"
expect_rc 1 "$CXRTRIAGE" model info "$T/short.cxrm"
grep -q "truncated file" "$T/out" || fail "truncation not reported"
cp "$T/m.cxrm" "$T/flip.cxrm"
printf '\x01' | dd of="$T/flip.cxrm" bs=1 seek=5000 conv=notrunc status=none
expect_rc 1 "$CXRTRIAGE" model info "$T/flip.cxrm"
grep -q "checksum mismatch" "$T/out" || fail "corruption not reported"
expect_rc 1 "$CXRTRIAGE" model info "$T/absent.cxrm"
expect_rc 2 "$CXRTRIAGE" model
expect_rc 2 "$CXRTRIAGE" model frob "$T/m.cxrm"
ok "damaged, missing files and bad usage are refused"
