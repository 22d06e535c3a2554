"""Plain NumPy references for every op of the vocabulary (tests only).

Written from the op semantics in DESIGN.md, independent of the generated C:
convolution and pooling by explicit loops over the output (in float64), so a
shared misunderstanding between kernel and reference is unlikely.
"""

from __future__ import annotations

import builtins

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


def _pool(x, kernel, strides, pads, reduce, dilations=(1, 1)):
    n, c, h, w = x.shape
    kh, kw = kernel
    sh, sw = strides
    dh, dw = dilations
    top, left, bottom, right = _pads(pads)
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            rows = [r for r in range(i * sh - top, i * sh - top + dh * kh, dh) if 0 <= r < h]
            cols = [q for q in range(j * sw - left, j * sw - left + dw * kw, dw) if 0 <= q < w]
            window = x[:, :, rows][:, :, :, cols]
            y[:, :, i, j] = reduce(window.astype(np.float64).reshape(n, c, -1))
    return y


def maxpool2d(x, kernel, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1)):
    return _pool(x, kernel, strides, pads, lambda v: v.max(axis=-1), dilations)


def avgpool2d(x, kernel, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1)):
    """Padding is left out of the average (ONNX count_include_pad=0)."""
    return _pool(x, kernel, strides, pads, lambda v: v.mean(axis=-1), dilations)


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


# ---- reductions, argmin, maximum / minimum ----------------------------------------------------


def _reduce(fn, x, axes=(), keepdims=1, noop_with_empty_axes=0):
    """fn(x64, axis=tuple, keepdims=bool) over `axes` (empty: every axis, or none if noop_with_empty_axes)."""
    if not axes:
        axes = () if noop_with_empty_axes else tuple(range(x.ndim))
    return fn(x.astype(np.float64), axis=tuple(axes), keepdims=bool(keepdims))


def reduce_sum(x, **attrs):
    return _reduce(np.sum, x, **attrs)


def reduce_mean(x, **attrs):
    with np.errstate(invalid="ignore"):  # 0 / 0 over an empty axis: NaN
        return _reduce(lambda v, axis, keepdims: np.sum(v, axis=axis, keepdims=keepdims)
                       / int(np.prod([v.shape[a] for a in axis])), x, **attrs)


def reduce_max(x, **attrs):
    return _reduce(lambda v, axis, keepdims: np.max(v, axis=axis, keepdims=keepdims, initial=-np.inf), x, **attrs)


def reduce_min(x, **attrs):
    return _reduce(lambda v, axis, keepdims: np.min(v, axis=axis, keepdims=keepdims, initial=np.inf), x, **attrs)


def reduce_prod(x, **attrs):
    return _reduce(np.prod, x, **attrs)


def reduce_sum_square(x, **attrs):
    return _reduce(lambda v, axis, keepdims: np.sum(v * v, axis=axis, keepdims=keepdims), x, **attrs)


def reduce_l2(x, **attrs):
    return np.sqrt(reduce_sum_square(x, **attrs))


def reduce_approx(op, x, **attrs) -> Approx:
    """A reduction's float32 rounding bound: sums (of n terms, |x| or x*x) accumulate in double, then round
    once (EPS32 / 2 of the result; mean adds a division); max and min are exact; a product of n terms in
    double is within n double ulps, then rounds once."""
    value = globals()[op](x, **attrs)
    if op in ("reduce_max", "reduce_min"):
        return Approx(value)
    mag = {"reduce_sum": lambda: reduce_sum(np.abs(x), **attrs), "reduce_mean": lambda: reduce_mean(np.abs(x), **attrs),
           "reduce_l2": lambda: value, "reduce_sum_square": lambda: value,
           "reduce_prod": lambda: np.abs(value)}[op]()
    n = x.size // max(np.size(value), 1)  # terms per output
    return Approx(value, EPS32 * np.abs(value) + (n + 1) * 2.0 ** -52 * mag)


def argmin(x, axis=0, keepdims=1, select_last_index=0):
    """NaN counts as the smallest value (NumPy's rule); ties go to the first (or last) index."""
    if select_last_index:
        index = x.shape[axis] - 1 - np.argmin(np.flip(x, axis=axis), axis=axis)
    else:
        index = np.argmin(x, axis=axis)
    index = index.astype(np.int64)
    return np.expand_dims(index, axis) if keepdims else index


def maximum(a, b):
    return np.maximum(a.astype(np.float64), b)


def minimum(a, b):
    return np.minimum(a.astype(np.float64), b)


# ---- float elementwise math and activations (float64, from the ONNX definitions) -----------


def _f64(x):
    return np.asarray(x, np.float64)


def _quiet(fn):
    """NumPy's NaN and infinity results without its warnings (log(-1), 1 / 0...)."""
    def wrapped(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)
    wrapped.__name__ = fn.__name__
    return wrapped


abs = _quiet(lambda x: np.abs(_f64(x)))  # noqa: A001 (the op's name)
neg = _quiet(lambda x: -_f64(x))
exp = _quiet(lambda x: np.exp(_f64(x)))
log = _quiet(lambda x: np.log(_f64(x)))
sqrt = _quiet(lambda x: np.sqrt(_f64(x)))
reciprocal = _quiet(lambda x: 1.0 / _f64(x))
sin = _quiet(lambda x: np.sin(_f64(x)))
cos = _quiet(lambda x: np.cos(_f64(x)))
floor = _quiet(lambda x: np.floor(_f64(x)))
ceil = _quiet(lambda x: np.ceil(_f64(x)))
round = _quiet(lambda x: np.round(_f64(x)))  # noqa: A001 (halves to even, as ONNX Round)
sign = _quiet(lambda x: np.sign(_f64(x)))
pow = _quiet(lambda a, b: np.power(_f64(a), _f64(b)))  # noqa: A001
softsign = _quiet(lambda x: _f64(x) / (1.0 + np.abs(_f64(x))))
prelu = _quiet(lambda x, slope: np.where(_f64(x) < 0, _f64(slope) * x, _f64(x)))


@_quiet
def erf(x):
    import math
    return np.vectorize(math.erf, otypes=[np.float64])(_f64(x))


@_quiet
def mod(a, b, fmod=0):
    """fmod=1: C fmod (sign of a); fmod=0: NumPy's mod (sign of b), ONNX Mod-28 on floats."""
    return np.fmod(_f64(a), _f64(b)) if fmod else np.mod(_f64(a), _f64(b))


@_quiet
def gelu(x):
    return 0.5 * _f64(x) * (1.0 + erf(_f64(x) / np.sqrt(2.0)))


@_quiet
def gelu_tanh(x):
    x = _f64(x)
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


@_quiet
def elu(x, alpha=1.0):
    x = _f64(x)
    return np.where(x < 0, alpha * np.expm1(x), x)


@_quiet
def selu(x, alpha=1.6732632423543772, gamma=1.0507009873554805):
    x = _f64(x)
    return np.where(x > 0, gamma * x, gamma * alpha * np.expm1(x))


def softplus(x):
    return np.logaddexp(0.0, np.asarray(x, np.float64))


@_quiet
def hard_sigmoid(x, alpha=0.2, beta=0.5):
    return np.clip(alpha * _f64(x) + beta, 0.0, 1.0)


@_quiet
def hard_swish(x):
    return _f64(x) * hard_sigmoid(x, 1.0 / 6.0, 0.5)


@_quiet
def mish(x):
    return _f64(x) * np.tanh(softplus(x))


@_quiet
def celu(x, alpha=1.0):
    x = _f64(x)
    return np.maximum(0.0, x) + np.minimum(0.0, alpha * np.expm1(x / alpha))


@_quiet
def thresholded_relu(x, alpha=1.0):
    x = _f64(x)
    return np.where(x > alpha, x, np.where(np.isnan(x), x, 0.0))



# ---- recurrent: lstm, gru, rnn (float64, ONNX's equations, one time step at a time) ---------------------

# the IR's `activations` index this (packager/ops.py)
_RNN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "hard_sigmoid", "elu", "softsign", "softplus")
_RNN_DEFAULTS = {"lstm": [0, 1, 1], "gru": [0, 1], "rnn": [1]}


def _lstm_step(x, h, c, w, r, wb, rb, p, f, g, hact, clip, input_forget):
    H = h.shape[-1]
    pre = x @ w.T + h @ r.T + wb + rb
    pi, po, pf = (p[:H], p[H:2 * H], p[2 * H:]) if p is not None else (0.0, 0.0, 0.0)
    i = f(clip(pre[:, :H] + pi * c))
    fg = 1.0 - i if input_forget else f(clip(pre[:, 2 * H:3 * H] + pf * c))
    c = fg * c + i * g(clip(pre[:, 3 * H:]))
    o = f(clip(pre[:, H:2 * H] + po * c))
    return o * hact(c), c


def _gru_step(x, h, w, r, wb, rb, f, g, clip, linear_before_reset):
    H = h.shape[-1]
    xw = x @ w.T + wb
    hr = h @ r[:2 * H].T + rb[:2 * H]
    z = f(clip(xw[:, :H] + hr[:, :H]))
    rr = f(clip(xw[:, H:2 * H] + hr[:, H:]))
    if linear_before_reset:
        cand = xw[:, 2 * H:] + rr * (h @ r[2 * H:].T + rb[2 * H:])
    else:
        cand = xw[:, 2 * H:] + (rr * h) @ r[2 * H:].T + rb[2 * H:]
    return (1.0 - z) * g(clip(cand)) + z * h


def _recurrence(op, x, w, r, b=None, initial_h=None, initial_c=None, p=None, direction=0, layout=0,
                clip=np.inf, activations=None, returns=0, input_forget=0, linear_before_reset=0):
    x, w, r = (np.asarray(a, np.float64) for a in (x, w, r))
    if layout:
        x = x.transpose(1, 0, 2)
        initial_h, initial_c = (None if s is None else np.asarray(s).transpose(1, 0, 2) for s in (initial_h, initial_c))
    S, B, _ = x.shape
    D, H = w.shape[0], r.shape[-1]
    acts = [globals()[_RNN_ACTIVATIONS[k]] for k in (activations or _RNN_DEFAULTS[op])]
    per = len(_RNN_DEFAULTS[op])
    cut = (lambda v: np.clip(v, -clip, clip)) if np.isfinite(clip) else (lambda v: v)
    Y, Yh, Yc = np.zeros((S, D, B, H)), np.zeros((D, B, H)), np.zeros((D, B, H))
    for d in range(D):
        f = acts[d * per:(d + 1) * per] if len(acts) > per else acts
        bias = np.zeros(2 * w.shape[1]) if b is None else np.asarray(b, np.float64)[d]
        wb, rb = bias[:w.shape[1]], bias[w.shape[1]:]
        h = np.zeros((B, H)) if initial_h is None else np.asarray(initial_h, np.float64)[d]
        c = np.zeros((B, H)) if initial_c is None else np.asarray(initial_c, np.float64)[d]
        for t in (range(S - 1, -1, -1) if direction == 1 or d == 1 else range(S)):
            if op == "lstm":
                h, c = _lstm_step(x[t], h, c, w[d], r[d], wb, rb, None if p is None else np.asarray(p)[d],
                                  *f, cut, input_forget)
            elif op == "gru":
                h = _gru_step(x[t], h, w[d], r[d], wb, rb, *f, cut, linear_before_reset)
            else:
                h = f[0](cut(x[t] @ w[d].T + h @ r[d].T + wb + rb))
            Y[t, d] = h
        Yh[d], Yc[d] = h, c
    out = (Y, Yh, Yc)[returns]
    if layout:
        return out.transpose(2, 0, 1, 3) if returns == 0 else out.transpose(1, 0, 2)
    return out


def lstm(x, w, r, b=None, initial_h=None, initial_c=None, p=None, **attrs):
    return _recurrence("lstm", x, w, r, b, initial_h, initial_c, p, **attrs)


def gru(x, w, r, b=None, initial_h=None, **attrs):
    return _recurrence("gru", x, w, r, b, initial_h, **attrs)


def rnn(x, w, r, b=None, initial_h=None, **attrs):
    return _recurrence("rnn", x, w, r, b, initial_h, **attrs)

# ---- data movement (gather, slice, pad...): exact, any dtype -----------------------------------------------


def gather(x, indices, axis=0):
    return np.take(x, np.asarray(indices, np.int64), axis=axis)  # negative indices count from the end


def gather_elements(x, indices, axis=0):
    """y[i..] = x[i.. with i[axis] = indices[i..]]: indices may be shorter than x along the other axes."""
    indices = np.asarray(indices, np.int64)
    x = x[tuple(builtins.slice(None) if d == axis % x.ndim else builtins.slice(0, n)
                for d, n in enumerate(indices.shape))]
    return np.take_along_axis(x, np.where(indices < 0, indices + x.shape[axis], indices), axis=axis)


def slice(x, starts, ends, steps):  # noqa: A001 (the IR op's name)
    return x[tuple(builtins.slice(s, e, st) for s, e, st in zip(starts, ends, steps))].copy()


def expand(x, shape):
    return np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(shape))).copy()


def tile(x, repeats):
    return np.tile(x, repeats)


def pad(x, value=None, pads=(), mode="constant"):
    """Negative pads crop first (onnxruntime's order), then np.pad pads by the others."""
    n = x.ndim
    x = x[tuple(builtins.slice(max(0, -b), x.shape[d] - max(0, -e)) for d, (b, e) in enumerate(zip(pads, pads[n:])))]
    width = [(max(0, b), max(0, e)) for b, e in zip(pads, pads[n:])]
    if mode == "constant":
        fill = np.zeros((), x.dtype) if value is None else np.asarray(value).reshape(())
        return np.pad(x, width, mode="constant", constant_values=fill)
    return np.pad(x, width, mode=mode)


def depth_to_space(x, blocksize, mode="DCR"):
    """The ONNX definition: a reshape, a transpose, a reshape."""
    n, c, h, w = x.shape
    b = blocksize
    if mode == "DCR":
        y = x.reshape(n, b, b, c // b // b, h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // b // b, b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // b // b, h * b, w * b)


def space_to_depth(x, blocksize, mode="DCR"):
    n, c, h, w = x.shape
    b = blocksize
    y = x.reshape(n, c, h // b, b, w // b, b)
    y = y.transpose(0, 3, 5, 1, 2, 4) if mode == "DCR" else y.transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


def trilu(x, upper=1, k=0):
    return np.triu(x, k) if upper else np.tril(x, k)


# ---- how close a float32 result must be to these references ----------------------------
#
# A kernel computes in float32 and the references above in float64 from the same float32
# inputs, so the difference is the kernel's rounding error, which grows with the length of
# each reduction and with the size of its terms, not with a fixed 1e-5. The bound used is the
# classical one for a sum of k float32 terms t_i, in any order, blocked or not, with or
# without FMA (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., sec. 3.1):
#
#     |fl(sum t_i) - sum t_i| <= gamma_k * sum |t_i|,   gamma_k = k u / (1 - k u),  u = 2**-24
#
# with sum |t_i| computed exactly as the same reference run on absolute values (for a dense:
# |x| @ |W|.T + |b|). We take k * EPS32 = 2 k u, which is >= gamma_k while k u <= 1/2: a
# worst case (typical errors grow like sqrt(k) u), so an honest kernel never trips it, while a
# wrong index, a lost tap or a lost term (an error of the size of one term) still does.
#
# Errors carry through a chain of layers: an input known to within e contributes W e to a
# dense's output (relu, tanh, leaky_relu with alpha <= 1 and clip are 1-Lipschitz, sigmoid
# 1/4-Lipschitz), so each helper below takes and returns an Approx: the float64 value and, per
# element, a bound on how far a float32 computation of it may be. Elementwise functions (expf,
# tanhf, a division) add ULPS float32 ulps of their output.

EPS32 = 2.0 ** -23  # float32 machine epsilon (the unit roundoff u is EPS32 / 2)
ULPS = 4  # glibc's expf and tanhf are within 2 ulps; sigmoid adds a sum and a division
TINY = float(np.finfo(np.float32).tiny)  # a floor for results that round to subnormals


class Approx:
    """A reference `value` (float64) and `err`: per element, how far a float32 computation may be from it."""

    def __init__(self, value, err=0.0):
        self.value = np.asarray(value, np.float64)
        self.err = np.broadcast_to(np.asarray(err, np.float64), self.value.shape)

    def __repr__(self):
        return f"Approx(shape {self.value.shape}, max err {self.err.max() if self.err.size else 0:.3g})"


def exact(x) -> Approx:
    """An input: float32 values, exactly known."""
    return x if isinstance(x, Approx) else Approx(x)


def _linear(fn, k: int, x: Approx, w, b, **attrs) -> Approx:
    """fn (dense, matmul, conv2d: linear in x) with a sum of k products (+1 for the bias) per output: its own
    rounding, k EPS32 (|W| (|x| + e) + |b|), plus the input's error carried through, |W| e."""
    k += b is not None
    aw = np.abs(w.value if isinstance(w, Approx) else w)
    ab = None if b is None else np.abs(np.asarray(b, np.float64))
    value = fn(x.value, w.value if isinstance(w, Approx) else w, b, **attrs)
    mag = fn(np.abs(x.value) + x.err, aw, ab, **attrs)
    err = k * EPS32 * mag + (fn(x.err, aw, None, **attrs) if x.err.any() else 0.0)
    if isinstance(w, Approx) and w.err.any():  # matmul of two computed operands
        err = err + fn(np.abs(x.value) + x.err, w.err, None, **attrs)
    return Approx(value, err)


def dense_approx(x, w, b=None) -> Approx:
    return _linear(lambda a, ww, bb: dense(a, ww, bb), np.shape(w)[1], exact(x), w, b)


def matmul_approx(a, b) -> Approx:
    k = np.shape(exact(a).value)[-1]
    return _linear(lambda p, q, _: matmul(p, q), k, exact(a), exact(b), None)


def conv2d_approx(x, w, b=None, **attrs) -> Approx:
    k = int(np.prod(np.shape(w)[1:]))  # input channels of a group x taps
    return _linear(conv2d, k, exact(x), w, b, **attrs)


LIPSCHITZ = {"relu": 1.0, "tanh": 1.0, "sigmoid": 0.25, "clip": 1.0}


def unary_approx(fn, x, lipschitz: float = 1.0, ulps: int = ULPS) -> Approx:
    """fn applied elementwise: the input's error times fn's Lipschitz constant, plus `ulps` of the output."""
    x = exact(x)
    value = fn(x.value)
    return Approx(value, lipschitz * x.err + ulps * EPS32 * np.abs(value))


def add_approx(a, b) -> Approx:
    a, b = exact(a), exact(b)
    value = a.value + b.value
    return Approx(value, a.err + b.err + EPS32 * (np.abs(a.value) + np.abs(b.value) + a.err + b.err))


def sub_approx(a, b) -> Approx:
    b = exact(b)
    return add_approx(a, Approx(-b.value, b.err))


def mul_approx(a, b) -> Approx:
    """a * b: each operand's error times the other's magnitude, plus the product's rounding."""
    a, b = exact(a), exact(b)
    value = a.value * b.value
    err = a.err * np.abs(b.value) + b.err * np.abs(a.value) + a.err * b.err
    return Approx(value, err + EPS32 * (np.abs(value) + err))


def div_approx(a, b) -> Approx:
    """a / b: |d(a/b)| <= ea / |b| + |a| eb / (|b| (|b| - eb)) (infinite where eb reaches |b|), plus the
    quotient's rounding."""
    a, b = exact(a), exact(b)
    value = a.value / b.value
    room = np.abs(b.value) - b.err
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where(room > 0, a.err / np.abs(b.value) + np.abs(a.value) * b.err / (np.abs(b.value) * room), np.inf)
    return Approx(value, err + EPS32 * (np.abs(value) + err))


def _shifted_err(x: Approx, axis) -> np.ndarray:
    """The error of x - max(x) along `axis` in float32: x's own, plus the subtraction's rounding."""
    return x.err + EPS32 / 2 * np.abs(x.value - x.value.max(axis=axis, keepdims=True))


def softmax_approx(x, axis=-1) -> Approx:
    """dp_i = p_i (dx_i - sum_j p_j dx_j), so |dp_i| <= 2 p_i max_j |dx_j| (dx: the error of x - max); the
    float32 exps, their sum of n terms and the division add (n + ULPS) EPS32 of p_i."""
    x = exact(x)
    p = softmax(x.value, axis)
    n = x.value.shape[axis]
    spread = _shifted_err(x, axis).max(axis=axis, keepdims=True) if x.value.size else 0.0
    return Approx(p, p * (2 * spread + (n + ULPS) * EPS32))


def log_softmax_approx(x, axis=-1) -> Approx:
    """(x - max) - log(sum exp(x - max)): the shifted input's error, plus log's, whose argument is off by a
    factor of at most 1 + max|dx| + (n + ULPS) EPS32; plus ULPS of the output. A kernel that computes
    x - (max + log(sum)) also rounds lse = max + log(sum) (EPS32 / 2 of |lse|, counted as EPS32 |lse|)."""
    x = exact(x)
    value = log_softmax(x.value, axis)
    n = x.value.shape[axis]
    shifted = _shifted_err(x, axis)
    spread = shifted.max(axis=axis, keepdims=True) if x.value.size else 0.0
    lse = np.abs(x.value - value)
    return Approx(value, shifted + spread + (n + ULPS) * EPS32 + ULPS * EPS32 * np.abs(value) + EPS32 * lse)


def mean_approx(x, axes) -> Approx:
    """A mean over `axes` (pooling): a sum of n terms, then a division."""
    x = exact(x)
    n = int(np.prod([x.value.shape[a] for a in axes]))
    value = x.value.mean(axis=axes, keepdims=True)
    mag = (np.abs(x.value) + x.err).mean(axis=axes, keepdims=True)
    return Approx(value, x.err.mean(axis=axes, keepdims=True) + (n + 1) * EPS32 * mag)


def maxpool_approx(x, kernel, strides=(1, 1), pads=(0, 0, 0, 0)) -> Approx:
    """A max is exact, and moves by at most the largest error in its window."""
    x = exact(x)
    return Approx(maxpool2d(x.value, kernel, strides, pads), maxpool2d(x.err, kernel, strides, pads))


def avgpool_approx(x, kernel, strides=(1, 1), pads=(0, 0, 0, 0)) -> Approx:
    """A mean of at most kernel-area terms (padding left out): the inputs' errors averaged, a sum of n terms
    and a division."""
    x = exact(x)
    n = int(np.prod(kernel))
    return Approx(avgpool2d(x.value, kernel, strides, pads),
                  avgpool2d(x.err, kernel, strides, pads)
                  + (n + 1) * EPS32 * avgpool2d(np.abs(x.value) + x.err, kernel, strides, pads))


def lenet_approx(image, w) -> Approx:
    """manifests/lenet.yaml on `image` (weights `w`, as lenet.npz names them): its probabilities."""
    h = unary_approx(relu, conv2d_approx(image, w["conv1.weight"], w["conv1.bias"], pads=(2, 2, 2, 2)))
    h = maxpool_approx(h, (2, 2), (2, 2))
    h = unary_approx(relu, conv2d_approx(h, w["conv2.weight"], w["conv2.bias"]))
    h = avgpool_approx(h, (2, 2), (2, 2))
    h = Approx(h.value.reshape(1, -1), h.err.reshape(1, -1))
    h = unary_approx(relu, dense_approx(h, w["fc1.weight"], w["fc1.bias"]))
    h = unary_approx(relu, dense_approx(h, w["fc2.weight"], w["fc2.bias"]))
    return softmax_approx(dense_approx(h, w["fc3.weight"], w["fc3.bias"]), 1)


def assert_close(got, want: Approx, err_msg: str = "", scale: float = 1.0) -> None:
    """|got - want.value| <= scale * want.err (+ TINY) elementwise, same shape, NaN where want is NaN;
    on failure the message names the worst element, its error and its bound. `scale` 2 compares two
    float32 results with each other (each may be want.err from the exact value)."""
    got = np.asarray(got)
    assert got.shape == want.value.shape, f"{err_msg}: shape {got.shape}, expected {want.value.shape}"
    nan = np.isnan(want.value)
    assert np.array_equal(np.isnan(got), nan), f"{err_msg}: NaN where the reference has none, or the reverse"
    diff = np.where(nan, 0.0, np.abs(got.astype(np.float64) - np.where(nan, 0.0, want.value)))
    bound = scale * want.err + TINY
    bad = diff > bound
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, diff / bound, 0)), diff.shape)
        raise AssertionError(
            f"{err_msg}: {int(bad.sum())} of {diff.size} elements outside the rounding bound; worst at {i}: got "
            f"{got[i]!r}, reference {want.value[i]!r}, |difference| {diff[i]:.3g} > bound {bound[i]:.3g} "
            f"({diff[i] / bound[i]:.1f}x); largest bound {bound.max():.3g}")


def assert_agree(a, b, want: Approx, err_msg: str = "") -> None:
    """Two float32 computations of `want` (e.g. two builds of one model): each within want.err of the exact
    value, so within 2 want.err of each other."""
    assert_close(a, want, err_msg)
    assert_close(b, want, err_msg)
    assert_close(a, Approx(np.asarray(b, np.float64), want.err), f"{err_msg} (one against the other)", scale=2.0)


# ---- normalization, LRN, CumSum, TopK -----------------------------------------------------------------------


def layer_norm(x, scale, bias=None, axis=-1, epsilon=1e-5):
    """Statistics over axes [axis, rank) in float64; scale and bias broadcast to x (NumPy rules)."""
    x = x.astype(np.float64)
    axes = tuple(range(axis % x.ndim, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + epsilon) * scale
    return y + bias if bias is not None else y


def lrn(x, size, alpha=1e-4, beta=0.75, bias=1.0):
    """The ONNX definition: channels c - floor((size-1)/2) .. c + ceil((size-1)/2), clipped to [0, C)."""
    x = x.astype(np.float64)
    square = np.zeros_like(x)
    channels = x.shape[1]
    for c in range(channels):
        lo, hi = max(0, c - (size - 1) // 2), min(channels - 1, c + -(-(size - 1) // 2))
        square[:, c] = (x[:, lo:hi + 1] ** 2).sum(axis=1)
    return x / (bias + alpha / size * square) ** beta


def cumsum(x, axis, exclusive=0, reverse=0):
    x = x.astype(np.float64)
    if reverse:
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis)
    if exclusive:
        y = y - x
    return np.flip(y, axis) if reverse else y


def _top_k_order(x, k, axis, largest):
    """Indices of the k best along axis, best first; equal values in index order; NaN above any number."""
    key = np.where(np.isnan(x), np.inf, x).astype(np.float64)
    nan = np.isnan(x)
    # a stable sort on (rank of NaN, value): NaN first when largest, last when smallest
    order = np.lexsort((-key, ~nan), axis=axis) if largest else np.lexsort((key, nan), axis=axis)
    return np.take(order, np.arange(k), axis=axis)


def top_k(x, k, axis=-1, largest=1, sorted=1):
    return np.take_along_axis(x, _top_k_order(x, k, axis, largest), axis=axis)


def top_k_indices(x, k, axis=-1, largest=1, sorted=1):
    return _top_k_order(x, k, axis, largest).astype(np.int64)
# ---- the convolution family: conv_transpose2d, resize ----------------------------------------------------


def conv_transpose2d(x, w, b=None, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), groups=1):
    """The scatter definition: x[n, c, i, j] * w[c, o, p, q] lands on the full output at
    (i * sh + p * dh, j * sw + q * dw); the pads cut that full output (a negative pad extends it with zeros)."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    top, left, bottom, right = _pads(pads)
    sh, sw = strides
    dh, dw = dilations
    fh, fw = (h - 1) * sh + dh * (kh - 1) + 1, (wd - 1) * sw + dw * (kw - 1) + 1
    full = np.zeros((n, og * groups, fh + max(0, -top) + max(0, -bottom), fw + max(0, -left) + max(0, -right)))
    oy, ox = max(0, -top), max(0, -left)  # where the full scatter starts in `full`
    cg = c // groups
    for ci in range(c):
        g = ci // cg
        for p in range(kh):
            for q in range(kw):
                contrib = np.einsum("nij,o->noij", x[:, ci].astype(np.float64), w[ci, :, p, q].astype(np.float64))
                full[:, g * og:(g + 1) * og, oy + p * dh:oy + p * dh + (h - 1) * sh + 1:sh,
                     ox + q * dw:ox + q * dw + (wd - 1) * sw + 1:sw] += contrib
    y = full[:, :, max(0, top):full.shape[2] - max(0, bottom), max(0, left):full.shape[3] - max(0, right)]
    if b is not None:
        y = y + np.asarray(b, np.float64)[None, :, None, None]
    return y


def resize(x, sizes, scales, mode="nearest", coordinate_transformation_mode="half_pixel",
           nearest_mode="round_prefer_floor", cubic_coeff_a=-0.75, exclude_outside=0, antialias=0,
           extrapolation_value=0.0, roi=()):
    """ONNX's own reference implementation (onnx.reference.ops.op_resize), one dimension at a time, in
    float64; tf_half_pixel_for_nearest (which it lacks) from the spec's formula."""
    from onnx.reference.ops import op_resize as r

    if coordinate_transformation_mode == "tf_half_pixel_for_nearest":
        y = np.asarray(x, np.float64)
        for axis, (n_out, scale) in enumerate(zip(sizes, scales)):
            src = (np.arange(n_out) + 0.5) / scale
            frac = src - np.floor(src)
            up = {"round_prefer_floor": frac > 0.5, "round_prefer_ceil": frac >= 0.5, "floor": frac < 0,
                  "ceil": frac > 0}[nearest_mode]
            index = np.clip(np.floor(src).astype(int) + up, 0, x.shape[axis] - 1)
            y = np.take(y, index, axis=axis)
        return y
    coeffs = {
        "nearest": lambda ratio, scale: r._nearest_coeffs(ratio, nearest_mode),
        "linear": r._linear_coeffs_antialias if antialias else r._linear_coeffs,
        "cubic": lambda ratio, scale: (r._cubic_coeffs_antialias if antialias else r._cubic_coeffs)(
            ratio, scale, A=cubic_coeff_a),
    }[mode]
    y = np.asarray(x, np.float64)
    rank = y.ndim
    for axis in range(rank):
        axis_roi = [roi[axis], roi[rank + axis]] if len(roi) else None
        if np.isclose(scales[axis], 1.0) and sizes[axis] == y.shape[axis] and (
                axis_roi is None or (np.isclose(axis_roi[0], 0) and np.isclose(axis_roi[1], 1))):
            continue
        y = r._interpolate_1d_along_axis(y, axis, scales[axis], sizes[axis], coeffs, roi=axis_roi,
                                         extrapolation_value=extrapolation_value,
                                         coordinate_transformation_mode=coordinate_transformation_mode,
                                         exclude_outside=bool(exclude_outside))
    return y


def conv_transpose2d_approx(x, w, b=None, **attrs) -> Approx:
    k = np.shape(x)[1] // attrs.get("groups", 1) * int(np.prod(np.shape(w)[2:]))  # input channels of a group x taps
    return _linear(conv_transpose2d, k, exact(x), w, b, **attrs)
# ---- integers, comparisons and logic (dtypes helper) -------------------------------------------------
# On integer inputs the arithmetic references compute in the inputs' dtype as NumPy does (overflow wraps
# around) with the definitions packager/ops.py gives where C would trap: x / 0 = 0, x % 0 = 0,
# MIN / -1 = MIN; division truncates toward zero (ONNX Div), Pow is the double power truncated.


def _integers(a) -> bool:
    return np.asarray(a).dtype.kind in "iu"


def _integer_aware(float_ref, int_ref):
    """`float_ref` on floating-point inputs, `int_ref` (exact, in the inputs' dtype) on integer ones."""
    def ref(*args, **kwargs):
        if not _integers(args[0]):
            return float_ref(*args, **kwargs)
        with np.errstate(all="ignore"):
            return int_ref(*(np.asarray(a) for a in args), **kwargs)
    ref.__name__ = float_ref.__name__
    return ref


def _int_div(a, b):
    q, r = np.floor_divide(a, b), np.remainder(a, b)  # NumPy: x // 0 = 0, MIN // -1 = MIN
    return np.where((r != 0) & ((a < 0) != (b < 0)), q + 1, q).astype(np.result_type(a, b))


def _int_mod(a, b, fmod=0):
    r = np.remainder(a, b)  # sign of b; x % 0 = 0
    if fmod:  # sign of a: C's %
        r = np.where((r != 0) & ((a < 0) != (b < 0)), r - b, r).astype(r.dtype)
    return r


add = _integer_aware(add, np.add)
sub = _integer_aware(sub, np.subtract)
mul = _integer_aware(mul, np.multiply)
div = _integer_aware(div, _int_div)
mod = _integer_aware(mod, _int_mod)
neg = _integer_aware(neg, np.negative)
abs = _integer_aware(abs, np.abs)  # noqa: A001
sign = _integer_aware(sign, np.sign)
maximum = _integer_aware(maximum, np.maximum)
minimum = _integer_aware(minimum, np.minimum)
pow = _integer_aware(pow, lambda a, b: np.power(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype))  # noqa: A001


# the comparisons and logic: NumPy's own functions
equal = np.equal
less = np.less
less_equal = np.less_equal
greater = np.greater
greater_equal = np.greater_equal
logical_not = np.logical_not
logical_and = np.logical_and
logical_or = np.logical_or
logical_xor = np.logical_xor
isnan = np.isnan


def isinf(x, detect_positive=1, detect_negative=1):
    x = np.asarray(x)
    return ((x == np.inf) & bool(detect_positive)) | ((x == -np.inf) & bool(detect_negative))


where = np.where
