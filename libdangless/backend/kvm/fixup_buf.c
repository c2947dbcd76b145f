/* SPDX-License-Identifier: MIT */
/*
 * The fix-ups' lowest layer: the per-call scratch area and the post-hook's
 * list of actions, translating one alias, plain buffers (translated in
 * place or bounced, with the copy back after the call), pointers the kernel
 * keeps, strings, and pointers of unknown extent.  The other fixup files
 * build on these; this one calls none of them.
 */
#include <errno.h>
#include <string.h>

#include "fixup_shared.h"

struct dl_kvm_fixup_stats dl_kvm_fx_stats;

/* ---- scratch and the post-hook's list ---- */

void *dl_kvm_fx_scratch_take(struct dl_kvm_fixup *fx, size_t len)
{
	size_t at = (fx->used + 15) & ~(size_t)15;
	if (at > fx->scratch_size || len > fx->scratch_size - at)
		return NULL;
	fx->used = at + len;
	return fx->scratch + at;
}

struct dl_kvm_fixup_action *dl_kvm_fx_add_action(struct dl_kvm_fixup *fx,
						 enum action_kind kind,
						 uintptr_t guest, void *copy,
						 size_t len)
{
	struct dl_kvm_fixup_action *a = dl_kvm_fx_scratch_take(fx, sizeof(*a));
	if (!a)
		return NULL;
	memset(a, 0, sizeof(*a));
	a->kind = (uint8_t)kind;
	a->guest = guest;
	a->copy = copy;
	a->len = len;
	if (fx->last)
		fx->last->next = a;
	else
		fx->first = a;
	fx->last = a;
	return a;
}

/* ---- translation ---- */

bool dl_kvm_fx_is_alias(struct dl_kvm_fixup *fx, uintptr_t va)
{
	uintptr_t host;
	size_t contig;
	return !fx->translate(va, &host, &contig) || host != va;
}

/* A pointer the hook may read: an alias, or a user address above the low
 * limit (an unmapped one there is a limit written above). */
bool dl_kvm_fx_readable(struct dl_kvm_fixup *fx, uintptr_t va)
{
	if (!va)
		return false;
	return dl_kvm_fx_is_alias(fx, va) ||
	       (va >= LOW_LIMIT && va < USER_LIMIT);
}

/*
 * Whether [va, va+len) is one host run: RUN_ONE with *host, RUN_SPLIT if
 * not (every page of it mapped), -EFAULT if some page of it is revoked.
 */
int dl_kvm_fx_range_host(struct dl_kvm_fixup *fx, uintptr_t va, size_t len,
			 uintptr_t *host)
{
	size_t contig;
	if (!fx->translate(va, host, &contig))
		return -EFAULT;
	if (contig >= len)
		return RUN_ONE;
	for (;;) {
		va += contig;
		len -= contig;
		uintptr_t h;
		if (!fx->translate(va, &h, &contig))
			return -EFAULT;
		if (contig >= len)
			return RUN_SPLIT;
	}
}

static int copy_in(struct dl_kvm_fixup *fx, void *dst, uintptr_t va,
		   size_t len)
{
	unsigned char *d = dst;
	while (len) {
		uintptr_t h;
		size_t contig;
		if (!fx->translate(va, &h, &contig))
			return -EFAULT;
		size_t n = contig < len ? contig : len;
		memcpy(d, (const void *)h, n);
		d += n;
		va += n;
		len -= n;
	}
	return 0;
}

/* After the call: what is revoked by now is skipped, never written. */
void dl_kvm_fx_copy_out(struct dl_kvm_fixup *fx, uintptr_t va, const void *src,
			size_t len)
{
	const unsigned char *s = src;
	while (len) {
		uintptr_t h;
		size_t contig;
		size_t n;
		if (fx->translate(va, &h, &contig)) {
			n = contig < len ? contig : len;
			memcpy((void *)h, s, n);
		} else {
			n = PAGE - (va & (PAGE - 1));
			if (n > len)
				n = len;
		}
		s += n;
		va += n;
		len -= n;
	}
}

/* The word a kept pointer names, by its host address, or an error. */
int dl_kvm_fx_translate_kept(struct dl_kvm_fixup *fx, uint64_t *arg, size_t len)
{
	uintptr_t va = (uintptr_t)*arg, host;
	if (!va)
		return 0;
	int r = dl_kvm_fx_range_host(fx, va, len ? len : 1, &host);
	if (r < 0)
		return r;
	if (r == RUN_SPLIT) {
		COUNT(refused, 1);
		return -EINVAL;
	}
	if (host != va) {
		*arg = host;
		COUNT(translated, 1);
	}
	return 0;
}

/*
 * A buffer of len bytes the kernel reads (dir & IN) and/or writes
 * (dir & OUT) during the call.  -ENOMEM when it needs a bounce that does not
 * fit the scratch area.
 */
int dl_kvm_fx_buffer(struct dl_kvm_fixup *fx, uint64_t *arg, size_t len,
		     int dir, bool by_result)
{
	uintptr_t va = (uintptr_t)*arg, host;
	size_t contig;
	if (!va)
		return 0;
	if (!len) {
		/* the kernel touches nothing: translate what can be */
		if (fx->translate(va, &host, &contig) && host != va)
			*arg = host;
		return 0;
	}
	int r = dl_kvm_fx_range_host(fx, va, len, &host);
	if (r < 0)
		return r;
	if (r == RUN_ONE) {
		if (host != va) {
			*arg = host;
			COUNT(translated, 1);
		}
		return 0;
	}
	void *bounce = dl_kvm_fx_scratch_take(fx, len);
	if (!bounce)
		return -ENOMEM;
	r = copy_in(fx, bounce, va, len);
	if (r < 0)
		return r;
	if (dir & DUNE_SC_OUT) {
		struct dl_kvm_fixup_action *a =
			dl_kvm_fx_add_action(fx, ACT_COPYBACK, va, bounce, len);
		if (!a)
			return -ENOMEM;
		a->by_result = by_result;
	}
	*arg = (uintptr_t)bounce;
	COUNT(bounced, 1);
	COUNT(bounced_bytes, len);
	return 0;
}

/* Read a value of len bytes at a guest address. */
int dl_kvm_fx_read_guest(struct dl_kvm_fixup *fx, uintptr_t va, void *dst,
			 size_t len)
{
	return copy_in(fx, dst, va, len);
}

/*
 * A NUL-terminated string.  With trunc_ok, a string without a NUL within
 * limit bytes is taken as its first limit bytes (prctl's 16-byte names).
 */
int dl_kvm_fx_string(struct dl_kvm_fixup *fx, uint64_t *arg, size_t limit,
		     bool trunc_ok)
{
	uintptr_t va = (uintptr_t)*arg, host;
	size_t contig;
	if (!va)
		return 0;
	if (!fx->translate(va, &host, &contig))
		return -EFAULT;
	if (host == va)
		return 0; /* not alias: the kernel reads it itself */
	size_t len = 0; /* bytes before the NUL */
	bool found = false, one_run = true;
	uintptr_t p = va;
	uintptr_t h = host;
	for (;;) {
		size_t n = contig < limit - len ? contig : limit - len;
		const char *z = memchr((const void *)h, 0, n);
		if (z) {
			len += (size_t)(z - (const char *)h);
			found = true;
			break;
		}
		len += n;
		p += n;
		if (len >= limit)
			break;
		one_run = false;
		if (!fx->translate(p, &h, &contig))
			return -EFAULT;
	}
	if (!found && !trunc_ok)
		return -ENAMETOOLONG;
	size_t need = found ? len + 1 : len;
	COUNT(strings, 1);
	if (one_run) {
		*arg = host;
		return 0;
	}
	char *copy = dl_kvm_fx_scratch_take(fx, need);
	if (!copy)
		return -ENOMEM;
	int r = copy_in(fx, copy, va, need);
	if (r < 0)
		return r;
	*arg = (uintptr_t)copy;
	COUNT(bounced, 1);
	COUNT(bounced_bytes, need);
	return 0;
}


/* The best effort for a pointer of unknown extent: its first run. */
int dl_kvm_fx_unknown(struct dl_kvm_fixup *fx, uint64_t *arg)
{
	uintptr_t va = (uintptr_t)*arg, host;
	size_t contig;
	if (!va || !dl_kvm_fx_is_alias(fx, va))
		return 0;
	if (!fx->translate(va, &host, &contig))
		return -EFAULT;
	*arg = host;
	COUNT(unknown_commands, 1);
	return 0;
}

/* A buffer's length from the program's arguments. */
int dl_kvm_fx_buf_len(struct dl_kvm_fixup *fx, const struct dune_sc_arg *arg,
		      size_t *len)
{
	*len = 0;
	if (arg->len_arg < 0 || arg->len_arg > 5)
		return 0;
	uint64_t n = fx->args[arg->len_arg];
	size_t elem = arg->size ? arg->size : 1;
	switch (arg->len_unit) {
	case DUNE_SC_LEN_BYTES:
		*len = n;
		break;
	case DUNE_SC_LEN_ELEMS:
		if (n > SIZE_MAX / elem)
			return 0;
		*len = n * elem;
		break;
	case DUNE_SC_LEN_BITS:
		*len = (n + 63) / 64 * 8;
		break;
	case DUNE_SC_LEN_PAGES:
		*len = (n + PAGE - 1) / PAGE;
		break;
	case DUNE_SC_LEN_PTR: {
		int32_t v;
		if (!n || !dl_kvm_fx_readable(fx, n))
			return 0;
		int r = dl_kvm_fx_read_guest(fx, n, &v, 4);
		if (r < 0)
			return r;
		*len = v > 0 ? (size_t)v : 0;
		break;
	}
	}
	if (*len)
		*len += arg->extra;
	return 0;
}

int dl_kvm_fx_selfsized_len(struct dl_kvm_fixup *fx, uintptr_t va,
			    const struct dune_sc_arg *arg, size_t *len)
{
	uint32_t v;
	*len = 0;
	if (!dl_kvm_fx_readable(fx, va))
		return 0;
	int r = dl_kvm_fx_read_guest(fx, va, &v, 4);
	if (r < 0)
		return r;
	if (arg->type && !strcmp(arg->type, "struct file_handle"))
		*len = 8 + (v <= 128 ? v : 128); /* MAX_HANDLE_SZ */
	else
		*len = v ? v : arg->size;
	if (*len > PAGE)
		*len = PAGE;
	return 0;
}
