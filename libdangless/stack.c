/* SPDX-License-Identifier: MIT */
/*
 * Stacks: captured with backtrace() (warmed up at start-up, so it no longer
 * loads anything) into a deduplicating depot, and printed with dladdr's
 * names when a report is made.
 */
#include <dlfcn.h>
#include <execinfo.h>
#include <string.h>

#include "internal.h"

/*
 * Every entry point notes where the program called it from, so that stacks
 * start at the program's frame, not in the allocator (whose frames a static
 * link cannot tell apart from the program's).
 */
__thread void *_dl_api_caller __attribute__((tls_model("initial-exec")));

struct dl_stack_entry {
	uint32_t hash;
	uint32_t n;
	void *frames[DL_MAX_FRAMES];
};

#define DL_DEPOT_SLOTS (1u << 18)
static struct dl_stack_entry *dl_depot;
static dl_lock_t dl_depot_lock;

static uint32_t dl_hash_frames(void *const *frames, int n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (int i = 0; i < n; i++) {
		h ^= (uintptr_t)frames[i];
		h *= 0x100000001b3ull;
	}
	return (uint32_t)(h ^ (h >> 32)) | 1;
}

/*
 * Frames inside the allocator itself tell the reader nothing: the stack
 * starts at the program's call into it (_dl_api_caller), when found.
 */
static int dl_skip_own_frames(void *const *frames, int n)
{
	for (int i = 0; i < n; i++)
		if (frames[i] == _dl_api_caller)
			return i;
	return 0;
}

/* Returns 0 when nothing could be kept. */
uint32_t _dl_stack_capture(void)
{
	/* backtrace() may allocate (its unwinder's first use): no recursion */
	static __thread bool capturing
		__attribute__((tls_model("initial-exec")));
	if (capturing)
		return 0;
	capturing = true;
	void *all[DL_MAX_FRAMES + 8];
	int n = backtrace(all, DL_MAX_FRAMES + 8);
	capturing = false;
	int skip = dl_skip_own_frames(all, n);
	if (!skip)
		skip = n > 2 ? 2 : 0; /* at least not this function */
	void **frames = all + skip;
	n -= skip;
	if (n > DL_MAX_FRAMES)
		n = DL_MAX_FRAMES;
	if (n <= 0)
		return 0;
	if (!dl_depot) {
		_dl_lock(&dl_depot_lock);
		if (!dl_depot)
			dl_depot = _dl_meta_pages(DL_DEPOT_SLOTS *
						sizeof(*dl_depot));
		_dl_unlock(&dl_depot_lock);
		if (!dl_depot)
			return 0;
	}
	uint32_t h = dl_hash_frames(frames, n);
	for (uint32_t probe = 0; probe < 64; probe++) {
		uint32_t i = (h + probe) & (DL_DEPOT_SLOTS - 1);
		struct dl_stack_entry *e = &dl_depot[i];
		uint32_t seen = __atomic_load_n(&e->hash, __ATOMIC_ACQUIRE);
		if (seen == h && e->n == (uint32_t)n &&
		    !memcmp(e->frames, frames, (size_t)n * sizeof(void *)))
			return i + 1;
		if (seen == 0) {
			_dl_lock(&dl_depot_lock);
			if (e->hash == 0) {
				e->n = (uint32_t)n;
				memcpy(e->frames, frames,
				       (size_t)n * sizeof(void *));
				__atomic_store_n(&e->hash, h, __ATOMIC_RELEASE);
				_dl_unlock(&dl_depot_lock);
				return i + 1;
			}
			_dl_unlock(&dl_depot_lock);
		}
	}
	return 0;
}

void _dl_backtrace_print(void *const *frames, int n)
{
	for (int i = 0; i < n; i++) {
		char line[512];
		struct dl_buf b = {line, 0, sizeof(line)};
		Dl_info info;
		_dl_buf_str(&b, "dangless:   #");
		_dl_buf_dec(&b, (uint64_t)i);
		_dl_buf_str(&b, " ");
		_dl_buf_hex(&b, (uintptr_t)frames[i]);
		if (dladdr(frames[i], &info) && info.dli_fname) {
			if (info.dli_sname) {
				_dl_buf_str(&b, " in ");
				_dl_buf_str(&b, info.dli_sname);
				_dl_buf_str(&b, "+");
				_dl_buf_hex(&b, (uintptr_t)frames[i] -
							(uintptr_t)info.dli_saddr);
			}
			_dl_buf_str(&b, " (");
			_dl_buf_str(&b, info.dli_fname);
			_dl_buf_str(&b, "+");
			_dl_buf_hex(&b, (uintptr_t)frames[i] -
						(uintptr_t)info.dli_fbase);
			_dl_buf_str(&b, ")");
		}
		_dl_buf_char(&b, '\n');
		_dl_write_all(2, line, b.len);
	}
}

void _dl_stack_print(const char *title, uint32_t id)
{
	if (!id || !dl_depot) {
		_dl_printf("dangless: %s: (not recorded%s)", title,
			   _dl_opt.stacks ? "" : "; run with stacks=1");
		return;
	}
	struct dl_stack_entry *e = &dl_depot[id - 1];
	_dl_printf("dangless: %s:", title);
	_dl_backtrace_print(e->frames, (int)e->n);
}

void _dl_stack_warm(void)
{
	void *warm[2];
	backtrace(warm, 2);
}

void _dl_backtrace_here(void)
{
	void *frames[DL_MAX_FRAMES + 8];
	int n = backtrace(frames, DL_MAX_FRAMES + 8);
	int skip = dl_skip_own_frames(frames, n);
	_dl_printf("dangless: at:");
	_dl_backtrace_print(frames + skip, n - skip > DL_MAX_FRAMES
						   ? DL_MAX_FRAMES
						   : n - skip);
}
