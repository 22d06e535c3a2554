"""Plain NumPy references for every op of the vocabulary (tests only).

Written from the op semantics in DESIGN.md, independent of the generated C:
convolution and pooling by explicit loops over the output (in float64), so a
shared misunderstanding between kernel and reference is unlikely.
"""

from __future__ import annotations

import numpy as np


def dense(x, w, b=None):
    y = x.astype(np.float64) @ w.astype(np.float64).T
    return y + b if b is not None else y


def matmul(a, b):
    return np.matmul(a.astype(np.float64), b.astype(np.float64))


def add(a, b):
    return a.astype(np.float64) + b


def sub(a, b):
    return a.astype(np.float64) - b


def mul(a, b):
    return a.astype(np.float64) * b


def div(a, b):
    return a.astype(np.float64) / b


def relu(x):
    return np.maximum(x, 0)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def tanh(x):
    return np.tanh(x.astype(np.float64))


def softmax(x, axis=-1):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _pads(pads):
    return (pads, pads, pads, pads) if isinstance(pads, int) else tuple(pads)


def conv2d(x, w, b=None, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), groups=1):
    """Direct definition: y[n, o, i, j] = sum over the group's channels and taps."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    top, left, bottom, right = _pads(pads)
    sh, sw = strides
    dh, dw = dilations
    xp = np.zeros((n, c, h + top + bottom, wd + left + right))
    xp[:, :, top:top + h, left:left + wd] = x
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + left + right - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    y = np.zeros((n, o, oh, ow))
    for oc in range(o):
        g = oc // og
        chans = xp[:, g * cg:(g + 1) * cg]
        for i in range(oh):
            for j in range(ow):
                patch = chans[:, :, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw]
                y[:, oc, i, j] = np.einsum("nchw,chw->n", patch, w[oc].astype(np.float64))
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


def _pool(x, kernel, strides, pads, reduce):
    n, c, h, w = x.shape
    kh, kw = kernel
    sh, sw = strides
    top, left, bottom, right = _pads(pads)
    oh = (h + top + bottom - kh) // sh + 1
    ow = (w + left + right - kw) // sw + 1
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * sh - top, j * sw - left
            window = x[:, :, max(h0, 0):min(h0 + kh, h), max(w0, 0):min(w0 + kw, w)]
            y[:, :, i, j] = reduce(window.astype(np.float64).reshape(n, c, -1))
    return y


def maxpool2d(x, kernel, strides=(1, 1), pads=(0, 0, 0, 0)):
    return _pool(x, kernel, strides, pads, lambda v: v.max(axis=-1))


def avgpool2d(x, kernel, strides=(1, 1), pads=(0, 0, 0, 0)):
    """Padding is left out of the average (ONNX count_include_pad=0)."""
    return _pool(x, kernel, strides, pads, lambda v: v.mean(axis=-1))


def global_avgpool(x):
    return x.astype(np.float64).mean(axis=(2, 3), keepdims=True)


def flatten(x, axis=1):
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(int(np.prod(x.shape[:axis])), -1) if x.size else x.reshape(
        int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))


def reshape(x, shape):
    return x.reshape(shape)


def transpose(x, perm=None):
    return np.transpose(x, perm)


def concat(*xs, axis):
    return np.concatenate(xs, axis=axis)


def batchnorm(x, scale, bias, mean, var, epsilon=1e-5):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    x = x.astype(np.float64)
    return ((x - mean.reshape(shape)) / np.sqrt(var.reshape(shape).astype(np.float64) + epsilon)
            * scale.reshape(shape) + bias.reshape(shape))


# ---- extensions (the ONNX frontend's ops) -------------------------------------------


def leaky_relu(x, alpha=0.01):
    x = x.astype(np.float64)
    return np.where(x >= 0, x, alpha * x)


def clip(x, min=-np.inf, max=np.inf):
    return np.minimum(np.maximum(x.astype(np.float64), min), max)


def log_softmax(x, axis=-1):
    x = x.astype(np.float64)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def argmax(x, axis=0, keepdims=1, select_last_index=0):
    """NaN counts as the largest value (NumPy's rule); ties go to the first (or last) index."""
    if select_last_index:
        flipped = np.flip(x, axis=axis)
        index = x.shape[axis] - 1 - np.argmax(flipped, axis=axis)
    else:
        index = np.argmax(x, axis=axis)
    index = index.astype(np.int64)
    return np.expand_dims(index, axis) if keepdims else index


def cast(x, to):
    if to == "bool":
        return x != 0
    return x.astype(to)


def avgpool2d_include_pad(x, kernel, strides=(1, 1), pads=(0, 0, 0, 0)):
    """count_include_pad=1: zero padding counts in the average."""
    top, left, bottom, right = _pads(pads)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    return _pool(xp, kernel, strides, (0, 0, 0, 0), lambda v: v.mean(axis=-1))
