/* SPDX-License-Identifier: MIT */
/*
 * The backends, one row each: option parsing, `dangless run --help`,
 * `dangless check` and stats all read this table.  A new backend is a file
 * in this folder and a row here.
 */
#include <string.h>
#include <unistd.h>

#include "../backend.h"
#include "../services.h"

const struct dl_backend *_dl_be;
const char *_dl_be_name;

const struct dl_backend_entry _dl_backends[] = {
	{"host", &_dl_backend_host,
	 "aliases made by the host kernel (memfd + mremap), no privileges",
	 NULL},
	{"kvm", &_dl_backend_kvm,
	 "the process runs in guest ring 0 on /dev/kvm (libdune) and writes "
	 "its own page-table entries; needs hardware virtualisation",
	 NULL},
	{"dune", &_dl_backend_dune,
	 "the kvm backend over our dune.ko module (/dev/dune): guest system "
	 "calls run in the kernel",
	 NULL},
};
const unsigned _dl_nbackends = sizeof(_dl_backends) / sizeof(_dl_backends[0]);

const struct dl_backend_entry *_dl_backend_find(const char *name, size_t len)
{
	for (unsigned i = 0; i < _dl_nbackends; i++)
		if (strlen(_dl_backends[i].name) == len &&
		    !strncmp(_dl_backends[i].name, name, len))
			return &_dl_backends[i];
	return NULL;
}

static void dl_put(int fd, const char *s)
{
	_dl_write_all(fd, s, strlen(s));
}

/* For `dangless check`: one paragraph per backend; 0 if any can run. */
DL_EXPORT int dangless_check_backends(int fd)
{
	bool any = false;
	for (unsigned i = 0; i < _dl_nbackends; i++) {
		const struct dl_backend_entry *e = &_dl_backends[i];
		dl_put(fd, "backend ");
		dl_put(fd, e->name);
		dl_put(fd, ": ");
		dl_put(fd, e->what);
		dl_put(fd, "\n");
		if (!e->ops) {
			dl_put(fd, "  not available: ");
			dl_put(fd, e->missing);
			dl_put(fd, "\n");
			continue;
		}
		bool runs = e->ops->check ? e->ops->check(fd) : true;
		/* Alias space: all there is, what caps it, what lasts. */
		dl_put(fd, "  alias space: half the address space, about 128 "
			   "TiB (64 PiB where the kvm backend has 5-level "
			   "paging; "
			   "DANGLESS_OPTIONS=alias_space=SIZE caps it; stats=1 "
			   "shows alias_space_used and alias_space_left)\n");
		dl_put(fd, e->ops->alias_reuse && e->ops->own_memory
				   ? "  alias space lasts: revoked ranges that "
				     "nothing points to are reclaimed by sweeps "
				     "(reclaim=1)\n"
				   : "  alias space is used up for good: this "
				     "backend cannot reuse it yet (no sweeps)\n");
		dl_put(fd, runs ? "  runs on this host\n"
				: "  cannot run on this host (see above)\n");
		any |= runs;
	}
	return any ? 0 : -1;
}
