/* SPDX-License-Identifier: MIT */
/*
 * Size classes: multiples of 16 up to 256 bytes, then one class per
 * slots-per-page count (little waste per page), then steps of 1-4 KiB up
 * to DL_SMALL_MAX.  Each class fixes the shape of its runs (internal.h).
 */
#include "internal.h"

struct dl_class _dl_classes[DL_NCLASSES_MAX];
unsigned _dl_nclasses;
static uint8_t dl_class_of[DL_SMALL_MAX / 16 + 1];

static void dl_add_class(uint32_t size, uint16_t col_pages)
{
	dl_assert(_dl_nclasses < DL_NCLASSES_MAX);
	struct dl_class *c = &_dl_classes[_dl_nclasses++];
	c->size = size;
	c->col_pages = col_pages;
	c->cols = (uint16_t)(DL_RUN_PAGES / col_pages);
	c->rows = (uint16_t)(col_pages * DL_PAGE / size);
	c->run_pages = (uint16_t)(c->cols * col_pages);
	c->chunks_per_seg = (uint16_t)(DL_SEG_PAGES / c->run_pages);
	dl_assert(c->cols <= DL_MAX_COLS && c->rows <= DL_MAX_ROWS &&
		  c->rows >= 1 && c->chunks_per_seg <= DL_CHUNKS_PER_SEG);
}

/*
 * I6: a class is wide when some request it receives is more than 255
 * bytes smaller than its size.  At an alignment a, _dl_size_class picks the
 * first class from the size's own that suits a; so a suitable class
 * receives every size above the previous suitable class's (from 1 for the
 * first), and the smallest of them is what decides.  Size 0 is left out:
 * it would make 256 wide for posix_memalign(p, 256, 0) alone, which
 * _dl_size_class sends to the next suitable class instead.
 */
static void dl_mark_wide(void)
{
	for (size_t align = DL_MIN_ALIGN; align <= DL_PAGE; align *= 2) {
		uint32_t below = 0; /* the previous suitable class's size */
		for (unsigned c = 0; c < _dl_nclasses; c++) {
			struct dl_class *k = &_dl_classes[c];
			if (k->size % align && k->rows != 1)
				continue;
			if (k->size - (below + 1) > UINT8_MAX)
				k->wide = true;
			below = k->size;
		}
	}
}

void _dl_classes_init(void)
{
	for (uint32_t s = 16; s <= 256; s += 16)
		dl_add_class(s, 1);
	for (uint32_t per_page = 15; per_page >= 1; per_page--) {
		uint32_t s = (uint32_t)(DL_PAGE / per_page) & ~15u;
		if (s > _dl_classes[_dl_nclasses - 1].size)
			dl_add_class(s, 1);
	}
	/* Past a page, steps of a quarter of the size at most: a column of
	 * the fewest pages that holds whole slots (5 KiB: 5 pages, 4 rows).
	 * Whole pages only, as before, left a 4.2 KiB object (sqlite's page
	 * cache) 8 KiB. */
	static const uint8_t kib[] = {5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32};
	for (unsigned i = 0; i < sizeof(kib); i++) {
		uint32_t size = (uint32_t)kib[i] << 10;
		uint16_t pages = 1;
		while (pages * DL_PAGE % size)
			pages++;
		dl_add_class(size, pages);
	}
	unsigned c = 0;
	for (size_t i = 0; i <= DL_SMALL_MAX / 16; i++) {
		while (_dl_classes[c].size < i * 16)
			c++;
		dl_class_of[i] = (uint8_t)c;
	}
	dl_mark_wide();
}

unsigned _dl_size_class(size_t size, size_t align)
{
	if (size > DL_SMALL_MAX || align > DL_PAGE)
		return (unsigned)-1;
	unsigned c = dl_class_of[(size + 15) / 16];
	if (align <= DL_MIN_ALIGN)
		return c;
	/* Every slot offset is a multiple of size; single-row columns start
	 * on a page.  A narrow class takes no request over 255 bytes short
	 * (I6). */
	for (; c < _dl_nclasses; c++) {
		const struct dl_class *k = &_dl_classes[c];
		if ((k->size % align == 0 || k->rows == 1) &&
		    (k->wide || k->size - size <= UINT8_MAX))
			return c;
	}
	return (unsigned)-1;
}
