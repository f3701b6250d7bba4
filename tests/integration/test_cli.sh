#!/usr/bin/env bash
# The three programs: --help/--version, dispatch, "not built yet" exits 2, config check.
. "$(dirname "$0")/lib.sh"

for prog in "$CXRTRIAGED" "$CXRTRIAGE" "$CXRTRAIN"; do
  expect_rc 0 "$prog" --help
  grep -q "not a diagnosis" "$T/out" || fail "$prog --help lacks the decision-support notice"
  expect_rc 0 "$prog" --version
  grep -qE '^cxrtriage(d|-train)? [0-9]+\.[0-9]+\.[0-9]+$' "$T/out" || fail "$prog --version: $(cat "$T/out")"
done
ok "help and version"

expect_rc 2 "$CXRTRIAGE"
expect_rc 2 "$CXRTRIAGE" frobnicate
grep -q "unknown command 'frobnicate'" "$T/out" || fail "unknown command message"
expect_rc 2 "$CXRTRAIN" frobnicate
expect_rc 2 "$CXRTRIAGED" --no-such-option
ok "unknown commands and options exit 2"

# Every subcommand is built (no "not built yet" left); without arguments echo shows its usage.
expect_rc 2 "$CXRTRIAGE" echo
grep -q "Usage: cxrtriage echo" "$T/out" || fail "echo without arguments: no usage"
grep -q "not built yet" "$T/out" && fail "echo says it is not built"
expect_rc 0 "$CXRTRIAGE" selftest --help
grep -q "CXRTRIAGE-SELFTEST" "$T/out" || fail "selftest --help does not name its marker"
ok "echo and selftest are built and show their usage"

expect_rc 0 "$CXRTRIAGE" config check "$CXR_SOURCE_DIR/config/cxrtriage.conf.example"
grep -q "configuration OK" "$T/out" || fail "config check did not say OK"
grep -q '^port = 11112$' "$T/out" || fail "effective config not printed"

cat >"$T/typo.conf" <<'CONF'
[dicom]
port = 11112
ae_tilte = CXRTRIAGE
[webhook]
bearer_token = s3cr3t-value
CONF
expect_rc 1 "$CXRTRIAGE" config check "$T/typo.conf"
grep -q "typo.conf:3: \[dicom\] ae_tilte: unknown key" "$T/out" || { cat "$T/out"; fail "typo not named with file:line:key"; }

printf '[webhook]\nbearer_token = s3cr3t-value\nhmac_key = k3y-value\n' >"$T/secret.conf"
expect_rc 0 "$CXRTRIAGE" config check "$T/secret.conf"
grep -q "s3cr3t-value\|k3y-value" "$T/out" && fail "secrets printed in clear"
grep -q '^bearer_token = \*\*\*\*\*\*\*\*$' "$T/out" || fail "secret not masked"

expect_rc 1 "$CXRTRIAGE" config check "$T/missing.conf"
grep -q "missing.conf: cannot open" "$T/out" || fail "missing file not named"
expect_rc 2 "$CXRTRIAGE" config check
expect_rc 0 "$CXRTRIAGED" --check --config "$CXR_SOURCE_DIR/config/cxrtriage.conf.example"
expect_rc 1 "$CXRTRIAGED" --check --config "$T/typo.conf"
expect_rc 1 "$CXRTRIAGED" --check --port 70000
grep -q -- "--port: found '70000'" "$T/out" || fail "bad override not named"
expect_rc 1 "$CXRTRIAGED" --check --ae-title 'BAD\AE'
ok "config check"
