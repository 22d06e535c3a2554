"""Test helper: the bytes of a built file's `.dpk` section as written, for
checks that look inside payloads (the runtime reads them itself)."""

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
