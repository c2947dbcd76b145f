/* Small-object churn in the style of cfrac/espresso: a working set of a
 * thousand objects of mixed small sizes, replaced at random, plus bursts of
 * short-lived temporaries freed in LIFO order (bignum scratch values). */
#include "common.h"

#define SLOTS 1000

int main(int argc, char **argv)
{
	work_begin();
	long ops = scaled(argc, argv, 400000, 2000);
	rng_t r = rng_seed(1);
	char *slot[SLOTS] = { 0 };
	uint64_t sum = 0;
	long done = 0;

	while (done < ops) {
		/* replace a random member of the working set */
		size_t i = rng_below(&r, SLOTS), n = small_size(&r);
		if (slot[i])
			sum += (unsigned char)slot[i][0];
		free(slot[i]);
		slot[i] = xmalloc(n);
		memset(slot[i], (int)(done & 0xff), n < 32 ? n : 32);
		done++;
		/* every 8th op: a burst of 1-8 temporaries, freed last-in first-out */
		if ((done & 7) == 0) {
			char *tmp[8];
			int k = 1 + (int)rng_below(&r, 8);
			for (int j = 0; j < k; j++) {
				tmp[j] = xmalloc(8 + rng_below(&r, 120));
				tmp[j][0] = (char)j;
			}
			for (int j = k - 1; j >= 0; j--) {
				sum += (unsigned char)tmp[j][0];
				free(tmp[j]);
			}
			done += k;
		}
	}
	footprint_report();
	for (int i = 0; i < SLOTS; i++)
		free(slot[i]);
	printf("churn ops=%ld sum=%llu\n", done, (unsigned long long)sum);
	work_end();
	return 0;
}
