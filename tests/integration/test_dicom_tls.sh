#!/usr/bin/env bash
# DICOM TLS on the listener ([dicom] tls, DCMTK's dcmtls over OpenSSL) against DCMTK's storescu
# +tls, with throwaway certificates made here by openssl: a CA, the daemon's server certificate,
# a client certificate from the same CA, and a "rogue" client certificate from another CA.
# - config check names a missing key, a file that is not a certificate, a key of another
#   certificate;
# - tls = on: plain DICOM on port, TLS on tls_port; a client with a valid certificate stores and
#   is scored (its row as classify scores the file); a client with the rogue certificate, one
#   with no certificate and a plain A-ASSOCIATE-RQ on the TLS port are refused, each audited as
#   association.refused with its reason in the ledger, no PHI; the daemon keeps serving;
# - `cxrtriage echo --tls` with and without a client certificate;
# - tls = required: nothing listens on the plain port (connection refused), TLS works, and
#   `cxrtriage selftest` passes over TLS.
. "$(dirname "$0")/lib.sh"
need_data dicom
D=$CXR_DATA_DIR/dicom
command -v storescu >/dev/null || skip "needs DCMTK's storescu: scripts/deps.sh test"
command -v openssl >/dev/null || skip "needs openssl: scripts/deps.sh test"
command -v sqlite3 >/dev/null || skip "needs sqlite3: scripts/deps.sh test"

# --- throwaway PKI --------------------------------------------------------------------------------
P="$T/pki"
mkdir -p "$P"
mkca() {
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -subj "/CN=$1" \
    -keyout "$P/$1.key" -out "$P/$1.crt" >>"$T/openssl.log" 2>&1 || { cat "$T/openssl.log"; fail "openssl: CA $1"; }
}
mkcert() { # CA NAME
  openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=$2" -keyout "$P/$2.key" \
    -out "$P/$2.csr" >>"$T/openssl.log" 2>&1 &&
    openssl x509 -req -in "$P/$2.csr" -CA "$P/$1.crt" -CAkey "$P/$1.key" -CAcreateserial \
      -sha256 -days 2 -out "$P/$2.crt" >>"$T/openssl.log" 2>&1 || { cat "$T/openssl.log"; fail "openssl: cert $2"; }
}
mkca ca
mkca otherca
mkcert ca server
mkcert ca client
mkcert otherca rogue
chmod 600 "$P"/*.key

# --- config check names bad and missing files ------------------------------------------------------
TLS_PORT=$(free_port)
tls_conf() { # MODE [extra lines]
  printf '[dicom]\ntls = %s\ntls_port = %s\ntls_cert = %s\ntls_key = %s\ntls_ca = %s\n%s\n' \
    "$1" "$TLS_PORT" "$P/server.crt" "$P/server.key" "$P/ca.crt" "${2:-}"
}
printf '[dicom]\ntls = on\ntls_cert = %s\ntls_ca = %s\n' "$P/server.crt" "$P/ca.crt" >"$T/c1.conf"
expect_rc 1 "$CXRTRIAGE" config check "$T/c1.conf"
grep -q "\[dicom\] tls_key: missing" "$T/out" || { cat "$T/out"; fail "missing tls_key not named"; }
printf '[dicom]\ntls = on\ntls_cert = %s\ntls_key = %s\ntls_ca = %s\n' "$P/server.csr" "$P/server.key" "$P/ca.crt" >"$T/c2.conf"
expect_rc 1 "$CXRTRIAGE" config check "$T/c2.conf"
grep -q "tls_cert '$P/server.csr': not a readable PEM certificate" "$T/out" || { cat "$T/out"; fail "bad tls_cert not named"; }
printf '[dicom]\ntls = on\ntls_cert = %s\ntls_key = %s\ntls_ca = %s\n' "$P/server.crt" "$P/client.key" "$P/ca.crt" >"$T/c3.conf"
expect_rc 1 "$CXRTRIAGE" config check "$T/c3.conf"
grep -q "tls_key '$P/client.key' does not belong to tls_cert '$P/server.crt'" "$T/out" || { cat "$T/out"; fail "mismatched key not named"; }
printf '[dicom]\ntls = on\ntls_cert = %s\ntls_key = %s\ntls_ca = %s/nope.crt\n' "$P/server.crt" "$P/server.key" "$P" >"$T/c4.conf"
expect_rc 1 "$CXRTRIAGE" config check "$T/c4.conf"
grep -q "tls_ca: found '$P/nope.crt', expected a readable file" "$T/out" || { cat "$T/out"; fail "missing tls_ca not named"; }
expect_rc 1 "$CXRTRIAGED" --check --config "$T/c3.conf"
grep -q "does not belong to" "$T/out" || { cat "$T/out"; fail "cxrtriaged --check: mismatched key"; }
tls_conf on >"$T/c5.conf"
expect_rc 0 "$CXRTRIAGE" config check "$T/c5.conf"
ok "config check names a missing key, a non-certificate, a foreign key, a missing CA file"

# --- tls = on --------------------------------------------------------------------------------------
DAEMON_CONF="$(tls_conf on 'allowed_calling_aets = ECHOSCU, STORESCU, CXRTRIAGE-SCU, CXRSELFTEST')
[triage]
study_quiet_seconds = 1
[report]
mode = shadow"
start_daemon daemon
wait_log "$DAEMON_LOG" "dicom.listen .*tls=on tls_port=$TLS_PORT" 5
db="$DAEMON_STATE/audit.db"
refusals() { sqlite3 -readonly "$db" "select detail from events where kind = 'association.refused'"; }

cp "$D/cxr_siim_8bit_explicit_le.dcm" "$T/a.dcm"
cp "$D/cxr_siim_8bit_explicit_le.dcm" "$T/b.dcm"
new_uids "$T/a.dcm" "$T/b.dcm"
patient=$(dcmdump -q +P 0010,0020 "$T/a.dcm" | sed -n 's/.*\[\(.*\)\].*/\1/p')
tls_scu() { # NAME [storescu TLS options...] -- FILE
  local name=$1; shift
  local o=()
  while [ "$1" != -- ]; do o+=("$1"); shift; done
  shift
  timeout 60 storescu -v -to 10 -ta 10 -td 30 -aet STORESCU -aec CXRTRIAGE "${o[@]}" \
    127.0.0.1 "$TLS_PORT" "$@" >"$T/$name.scu" 2>&1
}

# a valid client certificate: stored and scored
tls_scu good +tls "$P/client.key" "$P/client.crt" +cf "$P/ca.crt" -- "$T/a.dcm" ||
  { cat "$T/good.scu"; fail "storescu +tls with a valid client certificate failed"; }
grep -q "Received Store Response (Success)" "$T/good.scu" || { cat "$T/good.scu"; fail "no Success over TLS"; }
wait_rows 1 60
check_scores "$T/a.dcm"
ok "storescu +tls, valid client certificate: stored over TLS, scored as classify scores it"

# rogue certificate (another CA), no certificate, plain DICOM on the TLS port: refused, audited
if tls_scu rogue +tls "$P/rogue.key" "$P/rogue.crt" +cf "$P/ca.crt" -- "$T/b.dcm"; then
  fail "a client certificate from another CA was accepted"
fi
wait_log "$DAEMON_LOG" "association.refused.*tls=yes reason=tls-handshake-failed: .*certificate verify failed" 10
if tls_scu nocert +tla +cf "$P/ca.crt" -- "$T/b.dcm"; then
  fail "a client without a certificate was accepted"
fi
wait_log "$DAEMON_LOG" "association.refused.*tls=yes reason=tls-handshake-failed: .*did not return a certificate" 10
if tls_scu plain -- "$T/b.dcm"; then fail "plain DICOM on the TLS port was accepted"; fi
wait_log "$DAEMON_LOG" "association.refused.*tls=required reason=plain-dicom-on-tls-port" 10
for _ in $(seq 50); do [ "$(refusals | wc -l)" -ge 3 ] && break; sleep 0.1; done
refusals >"$T/refusals.txt"
grep -q "tls-handshake-failed: .*certificate verify failed" "$T/refusals.txt" &&
  grep -q "tls-handshake-failed: .*did not return a certificate" "$T/refusals.txt" &&
  grep -q "plain-dicom-on-tls-port" "$T/refusals.txt" ||
  { cat "$T/refusals.txt"; fail "the ledger lacks an association.refused event with its reason"; }
[ -n "$patient" ] && grep -q -- "$patient" "$T/refusals.txt" && fail "PHI (patient ID) in a refusal event"
[ "$(audit_json | wc -l)" = 1 ] || fail "a refused client's instance reached the ledger"
sqlite3 -readonly "$db" "select count(*) from events where kind = 'association.refused'" >/dev/null
ok "rogue certificate, no certificate, plain DICOM on the TLS port: refused, each audited with its reason, no PHI"

# the plain port still serves; the daemon is alive
scu plainport -aet STORESCU -- "$T/b.dcm" || { cat "$T/plainport.scu"; fail "plain port with tls = on"; }
wait_rows 2 60
ok "tls = on: the plain port keeps serving"

# cxrtriage echo --tls
expect_rc 0 "$CXRTRIAGE" echo --tls --tls-cert "$P/client.crt" --tls-key "$P/client.key" \
  --tls-ca "$P/ca.crt" --count 2 127.0.0.1 "$TLS_PORT" CXRTRIAGE
grep -Eq "accepted in [0-9.]+ ms over TLS \(TLS_[A-Z0-9_]+\)" "$T/out" || { cat "$T/out"; fail "echo --tls: no cipher"; }
cipher=$(sed -n 's/.*over TLS (\(.*\)).*/\1/p' "$T/out")
expect_rc 1 "$CXRTRIAGE" echo --tls --tls-ca "$P/ca.crt" 127.0.0.1 "$TLS_PORT" CXRTRIAGE
grep -q "client certificate" "$T/out" || { cat "$T/out"; fail "echo --tls without a certificate: no hint"; }
expect_rc 1 "$CXRTRIAGE" echo --tls --tls-cert "$P/client.crt" --tls-key "$P/client.key" \
  --tls-ca "$P/otherca.crt" 127.0.0.1 "$TLS_PORT" CXRTRIAGE
grep -q "TLS failure" "$T/out" || { cat "$T/out"; fail "echo --tls, server not trusted: not named a TLS failure"; }
expect_rc 1 "$CXRTRIAGE" echo 127.0.0.1 "$TLS_PORT" CXRTRIAGE
grep -q "add --tls" "$T/out" || { cat "$T/out"; fail "plain echo on the TLS port: no hint"; }
kill -0 "$DAEMON_PID" || fail "the daemon died"
ok "echo --tls: $cipher; no client certificate, untrusted server, plain on the TLS port: exit 1, named"
stop_pid "$DAEMON_PID"

# --- tls = required ----------------------------------------------------------------------------------
PLAIN_PORT=$(free_port)
state2="$T/req.state"
{ tls_conf required 'allowed_calling_aets = CXRTRIAGE-SCU, CXRSELFTEST'
  printf 'port = %s\n[daemon]\nstate_dir = %s\n[triage]\nstudy_quiet_seconds = 1\n[report]\nmode = shadow\n' \
    "$PLAIN_PORT" "$state2"
} >"$T/req.conf"
http=$(free_port)
start_bg req "$CXRTRIAGED" --config "$T/req.conf" --http-port "$http" --foreground
wait_log "$T/req.log" "daemon.ready" 30
grep -q "dicom.listen .*port=0 tls=required tls_port=$TLS_PORT" "$T/req.log" || { cat "$T/req.log"; fail "listen line"; }
expect_rc 1 "$CXRTRIAGE" echo 127.0.0.1 "$PLAIN_PORT" CXRTRIAGE
grep -q "connection refused" "$T/out" || { cat "$T/out"; fail "tls = required: the plain port answers"; }
expect_rc 0 "$CXRTRIAGE" echo --tls --tls-cert "$P/client.crt" --tls-key "$P/client.key" \
  --tls-ca "$P/ca.crt" 127.0.0.1 "$TLS_PORT" CXRTRIAGE
expect_rc 0 "$CXRTRIAGE" selftest --config "$T/req.conf" --tls-cert "$P/client.crt" \
  --tls-key "$P/client.key" --tls-ca "$P/ca.crt" --wait 60
grep -q "^PASS echo: .*(TLS)" "$T/out" && grep -q "^PASS scores:" "$T/out" || { cat "$T/out"; fail "selftest over TLS"; }
expect_rc 1 "$CXRTRIAGE" selftest --config "$T/req.conf" --tls-ca "$P/ca.crt" --timeout 5
grep -q "^FAIL echo:" "$T/out" || { cat "$T/out"; fail "selftest over TLS without a client certificate should fail"; }
ok "tls = required: plain port closed, TLS echo and selftest pass, a client without a certificate fails"
