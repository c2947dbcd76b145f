# dune.ko (kmod/) and its suite.  Included by the top Makefile; every
# variable here starts with KMOD_.  See README.md, section "dune.ko".
#
#   make test-kernels  dune.ko for the 6.12 rig (build/kmod/rig-6.12/dune.ko)
#                  and its suites there (top Makefile)
#   make kmod      dune.ko for the QEMU rig's kernel (build/kmod/rig/dune.ko:
#                  its Debian headers are downloaded into build/kmod/headers
#                  the first time, nothing is installed), and for the running
#                  kernel too where its headers are installed
#                  (build/kmod/host/dune.ko)
#   make install   also installs the udev rule for /dev/dune, the module's
#                  source with its dkms.conf, and the module through dkms
#                  where dkms is installed (else where the running kernel's
#                  headers are installed); then, without DESTDIR, loads it and gives
#                  /dev/dune to group dune (tools/dangless-setup --install:
#                  one line saying why not where it cannot)
#   make uninstall removes them again and runs dangless-setup --remove

KMOD_DIR      := $(CURDIR)/kmod
KMOD_OUT      := $(BUILD)/kmod
KMOD_SRCS     := $(addprefix $(KMOD_DIR)/,Kbuild dune_abi.h dune_internal.h \
		 main.c svm.c npt.c syscall.c ipi.c svm_run.S vmx.c vmx_run.S)
KMOD_RIG_KO   := $(KMOD_OUT)/rig/dune.ko
KMOD_HOST_KV  := $(shell uname -r)
KMOD_HOST_KDIR := /lib/modules/$(KMOD_HOST_KV)/build
KMOD_HOST_KO  := $(KMOD_OUT)/host/dune.ko
KMOD_HAVE_HOST_HEADERS := $(wildcard $(KMOD_HOST_KDIR)/Makefile)
KMOD_TEST     := $(KMOD_OUT)/kmod_test
KMOD_TEST_DIR := $(CURDIR)/selftests/kmod

.PHONY: kmod install-kmod
kmod: $(KMOD_RIG_KO) $(if $(KMOD_HAVE_HOST_HEADERS),$(KMOD_HOST_KO))

$(KMOD_RIG_KO): $(KMOD_SRCS) $(KMOD_DIR)/fetch-headers $(KMOD_DIR)/build-module \
		$(CURDIR)/tools/rig/build $(CURDIR)/tools/rig/init
	@kdir=$$(RIG_KERNEL=6.1 $(KMOD_DIR)/fetch-headers $(KMOD_OUT)/headers) && \
		$(KMOD_DIR)/build-module "$$kdir" $(@D)

# dune.ko for the other kernels make test-kernels tests (build/kmod/rig-SERIES/
# dune.ko, for the rig RIG_KERNEL=SERIES; headers downloaded as for 6.1)
KMOD_KERNELS  := 6.12
KMOD_KERNEL_KOS := $(foreach k,$(KMOD_KERNELS),$(KMOD_OUT)/rig-$(k)/dune.ko)
$(KMOD_OUT)/rig-%/dune.ko: $(KMOD_SRCS) $(KMOD_DIR)/fetch-headers $(KMOD_DIR)/build-module \
		$(CURDIR)/tools/rig/build $(CURDIR)/tools/rig/init
	@kdir=$$(RIG_KERNEL=$* $(KMOD_DIR)/fetch-headers $(KMOD_OUT)/headers) && \
		$(KMOD_DIR)/build-module "$$kdir" $(@D)

$(KMOD_HOST_KO): $(KMOD_SRCS) $(KMOD_DIR)/build-module
	@$(KMOD_DIR)/build-module $(KMOD_HOST_KDIR) $(@D)

$(KMOD_TEST): $(KMOD_TEST_DIR)/kmod_test.c $(KMOD_TEST_DIR)/guest.S \
		$(KMOD_DIR)/dune_abi.h $(CURDIR)/selftests/harness.h
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -pthread -I$(CURDIR)/selftests -o $@ \
		$(KMOD_TEST_DIR)/kmod_test.c $(KMOD_TEST_DIR)/guest.S

# the two-CPU stress without libdune (selftests/kmod/repro-triple-fault)
$(KMOD_OUT)/smp_stress: $(KMOD_TEST_DIR)/smp_stress.c $(KMOD_TEST_DIR)/smp_guest.S \
		$(KMOD_DIR)/dune_abi.h
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -pthread -o $@ $(KMOD_TEST_DIR)/smp_stress.c \
		$(KMOD_TEST_DIR)/smp_guest.S

$(KMOD_OUT)/dune_load: $(KMOD_TEST_DIR)/dune_load.c
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -o $@ $<

# getpid() over /dev/kvm against /dev/dune, in the rig with dune.ko loaded
BENCH_TARGETS += bench-dune
.PHONY: bench-dune
bench-dune: $(KMOD_RIG_KO) $(KMOD_OUT)/dune_load $(BUILD)/libdune/dune_bench
	@echo "# dune.ko against /dev/kvm in the QEMU rig (nested SVM under TCG: compare ratios, not absolutes)"
	@BUILD=$(BUILD) DUNE_KO=$(KMOD_RIG_KO) RIG_KERNEL=6.1 VMRUN_SMP=2 $(CURDIR)/tools/vmrun -t 600 -- \
		$(KMOD_DIR)/bench-in-rig || \
		echo "# bench-dune: FAILED (exit $$?; the rig needs qemu-system-x86 and the Debian archive)"

# run-in-rig also runs libdune's suite over /dev/dune (libdune.mk builds it);
# run-vmx-smoke boots the Intel (Bochs) rig once for the VT-x half
TEST_SUITES += $(KMOD_TEST_DIR)/run-in-rig $(KMOD_TEST_DIR)/run-vmx-smoke
TEST_DEPS   += $(KMOD_RIG_KO) $(KMOD_TEST) $(KMOD_OUT)/dune_load $(KMOD_OUT)/smp_stress

# The module's source with its dkms.conf in $(PREFIX)/src/dune-VERSION (the
# DKMS layout) and the udev rule for /dev/dune; then, where dkms is installed
# (and not for a DESTDIR install), the module is registered, built and
# installed through dkms (kmod/dkms-install), which rebuilds it for every
# new kernel; otherwise built for the running kernel where its headers are
# there, and said in one line.  Then the module is loaded (as root on an SVM
# CPU, never for a DESTDIR install).
# KMOD_HOST=0 leaves the module for the running kernel (and dkms) out: a
# package build (debian/rules), whose dune-dkms builds it on the target.
KMOD_HOST    ?= 1
KMOD_SRC_DIR := $(PREFIX)/src/dune-$(VERSION)
KMOD_DKMS    := $(if $(DESTDIR),,$(if $(filter 0,$(KMOD_HOST)),,$(shell command -v dkms 2>/dev/null)))
install: install-kmod
install-kmod: $(if $(KMOD_DKMS)$(filter 0,$(KMOD_HOST)),,$(if $(KMOD_HAVE_HOST_HEADERS),$(KMOD_HOST_KO)))
	install -d $(DESTDIR)$(KMOD_SRC_DIR) $(DESTDIR)/etc/udev/rules.d
	install -m 644 $(KMOD_SRCS) $(DESTDIR)$(KMOD_SRC_DIR)/
	sed 's/@VERSION@/$(VERSION)/' $(KMOD_DIR)/dkms.conf >$(DESTDIR)$(KMOD_SRC_DIR)/dkms.conf
	install -m 644 $(KMOD_DIR)/60-dune.rules $(DESTDIR)/etc/udev/rules.d/
ifneq ($(KMOD_DKMS),)
	@$(KMOD_DIR)/dkms-install add $(KMOD_SRC_DIR) $(VERSION)
else ifeq ($(KMOD_HOST),0)
	@echo "dune.ko: not built (KMOD_HOST=0): its source and dkms.conf are in $(KMOD_SRC_DIR)"
else ifneq ($(KMOD_HAVE_HOST_HEADERS),)
	install -d $(DESTDIR)/lib/modules/$(KMOD_HOST_KV)/extra
	install -m 644 $(KMOD_HOST_KO) $(DESTDIR)/lib/modules/$(KMOD_HOST_KV)/extra/
	@[ -n "$(DESTDIR)" ] || ! command -v depmod >/dev/null || depmod $(KMOD_HOST_KV)
	@echo "dune.ko: installed for $(KMOD_HOST_KV) only, not through dkms ($(if $(DESTDIR),a DESTDIR install: dkms.conf is in $(KMOD_SRC_DIR) for the target,dkms not found: apt-get install dkms and make install again to have it rebuilt for new kernels))"
else
	@echo "dune.ko: not built or installed: no headers for the running kernel $(KMOD_HOST_KV) ($(KMOD_HOST_KDIR) is missing; on Debian: apt-get install linux-headers-$(KMOD_HOST_KV)), and $(if $(DESTDIR),a DESTDIR install is not registered with dkms,no dkms to build it when they come (apt-get install dkms)); its source is in $(KMOD_SRC_DIR)"
endif
ifeq ($(DESTDIR),)
	@$(CURDIR)/tools/dangless-setup --install || \
		echo "dune.ko: installed but not loaded (see above); then: sudo dangless-setup"
else
	@echo "dune.ko: not loaded: a DESTDIR install (run dangless-setup on the target system)"
endif

# make uninstall: the dkms registration (and the modules dkms built), the
# module's source, the udev rule and the module installed for the running
# kernel; then, without DESTDIR, dangless-setup --remove unloads it and
# undoes what setup made persistent (each step said).
.PHONY: uninstall-kmod
uninstall: uninstall-kmod
uninstall-kmod:
ifneq ($(KMOD_DKMS),)
	@$(KMOD_DIR)/dkms-install remove $(VERSION)
endif
	rm -f $(addprefix $(DESTDIR)$(KMOD_SRC_DIR)/,$(notdir $(KMOD_SRCS)) dkms.conf) \
		$(DESTDIR)/etc/udev/rules.d/60-dune.rules \
		$(DESTDIR)/lib/modules/$(KMOD_HOST_KV)/extra/dune.ko
	@d=$(DESTDIR)$(KMOD_SRC_DIR); [ ! -d $$d ] || rmdir $$d 2>/dev/null || \
		echo "dune.ko: kept $$d: it holds files make install did not put there (a module built in it?)"
ifeq ($(DESTDIR),)
	@[ ! -d /lib/modules/$(KMOD_HOST_KV) ] || ! command -v depmod >/dev/null || depmod $(KMOD_HOST_KV)
	@$(CURDIR)/tools/dangless-setup --remove || \
		echo "dune.ko: files removed, but dangless-setup --remove failed (see above); then: sudo dangless-setup --remove"
else
	@echo "dune.ko: a DESTDIR uninstall: nothing unloaded (run dangless-setup --remove on the target system)"
endif
