#!/usr/bin/env bash
# test_reports.sh - the ORU and the FHIR Bundle of every report_gen case through real parsers
# and validators (STANDARDS section 5):
#   HL7:  python-hl7 parse + field-by-field read-back against the inputs (check_oru.py);
#         npm hl7v2 strict parse and the ORU_R01 v2.5.1 structure of hl7v2-dictionary.
#   FHIR: read-back against the inputs (check_bundle.py); the official R4 JSON schema, the
#         `fhir` package (errorOnUnexpected) and @medplum validateResource; no empty values (jq).
# Plus: the same input gives byte-identical reports, and each validator rejects a broken copy
# (so a validator that accepts everything cannot make this test pass).
# Skips (77) with the reason when python3-hl7, jq, node/npm or the npm packages are missing.
. "$(dirname "$0")/lib.sh"

gen="$CXR_BUILD_DIR/hl7/report_gen"
val="$CXR_SOURCE_DIR/tests/validators"
vdir="$CXR_BUILD_DIR/validators"
[ -x "$gen" ] || fail "no $gen (build the report_gen target)"
/usr/bin/python3 -c 'import hl7' 2>/dev/null || skip "python3-hl7 is not installed (scripts/deps.sh test)"
command -v jq >/dev/null || skip "jq is not installed (scripts/deps.sh test)"
rc=0
bash "$val/setup.sh" "$vdir" >"$T/setup.out" 2>&1 || rc=$?
if [ $rc -eq 77 ]; then skip "$(cat "$T/setup.out")"; fi
[ $rc -eq 0 ] || { cat "$T/setup.out"; fail "validator setup failed ($rc)"; }

mkdir "$T/a" "$T/b"
"$gen" "$T/a" || fail "report_gen failed"
"$gen" "$T/b" || fail "report_gen failed (second run)"
n=$(ls "$T/a"/*.hl7 | wc -l)
[ "$n" -ge 10 ] || fail "report_gen wrote only $n cases"
diff -r "$T/a" "$T/b" >/dev/null || fail "the same inputs gave different reports"
ok "$n cases; the same result gives byte-identical ORU and Bundle"

/usr/bin/python3 "$val/check_oru.py" "$T/a" >"$T/oru.out" 2>&1 || { cat "$T/oru.out"; fail "python-hl7 read-back"; }
tail -n 1 "$T/oru.out"
node "$vdir/check_hl7.mjs" "$T/a"/*.hl7 >"$T/hl7v2.out" 2>&1 || { cat "$T/hl7v2.out"; fail "hl7v2 strict parse / ORU_R01 structure"; }
tail -n 1 "$T/hl7v2.out"
/usr/bin/python3 "$val/check_bundle.py" "$T/a" >"$T/bundle.out" 2>&1 || { cat "$T/bundle.out"; fail "Bundle read-back"; }
tail -n 1 "$T/bundle.out"
node "$vdir/check_fhir.cjs" "$T/a"/*.fhir.json >"$T/fhir.out" 2>&1 || { cat "$T/fhir.out"; fail "FHIR validators"; }
tail -n 1 "$T/fhir.out"
for f in "$T/a"/*.fhir.json; do
  e=$(jq '[paths(((type=="array" or type=="object") and length==0) or (type=="string" and length==0) or type=="null")] | length' "$f")
  [ "$e" = 0 ] || fail "$(basename "$f"): $e empty values (jq)"
done
ok "jq: no empty string, array, object or null in any Bundle"

# Negative controls: each checker must reject a broken copy of a good report.
mkdir "$T/bad"
cp "$T/a/plain.input.json" "$T/bad/"
sed 's/|19700101|F/|19700101|M/' "$T/a/plain.hl7" >"$T/bad/plain.hl7"
cp "$T/a/plain.fhir.json" "$T/bad/"
/usr/bin/python3 "$val/check_oru.py" "$T/bad" >/dev/null 2>&1 && fail "check_oru.py accepted a changed PID-8"
sed 's/|19700101|F/|notadate|F/' "$T/a/plain.hl7" >"$T/bad/date.hl7"
node "$vdir/check_hl7.mjs" "$T/bad/date.hl7" >/dev/null 2>&1 && fail "hl7v2 strict accepted PID-7 'notadate'"
/usr/bin/python3 - "$T/a/plain.hl7" "$T/bad/order.hl7" <<'EOF'
import sys
segs = open(sys.argv[1], newline="").read().split("\r")
i = next(k for k, s in enumerate(segs) if s.startswith("OBR|"))
j = next(k for k, s in enumerate(segs) if s.startswith("OBX|"))
segs[i], segs[j] = segs[j], segs[i]
open(sys.argv[2], "w", newline="").write("\r".join(segs))
EOF
node "$vdir/check_hl7.mjs" "$T/bad/order.hl7" >/dev/null 2>&1 && fail "ORU_R01 structure check accepted an OBX before the OBR"
jq '.entry[-1].resource.status = "done"' "$T/a/plain.fhir.json" >"$T/bad/status.json"
node "$vdir/check_fhir.cjs" "$T/bad/status.json" >/dev/null 2>&1 && fail "FHIR validators accepted status 'done'"
jq '.entry[-1].resource.basedOn = []' "$T/a/plain.fhir.json" >"$T/bad/empty.json"
node "$vdir/check_fhir.cjs" "$T/bad/empty.json" >/dev/null 2>&1 && fail "FHIR check accepted an empty array"
jq '.entry[-1].resource.subject.identifier.value = "other"' "$T/a/plain.fhir.json" >"$T/bad/plain.fhir.json"
/usr/bin/python3 "$val/check_bundle.py" "$T/bad" >/dev/null 2>&1 && fail "check_bundle.py accepted a changed patient id"
ok "every checker rejects a broken copy"
echo "all report checks passed"
