#!/usr/bin/env bash
# make stress: the whole Go suite with -race -count=N while every core is
# kept busy, to find the tests that pass on an idle machine and fail on a
# loaded one (CI's two shared cores). Not part of `make test`: it takes
# N times the suite's time, and longer under load.
#
#   STRESS_COUNT    N, how many times each test runs (default 5)
#   STRESS_LOAD     stress-ng (default; installed with apt-get when missing,
#                   busy falls back when it cannot be), busy (one shell busy
#                   loop per worker) or none
#   STRESS_WORKERS  CPU hogs to start (default: the number of cores)
#   STRESS_OUT      directory for the logs (default: a new temp directory)
#   PKGS            packages (default ./...)
#
# The end-to-end tests (real PartyKit dev server, built binary, runbook,
# SIGTERM) and the status page's browser test (Debian's chromium) are Go
# tests of cmd/switchyard, legacyparty and shadow: they run N times with the
# rest; with N < 2 (and PKGS ./...) they run again so that they run at
# least twice. The
# browser test is never skipped here (SWITCHYARD_SKIP_BROWSER is cleared).
#
# The load is started after the test binaries are built and stopped on every
# exit. The script prints each failed test with its output, the skipped
# tests, the duration and the totals; it exits 1 when any test failed.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${STRESS_COUNT:-5}
LOAD=${STRESS_LOAD:-stress-ng}
WORKERS=${STRESS_WORKERS:-$(nproc)}
PKGS=${PKGS:-./...}
OUT=${STRESS_OUT:-$(mktemp -d -t switchyard-stress.XXXXXX)}
# Packages holding the end-to-end and browser tests.
E2E_PKGS=(./cmd/switchyard ./legacyparty/... ./shadow)

case $COUNT in '' | *[!0-9]* | 0) echo "stress: STRESS_COUNT=$COUNT: want a positive integer" >&2; exit 2 ;; esac
case $WORKERS in '' | *[!0-9]* | 0) echo "stress: STRESS_WORKERS=$WORKERS: want a positive integer" >&2; exit 2 ;; esac
case $LOAD in stress-ng | busy | none) ;; *) echo "stress: STRESS_LOAD=$LOAD: want stress-ng, busy or none" >&2; exit 2 ;; esac
mkdir -p "$OUT"
unset SWITCHYARD_SKIP_BROWSER

scripts/test-deps.sh # the PartyKit fixture, chromium, jq

# The load: stress-ng's CPU stressors, or shell busy loops.
if [ "$LOAD" = stress-ng ] && ! command -v stress-ng >/dev/null 2>&1; then
  echo "stress: apt-get install stress-ng"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends stress-ng >/dev/null; }; then
    echo "stress: stress-ng could not be installed; using busy loops" >&2
    LOAD=busy
  fi
fi
load_pids=()
stop_load() {
  local p
  for p in "${load_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${load_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  load_pids=()
}
trap stop_load EXIT
trap 'exit 130' INT TERM
start_load() {
  case $LOAD in
    stress-ng)
      stress-ng --cpu "$WORKERS" --cpu-method all --quiet >"$OUT/stress-ng.log" 2>&1 &
      load_pids+=($!)
      ;;
    busy)
      local i
      for ((i = 0; i < WORKERS; i++)); do
        (while :; do :; done) &
        load_pids+=($!)
      done
      ;;
  esac
}

# Build every test binary before the load starts (they are cached), so the
# load measures the tests, not the compiler.
echo "stress: building the test binaries"
go test -race -count=1 -run '^$' $PKGS >/dev/null

# go test -json into a file; one progress line per package.
run() { # run LOGNAME COUNT PKG...
  local log=$OUT/$1.json count=$2
  shift 2
  echo "stress: go test -race -count=$count $* (log $log)"
  set +e
  go test -race -count="$count" -timeout "$((count * 10 + 5))m" -json "$@" 2>"$OUT/$(basename "$log" .json).stderr" |
    tee "$log" |
    jq --unbuffered -r 'select(.Test == null and (.Action == "pass" or .Action == "fail" or .Action == "skip")) | "  \(.Action)\t\(.Package)\t\((.Elapsed // 0) * 10 | round / 10)s"'
  local rc=${PIPESTATUS[0]}
  set -e
  return "$rc"
}

start=$(date +%s)
start_load
echo "stress: load $LOAD ($WORKERS workers on $(nproc) cores), count $COUNT, logs in $OUT"
status=0
run suite "$COUNT" $PKGS || status=1
if [ "$COUNT" -lt 2 ] && [ "$PKGS" = ./... ]; then
  run e2e "$((2 - COUNT))" "${E2E_PKGS[@]}" || status=1
fi
stop_load
end=$(date +%s)

# The report: every failed test with its output (per run of it), the
# failures outside a test (build errors, panics, timeouts), the skips.
report() {
  jq -rn '
    reduce (inputs | select(.Action != null)) as $e (
      {buf: {}, out: [], failedPkg: {}, pkgOut: {}, pass: 0, fail: 0, skip: 0, skipped: {}};
      ($e.Package + " " + ($e.Test // "")) as $k
      | if $e.Action == "build-output" then .out += ["--- BUILD " + ($e.ImportPath // "") + ": " + ($e.Output // "")]
        elif $e.Test == null then
          if $e.Action == "output" then .pkgOut[$e.Package] = ((.pkgOut[$e.Package] // "") + $e.Output)
          elif $e.Action == "fail" and (.failedPkg[$e.Package] | not) then
            .out += ["--- FAIL (package) " + $e.Package + "\n" + ((.pkgOut[$e.Package] // "") | split("\n") | .[-80:] | join("\n"))]
          elif $e.Action == "pass" or $e.Action == "fail" or $e.Action == "skip" then del(.pkgOut[$e.Package])
          else . end
        elif $e.Action == "run" then .buf[$k] = ""
        elif $e.Action == "output" then .buf[$k] = ((.buf[$k] // "") + $e.Output)
        elif $e.Action == "pass" then .pass += 1 | del(.buf[$k])
        elif $e.Action == "skip" then .skip += 1 | .skipped[$k] = ((.skipped[$k] // 0) + 1) | del(.buf[$k])
        elif $e.Action == "fail" then
          .fail += 1 | .failedPkg[$e.Package] = true
          | .out += ["--- FAIL " + $k + " (" + (($e.Elapsed // 0) * 100 | round / 100 | tostring) + "s)\n" + (.buf[$k] // "")]
          | del(.buf[$k])
        else . end)
    | (.out[]),
      "stress: skipped: " + ([.skipped | to_entries[] | "\(.key) x\(.value)"] | join(", ") | if . == "" then "none" else . end),
      "stress: test runs: \(.pass) passed, \(.fail) failed, \(.skip) skipped"
  ' "$@"
}
logs=("$OUT/suite.json")
[ -f "$OUT/e2e.json" ] && logs+=("$OUT/e2e.json")
report "${logs[@]}" | tee "$OUT/report.txt"
dur=$((end - start))
echo "stress: $(printf '%dm%02ds' $((dur / 60)) $((dur % 60))) under load $LOAD ($WORKERS workers, $(nproc) cores), count $COUNT: $([ $status -eq 0 ] && echo PASS || echo FAIL)" | tee -a "$OUT/report.txt"
if [ -s "$OUT/suite.stderr" ]; then
  echo "stress: go test stderr ($OUT/suite.stderr):"
  tail -n 40 "$OUT/suite.stderr"
fi
exit "$status"
