/* SPDX-License-Identifier: MIT */
/*
 * What the kernel holds for the process, for stats: pages resident in a
 * range (mincore), and figures from /proc/self, read without allocating.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "services.h"

bool _dl_resident_vec(uintptr_t start, size_t pages, unsigned char *vec)
{
	/* mincore takes at most what fits its vector; one call per 1 GiB
	 * keeps a long range from failing on the kernel's bounds. */
	const size_t step = (size_t)1 << 18;
	for (size_t i = 0; i < pages; i += step) {
		size_t n = pages - i < step ? pages - i : step;
		if (mincore((void *)(start + i * DL_PAGE), n * DL_PAGE,
			    vec + i) != 0)
			return false;
	}
	return true;
}

bool _dl_resident_bytes(uintptr_t start, size_t len, uint64_t *bytes)
{
	unsigned char vec[4096];
	size_t pages = DL_ALIGN_UP(len, DL_PAGE) / DL_PAGE;
	*bytes = 0;
	for (size_t i = 0; i < pages; i += sizeof(vec)) {
		size_t n = pages - i < sizeof(vec) ? pages - i : sizeof(vec);
		if (!_dl_resident_vec(start + i * DL_PAGE, n, vec))
			return false;
		for (size_t k = 0; k < n; k++)
			*bytes += (vec[k] & 1) * DL_PAGE;
	}
	return true;
}

/* "Key: N kB" lines of one read of a /proc file, in bytes; true when every
 * key was there. */
static bool dl_proc_kbs(const char *path, const char *const *keys,
			uint64_t *const *bytes, size_t nkeys)
{
	/* smaps_rollup and status fit: the keys read are in their first
	 * 2 KiB on every kernel since 4.14. */
	char buf[4096];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	size_t have = 0;
	for (ssize_t n; have < sizeof(buf) - 1 &&
			(n = read(fd, buf + have, sizeof(buf) - 1 - have)) > 0;)
		have += (size_t)n;
	close(fd);
	buf[have] = 0;
	size_t found = 0;
	for (const char *line = buf; *line && found < nkeys;) {
		for (size_t k = 0; k < nkeys; k++) {
			size_t klen = strlen(keys[k]);
			if (strncmp(line, keys[k], klen) || line[klen] != ':')
				continue;
			const char *p = line + klen + 1;
			while (*p == ' ' || *p == '\t')
				p++;
			uint64_t kb = 0;
			while (*p >= '0' && *p <= '9')
				kb = kb * 10 + (uint64_t)(*p++ - '0');
			*bytes[k] = kb << 10;
			found++;
			break;
		}
		const char *nl = strchr(line, '\n');
		if (!nl)
			break;
		line = nl + 1;
	}
	return found == nkeys;
}

bool _dl_proc_memory(struct dl_proc_memory *pm)
{
	static const char *const rollup[] = {"Pss", "Pss_Shmem"};
	static const char *const status[] = {"VmPTE"};
	return dl_proc_kbs("/proc/self/smaps_rollup", rollup,
			   (uint64_t *const[]){&pm->pss, &pm->pss_shmem}, 2) &&
	       dl_proc_kbs("/proc/self/status", status,
			   (uint64_t *const[]){&pm->vm_pte}, 1);
}
