# Sourced by selftests/kmod/run-in-rig and run-kernels: one rig boot that
# counts.  Needs $top, $B, $out (a scratch file), $rig_kernel (the rig's
# kernel series) and $dune_ko (the module built for it) set, and passed,
# failed, rc initialised; $rig_vmrun_flags (optional) goes to tools/vmrun
# (--intel for the Bochs rig).
#
# boot LABEL SECONDS PROGRAM [ARGS...]: runs PROGRAM in the rig (tools/vmrun)
# with BUILD and DUNE_KO set, relays its output and adds its last
# "N passed, N failed" line to the totals; a boot that ends without one
# (timeout, no rig) counts one failure and says why.
. "$top/selftests/tap-count.sh"

boot() {
	local label=$1 tmo=$2
	shift 2
	: >"$out"
	echo "# ---- $label"
	BUILD=$B DUNE_KO=$dune_ko RIG_KERNEL=$rig_kernel \
		timeout --kill-after=10 $((tmo + 20)) "$top/tools/vmrun" ${rig_vmrun_flags:-} -t "$tmo" -- \
		"$@" 2>&1 | tee "$out"
	local r=${PIPESTATUS[0]}
	if ! tap_count "$out"; then
		case $r in
		124) echo "# $label: the rig timed out" ;;
		125) echo "# $label: the rig could not be built or booted (no network for apt-get download? see above)" ;;
		*) echo "# $label: the rig run ended without a count line (exit $r)" ;;
		esac
		rc=1
		return
	fi
	[ "$r" -ne 0 ] && rc=1
}
