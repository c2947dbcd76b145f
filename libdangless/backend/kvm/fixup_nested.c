/* SPDX-License-Identifier: MIT */
/*
 * Arguments that point to arrays of further pointers: argv/envp string
 * arrays, iovec arrays (an alias base split into one iovec per host run),
 * and msghdr/mmsghdr (name, iovecs and control of each, copied back after
 * recvmsg/recvmmsg by the post-hook).
 */
#include <errno.h>

#include "fixup_shared.h"

/* argv/envp: a NULL-terminated array of strings. */
int dl_kvm_fx_strarray(struct dl_kvm_fixup *fx, uint64_t *arg)
{
	uintptr_t va = (uintptr_t)*arg;
	if (!dl_kvm_fx_readable(fx, va))
		return 0;
	bool any = dl_kvm_fx_is_alias(fx, va);
	size_t n = 0;
	for (;;) {
		uint64_t s;
		int r = dl_kvm_fx_read_guest(fx, va + n * 8, &s, 8);
		if (r < 0)
			return r;
		if (!s)
			break;
		any |= dl_kvm_fx_is_alias(fx, (uintptr_t)s);
		if (++n >= fx->scratch_size / 8)
			return -E2BIG;
	}
	if (!any)
		return 0;
	uint64_t *copy = dl_kvm_fx_scratch_take(fx, (n + 1) * 8);
	if (!copy)
		return -E2BIG;
	for (size_t i = 0; i < n; i++) {
		int r = dl_kvm_fx_read_guest(fx, va + i * 8, &copy[i], 8);
		if (r < 0)
			return r;
		if (!copy[i])
			return -EFAULT; /* changed under us */
		r = dl_kvm_fx_string(fx, &copy[i], MAX_ARG_STRLEN, false);
		if (r < 0)
			return r == -ENOMEM ? -E2BIG : r;
	}
	copy[n] = 0;
	*arg = (uintptr_t)copy;
	COUNT(nested, 1);
	return 0;
}

/* ---- iovecs ---- */

struct kiovec {
	uint64_t base, len;
};

/* How many host runs [base, base+len) takes, or -EFAULT. */
static long count_runs(struct dl_kvm_fixup *fx, uintptr_t base, size_t len)
{
	long runs = 0;
	while (len) {
		uintptr_t h;
		size_t contig;
		if (!fx->translate(base, &h, &contig))
			return -EFAULT;
		size_t n = contig < len ? contig : len;
		base += n;
		len -= n;
		runs++;
	}
	return runs ? runs : 1;
}

/*
 * An array of count iovecs at *arg whose bases are this process's memory
 * (or another's when remote: only the array is translated).  May rewrite
 * *count_arg when a base splits into runs.
 */
int dl_kvm_fx_iovec(struct dl_kvm_fixup *fx, uint64_t *arg,
		    uint64_t *count_arg, bool remote)
{
	uintptr_t va = (uintptr_t)*arg;
	uint64_t count = *count_arg;
	if (!count || count > UIO_MAXIOV || !dl_kvm_fx_readable(fx, va))
		return 0; /* the kernel answers these itself */
	size_t bytes = count * sizeof(struct kiovec);
	if (remote)
		return dl_kvm_fx_buffer(fx, arg, bytes, DUNE_SC_IN, false);
	bool any = dl_kvm_fx_is_alias(fx, va);
	long total = 0;
	for (uint64_t i = 0; i < count; i++) {
		struct kiovec v;
		int r = dl_kvm_fx_read_guest(fx, va + i * sizeof(v), &v,
					     sizeof(v));
		if (r < 0)
			return r;
		if (!v.base || !dl_kvm_fx_is_alias(fx, v.base)) {
			total++;
			continue;
		}
		any = true;
		long runs = v.len ? count_runs(fx, v.base, v.len) : 1;
		if (runs < 0)
			return (int)runs;
		total += runs;
	}
	if (!any)
		return 0;
	if (total > UIO_MAXIOV) {
		COUNT(refused, 1);
		return -ENOMEM;
	}
	struct kiovec *copy =
		dl_kvm_fx_scratch_take(fx, (size_t)total * sizeof(*copy));
	if (!copy)
		return -ENOMEM;
	size_t out = 0;
	for (uint64_t i = 0; i < count; i++) {
		struct kiovec v;
		int r = dl_kvm_fx_read_guest(fx, va + i * sizeof(v), &v,
					     sizeof(v));
		if (r < 0)
			return r;
		if (!v.base || !dl_kvm_fx_is_alias(fx, v.base)) {
			if (out >= (size_t)total)
				return -EFAULT; /* changed under us */
			copy[out++] = v;
			continue;
		}
		if (!v.len) {
			uintptr_t h;
			size_t contig;
			bool ok = fx->translate(v.base, &h, &contig);
			if (out >= (size_t)total)
				return -EFAULT;
			copy[out++] = (struct kiovec){ok ? h : 0, 0};
			continue;
		}
		uintptr_t b = v.base;
		size_t len = v.len;
		while (len) {
			uintptr_t h;
			size_t contig;
			if (!fx->translate(b, &h, &contig))
				return -EFAULT;
			size_t n = contig < len ? contig : len;
			if (out >= (size_t)total)
				return -EFAULT;
			copy[out++] = (struct kiovec){h, n};
			b += n;
			len -= n;
		}
		COUNT(translated, 1);
	}
	*arg = (uintptr_t)copy;
	*count_arg = out;
	COUNT(nested, 1);
	return 0;
}

/* ---- msghdr, mmsghdr ---- */


/* The pointers of a msghdr already copied to m; *changed if any moved. */
static int fix_msghdr_fields(struct dl_kvm_fixup *fx, struct kmsghdr *m,
			     bool recv, bool *changed)
{
	int dir = recv ? DUNE_SC_OUT : DUNE_SC_IN;
	uint64_t name = m->name, iov = m->iov, control = m->control;
	int r = 0;
	if (m->namelen > 0)
		r = dl_kvm_fx_buffer(fx, &m->name, (size_t)m->namelen, dir,
				     false);
	if (!r)
		r = dl_kvm_fx_iovec(fx, &m->iov, &m->iovlen, false);
	if (!r && m->controllen)
		r = dl_kvm_fx_buffer(fx, &m->control, m->controllen, dir,
				     false);
	*changed |= m->name != name || m->iov != iov || m->control != control;
	return r;
}

int dl_kvm_fx_msghdr(struct dl_kvm_fixup *fx, uint64_t *arg, bool recv)
{
	uintptr_t va = (uintptr_t)*arg;
	if (!dl_kvm_fx_readable(fx, va))
		return 0;
	size_t mark = fx->used;
	struct kmsghdr *m = dl_kvm_fx_scratch_take(fx, sizeof(*m));
	if (!m)
		return -ENOMEM;
	int r = dl_kvm_fx_read_guest(fx, va, m, sizeof(*m));
	if (r < 0)
		return r;
	bool changed = false;
	r = fix_msghdr_fields(fx, m, recv, &changed);
	if (r < 0)
		return r;
	uintptr_t host;
	if (!changed &&
	    dl_kvm_fx_range_host(fx, va, sizeof(*m), &host) == RUN_ONE) {
		fx->used = mark; /* nothing was bounced: give the copy back */
		if (host != va) {
			*arg = host;
			COUNT(translated, 1);
		}
		return 0;
	}
	if (recv && !dl_kvm_fx_add_action(fx, ACT_MSGHDR, va, m, 1))
		return -ENOMEM;
	*arg = (uintptr_t)m;
	COUNT(nested, 1);
	return 0;
}

int dl_kvm_fx_mmsghdr(struct dl_kvm_fixup *fx, uint64_t *arg,
		      uint64_t *vlen_arg, bool recv)
{
	uintptr_t va = (uintptr_t)*arg;
	uint64_t vlen = *vlen_arg;
	if (!vlen || !dl_kvm_fx_readable(fx, va))
		return 0;
	if (vlen > UIO_MAXIOV)
		vlen = UIO_MAXIOV; /* what the kernel does */
	size_t mark = fx->used;
	struct kmmsghdr *copy =
		dl_kvm_fx_scratch_take(fx, vlen * sizeof(*copy));
	if (!copy) {
		/* as many as fit, with room for their bounces */
		size_t room = fx->scratch_size > fx->used
				      ? (fx->scratch_size - fx->used) / 2
				      : 0;
		vlen = room / sizeof(*copy);
		if (!vlen)
			return -ENOMEM;
		copy = dl_kvm_fx_scratch_take(fx, vlen * sizeof(*copy));
		if (!copy)
			return -ENOMEM;
		COUNT(shortened, 1);
	}
	bool changed = vlen != *vlen_arg;
	uint64_t done = 0;
	for (; done < vlen; done++) {
		size_t before = fx->used;
		int r = dl_kvm_fx_read_guest(fx, va + done * sizeof(*copy),
					     &copy[done], sizeof(*copy));
		if (r < 0)
			return r;
		r = fix_msghdr_fields(fx, &copy[done].hdr, recv, &changed);
		if (r == -ENOMEM && done > 0) {
			fx->used = before; /* stop here: a short count */
			changed = true;
			COUNT(shortened, 1);
			break;
		}
		if (r < 0)
			return r;
	}
	uintptr_t host;
	if (!changed && dl_kvm_fx_range_host(fx, va, vlen * sizeof(*copy),
					     &host) == RUN_ONE) {
		fx->used = mark;
		if (host != va) {
			*arg = host;
			COUNT(translated, 1);
		}
		return 0;
	}
	struct dl_kvm_fixup_action *a =
		dl_kvm_fx_add_action(fx, ACT_MMSGHDR, va, copy, (size_t)done);
	if (!a)
		return -ENOMEM;
	a->recv = recv;
	*arg = (uintptr_t)copy;
	*vlen_arg = done;
	COUNT(nested, 1);
	return 0;
}
