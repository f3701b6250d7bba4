#!/usr/bin/env bash
# The unit file passes `systemd-analyze verify` and carries the hardening we promise.
. "$(dirname "$0")/lib.sh"

command -v systemd-analyze >/dev/null || fail "systemd-analyze missing (scripts/deps.sh test installs systemd)"
unit="$CXR_BUILD_DIR/systemd/cxrtriaged.service"
[ -f "$unit" ] || fail "no generated unit at $unit"
# verify resolves ExecStart; point it at the built binary in a copy of the unit.
mkdir -p "$T/units"
sed "s|^ExecStart=[^ ]*|ExecStart=$CXRTRIAGED|" "$unit" >"$T/units/cxrtriaged.service"
out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$T/units/cxrtriaged.service" 2>&1 || true)
# Lines about the unit itself are errors; lines about other units on this host are not ours.
bad=$(printf '%s\n' "$out" | grep 'cxrtriaged.service' || true)
[ -z "$bad" ] || { printf '%s\n' "$out"; fail "systemd-analyze verify complained"; }
for key in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
  PrivateDevices=yes 'ReadWritePaths=/var/lib/cxrtriage' User=cxrtriage Type=notify; do
  grep -qx "$key" "$unit" || fail "unit lacks $key"
done
grep -q '^u cxrtriage ' "$CXR_SOURCE_DIR/systemd/cxrtriage.sysusers.conf" || fail "sysusers entry"
grep -q '^d /var/lib/cxrtriage 0700 cxrtriage' "$CXR_SOURCE_DIR/systemd/cxrtriage.tmpfiles.conf" || fail "tmpfiles entry"
ok "systemd unit verified"
