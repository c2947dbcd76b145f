// SPDX-License-Identifier: MIT
/*
 * C++: new/delete in all their forms come from Dangless, and a deleted
 * object used afterwards is caught.  The C++ itself is in cxx-objects.cpp.
 */
#include "st-common.h"

int st_cxx_new_delete(void);
int st_cxx_aligned_new(void);
int st_cxx_library(void);
void st_cxx_dangle_object(void);
void st_cxx_dangle_virtual_call(void);
void st_cxx_dangle_array(void);
void st_cxx_dangle_vector_growth(void);
void st_cxx_double_delete(void);

TEST(new_delete_every_form)
{
	ASSERT_EQ(0, st_cxx_new_delete());
}

TEST(aligned_new_8B_to_2MiB)
{
	ASSERT_EQ(0, st_cxx_aligned_new());
}

int st_cxx_bad_alloc(void);

TEST(huge_new_throws_bad_alloc)
{
	ASSERT_EQ(0, st_cxx_bad_alloc());
}

TEST(standard_library_containers)
{
	ASSERT_EQ(0, st_cxx_library());
}

TEST(new_counts_in_stats)
{
	struct dangless_stats a = st_stats();
	ASSERT_EQ(0, st_cxx_new_delete());
	struct dangless_stats b = st_stats();
	EXPECT_LE(a.allocs + 6, b.allocs);
	EXPECT_LE(a.frees + 6, b.frees);
}

static void st_run_dangle(void *fn)
{
	((void (*)(void))fn)();
}

TEST(deleted_object_member_read_caught)
{
	struct th_child res;
	th_run(st_run_dangle, (void *)st_cxx_dangle_object, 60, &res);
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	uintptr_t target = st_hex_after(res.out, "target=");
	size_t off = st_hex_after(res.out, "offset=");
	size_t size = st_hex_after(res.out, "size=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_UAF_REPORT(res, "READ", target, off, size);
	th_child_free(&res);
}

TEST(deleted_object_virtual_call_caught)
{
	struct th_child res;
	th_run(st_run_dangle, (void *)st_cxx_dangle_virtual_call, 60, &res);
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_KILLED_BY(SIGSEGV, res);
	struct st_uaf_report r;
	ASSERT_TRUE(st_parse_uaf(res.err, &r));
	EXPECT_STREQ("READ", r.kind);
	/* the vtable pointer, or the member if the call was devirtualised */
	EXPECT_LE(target, r.addr);
	EXPECT_EQ(r.addr - target, r.off);
	EXPECT_GT((size_t)64, r.off);
	th_child_free(&res);
}

TEST(deleted_array_write_caught)
{
	struct th_child res;
	th_run(st_run_dangle, (void *)st_cxx_dangle_array, 60, &res);
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_UAF_REPORT(res, "WRITE", target, 4000 * sizeof(int),
			  5000 * sizeof(int));
	th_child_free(&res);
}

TEST(pointer_into_grown_vector_caught)
{
	struct th_child res;
	th_run(st_run_dangle, (void *)st_cxx_dangle_vector_growth, 60, &res);
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_NE((uintptr_t)0, target);
	ASSERT_KILLED_BY(SIGSEGV, res);
	struct st_uaf_report r;
	ASSERT_TRUE(st_parse_uaf(res.err, &r));
	EXPECT_EQ(target, r.addr);
	EXPECT_EQ((size_t)0, r.off);
	th_child_free(&res);
}

TEST(double_delete_caught)
{
	struct th_child res;
	th_run(st_run_dangle, (void *)st_cxx_double_delete, 60, &res);
	EXPECT_FALSE(strstr(res.out, "survived") != NULL);
	uintptr_t target = st_hex_after(res.out, "target=");
	ASSERT_KILLED_BY(SIGABRT, res);
	ASSERT_CONTAINS("dangless: double free of 0x", res.err);
	EXPECT_EQ(target, st_hex_after(res.err, "double free of "));
	th_child_free(&res);
}

TEST_HARNESS_MAIN
