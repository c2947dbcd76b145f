/* SPDX-License-Identifier: MIT */
/*
 * Arguments whose type depends on another argument (the table's 'depends'):
 * ioctl, fcntl, prctl, arch_prctl, socket options, futex, capget/capset,
 * landlock, seccomp and the like, by command; an unknown command gets the
 * best effort for a pointer of unknown extent.
 */
#include <sys/syscall.h>

#include "fixup_shared.h"

/* ---- command-dependent arguments ---- */

struct cmd_arg {
	uint32_t cmd;
	uint16_t size;
	uint8_t dir;
};

static const struct cmd_arg *find_cmd(const struct cmd_arg *t, size_t n,
				      uint32_t cmd)
{
	for (size_t i = 0; i < n; i++)
		if (t[i].cmd == cmd)
			return &t[i];
	return NULL;
}

#define IN DUNE_SC_IN
#define OUT DUNE_SC_OUT
#define INOUT DUNE_SC_INOUT

/* tty ioctls from before the _IOC encoding (asm-generic/ioctls.h) */
static const struct cmd_arg legacy_ioctls[] = {
	{0x5401, 36, OUT},   /* TCGETS: struct termios */
	{0x5402, 36, IN},    /* TCSETS */
	{0x5403, 36, IN},    /* TCSETSW */
	{0x5404, 36, IN},    /* TCSETSF */
	{0x5405, 18, OUT},   /* TCGETA: struct termio */
	{0x5406, 18, IN},    /* TCSETA */
	{0x5407, 18, IN},    /* TCSETAW */
	{0x5408, 18, IN},    /* TCSETAF */
	{0x540F, 4, OUT},    /* TIOCGPGRP */
	{0x5410, 4, IN},     /* TIOCSPGRP */
	{0x5411, 4, OUT},    /* TIOCOUTQ */
	{0x5412, 1, IN},     /* TIOCSTI */
	{0x5413, 8, OUT},    /* TIOCGWINSZ */
	{0x5414, 8, IN},     /* TIOCSWINSZ */
	{0x5415, 4, OUT},    /* TIOCMGET */
	{0x5416, 4, IN},     /* TIOCMBIS */
	{0x5417, 4, IN},     /* TIOCMBIC */
	{0x5418, 4, IN},     /* TIOCMSET */
	{0x541B, 4, OUT},    /* FIONREAD */
	{0x5421, 4, IN},     /* FIONBIO */
	{0x5423, 4, IN},     /* TIOCSETD */
	{0x5424, 4, OUT},    /* TIOCGETD */
	{0x5429, 4, OUT},    /* TIOCGSID */
	{0x5452, 4, IN},     /* FIOASYNC */
};

static const struct cmd_arg fcntl_cmds[] = {
	{5, 32, INOUT},   /* F_GETLK: struct flock */
	{6, 32, IN},      /* F_SETLK */
	{7, 32, IN},      /* F_SETLKW */
	{36, 32, INOUT},  /* F_OFD_GETLK */
	{37, 32, IN},     /* F_OFD_SETLK */
	{38, 32, IN},     /* F_OFD_SETLKW */
	{15, 8, IN},      /* F_SETOWN_EX: struct f_owner_ex */
	{16, 8, OUT},     /* F_GETOWN_EX */
	{17, 8, OUT},     /* F_GETOWNER_UIDS: u32[2] */
	{1035, 8, OUT},   /* F_GET_RW_HINT */
	{1036, 8, IN},    /* F_SET_RW_HINT */
	{1037, 8, OUT},   /* F_GET_FILE_RW_HINT */
	{1038, 8, IN},    /* F_SET_FILE_RW_HINT */
};

/* prctl options whose arg2 points to something of a fixed size */
static const struct cmd_arg prctl_arg2[] = {
	{2, 4, OUT},   /* PR_GET_PDEATHSIG */
	{5, 4, OUT},   /* PR_GET_UNALIGN */
	{9, 4, OUT},   /* PR_GET_FPEMU */
	{11, 4, OUT},  /* PR_GET_FPEXC */
	{16, 16, OUT}, /* PR_GET_NAME */
	{19, 4, OUT},  /* PR_GET_ENDIAN */
	{25, 4, OUT},  /* PR_GET_TSC */
	{37, 4, OUT},  /* PR_GET_CHILD_SUBREAPER */
	{40, 8, OUT},  /* PR_GET_TID_ADDRESS */
};

static const struct cmd_arg arch_prctl_cmds[] = {
	{0x1003, 8, OUT}, /* ARCH_GET_FS */
	{0x1004, 8, OUT}, /* ARCH_GET_GS */
	{0x1021, 8, OUT}, /* ARCH_GET_XCOMP_SUPP */
	{0x1022, 8, OUT}, /* ARCH_GET_XCOMP_PERM */
	{0x1024, 8, OUT}, /* ARCH_GET_XCOMP_GUEST_PERM */
	{0x5005, 8, OUT}, /* ARCH_SHSTK_STATUS */
};

/* ARCH_SET_FS/GS and ARCH_SET_CPUID take values the CPU uses in the guest */
static bool arch_prctl_value(uint64_t option)
{
	return option == 0x1001 || option == 0x1002 || option == 0x1012;
}

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static int fix_cmd(struct dl_kvm_fixup *fx, uint64_t *arg,
		   const struct cmd_arg *c)
{
	if (!c)
		return dl_kvm_fx_unknown(fx, arg);
	return dl_kvm_fx_buffer(fx, arg, c->size, c->dir, false);
}

static int fix_ioctl(struct dl_kvm_fixup *fx, uint64_t *a)
{
	uint32_t cmd = (uint32_t)a[1];
	uint32_t dir = cmd >> 30, size = (cmd >> 16) & 0x3fff;
	if (dir && size) {
		/* _IOC: _IOC_WRITE (1) is the kernel reading, _IOC_READ (2)
		 * the kernel writing */
		int d = (dir & 1 ? IN : 0) | (dir & 2 ? OUT : 0);
		return dl_kvm_fx_buffer(fx, &a[2], size, d, false);
	}
	/* socket interface ioctls on struct ifreq (SIOCGIFCONF, 0x8912,
	 * holds a pointer: left to the best effort) */
	if (cmd >= 0x8913 && cmd <= 0x8960)
		return dl_kvm_fx_buffer(fx, &a[2], 40, INOUT, false);
	return fix_cmd(fx, &a[2], find_cmd(legacy_ioctls,
					   ARRAY_LEN(legacy_ioctls), cmd));
}

static int fix_prctl(struct dl_kvm_fixup *fx, uint64_t *a)
{
	uint64_t option = a[0];
	if (option == 15) /* PR_SET_NAME: up to 16 bytes of a string */
		return dl_kvm_fx_string(fx, &a[1], 16, true);
	if (option == 22 && a[1] == 2) /* PR_SET_SECCOMP, FILTER */
		return dl_kvm_fx_sock_fprog(fx, &a[2]);
	if (option == 0x53564d41 && a[1] == 0) /* PR_SET_VMA_ANON_NAME */
		return dl_kvm_fx_string(fx, &a[4], 80, false);
	const struct cmd_arg *c =
		find_cmd(prctl_arg2, ARRAY_LEN(prctl_arg2), (uint32_t)option);
	if (c && option == (uint64_t)c->cmd)
		return dl_kvm_fx_buffer(fx, &a[1], c->size, c->dir, false);
	for (int i = 1; i <= 4; i++) {
		int r = dl_kvm_fx_unknown(fx, &a[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

static int fix_sockopt(struct dl_kvm_fixup *fx, uint64_t *a, bool set)
{
	uint64_t level = (uint32_t)a[1], optname = (uint32_t)a[2];
	int32_t optlen;
	if (set) {
		optlen = (int32_t)fx->args[4];
		/* SO_ATTACH_FILTER, SO_ATTACH_REUSEPORT_CBPF */
		if (level == 1 && (optname == 26 || optname == 51))
			return dl_kvm_fx_sock_fprog(fx, &a[3]);
	} else {
		if (!dl_kvm_fx_readable(fx, fx->args[4]))
			return 0;
		int r = dl_kvm_fx_read_guest(fx, fx->args[4], &optlen, 4);
		if (r < 0)
			return r;
	}
	if (optlen <= 0)
		return 0;
	return dl_kvm_fx_buffer(fx, &a[3], (size_t)optlen, set ? IN : OUT,
				false);
}

static int fix_futex(struct dl_kvm_fixup *fx, uint64_t *a)
{
	uint64_t op =
		a[1] & 127; /* without FUTEX_PRIVATE_FLAG, CLOCK_REALTIME */
	switch (op) {
	case 0:  /* FUTEX_WAIT */
	case 6:  /* FUTEX_LOCK_PI */
	case 9:  /* FUTEX_WAIT_BITSET */
	case 13: /* FUTEX_LOCK_PI2 */
		return dl_kvm_fx_buffer(fx, &a[3], 16, IN, false);
	case 11: /* FUTEX_WAIT_REQUEUE_PI: a timeout and a second word */
	{
		int r = dl_kvm_fx_buffer(fx, &a[3], 16, IN, false);
		return r < 0 ? r : dl_kvm_fx_translate_kept(fx, &a[4], 4);
	}
	case 3:  /* FUTEX_REQUEUE */
	case 4:  /* FUTEX_CMP_REQUEUE */
	case 5:  /* FUTEX_WAKE_OP */
	case 12: /* FUTEX_CMP_REQUEUE_PI */
		return dl_kvm_fx_translate_kept(fx, &a[4], 4);
	default:
		return 0;
	}
}

static int fix_cap_data(struct dl_kvm_fixup *fx, uint64_t *a, int dir)
{
	uint32_t version;
	if (!a[1] || !dl_kvm_fx_readable(fx, fx->args[0]))
		return 0;
	int r = dl_kvm_fx_read_guest(fx, fx->args[0], &version, 4);
	if (r < 0)
		return r;
	size_t n = version == 0x19980330 ? 1
		   : version == 0x20071026 || version == 0x20080522 ? 2
								    : 0;
	return n ? dl_kvm_fx_buffer(fx, &a[1], n * 12, dir, false) : 0;
}

/* The handlers for 'depends' arguments, by call. */
int dl_kvm_fx_depends(struct dl_kvm_fixup *fx, uint64_t nr, int i,
		      uint64_t *a)
{
	switch (nr) {
	case SYS_ioctl:
		return fix_ioctl(fx, a);
	case SYS_fcntl:
		return fix_cmd(fx, &a[2], find_cmd(fcntl_cmds,
						   ARRAY_LEN(fcntl_cmds),
						   (uint32_t)a[1]));
	case SYS_prctl:
		return i == 1 ? fix_prctl(fx, a) : 0; /* all at once */
	case SYS_arch_prctl:
		if (arch_prctl_value(a[0]))
			return 0;
		return fix_cmd(fx, &a[1], find_cmd(arch_prctl_cmds,
						   ARRAY_LEN(arch_prctl_cmds),
						   (uint32_t)a[0]));
	case SYS_setsockopt:
		return fix_sockopt(fx, a, true);
	case SYS_getsockopt:
		return fix_sockopt(fx, a, false);
	case SYS_futex:
		return i == 3 ? fix_futex(fx, a) : 0; /* both at once */
	case SYS_capget:
		return fix_cap_data(fx, a, OUT);
	case SYS_capset:
		return fix_cap_data(fx, a, IN);
	case SYS_name_to_handle_at:
		/* AT_HANDLE_MNT_ID_UNIQUE: a u64 mount id, else an int */
		return dl_kvm_fx_buffer(fx, &a[3], a[4] & 1 ? 8 : 4, OUT,
					false);
	case SYS_landlock_add_rule:
		return a[1] == 1   ? dl_kvm_fx_buffer(fx, &a[2], 12, IN, false)
		       : a[1] == 2 ? dl_kvm_fx_buffer(fx, &a[2], 16, IN, false)
				   : dl_kvm_fx_unknown(fx, &a[2]);
	case SYS_seccomp:
		return a[0] == 1 ? dl_kvm_fx_sock_fprog(
					   fx, &a[2]) /* SET_MODE_FILTER */
				 : dl_kvm_fx_unknown(fx, &a[2]);
	case SYS_ptrace:
		/* addr is in the tracee, whose aliases are its own */
		return i == 3 ? dl_kvm_fx_unknown(fx, &a[i]) : 0;
	default:
		return dl_kvm_fx_unknown(fx, &a[i]);
	}
}
