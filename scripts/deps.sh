#!/usr/bin/env bash
# deps.sh - installs the Debian packages cxrtriage needs, idempotently.
#   scripts/deps.sh [build] [test] [bench]   (default: build)
# Does nothing when everything is there; otherwise runs `apt-get update` once and installs
# what is missing, non-interactively. Needs root or sudo only when something is missing.
set -euo pipefail

build_pkgs=(build-essential cmake pkg-config
  libdcmtk-dev libopenjp2-7-dev libopenblas-dev libcurl4-openssl-dev libsqlite3-dev
  libinih-dev libjansson-dev libmicrohttpd-dev libpng-dev libjpeg62-turbo-dev
  libsystemd-dev zlib1g-dev libcmocka-dev libssl-dev libcharls-dev)
# Real peers and checkers used by the test suite.
test_pkgs=(dcmtk libopenjp2-tools sqlite3 systemd clang libclang-rt-14-dev clang-tidy cppcheck
  imagemagick python3-numpy python3-sklearn python3-pydicom file libgdcm-tools
  orthanc iproute2 util-linux curl python3-hl7 jq nodejs openssl chromium prometheus)
# Peers for the benchmarks (PyTorch CPU, the reference for the CNN engine).
bench_pkgs=(python3-torch python3-numpy hyperfine)

groups=("$@")
[ ${#groups[@]} -eq 0 ] && groups=(build)
want=()
for g in "${groups[@]}"; do
  case "$g" in
    build) want+=("${build_pkgs[@]}") ;;
    test) want+=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
    bench) want+=("${build_pkgs[@]}" "${bench_pkgs[@]}") ;;
    *) echo "deps.sh: unknown group '$g' (build, test, bench)" >&2; exit 2 ;;
  esac
done

# The report validators (tests/validators) run on node with npm; a nodejs build that ships
# npm itself satisfies that, otherwise Debian's npm package brings it.
for g in "${groups[@]}"; do
  if [ "$g" = test ] && ! command -v npm >/dev/null; then want+=(npm); fi
done

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
# de-duplicate
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "deps.sh: installing ${missing[*]}" >&2
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
