// SPDX-License-Identifier: MIT
/*
 * The program owns its descriptor table.  Whatever it closes or dup2s over
 * (close_range, closefrom, dup2 of its own file onto every low number, a
 * child closing everything, bash's `exec 3>FILE`), Dangless keeps working,
 * writes into no file of the program's, still catches a dangling read, and
 * adds no descriptor the program could see.  Each case runs under the
 * default strict revocation and under revoke=batch:64.
 */
#include "st-common.h"

#include <fcntl.h>

static const char *const st_revokes[] = {"DANGLESS_OPTIONS=revoke=strict",
					 "DANGLESS_OPTIONS=revoke=batch:64"};

static void st_descriptors(const char *revoke, const char *action,
			   const char *file, struct th_child *res)
{
	const char *const envv[] = {st_preload_env(), revoke, NULL};
	const char *const argv[] = {st_selftest_prog("st-scenario-plain"),
				    "descriptors", action, file, NULL};
	th_exec(argv, envv, NULL, ST_CHILD_S, res);
}

/* The program's work went on, and the dangling read at its end was caught. */
#define ASSERT_WORKED_THEN_CAUGHT(res)                                         \
	do {                                                                   \
		ASSERT_CONTAINS("descriptors ok", (res).out);                  \
		uintptr_t st_target = st_hex_after((res).out, "target=");      \
		ASSERT_NE((uintptr_t)0, st_target);                            \
		ASSERT_UAF_REPORT(res, "READ", st_target, 10, 100);            \
	} while (0)

static void st_action_everywhere(const char *action)
{
	for (int i = 0; i < 2; i++) {
		struct th_child res;
		TH_LOG("%s", st_revokes[i]);
		st_descriptors(st_revokes[i], action, NULL, &res);
		ASSERT_WORKED_THEN_CAUGHT(res);
		th_child_free(&res);
	}
}

TEST_TIMEOUT(close_range_then_allocations, ST_CHILDREN_BUDGET(2))
{
	st_action_everywhere("close-range");
}

TEST_TIMEOUT(closefrom_then_allocations, ST_CHILDREN_BUDGET(2))
{
	st_action_everywhere("closefrom");
}

TEST_TIMEOUT(a_child_closing_everything_then_allocating,
	     ST_CHILDREN_BUDGET(2))
{
	st_action_everywhere("fork-close-all");
}

/* FNV-1a of a whole file; 0 if it cannot be read. */
static uint64_t st_file_hash(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	uint64_t h = 0xcbf29ce484222325ULL;
	unsigned char buf[65536];
	ssize_t n;
	*len = 0;
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++)
			h = (h ^ buf[i]) * 0x100000001b3ULL;
		*len += (size_t)n;
	}
	close(fd);
	return h;
}

/* 64 MiB of data the program owns: as large as the heap offsets it holds. */
static void st_make_data_file(char *path, size_t n)
{
	snprintf(path, n, "/tmp/dangless-st-data-XXXXXX");
	int fd = mkstemp(path);
	ASSERT_GE(0, -fd);
	char block[65536];
	for (int i = 0; i < 1024; i++) {
		for (size_t j = 0; j < sizeof(block); j++)
			block[j] = (char)(i * 31 + j * 7);
		ASSERT_EQ((ssize_t)sizeof(block),
			  write(fd, block, sizeof(block)));
	}
	close(fd);
}

TEST_TIMEOUT(dup2_of_the_programs_file_over_every_low_descriptor,
	     ST_CHILDREN_BUDGET(2))
{
	char path[64];
	st_make_data_file(path, sizeof(path));
	size_t len_before = 0, len_after = 0;
	uint64_t before = st_file_hash(path, &len_before);
	for (int i = 0; i < 2; i++) {
		struct th_child res;
		TH_LOG("%s", st_revokes[i]);
		st_descriptors(st_revokes[i], "dup2", path, &res);
		uint64_t after = st_file_hash(path, &len_after);
		if (after != before || len_after != len_before)
			unlink(path);
		ASSERT_EQ(len_before, len_after);
		ASSERT_EQ(before, after);
		ASSERT_WORKED_THEN_CAUGHT(res);
		th_child_free(&res);
	}
	unlink(path);
}

TEST_TIMEOUT(bash_exec_3_to_a_file, ST_CHILDREN_BUDGET(2))
{
	const char *script =
		"exec 3>\"$1\"; for i in $(seq 1 5000); do echo \"$i\" >&3; "
		"done; s=; for i in $(seq 1 1000); do s=\"$s$i\"; done; "
		"exec 3>&-; echo \"len=${#s}\"";
	for (int i = 0; i < 2; i++) {
		char path[64];
		snprintf(path, sizeof(path), "/tmp/dangless-st-bash-XXXXXX");
		int fd = mkstemp(path);
		ASSERT_GE(0, -fd);
		close(fd);
		const char *const envv[] = {st_revokes[i], NULL};
		const char *const argv[] = {st_dangless_bin(), "run", "--",
					    "bash", "-c", script, "bash", path,
					    NULL};
		struct th_child res;
		TH_LOG("%s", st_revokes[i]);
		th_exec(argv, envv, NULL, ST_CHILD_S, &res);
		char *lines = st_slurp(path);
		unlink(path);
		ASSERT_EXITED(0, res);
		/* 1..9: 9 digits, 10..99: 180, 100..999: 2700, 1000: 4 */
		ASSERT_CONTAINS("len=2893", res.out);
		ASSERT_NOT_NULL(lines);
		size_t n = 0;
		for (char *p = lines, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
			n++;
			if ((size_t)atol(p) != n)
				break;
		}
		ASSERT_EQ((size_t)5000, n);
		free(lines);
		th_child_free(&res);
	}
}

/* What /proc/self/fd shows the program, as without Dangless. */
TEST_TIMEOUT(no_descriptor_of_ours_in_the_programs_table,
	     ST_CHILDREN_BUDGET(3))
{
	const char *prog = st_selftest_prog("st-scenario-plain");
	const char *const argv[] = {prog, "fd-list", NULL};
	struct th_child plain, under;
	th_exec(argv, NULL, NULL, ST_CHILD_S, &plain);
	ASSERT_EXITED(0, plain);
	ASSERT_CONTAINS("fds:", plain.out);
	for (int i = 0; i < 2; i++) {
		const char *const envv[] = {st_preload_env(), st_revokes[i],
					    NULL};
		TH_LOG("%s", st_revokes[i]);
		th_exec(argv, envv, NULL, ST_CHILD_S, &under);
		ASSERT_EXITED(0, under);
		ASSERT_STREQ(plain.out, under.out);
		th_child_free(&under);
	}
	th_child_free(&plain);
}

TEST_HARNESS_MAIN
