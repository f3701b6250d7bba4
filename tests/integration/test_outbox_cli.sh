#!/usr/bin/env bash
# `cxrtriage outbox` on a ledger written through store.h (tests/tools/store_fill.c: report 1
# delivered after a retry, 2 dead, 3 pending): list in every format with its filters, show with
# attempts and body, retry of a dead report (identifiers kept, verify still clean) and the
# refusals, finding the file by --db, --state-dir and --config, and a retry while another
# connection holds a write transaction.
. "$(dirname "$0")/lib.sh"

FILL="$CXR_BUILD_DIR/store/store_fill"
PY=/usr/bin/python3
export TZ=UTC # the table's local times are then predictable
mkdir -p "$T/state"
DB="$T/state/audit.db"
"$FILL" "$DB" || fail "store_fill"
O=("$CXRTRIAGE" outbox)

# A missing database is a clear error; retry does not create one either.
expect_rc 1 "${O[@]}" list --db "$T/absent.db"
grep -q "absent.db: open: no such file" "$T/out" || fail "missing db message: $(cat "$T/out")"
expect_rc 1 "${O[@]}" retry 1 --db "$T/absent.db"
[ ! -e "$T/absent.db" ] || fail "retry created the database"
expect_rc 2 "${O[@]}" frobnicate
expect_rc 2 "${O[@]}" list --state lost --db "$DB"
expect_rc 2 "${O[@]}" show --db "$DB"
expect_rc 2 "${O[@]}" retry x1 --db "$DB"
expect_rc 2 "${O[@]}" show 1 --format csv --db "$DB"
expect_rc 0 "${O[@]}" --help
grep -q "retry ID" "$T/out" || fail "help"
ok "missing database and bad usage"

# list: an aligned table, newest first, with the counts
expect_rc 0 "${O[@]}" list --db "$DB"
head -1 "$T/out" | grep -q "CREATED (local)" || fail "table header: $(head -1 "$T/out")"
[ "$(grep -cE '^ *[0-9]+  ' "$T/out")" -eq 3 ] || fail "3 rows expected: $(cat "$T/out")"
sed -n 2p "$T/out" | grep -qE '^ *3  2026-12-02 12:00:20  pending +files +hl7 +1 +- +2026-12-02 12:01:21' ||
  fail "first row: $(sed -n 2p "$T/out")"
sed -n 3p "$T/out" | grep -qE '^ *2  .*  dead +webhook +fhir +1 +400 ' || fail "dead row: $(sed -n 3p "$T/out")"
sed -n 4p "$T/out" | grep -qE '^ *1  .*  delivered +webhook +hl7 +1 +200 +2026-12-02 12:00:41' ||
  fail "delivered row: $(sed -n 4p "$T/out")"
grep -q "^outbox: 1 pending, 1 delivered, 1 dead$" "$T/out" || fail "counts: $(cat "$T/out")"
$PY - "$T/out" <<'PY' || fail "columns not aligned"
import sys
lines = [l.rstrip("\n") for l in open(sys.argv[1]) if not l.startswith(("(", "outbox:"))]
for word in ("STATE", "DESTINATION", "FORMAT", "STUDY"):
    col = lines[0].index(word)
    for l in lines[1:]:
        assert l[col - 2:col] == "  " and l[col] != " ", (word, l)
PY
expect_rc 0 "${O[@]}" list --db "$DB" --utc --limit 1
grep -q "CREATED (UTC)" "$T/out" || fail "--utc header"
[ "$(grep -cE '^ *[0-9]+  ' "$T/out")" -eq 1 ] || fail "--limit 1"
ok "list table"

count() { expect_rc 0 "${O[@]}" list --db "$DB" --format json "$@"; grep -c . "$T/out" || true; }
[ "$(count)" -eq 3 ] || fail "all"
[ "$(count --state pending)" -eq 1 ] || fail "--state pending"
[ "$(count --state delivered)" -eq 1 ] || fail "--state delivered"
[ "$(count --dead)" -eq 1 ] || fail "--dead"
[ "$(count --study 1.9.1)" -eq 2 ] || fail "--study"
[ "$(count --destination files)" -eq 1 ] || fail "--destination"
[ "$(count --destination webhook --state dead)" -eq 1 ] || fail "combined"
[ "$(count --study 9.9)" -eq 0 ] || fail "no match"
ok "filters"

expect_rc 0 "${O[@]}" list --db "$DB" --format json
$PY - "$T/out" <<'PY' || fail "JSON output: $(cat "$T/out")"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["id"] for r in rows] == [3, 2, 1], rows
keys = {"id", "study_instance_uid", "destination", "format", "content_type", "state", "attempts",
        "idempotency_key", "control_id", "report_id", "model_digest", "is_correction", "corrects",
        "created_at", "next_attempt_at", "delivered_at", "last_status", "last_detail",
        "last_response"}
for r in rows:
    assert set(r) == keys, set(r) ^ keys
by = {r["id"]: r for r in rows}
assert by[1]["state"] == "delivered" and by[1]["delivered_at"] == "2026-12-02T12:00:41.000Z"
assert by[1]["control_id"] == "CXR00000000000000001" and by[1]["last_status"] == 200
assert by[2]["state"] == "dead" and by[2]["delivered_at"] is None and by[2]["format"] == "fhir"
assert by[2]["report_id"] == "1.9.1-0000000000000abc" and by[2]["last_response"] == '{"issue":"invalid"}'
assert by[3]["next_attempt_at"] == "2026-12-02T12:01:21.000Z" and by[3]["destination"] == "files"
assert by[1]["idempotency_key"] == "cxr-" + "0" * 29 + "191"
assert by[1]["corrects"] is None and by[1]["is_correction"] is False
PY
ok "list --format json"

expect_rc 0 "${O[@]}" list --db "$DB" --format csv
$PY - "$T/out" <<'PY' || fail "CSV: $(cat "$T/out")"
import csv, sys
data = open(sys.argv[1], newline="").read()
assert "\r\n" in data
rows = list(csv.DictReader(data.splitlines(True)))
assert [r["id"] for r in rows] == ["3", "2", "1"], rows
by = {r["id"]: r for r in rows}
assert by["2"]["last_detail"] == "HTTP 400 Bad Request, not retried", by["2"]
assert by["1"]["delivered_at"] == "2026-12-02T12:00:41.000Z" and by["1"]["state"] == "delivered"
assert by["3"]["content_type"] == "x-application/hl7-v2+er7; charset=utf-8"
assert by["2"]["delivered_at"] == "" and by["2"]["last_status"] == "400"
PY
ok "list --format csv"

# show: every field, the attempts, the body on request
expect_rc 0 "${O[@]}" show 1 --db "$DB"
grep -q "^report 1$" "$T/out" || fail "show header"
grep -qE "^  idempotency_key +cxr-0+191$" "$T/out" || fail "show key"
grep -qE "^  control_id +CXR00000000000000001$" "$T/out" || fail "show control id"
grep -qE "^  delivered_at +2026-12-02T12:00:41.000Z$" "$T/out" || fail "show delivered_at"
grep -qE "^ +1  2026-12-02T12:00:11.000Z  retry +503 .*HTTP 503 Service Unavailable" "$T/out" ||
  fail "show retry attempt: $(cat "$T/out")"
grep -qE "^ +2  2026-12-02T12:00:41.000Z  delivered +200 " "$T/out" || fail "show delivered attempt"
grep -q "^body" "$T/out" && fail "body without --body"
expect_rc 0 "${O[@]}" show 1 --body --db "$DB"
grep -q "^body (123 bytes, x-application/hl7-v2+er7; charset=utf-8):$" "$T/out" || fail "body header: $(cat "$T/out")"
grep -q "^PID|1||PAT001$" "$T/out" || fail "HL7 segments one per line"
expect_rc 0 "${O[@]}" show 2 --body --format json --db "$DB"
$PY - "$T/out" <<'PY' || fail "show json: $(cat "$T/out")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["id"] == 2 and r["state"] == "dead" and r["attempts"] == 1
assert r["body"] == '{"resourceType":"Bundle","type":"transaction"}'
a = r["delivery_attempts"]
assert len(a) == 1 and a[0]["outcome"] == "dead" and a[0]["status"] == 400 and a[0]["report"] == 2
assert a[0]["at"] == "2026-12-02T12:00:11.000Z" and a[0]["response"] == '{"issue":"invalid"}'
PY
expect_rc 1 "${O[@]}" show 99 --db "$DB"
grep -q "no report 99" "$T/out" || fail "show missing: $(cat "$T/out")"
ok "show"

# retry: refused unless dead; a dead report goes back to pending with its identifiers
cp "$DB" "$T/before.db"
expect_rc 1 "${O[@]}" retry 1 --db "$DB"
grep -q "report 1 is delivered, not dead: only a dead report can be retried" "$T/out" ||
  fail "retry delivered: $(cat "$T/out")"
expect_rc 1 "${O[@]}" retry 3 --db "$DB"
grep -q "report 3 is pending, not dead" "$T/out" || fail "retry pending: $(cat "$T/out")"
expect_rc 1 "${O[@]}" retry 42 --db "$DB"
grep -q "no report 42" "$T/out" || fail "retry missing: $(cat "$T/out")"
expect_rc 0 "${O[@]}" retry 2 --state-dir "$T/state"
grep -q "^report 2 requeued: pending, due now; destination webhook, format fhir, 1 earlier attempt(s) kept$" "$T/out" ||
  fail "retry message: $(cat "$T/out")"
grep -q "same idempotency key cxr-0*191, report id 1.9.1-0000000000000abc" "$T/out" || fail "retry ids"
expect_rc 0 "${O[@]}" show 2 --format json --db "$DB"
$PY - "$T/out" <<'PY' || fail "after retry: $(cat "$T/out")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["state"] == "pending" and r["attempts"] == 1, r
assert r["idempotency_key"] == "cxr-" + "0" * 29 + "191" and r["report_id"] == "1.9.1-0000000000000abc"
PY
expect_rc 1 "${O[@]}" retry 2 --db "$DB"
grep -q "report 2 is pending, not dead" "$T/out" || fail "second retry"
[ "$(count --dead)" -eq 0 ] || fail "still dead"
expect_rc 0 "$CXRTRIAGE" audit verify --db "$DB"
grep -q "^audit ok: 6 instances, 23 events, chain intact$" "$T/out" || fail "verify: $(cat "$T/out")"
# JSON output of a retry; found through --config
printf '[daemon]\nstate_dir = %s\n' "$T/state" >"$T/c.conf"
cp "$T/before.db" "$T/state/audit.db"
expect_rc 0 "${O[@]}" retry 2 --config "$T/c.conf" --format json
$PY -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["id"]==2 and r["state"]=="pending"' "$T/out" ||
  fail "retry json: $(cat "$T/out")"
ok "retry"

command -v sqlite3 >/dev/null || skip "sqlite3 shell not installed"
# an edited report is named by verify
cp "$T/before.db" "$T/t.db"
sqlite3 "$T/t.db" "UPDATE reports SET body = 'MSH|forged' WHERE id = 1"
expect_rc 1 "$CXRTRIAGE" audit verify --db "$T/t.db"
grep -q "^report 1: content changed after event" "$T/out" || fail "edited report: $(cat "$T/out")"
cp "$T/before.db" "$T/t.db"
sqlite3 "$T/t.db" "UPDATE events SET detail = replace(detail, 'status=400', 'status=200') WHERE kind = 'report.dead'"
expect_rc 1 "$CXRTRIAGE" audit verify --db "$T/t.db"
grep -qE "^event [0-9]+: hash does not match its content" "$T/out" || fail "edited report event: $(cat "$T/out")"
ok "verify names an edited report and an edited report event"

# retry waits out another writer's transaction (the daemon's) instead of failing
cp "$T/before.db" "$T/w.db"
(sqlite3 "$T/w.db" "BEGIN IMMEDIATE; UPDATE studies SET accession = accession; SELECT 1;" \
  ".shell sleep 1" "COMMIT;" >/dev/null 2>&1) &
wpid=$!
_pids+=("$wpid")
sleep 0.3
expect_rc 0 "${O[@]}" retry 2 --db "$T/w.db"
wait "$wpid" || true
expect_rc 0 "$CXRTRIAGE" audit verify --db "$T/w.db"
ok "retry beside a writer"
