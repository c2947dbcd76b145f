/* The harness's launcher: runs a command and reports how it ended, its wall
 * time and the peak RSS of its process tree (ru_maxrss from wait4).
 *   spawn REPORT cmd [args...]
 * The command gets LD_PRELOAD=$BENCH_PRELOAD (when set); spawn itself is
 * never preloaded, so it runs on glibc whatever is measured.  REPORT gets one
 * line: "status <raw wait status> wall_ns <ns> maxrss_kb <kb> pid <pid>
 * utime_ns <ns> stime_ns <ns> minflt <n>" (CPU times and minor faults of
 * the tree, for bench/kvm_model.py).
 * Why a launcher: a child forked from the Python harness inherits the
 * harness's RSS high-water mark across exec (ru_maxrss would be >= 15 MiB);
 * forked from this small program the floor is ~1 MiB. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long timeval_ns(struct timeval tv)
{
	return (long long)tv.tv_sec * 1000000000LL + tv.tv_usec * 1000LL;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: spawn REPORT cmd [args...]\n");
		return 2;
	}
	const char *pre = getenv("BENCH_PRELOAD");
	if (pre && *pre)
		setenv("LD_PRELOAD", pre, 1);
	else
		unsetenv("LD_PRELOAD");
	unsetenv("BENCH_PRELOAD");
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid_t pid = fork();
	if (pid < 0) {
		perror("spawn: fork");
		return 2;
	}
	if (pid == 0) {
		execvp(argv[2], argv + 2);
		fprintf(stderr, "spawn: %s: %s\n", argv[2], strerror(errno));
		_exit(127);
	}
	int status;
	struct rusage ru;
	while (wait4(pid, &status, 0, &ru) < 0)
		if (errno != EINTR) {
			perror("spawn: wait4");
			return 2;
		}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	FILE *f = fopen(argv[1], "w");
	if (!f) {
		perror("spawn: report");
		return 2;
	}
	fprintf(f,
		"status %d wall_ns %lld maxrss_kb %ld pid %d utime_ns %lld "
		"stime_ns %lld minflt %ld\n",
		status,
		(long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec),
		ru.ru_maxrss, (int)pid, timeval_ns(ru.ru_utime),
		timeval_ns(ru.ru_stime), ru.ru_minflt);
	fclose(f);
	return 0;
}
