/* binary-trees (the Benchmarks Game program): many short-lived complete
 * binary trees of 16-byte nodes, one long-lived tree alongside. */
#include "common.h"
#include <math.h>

struct node { struct node *l, *r; };

static struct node *make(int d)
{
	struct node *n = xmalloc(sizeof *n);
	if (d > 0) {
		n->l = make(d - 1);
		n->r = make(d - 1);
	} else {
		n->l = n->r = NULL;
	}
	return n;
}

static long check(const struct node *n)
{
	return 1 + (n->l ? check(n->l) + check(n->r) : 0);
}

static void drop(struct node *n)
{
	if (n->l) {
		drop(n->l);
		drop(n->r);
	}
	free(n);
}

int main(int argc, char **argv)
{
	work_begin();
	double s = argc > 1 ? atof(argv[1]) : 1.0;
	if (s <= 0)
		s = 1.0;
	/* depth 12 at full scale (~7e5 nodes); each halving of the scale drops one level */
	int maxd = 12 + (int)floor(log2(s) + 0.5), mind = 4;
	if (maxd < mind + 2)
		maxd = mind + 2;
	struct node *t = make(maxd + 1);
	printf("stretch depth %d check %ld\n", maxd + 1, check(t));
	drop(t);
	struct node *longlived = make(maxd);
	for (int d = mind; d <= maxd; d += 2) {
		long iters = 1L << (maxd - d + mind), c = 0;
		for (long i = 0; i < iters; i++) {
			t = make(d);
			c += check(t);
			drop(t);
		}
		printf("%ld trees of depth %d check %ld\n", iters, d, c);
	}
	printf("long lived depth %d check %ld\n", maxd, check(longlived));
	footprint_report();
	drop(longlived);
	work_end();
	return 0;
}
