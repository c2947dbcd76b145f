/* SPDX-License-Identifier: MIT */
/*
 * Runtime options, from DANGLESS_OPTIONS="name=value:name=value" (like
 * ASAN_OPTIONS).  One table: each row is parsed, printed by verbosity=1 and
 * described by `dangless run --help`.  An unknown name or a bad value gets a
 * warning that names it, and the default stays.
 */
#include <string.h>

#include "internal.h"

struct dl_options _dl_opt = {
	.backend = NULL,
	.fallback = false,
	.stacks = false,
	.stats = false,
	.verbosity = 0,
	.revoke = DL_REVOKE_STRICT,
	.batch = 0,
	.symbolize = true,
	.symbolizer = "",
	.exitcode = -1,
	.abort_on_error = false,
	.halt_on_error = true,
	.secure = false,
	.alias_space = 0,
	.reclaim = true,
};

#define DL_MAX_BATCH 65536

static bool dl_parse_uint(const char *v, size_t n, unsigned *out)
{
	unsigned x = 0;
	if (n == 0 || n > 9)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return false;
		x = x * 10 + (unsigned)(v[i] - '0');
	}
	*out = x;
	return true;
}

static bool dl_parse_bool(const char *v, size_t n, bool *out)
{
	static const char *const yes[] = {"1", "true", "yes", "on"};
	static const char *const no[] = {"0", "false", "no", "off"};
	for (unsigned i = 0; i < 4; i++) {
		if (strlen(yes[i]) == n && !strncmp(v, yes[i], n))
			return *out = true, true;
		if (strlen(no[i]) == n && !strncmp(v, no[i], n))
			return *out = false, true;
	}
	return false;
}

static bool dl_set_backend(const char *v, size_t n)
{
	const struct dl_backend_entry *e = _dl_backend_find(v, n);
	if (!e)
		return false;
	_dl_opt.backend = e;
	return true;
}

static bool dl_set_revoke(const char *v, size_t n)
{
	unsigned batch;
	if (n == 6 && !strncmp(v, "strict", 6)) {
		_dl_opt.revoke = DL_REVOKE_STRICT;
		return true;
	}
	if (n > 6 && !strncmp(v, "batch:", 6) &&
	    dl_parse_uint(v + 6, n - 6, &batch) && batch >= 1 &&
	    batch <= DL_MAX_BATCH) {
		_dl_opt.revoke = batch > 1 ? DL_REVOKE_BATCH : DL_REVOKE_STRICT;
		_dl_opt.batch = batch;
		return true;
	}
	return false;
}

static bool dl_set_bool_field(bool *field, const char *v, size_t n)
{
	return dl_parse_bool(v, n, field);
}

static bool dl_set_verbosity(const char *v, size_t n)
{
	unsigned x;
	if (!dl_parse_uint(v, n, &x) || x > 2)
		return false;
	_dl_opt.verbosity = (int)x;
	_dl_msg_verbosity = (int)x;
	return true;
}

static bool dl_set_fallback(const char *v, size_t n)
{
	return dl_set_bool_field(&_dl_opt.fallback, v, n);
}
static bool dl_set_stacks(const char *v, size_t n)
{
	return dl_set_bool_field(&_dl_opt.stacks, v, n);
}
static bool dl_set_stats(const char *v, size_t n)
{
	return dl_set_bool_field(&_dl_opt.stats, v, n);
}

static bool dl_set_symbolize(const char *v, size_t n)
{
	return dl_set_bool_field(&_dl_opt.symbolize, v, n);
}
static bool dl_set_symbolizer(const char *v, size_t n)
{
	if (n == 0 || n >= sizeof(_dl_opt.symbolizer))
		return false;
	memcpy(_dl_opt.symbolizer, v, n);
	_dl_opt.symbolizer[n] = 0;
	return true;
}
static bool dl_set_log_path(const char *v, size_t n)
{
	return _dl_log_path_set(v, n);
}
static bool dl_set_exitcode(const char *v, size_t n)
{
	unsigned x;
	if (!dl_parse_uint(v, n, &x) || x > 255)
		return false;
	_dl_opt.exitcode = (int)x;
	return true;
}
static bool dl_set_abort_on_error(const char *v, size_t n)
{
	return dl_set_bool_field(&_dl_opt.abort_on_error, v, n);
}
static bool dl_set_halt_on_error(const char *v, size_t n)
{
	return dl_set_bool_field(&_dl_opt.halt_on_error, v, n);
}

/* SIZE: digits, then K, M, G or T (powers of 1024), or bytes. */
static bool dl_set_alias_space(const char *v, size_t n)
{
	uint64_t x = 0;
	size_t i = 0;
	for (; i < n && v[i] >= '0' && v[i] <= '9'; i++) {
		if (x > (UINT64_MAX - 9) / 10)
			return false;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	if (i == 0 || n - i > 1)
		return false;
	unsigned shift = 0;
	if (i < n) {
		const char *units = "KMGT";
		const char *u = memchr(units, v[i] & ~0x20, 4);
		if (!u || !v[i])
			return false;
		shift = 10 * (unsigned)(u - units + 1);
	}
	if (x > (UINT64_MAX >> shift))
		return false;
	x <<= shift;
	/* At least a few segments: 4 MiB; 0 means all there is. */
	if (x && x < ((uint64_t)4 << 20))
		return false;
	_dl_opt.alias_space = x;
	return true;
}
static bool dl_set_reclaim(const char *v, size_t n)
{
	return dl_set_bool_field(&_dl_opt.reclaim, v, n);
}

/* Under secure execution: what a value may not do. */
static bool dl_weaker_revoke(void)
{
	return _dl_opt.revoke != DL_REVOKE_STRICT;
}
static bool dl_weaker_fallback(void)
{
	return _dl_opt.fallback;
}
static bool dl_weaker_halt(void)
{
	return !_dl_opt.halt_on_error;
}

/*
 * secure: in a setuid, setgid or capability-raised program (AT_SECURE) the
 * environment is its user's, who must not weaken it: DL_ANY rows apply as
 * given, DL_IGNORED rows are ignored (they would choose a file to write or a
 * program to run with the program's privileges), and rows with `weaker` only
 * apply when the result is not weaker than the default.
 */
enum { DL_ANY, DL_IGNORED, DL_STRICTER };
static const struct dl_option_row {
	const char *name;
	bool (*set)(const char *value, size_t len);
	const char *fallback_value;
	const char *what;
	int secure;
	bool (*weaker)(void);
} dl_option_table[] = {
	{"backend", dl_set_backend, NULL /* the registry's first */,
	 NULL /* from the registry */, DL_ANY, NULL},
	{"revoke", dl_set_revoke, "strict",
	 "strict: free() revokes before it returns, so the first access "
	 "after free faults; batch:N: freed memory is never reused while "
	 "quarantined and is revoked in sorted, coalesced groups, so an access "
	 "faults at the latest after N further frees by the same thread; "
	 "meanwhile freed objects are poisoned (0xd5) and a write to one is "
	 "reported, late, when its batch is flushed",
	 DL_STRICTER, dl_weaker_revoke},
	{"fallback", dl_set_fallback, "0",
	 "1: when aliases run out (address space, vm.max_map_count), go on "
	 "with unprotected glibc allocation, and a backend this host cannot "
	 "run gives way to the default; 0: stop with a report or the reason",
	 DL_STRICTER, dl_weaker_fallback},
	{"stacks", dl_set_stacks, "0",
	 "1: record malloc and free stacks and print them in reports "
	 "(costs a backtrace per call)",
	 DL_ANY, NULL},
	{"symbolize", dl_set_symbolize, "1",
	 "1: reports name function, file and line (a symbolizer process is "
	 "started at report time); 0: FUNCTION+OFFSET (OBJECT+OFFSET)",
	 DL_ANY, NULL},
	{"symbolizer", dl_set_symbolizer, "addr2line",
	 "PATH: the symbolizer to run, addr2line or llvm-symbolizer (found "
	 "in PATH unless PATH has a /); a missing one leaves object offsets, "
	 "with one note",
	 DL_IGNORED, NULL},
	{"log_path", dl_set_log_path, "stderr",
	 "PATH: write reports and messages to PATH.PID instead of stderr",
	 DL_IGNORED, NULL},
	{"exitcode", dl_set_exitcode, "abort",
	 "N (0-255): a bad free (double, invalid, interior) ends the process "
	 "with exit status N instead of abort()",
	 DL_IGNORED, NULL},
	{"abort_on_error", dl_set_abort_on_error, "0",
	 "1: every report ends in abort() (SIGABRT), use-after-free too, "
	 "and before exitcode",
	 DL_ANY, NULL},
	{"halt_on_error", dl_set_halt_on_error, "1",
	 "0: a bad free is reported and the program goes on (the pointer is "
	 "left alone, leaked); dangling accesses still stop it",
	 DL_STRICTER, dl_weaker_halt},
	{"alias_space", dl_set_alias_space, "0",
	 "SIZE (K, M, G or T suffix, at least 4M): the most alias address "
	 "space to use at once; 0: all the backend has (128 TiB; 64 PiB "
	 "under kvm with 5-level paging). Sweeps for reusable space start "
	 "at three quarters of it; reaching it stops "
	 "the program or, with fallback=1, goes on unprotected. Ignored under "
	 "secure execution (it could only make a privileged program stop "
	 "early)",
	 DL_IGNORED, NULL},
	{"reclaim", dl_set_reclaim, "1",
	 "1: when alias space runs short, and on dangless_reclaim(), stop "
	 "the threads and sweep memory for revoked alias ranges that nothing "
	 "points to, and reuse those; 0: never reuse alias space",
	 DL_ANY, NULL},
	{"stats", dl_set_stats, "0", "1: print the counters at exit", DL_ANY,
	 NULL},
	{"verbosity", dl_set_verbosity, "0",
	 "0-2: 1 prints the options in effect at start (and, under secure "
	 "execution, those ignored)",
	 DL_ANY, NULL},
};
#define DL_NOPTIONS (sizeof(dl_option_table) / sizeof(dl_option_table[0]))

/*
 * Items are separated by ':', but values may hold one too (revoke=batch:64):
 * a ':' separates only when what follows it, up to the next ':', is a
 * name=value item.
 */
static const char *dl_item_end(const char *item)
{
	const char *end = strchrnul(item, ':');
	while (*end) {
		const char *next = strchrnul(end + 1, ':');
		if (memchr(end + 1, '=', (size_t)(next - end - 1)))
			break;
		end = next;
	}
	return end;
}

void _dl_options_parse(const char *env, bool secure)
{
	_dl_opt.secure = secure;
	if (!env)
		return;
	char ignored[512];
	struct dl_buf ig = {ignored, 0, sizeof(ignored)};
	ignored[0] = 0;
	bool alias_space_ignored = false;
	while (*env) {
		const char *end = dl_item_end(env);
		const char *eq = memchr(env, '=', (size_t)(end - env));
		size_t name_len = (size_t)((eq ? eq : end) - env);
		const struct dl_option_row *row = NULL;
		for (unsigned i = 0; i < DL_NOPTIONS; i++)
			if (strlen(dl_option_table[i].name) == name_len &&
			    !strncmp(env, dl_option_table[i].name, name_len))
				row = &dl_option_table[i];
		if (name_len == 0) {
			/* an empty item, as in "a=1::b=2": nothing to do */
		} else if (!row) {
			_dl_warn("unknown option '%s' in DANGLESS_OPTIONS "
				 "(ignored; `dangless run --help` lists them)",
				 env);
		} else if (secure && row->secure == DL_IGNORED) {
			if (row->set == dl_set_alias_space)
				alias_space_ignored = true;
			_dl_buf_str(&ig, " ");
			_dl_buf_str(&ig, row->name);
		} else {
			struct dl_options before = _dl_opt;
			if (!eq || !row->set(eq + 1, (size_t)(end - eq - 1))) {
				_dl_warn("bad value in DANGLESS_OPTIONS item "
					 "'%s' (keeping %s=%s)",
					 env, row->name,
					 row->fallback_value
						 ? row->fallback_value
						 : _dl_backends[0].name);
			} else if (secure && row->weaker && row->weaker()) {
				_dl_opt = before;
				_dl_buf_str(&ig, " ");
				_dl_buf_str(&ig, row->name);
			}
		}
		env = *end ? end + 1 : end;
	}
	if (ig.len)
		_dl_info("secure execution (setuid, setgid or capabilities): "
			 "ignored%s (here options may only make Dangless "
			 "stricter)",
			 ignored);
	if (alias_space_ignored)
		_dl_info("alias_space ignored under secure execution: a cap "
			 "on alias space could only make a privileged program "
			 "stop early");
}

void _dl_options_print(void)
{
	char revoke[32] = "strict";
	if (_dl_opt.revoke == DL_REVOKE_BATCH) {
		struct dl_buf b = {revoke, 0, sizeof(revoke)};
		_dl_buf_str(&b, "batch:");
		_dl_buf_dec(&b, _dl_opt.batch);
	}
	_dl_warn("options: backend=%s (running: %s) revoke=%s fallback=%d "
		 "stacks=%d symbolize=%d symbolizer=%s log_path=%s exitcode=%d "
		 "abort_on_error=%d halt_on_error=%d alias_space=%llu "
		 "reclaim=%d stats=%d verbosity=%d%s",
		 _dl_opt.backend ? _dl_opt.backend->name : _dl_backends[0].name,
		 _dl_be ? _dl_be_name : "none", revoke, _dl_opt.fallback,
		 _dl_opt.stacks, _dl_opt.symbolize,
		 _dl_opt.symbolizer[0] ? _dl_opt.symbolizer : "addr2line",
		 _dl_log_path()[0] ? _dl_log_path() : "stderr",
		 _dl_opt.exitcode, _dl_opt.abort_on_error,
		 _dl_opt.halt_on_error,
		 (unsigned long long)_dl_opt.alias_space, _dl_opt.reclaim,
		 _dl_opt.stats, _dl_opt.verbosity,
		 _dl_opt.secure ? " (secure execution)" : "");
}

/* backend's help line: every row of the registry, built or not. */
static void dl_print_backends_help(int fd)
{
	_dl_write_all(fd, "what makes the aliases:", 23);
	for (unsigned i = 0; i < _dl_nbackends; i++) {
		const struct dl_backend_entry *e = &_dl_backends[i];
		_dl_write_all(fd, i ? "; " : " ", i ? 2 : 1);
		_dl_write_all(fd, e->name, strlen(e->name));
		_dl_write_all(fd, ": ", 2);
		_dl_write_all(fd, e->what, strlen(e->what));
		if (!e->ops) {
			_dl_write_all(fd, " (not available: ", 17);
			_dl_write_all(fd, e->missing, strlen(e->missing));
			_dl_write_all(fd, ")", 1);
		}
	}
}

DL_EXPORT void dangless_print_options_help(int fd)
{
	for (unsigned i = 0; i < DL_NOPTIONS; i++) {
		const struct dl_option_row *r = &dl_option_table[i];
		_dl_write_all(fd, "  ", 2);
		_dl_write_all(fd, r->name, strlen(r->name));
		_dl_write_all(fd, " (default ", 10);
		const char *dflt = r->fallback_value ? r->fallback_value
						     : _dl_backends[0].name;
		_dl_write_all(fd, dflt, strlen(dflt));
		_dl_write_all(fd, "): ", 3);
		if (r->what) {
			_dl_write_all(fd, r->what, strlen(r->what));
		} else {
			dl_print_backends_help(fd);
		}
		_dl_write_all(fd, "\n", 1);
	}
}
