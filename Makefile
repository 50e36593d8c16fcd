GO        ?= go
PKGS      ?= ./...
# Packages that move traffic or hold state are always tested under the race detector, and
# the CLI, whose live view renders while the engine steps (its process-level tests skip
# themselves under -race: their children are not race builds).
RACE_PKGS ?= $(shell $(GO) list ./traffic/... ./engine/... ./store/... ./server/... ./cmd/verdict 2>/dev/null)
BIN       ?= bin/verdict
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)

.PHONY: all build test vet fmt-check bench microbench demo fuzz clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/verdict

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go') 2>/dev/null); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# BENCH_QUICK=1 runs the benchmark harness in its one-minute mode, so it never rots.
# -p 1: the real-time tests (the fleet scenarios, the federation chain, the demos) judge
# live data with seconds-long intervals; run beside each other on a small machine, their
# scrapes time out and verdicts come from starved data, which is not what they test.
test: fmt-check vet
	BENCH_QUICK=1 $(GO) test -p 1 -count=1 -timeout 30m $(PKGS)
	@if [ -n "$(RACE_PKGS)" ]; then $(GO) test -race -count=1 -timeout 30m $(RACE_PKGS); fi

# bench writes bench/results.md, bench/results.json and the SVG charts (under 10 minutes).
bench:
	$(GO) run ./bench/cmd/verdict-bench -out bench

# microbench runs the Go benchmarks of the statistics and the weight planner.
microbench:
	$(GO) test -run '^$$' -bench . -benchmem ./analysis ./experiments ./report ./sim

# Runs the loader fuzz target for FUZZTIME (default 2m).
FUZZTIME ?= 2m
fuzz:
	$(GO) test ./experiments -run '^$$' -fuzz FuzzLoad -fuzztime $(FUZZTIME)

demo: build
	./$(BIN) demo

clean:
	rm -rf bin
