/* SPDX-License-Identifier: MIT */
/*
 * The `dangless` command.
 *
 *   dangless run [-o name=value]... [--] PROG [ARGS...]
 *   dangless check
 *   dangless --version
 *
 * `run` starts PROG with libdangless.so preloaded and the options added to
 * DANGLESS_OPTIONS; `check` says what this host supports.  The command
 * itself runs on the system allocator.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <linux/kvm.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "../kmod/dune_abi.h"
#include "dangless/dangless.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define KERNEL_DEFAULT_MAP_COUNT 65530

static void usage(FILE *to)
{
	fprintf(to,
		"usage: dangless run [-o name=value]... [--] PROG [ARGS...]\n"
		"       dangless check\n"
		"       dangless --version\n"
		"\n"
		"run    runs PROG with Dangless as its malloc: every "
		"use-after-free\n"
		"       faults at the first bad access, with a report.\n"
		"check  tells what this host supports (host backend limits, "
		"/dev/kvm, /dev/dune).\n"
		"\n"
		"`dangless run --help` lists the options.\n");
}

/* libdangless.so beside us (build tree) or in ../lib (installed). */
static bool find_library(char *out, size_t len)
{
	const char *env = getenv("DANGLESS_LIB");
	if (env && *env) {
		snprintf(out, len, "%s", env);
		return access(out, R_OK) == 0;
	}
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return false;
	self[n] = 0;
	char *dir = dirname(self);
	static const char *const candidates[] = {
		"%s/libdangless.so", "%s/../lib/libdangless.so",
		"%s/../lib/x86_64-linux-gnu/libdangless.so"};
	for (size_t i = 0; i < sizeof(candidates) / sizeof(*candidates); i++) {
		snprintf(out, len, candidates[i], dir);
		if (access(out, R_OK) == 0) {
			char real[PATH_MAX];
			if (realpath(out, real))
				snprintf(out, len, "%s", real);
			return true;
		}
	}
	return false;
}

static long read_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;
	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static void print_options_help(void)
{
	char lib[PATH_MAX];
	void *h = find_library(lib, sizeof(lib)) ? dlopen(lib, RTLD_LAZY) : NULL;
	void (*describe)(int) =
		h ? (void (*)(int))dlsym(h, "dangless_print_options_help")
		  : NULL;
	printf("Options, in DANGLESS_OPTIONS=\"name=value:name=value\" or "
	       "`dangless run -o name=value`:\n");
	fflush(stdout);
	if (describe)
		describe(1);
	else
		printf("  (libdangless.so not found: set DANGLESS_LIB)\n");
}

static int cmd_run(int argc, char **argv)
{
	char options[4096] = "";
	const char *env = getenv("DANGLESS_OPTIONS");
	if (env)
		snprintf(options, sizeof(options), "%s", env);
	int i = 0;
	for (; i < argc; i++) {
		if (!strcmp(argv[i], "--")) {
			i++;
			break;
		}
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			print_options_help();
			return 0;
		}
		if (!strcmp(argv[i], "-o") && i + 1 < argc) {
			size_t used = strlen(options);
			snprintf(options + used, sizeof(options) - used, "%s%s",
				 used ? ":" : "", argv[++i]);
			continue;
		}
		if (argv[i][0] == '-') {
			fprintf(stderr, "dangless run: unknown flag %s\n",
				argv[i]);
			usage(stderr);
			return 2;
		}
		break;
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	char lib[PATH_MAX];
	if (!find_library(lib, sizeof(lib))) {
		fprintf(stderr,
			"dangless: cannot find libdangless.so next to this "
			"command or in ../lib; set DANGLESS_LIB=/path/to/"
			"libdangless.so\n");
		return 127;
	}
	long map_count = read_long("/proc/sys/vm/max_map_count");
	if (map_count > 0 && map_count < KERNEL_DEFAULT_MAP_COUNT)
		fprintf(stderr,
			"dangless: warning: vm.max_map_count is %ld, below the "
			"kernel's default of %d; programs with many live "
			"allocations will run out of mappings. Raise it (as "
			"root): sysctl -w vm.max_map_count=4000000, or run "
			"dangless-setup.\n",
			map_count, KERNEL_DEFAULT_MAP_COUNT);

	char preload[PATH_MAX * 2];
	const char *old = getenv("LD_PRELOAD");
	snprintf(preload, sizeof(preload), "%s%s%s", lib,
		 old && *old ? " " : "", old && *old ? old : "");
	setenv("LD_PRELOAD", preload, 1);
	if (*options)
		setenv("DANGLESS_OPTIONS", options, 1);
	execvp(argv[i], argv + i);
	fprintf(stderr, "dangless: cannot run %s: %s\n", argv[i],
		strerror(errno));
	return errno == ENOENT ? 127 : 126;
}

static bool cpu_has_flag(const char *flag)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[8192];
	bool found = false;
	size_t n = strlen(flag);
	while (f && !found && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "flags", 5))
			continue;
		for (char *p = strstr(line, flag); p; p = strstr(p + 1, flag))
			if (p[-1] == ' ' && (p[n] == ' ' || p[n] == '\n'))
				found = true;
	}
	if (f)
		fclose(f);
	return found;
}

/* Each backend of the library's registry says whether it runs here. */
static int check_backends(void)
{
	struct utsname u;
	uname(&u);
	printf("kernel: %s %s\n", u.sysname, u.release);
	char lib[PATH_MAX];
	void *h = find_library(lib, sizeof(lib)) ? dlopen(lib, RTLD_LAZY) : NULL;
	int (*check)(int) =
		h ? (int (*)(int))dlsym(h, "dangless_check_backends") : NULL;
	if (!check) {
		printf("libdangless.so not found (set DANGLESS_LIB): cannot "
		       "tell which backends run here\n");
		return 1;
	}
	fflush(stdout);
	return check(1) == 0 ? 0 : 1;
}

/*
 * Alias space used and left, as a program starting now would find it: the
 * host backend carves it from the lower half of the address space, less
 * what is mapped there already (this process's mappings stand in for a
 * program's at start).  A running program's: stats=1, alias_space_used and
 * alias_space_left.  DANGLESS_OPTIONS=alias_space=SIZE caps it.
 */
static void check_alias_space(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	unsigned long long mapped = 0, half = 1ULL << 47;
	if (f) {
		unsigned long long a, b;
		char line[512];
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "%llx-%llx", &a, &b) == 2 && a < half)
				mapped += (b < half ? b : half) - a;
		fclose(f);
	}
	const char *opts = getenv("DANGLESS_OPTIONS");
	const char *cap = opts ? strstr(opts, "alias_space=") : NULL;
	printf("alias space: used 0 and left %.1f TiB for a program starting "
	       "now (the lower 128 TiB half less %.1f GiB mapped here)%s%.*s\n",
	       (double)(half - mapped) / (1ULL << 40),
	       (double)mapped / (1 << 30), cap ? "; capped by " : "",
	       cap ? (int)strcspn(cap, ":") : 0, cap ? cap : "");
	printf("  a running program's: DANGLESS_OPTIONS=stats=1 "
	       "(alias_space_used, alias_space_left), or dangless_stats()\n");
}

static void check_kvm(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		printf("/dev/kvm: %s%s\n", strerror(errno),
		       errno == ENOENT ? " (no KVM on this host: load "
					 "kvm_intel or kvm_amd)"
		       : errno == EACCES ? " (join the kvm group or run as "
					   "root)"
					 : "");
	} else {
		int api = ioctl(fd, KVM_GET_API_VERSION, 0);
		bool hw = cpu_has_flag("vmx") || cpu_has_flag("svm");
		printf("/dev/kvm: opens, API version %d; %s\n", api,
		       hw ? "hardware virtualisation present"
			  : "no vmx/svm in /proc/cpuinfo: a software KVM "
			    "backend, too slow for the kvm backend");
		close(fd);
	}
}

/* The module, its ABI and who may open /dev/dune (README.md, "dune.ko"). */
static void check_dune(void)
{
	struct stat st;
	if (stat("/dev/dune", &st) != 0) {
		printf("/dev/dune: absent (%s: sudo dangless-setup)\n",
		       access("/sys/module/dune", F_OK) == 0
			       ? "dune.ko is loaded but its device is missing"
			       : "dune.ko is not loaded");
		return;
	}
	const struct passwd *pw = getpwuid(st.st_uid);
	char owner[64], group[64];
	if (pw)
		snprintf(owner, sizeof(owner), "%s", pw->pw_name);
	else
		snprintf(owner, sizeof(owner), "%u", (unsigned)st.st_uid);
	const struct group *gr = getgrgid(st.st_gid);
	if (gr)
		snprintf(group, sizeof(group), "%s", gr->gr_name);
	else
		snprintf(group, sizeof(group), "%u", (unsigned)st.st_gid);
	unsigned mode = st.st_mode & 07777;
	printf("/dev/dune: %s:%s %04o%s\n", owner, group, mode,
	       st.st_uid == 0 && gr && !strcmp(gr->gr_name, DUNE_GROUP) &&
			       mode == 0660
		       ? " (group dune may use it)"
		       : " (not root:dune 0660: sudo dangless-setup gives it "
			 "to group dune)");
	int fd = open("/dev/dune", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		printf("/dev/dune: cannot open it: %s%s\n", strerror(e),
		       e == EACCES || e == EPERM
			       ? " (join group dune: sudo usermod -aG dune "
				 "$USER, then log in again)"
			       : "");
		return;
	}
	int abi = ioctl(fd, DUNE_GET_ABI_VERSION);
	if (abi == DUNE_ABI_VERSION)
		printf("/dev/dune: opens, dune.ko ABI %d (the one this Dangless "
		       "speaks)\n",
		       abi);
	else if (abi < 0)
		printf("/dev/dune: opens, but DUNE_GET_ABI_VERSION failed: %s "
		       "(not our dune.ko?)\n",
		       strerror(errno));
	else
		printf("/dev/dune: opens, dune.ko ABI %d, but this Dangless "
		       "speaks %d: load the dune.ko built with it\n",
		       abi, DUNE_ABI_VERSION);
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
		printf("dangless %s\n", DANGLESS_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "run"))
		return cmd_run(argc - 2, argv + 2);
	if (!strcmp(argv[1], "check")) {
		int status = check_backends();
		check_alias_space();
		check_kvm();
		check_dune();
		return status;
	}
	fprintf(stderr, "dangless: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
