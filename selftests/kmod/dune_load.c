// SPDX-License-Identifier: MIT
/*
 * dune_load MODULE.ko: loads dune.ko (finit_module, as root) unless
 * /dev/dune is there already, and waits for /dev/dune to appear.  For the
 * rig, whose chroot has no kmod tools (selftests/kmod/run-in-rig).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: dune_load MODULE.ko\n");
		return 2;
	}
	if (access("/dev/dune", F_OK) == 0)
		return 0;
	int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "dune_load: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST) {
		fprintf(stderr, "dune_load: loading %s: %s (the kernel log says why)\n",
			argv[1], strerror(errno));
		return 1;
	}
	for (int i = 0; i < 500 && access("/dev/dune", F_OK); i++)
		usleep(10000);
	if (access("/dev/dune", F_OK)) {
		fprintf(stderr, "dune_load: %s loaded, but no /dev/dune appeared\n", argv[1]);
		return 1;
	}
	return 0;
}
