# libdangless: the allocator core and its backends.  The kvm backend runs
# on libdune (libdune.mk, included first): its objects go into both
# libraries, hidden in the shared one.
DL_SRCS := $(wildcard libdangless/*.c) $(wildcard libdangless/backend/*.c) \
	$(wildcard libdangless/backend/*/*.c)
# the kvm backend's system-call fix-ups read libdune's generated table
DL_SRCS += libdune/syscall_args.c
# -idirafter: backends include "dune.h" and "syscall_args.h" of libdune's
DL_CFLAGS := $(BASE_CFLAGS) -fPIC -fvisibility=hidden -fno-plt \
	-ftls-model=initial-exec -pthread -idirafter $(LIBDUNE_DIR) $(CFLAGS)
DL_SO_OBJS := $(patsubst %.c,$(BUILD)/obj/so/%.o,$(DL_SRCS))
DL_A_OBJS := $(patsubst %.c,$(BUILD)/obj/a/%.o,$(DL_SRCS))

$(BUILD)/obj/so/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(DL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/a/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(DL_CFLAGS) -DDL_STATIC -MMD -MP -c $< -o $@

# -static-libgcc: the unwinder for stacks is linked in, hidden (stack.c,
# _dl_backtrace), rather than dlopened from libgcc_s by backtrace().
$(DANGLESS_SO): $(DL_SO_OBJS) $(LIBDUNE_A) libdangless/libdangless.mk
	$(CC) -shared -Wl,-soname,libdangless.so -Wl,-z,now -static-libgcc \
		-o $@ $(DL_SO_OBJS) $(LIBDUNE_A) -Wl,--exclude-libs,libdune.a \
		-Wl,--exclude-libs,libgcc_eh.a -Wl,--exclude-libs,libgcc.a \
		-pthread -ldl

# q, not r: libdune's kvm.o and the backend's kvm.o share a name.
$(DANGLESS_A): $(DL_A_OBJS) $(LIBDUNE_OBJS) libdangless/libdangless.mk
	@rm -f $@
	ar qcs $@ $(DL_A_OBJS) $(LIBDUNE_OBJS)

-include $(DL_SO_OBJS:.o=.d) $(DL_A_OBJS:.o=.d)
