"""The box kernel that direct kernel boot starts fastest: the uncompressed ELF inside the
bzImage, when it has a PVH entry point, which QEMU jumps to directly; else the bzImage.

A bzImage decompresses itself before the kernel's first line: Debian's xz payload (~64 MiB
of kernel) took ~4 s of each emulated guest's boot, from the domain's start to the
kernel's first line (docs/benchmarks.md). QEMU (4.0 and later) loads an ELF kernel that
carries Xen's PVH entry note itself; Debian's kernel has one (CONFIG_PVH). The layout read
here is the kernel's boot protocol (Documentation/x86/boot.rst: setup_sects at 0x1f1,
payload_offset and payload_length at 0x248) and the ELF note format.
"""
from __future__ import annotations

import lzma
import struct
import zlib

PVH_NOTE_TYPE = 18      # XEN_ELFNOTE_PHYS32_ENTRY
_HDR_MAGIC = b"HdrS"    # the boot protocol's header signature, at 0x202
_XZ, _GZIP = b"\xfd7zXZ\x00", b"\x1f\x8b"


def pvh_kernel(bzimage: bytes) -> bytes | None:
    """The ELF kernel inside `bzimage` if it has a PVH entry point, else None (an unknown
    image or compression: the bzImage is booted as it is)."""
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != _HDR_MAGIC:
        return None
    setup_sects = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    payload = bzimage[start:start + length]
    try:
        if payload.startswith(_XZ):
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
        elif payload.startswith(_GZIP):
            elf = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
        else:
            return None
    except (lzma.LZMAError, zlib.error):
        return None
    return elf if has_pvh_entry(elf) else None


def has_pvh_entry(elf: bytes) -> bool:
    """Whether a 64-bit little-endian ELF image has Xen's PHYS32_ENTRY note."""
    if len(elf) < 64 or elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        base = phoff + i * phentsize
        if base + 56 > len(elf):
            return False
        p_type, = struct.unpack_from("<I", elf, base)
        if p_type != 4:     # PT_NOTE
            continue
        off, = struct.unpack_from("<Q", elf, base + 8)
        size, = struct.unpack_from("<Q", elf, base + 32)
        if _notes_have(elf[off:off + size], b"Xen\x00", PVH_NOTE_TYPE):
            return True
    return False


def _notes_have(notes: bytes, name: bytes, kind: int) -> bool:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, note_type = struct.unpack_from("<III", notes, pos)
        pos += 12
        note_name = notes[pos:pos + namesz]
        pos += (namesz + 3) & ~3
        pos += (descsz + 3) & ~3
        if note_type == kind and note_name == name:
            return True
    return False
