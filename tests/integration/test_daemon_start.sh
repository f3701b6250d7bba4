#!/usr/bin/env bash
# The daemon starts on its defaults (overridden to free ports and a temp state dir), logs its
# effective configuration, creates its state 0700 and its audit database 0600, listens on
# 127.0.0.1 only, and exits 0 on SIGTERM and on SIGINT (Ctrl-C). No PHI and no secrets in its
# log.
. "$(dirname "$0")/lib.sh"

port=$(free_port); http=$(free_port)
printf '[webhook]\nbearer_token = tok-SECRET-123\n' >"$T/d.conf"
start_bg daemon "$CXRTRIAGED" --config "$T/d.conf" --port "$port" --http-port "$http" \
  --state-dir "$T/var" --ae-title TESTAE --foreground
pid=$LAST_PID
wait_log "$T/daemon.log" "daemon.ready"
grep -q "config \[dicom\] port = $port" "$T/daemon.log" || fail "effective port not logged"
grep -q "config \[dicom\] ae_title = TESTAE" "$T/daemon.log" || fail "AE title override not logged"
grep -q "model.loaded.*digest=" "$T/daemon.log" || fail "model digest not logged"
[ "$(stat -c %a "$T/var/audit.db")" = 600 ] || fail "audit.db is not 0600"
ss -ltnH "sport = :$port" | grep -q "127.0.0.1:$port" || fail "not listening on 127.0.0.1:$port"
ss -ltnH "sport = :$port" | grep -vq "127.0.0.1:$port" && fail "listening beyond loopback"
grep -q "tok-SECRET-123" "$T/daemon.log" && fail "secret in the log"
for d in "$T/var" "$T/var/spool" "$T/var/reports"; do
  [ "$(stat -c %a "$d")" = 700 ] || fail "$d is not 0700"
done
stop_pid "$pid"
[ "$STOP_RC" = 0 ] || fail "exit status $STOP_RC on SIGTERM"
grep -q "daemon.stop signal=Terminated" "$T/daemon.log" || fail "stop not logged"
ok "start, log, SIGTERM"

start_bg daemon2 "$CXRTRIAGED" --port "$port" --http-port "$http" --state-dir "$T/var2"
pid=$LAST_PID
wait_log "$T/daemon2.log" "daemon.ready"
stop_pid "$pid" INT
[ "$STOP_RC" = 0 ] || fail "exit status $STOP_RC on SIGINT"
ok "SIGINT"

# A bad config stops it before it does anything.
printf '[dicom]\nport = eleven\n' >"$T/bad.conf"
expect_rc 1 "$CXRTRIAGED" --config "$T/bad.conf" --state-dir "$T/var3"
grep -q "bad.conf:2: \[dicom\] port: found 'eleven'" "$T/out" || fail "bad config not named"
[ -e "$T/var3" ] && fail "state dir created despite a bad config"
ok "bad config refused"

# A corrupt model file stops it, naming the file and the part at fault.
head -c 4096 /dev/urandom >"$T/corrupt.cxrm"
printf '[model]\npath = %s\n' "$T/corrupt.cxrm" >"$T/m.conf"
expect_rc 1 "$CXRTRIAGED" --config "$T/m.conf" --state-dir "$T/var4"
grep -q "model.invalid.*corrupt.cxrm" "$T/out" || { cat "$T/out"; fail "corrupt model not named"; }
ok "corrupt model refused"
