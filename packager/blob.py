"""The `.dpk` section: header, manifest and payload area (docs/format.md).

`BlobWriter.add` places a payload and returns its descriptor (a dict that goes
into the manifest as is); `finish` adds the manifest (a Blob, whose size is then
known) and `Blob.write` streams header, manifest and payloads to a file. Raw
payloads (weights) are written from the caller's buffers without a copy, so a
1 GB model never needs 1 GB of extra memory at build; a weight mapped from a
file (np.memmap: safetensors, ONNX external data) is checksummed and copied
from that file in chunks, never through the mapping, so the build's memory does
not grow with the weights it streams (issue 18: GBs of them).
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass

import numpy as np
import xxhash
import yaml
import zstandard

from packager import spill

MAGIC = b"DSOPACK\0"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
HEADER = struct.Struct("<8sHHIQQQQQ")  # without the trailing header checksum
HEADER_SIZE = HEADER.size + 8  # 64
PAYLOAD_ALIGN = 64
WEIGHT_ALIGN = 4096
ZSTD_LEVEL = 19
_ZEROS = bytes(WEIGHT_ALIGN)
CHUNK = 16 << 20  # bytes read at a time from a weight's file


@dataclass(frozen=True)
class FileRange:
    """Bytes [offset, offset + nbytes) of the file at `path`: a mapped weight's, read only when written."""
    path: str
    offset: int
    nbytes: int

    def chunks(self):
        with open(self.path, "rb") as f:
            done = 0
            while done < self.nbytes:
                data = os.pread(f.fileno(), min(CHUNK, self.nbytes - done), self.offset + done)
                if not data:
                    raise OSError(f"{self.path} ended at byte {self.offset + done} while a weight was read")
                yield data
                done += len(data)

    def checksum(self) -> str:
        state = xxhash.xxh3_64()
        for data in self.chunks():
            state.update(data)
        return state.hexdigest()

    def copy_to(self, f) -> None:
        f.flush()
        with open(self.path, "rb") as src:
            done = 0
            while done < self.nbytes:  # in the kernel, no copy through this process's memory
                n = os.copy_file_range(src.fileno(), f.fileno(), self.nbytes - done, self.offset + done)
                if n <= 0:
                    raise OSError(f"{self.path} ended at byte {self.offset + done} while a weight was copied")
                done += n
        f.seek(0, os.SEEK_END)


def mapped(path: str, dtype, offset: int, shape) -> np.ndarray:
    """The array of `dtype` and `shape` at byte `offset` of the file `path`, mapped read-only (file_range
    finds it again, so a blob streams it from the file); zeros when it is empty (nothing to map)."""
    count = math.prod(shape)
    if not count or not np.dtype(dtype).itemsize:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(count,)).reshape(shape)


def file_range(data) -> FileRange | None:
    """Where a C-contiguous array mapped read-only from a file (np.memmap, or a view of one) keeps its bytes."""
    at = spill.file_range(data)
    return None if at is None else FileRange(at[0], at[1], data.nbytes)


def checksum(data) -> str:
    """XXH3-64 (seed 0) as 16 lowercase hex digits."""
    return xxhash.xxh3_64_hexdigest(data)


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def _as_bytes_view(data) -> memoryview:
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data)
    return memoryview(data).cast("B")


class BlobWriter:
    """Collects payloads, then writes the blob in one pass."""

    def __init__(self) -> None:
        self._chunks: list[tuple[int, memoryview | FileRange]] = []  # (offset in payload area, bytes)
        self._end = 0

    def add(self, data, codec: str = "raw", align: int = PAYLOAD_ALIGN) -> dict:
        """Place `data` (bytes-like or ndarray); return its descriptor."""
        ranged = file_range(data) if codec == "raw" else None
        if ranged is not None:
            offset = _align(self._end, align)
            self._chunks.append((offset, ranged))
            self._end = offset + ranged.nbytes
            return {"offset": offset, "size": ranged.nbytes, "codec": codec, "checksum": ranged.checksum()}
        raw = _as_bytes_view(data)
        if codec == "zstd":
            stored = memoryview(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw))
        elif codec == "raw":
            stored = raw
        else:
            raise ValueError(f"unknown codec {codec!r} (known: raw, zstd)")
        offset = _align(self._end, align)
        self._chunks.append((offset, stored))
        self._end = offset + stored.nbytes
        desc = {"offset": offset, "size": stored.nbytes, "codec": codec}
        if codec == "zstd":
            desc["raw_size"] = raw.nbytes
        desc["checksum"] = checksum(stored)
        return desc

    @property
    def payload_size(self) -> int:
        return self._end

    def finish(self, manifest: dict) -> "Blob":
        """The blob of these payloads under `manifest`: its size is known before it is written."""
        manifest_bytes = yaml.safe_dump(manifest, sort_keys=False, default_flow_style=None).encode("utf-8")
        manifest_offset = HEADER_SIZE
        payload_offset = _align(manifest_offset + len(manifest_bytes), WEIGHT_ALIGN)
        header = HEADER.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, 0, manifest_offset, len(manifest_bytes),
                             payload_offset, self._end, xxhash.xxh3_64_intdigest(manifest_bytes))
        header += struct.pack("<Q", xxhash.xxh3_64_intdigest(header))
        return Blob(header + manifest_bytes, payload_offset, list(self._chunks), payload_offset + self._end)

    def write(self, path: str, manifest: dict) -> int:
        """Write the blob to `path`; return its size in bytes."""
        return self.finish(manifest).write(path)


@dataclass
class Blob:
    head: bytes  # header and manifest
    payload_offset: int
    chunks: list[tuple[int, memoryview | FileRange]]  # (offset in the payload area, bytes)
    size: int

    def write(self, path: str) -> int:
        """Write the blob to `path`; return its size in bytes."""
        with open(path, "wb") as f:
            self.write_to(f)
        return self.size

    def write_to(self, f) -> None:
        """Write the blob at the file's current position."""
        f.write(self.head)
        _write_zeros(f, self.payload_offset - len(self.head))
        position = 0
        for offset, stored in self.chunks:
            _write_zeros(f, offset - position)
            if isinstance(stored, FileRange):
                stored.copy_to(f)
            else:
                f.write(stored)
            position = offset + stored.nbytes


def _write_zeros(f, count: int) -> None:
    while count > 0:
        n = min(count, len(_ZEROS))
        f.write(_ZEROS[:n])
        count -= n


def read_header(blob: bytes) -> dict:
    """Parse and check a blob header (for tests and tools; the runtime has its own reader)."""
    if len(blob) < HEADER_SIZE:
        raise ValueError(f"blob has {len(blob)} bytes, the header needs {HEADER_SIZE}")
    magic, major, minor, flags, moff, msize, poff, psize, mcheck = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise ValueError(f"bad magic {magic!r}")
    (hcheck,) = struct.unpack_from("<Q", blob, HEADER.size)
    return {"major": major, "minor": minor, "flags": flags, "manifest_offset": moff, "manifest_size": msize,
            "payload_offset": poff, "payload_size": psize, "manifest_checksum": mcheck, "header_checksum": hcheck}


def write_incbin_stub(path: str, blob_path: str) -> None:
    """Assembly that places the blob in the `.dpk` section behind `__dpk_blob`."""
    blob_path = os.path.abspath(blob_path)
    if '"' in blob_path or "\\" in blob_path or "\n" in blob_path:
        raise ValueError(f"the blob path {blob_path!r} cannot be quoted for the assembler")
    write_section_stub(path, f'.incbin "{blob_path}"')


def write_section_stub(path: str, body: str, *, nobits: bool = False, align_log2: int = 12) -> None:
    """Assembly of the `.dpk` section behind the symbol `__dpk_blob`: `body` is its contents (an `.incbin`,
    or a `.skip` of a NOBITS section that only reserves addresses, elf_place.py)."""
    text = (
        f'\t.section .dpk,"a"{",@nobits" if nobits else ""}\n'
        f"\t.p2align {align_log2}\n"
        "\t.globl __dpk_blob\n"
        "\t.type __dpk_blob, @object\n"
        "__dpk_blob:\n"
        f"\t{body}\n"
        "\t.size __dpk_blob, . - __dpk_blob\n"
        '\t.section .note.GNU-stack,"",@progbits\n'
    )
    with open(path, "w") as f:
        f.write(text)
