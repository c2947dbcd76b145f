# The dangless command, dangless-setup and install.  (The demo rule is in
# the top Makefile: it needs DEMO_DEPS complete.)
$(DANGLESS_BIN): tools/dangless.c include/dangless/dangless.h kmod/dune_abi.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -o $@ $< -ldl

LIBDIR ?= $(PREFIX)/lib
INCDIR ?= $(PREFIX)/include
BINDIR ?= $(PREFIX)/bin

, := ,
define DANGLESS_PC
prefix=$(PREFIX)
libdir=$(LIBDIR)
includedir=$(INCDIR)

Name: dangless$(1)
Description: malloc that makes every use-after-free fault at once$(2)
Version: $(VERSION)
Cflags: -I$${includedir}
Libs: $(3)
endef
export DANGLESS_PC_SHARED := $(call DANGLESS_PC,,,-L$${libdir} -Wl$(,)-rpath$(,)$${libdir} -ldangless)
export DANGLESS_PC_STATIC := $(call DANGLESS_PC,-static, (static),-Wl$(,)--whole-archive $${libdir}/libdangless.a -Wl$(,)--no-whole-archive -pthread -ldl)

install: all
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCDIR)/dangless $(DESTDIR)$(BINDIR)
	install -m 755 $(DANGLESS_SO) $(DESTDIR)$(LIBDIR)/
	install -m 644 $(DANGLESS_A) $(DESTDIR)$(LIBDIR)/
	install -m 644 include/dangless/dangless.h $(DESTDIR)$(INCDIR)/dangless/
	install -m 755 $(DANGLESS_BIN) $(DESTDIR)$(BINDIR)/dangless
	install -m 755 tools/dangless-setup $(DESTDIR)$(BINDIR)/dangless-setup
	printf '%s\n' "$$DANGLESS_PC_SHARED" > $(DESTDIR)$(LIBDIR)/pkgconfig/dangless.pc
	printf '%s\n' "$$DANGLESS_PC_STATIC" > $(DESTDIR)$(LIBDIR)/pkgconfig/dangless-static.pc

# make uninstall: what install put there, with the same PREFIX/DESTDIR (and
# LIBDIR, INCDIR, BINDIR); include/dangless goes when nothing else is in it.
uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libdangless.so $(DESTDIR)$(LIBDIR)/libdangless.a \
		$(DESTDIR)$(INCDIR)/dangless/dangless.h \
		$(DESTDIR)$(BINDIR)/dangless $(DESTDIR)$(BINDIR)/dangless-setup \
		$(DESTDIR)$(LIBDIR)/pkgconfig/dangless.pc \
		$(DESTDIR)$(LIBDIR)/pkgconfig/dangless-static.pc
	[ ! -d $(DESTDIR)$(INCDIR)/dangless ] || rmdir --ignore-fail-on-non-empty $(DESTDIR)$(INCDIR)/dangless
