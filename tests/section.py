"""Test helper: the bytes of a built file's `.dpk` section as written, for
checks that look inside payloads (the runtime reads them itself)."""

import struct
from typing import NamedTuple

import zstandard

from packager.blob import read_header


def section(path: str) -> tuple[bytes, int]:
    """The whole file and the file offset where the section starts."""
    data = open(path, "rb").read()
    start = data.find(b"DSOPACK\0")
    assert start >= 0, f"{path} has no dsopack section"
    return data, start


def payload(path: str, desc: dict) -> bytes:
    """A payload's bytes, decoded if zstd."""
    data, start = section(path)
    begin = start + read_header(data[start:start + 64])["payload_offset"] + desc["offset"]
    stored = data[begin:begin + desc["size"]]
    return zstandard.ZstdDecompressor().decompress(stored) if desc["codec"] == "zstd" else stored


def payload_file_offset(path: str, desc: dict) -> int:
    """Where a payload's first byte is in the file (to corrupt it in tests)."""
    data, start = section(path)
    return start + read_header(data[start:start + 64])["payload_offset"] + desc["offset"]


class ElfSection(NamedTuple):
    entry: int  # file offset of its entry in the section header table (to patch it)
    offset: int  # file offset of its bytes
    size: int


def elf_sections(data: bytes) -> dict[str, ElfSection]:
    """An ELF64 little-endian file's sections by name (no readelf needed)."""
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not an ELF64 little-endian file"
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    entries = [shoff + i * shentsize for i in range(shnum)]
    names_at, = struct.unpack_from("<Q", data, entries[shstrndx] + 24)
    sections = {}
    for entry in entries:
        name_offset, = struct.unpack_from("<I", data, entry)
        end = data.index(b"\0", names_at + name_offset)
        offset, size = struct.unpack_from("<QQ", data, entry + 24)
        sections[data[names_at + name_offset:end].decode()] = ElfSection(entry, offset, size)
    return sections
