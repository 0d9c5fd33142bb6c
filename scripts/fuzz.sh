#!/usr/bin/env bash
# Runs every fuzz target of the module for a while each (default 20s):
#   scripts/fuzz.sh 1m
# Fuzz targets also run their seed corpus in every `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${1:-20s}"
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "== $pkg $target ($budget)"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$budget" "$pkg"
  done
done
