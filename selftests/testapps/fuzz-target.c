// SPDX-License-Identifier: MIT
/*
 * A fuzz target with a use-after-free behind one input byte: it parses a
 * "record" from stdin; a record whose first byte is 'X' is an eviction, and
 * the eviction path frees the record's buffer and then reads its header
 * again.  On glibc that read returns stale bytes and the program goes on
 * (exit 0), so a fuzzer sees nothing; under Dangless the read faults.
 *
 * An ordinary program, built without any fuzzer instrumentation (afl-fuzz
 * runs it with -n).  When FUZZ_TARGET_REACHED names a file, one byte is
 * appended to it each time the eviction path runs, so that a test can tell
 * "never reached" from "reached and did not crash".
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct record {
	char kind;
	unsigned len;
	char body[48];
};

/* A copy of the pointer the compiler cannot trace back (no
 * -Wuse-after-free, no elided load): the bug is meant to be there. */
static struct record *opaque(struct record *r)
{
	__asm__ volatile("" : "+r"(r));
	return r;
}

static void note_reached(void)
{
	const char *path = getenv("FUZZ_TARGET_REACHED");
	if (!path || !*path)
		return;
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd >= 0) {
		(void)!write(fd, "x", 1);
		close(fd);
	}
}

int main(void)
{
	char in[256];
	ssize_t n = read(0, in, sizeof(in));
	if (n <= 0)
		return 0;
	struct record *r = malloc(sizeof(*r));
	if (!r)
		return 1;
	r->kind = in[0];
	r->len = (unsigned)n;
	memcpy(r->body, in, (size_t)n < sizeof(r->body) ? (size_t)n
							 : sizeof(r->body));
	unsigned checksum = 0;
	if (r->kind == 'X') {
		note_reached();
		struct record *evicted = opaque(r);
		free(r);
		/* the bug: the evicted record is read after it was freed */
		checksum = evicted->len;
	} else {
		for (unsigned i = 0; i < r->len && i < sizeof(r->body); i++)
			checksum += (unsigned char)r->body[i];
		free(r);
	}
	printf("%u\n", checksum);
	return 0;
}
