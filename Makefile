# rewrited: build, test and image targets. `make test` is what CI runs.
GOBIN := $(shell go env GOPATH)/bin
export PATH := $(GOBIN):$(PATH)

GRPCURL_VERSION := v1.9.4
BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
STATICCHECK_VERSION := v0.8.2

.PHONY: all build serve test tools smtp-tools lint proto-check vet unit e2e images e2e-compose bench fuzz-smoke reliability-report monitoring-check

all: build

build:
	CGO_ENABLED=0 go build -o bin/rewrited ./cmd/rewrited
	CGO_ENABLED=0 go build -o bin/rewrited-proxy ./cmd/rewrited-proxy

serve:
	go run ./cmd/rewrited serve

# The whole suite: tools, proto lint and regeneration check, vet, unit and
# integration tests with the race detector, every fuzz target briefly, and
# the end-to-end scripts (the docker-compose one skips itself when no Docker
# engine answers).
test: tools lint proto-check vet unit fuzz-smoke e2e e2e-compose monitoring-check

tools:
	go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
	go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@command -v lua5.4 >/dev/null || echo "note: lua5.4 is missing (apt-get install -y lua5.4); the Lua 5.4 differential test and fuzz target skip without it"

# Postfix (smtpd, smtp-source) and swaks for the rewrited-proxy tests; Debian
# or Ubuntu, as root. Without them those tests skip.
smtp-tools:
	DEBIAN_FRONTEND=noninteractive apt-get install -y postfix swaks

# BREAKING_AGAINST is what buf breaking compares the API with: the previous
# commit (a release tag, once there is one: BREAKING_AGAINST='.git#tag=v1.0.0').
BREAKING_AGAINST ?= .git\#ref=HEAD~1

# Static checks: proto lint and breaking changes, gofmt, staticcheck, and a
# go.mod/go.sum that go mod tidy leaves as they are.
lint:
	buf lint
	@if git rev-parse -q --verify HEAD~1 >/dev/null; then buf breaking --against '$(BREAKING_AGAINST)'; else echo "buf breaking: no previous commit to compare with"; fi
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	staticcheck ./...
	staticcheck -tags benchfloor ./service/rewrite/
	go mod tidy -diff

# Regenerating the committed Go code from the proto must change nothing.
proto-check:
	buf generate
	git diff --exit-code -- proto/

vet:
	go vet ./...
	go vet -tags benchfloor ./service/rewrite/

unit:
	go test -race -count=1 ./...

e2e:
	./scripts/e2e-grpcurl.sh

# The alert rules' syntax and unit tests (promtool ships in Debian's
# prometheus package; .ci/run installs it).
monitoring-check:
	@if command -v promtool >/dev/null; then \
		promtool check rules deploy/monitoring/rewrited-alerts.yaml && \
		cd deploy/monitoring && promtool test rules rewrited-alerts_test.yaml; \
	else \
		echo "monitoring-check: SKIPPED, promtool not found (apt-get install prometheus)"; \
	fi

# Every fuzz target in the module for FUZZTIME each, one at a time (see
# docs/reliability.md to fuzz longer).
FUZZTIME ?= 5s
fuzz-smoke:
	go run ./test/reliability/cmd/report -fuzz-only -fuzztime $(FUZZTIME)

# Rerun the reliability suite and fuzzers and regenerate the tables in
# docs/reliability.md.
reliability-report:
	go run ./test/reliability/cmd/report -fuzztime $(FUZZTIME)

# The load generator against a real `rewrited serve` (not part of `make
# test`; see BENCHMARKS.md). BENCH_FLAGS='-mode memory' or '-mode profile'
# for the other measurements.
bench:
	go run ./bench $(BENCH_FLAGS)

IMAGE_TAG ?= dev
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

# FROM scratch images need static binaries: build them into the image build
# context (bin/image/), then rewrited:$(IMAGE_TAG), rewrited-frontend:$(IMAGE_TAG)
# and rewrited-proxy:$(IMAGE_TAG).
images:
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w -X main.version=$(VERSION)' -o bin/image/rewrited ./cmd/rewrited
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o bin/image/smtp-frontend ./examples/smtp-frontend
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o bin/image/rewrited-proxy ./cmd/rewrited-proxy
	docker build --target rewrited -t rewrited:$(IMAGE_TAG) .
	docker build --target frontend -t rewrited-frontend:$(IMAGE_TAG) .
	docker build --target proxy -t rewrited-proxy:$(IMAGE_TAG) .
	docker image prune -f --filter label=io.rewrited.image >/dev/null

# The docker-compose fleet end to end (runs `make images` itself).
e2e-compose:
	./scripts/e2e-compose.sh
