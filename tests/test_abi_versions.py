"""ABI versions major.minor (dpk_abi.h, "Versions"): a runtime of 1.2 accepts
code, carried kind tables and registered kinds of major 1 with a minor <= 2
(1.0 spelled as the plain number 1, or packed), and refuses a newer minor or
another major with UNIMPLEMENTED naming both versions as "M.m".

Registered kinds are checked in tests/c/test_api.c (`api`); here: the version a
file's code declares (__dpk_abi_version), the carried __dpk_kinds table and
its entries, the packager's output and the format 1.0 golden files.
"""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess

import numpy as np
import pytest

import loader
from test_kind_table import kind, table
from test_runtime_c import (KERNELS, K, api, assert_matches, build_model, load_error, reference, scaled_model,  # noqa: F401
                            test_api, weights)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME = "1.2"
# C spellings of versions a 1.2 runtime accepts, and of versions it refuses (with "M.m")
ACCEPTED = ["1", "DPK_ABI_MAKE_VERSION(1, 0)", "DPK_ABI_MAKE_VERSION(1, 1)", "DPK_ABI_VERSION",
            "DPK_ABI_MAKE_VERSION(1, 2)"]
REFUSED = [("DPK_ABI_MAKE_VERSION(1, 3)", "1.3"), ("DPK_ABI_MAKE_VERSION(2, 0)", "2.0"),
           ("DPK_ABI_MAKE_VERSION(2, 1)", "2.1"), ("2", "2.0"), ("0", "0.0")]


def x_and_expected(seed=5):
    x = np.random.default_rng(seed).standard_normal((1, K)).astype(np.float32)
    return x, reference(x, *weights())


def coded(tmp_path, version: str | None, name: str) -> str:
    """The test model with code that exports __dpk_abi_version = version (None: does not export it)."""
    export = "" if version is None else f"DPK_EXPORT const uint32_t __dpk_abi_version = {version};\n"
    return build_model(tmp_path, name=name, kernels=KERNELS + export)


# ---- the version of a file's code ------------------------------------------------------------------------


@pytest.mark.parametrize("version", [None, *ACCEPTED])
def test_code_of_an_older_or_equal_minor_loads_and_runs(tmp_path, version):
    path = coded(tmp_path, version, "ok")
    x, expected = x_and_expected()
    with loader.load(path) as model:
        assert_matches(model.run(x=x)["y"], expected)


@pytest.mark.parametrize("version, text", REFUSED)
def test_code_of_a_newer_minor_or_another_major_is_refused(test_api, tmp_path, version, text):
    path = coded(tmp_path, version, "no")
    message = (f"'{path}': its code (__dpk_abi_version) was built for ABI version {text} "
               f"but this runtime has ABI version {RUNTIME}")
    assert load_error(test_api, path) == f"UNIMPLEMENTED: {message}"
    with pytest.raises(loader.UnimplementedError) as info:
        loader.load(path)
    assert str(info.value) == message


def test_the_runtime_tables_are_not_handed_to_refused_code(test_api, tmp_path):
    """__dpk_api stays NULL in a file whose version is refused: its code never sees a table it does not know."""
    probe = ("DPK_EXPORT const uint32_t __dpk_abi_version = DPK_ABI_MAKE_VERSION(1, 3);\n"
             "#include <stdio.h>\n"
             f'__attribute__((destructor)) static void probe(void) {{ FILE *f = fopen("{tmp_path}/probe", "w");'
             ' if (f) { fprintf(f, "%d\\n", __dpk_api != 0); fclose(f); } }\n')
    path = build_model(tmp_path, name="probe", kernels=KERNELS + probe)
    assert load_error(test_api, path).startswith("UNIMPLEMENTED: ")
    assert (tmp_path / "probe").read_text() == "0\n"
    ok = build_model(tmp_path, name="probe_ok", kernels=KERNELS + probe.replace("(1, 3)", "(1, 2)"))
    assert api(test_api, "load", ok) == "OK\n"
    assert (tmp_path / "probe").read_text() == "1\n"


def test_the_packager_stamps_the_code_with_the_oldest_version_it_needs(digits_so):
    """DPK_ABI_CODE_VERSION, 1.1: generated code reads nothing 1.2 added, so runtimes of 1.1 load it."""
    lib = ctypes.CDLL(digits_so)
    assert ctypes.c_uint32.in_dll(lib, "__dpk_abi_version").value == (1 << 16) | 1
    with loader.load(digits_so) as model:
        assert model.run(x=np.zeros((1, 64), np.float32))["probs"].shape == (1, 10)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the golden files are x86-64 builds")
def test_the_format_1_0_golden_files_are_abi_1_0(dpk_run):
    """They predate __dpk_abi_version, so they are read as 1.0 -- and load (test_golden.py runs them)."""
    for name in ("digits_mlp", "mixed"):
        path = os.path.join(ROOT, "tests", "golden", f"{name}.so")
        symbols = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True, check=True).stdout
        assert "__dpk_api" in symbols and "__dpk_abi_version" not in symbols
    result = subprocess.run([dpk_run, os.path.join(ROOT, "tests", "golden", "digits_mlp.so"), "--random"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---- carried kind tables ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ACCEPTED)
def test_a_carried_table_of_an_older_or_equal_minor_loads(tmp_path, version):
    path = scaled_model(tmp_path, table=table("&scale_kind", abi=version))
    x, expected = x_and_expected(6)
    with loader.load(path) as model:
        assert_matches(model.run(x=x)["y"], expected, factor=2.5)


@pytest.mark.parametrize("version", ACCEPTED)
def test_a_carried_kind_of_an_older_or_equal_minor_loads(tmp_path, version):
    path = scaled_model(tmp_path, abi=version)
    x, expected = x_and_expected(7)
    with loader.load(path) as model:
        assert_matches(model.run(x=x)["y"], expected, factor=2.5)


@pytest.mark.parametrize("version, text", REFUSED)
def test_a_carried_table_of_a_newer_minor_or_another_major_is_refused(test_api, tmp_path, version, text):
    path = scaled_model(tmp_path, table=table("&scale_kind", abi=version))
    message = f"'{path}': __dpk_kinds was built for ABI version {text} but this runtime has ABI version {RUNTIME}"
    assert load_error(test_api, path) == f"UNIMPLEMENTED: {message}"
    with pytest.raises(loader.UnimplementedError) as info:
        loader.load(path)
    assert str(info.value) == message


@pytest.mark.parametrize("version, text", REFUSED)
def test_a_carried_kind_of_a_newer_minor_or_another_major_is_refused(test_api, tmp_path, version, text):
    path = scaled_model(tmp_path, abi=version)
    message = f"'{path}': kind 'scale' was built for ABI version {text} but this runtime has ABI version {RUNTIME}"
    assert load_error(test_api, path) == f"UNIMPLEMENTED: {message}"
    with pytest.raises(loader.UnimplementedError) as info:
        loader.load(path)
    assert str(info.value) == message


def test_an_entry_the_manifest_does_not_declare_is_still_checked(test_api, tmp_path):
    """Every entry of a read table is checked, as dpk_abi.h says, even one no module uses."""
    from test_kind_table import with_kinds
    path = scaled_model(tmp_path, table=with_kinds(kind(), kind(name='"later"', abi="DPK_ABI_MAKE_VERSION(1, 9)")))
    assert load_error(test_api, path) == (
        f"UNIMPLEMENTED: '{path}': kind 'later' was built for ABI version 1.9 but this runtime has ABI version 1.2")
