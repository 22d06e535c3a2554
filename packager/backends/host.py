"""The host backend: C kernels generated for the static shapes of each node.

`lower(region)` turns a region (normally one node; several work too, their
intermediates live in the workspace, placed by plan.plan_arena so a dead one's
bytes are reused) into one packed function named `region.name` taking
`region.inputs` (weights included), then `region.outputs`, then a uint8
workspace tensor if the region needs one (backends/base.py).

The function (cgen.function) checks its arguments (count, type codes, dtype and
shape of each tensor: a few compares per call) and reports a mismatch through
`__dpk_api->set_error`. Each node becomes a block that binds `in0, in1...` and
`out0` (restrict pointers: outputs never overlap inputs), those its body reads,
and runs the op's body. Bodies are plain text: a template per op in
`TEMPLATES`, filled by the op's entry in `EMITTERS` (elementwise ops: with the
C expression the registry, packager/ops.py, declares for them) with shape
constants (and, for broadcasting, transposing and batched ops, a cgen loop nest
over dimensions collapsed as far as strides allow). The C helpers the kernels
call are in c/host_prelude.h, one constant text for every node.
"""

from __future__ import annotations

import math
from string import Template

import numpy as np

from packager import ops, plan
from packager.backends import cgen
from packager.backends.base import Backend, CSource, Region
from packager.ir import BuildError, Graph, Node, TensorType

# ---------------------------------------------------------------------------
# Data: what the host takes, and the text it emits

FLOAT_KERNEL_DTYPES = ops.Dtypes("float32", ("float32",))  # the kernels of ops declared FLOAT (dense, softmax...)
MOVE_ITEMSIZES = (1, 2, 4, 8)  # data-movement ops copy elements of any of these sizes
HOST_PRELUDE = cgen.read_c("host_prelude.h")
UNARY_BLOCK = 4096  # elements per unit of an elementwise task (16 KiB of float32)
DEPTHWISE_PLANE_BYTES = 64 * 1024  # the padded plane of a depthwise conv lives on the stack (in L1/L2)


TEMPLATES = {
    # units are blocks of UNARY_BLOCK elements
    "unary": Template("""\
for (int64_t i = begin * $block, i1 = end * $block < $n ? end * $block : $n; i < i1; ++i) {
  const $T v = $load;
  out0[i] = $expr;
}"""),
    "broadcast": Template("out0[$o] = $expr;"),  # $expr reads in0[$a], in1[$b]... (cgen.nest's offsets)
    "dense": Template("dpk_host_dense(in0, in1, $bias, out0, $M, $N, $K);"),
    "matmul": Template("""\
{
  const float *restrict a = in0 + $a;
  const float *restrict b = in1 + $b;
  float *restrict y = out0 + $o;
  for (int64_t m = 0; m < $M; ++m) {
    float *restrict yr = y + m * $N;
    for (int64_t n = 0; n < $N; ++n) yr[n] = 0.0f;
    for (int64_t k = 0; k < $K; ++k) {
      const float av = a[m * $K + k];
      const float *restrict br = b + k * $N;
      for (int64_t n = 0; n < $N; ++n) yr[n] += av * br[n];
    }
  }
}"""),
    "softmax_rows": Template("""\
for (int64_t r = 0; r < $outer; ++r) {
  const float *restrict xr = in0 + r * $L;
  float *restrict yr = out0 + r * $L;
  float mx = xr[0];
  for (int64_t l = 1; l < $L; ++l) mx = xr[l] > mx ? xr[l] : mx;
  float sum = 0.0f;
  for (int64_t l = 0; l < $L; ++l) {
    const float e = expf(xr[l] - mx);
    yr[l] = e;
    sum += e;
  }
  $finish_rows
}"""),
    "softmax_cols": Template("""\
for (int64_t r = 0; r < $outer; ++r) {
  for (int64_t j = 0; j < $inner; ++j) {
    const float *restrict xr = in0 + r * $L * $inner + j;
    float *restrict yr = out0 + r * $L * $inner + j;
    float mx = xr[0];
    for (int64_t l = 1; l < $L; ++l) mx = xr[l * $inner] > mx ? xr[l * $inner] : mx;
    float sum = 0.0f;
    for (int64_t l = 0; l < $L; ++l) {
      const float e = expf(xr[l * $inner] - mx);
      yr[l * $inner] = e;
      sum += e;
    }
    $finish_cols
  }
}"""),
    # Index of the largest value along the axis; NaN counts as largest (NumPy's rule).
    "argmax": Template("""\
for (int64_t r = 0; r < $outer; ++r) {
  for (int64_t j = 0; j < $inner; ++j) {
    const float *restrict xr = in0 + r * $L * $inner + j;
    float best = xr[0];
    int64_t at = 0;
    for (int64_t l = 1; l < $L; ++l) {
      const float v = xr[l * $inner];
      if ($better) { best = v; at = l; }
    }
    out0[r * $inner + j] = at;
  }
}"""),
    "cast": Template("""\
for (int64_t i = 0; i < $n; ++i) out0[i] = $expr;"""),
    # Direct convolution, one unit per output plane (image n, channel oc): the
    # plane starts at the bias, then every (input channel, kh, kw) tap adds
    # w * (shifted input) over the outputs whose tap lands inside the input (so
    # padding costs nothing): an axpy along ow.
    "conv2d": Template("""\
const int64_t n = u / $OC, oc = u % $OC, g = oc / $OCG;
float *restrict yp = out0 + u * ($OH * $OW);
const float bv = $bias;
for (int64_t i = 0; i < $OH * $OW; ++i) yp[i] = bv;
for (int64_t ic = 0; ic < $ICG; ++ic) {
  const float *restrict xp = in0 + (n * $IC + g * $ICG + ic) * ($IH * $IW);
  const float *restrict wp = in1 + (oc * $ICG + ic) * ($KH * $KW);
  for (int64_t kh = 0; kh < $KH; ++kh) {
    const int64_t oh0 = dpk_host_first($PT - kh * $DH, $SH);
    const int64_t oh1 = dpk_host_end($IH + $PT - kh * $DH, $SH, $OH);
    for (int64_t kw = 0; kw < $KW; ++kw) {
      const float wv = wp[kh * $KW + kw];
      const int64_t ow0 = dpk_host_first($PL - kw * $DW, $SW);
      const int64_t ow1 = dpk_host_end($IW + $PL - kw * $DW, $SW, $OW);
      const int64_t shift = kw * $DW - $PL;
      for (int64_t oh = oh0; oh < oh1; ++oh) {
        float *restrict yr = yp + oh * $OW;
        const float *restrict xr = xp + (oh * $SH + kh * $DH - $PT) * $IW;
        for (int64_t ow = ow0; ow < ow1; ++ow) yr[ow] += wv * xr[ow * $SW + shift];
      }
    }
  }
}"""),
    # One input channel per group (depthwise): the plane is copied into a
    # zero-padded local buffer (so no tap needs a bounds check), each row split
    # into $SW phases of $QW floats (padded column j * $SW + phase) so a strided
    # tap reads contiguous floats; then every output row is one loop of constant
    # trip count over ow with all taps unrolled: gcc vectorises it along ow.
    "conv2d_depthwise": Template("""\
const int64_t n = u / $OC, oc = u % $OC;
const float *restrict xp = in0 + (n * $IC + oc / $OCG) * ($IH * $IW);
float *restrict yp = out0 + u * ($OH * $OW);
float wk[$KH * $KW];
for (int64_t t = 0; t < $KH * $KW; ++t) wk[t] = in1[oc * ($KH * $KW) + t];
const float bv = $bias;
float pad[$PH * $RW];
memset(pad, 0, sizeof pad);
for (int64_t ih = 0; ih < $CH; ++ih) {
  float *restrict pr = pad + (ih + $PT) * $RW;
  const float *restrict xr = xp + ih * $IW;
  $fill
}
for (int64_t oh = 0; oh < $OH; ++oh) {
  const float *restrict pr = pad + oh * $SH * $RW;
  float *restrict yr = yp + oh * $OW;
  for (int64_t ow = 0; ow < $OW; ++ow) {
    float acc = bv;
    for (int64_t kh = 0; kh < $KH; ++kh)
      for (int64_t kw = 0; kw < $KW; ++kw)
        acc += wk[kh * $KW + kw] * pr[kh * $DH * $RW + kw * $DW % $SW * $QW + ow + kw * $DW / $SW];
    yr[ow] = acc;
  }
}"""),
    # A pool whose windows all lie inside the input: constant trip counts, no
    # clamping, so gcc unrolls the window and vectorises along ow.
    "pool_inside": Template("""\
for (int64_t p = begin; p < end; ++p) {
  for (int64_t oh = 0; oh < $OH; ++oh) {
    const float *restrict xr = in0 + p * ($IH * $IW) + oh * $SH * $IW;
    float *restrict yr = out0 + p * ($OH * $OW) + oh * $OW;
    for (int64_t ow = 0; ow < $OW; ++ow) {
      float acc = $init;
      for (int64_t kh = 0; kh < $KH; ++kh)
        for (int64_t kw = 0; kw < $KW; ++kw) {
          const float v = xr[kh * $IW + ow * $SW + kw];
          $accumulate
        }
      yr[ow] = $finish;
    }
  }
}"""),
    # A pool with padding: per output row, chunks of up to $CW outputs accumulate in
    # a local array, one input row and one kw at a time over the outputs whose
    # column falls inside the input (literal bounds per kw, $taps), so each loop
    # is a plain vectorisable pass with no per-output clamping; padding is skipped.
    "pool": Template("""\
for (int64_t p = begin; p < end; ++p) {
  const float *restrict xp = in0 + p * ($IH * $IW);
  float *restrict yp = out0 + p * ($OH * $OW);
  for (int64_t oh = 0; oh < $OH; ++oh) {
    int64_t h0 = oh * $SH - $PT, h1 = h0 + $KH;
    h0 = h0 < 0 ? 0 : h0;
    h1 = h1 > $IH ? $IH : h1;
    for (int64_t c0 = 0; c0 < $OW; c0 += $CW) {
      const int64_t c1 = c0 + $CW < $OW ? c0 + $CW : $OW;
      float acc[$CW];
      for (int64_t ow = c0; ow < c1; ++ow) acc[ow - c0] = $init;
      for (int64_t h = h0; h < h1; ++h) {
        const float *restrict xr = xp + h * $IW;
$taps
      }
      for (int64_t ow = c0; ow < c1; ++ow) {
        const int64_t w0 = ow * $SW - $PL < 0 ? 0 : ow * $SW - $PL;
        const int64_t w1 = ow * $SW - $PL + $KW > $IW ? $IW : ow * $SW - $PL + $KW;
        (void)w0; (void)w1;
        yp[oh * $OW + ow] = $finish;
      }
    }
  }
}"""),
    "pool_tap": Template("""\
for (int64_t ow = c0 > $lo ? c0 : $lo; ow < (c1 < $hi ? c1 : $hi); ++ow) { /* kw = $kw */
  const float v = xr[ow * $SW + $shift];
  $accumulate
}"""),
    # sums in double, in 8 independent lanes: one running sum is a chain of dependent
    # adds (gcc may not reorder them), 8 lanes are one vector add per 8 floats
    "global_avgpool": Template("""\
for (int64_t p = 0; p < $NC; ++p) {
  const float *restrict xp = in0 + p * $HW;
  double lane[8] = {0.0};
  int64_t i = 0;
  for (; i + 8 <= $HW; i += 8)
    for (int64_t k = 0; k < 8; ++k) lane[k] += xp[i + k];
  for (; i < $HW; ++i) lane[0] += xp[i];
  const double sum = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  out0[p] = (float)(sum / $HW);
}"""),
    "copy": Template("if ((const void *)out0 != (const void *)in0) memmove(out0, in0, $nbytes);"),
    "transpose": Template("out0[$o] = in0[$a];"),
    "concat_part": Template("""\
for (int64_t r = 0; r < $outer; ++r)
  memcpy((unsigned char *)out0 + r * $out_row + $offset, (const unsigned char *)in$i + r * $row, $row);"""),
    "batchnorm": Template("""\
for (int64_t c = 0; c < $C; ++c) {
  const float a = in1[c] / sqrtf(in4[c] + $eps);
  const float b = in2[c] - in3[c] * a;
  for (int64_t n = 0; n < $N; ++n) {
    const float *restrict xp = in0 + (n * $C + c) * $inner;
    float *restrict yp = out0 + (n * $C + c) * $inner;
    for (int64_t i = 0; i < $inner; ++i) yp[i] = xp[i] * a + b;
  }
}"""),
}

POOL = {  # acc: the window's running value (`acc` in pool_inside, `acc[ow - c0]` in pool)
    "maxpool2d": {"init": "-INFINITY", "accumulate": "$acc = v > $acc ? v : $acc;", "finish": "$acc"},
    "avgpool2d": {"init": "0.0f", "accumulate": "$acc += v;",
                  "finish": "$acc / (float)((h1 - h0) * (w1 - w0))", "inside": "$acc / (float)($KH * $KW)"},
    # count_include_pad: windows never leave the padded input, so the divisor is the kernel's size
    "avgpool2d_include_pad": {"init": "0.0f", "accumulate": "$acc += v;", "finish": "$acc / (float)($KH * $KW)"},
}
POOL_CHUNK = 256  # outputs of a padded pool's row accumulated at once (a local array on the stack)
SOFTMAX_FINISH = {  # (rows, cols): after the loop that left exp(x - max) in y and its sum in `sum`
    "softmax": ("const float inv = 1.0f / sum;\n  for (int64_t l = 0; l < $L; ++l) yr[l] *= inv;",
                "const float inv = 1.0f / sum;\n    for (int64_t l = 0; l < $L; ++l) yr[l * $inner] *= inv;"),
    # (x - max) - log(sum), not x - (max + log(sum)): with a large max, max + log(sum) rounds off log(sum)
    "log_softmax": ("const float lse = logf(sum);\n  for (int64_t l = 0; l < $L; ++l) yr[l] = (xr[l] - mx) - lse;",
                    "const float lse = logf(sum);\n"
                    "    for (int64_t l = 0; l < $L; ++l) yr[l * $inner] = (xr[l * $inner] - mx) - lse;"),
}
BETTER = {  # op -> select_last_index -> when v replaces the best so far (NaN counts as largest / smallest)
    "argmax": {0: "v > best || (v != v && best == best)", 1: "v >= best || v != v"},
    "argmin": {0: "v < best || (v != v && best == best)", 1: "v <= best || v != v"},
}

# ---------------------------------------------------------------------------
# Emitters: node -> body text (the caller binds in0.. and out0, those in k.reads)


class _K:
    """What an emitter sees: the node and its types; what it tells: the operands its body reads and the
    tasks it made."""

    def __init__(self, node: Node, ins: list[TensorType], out: TensorType, name: str = "task"):
        self.node, self.ins, self.out, self.attrs = node, ins, out, node.attrs
        self.name = name  # of the task, if the emitter makes one
        self.tasks: list[str] = []  # task definitions, emitted before the function
        self.reads = [f"in{i}" for i in range(len(ins))] + ["out0"]  # every operand, unless read_only says less

    def read_only(self, *operands: str) -> None:
        """The body reads only these of in0.. and out0 (an empty tensor's body reads none)."""
        self.reads = list(operands)

    def task(self, body: str, units: int, parallel: bool) -> str:
        """Run `body` as a task over `units` units (split over threads if `parallel`); returns the call."""
        types = [_ctype(self.node.op, t.dtype) for t in [*self.ins, self.out]]
        definition, call = cgen.task(self.name, f"{self.node.name}: {self.node.op}", types, units, body, parallel)
        self.tasks.append(definition)
        return call

    def shape(self, i: int) -> tuple[int, ...]:
        return tuple(self.ins[i].shape)


HALF_LOAD, HALF_STORE = "dpk_host_half_to_float({})", "dpk_host_float_to_half({})"  # c/host_prelude.h


def _load(operand: str, dtype: str) -> str:
    """An element as the C computes on it: float16's bits as a float."""
    return HALF_LOAD.format(operand) if dtype == "float16" else operand


def _store(expr: str, dtype: str) -> str:
    """A computed value as an element of `dtype`: a float rounded to float16's bits."""
    return HALF_STORE.format(expr) if dtype == "float16" else expr


def _elementwise_expr(node: Node, dtype: str, operands: list[str]) -> str:
    """The registry's C expression of an elementwise node computing on `dtype` (its "T" inputs'): `operands`
    for its inputs, attributes as constants of `dtype`, and $T, $F, $U (ops.ByDtype) for `dtype` (float16:
    for float32, the dtype that computes it)."""
    spec = ops.OPS[node.op]
    dtype = ops.COMPUTED_AS.get(dtype, dtype)
    text = ops.c_text(spec.c_expr, dtype)
    text = text(node.attrs) if callable(text) else text
    fields = {name: cgen.c_constant(value, dtype) for name, value in node.attrs.items()}
    fields.update(T=cgen.ctype(dtype), F=cgen.math_suffix(dtype), U=cgen.wrap_ctype(dtype))
    fields.update((i.symbol, operand) for i, operand in zip(spec.inputs, operands))
    return Template(text).substitute(fields)


def unary_expr(node: Node, dtype: str = "float32") -> str:
    """The C expression of a unary elementwise op applied to `v` of `dtype` (its attributes as constants)."""
    return _elementwise_expr(node, dtype, ["v"])


def _computed_dtype(k: _K) -> str:
    """The dtype an elementwise node computes on: its "T" inputs' (Where's values, not its condition)."""
    spec = ops.OPS[k.node.op]
    return next(t.dtype for i, t in zip(spec.inputs, k.ins) if i.group == "T")


def _unary(k: _K) -> str:
    dtype = _computed_dtype(k)
    n = math.prod(k.out.shape)
    body = TEMPLATES["unary"].substitute(n=n, expr=_store(unary_expr(k.node, dtype), k.out.dtype), block=UNARY_BLOCK,
                                         T=cgen.ctype(ops.COMPUTED_AS.get(dtype, dtype)), load=_load("in0[i]", dtype))
    return k.task(body, -(-n // UNARY_BLOCK), n >= cgen.PARALLEL_MIN_WORK)


def _broadcasting(k: _K) -> str:
    """Any number of inputs broadcast to the output (NumPy rules): one loop nest over the collapsed dims."""
    out = k.out.shape
    strides = [cgen.strides(out)] + [cgen.broadcast_strides(k.shape(i), out) for i in range(len(k.ins))]
    dims, strides = cgen.collapse(out, strides)
    # the operands' offsets ($a, $b...) are left for the loop nest to fill
    operands = [_load(f"in{i}[${offset}]", t.dtype) for i, (offset, t) in enumerate(zip(cgen.NEST_OFFSETS[1:], k.ins))]
    expr = _store(_elementwise_expr(k.node, _computed_dtype(k), operands), k.out.dtype)
    body = TEMPLATES["broadcast"].safe_substitute(expr=expr)
    return cgen.nest(dims, strides, Template(body))


def _dense(k: _K) -> str:
    x, w = k.shape(0), k.shape(1)
    bias = "in2" if len(k.ins) == 3 else "(const float *)0"
    return TEMPLATES["dense"].substitute(bias=bias, M=math.prod(x[:-1]), N=w[0], K=w[1])


def _matmul(k: _K) -> str:
    a, b = k.shape(0), k.shape(1)
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    M, K, N = a2[-2], a2[-1], b2[-1]
    batch = ops.broadcast_shapes(a2[:-2], b2[:-2])
    strides = [[s * M * N for s in cgen.strides(batch)],
               [s * M * K for s in cgen.broadcast_strides(a2[:-2], batch)],
               [s * K * N for s in cgen.broadcast_strides(b2[:-2], batch)]]
    dims, strides = cgen.collapse(batch, strides)
    return cgen.nest(dims, strides, TEMPLATES["matmul"], M=M, N=N, K=K)


def _softmax(k: _K) -> str:
    x = k.shape(0)
    axis = ops.axis_of(k.attrs["axis"], len(x))
    outer, L, inner = math.prod(x[:axis]), x[axis], math.prod(x[axis + 1:])
    if outer * L * inner == 0:
        k.read_only()
        return "/* empty */"
    name = "softmax_rows" if inner == 1 else "softmax_cols"
    fields = dict(outer=outer, L=L, inner=inner)
    rows, cols = (Template(t).substitute(fields) for t in SOFTMAX_FINISH[k.node.op])
    return TEMPLATES[name].substitute(fields, finish_rows=rows, finish_cols=cols)


def _arg_best(k: _K) -> str:
    """argmax and argmin: one scan per (outer, inner) position, BETTER says when a value wins."""
    x = k.shape(0)
    axis = ops.axis_of(k.attrs["axis"], len(x))
    outer, L, inner = math.prod(x[:axis]), x[axis], math.prod(x[axis + 1:])
    if outer * inner == 0:
        k.read_only()
        return "/* empty */"
    return TEMPLATES["argmax"].substitute(outer=outer, L=L, inner=inner,
                                          better=BETTER[k.node.op][k.attrs["select_last_index"]])


def _cast(k: _K) -> str:
    n = math.prod(k.out.shape)
    if n == 0:
        k.read_only()
        return "/* empty */"
    to, value = k.attrs["to"], _load("in0[i]", k.ins[0].dtype)
    if to == "float16":  # from double, so that a float64 is rounded once
        expr = f"dpk_host_double_to_half((double){value})"
    else:
        expr = f"(uint8_t)({value} != 0)" if to == "bool" else f"({cgen.ctype(to)}){value}"
    return TEMPLATES["cast"].substitute(n=n, expr=expr)


def _conv2d(k: _K) -> str:
    x, w, out = k.shape(0), k.shape(1), k.out.shape
    (sh, sw), (dh, dw), pads, g = k.attrs["strides"], k.attrs["dilations"], k.attrs["pads"], k.attrs["groups"]
    bias = "in2[oc]" if len(k.ins) == 3 else "0.0f"
    # the padded plane a depthwise output needs: rows/cols up to the last tap
    ph, pw = (out[2] - 1) * sh + (w[2] - 1) * dh + 1, (out[3] - 1) * sw + (w[3] - 1) * dw + 1
    qw = -(-pw // sw)  # floats per column phase of a padded row
    depthwise = w[1] == 1 and ph * sw * qw * 4 <= DEPTHWISE_PLANE_BYTES
    template = TEMPLATES["conv2d_depthwise" if depthwise else "conv2d"]
    cw = min(x[3], pw - pads[1])
    fill = f"memcpy(pr + {pads[1]}, xr, {cw} * sizeof(float));" if sw == 1 else \
        f"for (int64_t iw = 0; iw < {cw}; ++iw) pr[(iw + {pads[1]}) % {sw} * {qw} + (iw + {pads[1]}) / {sw}] = xr[iw];"
    body = template.substitute(
        IC=x[1], IH=x[2], IW=x[3], OC=w[0], OCG=w[0] // g, ICG=w[1], KH=w[2], KW=w[3],
        OH=out[2], OW=out[3], SH=sh, SW=sw, DH=dh, DW=dw, PT=pads[0], PL=pads[1], bias=bias,
        PH=ph, RW=sw * qw, QW=qw, CH=min(x[2], ph - pads[0]), fill=fill)
    units = x[0] * w[0]
    return k.task(cgen.each_unit(body), units, units * math.prod(out[2:]) * math.prod(w[1:]) >= cgen.PARALLEL_MIN_WORK)


def _pool(k: _K) -> str:
    x, out = k.shape(0), k.out.shape
    (kh, kw), (sh, sw), pads = k.attrs["kernel"], k.attrs["strides"], k.attrs["pads"]
    pool = POOL["avgpool2d_include_pad" if k.attrs.get("count_include_pad") else k.node.op]
    planes = x[0] * x[1]  # the task's units
    if not any(pads) and (out[2] - 1) * sh + kh <= x[2] and (out[3] - 1) * sw + kw <= x[3]:
        pool = {key: Template(text).substitute(KH=kh, KW=kw, acc="acc") for key, text in pool.items()}
        body = TEMPLATES["pool_inside"].substitute(
            pool, finish=pool.get("inside", pool["finish"]), IH=x[2], IW=x[3], OH=out[2],
            OW=out[3], KH=kh, KW=kw, SH=sh, SW=sw)
    else:
        pool = {key: Template(text).substitute(KH=kh, KW=kw, acc="acc[ow - c0]") for key, text in pool.items()}
        taps = []
        for j in range(kw):
            shift = j - pads[1]
            lo = 0 if shift >= 0 else -(shift // sw)  # first ow whose column ow * sw + shift >= 0
            hi = max(lo, min(out[3], -(-(x[3] - shift) // sw)))  # first ow whose column is past the input
            taps.append(TEMPLATES["pool_tap"].substitute(kw=j, lo=lo, hi=hi, SW=sw, shift=shift,
                                                         accumulate=pool["accumulate"]))
        body = TEMPLATES["pool"].substitute(
            pool, IH=x[2], IW=x[3], OH=out[2], OW=out[3], KH=kh, KW=kw, SH=sh, SW=sw, PT=pads[0], PL=pads[1],
            CW=min(out[3], POOL_CHUNK), taps=cgen.indent("\n".join(taps), "        "))
    return k.task(body, planes, planes * out[2] * out[3] * kh * kw >= cgen.PARALLEL_MIN_WORK)


def _global_avgpool(k: _K) -> str:
    x = k.shape(0)
    if x[2] * x[3] == 0:
        k.read_only("out0")
        return f"for (int64_t p = 0; p < {x[0] * x[1]}; ++p) out0[p] = NAN;"
    return TEMPLATES["global_avgpool"].substitute(NC=x[0] * x[1], HW=x[2] * x[3])


def _copy(k: _K) -> str:
    return TEMPLATES["copy"].substitute(nbytes=k.out.nbytes)


def _transpose(k: _K) -> str:
    x = k.shape(0)
    perm = ops.perm_of(k.node, len(x))
    xs = cgen.strides(x)
    dims, strides = cgen.collapse(k.out.shape, [cgen.strides(k.out.shape), [xs[p] for p in perm]])
    return cgen.nest(dims, strides, TEMPLATES["transpose"])


def _concat(k: _K) -> str:
    item = np.dtype(k.out.dtype).itemsize
    axis = ops.axis_of(k.attrs["axis"], len(k.out.shape))
    outer = math.prod(k.out.shape[:axis])
    out_row = math.prod(k.out.shape[axis:]) * item
    parts, offset, copied = [], 0, []
    for i in range(len(k.ins)):
        row = math.prod(k.shape(i)[axis:]) * item
        if row and outer:
            parts.append(TEMPLATES["concat_part"].substitute(
                outer=outer, out_row=out_row, offset=offset, i=i, row=row))
            copied.append(f"in{i}")
        offset += row
    k.read_only(*copied, *(["out0"] if copied else []))
    return "\n".join(parts) or "/* empty */"


def _batchnorm(k: _K) -> str:
    x = k.shape(0)
    return TEMPLATES["batchnorm"].substitute(
        C=x[1], N=x[0], inner=math.prod(x[2:]), eps=cgen.c_float(k.attrs["epsilon"]))


# ---- reductions (ReduceMean & co.) and argmin ------------------------------------------------------
# One unit per output element: it reduces its elements in one fixed order (row-major over the reduced
# dims) into `acc`, so a split over threads never changes a bit. Sums and products accumulate in double.
REDUCE_TEMPLATE = Template("""\
const float *restrict xr = in0 + $base;
$acc_t acc = $init;
$loops
out0[u] = $finish;""")
REDUCE = {  # op -> (accumulator type, initial value, acc after one element v, output from acc and $n)
    "reduce_sum": ("double", "0.0", "acc + v", "(float)acc"),
    "reduce_mean": ("double", "0.0", "acc + v", "(float)(acc / $n)"),
    "reduce_sum_square": ("double", "0.0", "acc + (double)v * v", "(float)acc"),
    "reduce_l2": ("double", "0.0", "acc + (double)v * v", "(float)sqrt(acc)"),
    "reduce_prod": ("double", "1.0", "acc * v", "(float)acc"),
    "reduce_max": ("float", "-INFINITY", "(v > acc || v != v) ? v : acc", "acc"),  # a NaN acc stays NaN
    "reduce_min": ("float", "INFINITY", "(v < acc || v != v) ? v : acc", "acc"),
}


def _reduce(k: _K) -> str:
    x, out = k.shape(0), k.out.shape
    n_out = math.prod(out)
    if n_out == 0:
        k.read_only()
        return "/* empty */"
    reduced = set(ops.reduced_axes(k.attrs, len(x)))
    xs = cgen.strides(x)
    kept = [(d, s) for a, (d, s) in enumerate(zip(x, xs)) if a not in reduced]
    red = [(d, s) for a, (d, s) in enumerate(zip(x, xs)) if a in reduced]
    kd, ks = cgen.collapse([d for d, _ in kept], [[s for _, s in kept]])
    rd, rs = cgen.collapse([d for d, _ in red], [[s for _, s in red]])
    acc_t, init, step, finish = REDUCE[k.node.op]
    n = math.prod(d for d, _ in red)
    # nothing to reduce (an empty axis): every output is the initial value, finished
    loops = cgen.nest(rd, rs, Template(f"const float v = xr[$o];\nacc = {step};")) if n else "(void)xr;"
    body = REDUCE_TEMPLATE.substitute(base=cgen.flat_offset(kd, ks[0], "u") if kd else "0", acc_t=acc_t,
                                      init=init, loops=loops, finish=Template(finish).substitute(n=f"{n}.0"))
    return k.task(cgen.each_unit(body), n_out, n_out * max(n, 1) >= cgen.PARALLEL_MIN_WORK)


EMITTERS = {
    "dense": _dense, "matmul": _matmul,
    "softmax": _softmax, "log_softmax": _softmax, "argmax": _arg_best, "cast": _cast,
    "conv2d": _conv2d, "maxpool2d": _pool, "avgpool2d": _pool,
    "global_avgpool": _global_avgpool, "flatten": _copy, "reshape": _copy,
    "transpose": _transpose, "concat": _concat, "batchnorm": _batchnorm,
    **{op: _reduce for op in REDUCE}, "argmin": _arg_best,
}
ELEMENTWISE = {1: _unary, 2: _broadcasting, 3: _broadcasting}  # by arity: every op with a C expression
MOVE_OPS = {name for name, spec in ops.OPS.items() if spec.inputs[0].dtypes is ops.ANY}


def emitter(op: str):
    """The emitter of `op`, or None: looked up at each use, so an op registered later is found too."""
    spec = ops.OPS.get(op)
    if spec is not None and spec.c_expr is not None:
        return ELEMENTWISE[len(spec.inputs)]
    return EMITTERS.get(op)


def _ctype(op: str, dtype: str) -> str:
    """Elements of data-movement ops are copied as unsigned integers of their size."""
    if op in MOVE_OPS and op != "cast":
        return cgen.uint_ctype(np.dtype(dtype).itemsize)
    return cgen.ctype(dtype)


# ---------------------------------------------------------------------------


class HostBackend(Backend):
    name = "host"

    def supports(self, node: Node, graph: Graph) -> str | None:
        if emitter(node.op) is None:
            return f"op {node.op} has no host kernel"
        types = [graph.type_of(name) for name in node.inputs]
        if node.op == "cast":
            for name, t in [(node.inputs[0], types[0]), (node.output, graph.type_of(node.output))]:
                if t.dtype not in cgen.C_TYPES:
                    return f"cast converts between {', '.join(cgen.C_TYPES)}; {name} is {t}"
            return None
        if node.op in MOVE_OPS:
            for name, t in zip(node.inputs, types):
                if np.dtype(t.dtype).itemsize not in MOVE_ITEMSIZES:
                    return f"{name} is {t}: elements of {np.dtype(t.dtype).itemsize} bytes are not supported"
            return None
        spec = ops.OPS[node.op]
        for i, (name, t) in enumerate(zip(node.inputs, types)):
            takes = spec.inputs[min(i, len(spec.inputs) - 1)].dtypes
            takes = FLOAT_KERNEL_DTYPES if takes is ops.FLOAT else takes  # elementwise ops declare their C's
            if t.dtype not in takes or t.dtype not in cgen.C_TYPES:
                return f"op {node.op} needs {'/'.join(takes.names or cgen.C_TYPES)} inputs, {name} is {t}"
        return None

    def lower(self, region: Region, graph: Graph) -> CSource:
        fn = region.name
        if not cgen.is_identifier(fn):
            raise BuildError(f"host backend: region name '{fn}' is not a C identifier")
        for node in region.nodes:
            reason = self.supports(node, graph)
            if reason is not None:
                raise BuildError(f"{node.describe()}: host backend cannot lower it: {reason}")
        params = list(region.inputs) + list(region.outputs)
        where = {name: cgen.arg_data(i) for i, name in reversed(list(enumerate(params)))}
        checks = [cgen.check(fn, i, name, graph.type_of(name)) for i, name in enumerate(params)]
        # intermediates (multi-node regions) live in the workspace: a liveness plan reuses a dead one's bytes
        sizes = {n.output: graph.type_of(n.output).nbytes for n in region.nodes if n.output not in where}
        arena = plan.plan_arena([plan.Call(n.name, list(n.inputs), [n.output]) for n in region.nodes], sizes)
        for name, offset in arena.offsets.items():
            where[name] = f"((unsigned char *){cgen.arg_data(len(params))} + {offset})"
        if arena.size:
            checks.append(cgen.check_workspace(fn, len(params), arena.size))
        tasks: list[str] = []
        blocks = [self._block(node, graph, where, f"{fn}_task{i}", tasks) for i, node in enumerate(region.nodes)]
        comment = "; ".join(f"{n.name}: {n.op}({', '.join(n.inputs)}) -> {n.output}" for n in region.nodes)
        source = "".join(t + "\n" for t in tasks) + cgen.function(fn, comment, checks, blocks)
        return CSource(source=source, functions=[fn], prelude=[cgen.PRELUDE, HOST_PRELUDE],
                       workspace_bytes=arena.size)

    def _block(self, node: Node, graph: Graph, where: dict[str, str], task_name: str, tasks: list[str]) -> str:
        ins = [graph.type_of(name) for name in node.inputs]
        out = graph.type_of(node.output)
        k = _K(node, ins, out, task_name)
        body = emitter(node.op)(k)
        tasks.extend(k.tasks)
        operands = {f"in{i}": (name, t) for i, (name, t) in enumerate(zip(node.inputs, ins))}
        operands["out0"] = (node.output, out)
        bindings = [cgen.pointer(v, _ctype(node.op, t.dtype), where[name], const=v != "out0")
                    for v, (name, t) in operands.items() if v in k.reads]
        return cgen.block(f"{node.name}: {node.op} -> {out}", bindings, body)
