/* PVH loader stub for the Intel (Bochs) rig, tools/rig/build-intel: a multiboot kernel (loaded by syslinux mboot.c32) that takes
 * module 0 = an uncompressed x86-64 vmlinux (ELF) and module 1 = initrd, copies the
 * vmlinux PT_LOAD segments to their physical addresses and jumps to the kernel's
 * PVH entry (Xen ELF note 18) with an hvm_start_info: this skips the bzImage's xz
 * decompression, which costs ~40 s under Bochs. */
#include <stdint.h>
typedef uint32_t u32; typedef uint64_t u64;
struct mb_info { u32 flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr, syms[4], mmap_length, mmap_addr; };
struct mb_mod { u32 start, end, string, reserved; };
struct start_info { u32 magic, version, flags, nr_modules; u64 modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr; u32 memmap_entries, reserved; };
struct modlist { u64 paddr, size, cmdline_paddr, reserved; };
struct memmap { u64 addr, size; u32 type, reserved; };
struct ehdr { unsigned char ident[16]; uint16_t type, machine; u32 version; u64 entry, phoff, shoff; u32 flags; uint16_t ehsize, phentsize, phnum, shentsize, shnum, shstrndx; };
struct phdr { u32 type, flags; u64 offset, vaddr, paddr, filesz, memsz, align; };
void jump_pvh(u32 entry, u32 info) __attribute__((noreturn));

static struct start_info si; static struct modlist ml; static struct memmap mm[64];
static char cmdline[2048];

static void outb(uint16_t p, uint8_t v) { __asm__ volatile("outb %0,%1" :: "a"(v), "Nd"(p)); }
static uint8_t inb(uint16_t p) { uint8_t v; __asm__ volatile("inb %1,%0" : "=a"(v) : "Nd"(p)); return v; }
static void putc_(char c) { while (!(inb(0x3fd) & 0x20)); outb(0x3f8, c); }
static void puts_(const char *s) { while (*s) { if (*s == '\n') putc_('\r'); putc_(*s++); } }
static void puthex(u32 v) { puts_("0x"); for (int i = 28; i >= 0; i -= 4) putc_("0123456789abcdef"[(v >> i) & 15]); }
static void die(const char *s) { puts_("pvhstub: "); puts_(s); puts_("\n"); for (;;) __asm__ volatile("cli; hlt"); }
static void copy(u32 dst, u32 src, u32 n) { /* memmove */
	if (dst <= src || dst >= src + n) { u32 w = n >> 2; n &= 3;
		__asm__ volatile("cld; rep movsl; mov %3,%%ecx; rep movsb" : "+D"(dst), "+S"(src), "+c"(w) : "r"(n) : "memory"); }
	else { dst += n - 1; src += n - 1; __asm__ volatile("std; rep movsb; cld" : "+D"(dst), "+S"(src), "+c"(n) :: "memory"); }
}
static void zero(u32 dst, u32 n) { u32 w = n >> 2; n &= 3; __asm__ volatile("cld; rep stosl; mov %2,%%ecx; rep stosb" : "+D"(dst), "+c"(w) : "r"(n), "a"(0) : "memory"); }
static int overlap(u32 a, u32 an, u32 b, u32 bn) { return a < b + bn && b < a + an; }

void stub_main(u32 magic, struct mb_info *mb) {
	puts_("pvhstub: start\n");
	if (magic != 0x2BADB002) die("not multiboot");
	if (!(mb->flags & (1 << 3)) || mb->mods_count < 2) die("need 2 modules: vmlinux initrd");
	if (!(mb->flags & (1 << 6))) die("no memory map");
	struct mb_mod *mod = (struct mb_mod *)mb->mods_addr;
	u32 ksrc = mod[0].start, klen = mod[0].end - mod[0].start;
	u32 isrc = mod[1].start, ilen = mod[1].end - mod[1].start;
	struct ehdr *eh = (struct ehdr *)ksrc;
	if (*(u32 *)eh->ident != 0x464c457f || eh->ident[4] != 2) die("module 0 is not an ELF64 vmlinux");
	/* kernel destination range */
	u32 klo = ~0u, khi = 0, entry = 0;
	for (int i = 0; i < eh->phnum; i++) {
		struct phdr *ph = (struct phdr *)(ksrc + (u32)eh->phoff + i * eh->phentsize);
		if (ph->type == 1) {
			if ((u32)ph->paddr < klo) klo = ph->paddr;
			if ((u32)(ph->paddr + ph->memsz) > khi) khi = ph->paddr + ph->memsz;
		} else if (ph->type == 4) { /* PT_NOTE: find Xen note 18 (PHYS32_ENTRY) */
			u32 p = ksrc + (u32)ph->offset, e = p + (u32)ph->filesz;
			while (p + 12 <= e) {
				u32 nsz = ((u32 *)p)[0], dsz = ((u32 *)p)[1], type = ((u32 *)p)[2];
				u32 name = p + 12, desc = name + ((nsz + 3) & ~3u);
				if (type == 18 && nsz == 4 && *(u32 *)name == 0x006e6558) entry = *(u32 *)desc;
				p = desc + ((dsz + 3) & ~3u);
			}
		}
	}
	if (!entry) die("no PVH entry note (CONFIG_PVH)");
	/* move modules to a free area above the kernel if they overlap its range */
	u32 stub_lo = 0x100000, stub_hi = 0x200000;
	u32 tot = ((klen + 0xfff) & ~0xfffu) + ((ilen + 0xfff) & ~0xfffu);
	u32 cand[] = { 0x30000000, 0x20000000, 0x10000000, 0x08000000 }, area = 0;
	for (unsigned i = 0; i < sizeof cand / sizeof cand[0] && !area; i++)
		if (!overlap(cand[i], tot, ksrc, klen) && !overlap(cand[i], tot, isrc, ilen) &&
		    !overlap(cand[i], tot, klo, khi - klo) && !overlap(cand[i], tot, stub_lo, stub_hi - stub_lo) &&
		    cand[i] + tot <= (mb->mem_upper + 1024) * 1024u)
			area = cand[i];
	if (overlap(ksrc, klen, klo, khi - klo) || overlap(isrc, ilen, klo, khi - klo)) {
		if (!area) die("no room to move the modules");
		copy(area, ksrc, klen); ksrc = area;
		copy(area + ((klen + 0xfff) & ~0xfffu), isrc, ilen); isrc = area + ((klen + 0xfff) & ~0xfffu);
		eh = (struct ehdr *)ksrc;
	}
	for (int i = 0; i < eh->phnum; i++) {
		struct phdr *ph = (struct phdr *)(ksrc + (u32)eh->phoff + i * eh->phentsize);
		if (ph->type != 1) continue;
		copy(ph->paddr, ksrc + (u32)ph->offset, ph->filesz);
		if (ph->memsz > ph->filesz) zero(ph->paddr + ph->filesz, ph->memsz - ph->filesz);
	}
	/* command line: the multiboot one without its first word (the stub's file name) */
	const char *c = (const char *)mb->cmdline;
	if (mb->flags & (1 << 2)) { while (*c && *c != ' ') c++; while (*c == ' ') c++; } else c = "";
	int n = 0; while (c[n] && n < (int)sizeof cmdline - 1) { cmdline[n] = c[n]; n++; } cmdline[n] = 0;
	/* memory map */
	u32 p = mb->mmap_addr, e = p + mb->mmap_length, k = 0;
	while (p < e && k < 64) {
		u32 sz = *(u32 *)p;
		mm[k].addr = *(u64 *)(p + 4); mm[k].size = *(u64 *)(p + 12); mm[k].type = *(u32 *)(p + 20); mm[k].reserved = 0;
		k++; p += sz + 4;
	}
	/* RSDP in the BIOS area */
	u32 rsdp = 0;
	for (u32 a = 0xe0000; a < 0x100000 && !rsdp; a += 16)
		if (*(u32 *)a == 0x20445352 && *(u32 *)(a + 4) == 0x20525450) rsdp = a;
	ml.paddr = isrc; ml.size = ilen;
	si.magic = 0x336ec578; si.version = 1; si.nr_modules = 1; si.modlist_paddr = (u32)&ml;
	si.cmdline_paddr = (u32)cmdline; si.rsdp_paddr = rsdp; si.memmap_paddr = (u32)mm; si.memmap_entries = k;
	puts_("pvhstub: entry "); puthex(entry); puts_(" initrd "); puthex(isrc); puts_(" rsdp "); puthex(rsdp);
	puts_(" e820 entries "); puthex(k); puts_("\n");
	jump_pvh(entry, (u32)&si);
}
