/* SPDX-License-Identifier: MIT */
/*
 * Stacks: captured with libgcc's unwinder (linked into libdangless.so, see
 * _dl_backtrace) into a deduplicating depot, and printed when a report is
 * made: with function, file and line from a symboliser (symbolize.c), else
 * with dladdr's names and object offsets.
 */
#include <dlfcn.h>
#include <string.h>
#include <unwind.h>

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

/*
 * glibc's backtrace() dlopens libgcc_s on its first call: ~0.2 ms of every
 * process's start-up here (the warm-up had to run at start, since dlopen
 * allocates and is no business of a signal handler), most of it
 * libgcc_s's constructor running cpuid, which traps to the hypervisor.
 * The same unwinder is linked into libdangless.so instead (-static-libgcc,
 * its symbols hidden so that the program's C++ exceptions keep using
 * libgcc_s); it finds every object's unwind tables through
 * _dl_find_object, loads nothing and allocates nothing.  The static
 * library leaves _Unwind_Backtrace to the program's link, which brings
 * libgcc_eh (static) or libgcc_s (dynamic, loaded with the program).
 * Same frames as backtrace(): return addresses, from our caller on.
 */
struct dl_unwind_state {
	void **frames;
	int n, max;
	bool skipped_self;
};

static _Unwind_Reason_Code dl_unwind_frame(struct _Unwind_Context *ctx,
					   void *arg)
{
	struct dl_unwind_state *st = arg;
	if (!st->skipped_self) {
		st->skipped_self = true; /* _dl_backtrace's own frame */
		return _URC_NO_REASON;
	}
	if (st->n == st->max)
		return _URC_END_OF_STACK;
	void *ip = (void *)_Unwind_GetIP(ctx);
	if (!ip)
		return _URC_END_OF_STACK;
	st->frames[st->n++] = ip;
	return _URC_NO_REASON;
}

__attribute__((noinline)) int _dl_backtrace(void **frames, int max)
{
	struct dl_unwind_state st = {frames, 0, max, false};
	_Unwind_Backtrace(dl_unwind_frame, &st);
	return st.n;
}

/* Returns 0 when nothing could be kept. */
uint32_t _dl_stack_capture(void)
{
	/* no recursion, should the unwinder ever come back into malloc */
	static __thread bool capturing
		__attribute__((tls_model("initial-exec")));
	if (capturing)
		return 0;
	capturing = true;
	void *all[DL_MAX_FRAMES + 8];
	int n = _dl_backtrace(all, DL_MAX_FRAMES + 8);
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

/* "(OBJECT+0xOFF)", or the function by dladdr first when it has one. */
static void dl_frame_raw(struct dl_buf *b, void *addr, bool with_func)
{
	Dl_info info;
	if (!dladdr(addr, &info) || !info.dli_fname)
		return;
	if (with_func && info.dli_sname) {
		_dl_buf_str(b, " in ");
		_dl_buf_str(b, info.dli_sname);
		_dl_buf_str(b, "+");
		_dl_buf_hex(b, (uintptr_t)addr - (uintptr_t)info.dli_saddr);
	}
	_dl_buf_str(b, " (");
	_dl_buf_str(b, info.dli_fname);
	_dl_buf_str(b, "+");
	_dl_buf_hex(b, (uintptr_t)addr - (uintptr_t)info.dli_fbase);
	_dl_buf_str(b, ")");
}

static void dl_frame_start(struct dl_buf *b, unsigned number, void *addr)
{
	_dl_buf_str(b, "dangless:   #");
	_dl_buf_dec(b, number);
	_dl_buf_str(b, " ");
	_dl_buf_hex(b, (uintptr_t)addr);
}

/* The C and C++ runtimes: where a bug shows, rarely where it is. */
static bool dl_system_object(void *addr)
{
	Dl_info info;
	return dladdr(addr, &info) && info.dli_fname &&
	       (!strncmp(info.dli_fname, "/lib/", 5) ||
		!strncmp(info.dli_fname, "/lib64/", 7) ||
		!strncmp(info.dli_fname, "/usr/lib/", 9));
}

/* Frame 0 unless a later frame has a source line outside the system's
 * libraries: what SUMMARY names. */
static void dl_note_top(struct dl_top_frame *top, bool first, void *addr,
			const struct dl_sym_line *l)
{
	bool has_line = l && l->loc && !dl_system_object(addr);
	if (!top || top->have_line || (!has_line && !first))
		return;
	struct dl_buf b = {top->where, 0, sizeof(top->where)};
	const char *func = l ? l->func : NULL;
	Dl_info info;
	if (has_line) {
		_dl_buf_str(&b, l->loc);
	} else if (dladdr(addr, &info) && info.dli_fname) {
		_dl_buf_str(&b, "(");
		_dl_buf_str(&b, info.dli_fname);
		_dl_buf_str(&b, "+");
		_dl_buf_hex(&b, (uintptr_t)addr - (uintptr_t)info.dli_fbase);
		_dl_buf_str(&b, ")");
		if (!func)
			func = info.dli_sname;
	} else {
		_dl_buf_hex(&b, (uintptr_t)addr);
	}
	if (func) {
		_dl_buf_str(&b, " in ");
		_dl_buf_str(&b, func);
	}
	top->have_line = has_line;
}

/*
 * "#N 0xADDR in FUNCTION FILE:LINE", one line per inlined function too
 * (innermost first, same address, as sanitizers print them); without a
 * source line, "#N 0xADDR in FUNCTION+OFF (OBJECT+0xOFF)".
 */
void _dl_backtrace_print(void *const *frames, int n, bool first_is_pc,
			 struct dl_top_frame *top)
{
	struct dl_symbols syms;
	/* Without a symboliser the reader needs the FILE+OFFSET hint. */
	if (_dl_symbolize(frames, n, first_is_pc, &syms) < 0 && top)
		top->raw = true;
	unsigned number = 0;
	for (int i = 0; i < n; i++) {
		char line[768];
		struct dl_buf b = {line, 0, sizeof(line)};
		bool printed = false;
		/* lines come object by object: a frame's, in order, anywhere */
		for (int k = 0; k < syms.n; k++) {
			const struct dl_sym_line *l = &syms.line[k];
			if (l->frame != i)
				continue;
			b.len = 0;
			dl_frame_start(&b, number++, frames[i]);
			if (l->func) {
				_dl_buf_str(&b, " in ");
				_dl_buf_str(&b, l->func);
			}
			if (l->loc) {
				_dl_buf_str(&b, " ");
				_dl_buf_str(&b, l->loc);
			} else {
				dl_frame_raw(&b, frames[i], false);
			}
			_dl_buf_char(&b, '\n');
			_dl_write_all(_dl_out_fd(), line, b.len);
			dl_note_top(top, i == 0 && !printed, frames[i], l);
			printed = true;
		}
		if (printed)
			continue;
		dl_frame_start(&b, number++, frames[i]);
		dl_frame_raw(&b, frames[i], true);
		_dl_buf_char(&b, '\n');
		_dl_write_all(_dl_out_fd(), line, b.len);
		dl_note_top(top, i == 0, frames[i], NULL);
	}
}

void _dl_stack_print(const char *title, uint32_t id, struct dl_top_frame *top)
{
	if (!id || !dl_depot) {
		_dl_printf("dangless: %s: (not recorded%s)", title,
			   _dl_opt.stacks ? "" : "; run with stacks=1");
		return;
	}
	struct dl_stack_entry *e = &dl_depot[id - 1];
	_dl_printf("dangless: %s:", title);
	_dl_backtrace_print(e->frames, (int)e->n, false, top);
}

void _dl_stack_warm(void)
{
	/* Only the unwinder's one-time set-up (a register-size table):
	 * microseconds, and done before any signal handler needs it. */
	void *warm[2];
	_dl_backtrace(warm, 2);
}

void _dl_backtrace_here(struct dl_top_frame *top)
{
	void *frames[DL_MAX_FRAMES + 8];
	int n = _dl_backtrace(frames, DL_MAX_FRAMES + 8);
	int skip = dl_skip_own_frames(frames, n);
	_dl_printf("dangless: at:");
	_dl_backtrace_print(frames + skip,
			    n - skip > DL_MAX_FRAMES ? DL_MAX_FRAMES : n - skip,
			    false, top);
}
