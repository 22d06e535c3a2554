"""Compatibility: committed format 1.0 files (tests/golden/, made once by
tests/golden/make_golden.py with an earlier dsopack) keep loading, verifying
and giving the outputs they gave when they were made, through the Python
loader and through dpk-run. A newer format major is refused naming both
versions; a newer minor loads.

The golden files are x86-64 builds: other hosts skip with the reason.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import subprocess

import numpy as np
import pytest
import xxhash

import loader

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
GOLDEN = ["digits_mlp", "mixed"]

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64",
                                reason=f"the golden files are x86-64 builds; this host is {platform.machine()}")


def openblas_missing():
    try:
        ctypes.CDLL("libopenblas.so.0")
    except OSError as e:
        return f"mixed.so needs libopenblas.so.0 at run time: {e}"
    return None


def golden(name):
    if name == "mixed" and openblas_missing():
        pytest.skip(openblas_missing())
    path = os.path.join(HERE, f"{name}.so")
    x = np.load(os.path.join(HERE, f"{name}.input.npy"))
    expected = {f.split(".")[-2]: np.load(os.path.join(HERE, f))
                for f in sorted(os.listdir(HERE)) if f.startswith(f"{name}.output.")}
    assert expected, f"no expected outputs for {name}"
    return path, x, expected


def test_golden_files_are_small_and_complete():
    files = os.listdir(HERE)
    total = sum(os.path.getsize(os.path.join(HERE, f)) for f in files)
    assert total < 400 * 1024, total
    for name in GOLDEN:
        assert f"{name}.so" in files and f"{name}.input.npy" in files


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_file_is_format_1_0_and_verifies(name):
    path, _, _ = golden(name)
    with loader.open_package(path) as package:
        assert package.format_version == (1, 0)
        package.verify()


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_file_gives_its_outputs_through_the_loader(name):
    path, x, expected = golden(name)
    with loader.load(path, verify=True) as model:
        outputs = model.run(**{model.inputs[0].name: x})
    assert sorted(outputs) == sorted(expected)
    for key, value in expected.items():
        assert outputs[key].dtype == value.dtype and outputs[key].shape == value.shape
        np.testing.assert_allclose(outputs[key], value, rtol=1e-5, atol=1e-6)  # OpenBLAS may pick other kernels


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_file_gives_its_outputs_through_dpk_run(name, dpk_run, tmp_path):
    path, x, expected = golden(name)
    with loader.open_package(path) as package:
        input_name = package.manifest["inputs"][0]["name"]
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run([dpk_run, path, f"{input_name}={tmp_path / 'x.npy'}", "--verify", "-o", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for key, value in expected.items():
        np.testing.assert_allclose(np.load(tmp_path / "out" / f"{key}.npy"), value, rtol=1e-5, atol=1e-6)


def rewrite_version(path, out, major, minor):
    """A copy of `path` with the .dpk header's version changed and its header checksum recomputed."""
    data = bytearray(open(path, "rb").read())
    section = data.find(b"DSOPACK\0")
    while section % 4096:
        section = data.find(b"DSOPACK\0", section + 1)
    struct.pack_into("<HH", data, section + 8, major, minor)
    struct.pack_into("<Q", data, section + 56, xxhash.xxh3_64_intdigest(bytes(data[section:section + 56])))
    out.write_bytes(bytes(data))
    return str(out)


def test_a_newer_major_is_refused_naming_both_versions(dpk_run, tmp_path):
    path = rewrite_version(golden("digits_mlp")[0], tmp_path / "v2.so", 2, 0)
    with pytest.raises(loader.UnimplementedError, match=r"is format 2\.0 but this runtime reads format 1\.x"):
        loader.load(path)
    result = subprocess.run([dpk_run, path, "--random"], capture_output=True, text=True)
    assert result.returncode == 1
    assert f"'{path}' is format 2.0 but this runtime reads format 1.x" in result.stderr


def test_a_newer_minor_loads_and_gives_the_same_outputs(tmp_path):
    source, x, expected = golden("digits_mlp")
    path = rewrite_version(source, tmp_path / "v1_9.so", 1, 9)
    with loader.load(path, verify=True) as model:
        np.testing.assert_allclose(model.run(x=x)["probs"], expected["probs"], rtol=1e-5, atol=1e-6)
