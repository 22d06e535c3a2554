"""Read a built file's `.dpk` section in Python (no libdpk needed).

For `dsopack inspect`/`verify` when the loader is not built, and for tests
that check what the packager wrote. The runtime (runtime_c) has its own,
authoritative reader; this one follows the same order (docs/format.md).
"""

from __future__ import annotations

import struct

import xxhash
import yaml

from packager.blob import FORMAT_MAJOR, HEADER, HEADER_SIZE, MAGIC, checksum


class FileError(Exception):
    """The file is not a dsopack file, or a check failed; the message names the part."""


def read_section(path: str, name: bytes = b".dpk") -> bytes:
    """The bytes of an ELF64 little-endian file's section `name`."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF":
        raise FileError(f"{path}: not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise FileError(f"{path}: not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shoff == 0 or shoff + shnum * shentsize > len(data) or shstrndx >= shnum:
        raise FileError(f"{path}: ELF section headers out of bounds")

    def header(i: int) -> tuple[int, int, int, int]:
        sh_name, sh_type, _flags, _addr, sh_offset, sh_size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return sh_name, sh_type, sh_offset, sh_size

    _, _, str_off, str_size = header(shstrndx)
    for i in range(shnum):
        sh_name, sh_type, offset, size = header(i)
        end = data.find(b"\0", str_off + sh_name, str_off + str_size)
        if data[str_off + sh_name:end] == name:
            if sh_type == 8:  # SHT_NOBITS
                raise FileError(f"{path}: section {name.decode()} has no bytes in the file")
            if offset + size > len(data):
                raise FileError(f"{path}: section {name.decode()} ends at {offset + size}, the file has {len(data)} bytes")
            return data[offset:offset + size]
    raise FileError(f"{path}: no {name.decode()} section (not built by dsopack)")


class DpkFile:
    """The blob of a built file: header fields, manifest, payload area."""

    def __init__(self, path: str) -> None:
        self.path = path
        blob = read_section(path)
        if len(blob) < HEADER_SIZE:
            raise FileError(f"{path}: .dpk section has {len(blob)} bytes, the header needs {HEADER_SIZE}")
        magic, major, minor, flags, moff, msize, poff, psize, mcheck = HEADER.unpack_from(blob)
        if magic != MAGIC:
            raise FileError(f"{path}: bad magic {magic!r}")
        if major > FORMAT_MAJOR:
            raise FileError(f"{path}: format {major}.{minor} is newer than this packager reads ({FORMAT_MAJOR}.x)")
        (hcheck,) = struct.unpack_from("<Q", blob, HEADER.size)
        if xxhash.xxh3_64_intdigest(blob[:HEADER.size]) != hcheck:
            raise FileError(f"{path}: header checksum mismatch")
        if moff + msize > len(blob) or poff + psize > len(blob):
            raise FileError(f"{path}: manifest or payload area outside the {len(blob)}-byte section")
        manifest_bytes = blob[moff:moff + msize]
        if xxhash.xxh3_64_intdigest(manifest_bytes) != mcheck:
            raise FileError(f"{path}: manifest checksum mismatch")
        self.blob = blob
        self.format_version = (major, minor)
        self.section_size = len(blob)
        self.manifest_text = manifest_bytes.decode("utf-8")
        self.manifest = yaml.safe_load(self.manifest_text)
        self.payload_offset, self.payload_size = poff, psize

    def payload(self, desc: dict) -> bytes:
        """Stored bytes of a payload descriptor (bounds-checked, not decoded)."""
        start, size = int(desc["offset"]), int(desc["size"])
        if start + size > self.payload_size:
            raise FileError(f"payload at {start} (+{size}) ends past the payload area ({self.payload_size} bytes)")
        return self.blob[self.payload_offset + start:self.payload_offset + start + size]

    def decoded(self, desc: dict) -> bytes:
        data = self.payload(desc)
        if desc.get("codec") == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().decompress(data, max_output_size=int(desc["raw_size"]))
        return data

    def descriptors(self):
        """(label, descriptor) for every payload: "module 'main'", "tensor 'fc1.weight' of module 'weights'"."""
        for module in self.manifest.get("modules", []):
            if "payload" in module:
                yield f"module '{module['name']}'", module["payload"]
            for tname, desc in (module.get("tensors") or {}).items():
                yield f"tensor '{tname}' of module '{module['name']}'", desc

    def verify(self) -> int:
        """Check every payload checksum and that padding is zero; return the number of payloads checked."""
        count, used = 0, []
        for label, desc in self.descriptors():
            data = self.payload(desc)
            if checksum(data) != desc.get("checksum"):
                raise FileError(f"{label}: checksum mismatch (stored {desc.get('checksum')}, computed {checksum(data)})")
            used.append((int(desc["offset"]), int(desc["size"])))
            count += 1
        moff, msize = HEADER_SIZE, len(self.manifest_text.encode())
        if any(self.blob[moff + msize:self.payload_offset]):
            raise FileError("non-zero bytes between the manifest and the payload area")
        cursor = 0
        for offset, size in sorted(used):
            if any(self.blob[self.payload_offset + cursor:self.payload_offset + offset]):
                raise FileError(f"non-zero bytes in the payload area between {cursor} and {offset}")
            cursor = max(cursor, offset + size)
        return count
