"""The version is written once, as DPK_VERSION in runtime_c/include/dpk.h: the C
runtime returns it (dpk_version), setup.py gives it to the distribution
(pyproject.toml lists `version` as dynamic), and the packager stamps the
distribution's version into every file (manifest `producer.dsopack`)."""

from __future__ import annotations

import ctypes
import glob
import importlib.metadata
import os
import re

from loader._native import ffi, lib
from packager.version import version as packager_version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def header_version() -> str:
    with open(os.path.join(ROOT, "runtime_c", "include", "dpk.h")) as f:
        return re.search(r'^#define DPK_VERSION "(\d+\.\d+\.\d+[^"]*)"$', f.read(), flags=re.M).group(1)


def test_the_loader_and_libdpk_report_the_header_version(dpk_build):
    assert ffi.string(lib.dpk_version()).decode() == header_version()
    libdpk = ctypes.CDLL(os.path.join(dpk_build, "libdpk.so"))
    libdpk.dpk_version.restype = ctypes.c_char_p
    assert libdpk.dpk_version().decode() == header_version()


def test_the_distribution_and_the_packager_have_the_header_version():
    assert importlib.metadata.version("dsopack") == header_version()
    assert packager_version() == header_version()


def test_the_packager_reads_the_header_when_dsopack_is_not_installed(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert packager_version() == header_version()


def test_no_other_source_spells_the_version():
    version = header_version()
    sources = [os.path.join(ROOT, "pyproject.toml"), os.path.join(ROOT, "setup.py")]
    for pattern in ("packager/**/*.py", "loader/*.py", "runtime_c/src/**/*.[ch]", "runtime_c/tools/*.[ch]"):
        sources += glob.glob(os.path.join(ROOT, pattern), recursive=True)
    for path in sources:
        with open(path) as f:
            assert version not in f.read(), f"{path} spells the version {version}: derive it from DPK_VERSION"
