"""A model file opened for inspection: mapped and checked, none of its code run."""

from __future__ import annotations

import os

import yaml

from loader._native import Handle, check, ffi, lib
from loader.signature import public_key


class Package(Handle):
    """`loader.open_package(path)`: the manifest and format of a file, and `verify()`.

    With `pubkey` (a KEY.pub path or 32 raw bytes), the file must be signed by
    that key: UnauthenticatedError otherwise, before its manifest is read."""

    def __init__(self, path: str | os.PathLike, pubkey=None) -> None:
        self.path = os.fspath(path)
        out = ffi.new("dpk_package_t **")
        if pubkey is None:
            check(lib.dpk_package_open(self.path.encode(), out))
        else:
            check(lib.dpk_package_open_signed(self.path.encode(), public_key(pubkey), out))
        self._handle = ffi.gc(out[0], lib.dpk_package_free)
        size = ffi.new("size_t *")
        text = lib.dpk_package_manifest(self._handle, size)
        self.manifest_text = ffi.unpack(text, size[0]).decode("utf-8")
        self.manifest = yaml.safe_load(self.manifest_text)
        major, minor, section = ffi.new("uint16_t *"), ffi.new("uint16_t *"), ffi.new("uint64_t *")
        lib.dpk_package_format(self._handle, major, minor, section)
        self.format_version = (major[0], minor[0])
        self.section_size = section[0]

    @property
    def signed_size(self) -> int:
        """Bytes a signature covers: where the ELF contents end (a trailer starts there)."""
        size = ffi.new("uint64_t *")
        check(lib.dpk_package_signed_size(self._handle, size))
        return size[0]

    def verify(self) -> None:
        """Check every checksum; raises DataLossError naming the failing module."""
        check(lib.dpk_package_verify(self._handle))



def open_package(path: str | os.PathLike, pubkey=None) -> Package:
    return Package(path, pubkey)
