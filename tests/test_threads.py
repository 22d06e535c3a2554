"""Threads: the runtime's worker pool (tests/c/pool_harness.c, plain and under
ASan/UBSan and TSan), a model's thread count (option, DPK_NUM_THREADS, the
affinity mask) through the loader, dpk-run and `dsopack run`, and OpenBLAS
kept to one thread after a model that requires it is loaded."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import loader
import sanitize
from packager.build import build
from packager.cli import main

ROOT = sanitize.ROOT
MANIFESTS = os.path.join(ROOT, "manifests")


def harness(kind, tmp_path_factory):
    reason = sanitize.unavailable(kind)
    if reason:
        pytest.skip(reason)
    out = str(tmp_path_factory.mktemp(f"pool-{kind}") / "pool_harness")
    return sanitize.c_program("tests/c/pool_harness.c", out, kind, internal=True)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return harness("plain", tmp_path_factory)


def pool(kind, exe, *args):
    result = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=sanitize.env(kind), timeout=300)
    text = sanitize.clean_report(result)
    assert result.returncode == 0, text[-6000:]
    return result.stdout


# ---- the pool ---------------------------------------------------------------------------------------


def test_every_index_once_in_contiguous_ranges_with_private_aligned_scratch(plain):
    """T = 1..9 and n from 0 to 4096: ranges cover [0, n) once, non-empty, min(n, 4 T) of them; the
    caller's with own_scratch, each worker's with its own; n < 2, T = 1 and outside a run inline."""
    assert pool("plain", plain, "ranges") == "ranges OK\n"


def test_scratch_that_cannot_be_allocated_runs_nothing(plain):
    out = pool("plain", plain, "oom")
    assert out.startswith("oom OK: parallel_for: cannot allocate"), out


def test_concurrent_callers_get_the_pool_or_run_inline(plain):
    out = pool("plain", plain, "concurrent", 6)
    loops = out.split()  # "concurrent 6: P loops on the pool, I inline"
    assert int(loops[2]) + int(loops[7]) == 6 * 2000, out


def test_last_release_joins_the_workers_and_idle_workers_sleep(plain):
    assert pool("plain", plain, "lifecycle").startswith("lifecycle OK"), "see the harness output"


def test_a_forked_child_runs_inline_then_starts_its_own_workers(plain):
    assert pool("plain", plain, "fork") == "fork OK\n"


def test_pool_under_asan_ubsan(tmp_path_factory):
    exe = harness("asan", tmp_path_factory)
    assert pool("asan", exe, "ranges") == "ranges OK\n"
    pool("asan", exe, "concurrent", 4)
    pool("asan", exe, "lifecycle")


def test_pool_under_tsan(tmp_path_factory):
    exe = harness("tsan", tmp_path_factory)
    assert pool("tsan", exe, "ranges") == "ranges OK\n"
    pool("tsan", exe, "concurrent", 4)
    pool("tsan", exe, "lifecycle")


# ---- a model's thread count ---------------------------------------------------------------------------


@pytest.fixture()
def no_env(monkeypatch):
    monkeypatch.delenv("DPK_NUM_THREADS", raising=False)
    return monkeypatch


def test_default_is_the_affinity_cpu_count(digits_so, no_env):
    with loader.load(digits_so) as model:
        assert model.num_threads == len(os.sched_getaffinity(0))


def test_environment_is_used_when_no_count_is_given(digits_so, no_env):
    no_env.setenv("DPK_NUM_THREADS", "3")
    with loader.load(digits_so) as model:
        assert model.num_threads == 3


def test_the_option_beats_the_environment(digits_so, no_env):
    no_env.setenv("DPK_NUM_THREADS", "3")
    with loader.load(digits_so, num_threads=2) as model:
        assert model.num_threads == 2
        x = {model.inputs[0].name: [[0.5] * model.inputs[0].shape[1]]}
        assert model.run(**x)  # runs with the count


@pytest.mark.parametrize("value", ["abc", "0", "-1", "99999", "", " 2", "2x", "+2"])
def test_bad_environment_values_fail_the_load_naming_the_variable(digits_so, no_env, value):
    no_env.setenv("DPK_NUM_THREADS", value)
    with pytest.raises(loader.InvalidArgumentError, match=re.escape(f"DPK_NUM_THREADS='{value}' is not a thread count")):
        loader.load(digits_so)


@pytest.mark.parametrize("value, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), ("2", TypeError),
                                          (True, TypeError)])
def test_loader_refuses_bad_counts_before_calling_c(digits_so, value, error):
    with pytest.raises(error, match="num_threads"):
        loader.load(digits_so, num_threads=value)


def dpk_run_proc(dpk_run, *args, env=None):
    return subprocess.run([dpk_run, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("value", ["0", "-3", "abc", "2000", ""])
def test_dpk_run_threads_bad_values(dpk_run, digits_so, value):
    result = dpk_run_proc(dpk_run, digits_so, "--random", "--threads", value)
    assert result.returncode == 1
    assert f"--threads needs an integer from 1 to 1024, not '{value}'" in result.stderr


def test_dpk_run_threads_and_environment(dpk_run, digits_so):
    one = dpk_run_proc(dpk_run, digits_so, "--random", "--threads", "1")
    two = dpk_run_proc(dpk_run, digits_so, "--random", "--threads", "2", env={"DPK_NUM_THREADS": "abc"})
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert one.stdout.split("run:")[0].split("\n", 1)[1] == two.stdout.split("run:")[0].split("\n", 1)[1]
    bad = dpk_run_proc(dpk_run, digits_so, "--random", env={"DPK_NUM_THREADS": "abc"})
    assert bad.returncode == 1 and "DPK_NUM_THREADS='abc'" in bad.stderr, bad.stderr
    assert dpk_run_proc(dpk_run, digits_so, "--threads").stderr.strip() == "dpk-run: --threads needs a value (see --help)"


def test_dsopack_run_threads(digits_so, capsys):
    assert main(["run", digits_so, "--random", "--threads", "2"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:  # the CLI's usage errors: one line, exit 1
        main(["run", digits_so, "--random", "--threads", "0"])
    assert exit.value.code == 1
    assert "argument --threads: needs a positive integer, not '0'" in capsys.readouterr().err


# ---- OpenBLAS ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_so(tmp_path_factory):
    out = tmp_path_factory.mktemp("mixed") / "mixed.so"
    try:
        build(os.path.join(MANIFESTS, "mixed.yaml"), str(out), quiet=True)
    except Exception as e:  # noqa: BLE001 -- no libopenblas-dev
        pytest.skip(f"mixed.yaml does not build here: {e}")
    return str(out)


OPENBLAS_PROBE = """
import ctypes, sys
import loader
blas = ctypes.CDLL("libopenblas.so.0")
before = blas.openblas_get_num_threads()
model = loader.load(sys.argv[1])
print(before, blas.openblas_get_num_threads())
"""


def openblas_threads(path, **env):
    clean = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", OPENBLAS_PROBE, path], capture_output=True, text=True,
                            env={**clean, **env}, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return tuple(int(n) for n in result.stdout.split())


def test_openblas_is_set_to_one_thread_by_the_load(mixed_so):
    before, after = openblas_threads(mixed_so)
    assert after == 1
    if len(os.sched_getaffinity(0)) > 1:
        assert before > 1  # else the test could not fail


@pytest.mark.parametrize("variable", ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"])
def test_openblas_is_left_alone_when_the_user_set_its_threads(mixed_so, variable):
    assert openblas_threads(mixed_so, **{variable: "2"}) == (2, 2)
