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

# The browser test (web/e2e) and the hardening suite (test/adversarial,
# through realtime/inngestdev) run the real Inngest dev server; building it
# takes minutes once, then it is cached.
if [ -z "${SWITCHYARD_INNGEST_DEV:-}" ] && [ -f ../shared/tools/inngest-dev.sh ]; then
  bash ../shared/tools/inngest-dev.sh >/dev/null
fi
