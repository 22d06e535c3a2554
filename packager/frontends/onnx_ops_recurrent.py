"""ONNX LSTM, GRU and RNN -> the IR ops lstm, gru, rnn (one node per output read)."""

from __future__ import annotations

import math

import numpy as np

from packager import ops
from packager.frontends.onnx_convert import Converter, OnnxNode, emits


# ---- recurrent: LSTM, GRU, RNN (versions 7, 14 adds layout, 22 adds types) -------------------------------

# ONNX name -> IR op (ops.RNN_ACTIVATIONS). Not taken: Affine and ScaledTanh (no IR op), ThresholdedRelu (the spec
# gives recurrent activations no default alpha: onnxruntime uses 0, the ThresholdedRelu op 1).
RNN_ACTIVATION_NAMES = {"Sigmoid": "sigmoid", "Tanh": "tanh", "Relu": "relu", "LeakyRelu": "leaky_relu",
                        "HardSigmoid": "hard_sigmoid", "Elu": "elu", "Softsign": "softsign", "Softplus": "softplus"}


def _rnn_activations(cv: Converter, node: OnnxNode, count: int) -> list[int] | None:
    """The activations (`count` of them: the op's per direction, times the directions) as indices into
    ops.RNN_ACTIVATIONS, or None for the defaults. activation_alpha and activation_beta are refused: each
    activation runs with its ONNX default parameters."""
    given = [k for k in ("activation_alpha", "activation_beta") if k in node.attrs]
    if given:
        raise cv.error(node, f"{' and '.join(given)} not supported (activations run with their default "
                             f"alpha and beta)")
    names = node.attrs.get("activations")
    if names is None:
        return None
    if len(names) != count:
        raise cv.error(node, f"activations {names} must be {count} functions (one per gate function and direction)")
    by_lower = {k.lower(): v for k, v in RNN_ACTIVATION_NAMES.items()}  # onnxruntime reads them in any case
    unknown = [a for a in names if a.lower() not in by_lower]
    if unknown:
        raise cv.error(node, f"activations {unknown} not supported (supported: {', '.join(RNN_ACTIVATION_NAMES)})")
    return [ops.RNN_ACTIVATIONS.index(by_lower[a.lower()]) for a in names]


def _recurrent(op: str):
    """LSTM / GRU / RNN -> one IR `op` node per ONNX output a reader uses (Y, Y_h, Y_c), each computing the
    recurrence again: the IR has one output per node. sequence_lens must be absent or a constant equal to
    the sequence length for every batch row; an absent input before a present one becomes zeros."""
    @emits(op)
    def convert(cv: Converter, node: OnnxNode) -> None:
        ins = node.inputs + [""] * (8 - len(node.inputs))
        x, w = cv.type_of(ins[0]), cv.type_of(ins[1])
        layout = node.attrs.get("layout", 0) if node.version >= 14 else 0
        direction = node.attrs.get("direction", "forward")
        if direction not in ops.RNN_DIRECTIONS:
            raise cv.error(node, f"direction '{direction}' is not one of {', '.join(ops.RNN_DIRECTIONS)}")
        if len(x.shape) != 3 or len(w.shape) != 3:
            raise cv.error(node, f"X ('{ins[0]}' is {x}) and W ('{ins[1]}' is {w}) must be 3-D")
        gates = len(ops.RNN_GATES[op])
        hidden = node.attrs.get("hidden_size", w.shape[1] // gates)
        if hidden * gates != w.shape[1]:
            raise cv.error(node, f"hidden_size {hidden} does not match W ('{ins[1]}' is {w}: {gates} gates)")
        seq, batch = (x.shape[0], x.shape[1]) if layout == 0 else (x.shape[1], x.shape[0])
        if ins[4]:
            lens = cv.const(ins[4])
            if lens is None or lens.shape != (batch,) or np.any(lens != seq):
                shown = "computed at run time" if lens is None else f"{lens.tolist()}"
                raise cv.error(node, f"sequence_lens ('{ins[4]}', {shown}) is supported only as a constant "
                                     f"equal to the sequence length ({seq}) for each of the {batch} batch rows")
        dirs = 2 if direction == "bidirectional" else 1
        state = (dirs, batch, hidden) if layout == 0 else (batch, dirs, hidden)
        zeros = {3: (dirs, 2 * gates * hidden), 5: state, 6: state, 7: (dirs, 3 * hidden)}
        wanted = [3, 5, 6, 7] if op == "lstm" else [3, 5]  # ONNX inputs the IR node takes after X, W, R
        last = max([i for i in wanted if ins[i]], default=2)
        inputs = ins[:3] + [ins[i] or np.zeros(zeros[i], np.dtype(x.dtype)) for i in wanted if i <= last]
        attrs = dict(direction=ops.RNN_DIRECTIONS.index(direction), layout=layout,
                     clip=float(node.attrs.get("clip", math.inf)))
        acts = _rnn_activations(cv, node, len(ops.RNN_DEFAULT_ACTIVATIONS[op]) * dirs)
        if acts is not None:
            attrs["activations"] = acts
        attrs.update({"input_forget": node.attrs.get("input_forget", 0)} if op == "lstm" else
                     {"linear_before_reset": node.attrs.get("linear_before_reset", 0)} if op == "gru" else {})
        for k, out in enumerate(node.outputs):
            if out and cv.uses.get(out):
                cv.emit(node, op, inputs, out, returns=k, **attrs)
    return convert


CONVERTERS = {"LSTM": _recurrent("lstm"), "GRU": _recurrent("gru"), "RNN": _recurrent("rnn")}
