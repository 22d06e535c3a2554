"""Graph checks (ir_check.infer) and the partitioner (partition.py)."""

import numpy as np
import pytest

from packager import partition
from packager.backends.base import Backend
from packager.ir import BuildError, Graph, Node, TensorType
from packager.ir_check import infer

F32 = "float32"


def graph(nodes, outputs, inputs=None, weights=None):
    g = Graph(name="g", inputs=inputs or {"x": TensorType((2, 4), F32)},
              weights=weights if weights is not None else {
                  "w": np.zeros((4, 4), np.float32), "b": np.zeros(4, np.float32)},
              nodes=[Node(op=n[0], inputs=list(n[1]), output=n[2], attrs=dict(n[3]) if len(n) > 3 else {},
                          name=f"{n[0]}_{i}") for i, n in enumerate(nodes)],
              outputs=outputs)
    return g


# ---------------------------------------------------------------- ir_check

def test_infer_types_every_tensor():
    g = infer(graph([("dense", ["x", "w", "b"], "h"), ("relu", ["h"], "y")], ["y"]))
    assert g.types["x"] == TensorType((2, 4), F32)
    assert g.types["w"] == TensorType((4, 4), F32)  # from the array
    assert g.types["h"] == g.types["y"] == TensorType((2, 4), F32)


def infer_error(*args, **kw) -> str:
    with pytest.raises(BuildError) as info:
        infer(graph(*args, **kw))
    return str(info.value)


def test_undefined_input_names_the_node():
    m = infer_error([("dense", ["x", "w", "b"], "h"), ("dense", ["h9", "w", "b"], "y")], ["y"])
    assert m.startswith("node 'dense_1' (op dense) reads 'h9', which is not a graph input, a weight "
                        "or an earlier node's output"), m


def test_missing_weight_is_named_with_the_ones_there_are():
    m = infer_error([("dense", ["x", "fc9.weight", "b"], "y")], ["y"])
    assert "node 'dense_0' (op dense) reads 'fc9.weight'" in m
    assert "missing from the weights (they are: b, w)" in m


def test_use_before_definition_says_who_writes_it():
    m = infer_error([("relu", ["h"], "y"), ("relu", ["x"], "h")], ["y"])
    assert "node 'relu_1' (op relu) writes it later" in m


def test_tensor_written_twice_or_shadowing():
    assert "already writes" in infer_error([("relu", ["x"], "h"), ("relu", ["x"], "h")], ["h"])
    assert "writes 'x', which is a graph input" in infer_error([("relu", ["x"], "x")], ["x"])
    assert "writes 'w', which is a weight" in infer_error([("relu", ["x"], "w")], ["w"])


def test_missing_output():
    m = infer_error([("relu", ["x"], "h")], ["probs"])
    assert "graph output 'probs' is not a graph input, a weight or a node's output" in m


def test_unknown_op_lists_the_known_ones():
    m = infer_error([("dense2", ["x", "w", "b"], "y")], ["y"])
    assert m.startswith("node 'dense2_0' (op dense2): unknown op 'dense2'") and "did you mean 'dense'" in m


def test_shape_mismatch_names_node_op_and_shapes():
    m = infer_error([("dense", ["x", "w", "b"], "y")], ["y"], weights={
        "w": np.zeros((3, 5), np.float32), "b": np.zeros(3, np.float32)})
    assert "dense_0" in m and "dense" in m and "[2, 4]" in m and "[3, 5]" in m, m


def test_attributes_are_normalized():
    g = infer(graph([("softmax", ["x"], "y")], ["y"]))
    assert "axis" in g.nodes[0].attrs


# ---------------------------------------------------------------- partition

class Host(Backend):
    name = "host"

    def supports(self, node, graph):
        return None


class Json(Backend):
    name = "json"
    ops = {"dense", "relu", "softmax"}

    def supports(self, node, graph):
        return None if node.op in self.ops else f"op {node.op} is not in the json kernel set"


class Picky(Backend):
    name = "picky"

    def supports(self, node, graph):
        return f"picky takes nothing ({node.op})"


@pytest.fixture(autouse=True)
def stub_backends(monkeypatch):
    monkeypatch.setattr(partition, "BACKENDS", {"host": Host, "json": Json, "picky": Picky})


def chain():
    # dense -> relu -> add -> dense -> softmax ; add is not json
    return infer(graph([("dense", ["x", "w", "b"], "h"), ("relu", ["h"], "a"), ("add", ["a", "x"], "s"),
                        ("dense", ["s", "w", "b"], "l"), ("relu", ["l"], "r"), ("softmax", ["r"], "y")], ["y"]))


def test_first_backend_that_supports_wins_and_reasons_are_kept():
    p = partition.partition(chain(), ["json", "host"])
    assert [a.backend for a in p.assignments] == ["json", "json", "host", "json", "json", "json"]
    lines = p.explain()
    assert lines[0] == "dense_0 -> json (first in [json, host] that supports dense)"
    assert lines[2] == "add_2 -> host (json: op add is not in the json kernel set)"


def test_payload_backends_group_consecutive_runs_host_one_per_node():
    g = chain()
    p = partition.partition(g, ["json", "host"])
    names = [(b.name, r.name, [n.name for n in r.nodes]) for b, r in p.regions]
    assert names == [("json", "ext0", ["dense_0", "relu_1"]), ("host", "host_add_2", ["add_2"]),
                     ("json", "ext1", ["dense_3", "relu_4", "softmax_5"])]
    ext0, add, ext1 = (r for _, r in p.regions)
    assert (ext0.inputs, ext0.outputs, ext0.weights, ext0.activations) == (["x", "w", "b"], ["a"], ["w", "b"], ["x"])
    assert (add.inputs, add.outputs, add.weights) == (["a", "x"], ["s"], [])
    assert (ext1.inputs, ext1.outputs, ext1.weights) == (["s", "w", "b"], ["y"], ["w", "b"])

    hosted = partition.partition(g, ["host"])
    assert [r.name for _, r in hosted.regions] == ["host_dense_0", "host_relu_1", "host_add_2", "host_dense_3",
                                                   "host_relu_4", "host_softmax_5"]
    assert all(len(r.nodes) == 1 for _, r in hosted.regions)


def test_region_outputs_include_graph_outputs_and_later_uses():
    g = infer(graph([("relu", ["x"], "a"), ("relu", ["a"], "m"), ("relu", ["m"], "c"), ("add", ["a", "c"], "y")],
                    ["m", "y"]))
    p = partition.partition(g, ["json", "host"])
    (_, ext0), (_, add) = p.regions
    assert ext0.nodes[-1].name == "relu_2"
    assert ext0.outputs == ["a", "m", "c"]  # a: read later, m: a graph output, c: read later
    assert add.inputs == ["a", "c"]


def test_unused_result_still_gets_an_output():
    g = infer(graph([("relu", ["x"], "dead"), ("relu", ["x"], "y")], ["y"]))
    p = partition.partition(g, ["json"])
    (_, ext0), = p.regions
    assert ext0.outputs == ["dead", "y"]


def test_node_override_and_its_refusal():
    g = chain()
    g.nodes[1].backend = "host"
    p = partition.partition(g, ["json", "host"])
    assert p.assignments[1].explain() == "relu_1 -> host (backend: host set on the node)"
    assert [r.name for _, r in p.regions][:3] == ["ext0", "host_relu_1", "host_add_2"]

    g.nodes[2].backend = "json"
    with pytest.raises(BuildError, match=r"node 'add_2' \(op add\) asks for backend 'json', which does not take "
                                         r"it: op add is not in the json kernel set"):
        partition.partition(g, ["json", "host"])


def test_no_backend_takes_the_node_lists_every_reason():
    with pytest.raises(BuildError) as info:
        partition.partition(chain(), ["json", "picky"])
    m = str(info.value)
    assert m.startswith("node 'add_2' (op add)") and "no backend in [json, picky] takes it" in m
    assert "json: op add is not in the json kernel set" in m and "picky: picky takes nothing (add)" in m
    assert "a: float32[2, 4]" in m  # shapes named


def test_unknown_or_unavailable_backend(monkeypatch):
    with pytest.raises(BuildError, match=r"backends: unknown backend 'gpu' \(known: host, json, picky\)"):
        partition.partition(chain(), ["gpu", "host"])
    g = chain()
    g.nodes[0].backend = "tpu"
    with pytest.raises(BuildError, match=r"node 'dense_0' \(op dense\): backend: unknown backend 'tpu'"):
        partition.partition(g, ["host"])
    monkeypatch.setitem(partition.BACKENDS, "ghost", "packager.backends.no_such_module:Ghost")
    with pytest.raises(BuildError, match="backend 'ghost' is not available"):
        partition.partition(chain(), ["ghost"])


def test_host_region_names_are_c_identifiers_and_unique():
    g = graph([("relu", ["x"], "a"), ("relu", ["a"], "y")], ["y"])
    g.nodes[0].name, g.nodes[1].name = "fc-1.act", "fc_1_act"
    infer(g)
    names = [r.name for _, r in partition.partition(g, ["host"]).regions]
    assert names == ["host_fc_1_act", "host_fc_1_act_1"]
