#!/usr/bin/env bash
# Installs the Debian packages kvpr builds and tests against. Idempotent: it asks dpkg
# first and stays quiet when everything is there, so `make` can call it every time.
# `deps.sh fuzz` adds clang and its runtime (libFuzzer, the sanitizers) for `make fuzz`;
# `deps.sh recipes` adds Slurm and munge, which tests/recipes.sh uses to run the README's job array.
# GNU parallel is always installed: experiments/README.md tells users to run shards with it.
set -eu
pkgs="build-essential pkg-config libsqlite3-dev sqlite3 libgsl-dev libglpk-dev glpk-utils
      libjansson-dev libcmocka-dev gnuplot-nox libopenblas-dev parallel"
[ "${1:-}" = fuzz ] && pkgs="$pkgs clang libclang-rt-dev"
[ "${1:-}" = recipes ] && pkgs="$pkgs slurm-wlm munge"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "deps: done" >&2
