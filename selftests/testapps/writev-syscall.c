// SPDX-License-Identifier: MIT
/*
 * writev-syscall: the kernel reads user memory given by pointers inside
 * another heap object - an iovec array of malloc'd buffers, itself malloc'd -
 * so Dangless's aliases must work for system calls, not just for loads and
 * stores made by the program.  A buffer spanning pages is included.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

int main(void)
{
	static const char *const words[] = {"writev ", "gathers ", "these ",
					    "heap ", "buffers", "\n"};
	enum { N = sizeof(words) / sizeof(words[0]) };
	struct iovec *iov = malloc((N + 1) * sizeof(*iov));
	if (!iov)
		return 1;
	size_t total = 0;
	for (int i = 0; i < N; i++) {
		size_t len = strlen(words[i]);
		char *buf = malloc(len);
		if (!buf)
			return 1;
		memcpy(buf, words[i], len);
		iov[i].iov_base = buf;
		iov[i].iov_len = len;
		total += len;
	}
	/* and one that crosses page boundaries: 3 pages of lines */
	size_t big_len = 3 * 4096 + 100, line = 64;
	char *big = malloc(big_len);
	if (!big)
		return 1;
	for (size_t i = 0; i < big_len; i++)
		big[i] = (i % line == line - 1) ? '\n' : (char)('a' + (i / line) % 26);
	big[big_len - 1] = '\n';
	iov[N].iov_base = big;
	iov[N].iov_len = big_len;
	total += big_len;

	ssize_t put = writev(STDOUT_FILENO, iov, N + 1);
	if (put != (ssize_t)total) {
		fprintf(stderr, "writev wrote %zd of %zu bytes\n", put, total);
		return 1;
	}
	for (int i = 0; i <= N; i++)
		free(iov[i].iov_base);
	free(iov);
	return 0;
}
