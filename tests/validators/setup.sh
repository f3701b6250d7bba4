#!/usr/bin/env bash
# setup.sh DEST - installs the pinned report validators (package.json + package-lock.json beside
# this script) into DEST, a folder of the build tree, never the source tree: `npm ci` runs there
# once and again only when the lock file changes. The check scripts are copied on every run.
# Exit 0 when ready, 77 (skip, with the reason on stdout) when node or npm is missing or the
# install fails (no registry), so a test never passes without its validators.
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
dest=${1:?usage: setup.sh DEST}
command -v node >/dev/null || { echo "SKIPPED: node is not installed (scripts/deps.sh test)"; exit 77; }
command -v npm >/dev/null || { echo "SKIPPED: npm is not installed (scripts/deps.sh test)"; exit 77; }
mkdir -p "$dest"
exec 9>"$dest/.lock"
flock 9
cp "$src"/check_hl7.mjs "$src"/check_fhir.cjs "$src"/check_openapi.cjs "$dest/"
if [ -d "$dest/node_modules" ] && cmp -s "$src/package-lock.json" "$dest/.installed-lock"; then
  exit 0
fi
cp "$src/package.json" "$src/package-lock.json" "$dest/"
rm -rf "$dest/node_modules" "$dest/.installed-lock"
if ! (cd "$dest" && npm ci --no-audit --no-fund --loglevel=error >"$dest/npm-ci.log" 2>&1); then
  echo "SKIPPED: 'npm ci' of the validators failed (registry unreachable?):"
  tail -n 5 "$dest/npm-ci.log"
  exit 77
fi
cp "$src/package-lock.json" "$dest/.installed-lock"
