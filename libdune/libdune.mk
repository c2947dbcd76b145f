# libdune: process virtualization on /dev/kvm (see Documentation/libdune.md).
# Included by the top Makefile; every variable here starts with LIBDUNE_.

LIBDUNE_DIR     := $(CURDIR)/libdune
LIBDUNE_OUT     := $(BUILD)/libdune
LIBDUNE_A       := $(BUILD)/libdune.a
LIBDUNE_SO      := $(BUILD)/libdune.so
LIBDUNE_PRELOAD := $(BUILD)/libdune-preload.so
LIBDUNE_CFLAGS  := $(BASE_CFLAGS) $(CFLAGS) -fPIC -pthread -I$(LIBDUNE_DIR)
# Code that runs on the guest's trap and system-call paths must leave the
# interrupted code's vector registers alone.
LIBDUNE_GUEST_CFLAGS := -mgeneral-regs-only -fno-stack-protector
# Host side: the VM, vCPUs and their loop, system-call forwarding, signals.
LIBDUNE_HOST_OBJS  := $(addprefix $(LIBDUNE_OUT)/,init.o drv_kvm.o drv_dune.o \
		      memslot.o vcpu.o vcpu_run.o syscall.o signal.o probe.o fd.o \
		      error.o api.o stack.o)
# Guest side (and helpers the guest's trap path calls): LIBDUNE_GUEST_CFLAGS.
LIBDUNE_GUEST_OBJS := $(addprefix $(LIBDUNE_OUT)/,vm.o guest.o)
LIBDUNE_OBJS    := $(LIBDUNE_HOST_OBJS) $(LIBDUNE_GUEST_OBJS) $(LIBDUNE_OUT)/entry.o
LIBDUNE_HDRS    := $(LIBDUNE_DIR)/dune.h $(LIBDUNE_DIR)/internal.h $(CURDIR)/kmod/dune_abi.h

LIBDUNE_TEST_DIR := $(CURDIR)/selftests/libdune
LIBDUNE_TESTS   := $(LIBDUNE_OUT)/dune_test $(LIBDUNE_OUT)/hello \
		   $(LIBDUNE_OUT)/dune_bench $(LIBDUNE_PRELOAD)

.PHONY: libdune bench-libdune
all: $(LIBDUNE_A) $(LIBDUNE_SO) $(LIBDUNE_PRELOAD)
libdune: $(LIBDUNE_A) $(LIBDUNE_SO) $(LIBDUNE_PRELOAD)

$(LIBDUNE_HOST_OBJS): $(LIBDUNE_OUT)/%.o: $(LIBDUNE_DIR)/%.c $(LIBDUNE_HDRS)
	@mkdir -p $(@D)
	$(CC) $(LIBDUNE_CFLAGS) -c -o $@ $<

$(LIBDUNE_GUEST_OBJS): $(LIBDUNE_OUT)/%.o: $(LIBDUNE_DIR)/%.c $(LIBDUNE_HDRS)
	@mkdir -p $(@D)
	$(CC) $(LIBDUNE_CFLAGS) $(LIBDUNE_GUEST_CFLAGS) -c -o $@ $<

$(LIBDUNE_OUT)/entry.o: $(LIBDUNE_DIR)/entry.S
	@mkdir -p $(@D)
	$(CC) $(LIBDUNE_CFLAGS) -c -o $@ $<

$(LIBDUNE_A): $(LIBDUNE_OBJS)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $^

$(LIBDUNE_SO): $(LIBDUNE_OBJS)
	@mkdir -p $(@D)
	$(CC) -shared -pthread -Wl,-soname,libdune.so.0 -o $@ $^

$(LIBDUNE_OUT)/preload.o: $(LIBDUNE_DIR)/preload.c $(LIBDUNE_HDRS)
	@mkdir -p $(@D)
	$(CC) $(LIBDUNE_CFLAGS) -c -o $@ $<

# LD_PRELOAD=libdune-preload.so PROGRAM: PROGRAM runs entered from its start.
$(LIBDUNE_PRELOAD): $(LIBDUNE_OUT)/preload.o $(LIBDUNE_OBJS)
	$(CC) -shared -pthread -Wl,-soname,libdune-preload.so -o $@ $^

# ---- make install: next to libdangless (LIBDIR, INCDIR: tools/tools.mk) ----
define LIBDUNE_PC
prefix=$(PREFIX)
libdir=$(LIBDIR)
includedir=$(INCDIR)

Name: libdune
Description: process virtualization on /dev/kvm or dune.ko's /dev/dune
Version: $(VERSION)
Cflags: -I$${includedir}
Libs: -L$${libdir} -Wl,-rpath,$${libdir} -ldune -pthread
endef
export LIBDUNE_PC

.PHONY: install-libdune
install: install-libdune
install-libdune: $(LIBDUNE_A) $(LIBDUNE_SO) $(LIBDUNE_PRELOAD)
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCDIR)
	install -m 755 $(LIBDUNE_SO) $(DESTDIR)$(LIBDIR)/libdune.so.0
	ln -sf libdune.so.0 $(DESTDIR)$(LIBDIR)/libdune.so
	install -m 755 $(LIBDUNE_PRELOAD) $(DESTDIR)$(LIBDIR)/
	install -m 644 $(LIBDUNE_A) $(DESTDIR)$(LIBDIR)/
	install -m 644 $(LIBDUNE_DIR)/dune.h $(DESTDIR)$(INCDIR)/
	printf '%s\n' "$$LIBDUNE_PC" > $(DESTDIR)$(LIBDIR)/pkgconfig/libdune.pc

.PHONY: uninstall-libdune
uninstall: uninstall-libdune
uninstall-libdune:
	rm -f $(addprefix $(DESTDIR)$(LIBDIR)/,libdune.so.0 $(notdir $(LIBDUNE_SO) $(LIBDUNE_PRELOAD) $(LIBDUNE_A))) \
		$(DESTDIR)$(INCDIR)/dune.h $(DESTDIR)$(LIBDIR)/pkgconfig/libdune.pc

# ---- tests (run inside the QEMU rig: selftests/libdune/run-in-rig) ----
$(LIBDUNE_OUT)/dune_test: $(LIBDUNE_TEST_DIR)/dune_test.c $(LIBDUNE_A) $(CURDIR)/selftests/harness.h $(LIBDUNE_HDRS)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -pthread -I$(LIBDUNE_DIR) -I$(CURDIR)/selftests -o $@ $< $(LIBDUNE_A)

$(LIBDUNE_OUT)/hello: $(LIBDUNE_TEST_DIR)/hello.c
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -o $@ $<

$(LIBDUNE_OUT)/dune_bench: $(LIBDUNE_DIR)/bench/dune_bench.c $(LIBDUNE_A) $(LIBDUNE_HDRS)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -pthread -I$(LIBDUNE_DIR) -o $@ $< $(LIBDUNE_A)

TEST_SUITES += $(LIBDUNE_TEST_DIR)/run-in-rig
TEST_DEPS   += $(LIBDUNE_A) $(LIBDUNE_SO) $(LIBDUNE_TESTS)

# ---- measurements in the rig (make bench) ----
BENCH_TARGETS += bench-libdune
bench-libdune: $(LIBDUNE_OUT)/dune_bench
	@echo "# libdune in the QEMU rig (nested SVM under TCG: compare ratios, not absolutes)"
	@$(CURDIR)/tools/vmrun -t 600 -- $(LIBDUNE_OUT)/dune_bench || \
		echo "# bench-libdune: FAILED (exit $$?; the rig needs qemu-system-x86 and the Debian archive)"
