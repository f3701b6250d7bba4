#!/usr/bin/env bash
# `cxrtriage audit` on a ledger written through store.h (tests/tools/store_fill.c): list, show,
# export, stats and verify in every format, finding the file by --db, --state-dir and --config,
# and verify catching a row edited with the sqlite3 shell.
. "$(dirname "$0")/lib.sh"

FILL="$CXR_BUILD_DIR/store/store_fill"
PY=/usr/bin/python3
export TZ=UTC # the table's local times and days are then predictable
mkdir -p "$T/state"
DB="$T/state/audit.db"
"$FILL" "$DB" || fail "store_fill"
A=("$CXRTRIAGE" audit)

# A missing database is a clear error, not an empty list.
expect_rc 1 "${A[@]}" list --db "$T/absent.db"
grep -q "absent.db: open: no such file" "$T/out" || fail "missing db message: $(cat "$T/out")"
[ ! -e "$T/absent.db" ] || fail "a reader created the database"
expect_rc 2 "${A[@]}" frobnicate
expect_rc 2 "${A[@]}" list --state bogus --db "$DB"
expect_rc 0 "${A[@]}" --help
ok "missing database and bad usage"

# list: aligned table, newest first, times labelled
expect_rc 0 "${A[@]}" list --db "$DB"
head -1 "$T/out" | grep -q "RECEIVED (local)" || fail "table header: $(head -1 "$T/out")"
[ "$(grep -cE '^ *[0-9]+  ' "$T/out")" -eq 6 ] || fail "6 rows expected: $(cat "$T/out")"
sed -n 2p "$T/out" | grep -qE '^ *6  2026-12-02 12:00:03  classified  routine  Lung Opacity 0.55' ||
  fail "first row: $(sed -n 2p "$T/out")"
grep -q "C=0.91 LO=0.05 N=0.02 VP=0.02" "$T/out" || fail "compact scores"
grep -q "ViewPosition LL is not PA or AP" "$T/out" || fail "gate reason"
grep -q "dicom: pixel data truncated" "$T/out" || fail "error"
# columns aligned: STATE starts at the same offset on every row
$PY - "$T/out" <<'PY' || fail "columns not aligned"
import sys
lines = [l for l in open(sys.argv[1]) if not l.startswith("(")]
cols = {l.index("  ", l.index("2026")) for l in lines[1:]}
assert len(cols) == 1, cols
PY
expect_rc 0 "${A[@]}" list --db "$DB" --utc --limit 2
grep -q "RECEIVED (UTC)" "$T/out" || fail "--utc header"
[ "$(grep -cE '^ *[0-9]+  ' "$T/out")" -eq 2 ] || fail "--limit 2"
ok "list table"

# filters
count() { expect_rc 0 "${A[@]}" list --db "$DB" --format json "$@"; grep -c . "$T/out" || true; }
[ "$(count)" -eq 6 ] || fail "all"
[ "$(count --patient PAT001)" -eq 3 ] || fail "--patient"
[ "$(count --accession ACC4)" -eq 1 ] || fail "--accession"
[ "$(count --study 1.9.2)" -eq 2 ] || fail "--study"
[ "$(count --class COVID-19)" -eq 1 ] || fail "--class"
[ "$(count --state received)" -eq 1 ] || fail "--state"
[ "$(count --triage urgent)" -eq 1 ] || fail "--triage urgent"
[ "$(count --triage none)" -eq 3 ] || fail "--triage none"
[ "$(count --since 2026-12-02)" -eq 4 ] || fail "--since"
[ "$(count --until 2026-12-02)" -eq 2 ] || fail "--until"
[ "$(count --since 2026-12-01T12:00:30Z --until 2026-12-02T12:00:01Z)" -eq 2 ] || fail "range"
ok "filters"

# JSON: one object per line with the documented keys
expect_rc 0 "${A[@]}" list --db "$DB" --format json
$PY - "$T/out" <<'PY' || fail "JSON output"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["id"] for r in rows] == [6, 5, 4, 3, 2, 1], rows
keys = {"id", "sop_instance_uid", "study_instance_uid", "series_instance_uid", "sop_class_uid",
        "accession", "patient_id", "calling_aet", "peer", "transfer_syntax", "size_bytes",
        "received_at", "state", "gate_reason", "scores", "triage", "triage_reason", "rule",
        "model_digest", "pixel_sha256", "timings_ms", "error", "duplicate_of", "source"}
for r in rows:
    assert set(r) == keys, set(r) ^ keys
by = {r["id"]: r for r in rows}
assert by[1]["scores"] == {"COVID-19": 0.91, "Lung Opacity": 0.05, "Normal": 0.02,
                           "Viral Pneumonia": 0.02}, by[1]["scores"]
assert by[1]["triage"] == "urgent" and by[1]["received_at"] == "2026-12-01T12:00:00.000Z"
assert by[1]["timings_ms"] == {"receive": 21, "queue": 1.5, "decode": 30, "preprocess": 8,
                               "infer": 45}, by[1]["timings_ms"]
assert by[2]["accession"] == 'ACC,"2"'
assert by[3]["state"] == "skipped" and by[3]["scores"] is None and by[3]["triage"] is None
assert by[3]["gate_reason"] == "ViewPosition LL is not PA or AP"
assert by[4]["error"] == "dicom: pixel data truncated"
assert by[5]["state"] == "received" and by[5]["timings_ms"] == {"receive": 25}
assert by[6]["duplicate_of"] == 1 and by[1]["duplicate_of"] is None
PY
ok "list --format json"

# export: CSV by default, RFC 4180, no default limit
expect_rc 0 "${A[@]}" export --db "$DB"
$PY - "$T/out" <<'PY' || fail "CSV export"
import csv, sys
with open(sys.argv[1], newline="") as f:
    data = f.read()
assert "\r\n" in data
rows = list(csv.DictReader(data.splitlines(True)))
assert len(rows) == 6, len(rows)
by = {r["id"]: r for r in rows}
assert by["2"]["accession"] == 'ACC,"2"', by["2"]
assert by["1"]["top_class"] == "COVID-19" and float(by["1"]["top_score"]) == 0.91
assert by["1"]["received_at"] == "2026-12-01T12:00:00.000Z"
assert by["3"]["gate_reason"] == "ViewPosition LL is not PA or AP"
assert by["6"]["duplicate_of"] == "1"
PY
expect_rc 0 "${A[@]}" export --db "$DB" --format json
[ "$(grep -c . "$T/out")" -eq 6 ] || fail "export json"
ok "export csv and json"

# show by id and by SOP Instance UID (the newest row: the duplicate)
expect_rc 0 "${A[@]}" show 1 --db "$DB"
grep -q "^instance 1$" "$T/out" || fail "show header"
grep -qE "patient_id +PAT001" "$T/out" || fail "show patient"
grep -qE "received_at +2026-12-01T12:00:00.000Z" "$T/out" || fail "show time"
grep -qE "^ +[0-9]+  .*  received +source=dicom" "$T/out" || fail "show received event"
grep -qE "^ +[0-9]+  .*  classified +model=" "$T/out" || fail "show classified event"
expect_rc 0 "${A[@]}" show 1.2.826.0.1.1 --db "$DB"
grep -q "^instance 6$" "$T/out" || fail "show by SOP UID: $(head -1 "$T/out")"
grep -qE "duplicate_of +1" "$T/out" || fail "show duplicate_of"
expect_rc 0 "${A[@]}" show 4 --db "$DB" --format json
$PY -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["state"]=="failed"' "$T/out" ||
  fail "show json"
expect_rc 1 "${A[@]}" show 99 --db "$DB"
grep -q "no such instance" "$T/out" || fail "show missing"
ok "show"

# stats
expect_rc 0 "${A[@]}" stats --db "$DB"
grep -qE "^instances: 6$" "$T/out" || fail "stats total"
grep -qE "^  classified +3$" "$T/out" || fail "stats state"
grep -qE "^  none +3$" "$T/out" || fail "stats triage"
grep -qE "^  2026-12-02 +4$" "$T/out" || fail "stats day"
expect_rc 0 "${A[@]}" stats --db "$DB" --format json
$PY - "$T/out" <<'PY' || fail "stats json: $(cat "$T/out")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["total"] == 6
assert s["by_state"] == {"received": 1, "classified": 3, "skipped": 1, "failed": 1}
assert s["by_triage"] == {"urgent": 1, "routine": 1, "normal": 1, "none": 3}
assert s["by_top_class"] == {"COVID-19": 1, "Normal": 1, "Lung Opacity": 1, "none": 3}
assert s["by_day_local"] == {"2026-12-01": 2, "2026-12-02": 4}
PY
expect_rc 0 "${A[@]}" stats --db "$DB" --format csv --patient PAT002
grep -q "^state,failed,1" "$T/out" || fail "stats csv"
ok "stats"

# the database found as the daemon finds it
expect_rc 0 "${A[@]}" verify --state-dir "$T/state"
grep -q "^audit ok: 6 instances, 22 events, chain intact$" "$T/out" || fail "verify: $(cat "$T/out")"
printf '[daemon]\nstate_dir = %s\n' "$T/state" >"$T/c.conf"
expect_rc 0 "${A[@]}" list --config "$T/c.conf"
printf '[audit]\ndb = %s\n' "$DB" >"$T/c2.conf"
expect_rc 0 "${A[@]}" stats --config "$T/c2.conf"
ok "--state-dir and --config find the ledger; verify clean"

# tampering with the sqlite3 shell is found and named
command -v sqlite3 >/dev/null || skip "sqlite3 shell not installed"
cp "$DB" "$T/t.db"
sqlite3 "$T/t.db" "UPDATE instances SET triage = 'normal', top_score = 0.1 WHERE id = 1"
expect_rc 1 "${A[@]}" verify --db "$T/t.db"
grep -q "^instance 1: content changed after event" "$T/out" || fail "edit not named: $(cat "$T/out")"
grep -q "^audit FAILED: 1 problem" "$T/out" || fail "verify summary: $(cat "$T/out")"
cp "$DB" "$T/t.db"
sqlite3 "$T/t.db" "DELETE FROM events WHERE id = 5"
expect_rc 1 "${A[@]}" verify --db "$T/t.db"
grep -q "^event 5: missing (chain jumps from 4 to 6)" "$T/out" || fail "deleted event: $(cat "$T/out")"
cp "$DB" "$T/t.db"
sqlite3 "$T/t.db" "DELETE FROM instances WHERE id = 3"
expect_rc 1 "${A[@]}" verify --db "$T/t.db"
grep -q "^instance 3: missing" "$T/out" || fail "deleted instance: $(cat "$T/out")"
ok "verify names an edited row, a deleted event and a deleted instance"

# a reader works while a writer holds the database
cp "$DB" "$T/w.db"
sqlite3 "$T/w.db" "PRAGMA journal_mode" >/dev/null
(sqlite3 "$T/w.db" "BEGIN IMMEDIATE; UPDATE instances SET accession = accession; SELECT 1;" \
  ".shell sleep 2" "COMMIT;" >/dev/null 2>&1) &
wpid=$!
_pids+=("$wpid")
sleep 0.5
expect_rc 0 "${A[@]}" list --db "$T/w.db"
wait "$wpid" || true
ok "reads while a write transaction is open"
