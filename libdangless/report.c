/* SPDX-License-Identifier: MIT */
/*
 * Reports: a bad free or realloc, a dangling access (the words; fault.c
 * has the handler), aliases running out.  Everything here is
 * async-signal-safe: fixed buffers, one write(2) per line.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static void dl_format_size(struct dl_buf *b, size_t size, const char *tail)
{
	_dl_buf_str(b, "a ");
	_dl_buf_dec(b, size);
	_dl_buf_str(b, "-byte allocation");
	_dl_buf_str(b, tail);
}

void _dl_report_end(const char *kind, struct dl_top_frame *top,
		    uint32_t alloc_stack, uint32_t free_stack)
{
	struct dl_top_frame other = {.raw = false};
	if (alloc_stack || _dl_opt.stacks)
		_dl_stack_print("allocated at", alloc_stack, &other);
	if (free_stack || _dl_opt.stacks)
		_dl_stack_print("freed at", free_stack, &other);
	if (!_dl_opt.stacks)
		_dl_printf("dangless: DANGLESS_OPTIONS=stacks=1 also shows where "
			   "the allocation was made and freed");
	if (top->raw || other.raw)
		_dl_printf("dangless: FILE+OFFSET above: `addr2line -f -i -e "
			   "FILE OFFSET` names the function and line");
	/* The line crash-triage tools read, as sanitizers write it. */
	_dl_printf("SUMMARY: Dangless: %s %s", kind,
		   top->where[0] ? top->where : "(no stack)");
}

/* How a bad free ends: op "free" may go on (halt_on_error=0), leaking p. */
static void dl_bad_free_end(const char *op)
{
	if (_dl_opt.abort_on_error)
		abort();
	if (!_dl_opt.halt_on_error && !strcmp(op, "free")) {
		_dl_printf("dangless: halt_on_error=0: going on; the pointer is "
			   "left as it was (leaked)");
		return;
	}
	if (_dl_opt.exitcode >= 0)
		_exit(_dl_opt.exitcode);
	abort();
}

static void dl_report_bad(const char *msg, const char *kind, const char *op,
			  uint32_t alloc_stack, uint32_t free_stack)
{
	/* A line of its own, whatever the program left half-written. */
	_dl_write_all(_dl_out_fd(), "\n", 1);
	_dl_write_all(_dl_out_fd(), msg, strlen(msg));
	_dl_write_all(_dl_out_fd(), "\n", 1);
	struct dl_top_frame top = {.raw = false};
	_dl_backtrace_here(&top);
	_dl_report_end(kind, &top, alloc_stack, free_stack);
	dl_bad_free_end(op);
}

void _dl_report_late_write(const struct dl_late_write *lw)
{
	struct dl_obj o = {0};
	_dl_small_lookup(lw->seg, (void *)lw->obj, &o);
	char msg[512];
	struct dl_buf b = {msg, 0, sizeof(msg)};
	_dl_buf_str(&b, "dangless: write-after-free detected late (revoke=batch:");
	_dl_buf_dec(&b, _dl_opt.batch);
	_dl_buf_str(&b, ") at ");
	_dl_buf_hex(&b, lw->at);
	_dl_buf_str(&b, ": ");
	_dl_buf_dec(&b, lw->at - lw->obj);
	_dl_buf_str(&b, " bytes into ");
	dl_format_size(&b, o.size, " (freed; found when its quarantine was "
				   "flushed, so the stack below is the flush's)");
	_dl_write_all(_dl_out_fd(), "\n", 1);
	_dl_write_all(_dl_out_fd(), msg, strlen(msg));
	_dl_write_all(_dl_out_fd(), "\n", 1);
	struct dl_top_frame top = {.raw = false};
	_dl_backtrace_here(&top);
	_dl_report_end("heap-use-after-free", &top, o.alloc_stack, o.free_stack);
	abort();
}

/* "double free of P" / "realloc of freed pointer P" */
static void dl_format_freed_op(struct dl_buf *b, const char *op, void *p)
{
	bool is_free = strcmp(op, "free") == 0;
	_dl_buf_str(b, "dangless: ");
	_dl_buf_str(b, is_free ? "double free of " : op);
	if (!is_free)
		_dl_buf_str(b, " of freed pointer ");
	_dl_buf_hex(b, (uintptr_t)p);
	_dl_buf_str(b, ": ");
}

void _dl_report_bad_pointer(const char *op, void *p, enum dl_verdict v,
			    const struct dl_obj *o)
{
	char msg[512];
	struct dl_buf b = {msg, 0, sizeof(msg)};
	if (v == DL_PTR_FREED) {
		dl_format_freed_op(&b, op, p);
		dl_format_size(&b, o->size, " that was already freed");
	} else {
		_dl_buf_str(&b, "dangless: invalid ");
		_dl_buf_str(&b, op);
		_dl_buf_str(&b, " of ");
		_dl_buf_hex(&b, (uintptr_t)p);
		_dl_buf_str(&b, ": ");
		if (v == DL_PTR_INTERIOR) {
			_dl_buf_dec(&b, (uintptr_t)p - o->start);
			_dl_buf_str(&b, " bytes into ");
			dl_format_size(&b, o->size, " (not its start)");
		} else {
			_dl_buf_str(&b, "not a pointer Dangless returned");
		}
	}
	/* realloc of a freed pointer reads it: a use, as sanitizers say */
	const char *kind = v != DL_PTR_FREED      ? "bad-free"
			   : strcmp(op, "free") ? "heap-use-after-free"
						: "double-free";
	if (v == DL_PTR_UNKNOWN)
		dl_report_bad(msg, kind, op, 0, 0);
	else
		dl_report_bad(msg, kind, op, o->alloc_stack, o->free_stack);
}

void _dl_report_dead_pointer(const char *op, void *p)
{
	char msg[256];
	struct dl_buf b = {msg, 0, sizeof(msg)};
	dl_format_freed_op(&b, op, p);
	_dl_buf_str(&b, "memory Dangless freed long ago (details no longer "
			"kept)");
	dl_report_bad(msg, strcmp(op, "free") ? "heap-use-after-free"
					      : "double-free",
		      op, 0, 0);
}

static void dl_describe_offset(struct dl_buf *b, uintptr_t addr,
			       uintptr_t start, size_t size, const char *tail)
{
	if (addr >= start) {
		_dl_buf_dec(b, addr - start);
		_dl_buf_str(b, addr - start < size ? " bytes into "
						   : " bytes from the start of ");
	} else {
		_dl_buf_dec(b, start - addr);
		_dl_buf_str(b, " bytes before ");
	}
	dl_format_size(b, size, tail);
}

static bool dl_lookup(struct dl_segment *seg, uintptr_t p, struct dl_obj *o,
		      enum dl_verdict *v)
{
	*v = seg->kind == DL_SEG_SMALL ? _dl_small_lookup(seg, (void *)p, o)
				       : _dl_large_lookup(seg, (void *)p, o);
	return *v != DL_PTR_UNKNOWN && o->size;
}

/*
 * The allocation nearest to addr, which lies outside every allocation: the
 * first one starting on the page after addr's, or the last one ending on
 * the page before (a fault means addr's own page is not mapped).
 */
static bool dl_nearest(uintptr_t addr, struct dl_obj *best, bool *freed)
{
	uintptr_t probes[2] = {DL_ALIGN_UP(addr + 1, DL_PAGE),
			       DL_ALIGN_DOWN(addr, DL_PAGE) - 1};
	size_t best_gap = SIZE_MAX;
	for (int i = 0; i < 2; i++) {
		uintptr_t e = _dl_segmap_get(probes[i]);
		if (!e || (e & 1))
			continue;
		struct dl_segment *seg = (struct dl_segment *)e;
		struct dl_obj o;
		enum dl_verdict v;
		if (seg->kind == DL_SEG_SMALL) {
			/* describe finds the slot under the probe, lookup says
			 * whether it is an allocation */
			_dl_small_describe(seg, probes[i], &o);
			if (!o.start || !dl_lookup(seg, o.start, &o, &v))
				continue;
		} else if (!dl_lookup(seg, probes[i], &o, &v)) {
			continue;
		}
		size_t gap = addr < o.start ? o.start - addr
					    : addr - (o.start + o.size);
		if (addr >= o.start && addr < o.start + o.size)
			continue; /* not outside it after all */
		if (gap < best_gap) {
			best_gap = gap;
			*best = o;
			*freed = v == DL_PTR_FREED;
		}
	}
	return best_gap != SIZE_MAX;
}

/* "N bytes before|after a SIZE-byte allocation (live|freed)" */
static const char *dl_describe_outside(uintptr_t addr, struct dl_buf *b,
				       const struct dl_obj *o, bool freed,
				       uint32_t *alloc_stack,
				       uint32_t *free_stack)
{
	*alloc_stack = o->alloc_stack;
	*free_stack = o->free_stack;
	if (addr < o->start) {
		_dl_buf_dec(b, o->start - addr);
		_dl_buf_str(b, " bytes before ");
	} else {
		_dl_buf_dec(b, addr - (o->start + o->size));
		_dl_buf_str(b, " bytes after ");
	}
	dl_format_size(b, o->size, freed ? " (freed)" : " (live)");
	return freed ? "heap-use-after-free" : "heap-buffer-overflow";
}

const char *_dl_describe_fault(uintptr_t addr, struct dl_buf *b,
			       uint32_t *alloc_stack, uint32_t *free_stack)
{
	uintptr_t e = _dl_segmap_get(addr);
	*alloc_stack = *free_stack = 0;
	struct dl_obj o;
	bool freed = false;
	if (!e) {
		/* Off the first or last page of a segment, the neighbouring
		 * 2 MiB were never used: still ours if next to an allocation
		 * (p[-1] at a segment's start). */
		if (!dl_nearest(addr, &o, &freed))
			return NULL;
		return dl_describe_outside(addr, b, &o, freed, alloc_stack,
					   free_stack);
	}
	if (e & 1) {
		unsigned cls = (unsigned)(e >> 1);
		if (cls == DL_DEAD_LARGE) {
			_dl_buf_str(b, "in a freed large allocation "
				       "(details no longer kept)");
		} else {
			_dl_buf_str(b, "in a freed allocation of the ");
			_dl_buf_dec(b, _dl_classes[cls].size);
			_dl_buf_str(b, "-byte class (details no longer kept)");
		}
		return "heap-use-after-free";
	}
	struct dl_segment *seg = (struct dl_segment *)e;
	enum dl_fault_kind kind = seg->kind == DL_SEG_SMALL
					  ? _dl_small_describe(seg, addr, &o)
					  : _dl_large_describe(seg, addr, &o);
	if (kind != DL_FAULT_NOT_OURS) {
		*alloc_stack = o.alloc_stack;
		*free_stack = o.free_stack;
		dl_describe_offset(b, addr, o.start, o.size,
				   kind == DL_FAULT_FREED
					   ? " (freed)"
					   : " (past the end left by a "
					     "shrinking realloc)");
		return "heap-use-after-free";
	}
	/* Alias space is ours alone: a fault in it is always a bug worth a
	 * report, even off the end of a live allocation. */
	if (!dl_nearest(addr, &o, &freed)) {
		_dl_buf_str(b, "in Dangless's alias space, near no allocation");
		return "wild-access";
	}
	return dl_describe_outside(addr, b, &o, freed, alloc_stack,
				   free_stack);
}

/* Why the cap on alias space was reached: its size, what is used, what
 * the sweeps could not take back. */
static bool dl_explain_alias_space(char *buf, size_t len)
{
	struct dl_space_info si;
	_dl_space_info(&si);
	struct dl_buf b = {buf, 0, len - 1};
	_dl_buf_str(&b, "alias_space=");
	_dl_buf_dec(&b, si.limit >> 20);
	_dl_buf_str(&b, "M is used up: ");
	_dl_buf_dec(&b, si.used >> 20);
	_dl_buf_str(&b, " MiB in use, of which ");
	_dl_buf_dec(&b, si.retired >> 20);
	_dl_buf_str(&b, " MiB revoked");
	if (!_dl_opt.reclaim)
		_dl_buf_str(&b, " (reclaim=0: never reused)");
	else if (!_dl_be->alias_reuse)
		_dl_buf_str(&b, " (this backend cannot reuse alias space)");
	else {
		_dl_buf_str(&b, " and still pointed to after a sweep (");
		_dl_buf_dec(&b, si.pinned >> 20);
		_dl_buf_str(&b, " MiB pinned); raise alias_space");
	}
	buf[b.len] = 0;
	return true;
}

void _dl_report_exhausted(const struct dl_failure *fail, bool going_on)
{
	char why[512] = "";
	bool explained =
		fail->err == 12 && _dl_be &&
		(!strcmp(fail->what, "alias_space")
			 ? dl_explain_alias_space(why, sizeof(why))
			 : _dl_be->explain_enomem &&
				   _dl_be->explain_enomem(why, sizeof(why)));
	if (going_on) {
		_dl_warn("cannot make more aliases (%s: %s). %s%s"
			 "Falling back to unprotected allocation "
			 "(fallback=1): use-after-free is no longer "
			 "detected for new allocations.",
			 fail->what, _dl_strerror(fail->err), why,
			 explained ? ". " : "");
		return;
	}
	_dl_fatal("cannot make more aliases (%s: %s). %s%sStopping "
		  "(fallback=0); with DANGLESS_OPTIONS=fallback=1 the program "
		  "would go on without protection for new allocations.",
		  fail->what, _dl_strerror(fail->err), why, explained ? ". " : "");
}
