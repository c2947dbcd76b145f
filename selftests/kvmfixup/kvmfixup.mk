# The kvm backend's system-call fix-ups, unit-tested on the host (no rig):
# libdangless/backend/kvm/fixup*.c against a fake alias space, each call
# then made for real.  Included by the top Makefile; variables start with
# KVMFIXUP_.
KVMFIXUP_SUITE := $(BUILD)/selftests/kvmfixup
KVMFIXUP_SRCS  := selftests/kvmfixup/kvmfixup.c \
		  libdangless/backend/kvm/fixup.c \
		  libdangless/backend/kvm/fixup_buf.c \
		  libdangless/backend/kvm/fixup_nested.c \
		  libdangless/backend/kvm/fixup_struct.c \
		  libdangless/backend/kvm/fixup_cmd.c libdune/syscall_args.c

TEST_SUITES += $(KVMFIXUP_SUITE)
TEST_DEPS   += $(KVMFIXUP_SUITE)

$(KVMFIXUP_SUITE): $(KVMFIXUP_SRCS) libdangless/backend/kvm/fixup.h \
		libdangless/backend/kvm/fixup_shared.h \
		libdune/syscall_args.h libdune/dune.h selftests/harness.h \
		selftests/kvmfixup/kvmfixup.mk
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -pthread -Ilibdangless/backend/kvm \
		-Ilibdune -Iselftests -o $@ $(KVMFIXUP_SRCS)
