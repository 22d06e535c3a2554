"""Shared fixtures: the C runtime built once per session with its Makefile."""

import os
import subprocess

import pytest

# Builds carry one ISA variant (packager/isa_variants.py): a default x86-64 build compiles its C three
# times plus a dispatch unit, which would make the suite's thousands of builds about 3x slower. The tests
# of the variants themselves (test_isa_paths.py) switch them back on with `isa_variants_on`.
os.environ["DSOPACK_ISA_VARIANTS"] = "0"
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


@pytest.fixture(scope="module")
def digits_so(tmp_path_factory):
    """manifests/digits_mlp.yaml built once per test module."""
    from packager.build import build

    out = tmp_path_factory.mktemp("digits") / "digits.so"
    build(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "manifests", "digits_mlp.yaml"),
          str(out), quiet=True)
    return str(out)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One object cache (DSOPACK_CACHE) for the module: a kernel several cases or opsets share compiles once."""
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("DSOPACK_CACHE")
    os.environ["DSOPACK_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("DSOPACK_CACHE", None)
    else:
        os.environ["DSOPACK_CACHE"] = old


@pytest.fixture
def isa_variants_on(monkeypatch):
    """Builds as a user's default build: with the ISA variants (see DSOPACK_ISA_VARIANTS above)."""
    monkeypatch.delenv("DSOPACK_ISA_VARIANTS")
