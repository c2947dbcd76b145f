# The x86-64 system-call table for the kvm backend's pointer fix-ups
# (libdune/syscall_args.[ch], generated; see tools/gen-syscalls).
# Included by the top Makefile; every variable here starts with SC_.
#
#   make syscalls-gen   regenerate it from Debian's newest kernel headers
#                       packages (downloads them into build/syscalls-gen;
#                       SYSCALLS_PACKAGE=linux-headers-...-amd64 picks one).
#                       Not part of make test.
#   make test           runs selftests/syscalls/syscall_args against it

SC_OUT     := $(BUILD)/selftests
SC_SUITE   := $(SC_OUT)/syscall_args
SC_NUMBERS := $(SC_OUT)/syscall-numbers.h
# the build machine's own list of system-call numbers
SC_UNISTD  := $(wildcard /usr/include/*/asm/unistd_64.h /usr/include/asm/unistd_64.h)

TEST_SUITES += $(SC_SUITE)
TEST_DEPS   += $(SC_SUITE)

.PHONY: syscalls-gen
syscalls-gen:
	tools/gen-syscalls $(if $(SYSCALLS_PACKAGE),--package $(SYSCALLS_PACKAGE))

$(SC_NUMBERS): $(SC_UNISTD) tools/syscalls/syscalls.mk
	@mkdir -p $(@D)
	echo '#include <asm/unistd_64.h>' | $(CC) -dM -E -x c - | \
		sed -n 's/^#define __NR_\([a-z0-9_]*\) .*/SC_NR(\1)/p' | \
		grep -v '^SC_NR(syscalls)$$' | sort > $@.tmp
	@test -s $@.tmp || { echo "$@: no __NR_ in <asm/unistd_64.h>" >&2; exit 1; }
	mv $@.tmp $@

$(SC_SUITE): selftests/syscalls/syscall_args.c libdune/syscall_args.c \
		libdune/syscall_args.h selftests/harness.h $(SC_NUMBERS)
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -Ilibdune -Iselftests -I$(SC_OUT) \
		-o $@ selftests/syscalls/syscall_args.c libdune/syscall_args.c
