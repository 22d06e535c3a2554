"""ONNX convolution and pooling (1-D, 2-D, 3-D pools, auto_pad, ceil_mode, dilations), ConvTranspose,
Resize and Upsample -> IR conv2d, maxpool2d, avgpool2d, reductions, conv_transpose2d, resize."""

from __future__ import annotations

import math

import numpy as np

from packager import ops
from packager.frontends.onnx_convert import Converter, OnnxNode, build_time, emits


def _pads(cv: Converter, node: OnnxNode, in_sizes, kernel, strides, dilations) -> list[int]:
    """ONNX pads [x1_begin, x2_begin.., x1_end, x2_end..] from pads or auto_pad, for len(in_sizes) dims."""
    nd = len(in_sizes)
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto == "NOTSET":
        pads = list(node.attrs.get("pads", [0] * (2 * nd)))
        if len(pads) != 2 * nd:
            raise cv.error(node, f"pads {pads} must have {2 * nd} values for a {nd}-D window")
        return pads
    if auto == "VALID":
        return [0] * (2 * nd)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise cv.error(node, f"auto_pad '{auto}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    begin, end = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin + end


def _spatial(cv: Converter, node: OnnxNode, what: str = "windows", most: int = 2) -> int:
    """The number of spatial dims of the node's input: 1 (N, C, L), 2 (N, C, H, W), 3 if `most` allows."""
    x = cv.type_of(node.inputs[0])
    if not 3 <= len(x.shape) <= most + 2:
        shapes = "3-D NCL or 4-D NCHW input" if most == 2 else "3-D NCL, 4-D NCHW or 5-D NCDHW input"
        dims = [f"{d}-D" for d in range(1, most + 1)]
        raise cv.error(node, f"only {', '.join(dims[:-1])} and {dims[-1]} {what} ({shapes}) are supported; "
                             f"input '{node.inputs[0]}' is {x}")
    return len(x.shape) - 2


def _window_attrs(cv: Converter, node: OnnxNode, kernel=None, what: str = "windows", most: int = 2):
    """(x, kernel, strides, dilations, pads) of a window of 1 to `most` dims; pads as ONNX orders them."""
    nd = _spatial(cv, node, what, most)
    x = cv.type_of(node.inputs[0])
    kernel = list(node.attrs.get("kernel_shape", kernel or []))
    strides = list(node.attrs.get("strides", [1] * nd))
    dilations = list(node.attrs.get("dilations", [1] * nd))
    for name, value in (("kernel_shape", kernel), ("strides", strides), ("dilations", dilations)):
        if len(value) != nd:
            raise cv.error(node, f"{name} {value} must have {nd} values for a {nd}-D window")
    pads = _pads(cv, node, x.shape[2:], kernel, strides, dilations)
    return x, kernel, strides, dilations, pads


# A 1-D window (N, C, L) runs as a 2-D one of height 1 (N, C, 1, L): a reshape on each side (a copy of
# the tensor; small next to the window's work), a constant weight reshaped at build time.

def _as_2d(values: list, one: int) -> list:
    """[L] -> [one, L]; [begin, end] pads -> [0, begin, 0, end]; 2-D values stay."""
    if len(values) == 1:
        return [one, values[0]]
    if len(values) == 2 and one == 0:
        return [0, values[0], 0, values[1]]
    return list(values)


def _lift(cv: Converter, node: OnnxNode, name: str) -> str:
    """Tensor `name` [N, C, L] (or a weight [O, I, K]) as [N, C, 1, L]: a new weight if it is a constant."""
    shape = cv.type_of(name).shape
    target = list(shape[:2]) + [1] + list(shape[2:])
    value = cv.const(name)
    if value is not None:
        return cv.weight(value.reshape(target), f"{name}/2d", value.dtype)
    return cv.emit(node, "reshape", [name], shape=target)


def _windowed(cv: Converter, node: OnnxNode, op: str, inputs: list, nd: int, lifted: tuple[int, ...] = (0,),
              output: str | None = None, **attrs) -> str:
    """Emit IR `op` over `inputs` into `output` (default: the node's); for a 1-D window the inputs at
    `lifted` get height 1, and the output drops it again. Returns the output's name."""
    output = output or node.outputs[0]
    if nd == 2:
        return cv.emit(node, op, inputs, output, **attrs)
    inputs = [_lift(cv, node, t) if i in lifted else t for i, t in enumerate(inputs)]
    y = cv.emit(node, op, inputs, **attrs)
    shape = cv.types[y].shape
    return cv.emit(node, "reshape", [y], output, shape=[shape[0], shape[1], shape[3]])


@emits("conv2d", "reshape")
def _conv(cv: Converter, node: OnnxNode) -> None:
    w = cv.type_of(node.inputs[1])
    nd = _spatial(cv, node, "convolution")
    if len(w.shape) != nd + 2:
        raise cv.error(node, f"weight '{node.inputs[1]}' is {w}: {nd + 2}-D for a {nd}-D convolution")
    _, kernel, strides, dilations, pads = _window_attrs(cv, node, w.shape[2:], "convolution")
    inputs = [i for i in node.inputs[:3] if i]
    _windowed(cv, node, "conv2d", inputs, nd, (0, 1), strides=_as_2d(strides, 1), pads=_as_2d(pads, 0),
              dilations=_as_2d(dilations, 1), groups=node.attrs.get("group", 1))


def _pool(op: str):
    @emits(op, "reshape", "mul")
    def convert(cv: Converter, node: OnnxNode) -> None:
        x, kernel, strides, dilations, pads = _window_attrs(cv, node, most=3)
        nd = len(kernel)
        attrs = {}
        if op == "avgpool2d":
            attrs["count_include_pad"] = node.attrs.get("count_include_pad", 0)
        given = list(pads)
        if node.attrs.get("ceil_mode", 0):
            for d in range(nd):
                size, k, s = x.shape[2 + d], (kernel[d] - 1) * dilations[d] + 1, strides[d]
                span = size + pads[d] + pads[d + nd] - k
                out = -(-span // s) + 1
                if (out - 1) * s >= size + pads[d]:  # the last window must start inside the input
                    out -= 1
                pads[d + nd] += max(0, (out - 1) * s + k - (size + pads[d] + pads[d + nd]))
        rescale = attrs.get("count_include_pad") and pads != given
        output = cv.fresh(f"{node.outputs[0]}/sum") if rescale else None
        if nd == 3:
            y = _pool_3d(cv, node, op, x.shape, kernel, strides, dilations, pads, output, attrs)
        else:
            y = _windowed(cv, node, op, [node.inputs[0]], nd, output=output, kernel=_as_2d(kernel, 1),
                          strides=_as_2d(strides, 1), pads=_as_2d(pads, 0), dilations=_as_2d(dilations, 1), **attrs)
        if rescale:
            factor = _include_pad_rescale(x.shape[2:], cv.types[y].shape[2:], kernel, strides, dilations, given)
            cv.emit(node, "mul", [y, factor.reshape((1, 1) + factor.shape)], node.outputs[0])
    return convert


def _pool_3d(cv: Converter, node: OnnxNode, op: str, shape, kernel, strides, dilations, pads, output, attrs) -> str:
    """A 3-D pool as two 2-D ones: over (H, W) of [N, C * D, H, W], then over D of [N, C, D, H' * W']. A max
    over a box is the max over each axis in turn; so is a mean, its taps inside the input being a product
    of per-axis sets (and the kernel's size, with count_include_pad, a product too)."""
    n, c, d, h, w = shape
    planes = cv.emit(node, "reshape", [node.inputs[0]], shape=[n, c * d, h, w])
    hw = cv.emit(node, op, [planes], kernel=kernel[1:], strides=strides[1:], dilations=dilations[1:],
                 pads=[pads[1], pads[2], pads[4], pads[5]], **attrs)
    oh, ow = cv.types[hw].shape[2:]
    depth = cv.emit(node, "reshape", [hw], shape=[n, c, d, oh * ow])
    y = cv.emit(node, op, [depth], kernel=[kernel[0], 1], strides=[strides[0], 1], dilations=[dilations[0], 1],
                pads=[pads[0], 0, pads[3], 0], **attrs)
    return cv.emit(node, "reshape", [y], output or node.outputs[0], shape=[n, c, cv.types[y].shape[2], oh, ow])


def _include_pad_rescale(sizes, outs, kernel, strides, dilations, pads) -> np.ndarray:
    """count_include_pad=1 with ceil_mode: a window that runs past the given padding averages over its taps
    inside the padded input only (ONNX's reference, and PyTorch). The IR op, whose padding was extended to
    hold those windows, divides by the whole kernel: this factor (kernel size / taps inside) corrects it."""
    nd = len(sizes)
    inside = np.ones(tuple(outs))
    for d in range(nd):
        end = sizes[d] + pads[d + nd]  # the padded input's end, from the window's start at -pads[d]
        starts = np.arange(outs[d]) * strides[d] - pads[d]
        taps = (starts[:, None] + np.arange(kernel[d])[None, :] * dilations[d] < end).sum(axis=1)
        inside = inside * taps.reshape([-1 if k == d else 1 for k in range(nd)])
    return (math.prod(kernel) / inside).astype(np.float32)


def _global_pool(op: str, reduce: str):
    """global_avgpool, or a maxpool2d whose kernel is the whole plane; another rank than 4 (N, C, L...) is
    the reduction `reduce` over every axis after C."""
    @emits(op, reduce)
    def convert(cv: Converter, node: OnnxNode) -> None:
        x = cv.type_of(node.inputs[0])
        if len(x.shape) < 3:
            raise cv.error(node, f"input '{node.inputs[0]}' is {x}: it needs N, C and at least one spatial dim")
        if len(x.shape) != 4:
            cv.emit(node, reduce, [node.inputs[0]], node.outputs[0], axes=list(range(2, len(x.shape))), keepdims=1)
        elif op == "global_avgpool":
            cv.emit(node, op, [node.inputs[0]], node.outputs[0])
        else:
            cv.emit(node, op, [node.inputs[0]], node.outputs[0], kernel=list(x.shape[2:]))
    return convert




# ---- the convolution family: ConvTranspose, Resize, Upsample ---------------------------------------------


@emits("conv_transpose2d", "reshape")
def _conv_transpose(cv: Converter, node: OnnxNode) -> None:
    """ConvTranspose -> conv_transpose2d (1-D through a height of 1). The IR's pads are where the output
    starts and ends in the full scatter [0, (in - 1) * stride + (k - 1) * dilation + 1): output_padding and
    an output_shape larger than that make the end pad negative (rows only the bias reaches)."""
    nd = _spatial(cv, node, "transposed convolutions")
    x, w = cv.type_of(node.inputs[0]), cv.type_of(node.inputs[1])
    if len(w.shape) != nd + 2:
        raise cv.error(node, f"weight '{node.inputs[1]}' is {w}: {nd + 2}-D for a {nd}-D transposed convolution")
    kernel = list(w.shape[2:])
    given = {k: list(node.attrs.get(k, default)) for k, default in
             (("kernel_shape", kernel), ("strides", [1] * nd), ("dilations", [1] * nd), ("output_padding", [0] * nd))}
    for name, value in given.items():
        if len(value) != nd:
            raise cv.error(node, f"{name} {value} must have {nd} values for a {nd}-D transposed convolution")
    if given["kernel_shape"] != kernel:
        raise cv.error(node, f"kernel_shape {given['kernel_shape']} differs from the weight's {kernel}")
    strides, dilations, extra = given["strides"], given["dilations"], given["output_padding"]
    full = [ops.conv_transpose_out(x.shape[2 + d], kernel[d], strides[d], 0, 0, dilations[d]) for d in range(nd)]
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise cv.error(node, f"auto_pad '{auto}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    shape = node.attrs.get("output_shape")
    if shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        # the spec's total padding, split as auto_pad says (the output is then exactly output_shape)
        out = list(shape)[-nd:] if shape is not None else [x.shape[2 + d] * strides[d] for d in range(nd)]
        total = [full[d] + extra[d] - out[d] for d in range(nd)]
        begin = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
        end = [full[d] - out[d] - begin[d] for d in range(nd)]
    else:
        pads = [0] * (2 * nd) if auto == "VALID" else list(node.attrs.get("pads", [0] * (2 * nd)))
        if len(pads) != 2 * nd:
            raise cv.error(node, f"pads {pads} must have {2 * nd} values for a {nd}-D transposed convolution")
        begin, end = pads[:nd], [pads[nd + d] - extra[d] for d in range(nd)]
    inputs = [i for i in node.inputs[:3] if i]
    _windowed(cv, node, "conv_transpose2d", inputs, nd, (0, 1), strides=_as_2d(strides, 1),
              dilations=_as_2d(dilations, 1), pads=_as_2d(begin + end, 0), groups=node.attrs.get("group", 1))


def _resize_input(cv: Converter, node: OnnxNode, index: int, what: str) -> np.ndarray | None:
    """Resize's input `index` as a constant; None if absent or empty (Resize's way to leave one out)."""
    value = build_time(cv, node, index, what, dtype=None)
    return value if value is not None and value.size else None


def _resize_axes(cv: Converter, node: OnnxNode, rank: int) -> list[int]:
    axes = [int(a) for a in node.attrs.get("axes", range(rank))]
    if any(not -rank <= a < rank for a in axes) or len({a % rank for a in axes}) != len(axes):
        raise cv.error(node, f"axes {axes} must be distinct axes of the input's {rank} dimensions")
    return [a % rank for a in axes]


def _resize_shape(cv: Converter, node: OnnxNode, x, axes, scales, sizes, roi) -> tuple[list[int], list[float]]:
    """(output shape, scale per dimension) from exactly one of scales and sizes, given for `axes`."""
    rank = len(x)
    if (scales is None) == (sizes is None):
        raise cv.error(node, "exactly one of scales and sizes must be given")
    given = scales if scales is not None else sizes
    if len(given) != len(axes):
        raise cv.error(node, f"{'scales' if scales is not None else 'sizes'} {given.tolist()} must have one value "
                             f"per axis ({len(axes)})")
    out, scale = list(x), [1.0] * rank
    if scales is not None:
        if roi:
            raise cv.error(node, "tf_crop_and_resize with scales is not supported: the spec's output length "
                                 "floor(length * (roi_end - roi_start) * scale) and onnxruntime's (and ONNX's "
                                 "reference's) floor(length * scale) differ; give sizes")
        for a, s in zip(axes, scales.tolist()):
            scale[a] = float(s)
            out[a] = int(math.floor(x[a] * float(s)))
        return out, scale
    for a, n in zip(axes, sizes.tolist()):
        out[a] = int(n)
        scale[a] = int(n) / x[a] if x[a] else 1.0
    policy = node.attrs.get("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        if policy not in ("not_larger", "not_smaller"):
            raise cv.error(node, f"keep_aspect_ratio_policy '{policy}' is not one of stretch, not_larger, not_smaller")
        common = (min if policy == "not_larger" else max)(scale[a] for a in axes)
        for a in axes:
            scale[a], out[a] = common, int(common * x[a] + 0.5)  # the reference rounds half up
    return out, scale


@emits("resize")
def _resize(cv: Converter, node: OnnxNode) -> None:
    """Resize -> resize, with scales or sizes (and roi) constant at build time. Resize-10 (X, scales) maps
    coordinates as Upsample does (asymmetric: x / scale; the spec says no more, onnxruntime does this),
    nearest rounding down, or up along a shrunk dimension (_resize_10_nearest)."""
    x = list(cv.type_of(node.inputs[0]).shape)
    rank = len(x)
    if node.version < 11:
        attrs = {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
        scales, sizes, roi = _resize_input(cv, node, 1, "scales"), None, None
    else:
        attrs = {k: node.attrs[k] for k in ("coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a",
                                            "exclude_outside", "extrapolation_value", "antialias") if k in node.attrs}
        roi, scales, sizes = (_resize_input(cv, node, i, what) for i, what in ((1, "roi"), (2, "scales"), (3, "sizes")))
    axes = _resize_axes(cv, node, rank)
    full_roi = []
    if roi is not None and attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        if len(roi) != 2 * len(axes):
            raise cv.error(node, f"roi {roi.tolist()} must have 2 values per axis ({2 * len(axes)})")
        full_roi = [0.0] * rank + [1.0] * rank
        for i, a in enumerate(axes):
            full_roi[a], full_roi[rank + a] = float(roi[i]), float(roi[len(axes) + i])
    out, scale = _resize_shape(cv, node, x, axes, scales, sizes, full_roi)
    mode = node.attrs.get("mode", "nearest")
    if node.version < 11 and mode == "nearest" and any(s < 1 for s in scale):
        _resize_10_nearest(cv, node, x, out, scale)
        return
    cv.emit(node, "resize", [node.inputs[0]], node.outputs[0], sizes=out, scales=scale, mode=mode, roi=full_roi,
            **attrs)


def _resize_10_nearest(cv: Converter, node: OnnxNode, x, out, scale) -> None:
    """Resize-10 nearest, shrinking some dimensions: the spec leaves the rounding open; onnxruntime rounds
    up along a shrunk dimension and down along the others. Nearest sampling is separable and exact, so
    that is two resizes: the shrunk dimensions (ceil), then the others (floor)."""
    shrunk = [s < 1 for s in scale]
    mid = [o if k else d for d, o, k in zip(x, out, shrunk)]
    y = cv.emit(node, "resize", [node.inputs[0]], None if mid != out else node.outputs[0], sizes=mid,
                scales=[s if k else 1.0 for s, k in zip(scale, shrunk)], mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="ceil")
    if mid != out:
        cv.emit(node, "resize", [y], node.outputs[0], sizes=out, scales=[1.0 if k else s for s, k in zip(scale, shrunk)],
                mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")


@emits("resize")
def _upsample(cv: Converter, node: OnnxNode) -> None:
    """Upsample (7: scales an attribute; 9, 10: an input) -> resize: output = floor(input * scale), the
    coordinates asymmetric (x / scale), nearest rounding down (so an integer scale repeats each element)."""
    x = list(cv.type_of(node.inputs[0]).shape)
    scales = np.asarray(node.attrs["scales"], np.float32) if node.version < 9 else _resize_input(cv, node, 1, "scales")
    if scales is None or len(scales) != len(x):
        raise cv.error(node, f"scales must have one value per dimension ({len(x)})")
    mode = node.attrs.get("mode", "nearest")
    mode = "linear" if mode == "bilinear" else mode  # Upsample-7's name in some exporters
    out = [int(math.floor(d * float(s))) for d, s in zip(x, scales.tolist())]
    cv.emit(node, "resize", [node.inputs[0]], node.outputs[0], sizes=out, scales=[float(s) for s in scales.tolist()],
            mode=mode, coordinate_transformation_mode="asymmetric", nearest_mode="floor")


CONVERTERS = {
    "Conv": _conv, "MaxPool": _pool("maxpool2d"), "AveragePool": _pool("avgpool2d"),
    "GlobalAveragePool": _global_pool("global_avgpool", "reduce_mean"),
    "GlobalMaxPool": _global_pool("maxpool2d", "reduce_max"),
    "ConvTranspose": _conv_transpose, "Resize": _resize, "Upsample": _upsample,
}
