#!/usr/bin/env bash
# static-checks.sh BUILD_DIR - clang-tidy, cppcheck and a banned-function grep over our sources.
# Run by ctest (label "lint") in the release build; also usable by hand after a build.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
db="$build/compile_commands.json"
[ -f "$db" ] || { echo "no $db: build first"; exit 1; }

# Our sources as compiled in this build (compile_commands.json knows their flags).
mapfile -t srcs < <(/usr/bin/python3 -c '
import json, os, sys
root = os.getcwd() + "/"
for e in json.load(open(sys.argv[1])):
    f = os.path.normpath(os.path.join(e["directory"], e["file"]))
    if f.startswith(root) and "/build" not in f[len(root) - 1:]:
        print(f[len(root):])' "$db" | sort -u)
status=0

echo "== banned functions"
prod=$(printf '%s\n' "${srcs[@]}" | grep -v '^tests/' | grep -v '^bench/' || true)
if [ -n "$prod" ]; then
  if grep -nE '\b(strcpy|strcat|sprintf|vsprintf|strtok|atoi|atol|gets|system)\s*\(' $prod; then
    echo "banned function used (see STYLE.md)"; status=1
  fi
fi

echo "== clang-tidy (${#srcs[@]} files)"
tidy_out=$(printf '%s\n' "${srcs[@]}" | xargs -P "$(nproc)" -n 1 clang-tidy -p "$build" --quiet 2>/dev/null) || status=1
if printf '%s\n' "$tidy_out" | grep -E 'warning:|error:'; then status=1; fi

echo "== cppcheck"
cpp_out=$(cppcheck --quiet --project="$db" --enable=warning,portability,performance \
  --inline-suppr --suppress=missingIncludeSystem --suppress=unmatchedSuppression \
  --error-exitcode=0 -j "$(nproc)" 2>&1 || true)
if [ -n "$cpp_out" ]; then printf '%s\n' "$cpp_out"; status=1; fi

[ $status -eq 0 ] && echo "static checks clean"
exit $status
