"""A large blob written into the linked library, not linked: the `.dpk` section past 2 GiB.

Pulled in with `.incbin`, the blob sits between the code and its PLT, and past 2 GiB x86-64's small
code model cannot reach across it (`relocation truncated to fit: R_X86_64_PC32`); the assembler and
the linker each also hold a copy of it in memory. So a large blob is placed instead:

1. the stub reserves `.dpk` as NOBITS of the blob's size (`.skip`: address space, no file bytes) and
   the linker fragment LINKER_SCRIPT puts it after `.bss`, 64 KiB-aligned, in a load segment of its
   own that ends the image (the `+ 0x10000` keeps ld 2.40 from sharing `.bss`'s page on aarch64);
2. after the link, the blob is written at the file's end rounded up to 64 KiB (an address and a
   file offset then agree modulo the largest page size aarch64 kernels use), and two headers are
   patched: the section becomes PROGBITS at that offset, the segment maps those bytes.

The result is an ordinary ELF file that format 1.0 readers and dlopen load unchanged; its ELF
contents end with the blob, so a signature trailer still follows them (docs/format.md). ELF64
little-endian only (x86-64, aarch64, riscv64, ppc64le): a 32-bit target has no room for it anyway.
"""

from __future__ import annotations

import os
import struct

from packager.blob import write_section_stub
from packager.ir import BuildError

ALIGN = 0x10000  # 64 KiB: the largest page size of the targets' kernels
LINKER_SCRIPT = """\
SECTIONS
{
  .dpk ALIGN(0x10000) + 0x10000 : { KEEP(*(.dpk)) }
}
INSERT AFTER .bss;
"""
SHT_PROGBITS, SHT_NOBITS, PT_LOAD = 1, 8, 1
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")


def reserve_stub(path: str, size: int) -> None:
    """Assembly that reserves `size` bytes of `.dpk` behind `__dpk_blob`, for place() to fill."""
    write_section_stub(path, f".skip {size}", nobits=True, align_log2=16)


def place(library: str, blob) -> None:
    """Write `blob` (blob.Blob) into the reserved `.dpk` of the freshly linked `library`, in place."""
    with open(library, "r+b") as f:
        ehdr = _EHDR.unpack(f.read(_EHDR.size))
        ident, shoff, phoff = ehdr[0], ehdr[6], ehdr[5]
        phentsize, phnum, shentsize, shnum, shstrndx = ehdr[9], ehdr[10], ehdr[11], ehdr[12], ehdr[13]
        if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
            raise BuildError(f"{library}: a blob of {blob.size} bytes is placed after the link only in 64-bit "
                             "little-endian ELF files")
        sections = [_read(f, _SHDR, shoff + k * shentsize) for k in range(shnum)]
        names = sections[shstrndx]
        f.seek(names[4])
        table = f.read(names[5])
        index = next((k for k, s in enumerate(sections) if table[s[0]:table.index(b"\0", s[0])] == b".dpk"), None)
        if index is None or sections[index][1] != SHT_NOBITS or sections[index][5] != blob.size:
            raise BuildError(f"{library}: the link left no reserved .dpk section of {blob.size} bytes")
        address = sections[index][3]
        loads = [(k, p) for k, p in ((k, _read(f, _PHDR, phoff + k * phentsize)) for k in range(phnum))
                 if p[0] == PT_LOAD]
        segment = next((k for k, p in loads if p[3] == address), None)
        if segment is None or segment != loads[-1][0] or address % ALIGN:
            raise BuildError(f"{library}: .dpk is not the last load segment, {ALIGN}-aligned (the linker did not "
                             "follow the placement script)")
        offset = -(-os.fstat(f.fileno()).st_size // ALIGN) * ALIGN
        f.truncate(offset)
        f.seek(offset)
        blob.write_to(f)
        shdr = list(sections[index])
        shdr[1], shdr[4] = SHT_PROGBITS, offset
        f.seek(shoff + index * shentsize)
        f.write(_SHDR.pack(*shdr))
        phdr = list(dict(loads)[segment])
        phdr[2], phdr[5] = offset, blob.size  # p_offset, p_filesz (p_memsz is the reserved size already)
        f.seek(phoff + segment * phentsize)
        f.write(_PHDR.pack(*phdr))


def _read(f, layout: struct.Struct, at: int) -> tuple:
    f.seek(at)
    return layout.unpack(f.read(layout.size))
