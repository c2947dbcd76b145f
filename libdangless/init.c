/* SPDX-License-Identifier: MIT */
/*
 * Start-up, thread life and fork.  Dangless starts on the first allocation,
 * from the shared library's constructor, or (static link) from
 * .preinit_array, whichever comes first; a call that arrives while it is
 * starting is served from the early arena (malloc.c).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>

#include "internal.h"

atomic_int _dl_state;
static __thread bool dl_starting_here __attribute__((tls_model("initial-exec")));

/* ---- threads ---- */

__thread bool _dl_thread_ready __attribute__((tls_model("initial-exec")));
static pthread_key_t dl_thread_key;

/* What is still quarantined is checked for late writes, then revoked. */
static void dl_quarantine_flush_or_report(void)
{
	struct dl_late_write lw;
	if (!_dl_quarantine_flush(&lw))
		_dl_report_late_write(&lw);
}

DL_REALIGN_STACK static void dl_thread_exit(void *unused)
{
	(void)unused;
	struct dl_late_write lw;
	if (!_dl_quarantine_thread_exit(&lw))
		_dl_report_late_write(&lw);
	_dl_small_thread_exit();
	_dl_fault_thread_exit();
}

void _dl_thread_start(void)
{
	_dl_thread_ready = true;
	/* Any non-NULL value: the destructor runs only for those. */
	pthread_setspecific(dl_thread_key, &_dl_thread_ready);
	_dl_fault_thread_init();
}

/* ---- fork: every lock, in the order of internal.h ---- */

DL_REALIGN_STACK static void dl_fork_prepare(void)
{
	/* The child must not inherit a batch whose late writes nobody checks;
	 * only the forking thread's own quarantine is ours to flush. */
	if (_dl_opt.revoke == DL_REVOKE_BATCH)
		dl_quarantine_flush_or_report();
	_dl_stats_lock();
	_dl_runs_lock_all();
	_dl_large_lock_all();
	_dl_segment_lock_all();
	if (_dl_be->fork_prepare)
		_dl_be->fork_prepare();
	_dl_pools_lock_all();
}

DL_REALIGN_STACK static void dl_fork_parent(void)
{
	_dl_pools_unlock_all(false);
	if (_dl_be->fork_parent)
		_dl_be->fork_parent();
	_dl_segment_unlock_all(false);
	_dl_large_unlock_all(false);
	_dl_runs_unlock_all(false);
	_dl_stats_unlock(false);
}

static void dl_rerevoke(uintptr_t alias, size_t len)
{
	if (_dl_be->alias_revoke((void *)alias, len))
		_dl_fatal("fork: could not revoke %p again in the child",
			  (void *)alias);
}

static void dl_rerevoke_segment(struct dl_segment *seg)
{
	/* Large frees release their range at once: nothing to do again. */
	if (seg->kind == DL_SEG_SMALL)
		_dl_small_for_each_revoked(seg, dl_rerevoke);
}

DL_REALIGN_STACK static void dl_fork_child(void)
{
	_dl_pools_unlock_all(true);
	_dl_reclaim_fork_child();
	if (_dl_be->fork_child && _dl_be->fork_child())
		_dl_segment_for_each_live(dl_rerevoke_segment);
	_dl_segment_unlock_all(true);
	_dl_large_unlock_all(true);
	_dl_runs_unlock_all(true);
	_dl_stats_unlock(true);
}

/* ---- start-up ---- */

DL_REALIGN_STACK static void dl_at_exit(void)
{
	if (_dl_opt.revoke == DL_REVOKE_BATCH &&
	    atomic_load(&_dl_state) == DL_READY)
		dl_quarantine_flush_or_report();
	if (_dl_opt.stats && atomic_load(&_dl_state) == DL_READY)
		dangless_print_stats();
}

/* The backend asked for, else the registry's first (the default). */
static void dl_pick_backend(void)
{
	const struct dl_backend_entry *want =
		_dl_opt.backend ? _dl_opt.backend : &_dl_backends[0];
	if (!want->ops) {
		_dl_warn("backend=%s is not available in this build (%s); "
			 "using the %s backend",
			 want->name, want->missing, _dl_backends[0].name);
		want = &_dl_backends[0];
	}
	_dl_be = want->ops;
	_dl_be_name = want->name;
}

/*
 * Starts the backend picked.  One that this host cannot run (it says why)
 * gives way, with fallback=1, to the registry's default, in one line; with
 * fallback=0 the program stops with the reason.
 */
static int dl_start_backend(void)
{
	int err = _dl_be->init();
	if (!err || !_dl_be->why_refused)
		return err;
	const struct dl_backend_entry *dflt = &_dl_backends[0];
	const char *why = _dl_be->why_refused();
	if (!_dl_opt.fallback || _dl_be == dflt->ops)
		_dl_fatal("backend=%s: %s. With DANGLESS_OPTIONS=fallback=1 "
			  "the program runs on the %s backend instead.",
			  _dl_be_name, why, dflt->name);
	_dl_warn("backend=%s: %s; using the %s backend", _dl_be_name, why,
		 dflt->name);
	_dl_be = dflt->ops;
	_dl_be_name = dflt->name;
	return _dl_be->init();
}

static int dl_start(void)
{
	/* AT_SECURE: setuid, setgid or file capabilities; the environment is
	 * then the user's, not the program's owner's (options.c). */
	_dl_options_parse(getenv("DANGLESS_OPTIONS"), getauxval(AT_SECURE));
	if (_dl_opt.fallback)
		_dl_fallback_resolve();
	dl_pick_backend();
	_dl_classes_init();
	pthread_key_create(&dl_thread_key, dl_thread_exit);
	int err = _dl_segmap_init();
	if (!err)
		err = dl_start_backend();
	if (!err) {
		/* Before the first segment: the map's canonical check.  The
		 * core trusts no more than DL_ADDR_BITS_MAX. */
		unsigned bits = _dl_be->addr_bits ? _dl_be->addr_bits()
						  : DL_ADDR_BITS;
		_dl_addr_bits = bits < DL_ADDR_BITS	   ? DL_ADDR_BITS
				: bits > DL_ADDR_BITS_MAX ? DL_ADDR_BITS_MAX
							  : bits;
		/* All there is: one half of the address space, which is what
		 * every backend carves alias space from. */
		_dl_space_init(_dl_opt.alias_space
				       ? _dl_opt.alias_space
				       : (uint64_t)1 << _dl_addr_bits);
	}
	/* after the start: a refused backend may have given way */
	if (_dl_opt.verbosity)
		_dl_options_print();
	if (err) {
		if (!_dl_opt.fallback)
			_dl_fatal("the %s backend could not start (%s). With "
				  "DANGLESS_OPTIONS=fallback=1 the program runs "
				  "on glibc's malloc, unprotected.",
				  _dl_be_name, _dl_strerror(-err));
		_dl_warn("the %s backend could not start (%s); running on "
			 "glibc's malloc, unprotected (fallback=1)",
			 _dl_be_name, _dl_strerror(-err));
		atomic_store(&_dl_fallback_used, true);
		return err;
	}
	_dl_release_dead_chunks = _dl_be->revoke_splits &&
				  _dl_be->revoke_splits();
	/* The unwinder sets itself up on first use: not in a signal handler. */
	_dl_stack_warm();
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
	r = _dl_be->alias_dedicate(start, (size_t)((char *)end - (char *)start));
	if (r == 0)
		_dl_segment_streams_reset();
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
