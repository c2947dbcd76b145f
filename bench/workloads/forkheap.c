/* What a fork server pays per input: a parent holding a 10 MB live heap
 * forks a child that writes a few of its objects and exits, and waits for
 * it; N times.  afl-fuzz's fork server does exactly this thousands of times
 * a second, so an allocator's fork hooks are paid per execution.
 *   forkheap forks N live_objects L heap_mb M fork_us T
 * The heap: small objects of 16-1024 B (log-uniform, fixed seed), every one
 * written, with a quarter of them freed again so that the heap also holds
 * freed (for Dangless: revoked) objects, as a real one does. */
#include "common.h"
#include <math.h>
#include <sys/wait.h>

#define HEAP_BYTES (10L << 20)
#define CHILD_WRITES 64

int main(int argc, char **argv)
{
	work_begin();
	long forks = scaled(argc, argv, 300, 20);
	rng_t r = rng_seed(29);
	long cap = HEAP_BYTES / 128, n = 0, live = 0;
	char **obj = xmalloc((size_t)cap * sizeof(*obj));
	size_t *len = xmalloc((size_t)cap * sizeof(*len));
	long bytes = 0;
	while (bytes < HEAP_BYTES && n < cap) {
		double e = 4.0 + 6.0 * (double)rng_below(&r, 1u << 20) / (double)(1u << 20);
		len[n] = (size_t)exp2(e);
		obj[n] = xmalloc(len[n]);
		memset(obj[n], (int)(n & 0xff), len[n]);
		bytes += (long)len[n];
		n++;
		/* every fourth object made is freed again: a heap with holes */
		if (n % 4 == 0) {
			long k = n - 1 - (long)rng_below(&r, 4);
			if (obj[k]) {
				bytes -= (long)len[k];
				free(obj[k]);
				obj[k] = NULL;
			}
		}
	}
	for (long k = 0; k < n; k++)
		live += obj[k] != NULL;
	footprint_report();

	double t0 = now_ns();
	for (long f = 0; f < forks; f++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("forkheap: fork");
			return 1;
		}
		if (pid == 0) {
			/* the child uses the heap it inherited, then leaves */
			for (int w = 0; w < CHILD_WRITES; w++) {
				long k = (long)rng_below(&r, (uint64_t)n);
				if (obj[k])
					obj[k][0] = (char)w;
			}
			_exit(0);
		}
		int status;
		if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0) {
			fprintf(stderr, "forkheap: child %d ended with status 0x%x\n",
				(int)pid, status);
			return 1;
		}
		rng_next(&r);
	}
	double ns = now_ns() - t0;
	printf("forkheap forks %ld live_objects %ld heap_mb %.1f fork_us %.1f\n", forks, live,
	       (double)bytes / (1 << 20), ns / (double)forks / 1e3);
	work_end();
	return 0;
}
