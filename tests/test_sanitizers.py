"""The C runtime under sanitizers: the C API tests and the examples under
AddressSanitizer + UndefinedBehaviorSanitizer (LeakSanitizer included), load /
run / free cycles without leaks and with flat RSS, and concurrent runs of one
model under ThreadSanitizer.

Each sanitizer kind is skipped, with the compiler's reason, where $CC cannot
build or run it (tests/sanitize.py).
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

import sanitize
from packager.build import build
from test_runtime_c import build_model

ROOT = sanitize.ROOT
MANIFESTS = os.path.join(ROOT, "manifests")


def need(kind):
    reason = sanitize.unavailable(kind)
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """The bundled examples, built (mixed needs OpenBLAS: skipped from the dict without it)."""
    out = tmp_path_factory.mktemp("examples")
    paths = {}
    for name in ("digits_mlp", "lenet", "mixed"):
        try:
            build(os.path.join(MANIFESTS, f"{name}.yaml"), str(out / f"{name}.so"), quiet=True)
        except Exception:  # noqa: BLE001 -- mixed without libopenblas-dev
            if name != "mixed":
                raise
            continue
        paths[name] = str(out / f"{name}.so")
    paths["api"] = build_model(out, name="api")
    return paths


def run(kind, argv, rc=0):
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=sanitize.env(kind))
    text = sanitize.clean_report(result)
    assert result.returncode == rc, text[-6000:]
    return result.stdout


# ---- ASan + UBSan (+ LSan) ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def asan(tmp_path_factory):
    need("asan")
    out = tmp_path_factory.mktemp("asan")
    return {
        "dpk-run": os.path.join(sanitize.runtime_build("asan"), "dpk-run"),
        "test_api": sanitize.c_program("tests/c/test_api.c", str(out / "test_api"), "asan", internal=True,
                                       tools=("npy.c",)),
        "stress": sanitize.c_program("tests/c/stress.c", str(out / "stress"), "asan"),
    }


def test_c_api_tests_under_asan_ubsan(asan, examples, tmp_path):
    run("asan", [asan["test_api"], "api", examples["api"], tmp_path])
    run("asan", [asan["test_api"], "threads", examples["api"], 8])
    assert run("asan", [asan["test_api"], "load", examples["api"], "verify"]) == "OK\n"
    assert run("asan", [asan["test_api"], "open", examples["api"]]) == "OK\nOK\n"


def test_examples_under_asan_ubsan(asan, examples, tmp_path):
    for name, path in examples.items():
        run("asan", [asan["dpk-run"], path, "--random", "--verify", "--populate", "--repeat", "3",
                     "-o", tmp_path / name])


def test_error_paths_under_asan_ubsan(asan, examples, tmp_path):
    """Loads that fail at each stage free what they made (LSan) and read nothing out of bounds."""
    data = bytearray(open(examples["digits_mlp"], "rb").read())
    section = data.find(b"DSOPACK\0")
    cases = {
        "magic": lambda d: d.__setitem__(section, 0),
        "header": lambda d: d.__setitem__(section + 12, 1),
        "manifest": lambda d: d.__setitem__(section + 70, d[section + 70] ^ 0x20),
        "truncated": None,
    }
    for name, fn in cases.items():
        bad = bytearray(data)
        if fn:
            fn(bad)
        else:
            bad = bad[:section + 200]
        path = tmp_path / f"{name}.so"
        path.write_bytes(bytes(bad))
        out = run("asan", [asan["test_api"], "load", path])
        assert not out.startswith("OK"), out


def test_load_run_free_cycles_leak_nothing_under_lsan(asan, examples):
    """1,000 cycles of load / run / free per example under LeakSanitizer (any leak fails the process)."""
    for name in ("digits_mlp", "lenet", "mixed", "api"):
        if name in examples:
            run("asan", [asan["stress"], "cycles", examples[name], 1000])


# ---- RSS over 10,000 cycles (no sanitizer) -------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_stress(tmp_path_factory):
    need("plain")
    return sanitize.c_program("tests/c/stress.c", str(tmp_path_factory.mktemp("plain") / "stress"), "plain")


RSS_GROWTH_BOUND_KB = 512


@pytest.mark.parametrize("name", ["digits_mlp", "lenet", "mixed"])
def test_rss_is_flat_over_10000_cycles(plain_stress, examples, name):
    """RSS after cycle 10,000 is within 512 KB of RSS after cycle 1,000 (a leak of
    one allocation of 64 bytes per cycle would show as ~560 KB)."""
    if name not in examples:
        pytest.skip("mixed needs OpenBLAS (libopenblas-dev) to build")
    out = run("plain", [plain_stress, "cycles", examples[name], 10000, 1000, 10000])
    rss = {int(c): int(kb) for c, kb in re.findall(r"^rss (\d+) (\d+)$", out, re.M)}
    assert set(rss) == {1000, 10000}, out
    growth = rss[10000] - rss[1000]
    print(f"{name}: RSS {rss[1000]} KB after 1,000 cycles, {rss[10000]} KB after 10,000 (+{growth} KB)")
    assert growth < RSS_GROWTH_BOUND_KB, rss


# ---- ThreadSanitizer ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tsan(tmp_path_factory):
    need("tsan")
    out = tmp_path_factory.mktemp("tsan")
    return {
        "stress": sanitize.c_program("tests/c/stress.c", str(out / "stress"), "tsan"),
        "test_api": sanitize.c_program("tests/c/test_api.c", str(out / "test_api"), "tsan", internal=True,
                                       tools=("npy.c",)),
    }


@pytest.mark.parametrize("name", ["digits_mlp", "lenet", "mixed"])
def test_eight_threads_run_one_model_under_tsan(tsan, examples, name):
    if name not in examples:
        pytest.skip("mixed needs OpenBLAS (libopenblas-dev) to build")
    out = run("tsan", [tsan["stress"], "threads", examples[name], 8, 200])
    assert "threads 8 x 200 runs: identical outputs" in out


def test_c_api_threads_under_tsan(tsan, examples):
    run("tsan", [tsan["test_api"], "threads", examples["api"], 8])
