#!/usr/bin/env bash
# Who may use the HTTP endpoint: the config check (`cxrtriage config check` and `cxrtriaged
# --check`) refuses [http] bind beyond loopback without TLS and authentication, naming the key;
# bearer tokens (token_file) and basic auth (user + password_file): 401 with WWW-Authenticate
# without or with wrong credentials, 200 with them, /healthz and the page open; TLS with a
# throwaway certificate made here with openssl (curl verifies it against that certificate).
. "$(dirname "$0")/lib.sh"
command -v jq >/dev/null || skip "needs jq: scripts/deps.sh test"
command -v openssl >/dev/null || skip "needs openssl: scripts/deps.sh test"
C=(curl -sS -m 30)

# ---- the config check ----
check() { # FILE: `cxrtriage config check`; status in $rc, output in $T/out
  rc=0
  "$CXRTRIAGE" config check "$1" >"$T/out" 2>&1 || rc=$?
}
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=127.0.0.1" \
  -addext "subjectAltName=IP:127.0.0.1" -keyout "$T/key.pem" -out "$T/cert.pem" >/dev/null 2>&1 ||
  fail "openssl could not make a certificate"
printf 's3cret-token-%s\n' "$RANDOM$RANDOM" >"$T/token"
printf 'pa:ss word\n' >"$T/password"
chmod 600 "$T/token" "$T/password" "$T/key.pem"

printf '[http]\nbind = 0.0.0.0\n' >"$T/open.conf"
check "$T/open.conf"
[ $rc -eq 1 ] || fail "bind 0.0.0.0 without TLS and auth accepted: $(cat "$T/out")"
grep -q "open.conf:2: \[http\] bind: found '0.0.0.0', expected a loopback address" "$T/out" ||
  fail "message: $(cat "$T/out")"
grep -q "tls_cert and tls_key and auth = bearer or basic" "$T/out" || fail "names what is missing: $(cat "$T/out")"
expect_rc 1 "$CXRTRIAGED" --config "$T/open.conf" --check
grep -q "\[http\] bind" "$T/out" || fail "cxrtriaged --check: $(cat "$T/out")"
printf '[http]\nbind = 0.0.0.0\nauth = bearer\ntoken_file = %s\n' "$T/token" >"$T/notls.conf"
check "$T/notls.conf"
[ $rc -eq 1 ] && grep -q "unless tls_cert and tls_key are set" "$T/out" || fail "auth without TLS: $(cat "$T/out")"
printf '[http]\nbind = 0.0.0.0\ntls_cert = %s\ntls_key = %s\nauth = bearer\ntoken_file = %s\n' \
  "$T/cert.pem" "$T/key.pem" "$T/token" >"$T/good.conf"
check "$T/good.conf"
[ $rc -eq 0 ] || fail "TLS + bearer beyond loopback refused: $(cat "$T/out")"
grep -q "^token_file = $T/token$" "$T/out" || fail "dump"
printf '[http]\nauth = bearer\n' >"$T/notoken.conf"
check "$T/notoken.conf"
[ $rc -eq 1 ] && grep -q "\[http\] token: missing" "$T/out" || fail "bearer without a token: $(cat "$T/out")"
printf '[http]\nauth = basic\nuser = ops\n' >"$T/nopw.conf"
check "$T/nopw.conf"
[ $rc -eq 1 ] && grep -q "\[http\] password_file: missing" "$T/out" || fail "basic without password: $(cat "$T/out")"
printf '[http]\ntls_cert = %s\n' "$T/cert.pem" >"$T/halftls.conf"
check "$T/halftls.conf"
[ $rc -eq 1 ] && grep -q "\[http\] tls_key: missing" "$T/out" || fail "cert without key: $(cat "$T/out")"
printf '[http]\nbind = ::1\n' >"$T/v6.conf"
check "$T/v6.conf"
[ $rc -eq 0 ] || fail "::1 is loopback: $(cat "$T/out")"
ok "config check: beyond loopback needs TLS and auth (named key), bearer needs a token, basic a password file, TLS both files"

# ---- bearer ----
DAEMON_CONF="[report]
mode = shadow
[http]
auth = bearer
token_file = $T/token"
start_daemon bearer
U="http://127.0.0.1:$DAEMON_HTTP"
tok=$(head -n1 "$T/token")
[ "$("${C[@]}" -D "$T/h" -o "$T/b" -w '%{http_code}' "$U/api/v1/status")" = 401 ] || fail "no token: $(cat "$T/b")"
grep -qi '^www-authenticate: Bearer' "$T/h" || fail "WWW-Authenticate: $(cat "$T/h")"
jq -e '.error.code == "unauthorized"' "$T/b" >/dev/null || fail "401 body"
[ "$("${C[@]}" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer wrong" "$U/api/v1/status")" = 401 ] || fail "wrong token"
[ "$("${C[@]}" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $tok" "$U/api/v1/status")" = 200 ] || fail "token"
[ "$("${C[@]}" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $tok" "$U/metrics")" = 200 ] || fail "metrics with token"
[ "$("${C[@]}" -o /dev/null -w '%{http_code}' "$U/metrics")" = 401 ] || fail "metrics without"
[ "$("${C[@]}" -o /dev/null -w '%{http_code}' -X POST --data-binary 'x' "$U/api/v1/classify")" = 401 ] || fail "classify without"
[ "$("${C[@]}" -o /dev/null -w '%{http_code}' "$U/healthz")" = 200 ] || fail "healthz is open"
[ "$("${C[@]}" -o /dev/null -w '%{http_code}' "$U/")" = 200 ] || fail "the page is open (it holds no data)"
grep -q "$tok" "$DAEMON_LOG" && fail "the token is in the log"
stop_pid "$DAEMON_PID"
[ "$STOP_RC" -eq 0 ] || fail "cxrtriaged exited $STOP_RC (sanitizer report in its log?)"
ok "bearer: 401 without or with a wrong token, 200 with it; healthz and the page open; token not logged"

# ---- basic ----
DAEMON_CONF="[report]
mode = shadow
[http]
auth = basic
user = ops
password_file = $T/password"
start_daemon basic
U="http://127.0.0.1:$DAEMON_HTTP"
[ "$("${C[@]}" -D "$T/h" -o /dev/null -w '%{http_code}' "$U/api/v1/instances")" = 401 ] || fail "basic: none"
grep -qi '^www-authenticate: Basic realm="cxrtriage"' "$T/h" || fail "WWW-Authenticate basic"
[ "$("${C[@]}" -o /dev/null -w '%{http_code}' -u 'ops:wrong' "$U/api/v1/instances")" = 401 ] || fail "wrong password"
[ "$("${C[@]}" -o /dev/null -w '%{http_code}' -u 'ops2:pa:ss word' "$U/api/v1/instances")" = 401 ] || fail "wrong user"
[ "$("${C[@]}" -o /dev/null -w '%{http_code}' -u 'ops:pa:ss word' "$U/api/v1/instances")" = 200 ] || fail "basic ok"
[ "$("${C[@]}" -o /dev/null -w '%{http_code}' -H 'Authorization: Basic !!!!' "$U/api/v1/instances")" = 401 ] || fail "garbage"
stop_pid "$DAEMON_PID"
[ "$STOP_RC" -eq 0 ] || fail "cxrtriaged exited $STOP_RC (sanitizer report in its log?)"
ok "basic: 401 without, with a wrong user or password and with garbage; 200 with ops:<file>"

# ---- TLS ----
DAEMON_CONF="[report]
mode = shadow
[http]
tls_cert = $T/cert.pem
tls_key = $T/key.pem"
start_daemon tls
grep -q "http.listen url=https://127.0.0.1:$DAEMON_HTTP/ .*tls=yes" "$DAEMON_LOG" || fail "https URL in the log"
[ "$("${C[@]}" --cacert "$T/cert.pem" -o "$T/b" -w '%{http_code}' "https://127.0.0.1:$DAEMON_HTTP/healthz")" = 200 ] ||
  fail "https healthz"
[ "$("${C[@]}" --cacert "$T/cert.pem" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$DAEMON_HTTP/api/v1/status")" = 200 ] ||
  fail "https status"
rc=0; "${C[@]}" -o /dev/null "https://127.0.0.1:$DAEMON_HTTP/healthz" 2>/dev/null || rc=$?
[ $rc -ne 0 ] || fail "curl trusted the self-signed certificate without --cacert"
rc=0; "${C[@]}" -m 5 -o /dev/null "http://127.0.0.1:$DAEMON_HTTP/healthz" 2>/dev/null || rc=$?
[ $rc -ne 0 ] || fail "plain HTTP answered on the TLS port"
stop_pid "$DAEMON_PID"
[ "$STOP_RC" -eq 0 ] || fail "cxrtriaged exited $STOP_RC (sanitizer report in its log?)"
ok "TLS with a throwaway certificate (verified by curl), plain HTTP refused"
