"""ONNX data movement at run time -> IR gather, gather_elements, slice, expand, tile, pad,
depth_to_space, space_to_depth, trilu (Split: one slice per output)."""

from __future__ import annotations

import numpy as np

from packager.frontends.onnx_convert import Converter, OnnxNode, build_time, emits, shape_error
from packager.frontends.onnx_fold import pad_parameters, resolved_axes, split_sizes


# ---- data movement at run time: Gather, GatherElements, Slice, Split, Expand, Tile, Pad, DepthToSpace,
# SpaceToDepth, Trilu (with every input known at build time, onnx_fold computes them instead) ---------------

INT64_MAX = np.iinfo(np.int64).max


@emits("gather")
def _gather_op(cv: Converter, node: OnnxNode) -> None:
    cv.emit(node, "gather", node.inputs[:2], node.outputs[0], axis=node.attrs.get("axis", 0))


@emits("gather_elements")
def _gather_elements(cv: Converter, node: OnnxNode) -> None:
    cv.emit(node, "gather_elements", node.inputs[:2], node.outputs[0], axis=node.attrs.get("axis", 0))


def _emit_slice(cv: Converter, node: OnnxNode, output: str, ndim: int, axes, starts, ends, steps) -> None:
    """An IR slice of node.inputs[0]: full-rank starts/ends/steps, the untouched dims whole."""
    full = {"starts": [0] * ndim, "ends": [INT64_MAX] * ndim, "steps": [1] * ndim}
    for a, s, e, st in zip(axes, starts, ends, steps):
        full["starts"][a], full["ends"][a], full["steps"][a] = int(s), int(e), int(st)
    cv.emit(node, "slice", [node.inputs[0]], output, **full)


@emits("slice")
def _slice_op(cv: Converter, node: OnnxNode) -> None:
    """starts, ends, axes: attributes before version 10, then constant inputs (with steps)."""
    ndim = len(cv.type_of(node.inputs[0]).shape)
    if node.version < 10:
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes, steps = node.attrs.get("axes"), None
    else:
        starts, ends = build_time(cv, node, 1, "starts"), build_time(cv, node, 2, "ends")
        axes, steps = build_time(cv, node, 3, "axes"), build_time(cv, node, 4, "steps")
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise cv.error(node, f"starts, ends, axes and steps must have one value each per sliced axis "
                             f"(got {len(starts)}, {len(ends)}, {len(axes)}, {len(steps)})")
    axes = shape_error(cv, node, resolved_axes, axes, ndim)
    _emit_slice(cv, node, node.outputs[0], ndim, axes, starts, ends, steps)


@emits("slice")
def _split(cv: Converter, node: OnnxNode) -> None:
    """One IR slice per output. Sizes: the `split` attribute (before 13) or constant input (13+); else
    num_outputs (18+: chunks of ceil(d / n), the last smaller) or the outputs' count (equal parts)."""
    shape = cv.type_of(node.inputs[0]).shape
    split = node.attrs.get("split") if node.version < 13 else build_time(cv, node, 1, "split")
    axis, sizes = shape_error(cv, node, split_sizes, node, shape, split)
    begin = 0
    for out, size in zip(node.outputs, sizes):
        if out:
            _emit_slice(cv, node, out, len(shape), [axis], [begin], [begin + size], [1])
        begin += size


@emits("expand")
def _expand_op(cv: Converter, node: OnnxNode) -> None:
    cv.emit(node, "expand", [node.inputs[0]], node.outputs[0],
            shape=[int(d) for d in build_time(cv, node, 1, "shape")])


@emits("tile")
def _tile_op(cv: Converter, node: OnnxNode) -> None:
    cv.emit(node, "tile", [node.inputs[0]], node.outputs[0],
            repeats=[int(r) for r in build_time(cv, node, 1, "repeats")])


@emits("pad")
def _pad_op(cv: Converter, node: OnnxNode) -> None:
    """pads and the constant value: attributes before version 11, then inputs (pads and axes constant, the
    value a constant or a run-time scalar); axes (18+) say which dims pads cover; negative pads crop."""
    x = node.inputs[0]
    t = cv.type_of(x)
    pads, axes = None, None
    if node.version >= 11:
        pads, axes = build_time(cv, node, 1, "pads"), build_time(cv, node, 3, "axes")
    full, mode, value = shape_error(cv, node, pad_parameters, node, len(t.shape), pads, axes)
    if node.version >= 11:  # the value stays a tensor: a constant or a run-time scalar
        value = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    elif value is not None:
        value = np.asarray(value, t.dtype)
    inputs = [x] if value is None or mode != "constant" else [x, value]
    cv.emit(node, "pad", inputs, node.outputs[0], pads=full, mode=mode)


@emits("depth_to_space")
def _depth_to_space_op(cv: Converter, node: OnnxNode) -> None:
    cv.emit(node, "depth_to_space", [node.inputs[0]], node.outputs[0], blocksize=node.attrs["blocksize"],
            mode=node.attrs.get("mode", "DCR"))


@emits("space_to_depth")
def _space_to_depth_op(cv: Converter, node: OnnxNode) -> None:
    cv.emit(node, "space_to_depth", [node.inputs[0]], node.outputs[0], blocksize=node.attrs["blocksize"],
            mode=node.attrs.get("mode", "DCR"))


@emits("trilu")
def _trilu_op(cv: Converter, node: OnnxNode) -> None:
    k = build_time(cv, node, 1, "k")
    cv.emit(node, "trilu", [node.inputs[0]], node.outputs[0], upper=node.attrs.get("upper", 1),
            k=0 if k is None else int(k[0]))


CONVERTERS = {
    "Gather": _gather_op, "GatherElements": _gather_elements, "Slice": _slice_op, "Split": _split,
    "Expand": _expand_op, "Tile": _tile_op, "Pad": _pad_op, "DepthToSpace": _depth_to_space_op,
    "SpaceToDepth": _space_to_depth_op, "Trilu": _trilu_op,
}
