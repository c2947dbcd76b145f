/* SPDX-License-Identifier: MIT */
/*
 * What the kvm backend's fix-up files share, private to them (fixup.h is
 * the seam to the rest of the backend).  The files are layered, each
 * calling only those below it, never up:
 *
 *   fixup.c         the pre/post entry points and the generic walk
 *   fixup_cmd.c     command-dependent arguments (ioctl, fcntl, prctl, ...)
 *   fixup_struct.c  structs holding pointers, by the table's type name
 *   fixup_nested.c  argv/envp, iovecs, msghdr/mmsghdr
 *   fixup_buf.c     scratch, actions, translation, buffers, strings
 */
#ifndef DANGLESS_KVM_FIXUP_SHARED_H
#define DANGLESS_KVM_FIXUP_SHARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fixup.h"
#include "syscall_args.h"

#define PAGE 4096UL
/* below this a non-alias pointer is left to the kernel, never read */
#define LOW_LIMIT 0x10000UL
/* the end of the lower half: above it, only alias space is ours */
#define USER_LIMIT 0x800000000000UL
#define UIO_MAXIOV 1024
#define MAX_ARG_STRLEN (32 * PAGE)

/* ---- the per-call state: what the post-hook does ---- */

enum action_kind {
	ACT_COPYBACK,        /* copy len bytes of copy to guest */
	ACT_COPYBACK_MASKED, /* the same, but not the 64-bit words in mask */
	ACT_MSGHDR,          /* recvmsg: the lengths and flags of copy */
	ACT_MMSGHDR,         /* msg_len (and for recvmmsg the msghdr fields) */
	ACT_ALTSTACK_OLD,    /* the old stack_t at guest: host ss_sp -> alias */
	ACT_ALTSTACK_SET,    /* remember (guest, host) as the thread's stack */
};

struct dl_kvm_fixup_action {
	struct dl_kvm_fixup_action *next;
	uint8_t kind;
	bool by_result; /* COPYBACK: at most the call's result in bytes */
	bool recv;      /* MMSGHDR: recvmmsg */
	uintptr_t guest;
	void *copy;
	size_t len;     /* bytes, or entries for MMSGHDR */
	uint64_t mask;  /* COPYBACK_MASKED, or the host address for SET */
};

extern struct dl_kvm_fixup_stats dl_kvm_fx_stats;

#define COUNT(field, n) \
	__atomic_fetch_add(&dl_kvm_fx_stats.field, (n), __ATOMIC_RELAXED)

/* ---- fixup_buf.c ---- */

void *dl_kvm_fx_scratch_take(struct dl_kvm_fixup *fx, size_t len);
struct dl_kvm_fixup_action *dl_kvm_fx_add_action(struct dl_kvm_fixup *fx,
						 enum action_kind kind,
						 uintptr_t guest, void *copy,
						 size_t len);
bool dl_kvm_fx_is_alias(struct dl_kvm_fixup *fx, uintptr_t va);
bool dl_kvm_fx_readable(struct dl_kvm_fixup *fx, uintptr_t va);

enum { RUN_ONE = 0, RUN_SPLIT = 1 };

int dl_kvm_fx_range_host(struct dl_kvm_fixup *fx, uintptr_t va, size_t len,
			 uintptr_t *host);
void dl_kvm_fx_copy_out(struct dl_kvm_fixup *fx, uintptr_t va,
			const void *src, size_t len);
int dl_kvm_fx_translate_kept(struct dl_kvm_fixup *fx, uint64_t *arg,
			     size_t len);
int dl_kvm_fx_buffer(struct dl_kvm_fixup *fx, uint64_t *arg, size_t len,
		     int dir, bool by_result);
int dl_kvm_fx_read_guest(struct dl_kvm_fixup *fx, uintptr_t va, void *dst,
			 size_t len);
int dl_kvm_fx_string(struct dl_kvm_fixup *fx, uint64_t *arg, size_t limit,
		     bool trunc_ok);
int dl_kvm_fx_unknown(struct dl_kvm_fixup *fx, uint64_t *arg);
int dl_kvm_fx_buf_len(struct dl_kvm_fixup *fx, const struct dune_sc_arg *arg,
		      size_t *len);
int dl_kvm_fx_selfsized_len(struct dl_kvm_fixup *fx, uintptr_t va,
			    const struct dune_sc_arg *arg, size_t *len);

/* ---- fixup_nested.c ---- */


struct kmsghdr {
	uint64_t name;
	int32_t namelen;
	uint32_t pad0;
	uint64_t iov;
	uint64_t iovlen;
	uint64_t control;
	uint64_t controllen;
	uint32_t flags;
	uint32_t pad1;
};
_Static_assert(sizeof(struct kmsghdr) == 56, "struct user_msghdr");

struct kmmsghdr {
	struct kmsghdr hdr;
	uint32_t len;
	uint32_t pad;
};
_Static_assert(sizeof(struct kmmsghdr) == 64, "struct mmsghdr");

int dl_kvm_fx_strarray(struct dl_kvm_fixup *fx, uint64_t *arg);
int dl_kvm_fx_iovec(struct dl_kvm_fixup *fx, uint64_t *arg,
		    uint64_t *count_arg, bool remote);
int dl_kvm_fx_msghdr(struct dl_kvm_fixup *fx, uint64_t *arg, bool recv);
int dl_kvm_fx_mmsghdr(struct dl_kvm_fixup *fx, uint64_t *arg,
		      uint64_t *vlen_arg, bool recv);

/* ---- fixup_struct.c ---- */

int dl_kvm_fx_sock_fprog(struct dl_kvm_fixup *fx, uint64_t *arg);
int dl_kvm_fx_nested(struct dl_kvm_fixup *fx, uint64_t nr, int i,
		     uint64_t *a, const struct dune_sc_arg *arg, bool kept);

/* ---- fixup_cmd.c ---- */

int dl_kvm_fx_depends(struct dl_kvm_fixup *fx, uint64_t nr, int i,
		      uint64_t *a);

#endif
