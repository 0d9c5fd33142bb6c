#!/usr/bin/env bash
# Runs govulncheck on the module against a local copy of the Go
# vulnerability database, so it needs no network but the Go module proxy:
#   scripts/govulncheck.sh            # ./...
#   scripts/govulncheck.sh -show verbose ./...
#
# The database is the golang.org/x/vulndb module (its data/osv/*.json
# reports), downloaded through the proxy with `go mod download` and indexed
# into the v1 layout govulncheck reads with -db file://DIR (index/db.json,
# index/modules.json, index/vulns.json, ID/<id>.json) by vulndb's own
# cmd/indexdb. It is built once per vulndb version under
# ${XDG_CACHE_HOME:-~/.cache}/switchyard/vulndb/<version> (govulncheck
# itself is installed under .../vulndb/bin/<version>), never committed. Bump VULNDB_VERSION (a pseudo-version of golang.org/x/vulndb)
# to get newer reports.
#
# Exit status is govulncheck's: 0 when no vulnerability is reachable from
# our code, 3 when one is (it then names the fixed version), else an error.
set -euo pipefail
cd "$(dirname "$0")/.."

VULN_VERSION="${VULN_VERSION:-v1.9.0}"
VULNDB_VERSION="${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/vulndb"
db="$cache/$VULNDB_VERSION"

if [ ! -s "$db/index/db.json" ]; then
  echo "govulncheck: building the vulnerability database $VULNDB_VERSION in $db" >&2
  mkdir -p "$cache"
  src="$(go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  if [ -z "$src" ] || [ ! -d "$src/data/osv" ]; then
    echo "govulncheck: golang.org/x/vulndb@$VULNDB_VERSION has no data/osv directory" >&2
    exit 2
  fi
  tmp="$(mktemp -d "$cache/.build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  go run "golang.org/x/vulndb/cmd/indexdb@$VULNDB_VERSION" -vulns "$src/data/osv" -out "$tmp"
  # Publish atomically; a concurrent run may have won the race.
  mv -T "$tmp" "$db" 2>/dev/null || [ -s "$db/index/db.json" ]
  trap - EXIT
  rm -rf "$tmp"
fi

# A private install, not `go run`: go run turns every failure into exit 1.
bin="$cache/bin/$VULN_VERSION"
if [ ! -x "$bin/govulncheck" ]; then
  GOBIN="$bin" go install "golang.org/x/vuln/cmd/govulncheck@$VULN_VERSION"
fi

[ $# -gt 0 ] || set -- ./...
exec "$bin/govulncheck" -db "file://$db" "$@"
