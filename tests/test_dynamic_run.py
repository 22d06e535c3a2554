"""Dynamic shapes, the run side: dpk_model_run and the dpk.h accessors on a file
with dims (plans.c, model_dims.c) and the loader over them (loader/shapes.py).
The plan a run takes, exact and padded runs (the padded one must give the real
rows bit for bit what the exact one gives), every refusal with its message, the
outputs after a refusal or a failure, NULL arguments, and the static path
unchanged. Files are made by hand (dynamic_model.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import dynamic_model as dm
import loader
from loader._native import TensorRef, ffi, lib
from test_runtime_c import build_model

NULL = ffi.NULL


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return dm.build(tmp_path_factory.mktemp("dynamic"))


@pytest.fixture(scope="module")
def model(path):
    with loader.load(path) as m:
        yield m


def inputs(batch, seq, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, dm.K)).astype(np.float32),
            "t": rng.standard_normal((batch, seq)).astype(np.float32)}


def check_outputs(out, x, t, ran_batch):
    want = dm.expected(x, t, ran_batch)
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in want.items()}
    np.testing.assert_allclose(out["y"], want["y"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["z"], want["z"])
    np.testing.assert_array_equal(out["n"], want["n"])
    np.testing.assert_allclose(out["s"], want["s"], rtol=1e-5, atol=1e-5)


# ---- what the file declares -------------------------------------------------------------------------------


def test_dims_plans_and_the_signature_with_ranges(model):
    assert model.dims == [loader.Dim("batch", 1, 8, None), loader.Dim("seq", 1, 4, dm.EXACT)]
    assert model.plans == [loader.Plan(dm.graph_name(b, s), {"batch": b, "seq": s}) for b, s in dm.plan_sizes()]
    assert model.plans[-1].graph == "main" and str(model.plans[2]) == "g_b4_s2 (batch=4, seq=2)"
    assert [str(i) for i in model.inputs] == ["x: float32[1..8, 4]", "t: float32[1..8, 1..4]"]
    assert [str(o) for o in model.outputs] == ["y: float32[1..8, 3]", "z: float32[1..8, 1..4]", "n: float32[1..8]",
                                               "s: float32[4]"]
    x, t = model.inputs
    assert (x.shape, x.dims, x.min_shape) == ((8, dm.K), ("batch", None), (1, dm.K))
    assert (t.shape, t.dims, t.min_shape) == ((8, 4), ("batch", "seq"), (1, 1))
    assert "(x: float32[1..8, 4], t: float32[1..8, 1..4])" in repr(model)


def test_the_c_accessors(model):
    h = model._handle
    assert lib.dpk_model_num_dims(h) == 2 and lib.dpk_model_num_plans(h) == 6
    name, exact = ffi.new("const char **"), ffi.new("const char **")
    low, high = ffi.new("int64_t *"), ffi.new("int64_t *")
    assert lib.dpk_model_dim_info(h, 1, name, low, high, exact) == 0
    assert (ffi.string(name[0]), low[0], high[0], ffi.string(exact[0]).decode()) == (b"seq", 1, 4, dm.EXACT)
    assert lib.dpk_model_dim_info(h, 0, name, low, high, exact) == 0 and exact[0] == NULL
    axes = ffi.new("const char *const **")
    assert lib.dpk_model_output_dims(h, 2, axes) == 0 and ffi.string(axes[0][0]) == b"batch"
    assert lib.dpk_model_output_dims(h, 3, axes) == 0 and axes[0][0] == NULL
    graph, sizes = ffi.new("const char **"), ffi.new("const int64_t **")
    assert lib.dpk_model_plan_info(h, 3, graph, sizes) == 0
    assert (ffi.string(graph[0]), sizes[0][0], sizes[0][1]) == (b"g_b4_s4", 4, 4)


def status(code):
    return ffi.string(lib.dpk_status_name(code)).decode(), ffi.string(lib.dpk_last_error()).decode()


def test_out_of_range_indices_and_null_arguments(model):
    h = model._handle
    name, exact = ffi.new("const char **", ffi.new("char[]", b"x")), ffi.new("const char **")
    low, high = ffi.new("int64_t *", 5), ffi.new("int64_t *", 5)
    assert status(lib.dpk_model_dim_info(h, 2, name, low, high, exact)) == (
        "OUT_OF_RANGE", f"dim index 2 is out of range: '{model.path}' has 2 dims")
    assert name[0] == NULL and low[0] == 0 and high[0] == 0  # cleared on entry
    assert status(lib.dpk_model_dim_info(NULL, 0, name, low, high, exact)) == (
        "INVALID_ARGUMENT", "dpk_model_dim_info: model is NULL")
    assert status(lib.dpk_model_dim_info(h, 0, name, low, NULL, exact)) == (
        "INVALID_ARGUMENT", "dpk_model_dim_info: out_max is NULL")
    axes = ffi.new("const char *const **")
    assert status(lib.dpk_model_input_dims(h, 2, axes)) == ("OUT_OF_RANGE",
                                                            "input index 2 is out of range: the model has 2")
    assert status(lib.dpk_model_output_dims(NULL, 0, axes)) == ("INVALID_ARGUMENT",
                                                                "dpk_model_output_dims: model is NULL")
    assert status(lib.dpk_model_input_dims(h, 0, NULL)) == ("INVALID_ARGUMENT",
                                                             "dpk_model_input_dims: out_dims is NULL")
    graph, sizes = ffi.new("const char **"), ffi.new("const int64_t **")
    assert status(lib.dpk_model_plan_info(h, 6, graph, sizes)) == (
        "OUT_OF_RANGE", f"plan index 6 is out of range: '{model.path}' has 6 plans")
    assert status(lib.dpk_model_plan_info(h, 0, graph, NULL)) == ("INVALID_ARGUMENT",
                                                                  "dpk_model_plan_info: out_sizes is NULL")
    assert lib.dpk_model_num_dims(NULL) == 0 and lib.dpk_model_num_plans(NULL) == 0
    plan = ffi.new("size_t *", 9)
    assert status(lib.dpk_model_select_plan(NULL, NULL, 0, plan)) == ("INVALID_ARGUMENT",
                                                                     "dpk_model_select_plan: model is NULL")
    assert plan[0] == 0
    assert status(lib.dpk_model_select_plan(h, NULL, 2, plan)) == (
        "INVALID_ARGUMENT", "dpk_model_select_plan: inputs is NULL but num_inputs is 2")
    assert status(lib.dpk_model_select_plan(h, NULL, 0, NULL)) == ("INVALID_ARGUMENT",
                                                                  "dpk_model_select_plan: out_plan is NULL")
    assert status(lib.dpk_model_select_plan(h, NULL, 0, plan)) == (
        "INVALID_ARGUMENT", "the model takes 2 inputs (x, t) but 0 were given")
    tensors = ffi.new("DLTensor *[]", [NULL, NULL])
    assert status(lib.dpk_model_select_plan(h, tensors, 2, plan)) == ("INVALID_ARGUMENT", "input 'x' has no data")
    shape = ffi.new("int64_t[]", [7, 7])
    assert status(lib.dpk_model_output_shape(h, tensors, 2, 4, shape)) == (
        "OUT_OF_RANGE", "output index 4 is out of range: the model has 4")
    assert status(lib.dpk_model_output_shape(h, tensors, 2, 0, NULL)) == (
        "INVALID_ARGUMENT", "dpk_model_output_shape: out_shape is NULL")
    assert status(lib.dpk_model_output_shape(NULL, tensors, 2, 0, shape)) == (
        "INVALID_ARGUMENT", "dpk_model_output_shape: model is NULL")
    assert status(lib.dpk_model_output_shape(h, tensors, 2, 0, shape)) == ("INVALID_ARGUMENT",
                                                                          "input 'x' has no data")
    assert list(shape) == [0, 0]  # cleared once model and index are known good


# ---- the plan a run takes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", range(1, 9))
@pytest.mark.parametrize("seq", dm.SEQS)
def test_each_size_runs_in_the_first_plan_large_enough(model, batch, seq):
    ran = min(b for b in dm.BATCHES if b >= batch)
    feed = inputs(batch, seq, seed=batch * 10 + seq)
    assert model.select_plan(**feed) == loader.Plan(dm.graph_name(ran, seq), {"batch": ran, "seq": seq})
    check_outputs(model.run(**feed), feed["x"], feed["t"], ran)


def test_a_padded_run_gives_the_real_rows_bit_for_bit_what_exact_runs_give(model):
    feed = inputs(3, 2, seed=5)
    padded = model.run(**feed)  # batch 3 runs in the plan of batch 4
    np.testing.assert_array_equal(padded["n"], [4, 4, 4])
    full = {"x": np.concatenate([feed["x"], np.zeros((1, dm.K), np.float32)]),
            "t": np.concatenate([feed["t"], np.zeros((1, 2), np.float32)])}
    exact = model.run(**full)  # the same rows and a zero row, in the same plan without padding
    np.testing.assert_array_equal(padded["y"], exact["y"][:3])
    np.testing.assert_array_equal(padded["z"], exact["z"][:3])
    np.testing.assert_array_equal(padded["s"], exact["s"])  # the padding rows were zero
    for row in range(3):  # and each row on its own, in the plan of batch 1
        alone = model.run(x=feed["x"][row:row + 1], t=feed["t"][row:row + 1])
        np.testing.assert_array_equal(padded["y"][row], alone["y"][0])


def test_padding_two_dims_of_one_input(tmp_path):
    """seq padded too (a file without `exact`): t [3, 3] runs in the plan (4, 4), both axes padded."""
    with loader.load(dm.build(tmp_path, exact=False)) as m:
        assert m.dims[1] == loader.Dim("seq", 1, 4, None)
        for batch, seq, plan in [(3, 3, "g_b4_s4"), (5, 1, "g_b8_s2"), (1, 1, "g_b1_s2"), (8, 3, "main")]:
            feed = inputs(batch, seq, seed=batch + seq)
            assert m.select_plan(**feed).graph == plan
            check_outputs(m.run(**feed), feed["x"], feed["t"], m.select_plan(**feed).sizes["batch"])


@pytest.mark.parametrize("batch, ran", [(2, [1, 1]), (5, [4, 4, 4, 4, 1]), (6, [8] * 6), (7, [8] * 7),
                                        (3, [4, 4, 4]), (8, [8] * 8)])
def test_a_size_runs_in_chunks_when_smaller_plans_cost_less(tmp_path_factory, batch, ran):
    """Plan costs default to the sizes' product: batch 5 costs 8 padded, 4 + 1 in two exact runs; 7 costs
    8 either way (4 + 3 padded to 4) and pads, as 6 does. `n` says which plan computed each row."""
    path = dm.build(tmp_path_factory.mktemp("chunks"), chunks=True)
    with loader.load(path) as m:
        feed = inputs(batch, 2, seed=batch)
        out = m.run(**feed)
        np.testing.assert_array_equal(out["n"], np.array(ran, np.float32))
        want = dm.expected(feed["x"], feed["t"], 0)
        np.testing.assert_allclose(out["y"], want["y"], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(out["z"], 2 * feed["t"])
        assert m.select_plan(**feed).sizes["batch"] == ran[0]  # the first chunk's plan
        again = m.run(**feed)
        for name in ("y", "z", "n"):
            np.testing.assert_array_equal(again[name], out[name])


def test_concurrent_runs_of_different_sizes(model):
    sizes = [(b, s) for b in range(1, 9) for s in dm.SEQS]
    want = {size: model.run(**inputs(*size)) for size in sizes}
    errors = []

    def worker(offset):
        try:
            for k in range(40):
                size = sizes[(offset + k) % len(sizes)]
                got = model.run(**inputs(*size))
                for name in got:
                    np.testing.assert_array_equal(got[name], want[size][name])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=worker, args=(i * 5,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]


# ---- refusals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x_shape, t_shape, message", [
    ((9, 4), (9, 2), "input 'x' dim 0 (batch) is 9, outside the range 1..8 of '{path}'"),
    ((0, 4), (0, 2), "input 'x' dim 0 (batch) is 0, outside the range 1..8 of '{path}'"),
    ((2, 4), (2, 5), "input 't' dim 1 (seq) is 5, outside the range 1..4 of '{path}'"),
    ((2, 4), (3, 2), "input 't' dim 0 (batch) is 3 but input 'x' gives batch = 2"),
    ((2, 5), (2, 2), "input 'x' has shape [2, 5] but the model expects float32[1..8, 4]"),
    ((2,), (2, 2), "input 'x' has shape [2] but the model expects float32[1..8, 4]"),
    ((2, 4), (2, 3), "'{path}' has no plan for seq = 3 (plans: seq 2, 4) and does not pad seq: " + dm.EXACT),
    ((2, 4), (2, 1), "'{path}' has no plan for seq = 1 (plans: seq 2, 4) and does not pad seq: " + dm.EXACT),
])
def test_inputs_out_of_range_disagreeing_or_without_a_plan_are_refused(model, path, x_shape, t_shape, message):
    feed = {"x": np.zeros(x_shape, np.float32), "t": np.zeros(t_shape, np.float32)}
    for call in (model.run, model.select_plan):
        with pytest.raises(loader.InvalidArgumentError) as err:
            call(**feed)
        assert str(err.value) == message.format(path=path)


def test_a_wrong_dtype_is_refused_with_the_ranges(model):
    with pytest.raises(loader.InvalidArgumentError) as err:
        model.run(x=np.zeros((2, 4)), t=np.zeros((2, 2), np.float32))
    assert str(err.value) == "input 'x' is float64[2, 4] but the model expects float32[1..8, 4]"


def test_no_plan_in_the_combination_of_sizes(tmp_path):
    """Each exact value has a plan, but none of those is large enough in the padded dim."""
    def edit(m):  # a graph module that is not a plan is checked at the manifest's shapes: drop it too
        m["plans"] = [p for p in m["plans"] if p["graph"] != "g_b8_s2"]
        m["modules"] = [module for module in m["modules"] if module["name"] != "g_b8_s2"]
    path = dm.build(tmp_path, edit=edit)
    with loader.load(path) as m, pytest.raises(loader.InvalidArgumentError) as err:
        m.run(**inputs(6, 2))
    assert str(err.value) == (
        f"'{path}' has no plan for batch = 6, seq = 2 (plans: batch=1 seq=2; batch=1 seq=4; batch=4 seq=2; "
        "batch=4 seq=4; batch=8 seq=4); its exact dims are never padded")


class Run:
    """dpk_model_run with the caller's output tensors: each a view at the front of a larger buffer of 7s, so
    a write past the actual shape shows too."""

    def __init__(self, model, feed, shapes):
        self.model = model
        self.refs = [TensorRef(np.ascontiguousarray(feed[name])) for name in ("x", "t")]
        self.backing = [np.full(64, 7, np.float32) for _ in shapes]
        self.outputs = [b[:int(np.prod(s))].reshape(s) for b, s in zip(self.backing, shapes)]
        self.out_refs = [TensorRef(o) for o in self.outputs]

    def __call__(self):
        ins = ffi.new("DLTensor *[]", [r.struct for r in self.refs])
        outs = ffi.new("DLTensor *[]", [r.struct for r in self.out_refs])
        return status(lib.dpk_model_run(self.model._handle, ins, 2, outs, len(self.out_refs)))

    def untouched(self):
        return all((b == 7).all() for b in self.backing)


def shapes(batch, seq):
    return [(batch, dm.N), (batch, seq), (batch,), (dm.K,)]


@pytest.mark.parametrize("index, bad", [(0, (3, dm.N + 1)), (1, (2, 2)), (2, (4,)), (3, (dm.K, 1))])
def test_an_output_of_the_wrong_shape_is_refused_and_no_output_is_written(model, index, bad):
    good = shapes(3, 2)
    run = Run(model, inputs(3, 2), [bad if i == index else s for i, s in enumerate(good)])
    name = "yzns"[index]
    want = f"float32[{', '.join(map(str, good[index]))}]"
    assert run() == ("INVALID_ARGUMENT", f"output '{name}' has shape [{', '.join(map(str, bad))}] but the model "
                                         f"expects {want}")
    assert run.untouched()


def test_refused_inputs_write_no_output_byte(model):
    run = Run(model, inputs(3, 3), shapes(3, 3))
    assert run()[0] == "INVALID_ARGUMENT" and run.untouched()


def test_the_run_writes_only_the_actual_shapes(model):
    for batch, seq in [(3, 2), (4, 2)]:  # padded, exact
        run = Run(model, inputs(batch, seq), shapes(batch, seq))
        assert run()[0] == "OK"
        for out, backing in zip(run.outputs, run.backing):
            assert (backing[out.size:] == 7).all()


@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    with loader.load(dm.build(tmp_path_factory.mktemp("failing"), fail=True)) as m:
        yield m


@pytest.mark.parametrize("batch", [3, 4])  # padded, exact
def test_a_failed_run_zeroes_every_output_at_its_actual_shape(failing, batch):
    run = Run(failing, inputs(batch, 2), shapes(batch, 2))
    code, message = run()
    assert code == "INTERNAL" and message == "call 3 (dyn_fail) failed: the kernel refuses: code 7"
    for out, backing in zip(run.outputs, run.backing):
        assert (out == 0).all() and (backing[out.size:] == 7).all()


# ---- a static file is what it was -------------------------------------------------------------------------


def test_a_static_file_has_no_dims_and_one_plan_the_entry(tmp_path):
    with loader.load(build_model(tmp_path)) as m:
        h = m._handle
        assert m.dims == [] and m.plans == [loader.Plan("main", {})]
        assert str(m.inputs[0]) == "x: float32[1, 4]" and m.inputs[0].dims == (None, None)
        assert m.inputs[0].min_shape == (1, 4)
        assert lib.dpk_model_num_dims(h) == 0 and lib.dpk_model_num_plans(h) == 1
        graph, sizes = ffi.new("const char **"), ffi.new("const int64_t **")
        assert lib.dpk_model_plan_info(h, 0, graph, sizes) == 0 and ffi.string(graph[0]) == b"main"
        assert sizes[0] != NULL
        x = np.ones((1, 4), np.float32)
        assert m.select_plan(x=x) == m.plans[0]
        ref = TensorRef(x)
        shape = ffi.new("int64_t[]", 2)
        assert lib.dpk_model_output_shape(h, ffi.new("DLTensor *[]", [ref.struct]), 1, 0, shape) == 0
        assert list(shape) == [1, 3]
        with pytest.raises(loader.InvalidArgumentError) as err:
            m.select_plan(x=np.ones((2, 4), np.float32))
        assert str(err.value) == "input 'x' has shape [2, 4] but the model expects float32[1, 4]"
        with pytest.raises(loader.InvalidArgumentError) as err:
            m.run(x=np.ones((2, 4), np.float32))
        assert str(err.value) == "input 'x' is float32[2, 4] but the model expects float32[1, 4]"


# ---- files the packager builds ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built_mlp(tmp_path_factory):
    """dense -> relu -> dense over batch=1..16, plans at 1, 4 and 16 (cblas where it takes the dense)."""
    from packager.build import build
    from test_dynamic_build import MLP, graph_spec
    tmp = tmp_path_factory.mktemp("built_mlp")
    out = tmp / "mlp.so"
    build(graph_spec(tmp, MLP), out, quiet=True, base_dir=tmp, buckets=["1,4,16"])
    return str(out)


def mlp_reference(x):
    from test_dynamic_build import W
    return np.maximum(x.astype(np.float64) @ W["w1"].T + W["b1"], 0) @ W["w2"].T


def test_a_built_file_runs_every_batch_and_pads_bit_for_bit(built_mlp):
    with loader.load(built_mlp) as m:
        assert [str(p) for p in m.plans] == ["main_b1 (batch=1)", "main_b4 (batch=4)", "main (batch=16)"]
        assert str(m.inputs[0]) == "x: float32[1..16, 16]" and str(m.outputs[0]) == "y: float32[1..16, 5]"
        rng = np.random.default_rng(3)
        for batch in range(1, 17):
            x = rng.standard_normal((batch, 16)).astype(np.float32)
            y = m.run(x=x)["y"]
            np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-4, atol=1e-4)
            size = m.select_plan(x=x).sizes["batch"]
            assert size == min(s for s in (1, 4, 16) if s >= batch)
            padded = np.zeros((size, 16), np.float32)
            padded[:batch] = x
            np.testing.assert_array_equal(y, m.run(x=padded)["y"][:batch])  # the exact run of that plan


def test_a_built_file_with_an_exact_sequence(tmp_path):
    """Attention: the batch is padded, the sequence exact (the packager says why); sizes without a plan
    are refused with that reason."""
    from packager.build import build
    from test_dynamic_build import graph_spec
    nodes = [{"op": "transpose", "inputs": ["x"], "output": "kt", "attrs": {"perm": [0, 2, 1]}},
             {"op": "matmul", "inputs": ["x", "kt"], "output": "s"},
             {"op": "softmax", "inputs": ["s"], "output": "p", "attrs": {"axis": -1}},
             {"op": "matmul", "inputs": ["p", "x"], "output": "y"}]
    out = tmp_path / "attn.so"
    build(graph_spec(tmp_path, nodes, shape=("batch=1..4", "seq=2..8", 16), backends=("host",)), out, quiet=True,
          base_dir=tmp_path, buckets=["batch=1,4", "seq=2,8"])
    with loader.load(out) as m:
        assert m.dims[0] == loader.Dim("batch", 1, 4, None) and m.dims[1].exact
        x = np.random.default_rng(0).standard_normal((3, 8, 16)).astype(np.float32)
        assert m.select_plan(x=x).sizes == {"batch": 4, "seq": 8}
        s = x.astype(np.float64) @ x.transpose(0, 2, 1)
        p = np.exp(s - s.max(-1, keepdims=True))
        np.testing.assert_allclose(m.run(x=x)["y"], (p / p.sum(-1, keepdims=True)) @ x, rtol=1e-4, atol=1e-4)
        with pytest.raises(loader.InvalidArgumentError) as err:
            m.run(x=x[:, :5])
        assert str(err.value) == (f"'{out}' has no plan for seq = 5 (plans: seq 2, 8) and does not pad seq: "
                                  f"{m.dims[1].exact}")


MEMORY_CHILD = r"""
import sys, threading, numpy as np, loader

def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

model = loader.load(sys.argv[1], num_threads=1)
x = np.ones((int(sys.argv[2]), 16), np.float32)
model.run(x=x)  # weights touched, one arena made
before = rss_kib()
barrier = threading.Barrier(8)

def serve():
    barrier.wait()
    for _ in range(30):
        model.run(x=x)

threads = [threading.Thread(target=serve) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(rss_kib() - before)
"""


def test_concurrent_small_runs_use_the_small_plans_arena(tmp_path):
    """8 concurrent runs at batch 1 of a file whose range goes to 64 grow the process by about 8 batch-1
    arenas (64 KiB each here), not 8 batch-64 ones (4 MiB each): each run takes its context from its own
    plan's pool. The batch-64 control shows the test can tell them apart."""
    import subprocess
    import sys

    from packager.build import build
    from test_dynamic_build import graph_spec
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "big.npz", w1=rng.standard_normal((8192, 16)).astype(np.float32),
             w2=rng.standard_normal((16, 8192)).astype(np.float32))
    spec = graph_spec(tmp_path, [{"op": "dense", "inputs": ["x", "w1"], "output": "h"},
                                 {"op": "relu", "inputs": ["h"], "output": "r"},
                                 {"op": "dense", "inputs": ["r", "w2"], "output": "y"}],
                      shape=("batch=1..64", 16), backends=("host",))
    spec["model"]["graph"]["weights"] = str(tmp_path / "big.npz")
    report = build(spec, tmp_path / "m.so", quiet=True, buckets=["1,64"])
    assert report.arena_bytes >= 4 << 20  # the batch-64 plan's

    def growth_kib(batch):
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(tmp_path / "m.so"), str(batch)],
                             capture_output=True, text=True, check=True)
        return int(out.stdout)

    assert growth_kib(1) < 4 * 1024
    assert growth_kib(64) > 12 * 1024


def test_a_chunked_or_padded_size_gives_the_same_bits_on_any_thread_count(built_mlp):
    x = np.random.default_rng(9).standard_normal((11, 16)).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        with loader.load(built_mlp, num_threads=threads) as m:
            results.append(m.run(x=x)["y"])
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


@pytest.mark.parametrize("name, sample", [("resnet", (3, 32, 32)), ("lenet", (1, 28, 28))])
def test_an_onnx_model_with_a_symbolic_batch_matches_onnxruntime_at_every_batch(tmp_path, name, sample):
    """tests/models' exports with a `batch` dim_param, built once for 1..8 with the default backends: every
    batch (exact, padded or in chunks) against onnxruntime on the same file."""
    import onnxruntime as ort

    from packager.build import build
    from test_onnx import MODELS
    src = f"{MODELS}/{name}.onnx"
    build(src, tmp_path / "m.so", quiet=True, shapes={"x": ["1..8", *sample]}, buckets=["1,4,8"])
    session = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    with loader.load(tmp_path / "m.so") as m:
        assert [p.sizes["batch"] for p in m.plans] == [1, 4, 8]
        for batch in range(1, 9):
            x = rng.standard_normal((batch, *sample)).astype(np.float32)
            got = next(iter(m.run(x=x).values()))
            want = session.run(None, {"x": x})[0]
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))
