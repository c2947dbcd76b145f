/*
 * The kvm backend's system-call fix-ups (libdangless/backend/kvm/fixup.c),
 * on the host: a fake alias space whose pages map onto the pages of an
 * ordinary buffer in a scrambled order (so that buffers crossing a page
 * boundary are not contiguous in host memory) with one revoked page.
 * Nothing is mapped at the fake alias addresses, so a call the fix-up
 * leaves holding an alias fails with EFAULT: each test builds a frame by
 * hand, runs the pre-hook, checks the rewritten arguments, performs the
 * real system call with them, runs the post-hook and checks what the
 * program sees.
 */
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>

#include "fixup.h"
#include "harness.h"

#define PG 4096UL
#define NPAGES 16
#define FAKE_BASE 0x7e0000000000UL
#define REVOKED (-1)
#define ALIAS(page, off) (FAKE_BASE + (page) * PG + (off))

/* alias page -> backing page: only 0-1 are neighbours in host memory, 15
 * is revoked */
static const int perm[NPAGES] = {0, 1, 5, 3, 7, 2, 9, 4,
				 11, 6, 13, 8, 10, 12, 14, REVOKED};
static unsigned char *backing;

static bool fake_translate(uintptr_t va, uintptr_t *host, size_t *contig)
{
	if (va < FAKE_BASE || va >= FAKE_BASE + NPAGES * PG) {
		*host = va;
		*contig = SIZE_MAX;
		return true;
	}
	size_t p = (va - FAKE_BASE) / PG, off = va % PG;
	if (perm[p] == REVOKED)
		return false;
	*host = (uintptr_t)backing + (size_t)perm[p] * PG + off;
	size_t c = PG - off;
	while (p + 1 < NPAGES && perm[p + 1] == perm[p] + 1) {
		c += PG;
		p++;
	}
	*contig = c;
	return true;
}

static bool in_fake(uint64_t v)
{
	return v >= FAKE_BASE && v < FAKE_BASE + NPAGES * PG;
}

static unsigned char *host_of(uintptr_t alias)
{
	uintptr_t h;
	size_t c;
	if (!fake_translate(alias, &h, &c))
		abort();
	return (unsigned char *)h;
}

/* The program's view of alias memory, page by page (the test's own copy of
 * the walk, independent of fixup.c's). */
static void alias_put(uintptr_t va, const void *src, size_t len)
{
	const unsigned char *s = src;
	for (size_t i = 0; i < len; i++)
		*host_of(va + i) = s[i];
}

static void alias_get(uintptr_t va, void *dst, size_t len)
{
	unsigned char *d = dst;
	for (size_t i = 0; i < len; i++)
		d[i] = *host_of(va + i);
}

static uint64_t alias_word(uintptr_t va)
{
	uint64_t v;
	alias_get(va, &v, 8);
	return v;
}

static unsigned char scratch[DL_KVM_FIXUP_SCRATCH_SIZE];
static struct dl_kvm_fixup fx;

static bool in_scratch(uint64_t v)
{
	return v >= (uintptr_t)scratch && v < (uintptr_t)scratch + sizeof(scratch);
}

static void setup(void)
{
	backing = mmap(NULL, NPAGES * PG, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (backing == MAP_FAILED)
		abort();
	/* nothing of ours at the fake addresses: a leaked alias gives EFAULT */
	void *probe = mmap((void *)FAKE_BASE, NPAGES * PG, PROT_NONE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
			   -1, 0);
	if (probe != MAP_FAILED)
		munmap(probe, NPAGES * PG);
	memset(backing, 0xee, NPAGES * PG);
	dl_kvm_fixup_init(&fx, scratch, sizeof(scratch));
}

static struct dune_tf frame(long nr, uint64_t a0, uint64_t a1, uint64_t a2,
			    uint64_t a3, uint64_t a4, uint64_t a5)
{
	struct dune_tf tf;
	memset(&tf, 0, sizeof(tf));
	tf.vector = DUNE_SYSCALL_VECTOR;
	tf.rax = (uint64_t)nr;
	tf.rdi = a0;
	tf.rsi = a1;
	tf.rdx = a2;
	tf.r10 = a3;
	tf.r8 = a4;
	tf.r9 = a5;
	return tf;
}

/* What libdune does between the hooks: the call, on the host. */
static void host_call(struct dune_tf *tf)
{
	tf->err = tf->rax;
	long r = syscall((long)tf->rax, tf->rdi, tf->rsi, tf->rdx, tf->r10,
			 tf->r8, tf->r9);
	tf->rax = (uint64_t)(r == -1 ? -errno : r);
}

static void assert_no_alias_args(const struct dune_tf *tf)
{
	const uint64_t a[6] = {tf->rdi, tf->rsi, tf->rdx,
			       tf->r10, tf->r8, tf->r9};
	for (int i = 0; i < 6; i++)
		if (in_fake(a[i])) {
			TH_LOG("argument %d still an alias: 0x%" PRIx64, i, a[i]);
			ASSERT_FALSE(in_fake(a[i]));
		}
}

static void assert_args_are(const struct dune_tf *tf, const struct dune_tf *orig)
{
	ASSERT_EQ(orig->rdi, tf->rdi);
	ASSERT_EQ(orig->rsi, tf->rsi);
	ASSERT_EQ(orig->rdx, tf->rdx);
	ASSERT_EQ(orig->r10, tf->r10);
	ASSERT_EQ(orig->r8, tf->r8);
	ASSERT_EQ(orig->r9, tf->r9);
}

/* pre, the call, post; the arguments the host got in *seen */
static long run(struct dune_tf *tf, struct dune_tf *seen)
{
	struct dune_tf orig = *tf;
	bool go = dl_kvm_fixup_pre(tf, &fx, fake_translate);
	if (seen)
		*seen = *tf;
	if (go) {
		assert_no_alias_args(tf);
		host_call(tf);
	}
	dl_kvm_fixup_post(tf, &fx);
	assert_args_are(tf, &orig);
	return (long)tf->rax;
}

static void fill_pattern(unsigned char *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)(seed + i * 7 + (i >> 8));
}

/* ---- buffers ---- */

TEST(write_from_buffer_crossing_noncontiguous_pages_bounces)
{
	setup();
	int p[2];
	ASSERT_EQ(0, pipe(p));
	unsigned char data[200], got[200];
	fill_pattern(data, sizeof(data), 1);
	uintptr_t buf = ALIAS(2, PG - 100); /* pages 2 and 3: not neighbours */
	alias_put(buf, data, sizeof(data));
	struct dune_tf seen, tf = frame(SYS_write, p[1], buf, 200, 0, 0, 0);
	ASSERT_EQ(200, run(&tf, &seen));
	ASSERT_TRUE(in_scratch(seen.rsi));
	ASSERT_EQ(200, read(p[0], got, sizeof(got)));
	ASSERT_EQ(0, memcmp(data, got, sizeof(data)));
}

TEST(read_into_crossing_buffer_leaves_unread_bytes_as_they_were)
{
	setup();
	int p[2];
	ASSERT_EQ(0, pipe(p));
	unsigned char data[200], got[300], before[300];
	fill_pattern(data, sizeof(data), 3);
	ASSERT_EQ(200, write(p[1], data, sizeof(data)));
	uintptr_t buf = ALIAS(4, PG - 150); /* pages 4 and 5 */
	fill_pattern(before, sizeof(before), 99);
	alias_put(buf, before, sizeof(before));
	struct dune_tf seen, tf = frame(SYS_read, p[0], buf, 300, 0, 0, 0);
	ASSERT_EQ(200, run(&tf, &seen));
	ASSERT_TRUE(in_scratch(seen.rsi));
	alias_get(buf, got, sizeof(got));
	ASSERT_EQ(0, memcmp(data, got, 200));
	/* the 100 bytes the kernel did not write are as they were */
	ASSERT_EQ(0, memcmp(before + 200, got + 200, 100));
}

TEST(contiguous_buffer_passes_by_host_address)
{
	setup();
	int p[2];
	ASSERT_EQ(0, pipe(p));
	unsigned char data[300], got[300];
	fill_pattern(data, sizeof(data), 5);
	uintptr_t buf = ALIAS(0, PG - 100); /* pages 0 and 1: neighbours */
	alias_put(buf, data, sizeof(data));
	struct dune_tf seen, tf = frame(SYS_write, p[1], buf, 300, 0, 0, 0);
	ASSERT_EQ(300, run(&tf, &seen));
	ASSERT_EQ((uintptr_t)backing + PG - 100, seen.rsi);
	ASSERT_EQ(300, read(p[0], got, sizeof(got)));
	ASSERT_EQ(0, memcmp(data, got, sizeof(got)));
}

TEST(read_too_big_for_scratch_is_cut_to_its_first_run)
{
	setup();
	static unsigned char small[DL_KVM_FIXUP_SCRATCH_MIN];
	dl_kvm_fixup_init(&fx, small, sizeof(small));
	int p[2];
	ASSERT_EQ(0, pipe(p));
	ASSERT_EQ(0, fcntl(p[1], F_SETPIPE_SZ, 65536) < 0);
	static unsigned char data[3 * 4096 + 500], got[sizeof(data)];
	fill_pattern(data, sizeof(data), 7);
	ASSERT_EQ((long)sizeof(data), write(p[1], data, sizeof(data)));
	uintptr_t buf = ALIAS(6, 1000); /* pages 6..9, none neighbours */
	struct dune_tf seen, tf = frame(SYS_read, p[0], buf, sizeof(data), 0, 0, 0);
	long r = run(&tf, &seen);
	ASSERT_EQ((long)(PG - 1000), r); /* a short count: the first run */
	ASSERT_EQ(PG - 1000, seen.rdx);
	alias_get(buf, got, (size_t)r);
	ASSERT_EQ(0, memcmp(data, got, (size_t)r));
	struct dl_kvm_fixup_stats st;
	dl_kvm_fixup_get_stats(&st);
	ASSERT_EQ(1u, st.shortened);
}

TEST(recvfrom_too_big_for_scratch_is_refused_with_enomem)
{
	setup();
	static unsigned char small[DL_KVM_FIXUP_SCRATCH_MIN];
	dl_kvm_fixup_init(&fx, small, sizeof(small));
	int sv[2];
	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_DGRAM, 0, sv));
	ASSERT_EQ(3, write(sv[1], "abc", 3));
	struct dune_tf tf = frame(SYS_recvfrom, sv[0], ALIAS(6, 1000), 3 * PG,
				  0, 0, 0);
	ASSERT_EQ(-ENOMEM, run(&tf, NULL));
	/* not made: the datagram is still there */
	int n = 0;
	ASSERT_EQ(0, ioctl(sv[0], FIONREAD, &n));
	ASSERT_EQ(3, n);
}

TEST(revoked_page_gives_efault_without_calling)
{
	setup();
	int p[2];
	ASSERT_EQ(0, pipe(p));
	/* a buffer on page 14 running into the revoked page 15 */
	struct dune_tf seen, tf = frame(SYS_write, p[1], ALIAS(14, PG - 10), 20,
					0, 0, 0);
	ASSERT_FALSE(dl_kvm_fixup_pre(&tf, &fx, fake_translate));
	ASSERT_EQ((uint64_t)-EFAULT, tf.rax);
	seen = tf;
	dl_kvm_fixup_post(&tf, &fx);
	ASSERT_EQ(ALIAS(14, PG - 10), tf.rsi);
	(void)seen;
	int n = -1;
	ASSERT_EQ(0, ioctl(p[0], FIONREAD, &n));
	ASSERT_EQ(0, n); /* nothing was written */
	/* and a path on the revoked page */
	tf = frame(SYS_open, ALIAS(15, 0), O_RDONLY, 0, 0, 0, 0);
	ASSERT_EQ(-EFAULT, run(&tf, NULL));
	struct dl_kvm_fixup_stats st;
	dl_kvm_fixup_get_stats(&st);
	ASSERT_EQ(2u, st.efault);
}

/* ---- iovecs ---- */

static void put_iov(uintptr_t at, int i, uint64_t base, uint64_t len)
{
	alias_put(at + (uintptr_t)i * 16, &base, 8);
	alias_put(at + (uintptr_t)i * 16 + 8, &len, 8);
}

TEST(writev_with_iovec_array_and_bases_in_alias_space)
{
	setup();
	int p[2];
	ASSERT_EQ(0, pipe(p));
	unsigned char a[300], b[100], got[400];
	fill_pattern(a, sizeof(a), 11);
	fill_pattern(b, sizeof(b), 13);
	uintptr_t base_a = ALIAS(8, PG - 100); /* pages 8, 9: apart */
	uintptr_t base_b = ALIAS(0, 500);
	alias_put(base_a, a, sizeof(a));
	alias_put(base_b, b, sizeof(b));
	uintptr_t iov = ALIAS(10, PG - 16); /* the array crosses 10 -> 11 */
	put_iov(iov, 0, base_a, sizeof(a));
	put_iov(iov, 1, base_b, sizeof(b));
	struct dune_tf seen, tf = frame(SYS_writev, p[1], iov, 2, 0, 0, 0);
	ASSERT_EQ(400, run(&tf, &seen));
	ASSERT_EQ(3u, seen.rdx); /* base_a became two runs */
	ASSERT_TRUE(in_scratch(seen.rsi));
	const struct iovec *v = (const struct iovec *)seen.rsi;
	ASSERT_EQ((uintptr_t)host_of(base_a), (uintptr_t)v[0].iov_base);
	ASSERT_EQ(100u, v[0].iov_len);
	ASSERT_EQ((uintptr_t)host_of(base_a + 100), (uintptr_t)v[1].iov_base);
	ASSERT_EQ(200u, v[1].iov_len);
	ASSERT_EQ(400, read(p[0], got, sizeof(got)));
	ASSERT_EQ(0, memcmp(a, got, 300));
	ASSERT_EQ(0, memcmp(b, got + 300, 100));
}

TEST(readv_scatters_into_alias_bases)
{
	setup();
	int p[2];
	ASSERT_EQ(0, pipe(p));
	unsigned char data[250], got[250];
	fill_pattern(data, sizeof(data), 17);
	ASSERT_EQ(250, write(p[1], data, sizeof(data)));
	uintptr_t base_a = ALIAS(12, PG - 50), base_b = ALIAS(3, 7);
	struct iovec iov[2] = {{(void *)base_a, 150}, {(void *)base_b, 100}};
	/* the array itself on the stack: only its bases are aliases */
	struct dune_tf seen, tf = frame(SYS_readv, p[0], (uintptr_t)iov, 2, 0,
					0, 0);
	ASSERT_EQ(250, run(&tf, &seen));
	ASSERT_NE((uintptr_t)iov, seen.rsi);
	alias_get(base_a, got, 150);
	alias_get(base_b, got + 150, 100);
	ASSERT_EQ(0, memcmp(data, got, sizeof(got)));
	ASSERT_EQ(base_a, (uintptr_t)iov[0].iov_base);
	ASSERT_EQ(base_b, (uintptr_t)iov[1].iov_base);
}

/* Thesis 3.3.4: after writev, iov[i].iov_base still holds the alias. */
TEST(iovec_array_of_the_program_is_unchanged_after_the_call)
{
	setup();
	int p[2];
	ASSERT_EQ(0, pipe(p));
	uintptr_t base = ALIAS(4, PG - 8), iov = ALIAS(7, 0);
	alias_put(base, "0123456789abcdef", 16);
	put_iov(iov, 0, base, 16);
	unsigned char before[16], after[16];
	alias_get(iov, before, 16);
	struct dune_tf tf = frame(SYS_writev, p[1], iov, 1, 0, 0, 0);
	ASSERT_EQ(16, run(&tf, NULL));
	alias_get(iov, after, 16);
	ASSERT_EQ(0, memcmp(before, after, 16));
	ASSERT_EQ(base, alias_word(iov));
	/* run() checked that the registers read back as the program set
	 * them; and the call did happen */
	char got[16];
	ASSERT_EQ(16, read(p[0], got, 16));
	ASSERT_EQ(0, memcmp("0123456789abcdef", got, 16));
}

/* ---- sockets ---- */

TEST(sendmsg_recvmsg_with_name_iov_and_scm_rights_in_alias_space)
{
	setup();
	int sv[2], p[2];
	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_DGRAM, 0, sv));
	ASSERT_EQ(0, pipe(p));
	/* a name for the sender, so that recvmsg has one to report */
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int namelen = snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1,
			       "dl-fixup-%d", (int)getpid());
	socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
				      1 + (size_t)namelen);
	ASSERT_EQ(0, bind(sv[1], (struct sockaddr *)&sa, salen));

	/* sendmsg: msghdr, iovec array, payload and control all aliases */
	uintptr_t payload = ALIAS(2, PG - 5), siov = ALIAS(5, 64);
	uintptr_t sctl = ALIAS(6, PG - 8), smsg = ALIAS(9, PG - 20);
	alias_put(payload, "hello, fixup", 12);
	put_iov(siov, 0, payload, 12);
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c;
	memset(&c, 0, sizeof(c));
	c.h.cmsg_len = CMSG_LEN(sizeof(int));
	c.h.cmsg_level = SOL_SOCKET;
	c.h.cmsg_type = SCM_RIGHTS;
	memcpy(CMSG_DATA(&c.h), &p[0], sizeof(int));
	alias_put(sctl, &c, sizeof(c));
	struct msghdr m = {.msg_iov = (struct iovec *)siov, .msg_iovlen = 1,
			   .msg_control = (void *)sctl,
			   .msg_controllen = sizeof(c)};
	alias_put(smsg, &m, sizeof(m));
	struct dune_tf seen, tf = frame(SYS_sendmsg, sv[1], smsg, 0, 0, 0, 0);
	ASSERT_EQ(12, run(&tf, &seen));
	ASSERT_TRUE(in_scratch(seen.rsi));

	/* recvmsg: the same, and a name buffer */
	uintptr_t rbuf = ALIAS(12, PG - 6), riov = ALIAS(14, 200);
	uintptr_t rctl = ALIAS(3, PG - 10), rname = ALIAS(11, PG - 30);
	uintptr_t rmsg = ALIAS(8, PG - 24);
	put_iov(riov, 0, rbuf, 64);
	struct msghdr r = {.msg_name = (void *)rname,
			   .msg_namelen = sizeof(struct sockaddr_un),
			   .msg_iov = (struct iovec *)riov, .msg_iovlen = 1,
			   .msg_control = (void *)rctl,
			   .msg_controllen = sizeof(c)};
	alias_put(rmsg, &r, sizeof(r));
	unsigned char zero[sizeof(c)];
	memset(zero, 0, sizeof(zero));
	alias_put(rctl, zero, sizeof(zero));
	tf = frame(SYS_recvmsg, sv[0], rmsg, 0, 0, 0, 0);
	ASSERT_EQ(12, run(&tf, NULL));

	char got[12];
	alias_get(rbuf, got, 12);
	ASSERT_EQ(0, memcmp("hello, fixup", got, 12));
	struct msghdr after;
	alias_get(rmsg, &after, sizeof(after));
	/* lengths the kernel updated reached the program's msghdr ... */
	ASSERT_EQ(salen, after.msg_namelen);
	ASSERT_EQ(CMSG_SPACE(sizeof(int)), after.msg_controllen);
	/* ... its pointers are still its aliases */
	ASSERT_EQ(rname, (uintptr_t)after.msg_name);
	ASSERT_EQ(riov, (uintptr_t)after.msg_iov);
	ASSERT_EQ(rctl, (uintptr_t)after.msg_control);
	ASSERT_EQ(rbuf, alias_word(riov));
	struct sockaddr_un from;
	alias_get(rname, &from, sizeof(from));
	ASSERT_EQ(0, memcmp(&sa, &from, salen));
	/* the descriptor passed works */
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} rc;
	alias_get(rctl, &rc, sizeof(rc));
	ASSERT_EQ(SCM_RIGHTS, rc.h.cmsg_type);
	int fd;
	memcpy(&fd, CMSG_DATA(&rc.h), sizeof(int));
	ASSERT_NE(p[0], fd);
	ASSERT_EQ(4, write(p[1], "pipe", 4));
	char pg[4];
	ASSERT_EQ(4, read(fd, pg, 4));
	ASSERT_EQ(0, memcmp("pipe", pg, 4));
}

TEST(sendmmsg_recvmmsg_copy_back_msg_len)
{
	setup();
	int sv[2];
	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_DGRAM, 0, sv));
	uintptr_t arr = ALIAS(4, PG - 64); /* two mmsghdrs across 4 -> 5 */
	uintptr_t b0 = ALIAS(9, PG - 3), b1 = ALIAS(2, 0);
	uintptr_t iovs = ALIAS(12, 0);
	alias_put(b0, "first", 5);
	alias_put(b1, "second!", 7);
	put_iov(iovs, 0, b0, 5);
	put_iov(iovs, 1, b1, 7);
	struct mmsghdr mm[2];
	memset(mm, 0, sizeof(mm));
	mm[0].msg_hdr.msg_iov = (struct iovec *)iovs;
	mm[0].msg_hdr.msg_iovlen = 1;
	mm[1].msg_hdr.msg_iov = (struct iovec *)(iovs + 16);
	mm[1].msg_hdr.msg_iovlen = 1;
	alias_put(arr, mm, sizeof(mm));
	struct dune_tf tf = frame(SYS_sendmmsg, sv[1], arr, 2, 0, 0, 0);
	ASSERT_EQ(2, run(&tf, NULL));
	alias_get(arr, mm, sizeof(mm));
	ASSERT_EQ(5u, mm[0].msg_len);
	ASSERT_EQ(7u, mm[1].msg_len);

	uintptr_t rarr = ALIAS(10, PG - 100), r0 = ALIAS(6, PG - 2);
	uintptr_t r1 = ALIAS(13, 100), riovs = ALIAS(14, 0);
	put_iov(riovs, 0, r0, 16);
	put_iov(riovs, 1, r1, 16);
	memset(mm, 0, sizeof(mm));
	mm[0].msg_hdr.msg_iov = (struct iovec *)riovs;
	mm[0].msg_hdr.msg_iovlen = 1;
	mm[1].msg_hdr.msg_iov = (struct iovec *)(riovs + 16);
	mm[1].msg_hdr.msg_iovlen = 1;
	alias_put(rarr, mm, sizeof(mm));
	tf = frame(SYS_recvmmsg, sv[0], rarr, 2, MSG_DONTWAIT, 0, 0);
	ASSERT_EQ(2, run(&tf, NULL));
	alias_get(rarr, mm, sizeof(mm));
	ASSERT_EQ(5u, mm[0].msg_len);
	ASSERT_EQ(7u, mm[1].msg_len);
	ASSERT_EQ(riovs, (uintptr_t)mm[0].msg_hdr.msg_iov);
	char got[7];
	alias_get(r0, got, 5);
	ASSERT_EQ(0, memcmp("first", got, 5));
	alias_get(r1, got, 7);
	ASSERT_EQ(0, memcmp("second!", got, 7));
}

TEST(getsockopt_and_setsockopt_through_aliases)
{
	setup();
	int sv[2];
	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_DGRAM, 0, sv));
	uintptr_t val = ALIAS(2, PG - 2), len = ALIAS(4, PG - 2);
	int v = 0, l = sizeof(int);
	alias_put(val, &v, 4);
	alias_put(len, &l, 4);
	struct dune_tf tf = frame(SYS_getsockopt, sv[0], SOL_SOCKET, SO_TYPE,
				  val, len, 0);
	ASSERT_EQ(0, run(&tf, NULL));
	alias_get(val, &v, 4);
	alias_get(len, &l, 4);
	ASSERT_EQ(SOCK_DGRAM, v);
	ASSERT_EQ(4, l);

	v = 1;
	alias_put(val, &v, 4);
	tf = frame(SYS_setsockopt, sv[0], SOL_SOCKET, SO_PASSCRED, val, 4, 0);
	ASSERT_EQ(0, run(&tf, NULL));
	socklen_t sl = sizeof(v);
	v = 0;
	ASSERT_EQ(0, getsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &v, &sl));
	ASSERT_EQ(1, v);
}

/* ---- strings, execve ---- */

static void put_str(uintptr_t at, const char *s)
{
	alias_put(at, s, strlen(s) + 1);
}

TEST(execve_argv_envp_translated_and_run_in_a_child)
{
	setup();
	uintptr_t path = ALIAS(2, PG - 4); /* "/bin/sh" across 2 -> 3 */
	uintptr_t a0 = ALIAS(0, 100), a1 = ALIAS(4, PG - 2);
	uintptr_t a2 = ALIAS(6, 0), a3 = ALIAS(8, PG - 3);
	uintptr_t e0 = ALIAS(10, PG - 6);
	put_str(path, "/bin/sh");
	put_str(a0, "sh");
	put_str(a1, "-c");
	put_str(a2, "test \"$0\" = crossing-arg && test \"$DLFX\" = env-val "
		    "&& test \"$PLAIN\" = plain");
	put_str(a3, "crossing-arg");
	put_str(e0, "DLFX=env-val");
	uintptr_t argv = ALIAS(12, PG - 12); /* the array crosses 12 -> 13 */
	uint64_t ptrs[5] = {a0, a1, a2, a3, 0};
	alias_put(argv, ptrs, sizeof(ptrs));
	/* envp on the stack, one entry an alias, one not */
	const char *envp[3] = {(const char *)e0, "PLAIN=plain", NULL};

	struct dune_tf tf = frame(SYS_execve, path, argv, (uintptr_t)envp, 0,
				  0, 0);
	ASSERT_TRUE(dl_kvm_fixup_pre(&tf, &fx, fake_translate));
	assert_no_alias_args(&tf);
	const char *const *nargv = (const char *const *)tf.rsi;
	const char *const *nenvp = (const char *const *)tf.rdx;
	ASSERT_TRUE(in_scratch(tf.rsi));
	ASSERT_STREQ("/bin/sh", (const char *)tf.rdi);
	const char *want[] = {"sh", "-c", NULL, "crossing-arg"};
	for (int i = 0; i < 4; i++) {
		ASSERT_FALSE(in_fake((uintptr_t)nargv[i]));
		if (want[i])
			ASSERT_STREQ(want[i], nargv[i]);
	}
	ASSERT_NULL(nargv[4]);
	ASSERT_STREQ("DLFX=env-val", nenvp[0]);
	ASSERT_STREQ("PLAIN=plain", nenvp[1]);
	ASSERT_EQ((uintptr_t)envp[1], (uintptr_t)nenvp[1]);
	ASSERT_NULL(nenvp[2]);
	/* the entry wholly inside page 0 is passed in place, the crossing
	 * one is a copy */
	ASSERT_EQ((uintptr_t)host_of(a0), (uintptr_t)nargv[0]);
	ASSERT_TRUE(in_scratch((uintptr_t)nargv[3]));

	fflush(stdout);
	pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		syscall(SYS_execve, tf.rdi, tf.rsi, tf.rdx);
		_exit(127);
	}
	int status;
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(0, WEXITSTATUS(status));
	tf.err = tf.rax;
	tf.rax = 0;
	dl_kvm_fixup_post(&tf, &fx);
	ASSERT_EQ(argv, tf.rsi);
}

TEST(stat_path_and_struct_in_alias_space)
{
	setup();
	uintptr_t path = ALIAS(3, PG - 3), st = ALIAS(12, PG - 50);
	put_str(path, "/proc/self/exe");
	struct dune_tf seen, tf = frame(SYS_stat, path, st, 0, 0, 0, 0);
	ASSERT_EQ(0, run(&tf, &seen));
	ASSERT_TRUE(in_scratch(seen.rdi));
	ASSERT_TRUE(in_scratch(seen.rsi));
	struct stat got, want;
	alias_get(st, &got, sizeof(got));
	ASSERT_EQ(0, stat("/proc/self/exe", &want));
	ASSERT_EQ(want.st_ino, got.st_ino);
	ASSERT_EQ(want.st_mode, got.st_mode);
	ASSERT_EQ(want.st_size, got.st_size);
	/* a path inside one page goes by its host address */
	put_str(ALIAS(0, 10), "/");
	tf = frame(SYS_stat, ALIAS(0, 10), st, 0, 0, 0, 0);
	ASSERT_EQ(0, run(&tf, &seen));
	ASSERT_EQ((uintptr_t)backing + 10, seen.rdi);
	alias_get(st, &got, sizeof(got));
	ASSERT_TRUE(S_ISDIR(got.st_mode));
}

/* ---- poll, select, futex ---- */

TEST(poll_with_pollfd_array_in_alias_space)
{
	setup();
	int p[2];
	ASSERT_EQ(0, pipe(p));
	ASSERT_EQ(1, write(p[1], "x", 1));
	struct pollfd fds[3] = {{p[0], POLLIN, 0x55},
				{p[1], POLLOUT, 0x55},
				{p[0], POLLOUT, 0x55}};
	uintptr_t arr = ALIAS(9, PG - 12); /* across 9 -> 10 */
	alias_put(arr, fds, sizeof(fds));
	struct dune_tf tf = frame(SYS_poll, arr, 3, 1000, 0, 0, 0);
	ASSERT_EQ(2, run(&tf, NULL));
	alias_get(arr, fds, sizeof(fds));
	ASSERT_EQ(POLLIN, fds[0].revents);
	ASSERT_EQ(POLLOUT, fds[1].revents);
	ASSERT_EQ(0, fds[2].revents);
}

TEST(pselect6_with_fd_sets_and_sigset_pair_in_alias_space)
{
	setup();
	int p[2];
	ASSERT_EQ(0, pipe(p));
	ASSERT_EQ(1, write(p[1], "x", 1));
	uintptr_t rset = ALIAS(5, PG - 4), ts = ALIAS(7, PG - 8);
	uintptr_t pair = ALIAS(11, PG - 8), mask = ALIAS(13, PG - 4);
	fd_set r;
	FD_ZERO(&r);
	FD_SET(p[0], &r);
	alias_put(rset, &r, sizeof(r));
	struct timespec t = {5, 0};
	alias_put(ts, &t, sizeof(t));
	uint64_t sigs = 0;
	alias_put(mask, &sigs, 8);
	uint64_t pr[2] = {mask, 8};
	alias_put(pair, pr, sizeof(pr));
	struct dune_tf seen, tf = frame(SYS_pselect6, p[0] + 1, rset, 0, 0, ts,
					pair);
	ASSERT_EQ(1, run(&tf, &seen));
	const uint64_t *np = (const uint64_t *)seen.r9;
	ASSERT_TRUE(in_scratch(seen.r9));
	ASSERT_FALSE(in_fake(np[0]));
	ASSERT_EQ(8u, np[1]);
	alias_get(rset, &r, sizeof(r));
	ASSERT_TRUE(FD_ISSET(p[0], &r));
}

struct waiter {
	uint32_t *word;
	volatile int woken;
};

static void *wait_on(void *arg)
{
	struct waiter *w = arg;
	struct timespec t = {30, 0};
	long r = syscall(SYS_futex, w->word, FUTEX_WAIT, 0, &t, NULL, 0);
	w->woken = r == 0 ? 1 : -1;
	return NULL;
}

TEST(futex_wake_on_an_alias_word_reaches_a_waiter_on_its_host_address)
{
	setup();
	uintptr_t word = ALIAS(8, 128);
	struct waiter w = {(uint32_t *)host_of(word), 0};
	*w.word = 0;
	pthread_t th;
	ASSERT_EQ(0, pthread_create(&th, NULL, wait_on, &w));
	long woke = 0;
	for (int i = 0; i < 10000 && woke == 0; i++) {
		struct dune_tf seen, tf = frame(SYS_futex, word, FUTEX_WAKE, 1,
						0, 0, 0);
		woke = run(&tf, &seen);
		ASSERT_EQ((uintptr_t)w.word, seen.rdi);
		if (!woke)
			usleep(1000);
	}
	ASSERT_EQ(1, woke);
	pthread_join(th, NULL);
	ASSERT_EQ(1, w.woken);
	/* FUTEX_WAIT with its timeout across two pages: the value differs,
	 * so EAGAIN at once (EFAULT had the timeout been left an alias) */
	uintptr_t ts = ALIAS(4, PG - 8);
	struct timespec t = {5, 0};
	alias_put(ts, &t, sizeof(t));
	struct dune_tf tf = frame(SYS_futex, word, FUTEX_WAIT, 1, ts, 0, 0);
	ASSERT_EQ(-EAGAIN, run(&tf, NULL));
}

/* ---- signals ---- */

TEST(sigaltstack_in_alias_space_reads_back_as_the_alias)
{
	setup();
	uintptr_t stack = ALIAS(0, 0); /* pages 0-1: one host run */
	uintptr_t ss = ALIAS(4, PG - 8), oss = ALIAS(6, PG - 12);
	stack_t s = {.ss_sp = (void *)stack, .ss_size = 2 * PG, .ss_flags = 0};
	alias_put(ss, &s, sizeof(s));
	struct dune_tf seen, tf = frame(SYS_sigaltstack, ss, 0, 0, 0, 0, 0);
	ASSERT_EQ(0, run(&tf, &seen));
	const stack_t *passed = (const stack_t *)seen.rdi;
	ASSERT_EQ((uintptr_t)backing, (uintptr_t)passed->ss_sp);
	/* the kernel holds the host address ... */
	stack_t real;
	ASSERT_EQ(0, sigaltstack(NULL, &real));
	ASSERT_EQ((uintptr_t)backing, (uintptr_t)real.ss_sp);
	/* ... and the program reads back its alias */
	tf = frame(SYS_sigaltstack, 0, oss, 0, 0, 0, 0);
	ASSERT_EQ(0, run(&tf, NULL));
	stack_t old;
	alias_get(oss, &old, sizeof(old));
	ASSERT_EQ(stack, (uintptr_t)old.ss_sp);
	ASSERT_EQ(2 * PG, old.ss_size);
	/* a stack that is not one host run cannot be given */
	s.ss_sp = (void *)ALIAS(2, 0);
	alias_put(ss, &s, sizeof(s));
	tf = frame(SYS_sigaltstack, ss, 0, 0, 0, 0, 0);
	ASSERT_EQ(-ENOMEM, run(&tf, NULL));
	ASSERT_EQ(0, sigaltstack(NULL, &real));
	ASSERT_EQ((uintptr_t)backing, (uintptr_t)real.ss_sp);
}

static volatile sig_atomic_t got_usr1;
static void on_usr1(int sig)
{
	(void)sig;
	got_usr1 = 1;
}

struct ksigaction {
	void (*handler)(int);
	unsigned long flags;
	void (*restorer)(void);
	uint64_t mask;
};

TEST(rt_sigaction_with_old_and_new_actions_in_alias_space)
{
	setup();
	/* glibc's restorer, from an action it installed */
	struct ksigaction k;
	ASSERT_EQ(0, sigaction(SIGUSR2, &(struct sigaction){.sa_handler = on_usr1},
			       NULL));
	ASSERT_EQ(0, syscall(SYS_rt_sigaction, SIGUSR2, NULL, &k, 8));
	k.handler = on_usr1;
	k.mask = 0;
	uintptr_t act = ALIAS(10, PG - 16), oact = ALIAS(12, PG - 8);
	alias_put(act, &k, sizeof(k));
	struct dune_tf tf = frame(SYS_rt_sigaction, SIGUSR1, act, oact, 8, 0, 0);
	ASSERT_EQ(0, run(&tf, NULL));
	raise(SIGUSR1);
	ASSERT_EQ(1, got_usr1);
	tf = frame(SYS_rt_sigaction, SIGUSR1, 0, oact, 8, 0, 0);
	ASSERT_EQ(0, run(&tf, NULL));
	struct ksigaction old;
	alias_get(oact, &old, sizeof(old));
	ASSERT_EQ((uintptr_t)on_usr1, (uintptr_t)old.handler);
}

/* ---- command-dependent arguments ---- */

TEST(ioctl_fionread_and_fcntl_getlk_into_alias_structs)
{
	setup();
	int p[2];
	ASSERT_EQ(0, pipe(p));
	ASSERT_EQ(5, write(p[1], "hello", 5));
	uintptr_t n = ALIAS(2, PG - 2); /* the int crosses 2 -> 3 */
	struct dune_tf seen, tf = frame(SYS_ioctl, p[0], FIONREAD, n, 0, 0, 0);
	ASSERT_EQ(0, run(&tf, &seen));
	ASSERT_TRUE(in_scratch(seen.rdx));
	int v;
	alias_get(n, &v, 4);
	ASSERT_EQ(5, v);

	char tmpl[] = "/tmp/dl-fixup-XXXXXX";
	int fd = mkstemp(tmpl);
	ASSERT_GE(fd, 0);
	unlink(tmpl);
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 10};
	uintptr_t lk = ALIAS(8, PG - 16);
	alias_put(lk, &fl, sizeof(fl));
	tf = frame(SYS_fcntl, fd, F_GETLK, lk, 0, 0, 0);
	ASSERT_EQ(0, run(&tf, NULL));
	alias_get(lk, &fl, sizeof(fl));
	ASSERT_EQ(F_UNLCK, fl.l_type); /* written back: no conflicting lock */
	fl.l_type = F_WRLCK;
	alias_put(lk, &fl, sizeof(fl));
	tf = frame(SYS_fcntl, fd, F_SETLK, lk, 0, 0, 0);
	ASSERT_EQ(0, run(&tf, NULL));
}

TEST(unknown_command_with_alias_argument_translates_its_first_run)
{
	setup();
	int p[2];
	ASSERT_EQ(0, pipe(p));
	struct dl_kvm_fixup_stats st0, st1;
	dl_kvm_fixup_get_stats(&st0);
	uintptr_t arg = ALIAS(9, 100);
	struct dune_tf seen, tf = frame(SYS_ioctl, p[0], 0x5490, arg, 0, 0, 0);
	ASSERT_EQ(-ENOTTY, run(&tf, &seen));
	ASSERT_EQ((uintptr_t)host_of(arg), seen.rdx);
	dl_kvm_fixup_get_stats(&st1);
	ASSERT_EQ(st0.unknown_commands + 1, st1.unknown_commands);
	/* a plain value is no pointer: left alone, not counted */
	tf = frame(SYS_ioctl, p[0], 0x5490, 12345, 0, 0, 0);
	ASSERT_EQ(-ENOTTY, run(&tf, &seen));
	ASSERT_EQ(12345u, seen.rdx);
	dl_kvm_fixup_get_stats(&st0);
	ASSERT_EQ(st1.unknown_commands, st0.unknown_commands);
}

/* ---- unknown numbers, kept pointers, address ranges ---- */

TEST(unknown_syscall_number_passes_untouched_and_is_counted)
{
	setup();
	struct dl_kvm_fixup_stats st0, st1;
	dl_kvm_fixup_get_stats(&st0);
	struct dune_tf seen, tf = frame(1000, ALIAS(2, 5), ALIAS(3, 5), 3, 4,
					5, 6);
	struct dune_tf orig = tf;
	ASSERT_TRUE(dl_kvm_fixup_pre(&tf, &fx, fake_translate));
	seen = tf;
	assert_args_are(&seen, &orig);
	host_call(&tf);
	ASSERT_EQ((uint64_t)-ENOSYS, tf.rax);
	dl_kvm_fixup_post(&tf, &fx);
	assert_args_are(&tf, &orig);
	dl_kvm_fixup_get_stats(&st1);
	ASSERT_EQ(st0.unknown_syscalls + 1, st1.unknown_syscalls);
}

TEST(kept_pointers_translated_or_refused)
{
	setup();
	/* set_tid_address: the host address of the word */
	uintptr_t tid = ALIAS(5, 40);
	struct dune_tf seen, tf = frame(SYS_set_tid_address, tid, 0, 0, 0, 0, 0);
	ASSERT_EQ((long)syscall(SYS_gettid), run(&tf, &seen));
	ASSERT_EQ((uintptr_t)host_of(tid), seen.rdi);
	/* set_robust_list: a head that is not one host run is refused */
	tf = frame(SYS_set_robust_list, ALIAS(2, PG - 8), 24, 0, 0, 0, 0);
	ASSERT_EQ(-EINVAL, run(&tf, NULL));
	uintptr_t head = ALIAS(7, 64);
	uint64_t h[3] = {head, 0, 0}; /* an empty list points at itself */
	alias_put(head, h, sizeof(h));
	tf = frame(SYS_set_robust_list, head, 24, 0, 0, 0, 0);
	ASSERT_EQ(0, run(&tf, &seen));
	ASSERT_EQ((uintptr_t)host_of(head), seen.rdi);
	/* io_uring and aio: refused as on a kernel without them */
	tf = frame(SYS_io_uring_setup, 4, ALIAS(3, 0), 0, 0, 0, 0);
	ASSERT_EQ(-ENOSYS, run(&tf, NULL));
	tf = frame(SYS_io_setup, 4, ALIAS(3, 0), 0, 0, 0, 0);
	ASSERT_EQ(-ENOSYS, run(&tf, NULL));
	/* clone3: the tid words in the copied clone_args are host addresses
	 * (checked, not called) */
	uint64_t ca[11] = {0};
	ca[2] = ALIAS(6, 8);  /* child_tid */
	ca[3] = ALIAS(6, 12); /* parent_tid */
	uintptr_t args = ALIAS(12, PG - 40);
	alias_put(args, ca, sizeof(ca));
	tf = frame(SYS_clone3, args, sizeof(ca), 0, 0, 0, 0);
	ASSERT_TRUE(dl_kvm_fixup_pre(&tf, &fx, fake_translate));
	const uint64_t *nca = (const uint64_t *)tf.rdi;
	ASSERT_TRUE(in_scratch(tf.rdi));
	ASSERT_EQ((uintptr_t)host_of(ALIAS(6, 8)), nca[2]);
	ASSERT_EQ((uintptr_t)host_of(ALIAS(6, 12)), nca[3]);
	tf.err = tf.rax;
	tf.rax = (uint64_t)-ENOSYS;
	dl_kvm_fixup_post(&tf, &fx);
	ASSERT_EQ(args, tf.rdi);
}

TEST(mmap_fixed_into_alias_space_refused_and_hint_dropped)
{
	setup();
	struct dune_tf seen, tf = frame(SYS_mmap, ALIAS(0, 0), PG,
					PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS |
					MAP_FIXED, (uint64_t)-1, 0);
	ASSERT_EQ(-EINVAL, run(&tf, NULL));
	tf = frame(SYS_mmap, ALIAS(0, 0), PG, PROT_READ,
		   MAP_PRIVATE | MAP_ANONYMOUS, (uint64_t)-1, 0);
	long r = run(&tf, &seen);
	ASSERT_EQ(0u, seen.rdi);
	ASSERT_GT(r, 0);
	ASSERT_FALSE(in_fake((uint64_t)r));
	munmap((void *)r, PG);
}

TEST(calls_without_aliases_pass_as_they_are)
{
	setup();
	int p[2];
	ASSERT_EQ(0, pipe(p));
	char buf[64] = "plain";
	struct iovec iov[1] = {{buf, 5}};
	struct dune_tf seen, tf = frame(SYS_writev, p[1], (uintptr_t)iov, 1, 0,
					0, 0);
	struct dl_kvm_fixup_stats st0, st1;
	dl_kvm_fixup_get_stats(&st0);
	ASSERT_EQ(5, run(&tf, &seen));
	ASSERT_EQ((uintptr_t)iov, seen.rsi);
	ASSERT_EQ(1u, seen.rdx);
	dl_kvm_fixup_get_stats(&st1);
	ASSERT_EQ(st0.calls_rewritten, st1.calls_rewritten);
	ASSERT_EQ(0u, fx.used); /* the iovec was checked in place, not copied */
}

/* A vfork child shares its parent's fx: the parent's post-hook must not
 * apply the child's execve to the parent's frame. */
TEST(post_hook_leaves_a_frame_it_did_not_rewrite)
{
	setup();
	int p[2];
	ASSERT_EQ(0, pipe(p));
	uintptr_t buf = ALIAS(2, PG - 4);
	alias_put(buf, "abcdefgh", 8);
	struct dune_tf parent = frame(SYS_vfork, 0x1111, 0x2222, 0, 0, 0, 0);
	ASSERT_TRUE(dl_kvm_fixup_pre(&parent, &fx, fake_translate));
	struct dune_tf child = frame(SYS_write, p[1], buf, 8, 0, 0, 0);
	ASSERT_TRUE(dl_kvm_fixup_pre(&child, &fx, fake_translate));
	ASSERT_TRUE(in_scratch(child.rsi));
	/* the child's call never comes back (execve); the parent's does */
	parent.err = parent.rax;
	parent.rax = 4242;
	dl_kvm_fixup_post(&parent, &fx);
	ASSERT_EQ(0x1111u, parent.rdi);
	ASSERT_EQ(0x2222u, parent.rsi);
	ASSERT_EQ(4242u, parent.rax);
	/* a frame at the same place with another number is left alone too */
	child.err = SYS_vfork;
	child.rax = 0;
	dl_kvm_fixup_post(&child, &fx);
	ASSERT_TRUE(in_scratch(child.rsi));
}

TEST_HARNESS_MAIN
