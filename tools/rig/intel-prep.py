#!/usr/bin/env python3
"""Binary preparation for the Intel (Bochs) rig, called by tools/rig/build-intel.

  intel-prep.py vmlinux BZIMAGE OUT   the kernel's ELF image out of a bzImage
      (its xz payload, or zstd's since 6.12 through the zstd tool), with the zero tail of the last PT_LOAD segment
      dropped (the PVH stub zeroes memsz - filesz) and no section headers:
      Bochs's BIOS then loads ~20 MB less, and nothing is decompressed in
      the emulator (xz there costs ~40 s).
  intel-prep.py unsign KO OUT         a module without its appended signature
      (Debian's kernel does not enforce them; insmod checks one in the
      emulator for ~1 s per module).
"""
import lzma
import struct
import subprocess
import sys


def die(msg):
    sys.stderr.write('intel-prep: %s\n' % msg)
    sys.exit(1)


def vmlinux(src, dst):
    d = open(src, 'rb').read()
    i = d.find(b'\xfd7zXZ\x00')
    if i >= 0:
        v = bytearray(lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(d[i:]))
    else:
        # the boot protocol's payload: offset and length from the setup
        # header, relative to the protected-mode code after the setup sectors;
        # the kernel's build appends the image's size (4 bytes) to it
        setup = (d[0x1f1] or 4) + 1
        off, length = struct.unpack_from('<II', d, 0x248)
        payload = d[setup * 512 + off:setup * 512 + off + length]
        if payload[:4] != b'\x28\xb5\x2f\xfd':
            die('%s: neither an xz nor a zstd payload (not a Debian x86-64 bzImage?)' % src)
        try:
            v = bytearray(subprocess.run(['zstd', '-dcq'], input=payload[:-4],
                                         stdout=subprocess.PIPE, check=True).stdout)
        except (OSError, subprocess.CalledProcessError) as e:
            die('%s: zstd could not unpack the payload (%s; apt-get install zstd)' % (src, e))
    if v[:4] != b'\x7fELF' or v[4] != 2:
        die('%s: the payload is not an ELF64 image' % src)
    phoff = struct.unpack_from('<Q', v, 32)[0]
    phes, phn = struct.unpack_from('<HH', v, 54)
    loads = []
    for k in range(phn):
        o = phoff + k * phes
        p_type, _, p_off, _, _, p_filesz = struct.unpack_from('<IIQQQQ', v, o)
        if p_type == 1:
            loads.append((p_off, p_filesz, o))
    if not loads:
        die('%s: no PT_LOAD segment' % src)
    off, fsz, o = max(loads)
    n = (len(v[off:off + fsz].rstrip(b'\0')) + 4095) & ~4095
    struct.pack_into('<Q', v, o + 32, n)         # p_filesz of the last segment
    struct.pack_into('<Q', v, 40, 0)             # e_shoff
    struct.pack_into('<HHH', v, 58, 0, 0, 0)     # e_shentsize, e_shnum, e_shstrndx
    open(dst, 'wb').write(v[:off + n])


def unsign(src, dst):
    d = open(src, 'rb').read()
    magic = b'~Module signature appended~\n'
    n = len(d)
    if d.endswith(magic):
        # struct module_signature (12 bytes, big-endian length last) before it
        siglen = struct.unpack('>I', d[-len(magic) - 4:-len(magic)])[0]
        n = len(d) - len(magic) - 12 - siglen
    open(dst, 'wb').write(d[:n])


if __name__ == '__main__':
    if len(sys.argv) != 4 or sys.argv[1] not in ('vmlinux', 'unsign'):
        die('usage: intel-prep.py vmlinux BZIMAGE OUT | unsign KO OUT')
    {'vmlinux': vmlinux, 'unsign': unsign}[sys.argv[1]](sys.argv[2], sys.argv[3])
