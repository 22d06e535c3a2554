"""Every op table agrees with the registry (packager/ops.py).

Backends, the ONNX converters and the tests' NumPy references each keep a
table of the ops they handle; an op they name must be declared in the
registry, and the tables derived from it must say what it says. The json
runtime's C table is checked against the json backend's in test_json_kind.py
(test_the_c_op_table_is_the_backends).
"""

from __future__ import annotations

from string import Template

import pytest

import reference as ref
from packager import ops
from packager.backends import cblas, host, json as json_backend
from packager.frontends import onnx_ops


def unregistered(names) -> list[str]:
    """The names of `names` that the registry does not declare."""
    return sorted(set(names) - set(ops.OPS))


TABLES = {
    "host EMITTERS": lambda: host.EMITTERS,
    "host MOVE_OPS": lambda: host.MOVE_OPS,
    "host SOFTMAX_FINISH": lambda: host.SOFTMAX_FINISH,
    "cblas OPS": lambda: cblas.OPS,
    "cblas activations": cblas.activations,
    "cblas fusions": lambda: {op for anchor, followers in cblas.CblasBackend().fuses.items()
                              for op in (anchor, *followers)},
    "json OPS": lambda: json_backend.OPS,
    "ONNX converters' IR ops": lambda: {op for convert in onnx_ops.CONVERTERS.values() for op in convert.emits},
}


@pytest.mark.parametrize("table", TABLES)
def test_every_table_names_registered_ops(table):
    assert unregistered(TABLES[table]()) == [], f"{table} claims ops the registry lacks"


def test_a_claim_the_registry_lacks_fails(monkeypatch):
    monkeypatch.setattr(json_backend, "OPS", json_backend.OPS + ("frobnicate",))
    assert unregistered(TABLES["json OPS"]()) == ["frobnicate"]


def test_derived_tables():
    assert host.MOVE_OPS == {"cast", "flatten", "reshape", "transpose", "concat",
                             "gather", "gather_elements", "slice", "expand", "tile", "pad", "depth_to_space",
                             "space_to_depth", "trilu"}
    assert cblas.activations() == ops.elementwise(1, "float32") == (
        "relu", "sigmoid", "tanh", "leaky_relu", "clip",
        "abs", "neg", "exp", "log", "sqrt", "reciprocal", "erf", "sin", "cos", "floor", "ceil", "round", "sign",
        "gelu", "gelu_tanh", "elu", "selu", "softplus", "softsign", "hard_sigmoid", "hard_swish", "mish", "celu",
        "thresholded_relu")
    assert ops.elementwise(1) == cblas.activations() + ("logical_not", "isnan", "isinf")  # bool out or in
    assert ops.elementwise(2, "float32") == ("add", "sub", "mul", "div", "pow", "mod", "prelu", "maximum", "minimum")
    assert ops.elementwise(2) == ops.elementwise(2, "float32") + (
        "equal", "less", "less_equal", "greater", "greater_equal", "logical_and", "logical_or", "logical_xor")
    assert ops.elementwise(3) == ("where",)
    assert [op for op in ops.OPS if host.emitter(op) is None] == []


def test_every_onnx_converter_declares_what_it_emits():
    assert [t for t, convert in onnx_ops.CONVERTERS.items() if not isinstance(getattr(convert, "emits", None), tuple)] == []


def test_every_op_has_a_numpy_reference():
    assert [op for op in ops.OPS if not callable(getattr(ref, op, None))] == []


@pytest.mark.parametrize("op", ops.elementwise(1) + ops.elementwise(2) + ops.elementwise(3))
def test_c_expressions_use_only_their_inputs_and_attributes(op):
    spec = ops.OPS[op]
    defaults = {name: attr.default for name, attr in spec.attrs.items()}
    dtypes = ops.c_dtypes(spec.c_expr)
    assert [i.dtypes for i in spec.inputs if i.group == "T"] == [dtypes] * sum(i.group == "T" for i in spec.inputs)
    for dtype in dtypes.names:  # every family's text
        text = ops.c_text(spec.c_expr, dtype)
        text = text(defaults) if callable(text) else text
        fields = set(Template(text).get_identifiers())
        assert Template(text).is_valid()
        assert fields <= {i.symbol for i in spec.inputs} | set(spec.attrs) | {"T", "F", "U"}
        assert {i.symbol for i in spec.inputs} <= fields or op == "clip" or (op, dtype) == ("abs", "uint8")


def test_attribute_checks_are_declared_on_the_attributes():
    checked = {(op, name): attr.check.says for op, spec in ops.OPS.items()
               for name, attr in spec.attrs.items() if attr.check}
    assert checked == {("argmax", "keepdims"): "0 or 1", ("argmax", "select_last_index"): "0 or 1",
                       ("conv2d", "groups"): ">= 1", ("avgpool2d", "count_include_pad"): "0 or 1",
                       ("mod", "fmod"): "0 or 1",
                       ("isinf", "detect_positive"): "0 or 1", ("isinf", "detect_negative"): "0 or 1",
                       ("batchnorm", "epsilon"): ">= 0",
                       **{(op, flag): "0 or 1" for op in ops.OPS if op.startswith("reduce_")
                          for flag in ("keepdims", "noop_with_empty_axes")},
                       ("argmin", "keepdims"): "0 or 1", ("argmin", "select_last_index"): "0 or 1",
                       # recurrent
                       **{(op, name): says for op in ("lstm", "gru", "rnn") for name, says in
                          (("direction", "0, 1 or 2"), ("layout", "0 or 1"), ("clip", "> 0"))},
                       ("lstm", "returns"): "0 to 2", ("gru", "returns"): "0 or 1", ("rnn", "returns"): "0 or 1",
                       ("lstm", "input_forget"): "0 or 1", ("gru", "linear_before_reset"): "0 or 1",
                       # data movement
                       ("pad", "mode"): "one of constant, reflect, edge, wrap",
                       ("depth_to_space", "blocksize"): ">= 1", ("depth_to_space", "mode"): "one of DCR, CRD",
                       ("space_to_depth", "blocksize"): ">= 1", ("space_to_depth", "mode"): "one of DCR, CRD",
                       ("trilu", "upper"): "0 or 1",
                       # normalization & co.
                       ("layer_norm", "epsilon"): ">= 0", ("lrn", "size"): ">= 1",
                       ("cumsum", "exclusive"): "0 or 1", ("cumsum", "reverse"): "0 or 1",
                       **{(op, name): says for op in ("top_k", "top_k_indices")
                          for name, says in (("k", ">= 0"), ("largest", "0 or 1"), ("sorted", "0 or 1"))},
                       # the convolution family
                       ("conv_transpose2d", "groups"): ">= 1",
                       ("conv_transpose2d", "pads"): "4 integers [top, left, bottom, right]",
                       ("resize", "mode"): "one of " + ", ".join(ops.RESIZE_MODES),
                       ("resize", "coordinate_transformation_mode"): "one of " + ", ".join(ops.RESIZE_COORDINATES),
                       ("resize", "nearest_mode"): "one of " + ", ".join(ops.RESIZE_NEAREST),
                       ("resize", "exclude_outside"): "0 or 1", ("resize", "antialias"): "0 or 1"}
    assert [op for op, spec in ops.OPS.items() if spec.check] == ["clip", "lstm", "gru", "rnn", "resize"]
