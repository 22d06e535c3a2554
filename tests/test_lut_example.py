"""The plugin APIs end to end: examples/dsopack_lut, a separately installed package.

It is installed with pip into a temporary target (no change to the venv), and
found by `dsopack build` through its `dsopack.backends` entry point on
PYTHONPATH. The file it makes carries the `lut` kind's C, and the stock
dpk-run and loader run it; outputs match NumPy within the tables' accuracy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

import loader
from test_runtime_c import api, load_error, test_api  # noqa: F401  (test_api is a fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "dsopack_lut")
BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def lut_site(tmp_path_factory):
    """A directory holding the installed dsopack-lut (package + .dist-info with its entry point)."""
    work = tmp_path_factory.mktemp("lut")
    source = work / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = work / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                             "--no-index", "--target", str(site), str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return str(site)


def env_with(site):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([site, *filter(None, [env.get("PYTHONPATH")])])
    return env


def demo_reference(x):
    spec = yaml.safe_load(open(os.path.join(EXAMPLE, "demo", "lut_demo.yaml")))["model"]["graph"]["weights"]
    w = np.array(spec["w"]["data"], np.float64).reshape(spec["w"]["shape"])
    b = np.array(spec["b"], np.float64)
    h = x.astype(np.float64) @ w.T + b
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    return {"y": sigmoid(np.tanh(h)) * h, "z": sigmoid(h)}


@pytest.fixture(scope="module")
def demo(lut_site, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("demo") / "demo.so")
    result = subprocess.run([os.path.join(BIN, "dsopack"), "build", os.path.join(EXAMPLE, "demo", "lut_demo.yaml"),
                             "-o", out, "--explain"], capture_output=True, text=True, env=env_with(lut_site))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tanh_1 -> lut (first in [lut, host] that supports tanh)" in result.stdout
    return out


def test_the_file_declares_and_carries_the_kind(demo):
    with loader.open_package(demo) as package:
        manifest = package.manifest
    assert manifest["kinds"] == {"carried": ["lut"]}
    assert [(m["name"], m["kind"]) for m in manifest["modules"]] == [
        ("host", "dso"), ("ext0", "lut"), ("ext1", "lut"), ("weights", "params"), ("main", "graph")]
    symbols = subprocess.run(["nm", "-D", "--defined-only", demo], capture_output=True, text=True).stdout
    assert "__dpk_kinds" in symbols and "dpk_kind_lut" not in symbols  # the table is exported, the kind hidden


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_loader_matches_numpy_within_the_table_accuracy(demo, lut_site, scale):
    x = (np.random.default_rng(7).standard_normal((2, 4)) * scale).astype(np.float32)
    with loader.load(demo) as model:
        assert {m.kind for m in model.modules} == {"dso", "lut", "params", "graph"}
        got = model.run(x=x)
    for name, ref in demo_reference(x).items():
        np.testing.assert_allclose(got[name], ref, rtol=0, atol=max_error(lut_site) * max(1.0, np.abs(ref).max()))


def test_dpk_run_matches_the_loader(demo, dpk_run, tmp_path):
    x = np.random.default_rng(8).standard_normal((2, 4)).astype(np.float32) * 4
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run([dpk_run, demo, f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "out"), "--verify"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with loader.load(demo) as model:
        expected = model.run(x=x)
    for name in ("y", "z"):
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"{name}.npy"), expected[name])


def test_without_the_plugin_the_backend_is_unknown(tmp_path):
    result = subprocess.run([os.path.join(BIN, "dsopack"), "build", os.path.join(EXAMPLE, "demo", "lut_demo.yaml"),
                             "-o", str(tmp_path / "m.so")], capture_output=True, text=True)
    assert result.returncode != 0
    assert "unknown backend 'lut'" in result.stderr and not (tmp_path / "m.so").exists()


def max_error(site) -> float:
    """MAX_ERROR as the installed package states it."""
    code = "import dsopack_lut; print(dsopack_lut.MAX_ERROR)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env_with(site), check=True)
    return float(out.stdout)


# ---- the same kind registered by an application instead of carried ------------------------------------


@pytest.fixture(scope="module")
def app(dpk_build, tmp_path_factory):
    """tests/c/app_registers_kind.c linked with libdpk.a and the example's lut_kind.c."""
    out = str(tmp_path_factory.mktemp("app") / "app_registers_kind")
    include = os.path.join(ROOT, "runtime_c", "include")
    subprocess.run([os.environ.get("CC", "gcc"), "-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-I", include,
                    os.path.join(ROOT, "tests", "c", "app_registers_kind.c"),
                    os.path.join(EXAMPLE, "dsopack_lut", "lut_kind.c"), os.path.join(dpk_build, "libdpk.a"),
                    "-lzstd", "-lyaml", "-lxxhash", "-lsodium", "-ldl", "-lpthread", "-lm", "-o", out], check=True)
    return out


@pytest.fixture(scope="module")
def uncarried(lut_site, tmp_path_factory):
    """The demo built by a LutBackend whose payloads do not carry the kind's C."""
    from packager import partition
    from packager.build import build
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(lut_site)
    try:
        from dsopack_lut.backend import LutBackend

        class Uncarried(LutBackend):
            def lower(self, region, graph):
                lowered = super().lower(region, graph)
                lowered.kind_source = None
                return lowered
        mp.setitem(partition.BACKENDS, "lut", Uncarried)
        out = str(tmp_path_factory.mktemp("uncarried") / "demo.so")
        report = build(os.path.join(EXAMPLE, "demo", "lut_demo.yaml"), out, quiet=True)
    finally:
        mp.undo()
        for name in [m for m in sys.modules if m.startswith("dsopack_lut")]:
            del sys.modules[name]
    assert "kinds" not in report.manifest
    return out


def test_an_application_registers_the_kind_and_runs_the_file(app, uncarried, dpk_run, lut_site):
    result = subprocess.run([app, uncarried], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    got: dict[str, list[float]] = {}
    for line in result.stdout.splitlines():
        name, value = line.split()
        got.setdefault(name, []).append(float(value))
    x = ((np.arange(8) - 4.0) * 0.75).reshape(2, 4)
    for name, ref in demo_reference(x).items():
        np.testing.assert_allclose(np.array(got[name]).reshape(2, 4), ref, rtol=0,
                                   atol=max_error(lut_site) * max(1.0, np.abs(ref).max()))
    # the stock runner has no `lut`: refused before dlopen, naming the registered kinds
    result = subprocess.run([dpk_run, uncarried, "--random"], capture_output=True, text=True)
    assert result.returncode == 1
    assert (f"'{uncarried}': module 'ext0' has kind 'lut', which is not registered "
            "(registered: dso, graph, json, params)") in result.stderr


# ---- the kind's own checks: bad payloads, leaks -------------------------------------------------------


def lut_model(directory, name, data: bytes):
    """A hand-made file (test_runtime_c's model) with one extra module ext0 of the carried kind lut."""
    from test_runtime_c import KERNELS, build_model
    with open(os.path.join(EXAMPLE, "dsopack_lut", "lut_kind.c")) as f:
        kind_c = f.read()
    table = ("\nstatic const dpk_kind *const carried[] = {&dpk_kind_lut};\n"
             "DPK_EXPORT const dpk_kind_table __dpk_kinds = {DPK_ABI_VERSION, 1, carried};\n")

    def add(writer, manifest):
        manifest["modules"].insert(2, {"name": "ext0", "kind": "lut", "functions": ["ext0"],
                                       "payload": writer.add(data)})
        manifest["kinds"] = {"carried": ["lut"]}
    return build_model(directory, name=name, add=add, kernels=KERNELS + kind_c.replace('#include "dpk_abi.h"', "")
                       + table)


def good_payload():
    sys.path.insert(0, os.path.join(EXAMPLE))
    try:
        from dsopack_lut import payload
    finally:
        sys.path.pop(0)
        for name in [m for m in sys.modules if m.startswith("dsopack_lut")]:
            del sys.modules[name]
    return payload.pack("ext0", 1, 1, 2, 8, [(0, 1, "tanh")])


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d[:50], "DATA_LOSS: '{}': cannot load module 'ext0' (kind lut): module 'ext0': not a lut payload (50 bytes)"),
    (lambda d: d[:-4], "DATA_LOSS: '{}': cannot load module 'ext0' (kind lut): module 'ext0': lut stage 0 has 4097 points "
                       "but only 16384 bytes are left"),
    (lambda d: d[:7] + b"2" + d[8:], "UNIMPLEMENTED: '{}': cannot load module 'ext0' (kind lut): module 'ext0': lut "
                                     "payload version 2 is newer than this kind (1)"),
    (lambda d: d[:96] + (5).to_bytes(4, "little") + d[100:],
     "DATA_LOSS: '{}': cannot load module 'ext0' (kind lut): module 'ext0': lut stage 0 maps tensor 5 to 1, which the "
     "stages before it do not allow (1 inputs, 2 tensors)"),
    (lambda d: d + b"\0\0\0\0", "DATA_LOSS: '{}': cannot load module 'ext0' (kind lut): module 'ext0': 4 bytes follow "
                                "the last lut stage"),
])
def test_the_kind_refuses_a_bad_payload(test_api, tmp_path, edit, expected):
    path = lut_model(tmp_path, "bad", edit(good_payload()))
    assert load_error(test_api, path) == expected.format(path)


def test_a_good_hand_made_payload_loads(test_api, tmp_path):
    assert api(test_api, "load", lut_model(tmp_path, "good", good_payload())) == "OK\n"


@pytest.mark.skipif(not shutil.which("valgrind"), reason="valgrind is not installed")
def test_load_run_free_of_a_carried_kind_is_leak_free(demo, dpk_run, tmp_path):
    result = subprocess.run(["valgrind", "--quiet", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
                             "--error-exitcode=3", dpk_run, demo, "--random", "--repeat", "3", "-o", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lost" not in result.stderr and "Invalid" not in result.stderr, result.stderr
