/* SPDX-License-Identifier: MIT */
/*
 * Reports: a bad free or realloc, a dangling access (the words; fault.c
 * has the handler), aliases running out.  Everything here is
 * async-signal-safe: fixed buffers, one write(2) per line.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void dl_format_size(struct dl_buf *b, size_t size, const char *tail)
{
	_dl_buf_str(b, "a ");
	_dl_buf_dec(b, size);
	_dl_buf_str(b, "-byte allocation");
	_dl_buf_str(b, tail);
}

void _dl_report_stacks(uint32_t alloc_stack, uint32_t free_stack)
{
	if (alloc_stack || _dl_opt.stacks)
		_dl_stack_print("allocated at", alloc_stack);
	if (free_stack || _dl_opt.stacks)
		_dl_stack_print("freed at", free_stack);
	if (!_dl_opt.stacks)
		_dl_printf("dangless: DANGLESS_OPTIONS=stacks=1 also shows where "
			   "the allocation was made and freed");
	_dl_printf("dangless: FILE+OFFSET above: `addr2line -f -i -e FILE "
		   "OFFSET` names the function and line");
}

static __attribute__((noreturn)) void dl_report_abort(const char *msg,
						      uint32_t alloc_stack,
						      uint32_t free_stack)
{
	_dl_write_all(2, msg, strlen(msg));
	_dl_write_all(2, "\n", 1);
	_dl_backtrace_here();
	_dl_report_stacks(alloc_stack, free_stack);
	abort();
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
	dl_report_abort(msg, o.alloc_stack, o.free_stack);
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
	if (v == DL_PTR_UNKNOWN)
		dl_report_abort(msg, 0, 0);
	dl_report_abort(msg, o->alloc_stack, o->free_stack);
}

void _dl_report_dead_pointer(const char *op, void *p)
{
	char msg[256];
	struct dl_buf b = {msg, 0, sizeof(msg)};
	dl_format_freed_op(&b, op, p);
	_dl_buf_str(&b, "memory Dangless freed long ago (details no longer "
			"kept)");
	dl_report_abort(msg, 0, 0);
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

bool _dl_describe_fault(uintptr_t addr, struct dl_buf *b,
			uint32_t *alloc_stack, uint32_t *free_stack)
{
	uintptr_t e = _dl_segmap_get(addr);
	*alloc_stack = *free_stack = 0;
	if (!e)
		return false;
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
		return true;
	}
	struct dl_segment *seg = (struct dl_segment *)e;
	struct dl_obj o;
	enum dl_fault_kind kind = seg->kind == DL_SEG_SMALL
					  ? _dl_small_describe(seg, addr, &o)
					  : _dl_large_describe(seg, addr, &o);
	if (kind == DL_FAULT_NOT_OURS)
		return false;
	*alloc_stack = o.alloc_stack;
	*free_stack = o.free_stack;
	dl_describe_offset(b, addr, o.start, o.size,
			   kind == DL_FAULT_FREED
				   ? " (freed)"
				   : " (past the end left by a shrinking "
				     "realloc)");
	return true;
}

void _dl_report_exhausted(const struct dl_failure *fail, bool going_on)
{
	char why[512] = "";
	bool explained = fail->err == 12 && _dl_be &&
			 _dl_be->explain_enomem &&
			 _dl_be->explain_enomem(why, sizeof(why));
	if (going_on) {
		_dl_warn("cannot make more aliases (%s: %s). %s%s"
			 "Falling back to unprotected allocation "
			 "(fallback=1): use-after-free is no longer "
			 "detected for new allocations.",
			 fail->what, strerror(fail->err), why,
			 explained ? ". " : "");
		return;
	}
	_dl_fatal("cannot make more aliases (%s: %s). %s%sStopping "
		  "(fallback=0); with DANGLESS_OPTIONS=fallback=1 the program "
		  "would go on without protection for new allocations.",
		  fail->what, strerror(fail->err), why, explained ? ". " : "");
}
