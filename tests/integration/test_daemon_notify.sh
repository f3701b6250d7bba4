#!/usr/bin/env bash
# systemd's notify protocol, as the unit (Type=notify, WatchdogSec) uses it: the daemon sends
# READY=1 only once it listens, STATUS= lines with its counts, WATCHDOG=1 while its loop runs,
# and STOPPING=1 on SIGTERM. A datagram socket made by the test stands in for systemd.
. "$(dirname "$0")/lib.sh"

sock="$T/notify.sock"
/usr/bin/python3 - "$sock" "$T/notify.txt" <<'EOF' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(1.0)
end = time.time() + 60
with open(sys.argv[2], "a", buffering=1) as out:
    while time.time() < end:
        try:
            msg = s.recv(4096).decode()
        except socket.timeout:
            continue
        for line in msg.splitlines():
            out.write(f"{time.time():.3f} {line}\n")
        if "STOPPING=1" in msg:
            break
EOF
listener=$!
_pids+=("$listener")
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || fail "the stand-in notify socket did not appear"

port=$(free_port)
NOTIFY_SOCKET="$sock" WATCHDOG_USEC=2000000 start_bg daemon "$CXRTRIAGED" \
  --port "$port" --http-port "$(free_port)" --state-dir "$T/var"
pid=$LAST_PID
wait_log "$T/notify.txt" "READY=1" 30
# READY comes after the listener is up: the port answers at once.
ss -ltnH "sport = :$port" | grep -q "127.0.0.1:$port" || fail "READY=1 before the port listens"
wait_log "$T/notify.txt" "WATCHDOG=1" 10
wait_log "$T/notify.txt" "STATUS=received 0, final 0, queued 0" 15
stop_pid "$pid"
[ "$STOP_RC" = 0 ] || fail "exit $STOP_RC on SIGTERM"
wait_log "$T/notify.txt" "STOPPING=1" 5
ok "READY=1 after listening, STATUS, WATCHDOG=1 and STOPPING=1"
