#!/usr/bin/env bash
# The .deb builds with CPack, lists its shared-library dependencies, holds the programs, unit,
# sysusers/tmpfiles entries and config, and the packaged binaries run.
. "$(dirname "$0")/lib.sh"
command -v dpkg-deb >/dev/null || fail "dpkg-deb missing"
(cd "$T" && cpack -G DEB -B "$T/pkg" --config "$CXR_BUILD_DIR/CPackConfig.cmake" >"$T/cpack.log" 2>&1) ||
  { cat "$T/cpack.log"; fail "cpack failed"; }
deb=$(ls "$T"/pkg/cxrtriage_*.deb)
dpkg-deb -I "$deb" >"$T/info"
grep -q '^ Depends: .*libc6' "$T/info" || { cat "$T/info"; fail "Depends lacks libc6"; }
grep -q '^ Depends: .*libinih1' "$T/info" || fail "Depends lacks libinih1 (from dpkg-shlibdeps)"
grep -q '^ Depends: .*systemd' "$T/info" || fail "Depends lacks systemd"
dpkg-deb -c "$deb" >"$T/list"
for f in ./usr/sbin/cxrtriaged ./usr/bin/cxrtriage ./usr/bin/cxrtriage-train \
  ./usr/lib/systemd/system/cxrtriaged.service ./usr/lib/sysusers.d/cxrtriage.conf \
  ./usr/lib/tmpfiles.d/cxrtriage.conf ./etc/cxrtriage/cxrtriage.conf; do
  grep -q " $f\$" "$T/list" || fail "package lacks $f"
done
dpkg-deb -x "$deb" "$T/root"
"$T/root/usr/bin/cxrtriage" --version | grep -q '^cxrtriage ' || fail "packaged CLI does not run"
"$T/root/usr/bin/cxrtriage" config check "$T/root/etc/cxrtriage/cxrtriage.conf" >/dev/null ||
  fail "packaged config does not check"
grep -q "ExecStart=/usr/sbin/cxrtriaged" "$T/root/usr/lib/systemd/system/cxrtriaged.service" ||
  fail "unit ExecStart does not point at the installed daemon"
ok "package $(basename "$deb")"
