#!/usr/bin/env bash
# `cxrtriage-train explore` on a small data set built from cxr4 PNGs at test time, with planted
# problems: an exact duplicate across classes, near duplicates (re-encoded JPEG, a gamma-shifted
# and resampled PNG, an RGB PNG), a truncated PNG, a text file, an empty class folder and a
# class folder whose name the model does not know. Checks the JSON finds each of them, the
# messages name the files, the HTML is self-contained and carries the disclaimer, the split
# file reports leakage, and bad data folders fail with a clear message.
# Skipped (77) without the shared data set.
. "$(dirname "$0")/lib.sh"
need_data cxr4
command -v convert >/dev/null || skip "needs ImageMagick's convert (scripts/deps.sh test)"
SRC="$CXR_DATA_DIR/cxr4"
D="$T/ds"
mkdir -p "$D/COVID" "$D/Normal" "$D/Viral Pneumonia" "$D/Empty" "$D/Mystery"
# first_files DIR N: the first N file names in DIR (no pipeline that pipefail could trip on)
first_files() {
  local -a all
  mapfile -t all < <(ls "$1")
  printf '%s\n' "${all[@]:0:$2}"
}
for c in COVID Normal Viral_Pneumonia; do
  dst=$c; [ "$c" = Viral_Pneumonia ] && dst="Viral Pneumonia"
  while read -r f; do cp "$SRC/$c/$f" "$D/$dst/"; done < <(first_files "$SRC/$c" 12)
done
while read -r f; do cp "$SRC/Lung_Opacity/$f" "$D/Mystery/"; done < <(first_files "$SRC/Lung_Opacity" 3)
cv1=$(first_files "$D/COVID" 3 | tail -n 1)
no1=$(first_files "$D/Normal" 4 | tail -n 1)
vp1=$(first_files "$D/Viral Pneumonia" 5 | tail -n 1)
cp "$D/COVID/$cv1" "$D/Normal/planted_exact_copy.png"                         # exact, across classes
convert "$D/Normal/$no1" -quality 90 "$D/Normal/planted_near.jpg"             # JPEG re-encode
convert "$D/Viral Pneumonia/$vp1" -gamma 1.05 -resize 250x250 -resize '256x256!' \
  "$D/Viral Pneumonia/planted_near_gamma.png"                                 # mild edit
convert "$D/COVID/$cv1" -define png:color-type=2 "$D/COVID/planted_rgb.png"   # colour PNG
head -c 3000 "$D/Normal/$no1" >"$D/Normal/planted_truncated.png"              # corrupt
echo "not an image" >"$D/COVID/notes.txt"
cv2=$(first_files "$D/COVID" 6 | tail -n 1)
convert "$D/COVID/$cv2" -define png:bit-depth=16 -depth 16 "$D/Mystery/planted_16bit.png"
convert "$D/COVID/$cv2" -interlace PNG "$D/Mystery/planted_interlaced.png"
convert "$D/COVID/$cv2" -quality 85 "$T/whole.jpg"
head -c 2000 "$T/whole.jpg" >"$D/Mystery/planted_truncated.jpg"
printf 'path,split\nCOVID/%s,train\nNormal/planted_exact_copy.png,val\n' "$cv1" >"$T/split.csv"

expect_rc 0 "$CXRTRAIN" explore --data "$D" --out "$T/r.html" --json "$T/r.json" --split "$T/split.csv"
cp "$T/out" "$T/explore.log"
grep -q "planted_truncated.png" "$T/out" || fail "no message names the truncated file"
grep -q "notes.txt" "$T/out" || fail "no message names the text file"
grep -q "'Empty' has no files" "$T/out" || fail "no warning about the empty class folder"
grep -q "'Mystery' is not one of the model's classes" "$T/out" || fail "no warning about the unknown class folder"

/usr/bin/python3 - "$T/r.json" "$cv1" "$no1" "$vp1" <<'PY' || fail "JSON report is missing a planted problem"
import json, sys
j = json.load(open(sys.argv[1]))
cv1, no1, vp1 = sys.argv[2:5]
def need(cond, what):
    if not cond:
        print("missing:", what); sys.exit(1)
names = [c["name"] for c in j["classes"]]
need(names == ["COVID", "Empty", "Mystery", "Normal", "Viral Pneumonia"], f"class list {names}")
counts = {c["name"]: c["images"] for c in j["classes"]}
need(counts == {"COVID": 13, "Empty": 0, "Mystery": 5, "Normal": 14, "Viral Pneumonia": 13}, f"counts {counts}")
groups = [sorted(g) for g in j["exact_duplicates"]["list"]]
need(sorted([f"COVID/{cv1}", "Normal/planted_exact_copy.png"]) in groups, f"exact duplicate {groups}")
need(j["exact_duplicates"]["cross_class_groups"] >= 1, "cross-class exact duplicate")
pairs = {(p["a"], p["b"]) for p in j["near_duplicates"]["list"]}
def near(a, b):
    return (a, b) in pairs or (b, a) in pairs
need(near(f"Normal/{no1}", "Normal/planted_near.jpg"), "JPEG near duplicate")
need(near(f"Viral Pneumonia/{vp1}", "Viral Pneumonia/planted_near_gamma.png"), "gamma near duplicate")
need(near(f"COVID/{cv1}", "COVID/planted_rgb.png"), "RGB near duplicate")
bad = {u["path"]: u["reason"] for u in j["unreadable"]}
need("Normal/planted_truncated.png" in bad and "PNG" in bad["Normal/planted_truncated.png"], f"truncated PNG {bad}")
need(bad.get("COVID/notes.txt") == "not a PNG or JPEG file", f"text file {bad}")
need("damaged" in bad.get("Mystery/planted_truncated.jpg", ""), f"truncated JPEG {bad}")
st = {s["path"]: s for s in j["image_stats"]}
d16 = st["Mystery/planted_16bit.png"]
orig = [s for p, s in st.items() if p.startswith("COVID/") and s["dhash"] == d16["dhash"] and s["bit_depth"] == 8]
need(d16["bit_depth"] == 16 and orig and abs(orig[0]["mean"] - d16["mean"]) < 0.005, "16-bit PNG statistics")
need(abs(st["Mystery/planted_interlaced.png"]["mean"] - d16["mean"]) < 0.005, "interlaced PNG statistics")
need(j["splits"]["exact_groups_across_splits"] == 1, f"leakage {j['splits']}")
fmts = {(b["format"], b["channels"]) for b in j["bit_depths"]}
need(("JPEG", 1) in fmts and ("PNG", 3) in fmts and ("PNG", 1) in fmts, f"formats {fmts}")
need(j["disclaimer"].startswith("Decision support"), "disclaimer")
for s in j["image_stats"]:
    need(0 <= s["mean"] <= 1 and 0 <= s["std"] <= 0.5, f"stats of {s['path']}")
PY
ok "JSON finds the planted duplicates, near duplicates, corrupt files and leakage"

[ -s "$T/r.html" ] || fail "no HTML report"
if grep -oE 'https?://[^" ]*' "$T/r.html" | grep -v '^http://www.w3.org/2000/svg$' | grep -q .; then
  fail "HTML refers to something outside the file: $(grep -oE 'https?://[^" ]*' "$T/r.html" | sort -u | head -3)"
fi
grep -qE '<(script|link|img)[^>]+src=|<link ' "$T/r.html" && fail "HTML loads external resources"
grep -q "Decision support only, not a diagnosis" "$T/r.html" || fail "HTML has no disclaimer"
grep -q "planted_truncated.png" "$T/r.html" || fail "HTML does not list the corrupt file"
grep -q "Viral Pneumonia" "$T/r.html" || fail "HTML misses a class"
ok "HTML is self-contained and carries the disclaimer"

# Bad data folders: a clear message naming the path, no report.
expect_rc 1 "$CXRTRAIN" explore --data "$T/nonexistent" --out "$T/x.html"
grep -q "'$T/nonexistent'" "$T/out" && grep -q "no such directory" "$T/out" || fail "unclear message: $(cat "$T/out")"
mkdir -p "$T/one/OnlyClass"
expect_rc 1 "$CXRTRAIN" explore --data "$T/one" --out "$T/x.html"
grep -q "at least 2" "$T/out" || fail "unclear message for a single class: $(cat "$T/out")"
[ ! -e "$T/x.html" ] || fail "a report was written for a bad data folder"
expect_rc 2 "$CXRTRAIN" explore --out "$T/x.html"
grep -q -- "--data DIR is required" "$T/out" || fail "no usage message without --data"
ok "bad data folders give a clear message"

# The whole cxr4 set, timed (release builds only: sanitizers are several times slower).
if [ "${CXR_SANITIZE:-0}" != 1 ]; then
  start=$(date +%s.%N)
  expect_rc 0 "$CXRTRAIN" explore --data "$SRC" --json "$T/full.json" --out "$T/full.html"
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  n=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["images"])' "$T/full.json")
  [ "$n" -ge 2000 ] || fail "only $n images read from cxr4"
  awk -v s="$secs" 'BEGIN { exit !(s < 60) }' || fail "explore took ${secs}s on cxr4 (limit 60 s; about 4 s on an idle core)"
  ok "cxr4: $n images in ${secs}s"
fi
