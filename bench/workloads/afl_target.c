/* The target of the afl-fuzz benchmark (harness.py, "Fuzzing"): an ordinary
 * parser, no fuzzer instrumentation, no bug.  It splits its input into
 * words (a malloc each, kept in a growing array), counts them in a small
 * hash table, and frees everything: a few dozen allocations per input, as
 * a small parser makes.  afl-fuzz -n runs it once per input. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct entry {
	char *word;
	unsigned count;
	struct entry *next;
};

static unsigned hash(const char *s)
{
	unsigned h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

int main(void)
{
	static char in[4096];
	ssize_t n = read(0, in, sizeof(in));
	if (n <= 0)
		return 0;
	size_t cap = 4, nwords = 0;
	char **words = malloc(cap * sizeof(*words));
	for (ssize_t i = 0; i < n;) {
		while (i < n && !isalnum((unsigned char)in[i]))
			i++;
		ssize_t start = i;
		while (i < n && isalnum((unsigned char)in[i]))
			i++;
		if (i == start)
			continue;
		if (nwords == cap)
			words = realloc(words, (cap *= 2) * sizeof(*words));
		words[nwords] = malloc((size_t)(i - start) + 1);
		memcpy(words[nwords], in + start, (size_t)(i - start));
		words[nwords++][i - start] = 0;
	}
	enum { BUCKETS = 64 };
	struct entry **table = calloc(BUCKETS, sizeof(*table));
	unsigned distinct = 0;
	for (size_t k = 0; k < nwords; k++) {
		struct entry **e = &table[hash(words[k]) % BUCKETS];
		while (*e && strcmp((*e)->word, words[k]) != 0)
			e = &(*e)->next;
		if (!*e) {
			*e = calloc(1, sizeof(**e));
			(*e)->word = words[k];
			distinct++;
		}
		(*e)->count++;
	}
	for (unsigned b = 0; b < BUCKETS; b++)
		for (struct entry *e = table[b], *next; e; e = next) {
			next = e->next;
			free(e);
		}
	for (size_t k = 0; k < nwords; k++)
		free(words[k]);
	free(words);
	free(table);
	printf("%zu words, %u distinct\n", nwords, distinct);
	return 0;
}
