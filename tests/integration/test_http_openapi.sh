#!/usr/bin/env bash
# docs/openapi.yaml against a real validator and the real server: the file passes
# @apidevtools/swagger-parser (pinned in tests/validators, installed by setup.sh); its
# operations and the daemon's route table (`cxrtriaged --list-routes`) are the same set; and
# every operation in the file answers on a running daemon (a ledger where the ids exist) with
# neither 404 nor 405.
. "$(dirname "$0")/lib.sh"
command -v jq >/dev/null || skip "needs jq: scripts/deps.sh test"
val="$CXR_SOURCE_DIR/tests/validators"
vdir="$CXR_BUILD_DIR/validators"
rc=0
bash "$val/setup.sh" "$vdir" >"$T/setup.out" 2>&1 || rc=$?
if [ $rc -eq 77 ]; then skip "$(cat "$T/setup.out")"; fi
[ $rc -eq 0 ] || { cat "$T/setup.out"; fail "validator setup failed ($rc)"; }

SPEC="$CXR_SOURCE_DIR/docs/openapi.yaml"
node "$vdir/check_openapi.cjs" "$SPEC" >"$T/spec.txt" 2>"$T/spec.err" || { cat "$T/spec.err"; fail "openapi.yaml is not valid"; }
n=$(wc -l <"$T/spec.txt")
[ "$n" -ge 10 ] || fail "only $n operations in the file"
# The validator does fail on a broken file (so the check above means something).
sed 's/^openapi: 3.0.3$/openapi: 3.0.3\nbogus_top_level: 1/' "$SPEC" >"$T/broken.yaml"
if node "$vdir/check_openapi.cjs" "$T/broken.yaml" >/dev/null 2>&1; then fail "the validator accepted a broken file"; fi
ok "docs/openapi.yaml is valid OpenAPI 3.0 ($n operations); a broken copy is refused"

"$CXRTRIAGED" --list-routes >"$T/routes.txt" || fail "--list-routes"
sort "$T/spec.txt" >"$T/a"; sort "$T/routes.txt" >"$T/b"
diff "$T/a" "$T/b" >"$T/diff" || { cat "$T/diff"; fail "routes (>) and openapi.yaml (<) differ"; }
ok "the daemon's route table and the file list the same $(wc -l <"$T/b") operations"

# A ledger where instance 1 and dead report 2 exist (tests/tools/store_fill)
mkdir -p "$T/oa.state"
"$CXR_BUILD_DIR/store/store_fill" "$T/oa.state/audit.db" >/dev/null || fail "store_fill"
DAEMON_CONF='[report]
mode = shadow'
start_daemon oa
while read -r method path; do
  url=${path//\{id\}/}
  case "$path" in
    */outbox/\{id\}/retry) url=${path//\{id\}/2} ;;
    *\{id\}*) url=${path//\{id\}/1} ;;
    /\{file\}) url=/index.html ;;
    *) url=$path ;;
  esac
  code=$(curl -sS -m 30 -o "$T/body" -w '%{http_code}' -X "$method" "http://127.0.0.1:$DAEMON_HTTP$url")
  case "$code" in
    404|405|000) fail "$method $url (from $path) answered $code: $(head -c 300 "$T/body")" ;;
  esac
  echo "  $method $url -> $code"
done <"$T/spec.txt"
ok "every operation of the file answers on the running daemon (no 404, no 405)"
