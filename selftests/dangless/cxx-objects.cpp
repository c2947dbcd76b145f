// SPDX-License-Identifier: MIT
/*
 * The C++ half of the cxx suite (the harness is C): every operator new and
 * delete that C++ has, each checked to hand out Dangless memory, plus the
 * library's own allocations (containers, strings, exceptions, streams).
 * Each function returns 0 when all is well, or the number of the check that
 * failed.  st_cxx_dangle_* end with a dangling access.
 */
#include <dangless/dangless.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

bool from_dangless(const void *p)
{
	return dangless_get_canonical(const_cast<void *>(p)) != p;
}

template <typename T> T *launder_ptr(T *p)
{
	__asm__ volatile("" : "+r"(p));
	return p;
}

struct Account {
	char owner[24];
	long balance;
	Account(const char *o, long b) : balance(b)
	{
		std::snprintf(owner, sizeof(owner), "%s", o);
	}
	virtual ~Account() {}
	virtual long get() const { return balance; }
};

struct alignas(4096) PageAligned {
	char bytes[100];
};

struct alignas(64) CacheLine {
	int v;
};

} // namespace

extern "C" int st_cxx_new_delete(void)
{
	Account *a = new Account("alice", 10);
	if (!from_dangless(a))
		return 1;
	if (a->get() != 10)
		return 2;
	delete a;

	int *arr = new int[1000]();
	if (!from_dangless(arr))
		return 3;
	for (int i = 0; i < 1000; i++)
		if (arr[i])
			return 4;
	delete[] arr;

	Account *many = static_cast<Account *>(
		::operator new[](sizeof(Account) * 10));
	if (!from_dangless(many))
		return 5;
	::operator delete[](many);

	/* sized delete */
	double *d = new double(1.5);
	::operator delete(d, sizeof(double));

	/* nothrow */
	char *nt = new (std::nothrow) char[100];
	if (!nt || !from_dangless(nt))
		return 6;
	delete[] nt;
	void *raw = ::operator new(50, std::nothrow);
	if (!raw || !from_dangless(raw))
		return 7;
	::operator delete(raw, std::nothrow);
	return 0;
}

extern "C" int st_cxx_aligned_new(void)
{
	PageAligned *p = new PageAligned();
	if ((uintptr_t)p % 4096 || !from_dangless(p))
		return 1;
	delete p;

	CacheLine *c = new CacheLine[7];
	if ((uintptr_t)c % 64 || !from_dangless(c))
		return 2;
	delete[] c;

	for (size_t align = 8; align <= (2u << 20); align *= 2) {
		std::align_val_t al{align};
		void *v = ::operator new(100, al);
		if ((uintptr_t)v % align || !from_dangless(v))
			return 3;
		std::memset(v, 1, 100);
		::operator delete(v, al);
		v = ::operator new[](3 * align, al);
		if ((uintptr_t)v % align)
			return 4;
		::operator delete[](v, 3 * align, al);
		v = ::operator new(10, al, std::nothrow);
		if (!v || (uintptr_t)v % align)
			return 5;
		::operator delete(v, al, std::nothrow);
		v = ::operator new[](10, al, std::nothrow);
		if (!v || (uintptr_t)v % align)
			return 6;
		::operator delete[](v, al, std::nothrow);
		v = ::operator new(64, al);
		::operator delete(v, 64, al);
	}
	return 0;
}

extern "C" int st_cxx_bad_alloc(void)
{
	volatile size_t huge = SIZE_MAX / 2;
	try {
		/* laundered: new/delete pairs may otherwise be elided */
		char *p = launder_ptr(new char[huge]);
		p[0] = 1;
		delete[] p;
		return 1; /* should have thrown */
	} catch (const std::bad_alloc &) {
	}
	char *q = launder_ptr(new (std::nothrow) char[huge]);
	if (q)
		return 2;
	try {
		void *v = launder_ptr(::operator new(huge, std::align_val_t{4096}));
		::operator delete(v, std::align_val_t{4096});
		return 3;
	} catch (const std::bad_alloc &) {
	}
	return 0;
}

extern "C" int st_cxx_library(void)
{
	std::vector<std::string> v;
	for (int i = 0; i < 20000; i++)
		v.push_back("string number " + std::to_string(i));
	if (!from_dangless(v.data()))
		return 1;
	std::map<std::string, int> m;
	for (int i = 0; i < 5000; i++)
		m[v[i * 3]] = i;
	if (m.size() != 5000 || m["string number 300"] != 100)
		return 2;
	auto sp = std::make_shared<Account>("bob", 20);
	std::unique_ptr<Account> up(new Account("cecile", 30));
	if (sp->get() + up->get() != 50)
		return 3;
	std::ostringstream os;
	for (int i = 0; i < 1000; i++)
		os << i << ',';
	if (os.str().size() != 3890)
		return 4;
	try {
		throw std::runtime_error(std::string(200, 'x'));
	} catch (const std::exception &e) {
		if (std::strlen(e.what()) != 200)
			return 5;
	}
	std::vector<int> big(1 << 20, 7);
	big.resize(3 << 20, 8);
	if (big[0] != 7 || big[(3 << 20) - 1] != 8)
		return 6;
	return 0;
}

extern "C" void st_cxx_dangle_object(void)
{
	Account *a = new Account("bob", 1234);
	std::printf("target=%p\n", static_cast<void *>(&a->balance));
	std::printf("offset=0x%zx size=0x%zx\n",
		    static_cast<size_t>(reinterpret_cast<char *>(&a->balance) -
					reinterpret_cast<char *>(a)),
		    sizeof(Account));
	std::fflush(stdout);
	Account *dangling = launder_ptr(a);
	delete a;
	long b = *static_cast<volatile long *>(&dangling->balance);
	std::printf("survived %ld\n", b);
}

extern "C" void st_cxx_dangle_virtual_call(void)
{
	Account *a = new Account("bob", 1);
	std::printf("target=%p\n", static_cast<void *>(a));
	std::fflush(stdout);
	Account *dangling = launder_ptr(a);
	delete a;
	/* reading the vtable pointer of a deleted object */
	std::printf("survived %ld\n", dangling->get());
}

extern "C" void st_cxx_dangle_array(void)
{
	int *arr = new int[5000];
	arr[4000] = 1;
	std::printf("target=%p\n", static_cast<void *>(&arr[4000]));
	std::fflush(stdout);
	int *dangling = launder_ptr(arr);
	delete[] arr;
	*static_cast<volatile int *>(&dangling[4000]) = 2;
	std::printf("survived\n");
}

extern "C" void st_cxx_dangle_vector_growth(void)
{
	/* the classic: a pointer into a vector that then grows */
	std::vector<int> v(10, 5);
	int *first = &v[0];
	std::printf("target=%p\n", static_cast<void *>(first));
	std::fflush(stdout);
	for (int i = 0; i < 10000; i++)
		v.push_back(i);
	std::printf("survived %d\n", *static_cast<volatile int *>(launder_ptr(first)));
}

extern "C" void st_cxx_double_delete(void)
{
	Account *a = new Account("x", 0);
	std::printf("target=%p\n", static_cast<void *>(a));
	std::fflush(stdout);
	void *dangling = launder_ptr(static_cast<void *>(a));
	delete a;
	::operator delete(dangling);
	std::printf("survived\n");
}
