# Installing and removing Dangless as system software (issue 24,
# selftests/packaging/): make install / make uninstall into a DESTDIR, and
# without DESTDIR in a private mount namespace (with and without dkms).
# make test-deb (top Makefile) runs deb-roundtrip, which changes the system.
TEST_SUITES += $(CURDIR)/selftests/packaging/install-uninstall \
	$(CURDIR)/selftests/packaging/install-system
