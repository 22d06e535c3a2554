"""Dynamic dims at build time (packager/dynamic.py, packager/padding.py): ranges declared on the CLI,
in a YAML graph and from ONNX dim_params; the plans a file carries; which dims may be padded and why
not; the manifest's `dims`, `plans` and per-tensor `dims`; every bad input named. Running such files
(plan choice, padding, the C API and the loader) is tests/test_dynamic_run.py."""

import numpy as np
import pytest
from onnx import helper, numpy_helper

from packager import dynamic
from packager.build import build
from packager.cli import main
from packager.dynamic import DimRange
from packager.frontends.onnx import parse_shape_option
from packager.ir import BuildError
from packager.spec import load
from test_onnx import MODELS, make_model, save

RNG = np.random.default_rng(0)
W = {"w1": RNG.standard_normal((40, 16)).astype(np.float32), "b1": RNG.standard_normal(40).astype(np.float32),
     "w2": RNG.standard_normal((5, 40)).astype(np.float32), "g": RNG.standard_normal(16).astype(np.float32)}


def graph_spec(tmp_path, nodes, shape=("batch=1..16", 16), outputs=("y",), backends=("cblas", "host"),
               inputs=None):
    np.savez(tmp_path / "w.npz", **W)
    return {"name": "dyn", "backends": list(backends),
            "model": {"graph": {"inputs": inputs or {"x": {"shape": list(shape)}}, "weights": str(tmp_path / "w.npz"),
                                "nodes": nodes, "outputs": list(outputs)}}}


MLP = [{"op": "dense", "inputs": ["x", "w1", "b1"], "output": "h"},
       {"op": "relu", "inputs": ["h"], "output": "r"},
       {"op": "dense", "inputs": ["r", "w2"], "output": "y"}]


def manifest_of(tmp_path, spec, **kw):
    return build(spec, tmp_path / "m.so", quiet=True, base_dir=tmp_path, **kw).manifest


# ---------------------------------------------------------------- declaring ranges

@pytest.mark.parametrize("text, name, dims", [
    ("x=1..64,784", "x", (DimRange(1, 64), 784)),
    ("ids=batch=1..8,seq=16..512", "ids", (DimRange(1, 8, "batch"), DimRange(16, 512, "seq"))),
    ("x=1,3,32,32", "x", (1, 3, 32, 32)),
    ("x=1x3x32x32", "x", (1, 3, 32, 32)),
])
def test_shape_option_takes_ranges(text, name, dims):
    assert parse_shape_option(text) == (name, dims)


@pytest.mark.parametrize("text", ["x=0..4,3", "x=5..2", "x=a..b", "x=1..", "=1..4", "x=", "x=1.5"])
def test_bad_shape_options_are_refused(text):
    with pytest.raises(BuildError, match="--shape .*positive integers or ranges LO..HI"):
        parse_shape_option(text)


def test_default_buckets_are_the_ends_and_the_powers_of_two_between():
    assert dynamic.default_buckets(1, 64) == [1, 2, 4, 8, 16, 32, 64]
    assert dynamic.default_buckets(3, 20) == [3, 4, 8, 16, 20]
    assert dynamic.default_buckets(5, 5) == [5]


def test_plans_of_two_dims_are_every_pair_smallest_first():
    dims = {"b": dynamic.Dim("b", 1, 4), "s": dynamic.Dim("s", 8, 16)}
    plans = dynamic.plan_sizes(dims, {"s": [8, 16], None: [1, 4]})
    assert plans == [{"b": 1, "s": 8}, {"b": 1, "s": 16}, {"b": 4, "s": 8}, {"b": 4, "s": 16}]


@pytest.mark.parametrize("buckets, says", [
    ({None: [1, 8]}, "must include its max, 16"),
    ({None: [0, 16]}, "size 0 is outside dim 'batch''s range 1..16"),
    ({None: [1, 32]}, "size 32 is outside"),
    ({"seq": [16]}, "names dim 'seq', which the model does not have"),
])
def test_bad_buckets_are_refused(buckets, says):
    with pytest.raises(BuildError, match=says):
        dynamic.plan_sizes({"batch": dynamic.Dim("batch", 1, 16)}, buckets)


def test_too_many_plans_are_refused():
    dims = {"b": dynamic.Dim("b", 1, 64), "s": dynamic.Dim("s", 1, 512)}
    with pytest.raises(BuildError, match="70 plans .* more than 32: choose fewer with --buckets"):
        dynamic.plan_sizes(dims)


@pytest.mark.parametrize("text", ["1,,8", "b=", "x", "0,4"])
def test_bad_buckets_texts_are_refused(text):
    with pytest.raises(BuildError, match="--buckets"):
        dynamic.parse_buckets(text)


def test_buckets_without_a_dynamic_dim_are_refused(tmp_path):
    with pytest.raises(BuildError, match="--buckets needs a dynamic dim"):
        manifest_of(tmp_path, graph_spec(tmp_path, MLP, shape=(4, 16)), buckets=["1,4"])


def test_a_yaml_range_that_is_not_one_is_named(tmp_path):
    with pytest.raises(BuildError, match=r"inputs.x.shape\[0\]: expected a positive integer or a range"):
        manifest_of(tmp_path, graph_spec(tmp_path, MLP, shape=("1..0", 16)))


def test_one_dim_has_one_range(tmp_path):
    spec = graph_spec(tmp_path, MLP, inputs={"x": {"shape": ["batch=1..16", 16]}, "z": {"shape": ["batch=1..8", 16]}})
    with pytest.raises(BuildError, match="input 'z' dimension 0 is dim 'batch' with range 1..8, but input 'x' "
                                         "dimension 0 gave it 1..16"):
        manifest_of(tmp_path, spec)


# ---------------------------------------------------------------- the file's plans and manifest

def test_a_dynamic_mlp_carries_a_plan_per_bucket_and_its_weights_once(tmp_path):
    m = manifest_of(tmp_path, graph_spec(tmp_path, MLP), buckets=["1,4,16"])
    assert m["dims"] == [{"name": "batch", "min": 1, "max": 16}]
    assert [{k: p[k] for k in ("graph", "dims")} for p in m["plans"]] == [
        {"graph": "main_b1", "dims": {"batch": 1}}, {"graph": "main_b4", "dims": {"batch": 4}},
        {"graph": "main", "dims": {"batch": 16}}]
    costs = [p["cost"] for p in m["plans"]]
    assert costs == sorted(costs) and costs[0] < costs[-1]  # estimates: a bigger batch costs more
    assert m["entry"] == "main"
    assert m["inputs"] == [{"name": "x", "dtype": "float32", "shape": [16, 16], "dims": ["batch", None]}]
    assert m["outputs"] == [{"name": "y", "dtype": "float32", "shape": [16, 5], "dims": ["batch", None]}]
    modules = {mod["name"]: mod for mod in m["modules"]}
    assert sorted(modules["weights"]["tensors"]) == ["b1", "w1", "w2"]  # once, whatever the plans
    assert {"main_b1", "main_b4", "main"} <= set(modules)
    functions = [f for mod in m["modules"] if mod["kind"] == "dso" for f in mod["functions"]]
    assert any(f.startswith("b1_") for f in functions) and any(f.startswith("b4_") for f in functions)
    static = build(graph_spec(tmp_path, MLP, shape=(16, 16)), tmp_path / "s.so", quiet=True).manifest
    assert "dims" not in static and "plans" not in static and "dims" not in static["inputs"][0]
    stored = {name: t["shape"] for name, t in modules["weights"]["tensors"].items()}
    static_stored = {name: t["shape"] for mod in static["modules"] if mod["kind"] == "params"
                     for name, t in mod["tensors"].items()}
    assert stored == static_stored  # the largest plan's layouts (w1 in panels), kept by the batch-1 plan


def test_default_buckets_and_the_build_log(tmp_path, capsys):
    np.savez(tmp_path / "w.npz", **W)
    spec = graph_spec(tmp_path, MLP, shape=("1..8", 16))
    import yaml
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
    assert main(["build", str(tmp_path / "m.yaml"), "-o", str(tmp_path / "m.so")]) == 0
    out = capsys.readouterr().out
    assert "4 plans for x.0 1..8 (1, 2, 4, 8)" in out and "x.0 padded" in out and ", 4 plans" in out
    assert main(["inspect", str(tmp_path / "m.so")]) == 0
    out = capsys.readouterr().out
    assert "# dim x.0: 1..8, sizes between plans run padded" in out
    assert "# plans: main_b1 (x.0=1), main_b2 (x.0=2), main_b4 (x.0=4), main (x.0=8)" in out


# ---------------------------------------------------------------- padding: which dims, and why not

def dims_of(tmp_path, nodes, shape=("batch=1..16", 16), outputs=("y",)):
    m = manifest_of(tmp_path, graph_spec(tmp_path, nodes, shape=shape, outputs=outputs, backends=("host",)),
                    buckets=["1,16"])
    return {d["name"]: d.get("exact") for d in m["dims"]}, m


@pytest.mark.parametrize("node, exact", [
    ({"op": "softmax", "inputs": ["x"], "output": "y", "attrs": {"axis": 1}}, None),
    ({"op": "softmax", "inputs": ["x"], "output": "y", "attrs": {"axis": 0}},
     "node 'softmax_0' (op softmax) works along it (axis 0)"),
    ({"op": "reduce_sum", "inputs": ["x"], "output": "y", "attrs": {"axes": [0]}},
     "node 'reduce_sum_0' (op reduce_sum) reduces over it"),
    ({"op": "reduce_sum", "inputs": ["x"], "output": "y", "attrs": {"axes": [1]}}, None),
    ({"op": "transpose", "inputs": ["x"], "output": "y"}, None),
    ({"op": "layer_norm", "inputs": ["x", "g"], "output": "y", "attrs": {"axis": -1}}, None),
    ({"op": "cumsum", "inputs": ["x"], "output": "y", "attrs": {"axis": 0}}, "works along it"),
    ({"op": "reshape", "inputs": ["x"], "output": "y", "attrs": {"shape": [-1]}}, "merges or splits it"),
    ({"op": "flatten", "inputs": ["x"], "output": "y", "attrs": {"axis": 1}}, None),
])
def test_which_ops_keep_a_dims_rows_apart(tmp_path, node, exact):
    if node["op"] == "reshape":  # [b, 16] -> [16 b]: its size is no dim's, so the build refuses the output
        with pytest.raises(BuildError, match=r"output 'y' dimension 0 is 16, 256 in the plans \(b1, b16\): "
                                             "neither fixed nor one dynamic dim's size"):
            dims_of(tmp_path, [node])
        return
    dims, m = dims_of(tmp_path, [node])
    if exact is None:
        assert dims == {"batch": None}
    else:
        assert exact in dims["batch"]
    if node["op"] == "transpose":
        assert m["outputs"][0]["dims"] == [None, "batch"]


def test_a_matmul_that_sums_over_the_dim_makes_it_exact(tmp_path):
    nodes = [{"op": "transpose", "inputs": ["x"], "output": "xt"},
             {"op": "matmul", "inputs": ["xt", "x"], "output": "y"}]  # [16, b] @ [b, 16]: sums over b
    dims, m = dims_of(tmp_path, nodes)
    assert "node 'matmul_1' (op matmul) sums over it" in dims["batch"]
    assert m["outputs"][0]["dims"] == [None, None]


def test_attention_over_a_sequence_pads_the_batch_but_not_the_sequence(tmp_path):
    """scores = q k^T over the sequence, softmax over the keys: the batch is padded, the sequence exact."""
    nodes = [{"op": "transpose", "inputs": ["x"], "output": "kt", "attrs": {"perm": [0, 2, 1]}},
             {"op": "matmul", "inputs": ["x", "kt"], "output": "s"},
             {"op": "softmax", "inputs": ["s"], "output": "p", "attrs": {"axis": -1}},
             {"op": "matmul", "inputs": ["p", "x"], "output": "y"}]
    m = manifest_of(tmp_path, graph_spec(tmp_path, nodes, shape=("batch=1..4", "seq=2..8", 16), backends=("host",)),
                    buckets=["batch=1,4", "seq=2,8"])
    dims = {d["name"]: d.get("exact") for d in m["dims"]}
    assert dims["batch"] is None
    assert dims["seq"] == ("node 'matmul_1' (op matmul) pairs each of its positions with every other "
                           "(axes [1, 2] of its output)")
    assert len(m["plans"]) == 4 and m["outputs"][0]["dims"] == ["batch", "seq", None]


# ---------------------------------------------------------------- ONNX

def test_an_onnx_range_takes_the_dim_param_as_its_name(tmp_path):
    m = build(f"{MODELS}/lenet.onnx", tmp_path / "m.so", quiet=True, shapes={"x": ["1..4", 1, 28, 28]},
              buckets=["1,4"]).manifest
    assert m["dims"] == [{"name": "batch", "min": 1, "max": 4}]
    assert m["inputs"][0]["dims"] == ["batch", None, None, None]


def test_a_range_on_a_fixed_onnx_dim_is_refused(tmp_path):
    with pytest.raises(BuildError, match="input 'x' dimension 1 is 1 in the model, the shape given says 1..2"):
        load(f"{MODELS}/lenet.onnx", shapes={"x": [DimRange(1, 4), DimRange(1, 2), 28, 28]})


def test_inputs_sharing_a_dim_param_share_its_range(tmp_path):
    model = make_model([helper.make_node("Add", ["a", "b"], ["y"])],
                       {"a": ("float32", [None, 4]), "b": ("float32", [None, 4])}, {}, {"y": "float32"}, 17)
    path = save(model, tmp_path / "add.onnx")
    with pytest.raises(BuildError, match="input 'b' dimension 0 is dim 'N' with range 1..4, but input 'a'"):
        load(path, shapes={"a": [DimRange(1, 8), 4], "b": [DimRange(1, 4), 4]})
    graph = load(path, shapes={"a": [DimRange(1, 8), 4], "b": [DimRange(1, 8), 4]}, sizes={"N": 2}).graph
    assert list(graph.dims) == ["N"] and graph.dims["N"].axes == [("a", 0), ("b", 0)]
    assert graph.inputs["a"].shape == (2, 4) == graph.inputs["b"].shape
    named = load(path, shapes={"a": [DimRange(1, 8), 4], "b": [DimRange(1, 8, "batch"), 4]}).graph  # one name wins
    assert list(named.dims) == ["batch"] and named.dims["batch"].axes == [("a", 0), ("b", 0)]


def test_a_constant_folded_from_the_batch_is_kept_per_plan_and_stops_padding(tmp_path):
    """ConstantOfShape(Shape(x)) folds to a [b, 4] constant, different in each plan: each plan keeps its own,
    and the batch is exact (a padded run would see the plan's size in it)."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ConstantOfShape", ["s"], ["c"],
                              value=numpy_helper.from_array(np.array([0.5], np.float32))),
             helper.make_node("Add", ["x", "c"], ["y"])]
    path = save(make_model(nodes, {"x": ("float32", [None, 4])}, {}, {"y": "float32"}, 17), tmp_path / "c.onnx")
    m = build(path, tmp_path / "m.so", quiet=True, shapes={"x": ["1..4", 4]}, buckets=["1,4"]).manifest
    (dim,) = m["dims"]
    assert dim["exact"] == "constant 'c' is computed from its size (it differs between plans b1 and b4)"
    tensors = [t for mod in m["modules"] if mod["kind"] == "params" for t in mod["tensors"]]
    assert len(tensors) == 2 and any("@b1" in t for t in tensors)


def test_a_manifests_onnx_shapes_take_ranges(tmp_path):
    spec = {"name": "lenet", "model": {"onnx": f"{MODELS}/lenet.onnx", "shapes": {"x": ["1..2", 1, 28, 28]}}}
    m = manifest_of(tmp_path, spec)
    assert m["dims"] == [{"name": "batch", "min": 1, "max": 2}] and len(m["plans"]) == 2
    with pytest.raises(BuildError, match=r"model.shapes.x\[0\]: expected a positive integer or a range"):
        manifest_of(tmp_path, {"name": "l",
                               "model": {"onnx": f"{MODELS}/lenet.onnx", "shapes": {"x": ["2..1", 1, 28, 28]}}})


def test_a_scalar_folded_from_the_batch_stops_padding_and_an_output_size_is_refused(tmp_path):
    """x / batch_size: a padded run would divide by the plan's size; Shape(x) as an output has no plan's value."""
    size = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
            helper.make_node("Cast", ["n"], ["nf"], to=1)]
    inits = {"zero": np.array(0, np.int64)}
    mean = make_model([*size, helper.make_node("Div", ["x", "nf"], ["y"])], {"x": ("float32", [None, 4])}, inits,
                      {"y": "float32"}, 17)
    m = build(save(mean, tmp_path / "m.onnx"), tmp_path / "m.so", quiet=True, shapes={"x": ["1..4", 4]},
              buckets=["1,4"]).manifest
    assert m["dims"][0]["exact"].startswith("constant '") and "computed from its size" in m["dims"][0]["exact"]
    shape_out = make_model([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Relu", ["x"], ["y"])],
                           {"x": ("float32", [None, 4])}, {}, {"y": "float32", "s": "int64"}, 17)
    with pytest.raises(BuildError, match="output 's' is a constant computed from the inputs' sizes"):
        build(save(shape_out, tmp_path / "s.onnx"), tmp_path / "s.so", quiet=True, shapes={"x": ["1..4", 4]},
              buckets=["1,4"])


# ---------------------------------------------------------------- found by review: each built padded, gave wrong values

def test_a_dim_on_two_axes_of_one_input_is_exact(tmp_path):
    """a [n, n] (a mask, an adjacency): a mean over axis 0 must not be taken over padded rows."""
    node = {"op": "reduce_mean", "inputs": ["x"], "output": "y", "attrs": {"axes": [0], "keepdims": 1}}
    m = manifest_of(tmp_path, graph_spec(tmp_path, [node], shape=("n=1..8", "n=1..8"), backends=("host",)),
                    buckets=["1,4,8"])
    assert m["dims"][0]["exact"] == "input 'x' has it on two axes (0 and 1)"


def test_a_matmul_with_a_vector_keeps_the_rows_on_their_axis(tmp_path):
    """[N, 4] @ [4] -> [N]: a softmax over that axis mixes the rows (it was taken for axis -1 and passed)."""
    inits = {"v": RNG.standard_normal(4).astype(np.float32), "ax": np.array([1], np.int64)}
    for softmax_axis, exact in ((0, "works along it (axis 0)"), (None, None)):
        nodes = [helper.make_node("MatMul", ["x", "v"], ["s"]),
                 helper.make_node("Softmax", ["s"], ["p"], axis=0) if softmax_axis == 0
                 else helper.make_node("Relu", ["s"], ["p"]),
                 helper.make_node("Unsqueeze", ["p", "ax"], ["y"])]
        model = make_model(nodes, {"x": ("float32", [None, 4])}, inits, {"y": "float32"}, 13)
        m = build(save(model, tmp_path / "mv.onnx"), tmp_path / "mv.so", quiet=True, shapes={"x": ["1..8", 4]},
                  buckets=["1,4,8"]).manifest
        assert (exact is None and "exact" not in m["dims"][0]) or exact in m["dims"][0]["exact"]
        assert m["outputs"][0]["dims"] == ["N", None]
    nodes = [{"op": "matmul", "inputs": ["x", "v"], "output": "s"},  # [n, 3, 4] @ [4]: n stays axis 0
             {"op": "transpose", "inputs": ["s"], "output": "y", "attrs": {"perm": [1, 0]}}]
    np.savez(tmp_path / "v.npz", v=RNG.standard_normal(4).astype(np.float32))
    spec = graph_spec(tmp_path, nodes, shape=("n=1..8", 3, 4), backends=("host",))
    spec["model"]["graph"]["weights"] = str(tmp_path / "v.npz")
    m = manifest_of(tmp_path, spec, buckets=["1,4,8"])
    assert "exact" not in m["dims"][0] and m["outputs"][0]["dims"] == [None, "n"]


def test_a_resize_that_scales_the_batch_axis_makes_it_exact(tmp_path):
    """Resize is N-D: scales [1.1, 1, 1, 1] keep floor(1.1 N) = N rows but read the padded ones (cubic taps)."""
    def resize_model(scale0):
        model = make_model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic")],
                           {"x": ("float32", [None, 2, 3, 3])}, {"scales": np.array([scale0, 1, 1, 1], np.float32)},
                           {"y": "float32"}, 13)
        return save(model, tmp_path / f"rs{scale0}.onnx")
    m = build(resize_model(1.1), tmp_path / "rs.so", quiet=True, shapes={"x": ["1..8", 2, 3, 3]},
              buckets=["1,4,8"]).manifest
    assert "resamples along it" in m["dims"][0]["exact"]
    m = build(resize_model(1.0), tmp_path / "r1.so", quiet=True, shapes={"x": ["1..8", 2, 3, 3]},
              buckets=["1,4,8"]).manifest
    assert "exact" not in m["dims"][0]
