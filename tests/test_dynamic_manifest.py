"""Dynamic shapes, the file side: libdpk's checks of a manifest's `dims`, `plans`
and inputs[]/outputs[].dims (runtime_c/src/manifest_dims.c), and of a plan's
graph against the manifest shapes at the plan's sizes (graph.c). Each malformed
field is named in the message with its numbers. Files are made by hand
(dynamic_model.py)."""

from __future__ import annotations

import copy

import pytest

import dynamic_model as dm
import loader
from test_runtime_c import corrupt_copy, manifest_of, patch_section, reseal


@pytest.fixture(scope="module")
def dynamic(tmp_path_factory):
    return dm.build(tmp_path_factory.mktemp("dynamic"))


def open_error(path) -> str:
    with pytest.raises(loader.FailedPreconditionError) as err:
        loader.open_package(path)
    prefix = f"manifest of '{path}': "
    assert str(err.value).startswith(prefix), str(err.value)
    return str(err.value)[len(prefix):]


def dims(*entries):
    def edit(m):
        m["dims"] = list(entries)
    return edit


def plan(index, **fields):
    def edit(m):
        m["plans"][index].update(fields)
    return edit


def static(m):
    """The manifest without its dynamic fields (inputs and outputs keep the largest shapes)."""
    for tensor in m["inputs"] + m["outputs"]:
        tensor.pop("dims", None)
    m.pop("dims")


def with_plans_but_no_dims(m):
    plans = copy.deepcopy(m["plans"])
    static(m)
    m["plans"] = plans


def swap_last_plans(m):
    m["plans"][-2], m["plans"][-1] = m["plans"][-1], m["plans"][-2]


BATCH = {"name": "batch", "min": 1, "max": 8}
SEQ = {"name": "seq", "min": 1, "max": 4, "exact": dm.EXACT}


@pytest.mark.parametrize("edit, expected", [
    # dims
    (lambda m: m.update(dims={"batch": 1}), "field 'dims' must be a non-empty sequence of {name, min, max}"),
    (dims(), "field 'dims' must be a non-empty sequence of {name, min, max}"),
    (dims("batch", SEQ), "dims[0] must be a mapping {name, min, max}"),
    (dims({"min": 1, "max": 8}, SEQ), "dims[0] field 'name' is missing"),
    (dims({**BATCH, "name": ""}, SEQ), "dims[0] field 'name' is empty"),
    (dims({**BATCH, "min": 0}, SEQ), "dim 'batch' has min 0 and max 8 (need 1 <= min <= max)"),
    (dims({**BATCH, "min": 9}, SEQ), "dim 'batch' has min 9 and max 8 (need 1 <= min <= max)"),
    (dims({**BATCH, "min": "one"}, SEQ), "dim 'batch' field 'min' must be an integer, not 'one'"),
    (dims({"name": "batch", "min": 1}, SEQ), "dim 'batch' field 'max' is missing"),
    (dims(BATCH, {**SEQ, "exact": ""}), "dim 'seq' field 'exact' is empty (it says why the dim is never padded)"),
    (dims(BATCH, {**SEQ, "exact": ["why"]}), "dim 'seq' field 'exact' must be a string, not a sequence"),
    (dims(BATCH, {**SEQ, "name": "batch"}), "dim 'batch' is declared twice (dims[0] and dims[1])"),
    (dims(*({"name": f"d{i}", "min": 1, "max": 2} for i in range(33))), "field 'dims' declares 33 dims (at most 32)"),
    (dims(BATCH, SEQ, {"name": "beam", "min": 1, "max": 2}),
     "dim 'beam' is used by no input axis (a run learns each dim's value from the inputs)"),
    # inputs[].dims, outputs[].dims
    (lambda m: m["inputs"][0].update(dims="batch"),
     "input 'x' field 'dims' must be a sequence of dim names or nulls, one per axis"),
    (lambda m: m["inputs"][0].update(dims=["batch"]), "input 'x' field 'dims' has 1 entries but its shape has 2 dims"),
    (lambda m: m["inputs"][0].update(dims=[{"batch": 1}, None]),
     "input 'x' field 'dims' must be a string, not a mapping"),
    (lambda m: m["inputs"][0].update(dims=["beam", None]),
     "input 'x' field 'dims' names 'beam' at axis 0, which field 'dims' does not declare (declared: batch, seq)"),
    (lambda m: m["inputs"][0].update(shape=[4, dm.K]),
     "input 'x' has shape [4, 4] but axis 0 is dim 'batch', whose max is 8 (the shape is the largest plan's)"),
    (lambda m: m["outputs"][0].update(dims=["batch", "seqq"]),
     "output 'y' field 'dims' names 'seqq' at axis 1, which field 'dims' does not declare (declared: batch, seq)"),
    (lambda m: (static(m), m["inputs"][0].update(dims=["batch", None])),
     "input 'x' field 'dims' names 'batch' at axis 0, which field 'dims' does not declare (declared: none)"),
    # plans
    (lambda m: m.pop("plans"), "field 'dims' is given but field 'plans' is missing"),
    (with_plans_but_no_dims, "field 'plans' is given but field 'dims' is not (a static file has one plan, the entry)"),
    (lambda m: m.update(plans=[]), "field 'plans' must be a non-empty sequence of {graph, dims}"),
    (lambda m: m.update(plans={"graph": "main"}), "field 'plans' must be a non-empty sequence of {graph, dims}"),
    (lambda m: m["plans"].__setitem__(0, "g_b1_s2"), "plans[0] must be a mapping {graph, dims}"),
    (plan(0, graph=None), "plans[0] field 'graph' is missing"),
    (plan(0, graph="nope"), "plans[0] names graph 'nope', which is not a module"),
    (plan(0, graph="lib"), "plans[0] names module 'lib' of kind dso (a plan is a graph module)"),
    (plan(0, dims=[1, 2]), "plans[0] (graph 'g_b1_s2') field 'dims' must be a mapping of dim name -> size"),
    (plan(0, dims={"batch": 1, "seq": 2, "beam": 1}),
     "plans[0] (graph 'g_b1_s2') gives a size for 'beam', which field 'dims' does not declare (declared: batch, seq)"),
    (plan(0, dims={"batch": 1}), "plans[0] (graph 'g_b1_s2') gives no size for dim 'seq'"),
    (plan(0, dims={"batch": 9, "seq": 2}), "plans[0] (graph 'g_b1_s2') gives batch = 9, outside its range 1..8"),
    (plan(0, dims={"batch": 1, "seq": 0}), "plans[0] (graph 'g_b1_s2') gives seq = 0, outside its range 1..4"),
    (plan(0, dims={"batch": "big", "seq": 2}),
     "plans[0] (graph 'g_b1_s2') field 'dims.batch' must be an integer, not 'big'"),
    (plan(1, dims={"batch": 1, "seq": 2}), "plans[0] and plans[1] have the same sizes (batch = 1, seq = 2)"),
    (plan(1, graph="g_b1_s2"), "plans[0] and plans[1] both name graph 'g_b1_s2'"),
    (swap_last_plans, "the last plan (graph 'g_b8_s2') gives seq = 2 but must have every dim at its max (4)"),
    (lambda m: m.update(entry="g_b8_s2"), "the last plan's graph is 'main' but field 'entry' names 'g_b8_s2'"),
])
def test_malformed_dynamic_fields_are_refused_naming_field_and_numbers(tmp_path, edit, expected):
    def apply(m):
        edit(m)
        for p in m.get("plans") or []:
            if isinstance(p, dict) and p.get("graph", "") is None:
                del p["graph"]
    assert open_error(dm.build(tmp_path, edit=apply)) == expected


def test_a_dim_given_twice_in_a_plan_is_refused(dynamic, tmp_path):
    def twice(blob):  # a YAML mapping with a repeated key (a dict cannot write one)
        text = manifest_of(blob)
        assert text.count(b"{batch: 1, seq: 2}") == 1
        return reseal(blob, manifest=text.replace(b"{batch: 1, seq: 2}", b"{batch: 1, batch: 1}"))
    path = corrupt_copy(dynamic, tmp_path, "twice.so", patch_section(twice))
    assert open_error(path) == "plans[0] (graph 'g_b1_s2') gives dim 'batch' twice"


def test_nulls_mean_absent(tmp_path):
    """`exact: null`, `dims: null` on a tensor and a null axis are what an absent field is."""
    def nulls(m):
        m["dims"][0]["exact"] = None
        m["outputs"][3]["dims"] = None
    with loader.load(dm.build(tmp_path, edit=nulls)) as model:
        assert model.dims[0] == loader.Dim("batch", 1, 8, None)
        assert model.outputs[3].dims == (None,)


def test_a_plan_graph_is_checked_at_the_plan_sizes(tmp_path):
    def graphs(batch, seq):
        return dm.graph_payload(5 if (batch, seq) == (4, 2) else batch, seq)
    path = dm.build(tmp_path, graphs=graphs)
    with pytest.raises(loader.FailedPreconditionError) as err:
        loader.load(path)
    assert str(err.value) == (
        f"'{path}': cannot load module 'g_b4_s2' (kind graph): tensor 0 ('x') is float32[5, 4] but the manifest's "
        "at the plan's sizes is float32[4, 4]")


def test_a_plan_graph_at_the_largest_shapes_is_refused_too(tmp_path):
    """A plan graph built at the manifest's (largest) shapes is not the plan's model."""
    path = dm.build(tmp_path, graphs=lambda batch, seq: dm.graph_payload(8, 4))
    with pytest.raises(loader.FailedPreconditionError, match="module 'g_b1_s2' .* is float32\\[8, 4\\] but the "
                       "manifest's at the plan's sizes is float32\\[1, 4\\]"):
        loader.load(path)


def test_the_entry_is_the_largest_plan_at_the_manifest_shapes(dynamic):
    """Without the new fields the manifest reads as the largest plan's (an older runtime, which checks every
    graph module against these shapes, refuses the smaller plans' graphs at load: it never runs one wrongly)."""
    manifest = loader.open_package(dynamic).manifest
    assert manifest["entry"] == manifest["plans"][-1]["graph"]
    assert [t["shape"] for t in manifest["inputs"]] == [[8, dm.K], [8, 4]]


def test_a_graph_module_that_is_no_plan_is_checked_at_the_manifest_shapes(tmp_path):
    def edit(m):
        m["plans"] = [p for p in m["plans"] if p["graph"] != "g_b8_s2"]
    path = dm.build(tmp_path, edit=edit)
    with pytest.raises(loader.FailedPreconditionError) as err:
        loader.load(path)
    assert str(err.value) == (f"'{path}': cannot load module 'g_b8_s2' (kind graph): tensor 1 ('t') is "
                              "float32[8, 2] but the manifest's is float32[8, 4]")
