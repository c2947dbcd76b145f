# bench/ room: the benchmark suite.  `make bench` builds the workloads into
# $(BUILD)/bench/ and runs bench/harness.py, which writes bench/results/.
#   make bench QUICK=1       quick mode (or BENCH_QUICK=1): a few minutes
#   BENCH_ARGS="--only churn,pair --alloc jemalloc,dangless-strict"
# Nothing here runs in `make test` or CI.

BENCH_DIR       := $(CURDIR)/bench
BENCH_OUT       := $(BUILD)/bench
BENCH_WORKLOADS := churn larson xmalloc bintree realloc large longlived pair floor spawn
BENCH_BINS      := $(addprefix $(BENCH_OUT)/,$(BENCH_WORKLOADS))
# -fno-builtin-*: the compiler must not fold a malloc+free pair away
BENCH_CFLAGS    := $(BASE_CFLAGS) -fno-builtin-malloc -fno-builtin-free -fno-builtin-realloc -pthread $(CFLAGS)
BENCH_QUICK     ?= $(QUICK)
BENCH_PYTHON    ?= /usr/bin/python3
BENCH_ARGS      ?=

BENCH_TARGETS += bench-run

.PHONY: bench-build bench-run
bench-build: $(BENCH_BINS)

$(BENCH_OUT)/%: $(BENCH_DIR)/workloads/%.c $(BENCH_DIR)/workloads/common.h
	@mkdir -p $(BENCH_OUT)
	$(CC) $(BENCH_CFLAGS) -o $@ $< -lm

bench-run: $(BENCH_BINS)
	$(BENCH_PYTHON) $(BENCH_DIR)/harness.py --build $(BUILD) $(if $(filter 1 yes,$(BENCH_QUICK)),--quick) $(BENCH_ARGS)
