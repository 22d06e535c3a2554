"""Dynamic shapes in dpk-run: inputs of any shape in range, outputs at the shapes
they give, the plan that ran (for a file with several), ranges in the
missing-input listing, the runtime's refusals. Files are made by hand
(dynamic_model.py)."""

from __future__ import annotations

import numpy as np
import pytest

import dynamic_model as dm
import loader
from test_runtime_c import build_model, run, run_error


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return dm.build(tmp_path_factory.mktemp("dynamic"))


def save(tmp_path, batch, seq, seed=0):
    rng = np.random.default_rng(seed)
    x, t = rng.standard_normal((batch, dm.K)).astype(np.float32), rng.standard_normal((batch, seq)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "t.npy", t)
    return x, t


def test_any_shape_in_range_runs_in_its_plan_and_the_outputs_have_the_actual_shapes(dpk_run, path, tmp_path):
    x, t = save(tmp_path, 3, 2)
    out = run(dpk_run, path, f"x={tmp_path / 'x.npy'}", f"t={tmp_path / 't.npy'}", "-o", tmp_path / "out").stdout
    assert "plan g_b4_s2 (batch=4, seq=2)\n" in out
    assert "y: float32[3, 3] =" in out and "n: float32[3] = 4 4 4\n" in out
    with loader.load(path) as model:
        want = model.run(x=x, t=t)
    for name, value in want.items():
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"{name}.npy"), value)


def test_random_inputs_take_the_largest_shapes(dpk_run, path):
    out = run(dpk_run, path, "--random").stdout
    assert "plan main (batch=8, seq=4)\n" in out and "z: float32[8, 4] =" in out


def test_the_missing_input_listing_shows_ranges(dpk_run, path, tmp_path):
    save(tmp_path, 2, 2)
    assert "dpk-run: missing input 't' (float32[1..8, 1..4]): give t=FILE.npy, or --random" in run_error(
        dpk_run, path, f"x={tmp_path / 'x.npy'}")


@pytest.mark.parametrize("batch, seq, message", [
    (9, 2, "dpk-run: input 'x' dim 0 (batch) is 9, outside the range 1..8 of '{path}'"),
    (2, 3, "dpk-run: '{path}' has no plan for seq = 3 (plans: seq 2, 4) and does not pad seq: " + dm.EXACT),
])
def test_refusals_are_the_runtime_messages(dpk_run, path, tmp_path, batch, seq, message):
    save(tmp_path, batch, seq)
    err = run_error(dpk_run, path, f"x={tmp_path / 'x.npy'}", f"t={tmp_path / 't.npy'}", "-o", tmp_path / "out")
    assert err == message.format(path=path) + "\n"
    assert not (tmp_path / "out").exists()


def test_a_file_with_one_plan_prints_none(dpk_run, tmp_path):
    out = run(dpk_run, build_model(tmp_path), "--random").stdout
    assert "plan" not in out and out.startswith("load: ")


def test_padded_exact_and_refused_runs_under_asan_ubsan(path, tmp_path):
    """The padded path's buffers and copies, the exact path, the refusals and a malformed plan: no bad
    access, nothing leaked (LeakSanitizer at exit)."""
    import os
    import subprocess

    import sanitize
    reason = sanitize.unavailable("asan")
    if reason:
        pytest.skip(reason)
    dpk_run = os.path.join(sanitize.runtime_build("asan"), "dpk-run")

    def asan_run(*args, rc=0):
        result = subprocess.run([dpk_run, *map(str, args)], capture_output=True, text=True, env=sanitize.env("asan"))
        assert result.returncode == rc, sanitize.clean_report(result)[-6000:]
        return result
    for batch, seq in [(3, 2), (4, 4), (1, 2), (7, 4), (9, 2), (2, 3)]:
        save(tmp_path, batch, seq)
        ok = batch <= 8 and seq in dm.SEQS
        asan_run(path, f"x={tmp_path / 'x.npy'}", f"t={tmp_path / 't.npy'}", "-o", tmp_path / f"o{batch}{seq}",
                 rc=0 if ok else 1)
    with_fail = dm.build(tmp_path, name="fails", fail=True, exact=False)
    save(tmp_path, 3, 3)
    err = asan_run(with_fail, f"x={tmp_path / 'x.npy'}", f"t={tmp_path / 't.npy'}", rc=1).stderr
    assert "dpk-run: call 3 (dyn_fail) failed: the kernel refuses: code 7" in err
    bad = dm.build(tmp_path, name="bad", edit=lambda m: m["plans"][0].update(dims={"batch": 1}))
    assert "gives no size for dim 'seq'" in asan_run(bad, "--random", rc=1).stderr


def test_a_file_the_cli_builds(dpk_run, tmp_path):
    """`dsopack build m.yaml -o m.so --buckets 1,8,64` with a YAML input shape ["batch=1..64", 16]."""
    import yaml

    from packager.cli import main
    from test_dynamic_build import MLP, graph_spec
    spec = graph_spec(tmp_path, MLP, shape=("batch=1..64", 16))
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
    assert main(["build", str(tmp_path / "m.yaml"), "-o", str(tmp_path / "m.so"), "--buckets", "1,8,64", "-q"]) == 0
    np.save(tmp_path / "x.npy", np.ones((5, 16), np.float32))
    out = run(dpk_run, tmp_path / "m.so", f"x={tmp_path / 'x.npy'}").stdout
    assert "plan main_b8 (batch=8)\n" in out and "y: float32[5, 5] =" in out
    assert "missing input 'x' (float32[1..64, 16])" in run_error(dpk_run, tmp_path / "m.so")
