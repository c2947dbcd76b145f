# bench/ room: the benchmark suite.  `make bench` builds the workloads into
# $(BUILD)/bench/ and runs bench/harness.py, which writes bench/results/.
#   make bench QUICK=1       quick mode (or BENCH_QUICK=1): a few minutes
#   BENCH_ARGS="--only churn,pair --alloc jemalloc,dangless-strict"
# Nothing here runs in `make test` or CI.

BENCH_DIR       := $(CURDIR)/bench
BENCH_OUT       := $(BUILD)/bench
BENCH_WORKLOADS := churn churn_scattered larson xmalloc bintree realloc large large_pair \
		   longlived threads pair floor spawn forkheap afl_target
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

# The harness preloads $(DANGLESS_SO) and runs the workloads and the launcher,
# so it waits for them (else `make -j bench` reports Dangless "not built").
# It also waits for the rest of `all`: nothing may compile while it times.
bench-run: $(BENCH_BINS) $(DANGLESS_SO) | all
	$(BENCH_PYTHON) $(BENCH_DIR)/harness.py --build $(BUILD) $(if $(filter 1 yes,$(BENCH_QUICK)),--quick) $(BENCH_ARGS)

# When one make runs both the timing runs and the rig's measurements
# (bench-libdune boots QEMU, which takes both cores for minutes), the rig
# starts only after the harness is done, and its program is built before the
# harness starts.  Asked for alone, either one runs alone.
ifneq ($(filter bench-libdune,$(BENCH_TARGETS)),)
bench_runs_both := $(or $(filter bench,$(MAKECMDGOALS)),$(and $(filter bench-run,$(MAKECMDGOALS)),$(filter bench-libdune,$(MAKECMDGOALS))))
ifneq ($(bench_runs_both),)
bench-run: | $(LIBDUNE_OUT)/dune_bench
bench-libdune: | bench-run
endif
endif
