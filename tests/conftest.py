"""Shared fixtures: the C runtime built once per session with its Makefile."""

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME = os.path.join(ROOT, "runtime_c")


@pytest.fixture(scope="session")
def dpk_build():
    """runtime_c/build after `make`: libdpk.so, libdpk.a, dpk-run."""
    result = subprocess.run(["make", "-C", RUNTIME, "-j4"], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"make -C runtime_c failed:\n{result.stdout}\n{result.stderr}")
    return os.path.join(RUNTIME, "build")


@pytest.fixture(scope="session")
def dpk_run(dpk_build):
    """Path of the dpk-run executable."""
    return os.path.join(dpk_build, "dpk-run")
