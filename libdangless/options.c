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

static const struct dl_option_row {
	const char *name;
	bool (*set)(const char *value, size_t len);
	const char *fallback_value;
	const char *what;
} dl_option_table[] = {
	{"backend", dl_set_backend, NULL /* the registry's first */,
	 NULL /* from the registry */},
	{"revoke", dl_set_revoke, "strict",
	 "strict: free() revokes before it returns, so the first access "
	 "after free faults; batch:N: freed memory is never reused while "
	 "quarantined and is revoked in sorted, coalesced groups, so an access "
	 "faults at the latest after N further frees by the same thread; "
	 "meanwhile freed objects are poisoned (0xd5) and a write to one is "
	 "reported, late, when its batch is flushed"},
	{"fallback", dl_set_fallback, "0",
	 "1: when aliases run out (address space, vm.max_map_count), go on "
	 "with unprotected glibc allocation; 0: stop with a report"},
	{"stacks", dl_set_stacks, "0",
	 "1: record malloc and free stacks and print them in reports "
	 "(costs a backtrace per call)"},
	{"stats", dl_set_stats, "0", "1: print the counters at exit"},
	{"verbosity", dl_set_verbosity, "0",
	 "0-2: 1 prints the options in effect at start"},
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

void _dl_options_parse(const char *env)
{
	if (!env)
		return;
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
		} else if (!eq || !row->set(eq + 1, (size_t)(end - eq - 1))) {
			_dl_warn("bad value in DANGLESS_OPTIONS item '%s' "
				 "(keeping %s=%s)",
				 env, row->name,
				 row->fallback_value ? row->fallback_value
						     : _dl_backends[0].name);
		}
		env = *end ? end + 1 : end;
	}
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
		 "stacks=%d stats=%d verbosity=%d",
		 _dl_opt.backend ? _dl_opt.backend->name : _dl_backends[0].name,
		 _dl_be ? _dl_be_name : "none", revoke,
		 _dl_opt.fallback, _dl_opt.stacks, _dl_opt.stats,
		 _dl_opt.verbosity);
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
