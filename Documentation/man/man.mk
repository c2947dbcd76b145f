# Man pages: dangless(1), dangless-setup(8), dangless(3), libdune(3).
# Sources are scdoc (Documentation/man/*.scd), turned into roff in
# $(BUILD)/man; a line @OPTIONS@ is replaced by the DANGLESS_OPTIONS table
# that options-scd takes from the library's own (libdangless/options.c), so
# the pages cannot drift from what the library accepts.
#
#   make man        the pages, in build/man (needs scdoc: tools/apt-packages)
#   make install    installs them in $(MANDIR)/manN, where scdoc is there
#                   (one line saying why not otherwise); make uninstall
#                   removes them
MAN_DIR   := $(CURDIR)/Documentation/man
MAN_OUT   := $(BUILD)/man
MAN_PAGES := $(addprefix $(MAN_OUT)/,dangless.1 dangless-setup.8 dangless.3 libdune.3)
MANDIR    ?= $(PREFIX)/share/man
MAN_SCDOC := $(shell command -v scdoc 2>/dev/null)

.PHONY: man install-man uninstall-man
man: $(MAN_PAGES)

$(MAN_OUT)/options.scd: $(MAN_DIR)/options-scd $(DANGLESS_BIN) $(DANGLESS_SO)
	@mkdir -p $(@D)
	$(MAN_DIR)/options-scd $(DANGLESS_BIN) $(DANGLESS_SO) >$@.tmp && mv $@.tmp $@

$(MAN_OUT)/%: $(MAN_DIR)/%.scd $(MAN_OUT)/options.scd
	@command -v scdoc >/dev/null || { echo "man pages: scdoc not found (apt-get install scdoc)" >&2; exit 1; }
	sed -e '/^@OPTIONS@$$/{r $(MAN_OUT)/options.scd' -e 'd;}' $< | scdoc >$@.tmp && mv $@.tmp $@

install: install-man
install-man: $(if $(MAN_SCDOC),$(MAN_PAGES))
ifneq ($(MAN_SCDOC),)
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(MANDIR)/man8
	install -m 644 $(MAN_OUT)/dangless.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 $(MAN_OUT)/dangless.3 $(MAN_OUT)/libdune.3 $(DESTDIR)$(MANDIR)/man3/
	install -m 644 $(MAN_OUT)/dangless-setup.8 $(DESTDIR)$(MANDIR)/man8/
else
	@echo "man pages: not built or installed: scdoc not found (apt-get install scdoc)"
endif

uninstall: uninstall-man
uninstall-man:
	rm -f $(DESTDIR)$(MANDIR)/man1/dangless.1 $(DESTDIR)$(MANDIR)/man3/dangless.3 \
		$(DESTDIR)$(MANDIR)/man3/libdune.3 $(DESTDIR)$(MANDIR)/man8/dangless-setup.8

TEST_DEPS   += $(MAN_PAGES)
TEST_SUITES += $(CURDIR)/selftests/packaging/man-pages
