# Installing and removing Dangless as system software (issue 24): make
# install / make uninstall into a DESTDIR (selftests/packaging/).
TEST_SUITES += $(CURDIR)/selftests/packaging/install-uninstall
