/* SPDX-License-Identifier: MIT */
/*
 * Structs the syscall table names by type that hold pointers (sigaltstack,
 * clone_args, futex_waitv, sock_fprog, sigevent, move_pages' list, ...),
 * each copied and its pointers fixed, and structs of unknown layout scanned
 * word by word; dl_kvm_fx_nested() picks the handler by the type's name.
 */
#include <errno.h>
#include <string.h>
#include <sys/syscall.h>

#include "fixup_shared.h"

/* ---- structs with pointers ---- */

/* A copy of len bytes at *arg, for a handler to rewrite. */
static int copy_struct(struct dl_kvm_fixup *fx, uintptr_t va, size_t len,
		       void **copy)
{
	*copy = dl_kvm_fx_scratch_take(fx, len);
	if (!*copy)
		return -ENOMEM;
	return dl_kvm_fx_read_guest(fx, va, *copy, len);
}

/* A struct sock_fprog {u16 len; struct sock_filter *filter} (8 bytes each). */
int dl_kvm_fx_sock_fprog(struct dl_kvm_fixup *fx, uint64_t *arg)
{
	uintptr_t va = (uintptr_t)*arg;
	if (!dl_kvm_fx_readable(fx, va))
		return 0;
	uint64_t *f;
	int r = copy_struct(fx, va, 16, (void **)&f);
	if (r < 0)
		return r;
	uint64_t filter = f[1];
	r = dl_kvm_fx_buffer(fx, &f[1], (f[0] & 0xffff) * 8, DUNE_SC_IN, false);
	if (r < 0)
		return r;
	if (f[1] == filter && !dl_kvm_fx_is_alias(fx, va))
		return 0;
	*arg = (uintptr_t)f;
	COUNT(nested, 1);
	return 0;
}

/* A {const void *ptr; size_t len} pair (pselect6's sigset, __aio_sigset). */
static int fix_ptr_len(struct dl_kvm_fixup *fx, uint64_t *arg)
{
	uintptr_t va = (uintptr_t)*arg;
	if (!dl_kvm_fx_readable(fx, va))
		return 0;
	uint64_t *p;
	int r = copy_struct(fx, va, 16, (void **)&p);
	if (r < 0)
		return r;
	uint64_t ptr = p[0];
	r = dl_kvm_fx_buffer(fx, &p[0], p[1] <= 128 ? p[1] : 0, DUNE_SC_IN,
			     false);
	if (r < 0)
		return r;
	if (p[0] == ptr && !dl_kvm_fx_is_alias(fx, va))
		return 0;
	*arg = (uintptr_t)p;
	COUNT(nested, 1);
	return 0;
}

#define KSS_DISABLE 2

static int fix_sigaltstack_in(struct dl_kvm_fixup *fx, uint64_t *arg)
{
	uintptr_t va = (uintptr_t)*arg;
	if (!dl_kvm_fx_readable(fx, va))
		return 0;
	struct {
		uint64_t sp;
		int32_t flags;
		uint32_t pad;
		uint64_t size;
	} *ss;
	int r = copy_struct(fx, va, sizeof(*ss), (void **)&ss);
	if (r < 0)
		return r;
	uintptr_t sp = ss->sp, host = sp;
	if (!(ss->flags & KSS_DISABLE) && sp && dl_kvm_fx_is_alias(fx, sp)) {
		r = dl_kvm_fx_range_host(fx, sp, ss->size ? ss->size : 1,
					 &host);
		if (r < 0)
			return r;
		if (r == RUN_SPLIT) {
			COUNT(refused, 1);
			return -ENOMEM;
		}
		ss->sp = host;
		COUNT(translated, 1);
	}
	struct dl_kvm_fixup_action *a = dl_kvm_fx_add_action(
		fx, ACT_ALTSTACK_SET, host != sp ? sp : 0, NULL, 0);
	if (!a)
		return -ENOMEM;
	a->mask = host != sp ? host : 0;
	if (host == sp && !dl_kvm_fx_is_alias(fx, va))
		return 0;
	*arg = (uintptr_t)ss;
	COUNT(nested, 1);
	return 0;
}

/* clone3's struct clone_args: size bytes (at least 64, the first version). */
static int fix_clone_args(struct dl_kvm_fixup *fx, uint64_t *arg,
			  uint64_t size)
{
	uintptr_t va = (uintptr_t)*arg;
	if (!dl_kvm_fx_readable(fx, va) || size < 64 || size > PAGE)
		return 0; /* the kernel refuses these itself */
	uint64_t *ca;
	int r = copy_struct(fx, va, size, (void **)&ca);
	if (r < 0)
		return r;
	bool changed = dl_kvm_fx_is_alias(fx, va);
	/* pidfd, child_tid, parent_tid: words the kernel writes (child_tid
	 * also at thread exit: kept) */
	for (int i = 1; i <= 3; i++) {
		uint64_t before = ca[i];
		r = dl_kvm_fx_translate_kept(fx, &ca[i], 4);
		if (r < 0)
			return r;
		changed |= ca[i] != before;
	}
	if (size >= 80 && ca[8] && ca[9] && ca[9] <= 32) { /* set_tid */
		uint64_t before = ca[8];
		r = dl_kvm_fx_buffer(fx, &ca[8], ca[9] * 4, DUNE_SC_IN, false);
		if (r < 0)
			return r;
		changed |= ca[8] != before;
	}
	if (!changed)
		return 0;
	*arg = (uintptr_t)ca;
	COUNT(nested, 1);
	return 0;
}

/* futex_waitv entries: {u64 val; u64 uaddr; u32 flags; u32 reserved}. */
static int fix_futex_waitv(struct dl_kvm_fixup *fx, uint64_t *arg,
			   uint64_t count)
{
	uintptr_t va = (uintptr_t)*arg;
	if (!count || count > 128 || !dl_kvm_fx_readable(fx, va))
		return 0;
	uint64_t *w;
	int r = copy_struct(fx, va, count * 24, (void **)&w);
	if (r < 0)
		return r;
	bool changed = dl_kvm_fx_is_alias(fx, va);
	for (uint64_t i = 0; i < count; i++) {
		uint64_t before = w[i * 3 + 1];
		r = dl_kvm_fx_translate_kept(fx, &w[i * 3 + 1], 4);
		if (r < 0)
			return r;
		changed |= w[i * 3 + 1] != before;
	}
	if (!changed)
		return 0;
	*arg = (uintptr_t)w;
	COUNT(nested, 1);
	return 0;
}

/* mq_notify's sigevent: with SIGEV_THREAD, sival_ptr is a 32-byte cookie. */
static int fix_sigevent_cookie(struct dl_kvm_fixup *fx, uint64_t *arg)
{
	uintptr_t va = (uintptr_t)*arg;
	if (!dl_kvm_fx_readable(fx, va))
		return 0;
	uint64_t *se;
	int r = copy_struct(fx, va, 64, (void **)&se);
	if (r < 0)
		return r;
	int32_t notify = (int32_t)(se[1] >> 32);
	uint64_t before = se[0];
	if (notify == 2 /* SIGEV_THREAD */) {
		r = dl_kvm_fx_buffer(fx, &se[0], 32, DUNE_SC_IN, false);
		if (r < 0)
			return r;
	}
	if (se[0] == before && !dl_kvm_fx_is_alias(fx, va))
		return 0;
	*arg = (uintptr_t)se;
	COUNT(nested, 1);
	return 0;
}

/* move_pages' list of page addresses in process pid (0: this one). */
static int fix_page_list(struct dl_kvm_fixup *fx, uint64_t *arg,
			 uint64_t count, uint64_t pid)
{
	uintptr_t va = (uintptr_t)*arg;
	if (pid || !count || !dl_kvm_fx_readable(fx, va))
		return pid ? dl_kvm_fx_buffer(fx, arg, count * 8, DUNE_SC_IN,
					      false)
			   : 0;
	if (count > fx->scratch_size / 8)
		return -ENOMEM;
	uint64_t *pages;
	int r = copy_struct(fx, va, count * 8, (void **)&pages);
	if (r < 0)
		return r;
	bool changed = dl_kvm_fx_is_alias(fx, va);
	for (uint64_t i = 0; i < count; i++) {
		uintptr_t h;
		size_t contig;
		/* a revoked page stays an alias: the kernel reports -EFAULT in
		 * its status entry, as for any unmapped page */
		if (fx->translate(pages[i], &h, &contig) && h != pages[i]) {
			pages[i] = h;
			changed = true;
		}
	}
	if (!changed)
		return 0;
	*arg = (uintptr_t)pages;
	COUNT(nested, 1);
	return 0;
}

/*
 * A struct of unknown layout that holds pointers (bpf_attr,
 * perf_event_attr, kexec_segment): copied, each aligned word holding an
 * alias translated, and those words left out of the copy back.
 */
static int fix_scanned(struct dl_kvm_fixup *fx, uint64_t *arg, size_t len,
		       int dir)
{
	uintptr_t va = (uintptr_t)*arg;
	if (!dl_kvm_fx_readable(fx, va) || !len)
		return 0;
	if (len > 512)
		len = 512; /* the mask covers 64 words; beyond: left alone */
	size_t mark = fx->used;
	uint64_t *w;
	int r = copy_struct(fx, va, len, (void **)&w);
	if (r < 0)
		return r;
	uint64_t mask = 0;
	for (size_t i = 0; i < len / 8; i++) {
		uint64_t before = w[i];
		r = dl_kvm_fx_unknown(fx, &w[i]);
		if (r < 0)
			return r;
		if (w[i] != before)
			mask |= 1ULL << i;
	}
	if (!mask) {
		/* nothing inside: only the struct itself may need moving */
		fx->used = mark;
		return dl_kvm_fx_buffer(fx, arg, len, dir, false);
	}
	if (dir & DUNE_SC_OUT) {
		struct dl_kvm_fixup_action *a = dl_kvm_fx_add_action(
			fx, ACT_COPYBACK_MASKED, va, w, len);
		if (!a)
			return -ENOMEM;
		a->mask = mask;
	}
	*arg = (uintptr_t)w;
	COUNT(nested, 1);
	return 0;
}

int dl_kvm_fx_nested(struct dl_kvm_fixup *fx, uint64_t nr, int i,
		     uint64_t *a, const struct dune_sc_arg *arg,
		     bool kept)
{
	const char *type = arg->type ? arg->type : "";
	if (!strcmp(type, "struct sigaction"))
		return dl_kvm_fx_buffer(fx, &a[i], arg->size, arg->dir, false);
	if (!strcmp(type, "struct sigaltstack")) {
		if (arg->dir == DUNE_SC_IN)
			return fix_sigaltstack_in(fx, &a[i]);
		int r = dl_kvm_fx_buffer(fx, &a[i], arg->size, arg->dir, false);
		if (r < 0 || !a[i])
			return r;
		return dl_kvm_fx_add_action(fx, ACT_ALTSTACK_OLD, fx->args[i],
					    NULL, 0)
			       ? 0
			       : -ENOMEM;
	}
	if (!strcmp(type, "struct clone_args"))
		return fix_clone_args(fx, &a[i], fx->args[1]);
	if (!strcmp(type, "struct futex_waitv"))
		return fix_futex_waitv(fx, &a[i], fx->args[1]);
	if (!strcmp(type, "struct futex_waitv[2]"))
		return fix_futex_waitv(fx, &a[i], 2);
	if (!strcmp(type, "struct robust_list_head") ||
	    !strcmp(type, "struct rseq"))
		return dl_kvm_fx_translate_kept(fx, &a[i], arg->size);
	if (!strcmp(type, "pselect6 sigset") ||
	    !strcmp(type, "struct __aio_sigset"))
		return fix_ptr_len(fx, &a[i]);
	if (!strcmp(type, "struct sigevent (mq_notify)"))
		return fix_sigevent_cookie(fx, &a[i]);
	if (!strcmp(type, "move_pages addresses"))
		return fix_page_list(fx, &a[i], fx->args[1], fx->args[0]);
	if (kept) {
		COUNT(refused, 1);
		return -EINVAL; /* a kept struct this file does not know */
	}
	size_t len = arg->size;
	if (nr == SYS_bpf)
		len = fx->args[2]; /* union bpf_attr: the size argument */
	else if (arg->len_arg >= 0 && arg->len_unit == DUNE_SC_LEN_ELEMS)
		len = (size_t)fx->args[arg->len_arg] * arg->size;
	return fix_scanned(fx, &a[i], len, arg->dir);
}
