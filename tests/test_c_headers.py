"""runtime_c's layout: one small header per object, each compiling on its own
(it includes what it uses, so a .c can include just the headers it needs), and
libdpk holding only the runtime (npy.c belongs to dpk-run, in tools/)."""

from __future__ import annotations

import glob
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME = os.path.join(ROOT, "runtime_c")
CC = os.environ.get("CC", "gcc")
HEADERS = sorted(os.path.relpath(h, RUNTIME) for pattern in ("include/*.h", "src/*.h", "src/kernels/*.h", "tools/*.h")
                 for h in glob.glob(os.path.join(RUNTIME, pattern)))


def test_there_is_no_catch_all_internal_header():
    assert "src/internal.h" not in HEADERS
    assert {"src/package.h", "src/manifest.h", "src/shape.h", "src/model.h", "src/module.h", "tools/npy.h"} <= set(HEADERS)


@pytest.mark.parametrize("header", HEADERS)
def test_each_header_compiles_on_its_own(header, tmp_path):
    source = tmp_path / "only.c"
    source.write_text(f'#include "{os.path.basename(header)}"\n')
    result = subprocess.run([CC, "-std=c99", "-D_POSIX_C_SOURCE=200809L", "-D_DEFAULT_SOURCE", "-Wall", "-Wextra",
                             "-Werror", "-fsyntax-only", "-I", os.path.join(RUNTIME, os.path.dirname(header)),
                             "-I", os.path.join(RUNTIME, "include"), "-I", os.path.join(RUNTIME, "src"), str(source)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_libdpk_holds_no_npy_code(dpk_build):
    for library, flags in (("libdpk.a", ["-g"]), ("libdpk.so", ["-D"])):
        symbols = subprocess.run(["nm", *flags, "--defined-only", os.path.join(dpk_build, library)],
                                 capture_output=True, text=True, check=True).stdout
        assert "dpk_model_load" in symbols and "dpk_npy_" not in symbols, library
    symbols = subprocess.run(["nm", "--defined-only", os.path.join(dpk_build, "dpk-run")],
                             capture_output=True, text=True, check=True).stdout
    assert "dpk_npy_read" in symbols
