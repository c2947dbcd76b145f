# Dangless test suites, test applications and the demo program.
# Included by the top Makefile; every variable here starts with ST_.
#
#   $(BUILD)/selftests/<suite>    one TAP suite each (listed in TEST_SUITES)
#   $(BUILD)/selftests/st-scenario[-plain], st-reclaim
#                                 little programs the suites exec
#   $(BUILD)/testapps/<app>       ordinary programs, not linked with Dangless:
#                                 run plainly and under `dangless run --`
#
# Suites link libdangless.a as a whole archive, so that every malloc-family
# symbol in them is Dangless's; they find the built artefacts through -D
# (overridable by environment variables of the same names, see st-common.h).

ST_DIR      := selftests/dangless
ST_OUT      := $(BUILD)/selftests
ST_APPS     := $(BUILD)/testapps
ST_STD_DEFS := -DST_DANGLESS_SO='"$(DANGLESS_SO)"' \
	       -DST_DANGLESS_BIN='"$(DANGLESS_BIN)"' \
	       -DST_SELFTESTS_DIR='"$(ST_OUT)"' \
	       -DST_TESTAPPS_DIR='"$(ST_APPS)"' \
	       -DST_SOURCE_DIR='"$(CURDIR)/selftests"'
# -fno-builtin: the tests mean every malloc/free they write (no pair elided)
ST_CFLAGS   := $(BASE_CFLAGS) $(CFLAGS) -pthread -fno-builtin $(ST_STD_DEFS)
ST_CXXFLAGS := -std=gnu++17 -fsized-deallocation $(OPT) -g $(WARN) -D_GNU_SOURCE \
	       -I$(CURDIR)/include $(CXXFLAGS)
ST_LINK     := -Wl,--whole-archive $(DANGLESS_A) -Wl,--no-whole-archive \
	       -lpthread -ldl
ST_HDRS     := selftests/harness.h $(ST_DIR)/st-common.h \
	       include/dangless/dangless.h selftests/selftests.mk

# Suites, in the order `make test` runs them.
ST_C_SUITES := basics uaf options concurrency reclaim limits descriptors gaps techniques preload cxx testapps fuzz real layout
ST_SUITES   := $(addprefix $(ST_OUT)/,$(ST_C_SUITES))
# Suites that only run in the QEMU rig (run-kvm-in-rig), built like the rest.
ST_RIG_SUITES := $(ST_OUT)/kvm
ST_PROGS    := $(ST_OUT)/st-scenario $(ST_OUT)/st-scenario-plain \
	       $(ST_OUT)/st-reclaim

ST_C_APPS   := hello-world memstress writev-syscall messaging fuzz-target stack-depth
ST_APP_BINS := $(addprefix $(ST_APPS)/,$(ST_C_APPS)) $(ST_APPS)/cpp-ofstream

# CPython's own regression tests on glibc and under Dangless (the quick set;
# `make test-python` runs the longer one): selftests/real/python-testsuite.
ST_PYTHON_SUITE := $(CURDIR)/selftests/real/python-testsuite
TEST_SUITES += $(ST_SUITES) $(CURDIR)/selftests/structure/run \
	       $(CURDIR)/$(ST_DIR)/run-kvm-in-rig $(CURDIR)/$(ST_DIR)/run-la57-in-rig \
	       $(CURDIR)/$(ST_DIR)/run-real-in-rig \
	       $(CURDIR)/$(ST_DIR)/run-intel-smoke $(ST_PYTHON_SUITE)
TEST_DEPS   += $(ST_SUITES) $(ST_RIG_SUITES) $(ST_PROGS) $(ST_APP_BINS)
# The allocator's own suites once more with its invariants asserted.
ifneq ($(DEBUG),1)
ST_DEBUG_SUITES := basics uaf concurrency layout
DEBUG_TEST_SUITES += $(addprefix $(BUILD)/debug/selftests/,$(ST_DEBUG_SUITES))
DEBUG_TEST_DEPS   += $(addprefix $(BUILD)/debug/selftests/,$(ST_DEBUG_SUITES)) \
		     $(BUILD)/debug/selftests/st-scenario \
		     $(BUILD)/debug/selftests/st-scenario-plain \
		     $(addprefix $(BUILD)/debug/testapps/,$(ST_C_APPS))
endif
DEMO_DEPS   += $(ST_APPS)/messaging

.PHONY: selftests testapps
selftests: $(ST_SUITES) $(ST_RIG_SUITES) $(ST_PROGS) $(ST_APP_BINS)
testapps: $(ST_APP_BINS)

$(ST_OUT) $(ST_APPS):
	mkdir -p $@

# plain C suites
$(filter-out $(ST_OUT)/cxx,$(ST_SUITES) $(ST_RIG_SUITES)): $(ST_OUT)/%: $(ST_DIR)/%.c \
		$(ST_HDRS) $(DANGLESS_A) | $(ST_OUT)
	$(CC) $(ST_CFLAGS) -o $@ $< $(ST_LINK)

# the C++ suite: harness in C, objects in C++, linked by the C++ driver
$(ST_OUT)/cxx.o: $(ST_DIR)/cxx.c $(ST_HDRS) | $(ST_OUT)
	$(CC) $(ST_CFLAGS) -c -o $@ $<
$(ST_OUT)/cxx-objects.o: $(ST_DIR)/cxx-objects.cpp \
		include/dangless/dangless.h selftests/selftests.mk | $(ST_OUT)
	$(CXX) $(ST_CXXFLAGS) -c -o $@ $<
$(ST_OUT)/cxx: $(ST_OUT)/cxx.o $(ST_OUT)/cxx-objects.o $(DANGLESS_A)
	$(CXX) -pthread -o $@ $(ST_OUT)/cxx.o $(ST_OUT)/cxx-objects.o \
		$(ST_LINK)

# the scenario program, with Dangless linked in and without
$(ST_OUT)/st-scenario: $(ST_DIR)/scenario.c $(ST_HDRS) $(DANGLESS_A) \
		| $(ST_OUT)
	$(CC) $(ST_CFLAGS) -o $@ $< $(ST_LINK)
# the reclaim suite's programs, each run under its own DANGLESS_OPTIONS
$(ST_OUT)/st-reclaim: $(ST_DIR)/reclaim-child.c $(ST_HDRS) $(DANGLESS_A) \
		| $(ST_OUT)
	$(CC) $(ST_CFLAGS) -o $@ $< $(ST_LINK)
$(ST_OUT)/st-scenario-plain: $(ST_DIR)/scenario.c $(ST_HDRS) | $(ST_OUT)
	$(CC) $(ST_CFLAGS) -o $@ $< -ldl

# test applications: ordinary programs, nothing of Dangless in them
# (-rdynamic only so that reports can name their functions)
$(addprefix $(ST_APPS)/,$(ST_C_APPS)): $(ST_APPS)/%: selftests/testapps/%.c \
		selftests/selftests.mk | $(ST_APPS)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -rdynamic -o $@ $<
$(ST_APPS)/cpp-ofstream: selftests/testapps/cpp-ofstream.cpp \
		selftests/selftests.mk | $(ST_APPS)
	$(CXX) $(ST_CXXFLAGS) -o $@ $<
