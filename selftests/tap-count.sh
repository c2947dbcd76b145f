# SPDX-License-Identifier: MIT
# Sourced by the runners that sum several suites (the rig runners under
# selftests/dangless and selftests/kmod).  Needs passed and failed set.
#
# tap_count LOG: adds LOG's last "N passed, N failed" line to passed and
# failed.  A LOG without one (the suite died, hung or never started) counts
# one failure and returns 1, for a caller that says why.
tap_count() {
	local c
	c=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1)
	if [ -z "$c" ]; then
		failed=$((failed + 1))
		return 1
	fi
	local p=${c%% passed*} f=${c#*passed, }
	passed=$((passed + p)); failed=$((failed + ${f%% failed*}))
}
