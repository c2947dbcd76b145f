/* SPDX-License-Identifier: MIT */
/*
 * libdune-preload.so: LD_PRELOAD it and the program runs in the guest from
 * its first constructor on (dune_init(1) + dune_enter()).
 *   DUNE_PRELOAD_STRICT=1   exit 126 if entering fails (default: run natively)
 *   DUNE_PRELOAD_VERBOSE=1  at exit, say on stderr that it ran in the guest
 */
#include "dune.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int dune_preload_entered;

__attribute__((constructor(101))) static void dune_preload_init(void)
{
	if (dune_init_and_enter(1) == 0) {
		dune_preload_entered = dune_in_guest();
		return;
	}
	if (getenv("DUNE_PRELOAD_STRICT"))
		_exit(126);
}

__attribute__((destructor)) static void dune_preload_fini(void)
{
	if (!getenv("DUNE_PRELOAD_VERBOSE"))
		return;
	if (!dune_preload_entered) {
		fprintf(stderr, "libdune-preload: not entered\n");
		return;
	}
	struct dune_stats st;
	dune_get_stats(&st);
	fprintf(stderr,
		"libdune-preload: ran in the guest (ring %d), %llu system calls "
		"forwarded, %llu vCPUs\n",
		dune_in_guest() ? 0 : 3, (unsigned long long)st.syscalls,
		(unsigned long long)st.vcpus);
}
