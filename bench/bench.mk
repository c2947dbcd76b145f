# bench/ room: the benchmark suite.  `make bench` builds the workloads into
# $(BUILD)/bench/ and runs bench/harness.py, which writes bench/results/.
#   make bench QUICK=1       quick mode (or BENCH_QUICK=1): a few minutes
#   BENCH_ARGS="--only churn,pair --alloc jemalloc,dangless-strict"
# Nothing here runs in `make test` or CI.

BENCH_DIR       := $(CURDIR)/bench
BENCH_OUT       := $(BUILD)/bench
BENCH_WORKLOADS := churn churn_scattered larson xmalloc bintree realloc large large_pair \
		   longlived threads pair floor spawn forkheap afl_target sweep
BENCH_BINS      := $(addprefix $(BENCH_OUT)/,$(BENCH_WORKLOADS))
# -fno-builtin-*: the compiler must not fold a malloc+free pair away
BENCH_CFLAGS    := $(BASE_CFLAGS) -fno-builtin-malloc -fno-builtin-free -fno-builtin-realloc -pthread $(CFLAGS)
BENCH_QUICK     ?= $(QUICK)
BENCH_PYTHON    ?= /usr/bin/python3
BENCH_ARGS      ?=

BENCH_TARGETS += bench-run
# Sweeps (bench-sweep, below) are measured first in a make bench: the
# harness then shows that run in results.md and keeps it in results/.
BENCH_TARGETS += bench-sweep
ifneq ($(filter bench,$(MAKECMDGOALS)),)
bench-run: | bench-sweep
endif

.PHONY: bench-build bench-run
bench-build: $(BENCH_BINS)

# dangless.h: workloads read dangless_stats(), whose struct grows with new counters
$(BENCH_OUT)/%: $(BENCH_DIR)/workloads/%.c $(BENCH_DIR)/workloads/common.h $(CURDIR)/include/dangless/dangless.h
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

# ---- glibc, Dangless host and Dangless kvm side by side in the QEMU rig ----
# make bench-kvm: a boot of the rig (tools/vmrun) with one vCPU, where
# bench/kvm_rig.py runs build/bench/steady under each allocator and prints
# ratios and the counters per 1000 operations (bench/results/notes.md: what
# they showed), then make bench's real programs under the same three
# (build/bench/spawn launches them), wall-time ratios; then a boot with two
# vCPUs for build/bench/threads by thread count, shootdowns by signal and by
# IPI, over /dev/kvm and over dune.ko (loaded in that boot; issue 20: with
# one vCPU no free() finds another thread running).
# The kvm runs count what the backend did; with glibc's times measured
# outside the rig first (bench-kvm-model, below), kvm_rig.py prints the
# hardware model of issue 20, item 5 from them.
# The output is kept in $(BENCH_OUT)/kvm-rig.md.  BENCH_KVM_ARGS="--rounds 5"
BENCH_KVM_ARGS ?=
BENCH_KVM_SCALE ?= 0.1
BENCH_TARGETS += bench-kvm
.PHONY: bench-kvm
bench-kvm: bench-kvm-model $(BENCH_OUT)/steady $(BENCH_OUT)/threads $(BENCH_OUT)/spawn $(DANGLESS_SO) \
		$(KMOD_RIG_KO) $(KMOD_OUT)/dune_load | all
	@echo "# glibc, Dangless host and kvm in the QEMU rig (TCG: compare ratios, not absolutes)"
	@$(CURDIR)/tools/vmrun -t 2700 -- $(BENCH_PYTHON) $(BENCH_DIR)/kvm_rig.py --build $(BUILD) \
		--no-threads --real-scale $(BENCH_KVM_SCALE) --native $(BENCH_OUT)/kvm-native.json \
		$(BENCH_KVM_ARGS) 2>&1 | tee $(BENCH_OUT)/kvm-rig.md; \
	grep -q '^## Targets' $(BENCH_OUT)/kvm-rig.md || \
		echo "# bench-kvm: FAILED (see above; the rig needs qemu-system-x86 and the Debian archive)"
ifeq ($(findstring --no-threads,$(BENCH_KVM_ARGS)),)
	@VMRUN_SMP=2 $(CURDIR)/tools/vmrun -t 3600 -- $(BENCH_PYTHON) $(BENCH_DIR)/kvm_rig.py \
		--build $(BUILD) --no-steady --no-real --dune-ko $(KMOD_RIG_KO) $(BENCH_KVM_ARGS) 2>&1 | \
		tee $(BENCH_OUT)/kvm-rig-threads.md; \
	cat $(BENCH_OUT)/kvm-rig-threads.md >> $(BENCH_OUT)/kvm-rig.md; \
	grep -q '^## Threads' $(BENCH_OUT)/kvm-rig-threads.md || \
		echo "# bench-kvm: the two-vCPU boot for the threads FAILED (see above)"
endif

# make bench-kvm-model: the real programs under glibc and host on this
# machine (bench/kvm_model.py, ~1 minute), written to kvm-native.json for
# bench-kvm's model.  On a machine with hardware virtualisation the kvm runs
# happen here too, and it prints the model beside kvm's measured times.
.PHONY: bench-kvm-model
bench-kvm-model: $(BENCH_OUT)/spawn $(DANGLESS_SO) | all
	$(BENCH_PYTHON) $(BENCH_DIR)/kvm_model.py --build $(BUILD) --scale $(BENCH_KVM_SCALE) \
		--out $(BENCH_OUT)/kvm-native.json

# The rig takes both cores for minutes: when one make also runs the timing
# harness or another rig measurement, bench-kvm starts after them, and its
# program is built before the harness starts timing.
bench_kvm_others := $(filter-out bench-kvm,$(BENCH_TARGETS))
bench_kvm_after := $(if $(filter bench,$(MAKECMDGOALS)),$(bench_kvm_others),$(if $(filter bench-kvm,$(MAKECMDGOALS)),$(filter $(bench_kvm_others),$(MAKECMDGOALS))))
ifneq ($(bench_kvm_after),)
bench-kvm: | $(bench_kvm_after)
bench-kvm-model: | $(bench_kvm_after)
bench-run: | $(BENCH_OUT)/steady
endif

# ---- what a reclaim sweep costs (issue 21) ----
# make bench-sweep: bench/sweep.sh runs build/bench/sweep under Dangless
# (per GiB scanned, per stopped thread, with and without alias_space=64M)
# and writes $(BENCH_OUT)/sweep.md, which the next harness run shows in
# results.md and keeps as bench/results/sweep.md.  QUICK=1: smaller sizes.
.PHONY: bench-sweep
bench-sweep: $(BENCH_OUT)/sweep $(DANGLESS_SO) | all
	QUICK=$(if $(filter 1 yes,$(BENCH_QUICK)),1,0) $(BENCH_DIR)/sweep.sh $(BUILD) | tee $(BENCH_OUT)/sweep.md
