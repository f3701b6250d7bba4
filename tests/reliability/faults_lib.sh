# faults_lib.sh - the shared start of hostile_peers.sh and webhook_faults.sh (sourced, never
# run): makes a script runnable alone from a checkout (build/release, ../shared/data by
# default) as well as from ctest,
# sources tests/integration/lib.sh (temporary directory, free ports, start_daemon, cleanup by
# PID), parses --quick|--long into RELIAB_MODE, and makes the script's last line of output
# "<RELIAB_FLAG>=yes|no": yes only when it exits 0 (a skip, 77, prints no and says why).
#   RELIAB_FLAG=hostile_ok . "$(dirname "$0")/faults_lib.sh" "$@"
RELIAB_MODE=quick
for _a in "$@"; do
  case "$_a" in
    --quick) RELIAB_MODE=quick ;;
    --long) RELIAB_MODE=long ;;
    -h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--quick|--long]" >&2; echo "${RELIAB_FLAG:?}=no"; exit 2 ;;
  esac
done
_rel_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${CXR_SOURCE_DIR:=$(cd "$_rel_here/../.." && pwd)}"
: "${CXR_BUILD_DIR:=$CXR_SOURCE_DIR/build/release}"
: "${CXR_DATA_DIR=$(cd "$CXR_SOURCE_DIR/.." && pwd)/shared/data}"
export CXR_SOURCE_DIR CXR_BUILD_DIR CXR_DATA_DIR
. "$CXR_SOURCE_DIR/tests/integration/lib.sh"
[ -x "$CXRTRIAGED" ] || fail "no $CXRTRIAGED: build first (scripts/build.sh release) or set CXR_BUILD_DIR"

# lib.sh's cleanup (stop what we started, remove $T, show logs on failure) runs first, in a
# subshell so its `exit` returns here; then the one result line.
_rel_exit() {
  local rc=$?
  set +e
  ( (exit "$rc"); _cleanup )
  if [ "$rc" = 0 ]; then echo "${RELIAB_FLAG}=yes"; else echo "${RELIAB_FLAG}=no"; fi
  exit "$rc"
}
trap _rel_exit EXIT

# elapsed_ms T0_NS: milliseconds since T0_NS (date +%s%N).
elapsed_ms() { echo $((($(date +%s%N) - $1) / 1000000)); }

# ledger_events REGEX: how many association/instance events in the audit ledger
# ($DAEMON_STATE/audit.db, read only) have "kind detail" matching the Python REGEX.
ledger_events() {
  /usr/bin/python3 - "$DAEMON_STATE/audit.db" "$1" <<'PY'
import re, sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True, timeout=10)
rx = re.compile(sys.argv[2])
print(sum(1 for k, d in db.execute("SELECT kind, detail FROM events") if rx.search(k + " " + d)))
PY
}
