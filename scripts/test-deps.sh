#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine (idempotent):
# the PartyKit npm fixture, the browser client's npm packages (web/:
# TypeScript, esbuild, playwright-core, partysocket, inngest), Debian's
# prometheus (promtool), chromium, haproxy and redis-server (none of them
# started as a service: tests run their own), the real Inngest dev server
# binary (../shared/tools/inngest-dev.sh, cached), and staticcheck. Run by
# `make test` and so by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x test/partykit/node_modules/.bin/partykit ]; then
  echo "test-deps: npm ci in test/partykit"
  (cd test/partykit && NO_UPDATE_NOTIFIER=1 npm ci --no-audit --no-fund --loglevel=error)
fi

if [ ! -x web/node_modules/.bin/tsc ] || [ ! -d web/node_modules/playwright-core ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
  echo "test-deps: npm ci in web"
  (cd web && NO_UPDATE_NOTIFIER=1 npm ci --no-audit --no-fund --loglevel=error)
fi

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v jq >/dev/null 2>&1 || need+=(jq)       # the runbook's commands (TestRunbookCommands)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)            # test/replicas: the load balancer
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)  # shared idempotency (dedupredis, test/replicas)
if [ ${#need[@]} -gt 0 ]; then
  echo "test-deps: apt-get install ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

gobin="$(go env GOPATH)/bin"
if [ ! -x "$gobin/staticcheck" ]; then
  echo "test-deps: go install staticcheck"
  go install honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION:-v0.7.0}
fi

# The real Inngest dev server the realtime conformance suite, the shadow,
# token and realtime-stage end-to-end tests, the browser test (web/e2e) and
# the hardening suite (test/adversarial) run against (realtime/inngestdev):
# ../shared/tools/inngest-dev.sh prints its path, building it the first time
# from Inngest's own Go module (about 3 minutes cold), so that no test waits
# on the build. SWITCHYARD_INNGEST_DEV names a binary instead. Without either
# those tests skip, saying so.
inngest_script=../shared/tools/inngest-dev.sh
if [ -n "${SWITCHYARD_INNGEST_DEV:-}" ]; then
  echo "test-deps: inngest dev server: $SWITCHYARD_INNGEST_DEV (SWITCHYARD_INNGEST_DEV)"
elif [ -f "$inngest_script" ]; then
  echo "test-deps: inngest dev server: $(bash "$inngest_script")"
else
  echo "test-deps: $inngest_script absent: the tests against a real Inngest dev server will skip"
fi
