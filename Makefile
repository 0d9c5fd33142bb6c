# Switchyard: every target works on a fresh clone; `make test` installs what
# the tests need (npm fixture, promtool, chromium) first.
GO       ?= go
# go.mod names the toolchain (go1.26.10: the first 1.26 release without the
# standard-library advisories govulncheck reports for 1.26.8). auto lets the
# go command fetch it through the module proxy when the installed Go is
# older; a newer installed Go is used as it is.
export GOTOOLCHAIN ?= auto
PKGS     ?= ./...
STATICCHECK_VERSION ?= v0.7.0
GOBIN    ?= $(shell $(GO) env GOPATH)/bin

.PHONY: demo test stress test-deps lint vet staticcheck vulncheck build bench fuzz docker clean web-size

## demo: run the embedded demo (no outside service needed)
demo:
	$(GO) run ./cmd/switchyard demo

## test: install test dependencies, then lint and run every test with -race
test: test-deps lint vulncheck
	cd web && npm test
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	promtool check rules configs/prometheus/alerts.yml
	promtool test rules configs/prometheus/alerts_test.yml

## stress: the whole suite with -race -count=$(STRESS_COUNT) while every core
## is kept busy (stress-ng, installed with apt-get when missing), the
## end-to-end and browser tests included; prints each failed test with its
## output (scripts/stress.sh). Long: not part of test.
STRESS_COUNT ?= 5
stress:
	STRESS_COUNT=$(STRESS_COUNT) PKGS='$(PKGS)' scripts/stress.sh

## test-deps: the npm PartyKit fixture, web/'s npm packages, promtool and
## chromium (Debian), the Inngest dev server binary, staticcheck
test-deps:
	scripts/test-deps.sh

lint: vet staticcheck
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "not gofmt-formatted:"; echo "$$unformatted"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

staticcheck:
	$(GOBIN)/staticcheck $(PKGS)

## vulncheck: govulncheck against a local copy of the Go vulnerability
## database, built from the golang.org/x/vulndb module (proxy only)
vulncheck:
	scripts/govulncheck.sh $(PKGS)

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$$(git describe --always --dirty 2>/dev/null || echo dev)" -o bin/switchyard ./cmd/switchyard

## bench: the side-by-side load benchmark (ratios) and the micro-benchmarks;
## BASELINE=<commit> also builds that commit and prints CPU per message as this build / baseline
bench:
	$(GO) run ./cmd/loadgen $(if $(BASELINE),-baseline $(BASELINE))
	$(GO) test -run '^$$' -bench . -benchmem ./api/ ./broadcast/ ./flags/ ./shadow/ ./upstream/

fuzz:
	scripts/fuzz.sh 20s

## web-size: the browser package's size, minified and gzipped (esbuild)
web-size:
	cd web && npm run --silent size

docker:
	docker build -t switchyard .

clean:
	rm -rf bin
