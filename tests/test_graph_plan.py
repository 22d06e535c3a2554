"""The graph module's payload alone (packager/graph_plan.py): tensor table, calls, arena."""

import json

import numpy as np

from packager import graph_plan
from packager.ir import Graph, Node, TensorType
from packager.ir_check import infer
from packager.lower import output_plan
from packager.plan import Call

F32 = "float32"


def chain(outputs=("y",)):
    """x -> relu a -> relu b -> add(b, w) y, each [2, 8] float32 (64 bytes)."""
    return infer(Graph(name="g", inputs={"x": TensorType((2, 8), F32)}, weights={"w": np.zeros((2, 8), np.float32)},
                       nodes=[Node("relu", ["x"], "a", name="r1"), Node("relu", ["a"], "b", name="r2"),
                              Node("add", ["b", "w"], "y", name="add")], outputs=list(outputs)))


def test_tensor_table_calls_and_arena():
    g = chain()
    calls = [Call("f1", ["x"], ["a"]), Call("f2", ["a"], ["b"], workspace_bytes=100), Call("f3", ["b", "w"], ["y"])]
    p = graph_plan.plan(g, calls, output_plan(g))
    doc = p.payload
    assert doc["version"] == 1 and doc["arena_bytes"] == p.arena.size
    names = [t["name"] for t in doc["tensors"]]
    assert names == ["x", "a", "b", "f2.workspace", "w", "y"]  # inputs first, then as calls use them
    by_name = {t["name"]: t for t in doc["tensors"]}
    assert by_name["x"] == {"name": "x", "dtype": F32, "shape": [2, 8], "storage": "input", "index": 0}
    assert by_name["w"] == {"name": "w", "dtype": F32, "shape": [2, 8], "storage": "param"}
    assert by_name["y"] == {"name": "y", "dtype": F32, "shape": [2, 8], "storage": "output", "index": 0}
    assert by_name["f2.workspace"] == {"name": "f2.workspace", "dtype": "uint8", "shape": [100], "storage": "arena",
                                       "offset": p.arena.workspaces[1]}
    assert by_name["a"]["offset"] == p.arena.offsets["a"] and set(p.arena.offsets) == {"a", "b"}
    assert doc["calls"] == [{"func": "f1", "args": [0, 1]}, {"func": "f2", "args": [1, 2, 3]},
                            {"func": "f3", "args": [2, 4, 5]}]
    # a and b are alive together at f2, with its workspace: three distinct 64-aligned slots
    slots = {by_name[n]["offset"] for n in ("a", "b", "f2.workspace")}
    assert len(slots) == 3 and p.arena.size == 64 + 64 + 128
    assert json.loads(p.payload_bytes()) == doc and b" " not in p.payload_bytes()


def test_copied_outputs_are_named_after_the_output_with_the_source_type():
    g = chain(outputs=("y", "x", "w"))
    outputs = output_plan(g)
    calls = [Call("f1", ["x"], ["a"]), Call("f2", ["a"], ["b"]), Call("f3", ["b", "w"], ["y"]),
             Call("copy1", ["x"], [outputs[1].tensor]), Call("copy2", ["w"], [outputs[2].tensor])]
    doc = graph_plan.plan(g, calls, outputs).payload
    out = [(t["name"], t["index"]) for t in doc["tensors"] if t["storage"] == "output"]
    assert out == [("y", 0), ("x", 1), ("w", 2)]
    assert doc["tensors"][-1] == {"name": "w", "dtype": F32, "shape": [2, 8], "storage": "output", "index": 2}


def test_an_unread_input_is_still_in_the_table():
    g = infer(Graph(name="g", inputs={"x": TensorType((1,), F32), "unused": TensorType((3,), "int64")}, weights={},
                    nodes=[Node("relu", ["x"], "y", name="r")], outputs=["y"]))
    doc = graph_plan.plan(g, [Call("f", ["x"], ["y"])], output_plan(g)).payload
    assert doc["tensors"][1] == {"name": "unused", "dtype": "int64", "shape": [3], "storage": "input", "index": 1}
    assert doc["arena_bytes"] == 0
