# Dangless top-level build.  Each room adds its own fragment (*.mk) and
# appends to TEST_SUITES / TEST_DEPS / BENCH_TARGETS / DEMO_DEPS.
#
# make expands a rule's prerequisites as it reads the rule, so a rule written
# before the last fragment is included sees a list without that fragment's
# part (`make demo` once ran a program it had not built).  Hence fragments
# only append to these lists, and every rule that uses them comes after all
# the includes, at the end of this file.
#
#   make            libdangless.so, libdangless.a, the dangless command
#   make demo       a dangling pointer caught, with its report
#   make test       the whole suite (what .ci/run calls)
#   make test-kernels  dune.ko's suites on Debian's 6.12 kernel (not in make test)
#   make test-dkms  dune.ko built by dkms for the 6.1 and 6.12 rigs, loaded
#                   there, libdune's smoke over /dev/dune (not in make test)
#   make test-python   CPython's regression tests, the longer list (make test
#                   runs a quick one), on glibc and under Dangless
#   make test-kvm-real real programs in the guest under kvm and dune (issue 18; long)
#   make test-reclaim  alias-space reclaim under kvm and dune, and on 6.1's host
#                   backend, in the QEMU rig (issue 21; ~2 minutes, not in make test)
#   make test-threads  the 8-thread churns under kvm and dune (and by IPI over dune.ko),
#                   two vCPUs, in the QEMU rig (issue 20; 11-25 minutes, not in make test)
#   make test-intel    libdune's suite and backend=kvm on Intel VT-x, in the Bochs rig,
#                      and dune.ko's VT-x half (kmod_test, libdune, backend=dune)
#                      (make test runs one short boot of it)
#   make deb        Debian packages in build/deb (debian/, dpkg-buildpackage)
#   make test-deb   make deb, then installs them with apt, runs the demo from
#                   the installed files and purges them (root; CI runs it)
#   make bench      benchmarks side by side (bench/results/)
#   make man        the man pages, in build/man (Documentation/man)
#   make install    PREFIX=/usr/local DESTDIR=
#   make uninstall  removes what make install put there (the same PREFIX and
#                   DESTDIR), then dangless-setup --remove without DESTDIR
#   make DEBUG=1 …  the same with the allocator's invariants asserted, built
#                   in build/debug

VERSION     := 0.1.0
PREFIX      ?= /usr/local
DESTDIR     ?=
BUILD       := $(CURDIR)/build
CC          ?= cc
CXX         ?= c++
OPT         ?= -O2
WARN        := -Wall -Wextra -Werror
BASE_CFLAGS := -std=gnu11 $(OPT) -g $(WARN) -D_GNU_SOURCE -I$(CURDIR)/include
CFLAGS      ?=
DEBUG       ?= 0
ifeq ($(DEBUG),1)
override BUILD := $(BUILD)/debug
BASE_CFLAGS += -DDL_DEBUG
endif
export CC CXX

DANGLESS_SO  := $(BUILD)/libdangless.so
DANGLESS_A   := $(BUILD)/libdangless.a
DANGLESS_BIN := $(BUILD)/dangless

TEST_SUITES   :=
TEST_DEPS     :=
# suites that make test runs a second time against the DEBUG=1 build
DEBUG_TEST_SUITES :=
DEBUG_TEST_DEPS   :=
BENCH_TARGETS :=
DEMO_DEPS     :=

.PHONY: all deps test test-dune test-kernels test-dkms test-python test-kvm-real test-la57 test-reclaim test-threads \
	test-intel demo bench install uninstall deb test-deb clean
all: $(DANGLESS_SO) $(DANGLESS_A) $(DANGLESS_BIN)

# libdune first: libdangless (the kvm backend) links its objects.
include libdune/libdune.mk
include libdangless/libdangless.mk
include tools/tools.mk
-include selftests/selftests.mk
-include kmod/kmod.mk
-include tools/syscalls/syscalls.mk
-include selftests/kvmfixup/kvmfixup.mk
-include bench/bench.mk
-include selftests/packaging/packaging.mk
-include Documentation/man/man.mk

# The suites need packages a fresh machine lacks (sqlite3, qemu, ...):
# tools/install-deps installs them as root, or says what to run.
deps:
	@tools/install-deps

# ---- rules over the lists the fragments append to: keep them last ----

# The demo: the thesis's messaging example, first on glibc, then on Dangless.
demo: all $(DEMO_DEPS)
	@tools/demo $(BUILD)

test: deps
	@$(MAKE) --no-print-directory all $(TEST_DEPS)
	@$(MAKE) --no-print-directory DEBUG=1 all $(DEBUG_TEST_DEPS)
	@BUILD=$(BUILD) selftests/run-suites $(TEST_SUITES) $(DEBUG_TEST_SUITES)

# dune.ko's rig runner with the boot make test leaves out for time:
# libdune's suite and Dangless over /dev/dune once more, with one CPU.
test-dune: deps
	@$(MAKE) --no-print-directory all $(TEST_DEPS)
	@BUILD=$(BUILD) DUNE_FULL=1 selftests/kmod/run-in-rig

# dune.ko on Debian's 6.12 kernel too (make test covers 6.1): built for it,
# then kmod_test and libdune's suite over /dev/dune in its rig, on one and
# two CPUs (selftests/kmod/run-kernels; KMOD_KERNELS in kmod/kmod.mk).
test-kernels: deps
	@$(MAKE) --no-print-directory all $(TEST_DEPS) $(KMOD_KERNEL_KOS)
	@BUILD=$(BUILD) selftests/kmod/run-kernels $(KMOD_KERNELS)

# dune.ko through DKMS (kmod/dkms.conf): dkms builds it against the 6.1 and
# 6.12 rig kernels' headers, then each rig loads the dkms-built module and
# runs libdune's smoke over /dev/dune (selftests/kmod/run-dkms; two boots).
test-dkms: deps
	@$(MAKE) --no-print-directory all $(TEST_DEPS)
	@BUILD=$(BUILD) selftests/kmod/run-dkms 6.1 $(KMOD_KERNELS)

# CPython's regression tests: make test's quick set and the longer list,
# each module on glibc and under Dangless (selftests/real/python-testsuite).
test-python: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) $(ST_PYTHON_SUITE) --long

# 5-level paging (issue 21): one rig boot with LA57 on its CPU, libdune's
# 5-level tests and Dangless's backend=kvm with its 57-bit alias space
# (selftests/dangless/run-la57-in-rig; ~6.5 minutes, kept out of make test
# for CI's time).
test-la57: deps
	@$(MAKE) --no-print-directory all $(TEST_DEPS)
	@BUILD=$(BUILD) selftests/run-suites selftests/dangless/run-la57-in-rig

# Alias-space reclaim (issue 21) in the QEMU rig: the reclaim suite under
# backend=kvm and backend=dune with two vCPUs, then the host backend's
# cases on 6.1 (mprotect revocation); selftests/dangless/run-reclaim-in-rig,
# ~2 minutes on a quiet machine, kept out of make test for CI's time.
test-reclaim: deps
	@$(MAKE) --no-print-directory all $(TEST_DEPS)
	@BUILD=$(BUILD) selftests/run-suites selftests/dangless/run-reclaim-in-rig

# The concurrency suite's 8-thread churns (issue 20) in the QEMU rig with two
# vCPUs: under backend=kvm with their batch and stacks reruns, then under
# backend=dune; selftests/dangless/run-threads-in-rig, 10-20 minutes on a
# quiet machine, kept out of make test for CI's time.
test-threads: deps
	@$(MAKE) --no-print-directory all $(TEST_DEPS)
	@BUILD=$(BUILD) selftests/run-suites selftests/dangless/run-threads-in-rig

# Issue 18's real programs in the rig (gcc on the 3000-function file, g++,
# python3, perl, lua, sqlite3, redis, xz, make, git): glibc, libdune-preload,
# backend=kvm and backend=dune, outputs compared (make test runs a few;
# REAL_MODES="preload kvm" leaves dune out)
test-kvm-real: deps
	@$(MAKE) --no-print-directory all $(TEST_DEPS)
	@BUILD=$(BUILD) selftests/dangless/run-real-in-rig --big

# Over kvm_intel, in the Bochs rig (tools/vmrun --intel): libdune's suite,
# one boot with one CPU and one with two (INTEL_SMP="1 2"), then Dangless's
# backend=kvm suites in a boot with one CPU; then dune.ko's VT-x half:
# kmod_test, and libdune's suite with Dangless's backend=dune over
# /dev/dune, with one CPU and with two; see README, "Tests".
test-intel: deps
	@$(MAKE) --no-print-directory all $(TEST_DEPS)
	@BUILD=$(BUILD) selftests/run-suites selftests/libdune/run-in-intel-rig \
		selftests/dangless/run-kvm-in-intel-rig selftests/kmod/run-in-intel-rig

# Debian packages (debian/): dangless, libdangless-dev, libdune0,
# libdune-dev, dune-dkms, built by debhelper from a copy of the tree in
# build/deb/src (so that the build leaves the tree alone); the .debs land in
# build/deb.  selftests/packaging/deb-roundtrip installs and purges them.
DEB_OUT := $(BUILD)/deb
deb:
	@command -v dpkg-buildpackage >/dev/null && command -v dh >/dev/null || \
		{ echo "make deb: needs dpkg-dev and debhelper (apt-get install dpkg-dev debhelper dh-dkms scdoc)" >&2; exit 1; }
	rm -rf $(DEB_OUT) && mkdir -p $(DEB_OUT)/src
	tar -C $(CURDIR) --exclude=./build --exclude='./build-*' --exclude=./.git \
		--exclude=./debian/build --exclude=./debian/tmp -cf - . | tar -C $(DEB_OUT)/src -xf -
	cd $(DEB_OUT)/src && dpkg-buildpackage -b -us -uc >$(DEB_OUT)/build.log 2>&1 || \
		{ tail -n 40 $(DEB_OUT)/build.log >&2; echo "make deb: dpkg-buildpackage failed (whole log: $(DEB_OUT)/build.log)" >&2; exit 1; }
	@ls $(DEB_OUT)/*.deb

# the packages installed with apt, the demo from the installed files, purged
# leaving nothing (as root; CI runs it after make test)
test-deb: deb
	@BUILD=$(BUILD) selftests/packaging/deb-roundtrip $(DEB_OUT)

bench: all $(BENCH_TARGETS)

clean:
	rm -rf $(BUILD)
