"""A model file opened for inspection: mapped and checked, none of its code run."""

from __future__ import annotations

import os

import yaml

from loader._native import check, ffi, lib


class Package:
    """`loader.open_package(path)`: the manifest and format of a file, and `verify()`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        out = ffi.new("dpk_package_t **")
        check(lib.dpk_package_open(self.path.encode(), out))
        self._handle = ffi.gc(out[0], lib.dpk_package_free)
        size = ffi.new("size_t *")
        text = lib.dpk_package_manifest(self._handle, size)
        self.manifest_text = ffi.unpack(text, size[0]).decode("utf-8")
        self.manifest = yaml.safe_load(self.manifest_text)
        major, minor, section = ffi.new("uint16_t *"), ffi.new("uint16_t *"), ffi.new("uint64_t *")
        lib.dpk_package_format(self._handle, major, minor, section)
        self.format_version = (major[0], minor[0])
        self.section_size = section[0]

    def verify(self) -> None:
        """Check every checksum; raises DataLossError naming the failing module."""
        check(lib.dpk_package_verify(self._handle))

    def close(self) -> None:
        if self._handle is not None:
            ffi.release(self._handle)
            self._handle = None

    def __enter__(self) -> "Package":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_package(path: str | os.PathLike) -> Package:
    return Package(path)
