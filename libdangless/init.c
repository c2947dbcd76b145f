/* SPDX-License-Identifier: MIT */
/*
 * Start-up and fork.  Dangless starts on the first allocation, from the
 * shared library's constructor, or (static link) from .preinit_array,
 * whichever comes first; a call that arrives while it is starting is served
 * from the early arena (malloc.c).
 */
#include <errno.h>
#include <execinfo.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

atomic_int _dl_state;
const struct dl_backend *_dl_be;
static __thread bool dl_starting_here __attribute__((tls_model("initial-exec")));

static void dl_fork_prepare(void)
{
	_dl_heap_lock_all();
	_dl_segment_lock_all();
	_dl_be->fork_prepare();
}

static void dl_fork_parent(void)
{
	_dl_be->fork_parent();
	_dl_segment_unlock_all(false);
	_dl_heap_unlock_all(false);
}

static void dl_rerevoke(uintptr_t alias, size_t len)
{
	if (_dl_be->alias_revoke((void *)alias, len))
		_dl_fatal("fork: could not revoke %p again in the child",
			  (void *)alias);
}

static void dl_fork_child(void)
{
	if (_dl_be->fork_child())
		_dl_segment_for_each_revoked(dl_rerevoke);
	_dl_segment_unlock_all(true);
	_dl_heap_unlock_all(true);
}

static void dl_at_exit(void)
{
	if (_dl_opt.stats && atomic_load(&_dl_state) == DL_READY)
		dangless_print_stats();
}

static const struct dl_backend *dl_pick_backend(void)
{
	if (strcmp(_dl_opt.backend, "host") != 0)
		_dl_warn("backend=%s is not available in this build yet "
			 "(see README, 'Backends'); using the host backend",
			 _dl_opt.backend);
	return &_dl_backend_host;
}

static int dl_start(void)
{
	_dl_options_parse(getenv("DANGLESS_OPTIONS"));
	if (_dl_opt.verbosity)
		_dl_options_print();
	if (_dl_opt.fallback)
		_dl_fallback_resolve();
	_dl_be = dl_pick_backend();
	_dl_heap_init();
	int err = _dl_segmap_init();
	if (!err)
		err = _dl_be->init();
	if (err) {
		if (!_dl_opt.fallback)
			_dl_fatal("the %s backend could not start (%s). With "
				  "DANGLESS_OPTIONS=fallback=1 the program runs "
				  "on glibc's malloc, unprotected.",
				  _dl_be->name, strerror(-err));
		_dl_warn("the %s backend could not start (%s); running on "
			 "glibc's malloc, unprotected (fallback=1)",
			 _dl_be->name, strerror(-err));
		_dl_fallback_used = true;
		return err;
	}
	/* backtrace() loads its unwinder on first use: do it while our own
	 * re-entrant allocations still go to the early arena, and not in a
	 * signal handler. */
	void *warm[2];
	backtrace(warm, 2);
	_dl_fault_init();
	pthread_atfork(dl_fork_prepare, dl_fork_parent, dl_fork_child);
	atexit(dl_at_exit);
	return 0;
}

int _dl_ensure_init(void)
{
	int state = atomic_load_explicit(&_dl_state, memory_order_acquire);
	if (state == DL_READY)
		return 0;
	if (state == DL_FAILED)
		return -ENOSYS;
	if (dl_starting_here)
		return -EAGAIN; /* re-entered from our own start-up */
	int expected = DL_UNINIT;
	if (atomic_compare_exchange_strong(&_dl_state, &expected,
					   DL_INITIALISING)) {
		dl_starting_here = true;
		int err = dl_start();
		dl_starting_here = false;
		atomic_store_explicit(&_dl_state, err ? DL_FAILED : DL_READY,
				      memory_order_release);
		return err ? -ENOSYS : 0;
	}
	while ((state = atomic_load_explicit(&_dl_state,
					     memory_order_acquire)) ==
	       DL_INITIALISING)
		__builtin_ia32_pause();
	return state == DL_READY ? 0 : -ENOSYS;
}

DL_EXPORT int dangless_init(void)
{
	int r = _dl_ensure_init();
	return r == -EAGAIN ? 0 : r;
}

DL_EXPORT int dangless_dedicate_vmem(void *start, void *end)
{
	if ((uintptr_t)end <= (uintptr_t)start)
		return -EINVAL;
	int r = _dl_ensure_init();
	if (r && r != -EAGAIN)
		return r;
	if (!_dl_be || !_dl_be->alias_dedicate)
		return -ENOSYS;
	_dl_heap_lock_all(); /* the class streams are carved under these */
	r = _dl_be->alias_dedicate(start, (size_t)((char *)end - (char *)start));
	if (r == 0)
		_dl_segment_streams_reset();
	_dl_heap_unlock_all(false);
	return r;
}

/*
 * After libc is initialised (a .preinit_array entry would run before it and
 * see no environment); a program's constructor that allocates earlier
 * starts Dangless itself through malloc.
 */
__attribute__((constructor(101))) static void dl_constructor(void)
{
	_dl_ensure_init();
}
