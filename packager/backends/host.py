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
call are in c/host_prelude.h, one constant text for every node. A node whose
body needs scratch memory (`SCRATCH`: the recurrent ops) gets it in the
region's workspace, planned beside the intermediates, bound as `scratch`.

Chains of float32 elementwise nodes (the partitioner fuses a follower into its
anchor's region: `fuses`) become one loop whose intermediates stay in
registers: GELU as x / sqrt2 -> erf -> + 1 -> * x -> * 0.5 is one pass over
memory instead of five (the 2-layer BERT at batch 64 spent 22% of its time in
those five). A chain whose operands are all of the output's shape or single
values is a flat task split over threads; otherwise a loop nest over the
broadcast dims.
"""

from __future__ import annotations

import math
from string import Template

import numpy as np

from packager import ops, plan
from packager.backends import cgen
from packager.backends.base import Backend, CSource, Region
from packager.ir import Graph, Node, TensorType

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
    const float e = dpk_expf(xr[l] - mx);
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
      const float e = dpk_expf(xr[l * $inner] - mx);
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
    # zero-padded local buffer (so no tap needs a bounds check; only what the
    # copy leaves is zeroed: the rows above and below, each row's $fill zeroes
    # its own padding columns), each row split
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
memset(pad, 0, $TOP * $RW * sizeof(float));
memset(pad + $BOTTOM * $RW, 0, ($PH - $BOTTOM) * $RW * sizeof(float));
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
                  "finish": "$acc / (float)((h1 - h0) * (w1 - w0))", "inside": "$acc / (float)($KH * $KW)",
                  "dilated": "$acc / (float)n"},  # pool_dilated counts the taps inside the input in n
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


def chain_ops() -> tuple[str, ...]:
    """The elementwise ops a chain may hold: the registry's unary and binary ones computing float32 to float32."""
    return ops.elementwise(1, "float32") + ops.elementwise(2, "float32")


def _chain_link(node: Node, follower: Node, graph: Graph) -> bool:
    """Whether `follower` (an elementwise op reading `node`'s output once) may compute in `node`'s loop: every
    tensor of both float32, the follower's output of `node`'s shape (no broadcast of the chain's value)."""
    names = [*node.inputs, node.output, *follower.inputs, follower.output]
    return (node.op in chain_ops() and follower.op in chain_ops() and follower.inputs.count(node.output) == 1
            and graph.type_of(follower.output).shape == graph.type_of(node.output).shape
            and all(graph.type_of(t).dtype == "float32" for t in names))


def _externals(nodes: list[Node]) -> list[str]:
    """The tensors a chain reads that it does not make, each once, in order."""
    made = {n.output for n in nodes}
    found: list[str] = []
    for n in nodes:
        found.extend(t for t in n.inputs if t not in made and t not in found)
    return found


def _chain_body(nodes: list[Node], graph: Graph, task_name: str) -> tuple[str, list[str]]:
    """(block body, task definitions) of a chain of elementwise nodes (in0.. its _externals, out0 its last
    node's output): each node's value a local, the last one stored."""
    out = graph.type_of(nodes[-1].output).shape
    externals = _externals(nodes)
    shapes = [tuple(graph.type_of(t).shape) for t in externals]
    flat = all(shape == tuple(out) or math.prod(shape) == 1 for shape in shapes)
    value = {t: (f"in{j}[{'i' if shape == tuple(out) else '0'}]" if flat else f"in{j}[${cgen.NEST_OFFSETS[j + 1]}]")
             for j, (t, shape) in enumerate(zip(externals, shapes))}
    lines = []
    for k, node in enumerate(nodes):
        lines.append(f"const float t{k} = {_elementwise_expr(node, 'float32', [value[t] for t in node.inputs])};")
        value[node.output] = f"t{k}"
    store = f"out0[{'i' if flat else '$o'}] = t{len(nodes) - 1};"
    if not flat:
        strides = [cgen.strides(out)] + [cgen.broadcast_strides(shape, out) for shape in shapes]
        dims, strides = cgen.collapse(out, strides)
        return cgen.nest(dims, strides, Template("{\n" + cgen.indent("\n".join([*lines, store]), "  ") + "\n}")), []
    n = math.prod(out)
    body = (f"for (int64_t i = begin * {UNARY_BLOCK}, i1 = end * {UNARY_BLOCK} < {n} ? end * {UNARY_BLOCK} : {n}; "
            f"i < i1; ++i) {{\n" + cgen.indent("\n".join([*lines, store]), "  ") + "\n}")
    what = " -> ".join(node.op for node in nodes)
    definition, call = cgen.task(task_name, f"{nodes[0].name}: {what}", ["float"] * (len(externals) + 1),
                                 -(-n // UNARY_BLOCK), body, n >= cgen.PARALLEL_MIN_WORK)
    return call, [definition]


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


def _row_fill(sw: int, qw: int, pl: int, cw: int) -> str:
    """C that copies an input row xr (cw floats) into a padded row pr split into sw phases of qw floats
    (padded column c = j * sw + phase holds input column c - pl) and zeroes the rest of the row: per
    phase, contiguous stores with literal bounds, which gcc vectorizes (a scatter over the input columns
    stays scalar)."""
    out = []
    for phase in range(sw):
        j0 = min(qw, max(0, -(-(pl - phase) // sw)))  # the j whose column is an input column: [j0, j1)
        j1 = max(j0, min(qw, -(-(pl + cw - phase) // sw)))
        base = phase * qw
        if j0 > 0:
            out.append(f"memset(pr + {base}, 0, {j0} * sizeof(float));")
        if j1 > j0:
            out.append(f"memcpy(pr + {base + j0}, xr + {j0 - pl}, {j1 - j0} * sizeof(float));" if sw == 1 else
                       f"for (int64_t j = {j0}; j < {j1}; ++j) pr[{base} + j] = xr[j * {sw} + {phase - pl}];")
        if qw > j1:
            out.append(f"memset(pr + {base + j1}, 0, {qw - j1} * sizeof(float));")
    return "\n  ".join(out)


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
    ch = min(x[2], ph - pads[0])  # input rows the plane holds, from row pads[0] on
    top = min(pads[0], ph)
    body = template.substitute(
        IC=x[1], IH=x[2], IW=x[3], OC=w[0], OCG=w[0] // g, ICG=w[1], KH=w[2], KW=w[3],
        OH=out[2], OW=out[3], SH=sh, SW=sw, DH=dh, DW=dw, PT=pads[0], PL=pads[1], bias=bias,
        PH=ph, RW=sw * qw, QW=qw, CH=ch, TOP=top, BOTTOM=top + max(ch, 0), fill=_row_fill(sw, qw, pads[1], cw))
    units = x[0] * w[0]
    return k.task(cgen.each_unit(body), units, units * math.prod(out[2:]) * math.prod(w[1:]) >= cgen.PARALLEL_MIN_WORK)


def _pool(k: _K) -> str:
    x, out = k.shape(0), k.out.shape
    (kh, kw), (sh, sw), pads = k.attrs["kernel"], k.attrs["strides"], k.attrs["pads"]
    pool = POOL["avgpool2d_include_pad" if k.attrs.get("count_include_pad") else k.node.op]
    planes = x[0] * x[1]  # the task's units
    if list(k.attrs["dilations"]) != [1, 1]:
        return _pool_dilated(k, pool)
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


# ---- recurrent: lstm, gru, rnn (ONNX LSTM, GRU, RNN) -----------------------------------------------
# Per direction: x W^T for every step as one dense product into the scratch (rows in x's order), then
# the steps in time order (reversed for the reverse direction), each one dense product h R^T and the
# gates, per (batch row, hidden unit). Single-threaded: a step needs the one before it. The gate text is
# generated per direction (its activations and time order are constants). A node computes one output
# (`returns`): ONNX nodes whose outputs are all read run the recurrence once per output.
RNN_TEMPLATE = Template("""\
{ /* direction $d ($order) */
  dpk_host_dense(in0, in1 + $W_off, (const float *)0, xw, $SB, $GH, $I);
  for (int64_t b = 0; b < $B; ++b)
    for (int64_t j = 0; j < $H; ++j) {
      h[b * $H + j] = $h0;$c0
    }
  for (int64_t s = 0; s < $S; ++s) {
    const int64_t t = $t;
    dpk_host_dense(h, in2 + $R_off, (const float *)0, hr, $B, $NR, $H);
$step
  }$last
}""")
RNN_GATE_LOOP = Template("""\
for (int64_t b = 0; b < $B; ++b) {
  const float *restrict xg = xw + ($row) * $GH;
  const float *restrict hg = hr + b * $NR;
  for (int64_t j = 0; j < $H; ++j) {
$body
  }
}""")


def _rnn_sizes(k: _K) -> dict[str, int]:
    seq, batch, inp, hidden, dirs = ops.rnn_dims(k.node, k.shape(0), k.shape(1))
    gh = len(ops.RNN_GATES[k.node.op]) * hidden
    # GRU without linear_before_reset multiplies r * h by R_h: the step's first product is z and r only
    nr = 2 * hidden if k.node.op == "gru" and not k.attrs["linear_before_reset"] else gh
    return dict(S=seq, B=batch, I=inp, H=hidden, D=dirs, GH=gh, NR=nr, SB=seq * batch)


def _rnn_scratch(k: _K) -> list[tuple[str, int]]:
    """The scratch arrays (name, floats): x W^T, h R^T, the state h, the cell c (lstm), r * h and its
    product with R_h (gru without linear_before_reset)."""
    n = _rnn_sizes(k)
    parts = [("xw", n["SB"] * n["GH"]), ("hr", n["B"] * n["NR"]), ("h", n["B"] * n["H"])]
    if k.node.op == "lstm":
        parts.append(("c", n["B"] * n["H"]))
    if n["NR"] != n["GH"]:
        parts += [("rh", n["B"] * n["H"]), ("rhr", n["B"] * n["H"])]
    return parts


def _rnn_scratch_bytes(k: _K) -> int:
    return 4 * max(1, sum(size for _, size in _rnn_scratch(k)))


class _Direction:
    """One direction `d` of a recurrent node: the C text of its gate sums, clipping and activations, for
    one (batch row b, hidden unit j) of a step (xg: the row's x W^T, hg: its h R^T)."""

    def __init__(self, k: _K, n: dict[str, int], d: int):
        self.k, self.n, self.d, self.H, self.GH = k, n, d, n["H"], n["GH"]
        acts, per = k.attrs["activations"], len(ops.RNN_DEFAULT_ACTIVATIONS[k.node.op])
        self.acts = acts[d * per:(d + 1) * per] if len(acts) > per else acts  # one list, or one per direction

    def act(self, slot: int, operand: str) -> str:
        """Activation `slot` (f, g, h) applied to `operand`: the registry op's C with its default attributes."""
        name = ops.RNN_ACTIVATIONS[self.acts[slot]]
        node = Node(name, ["x"], "y", {}, name)
        ops.normalize(node)
        return f"({_elementwise_expr(node, 'float32', [operand])})"  # an operand of a product: a ternary needs the parentheses

    def bias(self, g: int, recurrent: bool) -> str:
        """` + Wb[g]` (or Rb[g]) of this direction for unit j, or nothing without a bias input."""
        at = self.d * 2 * self.GH + (self.GH if recurrent else 0) + g * self.H
        return f" + in3[{at} + j]" if len(self.k.ins) > 3 else ""

    def pre(self, g: int, recurrent: str | None = None) -> str:
        """Gate g's sum: x W^T + h R^T (or `recurrent`) + Wb + Rb."""
        rec = recurrent or f"hg[{g * self.H} + j]"
        return f"xg[{g * self.H} + j] + {rec}{self.bias(g, False)}{self.bias(g, True)}"

    def peephole(self, g: int, cell: str) -> str:
        return f" + in6[{self.d * 3 * self.H + g * self.H} + j] * {cell}" if len(self.k.ins) > 6 else ""

    def gate(self, var: str, total: str, slot: int, value: str) -> list[str]:
        """`value` = activation `slot` of `total`, clipped to [-clip, clip] first if clip is finite."""
        lines = [f"float {var} = {total};"]
        clip = self.k.attrs["clip"]
        if clip != math.inf:
            c = cgen.c_float(clip)
            lines.append(f"{var} = {var} < -{c} ? -{c} : ({var} > {c} ? {c} : {var});")
        return lines + [f"const float {value} = {self.act(slot, var)};"]


def _rnn_cell(x: _Direction) -> list[str]:
    return x.gate("ai", x.pre(0), 0, "hn")


def _lstm_cell(x: _Direction) -> list[str]:
    """Gates iofc (0 1 2 3), peepholes iof; input_forget couples f to 1 - i (as onnxruntime)."""
    forget = ["const float f = 1.0f - i;"] if x.k.attrs["input_forget"] else \
        x.gate("af", x.pre(2) + x.peephole(2, "cp"), 0, "f")
    return [f"const float cp = c[b * {x.H} + j];", *x.gate("ai", x.pre(0) + x.peephole(0, "cp"), 0, "i"), *forget,
            *x.gate("ag", x.pre(3), 1, "g"), "const float cn = f * cp + i * g;",
            *x.gate("ao", x.pre(1) + x.peephole(1, "cn"), 0, "o"), f"c[b * {x.H} + j] = cn;",
            f"const float hn = o * {x.act(2, 'cn')};"]


def _gru_cell(x: _Direction) -> list[str]:
    """Gates zrh (0 1 2). linear_before_reset: r * (h R_h^T + Rb_h); else (r * h) R_h^T, which the reset
    pass (_gru_reset) left in rhr."""
    H = x.H
    if x.k.attrs["linear_before_reset"]:
        reset = x.gate("ar", x.pre(1), 0, "r")
        candidate = f"xg[{2 * H} + j]{x.bias(2, False)} + r * (hg[{2 * H} + j]{x.bias(2, True)})"
    else:
        reset, candidate = [], x.pre(2, f"rhr[b * {H} + j]")
    return [*x.gate("az", x.pre(0), 0, "z"), *reset, *x.gate("ah", candidate, 1, "g"),
            f"const float hn = (1.0f - z) * g + z * h[b * {H} + j];"]


def _gru_reset(x: _Direction) -> list[str]:
    """GRU without linear_before_reset: r first, and r * h into rh (then one dense product by R_h)."""
    return [*x.gate("ar", x.pre(1), 0, "r"), f"rh[b * {x.H} + j] = r * h[b * {x.H} + j];"]


RNN_CELLS = {"lstm": _lstm_cell, "gru": _gru_cell, "rnn": _rnn_cell}  # op -> one (b, j) of a step, ending in hn


def _rnn_direction(k: _K, n: dict[str, int], d: int) -> str:
    x, H, D, B, S = _Direction(k, n, d), n["H"], n["D"], n["B"], n["S"]
    reverse, layout0 = k.attrs["direction"] == 1 or d == 1, k.attrs["layout"] == 0
    state = f"({d} * {B} + b) * {H} + j" if layout0 else f"(b * {D} + {d}) * {H} + j"  # in initial_h, Y_h...
    row = f"t * {B} + b" if layout0 else f"b * {S} + t"  # of x, and of x W^T
    y = f"((t * {D} + {d}) * {B} + b) * {H} + j" if layout0 else f"((b * {S} + t) * {D} + {d}) * {H} + j"
    cell = RNN_CELLS[k.node.op](x) + ([f"out0[{y}] = hn;"] if k.attrs["returns"] == 0 else []) + \
        [f"h[b * {H} + j] = hn;"]
    loops = [RNN_GATE_LOOP.substitute(n, row=row, body=cgen.indent("\n".join(cell), "    "))]
    if n["NR"] != n["GH"]:
        r_h = d * n["GH"] * H + 2 * H * H  # R_h of this direction
        loops.insert(0, RNN_GATE_LOOP.substitute(n, row=row, body=cgen.indent("\n".join(_gru_reset(x)), "    ")) +
                     f"\ndpk_host_dense(rh, in2 + {r_h}, (const float *)0, rhr, {B}, {H}, {H});")
    initial = lambda i: f"in{i}[{state}]" if len(k.ins) > i else "0.0f"  # noqa: E731
    last = ""
    if k.attrs["returns"]:
        last = (f"\n  for (int64_t b = 0; b < {B}; ++b)\n    for (int64_t j = 0; j < {H}; ++j) "
                f"out0[{state}] = {'h' if k.attrs['returns'] == 1 else 'c'}[b * {H} + j];")
    return RNN_TEMPLATE.substitute(
        n, d=d, order="reverse" if reverse else "forward", W_off=d * n["GH"] * n["I"], R_off=d * n["GH"] * H,
        t=f"{S - 1} - s" if reverse else "s", h0=initial(4),
        c0=f"\n      c[b * {H} + j] = {initial(5)};" if k.node.op == "lstm" else "",
        step=cgen.indent("\n".join(loops), "    "), last=last)


def _recurrent(k: _K) -> str:
    n = _rnn_sizes(k)
    offsets, at = [], 0
    for name, size in _rnn_scratch(k):
        offsets.append(f"float *restrict {name} = scratch + {at};")
        at += size
    return "\n".join(offsets + [_rnn_direction(k, n, d) for d in range(n["D"])])


SCRATCH = {"lstm": _rnn_scratch_bytes, "gru": _rnn_scratch_bytes, "rnn": _rnn_scratch_bytes}  # op -> bytes
# ---- data movement at run time: gather, gather_elements, slice, expand, tile, depth_to_space,
# space_to_depth, pad, trilu. Elements move as unsigned ints of their size (_ctype); index inputs are bound
# that way too and read back through their signed type. Slice, expand, tile and the depth/space ops are one
# strided copy: the output walked as a view (dims) while the input walks strides from a base offset.
# An index out of range is reported (set_error) and the function returns -1 before anything is written.
MOVE_TEMPLATES = {
    "copy_strided": Template("out0[$o] = in0[$base + $a];"),
    "index": Template("""\
int64_t ix = (int64_t)($itype)in1[$at];
if (ix < 0) ix += $n;
if (ix < 0 || ix >= $n) {
  DPK_HOST_ERROR("%s: index %lld at position %lld is out of range for axis $axis of size $n (allowed -$n..$last)",
                 "$node", (long long)(($itype)in1[$at]), (long long)($at));
  return -1;
}"""),
    "gather": Template("""\
for (int64_t j = 0; j < $m; ++j) {
$check
}
for (int64_t r = 0; r < $outer; ++r)
  for (int64_t j = 0; j < $m; ++j) {
    int64_t ix = (int64_t)($itype)in1[j];
    if (ix < 0) ix += $n;
    memcpy(out0 + (r * $m + j) * $inner, in0 + (r * $n + ix) * $inner, $inner * sizeof *out0);
  }"""),
    "gather_elements": Template("""\
for (int64_t j = 0; j < $m; ++j) {
$check
}
$loops"""),
    "gather_element": Template("""\
int64_t ix = (int64_t)($itype)in1[$$o];
if (ix < 0) ix += $n;
out0[$$o] = in0[$$a + ix * $stride];"""),
    # one loop per dim; s<d> is the input position output position c<d> reads (negative: the pad value)
    "pad_dim": Template("""\
for (int64_t c$d = 0; c$d < $out; ++c$d) {
  const int64_t s$d = dpk_host_pad_source(c$d - $begin, $size, $mode);"""),
    "trilu": Template("""\
for (int64_t b = 0; b < $batch; ++b)
  for (int64_t r = 0; r < $rows; ++r)
    for (int64_t c = 0; c < $cols; ++c) {
      const int64_t i = (b * $rows + r) * $cols + c;
      out0[i] = c - r $keep $k ? in0[i] : 0;
    }"""),
}
PAD_MODE_CODES = {mode: code for code, mode in enumerate(ops.PAD_MODES)}  # dpk_host_pad_source's `mode`
# ---- normalization (LayerNormalization, InstanceNormalization, GroupNormalization), LRN, CumSum, TopK ------
# One unit per row of layer_norm: its statistics in one pass (sum and sum of squares of x - x[0], in double,
# in 8 lanes of fixed order: the shift keeps the sum of squares from cancelling when |mean| >> std), then
# one pass writing ((x - x[0]) - (mean - x[0])) * inv * scale + bias. Rows are the only split, so the
# thread count changes no bit.
NORM_TEMPLATES = {
    "layer_norm": Template("""\
const float *restrict xr = in0 + u * $inner;
float *restrict yr = out0 + u * $inner;
const float shift = xr[0];
double s[8] = {0.0}, q[8] = {0.0};
int64_t i = 0;
for (; i + 8 <= $inner; i += 8)
  for (int64_t l = 0; l < 8; ++l) {
    const double d = (double)xr[i + l] - shift;
    s[l] += d;
    q[l] += d * d;
  }
for (; i < $inner; ++i) {
  const double d = (double)xr[i] - shift;
  s[0] += d;
  q[0] += d * d;
}
const double dm = (((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))) / $inner;
const double var = (((q[0] + q[1]) + (q[2] + q[3])) + ((q[4] + q[5]) + (q[6] + q[7]))) / $inner - dm * dm;
const float dmf = (float)dm; /* x - mean is (x - shift) - dmf: x - shift is exact when x is near the shift */
const float inv = (float)(1.0 / sqrt((var > 0.0 ? var : 0.0) + $eps));
$affine"""),
    # the parameter index varies along the row (S == 1): LayerNormalization's scale over the last axes
    "affine_along": Template("""\
const int64_t c0 = $first;
for (int64_t rep = 0; rep < $reps; ++rep)
  for (int64_t c = 0; c < $L; ++c)
    yr[rep * $L + c] = ((xr[rep * $L + c] - shift) - dmf) * (inv * in1[c0 + c]) + $bias;"""),
    # one parameter per segment of $seg elements (InstanceNormalization's and GroupNormalization's channels)
    "affine_segments": Template("""\
for (int64_t j = 0; j < $nseg; ++j) {
  const int64_t c = ((u * $inner + j * $seg) / $S) % $C;
  const float a = inv * in1[c], b = $bias;
  for (int64_t e = j * $seg; e < (j + 1) * $seg; ++e) yr[e] = ((xr[e] - shift) - dmf) * a + b;
}"""),
    # one unit per (n, c) plane: the window's squares summed in a local chunk, channel by channel
    "lrn": Template("""\
const int64_t n = u / $C, c = u % $C;
const int64_t c_lo = c - $before < 0 ? 0 : c - $before, c_hi = c + $after > $C - 1 ? $C - 1 : c + $after;
const float *restrict xp = in0 + u * $HW;
float *restrict yp = out0 + u * $HW;
for (int64_t s0 = 0; s0 < $HW; s0 += $chunk) {
  const int64_t s1 = s0 + $chunk < $HW ? s0 + $chunk : $HW;
  float acc[$chunk];
  for (int64_t s = s0; s < s1; ++s) acc[s - s0] = 0.0f;
  for (int64_t ch = c_lo; ch <= c_hi; ++ch) {
    const float *restrict xc = in0 + (n * $C + ch) * $HW;
    for (int64_t s = s0; s < s1; ++s) acc[s - s0] += xc[s] * xc[s];
  }
  for (int64_t s = s0; s < s1; ++s) yp[s] = xp[s] / powf($bias + $scale * acc[s - s0], $beta);
}"""),
    # one unit per outer index; the running sum walks the axis in order (or from its end), float32 as ONNX's
    # reference and onnxruntime add
    "cumsum": Template("""\
const float *restrict xr = in0 + u * $L * $inner;
float *restrict yr = out0 + u * $L * $inner;
for (int64_t j = 0; j < $inner; ++j) yr[$first * $inner + j] = $start;
for (int64_t t = 1; t < $L; ++t) {
  const int64_t l = $at, p = $prev;
  for (int64_t j = 0; j < $inner; ++j) yr[l * $inner + j] = yr[p * $inner + j] + xr[$add * $inner + j];
}"""),
    # one unit per (outer, inner) position: the output slice is the sorted list of the k best seen so far;
    # a value goes in after every equal one, so equal values keep the lower index first
    "top_k": Template("""\
const int64_t o = u / $inner, j = u % $inner;
const float *restrict xr = in0 + o * $L * $inner + j;
$T *restrict yr = out0 + o * $K * $inner + j;
int64_t count = 0;
for (int64_t l = 0; l < $L; ++l) {
  const float v = xr[l * $inner];
  int64_t pos;
  if (count < $K) pos = count++;
  else if ($better_last) pos = $K - 1;
  else continue;
  for (; pos > 0 && $better_prev; --pos) yr[pos * $inner] = yr[(pos - 1) * $inner];
  yr[pos * $inner] = $entry;
}"""),
}
LRN_CHUNK = 256  # plane elements whose window sums live in a local array at once
# largest -> when value $a ranks before $b (NaN counts as larger than any number, as in argmax)
TOP_K_BETTER = {1: "($a > $b || ($a != $a && $b == $b))", 0: "($b > $a || ($b != $b && $a == $a))"}


def _empty(k: _K) -> str:
    k.read_only()
    return "/* empty */"


def _strided_copy(k: _K, dims, in_strides, base: int = 0) -> str:
    """out0, walked compactly as a view of `dims`, gets in0[base + sum(index * in_strides)]."""
    if 0 in dims:
        return _empty(k)
    dims, strides = cgen.collapse(list(dims), [cgen.strides(dims), list(in_strides)])
    return cgen.nest(dims, strides, MOVE_TEMPLATES["copy_strided"], base=base)


def _slice(k: _K) -> str:
    x, xs = k.shape(0), cgen.strides(k.shape(0))
    spans = [ops.slice_range(*a, d) for *a, d in zip(k.attrs["starts"], k.attrs["ends"], k.attrs["steps"], x)]
    base = sum(r.start * s for r, s in zip(spans, xs) if len(r))
    return _strided_copy(k, k.out.shape, [r.step * s for r, s in zip(spans, xs)], base)


def _expand(k: _K) -> str:
    return _strided_copy(k, k.out.shape, cgen.broadcast_strides(k.shape(0), k.out.shape))


def _tile(k: _K) -> str:
    """The output as [r0, d0, r1, d1, ...]: the input's strides, 0 along each repeat."""
    x, xs = k.shape(0), cgen.strides(k.shape(0))
    dims = [v for r, d in zip(k.attrs["repeats"], x) for v in (r, d)]
    return _strided_copy(k, dims, [v for s in xs for v in (0, s)])


def _permuted_view(k: _K, view, perm) -> str:
    """The input read as shape `view`, transposed by `perm`, is the output (a reshape around a transpose)."""
    vs = cgen.strides(view)
    return _strided_copy(k, [view[p] for p in perm], [vs[p] for p in perm])


def _depth_to_space(k: _K) -> str:
    (n, c, h, w), b = k.shape(0), k.attrs["blocksize"]
    if k.attrs["mode"] == "DCR":  # channel = (bh * b + bw) * C' + c'
        return _permuted_view(k, [n, b, b, c // (b * b), h, w], [0, 3, 4, 1, 5, 2])
    return _permuted_view(k, [n, c // (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3])  # CRD: c' * b * b + bh * b + bw


def _space_to_depth(k: _K) -> str:
    (n, c, h, w), b = k.shape(0), k.attrs["blocksize"]
    perm = [0, 3, 5, 1, 2, 4] if k.attrs["mode"] == "DCR" else [0, 1, 3, 5, 2, 4]
    return _permuted_view(k, [n, c, h // b, b, w // b, b], perm)


def _index_check(k: _K, n: int, axis: int) -> str:
    """Index in1[j] must lie in -n..n-1, else the function reports it and returns -1."""
    text = MOVE_TEMPLATES["index"].substitute(itype=cgen.ctype(k.ins[1].dtype), at="j", n=n, last=n - 1,
                                              axis=axis, node=cgen.c_string(f"{k.node.name} ({k.node.op})"))
    return cgen.indent(text, "  ")


def _gather(k: _K) -> str:
    x = k.shape(0)
    axis = ops.axis_of(k.attrs["axis"], len(x))
    if math.prod(k.out.shape) == 0:
        return _empty(k)
    n = x[axis]
    return MOVE_TEMPLATES["gather"].substitute(m=math.prod(k.shape(1)), n=n, outer=math.prod(x[:axis]),
                                               inner=math.prod(x[axis + 1:]), itype=cgen.ctype(k.ins[1].dtype),
                                               check=_index_check(k, n, axis))


def _gather_elements(k: _K) -> str:
    x, idx = k.shape(0), k.shape(1)
    axis = ops.axis_of(k.attrs["axis"], len(x))
    if 0 in idx:
        return _empty(k)
    xs = cgen.strides(x)
    # out0 and indices share the offset $o (same shape); x's walks every dim but axis, where the index moves it
    dims, strides = cgen.collapse(list(idx), [cgen.strides(idx), [0 if d == axis else s for d, s in enumerate(xs)]])
    move = Template(MOVE_TEMPLATES["gather_element"].substitute(itype=cgen.ctype(k.ins[1].dtype), n=x[axis],
                                                                stride=xs[axis]))
    return MOVE_TEMPLATES["gather_elements"].substitute(m=math.prod(idx), check=_index_check(k, x[axis], axis),
                                                        loops=cgen.nest(dims, strides, move))


def _pad(k: _K) -> str:
    """One loop per output dim, each mapping its position to the input's (dpk_host_pad_source)."""
    x, out, pads = k.shape(0), k.out.shape, k.attrs["pads"]
    if 0 in out:
        return _empty(k)
    value = "in1[0]" if len(k.ins) == 2 else "0"
    if not out:
        return "out0[0] = in0[0];"
    mode = PAD_MODE_CODES[k.attrs["mode"]]
    if 0 in x:  # constant mode over an empty input: only the value
        k.read_only(*(["in1"] if len(k.ins) == 2 else []), "out0")
        return f"for (int64_t o = 0; o < {math.prod(out)}; ++o) out0[o] = {value};"
    # negative pads crop first (as onnxruntime does; the spec's reference, np.pad, takes none): the modes then
    # pad the cropped input, `size` long from offset `crop` along each dim
    ndim, xs = len(x), cgen.strides(x)
    crop = [max(0, -p) for p in pads]
    loops = [cgen.indent(MOVE_TEMPLATES["pad_dim"].substitute(
        d=d, out=o, begin=max(0, pads[d]), size=x[d] - crop[d] - crop[ndim + d], mode=mode), "  " * d)
        for d, o in enumerate(out)]
    inside = " && ".join(f"s{d} >= 0" for d in range(ndim))
    source = " + ".join([f"s{d} * {s}" for d, s in enumerate(xs)] + [str(sum(c * s for c, s in zip(crop, xs)))])
    move = f"out0[o++] = {inside} ? in0[{source}] : {value};"
    closing = ["  " * d + "}" for d in range(len(out) - 1, -1, -1)]
    return "\n".join(["int64_t o = 0;", *loops, "  " * len(out) + move, *closing])


def _trilu(k: _K) -> str:
    x = k.shape(0)
    if 0 in x:
        return _empty(k)
    return MOVE_TEMPLATES["trilu"].substitute(batch=math.prod(x[:-2]), rows=x[-2], cols=x[-1], k=k.attrs["k"],
                                              keep=">=" if k.attrs["upper"] else "<=")


MOVE_EMITTERS = {
    "gather": _gather, "gather_elements": _gather_elements, "slice": _slice, "expand": _expand, "tile": _tile,
    "pad": _pad, "depth_to_space": _depth_to_space, "space_to_depth": _space_to_depth, "trilu": _trilu,
}
def _layer_norm(k: _K) -> str:
    x = k.shape(0)
    axis = ops.axis_of(k.attrs["axis"], len(x))
    rows, inner = math.prod(x[:axis]), math.prod(x[axis:])
    if rows * inner == 0:
        return _empty(k)
    S, C = ops.affine_run(k.shape(1), x)
    bias_at = "in2[$c]" if len(k.ins) == 3 else "0.0f"
    if S == 1:  # C divides the row, or the row divides C (then the row starts at its own offset)
        L = min(C, inner)
        first = f"(u * {inner}) % {C}" if C > inner else "0"
        affine = NORM_TEMPLATES["affine_along"].substitute(
            first=first, reps=inner // L, L=L, bias=Template(bias_at).substitute(c="c0 + c"))
    else:  # S divides the row, or the row divides S
        seg = min(S, inner)
        affine = NORM_TEMPLATES["affine_segments"].substitute(
            nseg=inner // seg, seg=seg, inner=inner, S=S, C=C, bias=Template(bias_at).substitute(c="c"))
    body = NORM_TEMPLATES["layer_norm"].substitute(inner=inner, eps=repr(float(k.attrs["epsilon"])), affine=affine)
    return k.task(cgen.each_unit(body), rows, rows * inner >= cgen.PARALLEL_MIN_WORK)


def _lrn(k: _K) -> str:
    x = k.shape(0)
    planes, hw = x[0] * x[1], math.prod(x[2:])
    if planes * hw == 0:
        return _empty(k)
    size = k.attrs["size"]
    body = NORM_TEMPLATES["lrn"].substitute(
        C=x[1], HW=hw, before=(size - 1) // 2, after=size // 2, chunk=min(hw, LRN_CHUNK),
        bias=cgen.c_float(k.attrs["bias"]), scale=cgen.c_float(k.attrs["alpha"] / size),
        beta=cgen.c_float(k.attrs["beta"]))
    return k.task(cgen.each_unit(body), planes, planes * hw * size >= cgen.PARALLEL_MIN_WORK)


def _cumsum(k: _K) -> str:
    x = k.shape(0)
    axis = ops.axis_of(k.attrs["axis"], len(x))
    outer, L, inner = math.prod(x[:axis]), x[axis], math.prod(x[axis + 1:])
    if outer * L * inner == 0:
        return _empty(k)
    reverse, exclusive = k.attrs["reverse"], k.attrs["exclusive"]
    first = L - 1 if reverse else 0
    body = NORM_TEMPLATES["cumsum"].substitute(
        L=L, inner=inner, first=first, start="0.0f" if exclusive else f"xr[{first} * {inner} + j]",
        at=f"{L - 1} - t" if reverse else "t", prev="l + 1" if reverse else "l - 1",
        add="p" if exclusive else "l")
    return k.task(cgen.each_unit(body), outer, outer * L * inner >= cgen.PARALLEL_MIN_WORK)


def _top_k(k: _K) -> str:
    x = k.shape(0)
    axis = ops.axis_of(k.attrs["axis"], len(x))
    outer, L, inner, K = math.prod(x[:axis]), x[axis], math.prod(x[axis + 1:]), k.attrs["k"]
    if outer * inner * K == 0:
        return _empty(k)
    better = Template(TOP_K_BETTER[k.attrs["largest"]])
    indices = k.node.op == "top_k_indices"
    key = (lambda p: f"xr[yr[{p}] * {inner}]") if indices else (lambda p: f"yr[{p}]")
    body = NORM_TEMPLATES["top_k"].substitute(
        inner=inner, L=L, K=K, T=cgen.ctype(k.out.dtype), entry="l" if indices else "v",
        better_last=better.substitute(a="v", b=key(f"({K} - 1) * {inner}")),
        better_prev=better.substitute(a="v", b=key(f"(pos - 1) * {inner}")))
    units = outer * inner
    return k.task(cgen.each_unit(body), units, units * L * min(K, 8) >= cgen.PARALLEL_MIN_WORK)


NORM_EMITTERS = {"layer_norm": _layer_norm, "lrn": _lrn, "cumsum": _cumsum, "top_k": _top_k,
                 "top_k_indices": _top_k}
# ---- the convolution family: dilated pools, transposed convolution, resize -----------------------------

CONV_FAMILY_TEMPLATES = {
    # A pool whose taps are dilations apart: per output, the taps inside the input (padding is skipped);
    # `n` counts them for the average.
    "pool_dilated": Template("""\
for (int64_t p = begin; p < end; ++p) {
  const float *restrict xp = in0 + p * ($IH * $IW);
  float *restrict yp = out0 + p * ($OH * $OW);
  for (int64_t oh = 0; oh < $OH; ++oh)
    for (int64_t ow = 0; ow < $OW; ++ow) {
      float acc = $init;
      int64_t n = 0;
      for (int64_t kh = 0; kh < $KH; ++kh) {
        const int64_t ih = oh * $SH - ($PT) + kh * $DH;
        if (ih < 0 || ih >= $IH) continue;
        for (int64_t kw = 0; kw < $KW; ++kw) {
          const int64_t iw = ow * $SW - ($PL) + kw * $DW;
          if (iw < 0 || iw >= $IW) continue;
          const float v = xp[ih * $IW + iw];
          $accumulate
          ++n;
        }
      }
      (void)n;
      yp[oh * $OW + ow] = $finish;
    }
}"""),
    # Transposed convolution, one unit per output plane (image n, channel oc): the plane starts at the
    # bias, then every (input channel, kh, kw) tap scatters w * (input row) onto the output row it lands
    # on (oh = ih * SH + kh * DH - PT), over the inputs whose output lies inside the plane. The unit owns
    # its plane and adds in a fixed order, so any split over threads gives the same bits.
    "conv_transpose2d": Template("""\
const int64_t n = u / $OC, oc = u % $OC, g = oc / $OCG, j = oc % $OCG;
float *restrict yp = out0 + u * ($OH * $OW);
const float bv = $bias;
for (int64_t i = 0; i < $OH * $OW; ++i) yp[i] = bv;
for (int64_t ic = 0; ic < $ICG; ++ic) {
  const float *restrict xp = in0 + (n * $IC + g * $ICG + ic) * ($IH * $IW);
  const float *restrict wp = in1 + ((g * $ICG + ic) * $OCG + j) * ($KH * $KW);
  for (int64_t kh = 0; kh < $KH; ++kh) {
    const int64_t ih0 = dpk_host_first(($PT) - kh * $DH, $SH);
    const int64_t ih1 = dpk_host_end($OH + ($PT) - kh * $DH, $SH, $IH);
    for (int64_t kw = 0; kw < $KW; ++kw) {
      const float wv = wp[kh * $KW + kw];
      const int64_t iw0 = dpk_host_first(($PL) - kw * $DW, $SW);
      const int64_t iw1 = dpk_host_end($OW + ($PL) - kw * $DW, $SW, $IW);
      const int64_t shift = kw * $DW - ($PL);
      for (int64_t ih = ih0; ih < ih1; ++ih) {
        float *restrict yr = yp + (ih * $SH + kh * $DH - ($PT)) * $OW;
        const float *restrict xr = xp + ih * $IW;
        for (int64_t iw = iw0; iw < iw1; ++iw) yr[iw * $SW + shift] += wv * xr[iw];
      }
    }
  }
}"""),
}


def _pool_dilated(k: _K, pool: dict) -> str:
    x, out = k.shape(0), k.out.shape
    (kh, kw), (sh, sw), (dh, dw), pads = k.attrs["kernel"], k.attrs["strides"], k.attrs["dilations"], k.attrs["pads"]
    # the average divides by the taps inside the input (n), or by the kernel's size with count_include_pad
    pool = {key: Template(text).substitute(KH=kh, KW=kw, acc="acc") for key, text in pool.items()}
    finish = pool.get("dilated", pool["finish"])
    body = CONV_FAMILY_TEMPLATES["pool_dilated"].substitute(
        init=pool["init"], accumulate=pool["accumulate"], finish=finish, IH=x[2], IW=x[3], OH=out[2], OW=out[3],
        KH=kh, KW=kw, SH=sh, SW=sw, DH=dh, DW=dw, PT=pads[0], PL=pads[1])
    planes = x[0] * x[1]
    return k.task(body, planes, planes * out[2] * out[3] * kh * kw >= cgen.PARALLEL_MIN_WORK)


def _conv_transpose2d(k: _K) -> str:
    x, w, out = k.shape(0), k.shape(1), k.out.shape
    (sh, sw), (dh, dw), pads, g = k.attrs["strides"], k.attrs["dilations"], k.attrs["pads"], k.attrs["groups"]
    body = CONV_FAMILY_TEMPLATES["conv_transpose2d"].substitute(
        IC=x[1], IH=x[2], IW=x[3], OC=out[1], OCG=w[1], ICG=x[1] // g, KH=w[2], KW=w[3], OH=out[2], OW=out[3],
        SH=sh, SW=sw, DH=dh, DW=dw, PT=pads[0], PL=pads[1], bias="in2[oc]" if len(k.ins) == 3 else "0.0f")
    units = out[0] * out[1]
    return k.task(cgen.each_unit(body), units, math.prod(x) * math.prod(w[1:]) >= cgen.PARALLEL_MIN_WORK)


def resize_taps(n_in: int, n_out: int, scale: float, attrs: dict, roi: tuple[float, float] | None):
    """One dimension of a resize: (index [n_out, T], weight [n_out, T], outside [n_out]): output i is
    sum_t weight[i, t] * input[index[i, t]], or extrapolation_value where outside[i]. The arithmetic is
    ONNX's reference implementation's (onnx.reference.ops.op_resize, in float64): the source coordinate
    x of each output, the filter's taps around it (the nearest ones, ties to the lower index), the input's
    edge repeated past its ends."""
    coords = attrs["coordinate_transformation_mode"]
    y = np.arange(n_out, dtype=np.float64)
    length = scale * n_in  # the reference's output length: a float (align_corners divides by it)
    if coords == "align_corners":
        x = np.zeros(n_out) if length == 1 else y * (n_in - 1) / (length - 1)
    elif coords == "asymmetric":
        x = y / scale
    elif coords == "tf_crop_and_resize":
        lo, hi = roi
        x = np.full(n_out, (hi - lo) * (n_in - 1) / 2) if length == 1 else y * (hi - lo) * (n_in - 1) / (length - 1)
        x = x + lo * (n_in - 1)
    elif coords == "pytorch_half_pixel":
        x = np.full(n_out, -0.5) if length == 1 else (y + 0.5) / scale - 0.5
    elif coords == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif coords == "half_pixel_symmetric":
        x = n_in / 2 * (1 - n_out / length) + (y + 0.5) / scale - 0.5
    else:  # tf_half_pixel_for_nearest (the spec's formula; the reference has none)
        x = (y + 0.5) / scale
    outside = (x < 0) | (x > n_in - 1) if coords == "tf_crop_and_resize" else np.zeros(n_out, bool)
    base = np.floor(x)
    ratio = np.where(x == base, 1.0, x - base)  # in (0, 1]: the lower neighbour is preferred
    weight = np.array([_resize_coeffs(float(r), scale, attrs) for r in ratio]).reshape(n_out, -1)
    taps = weight.shape[1]
    pad = -(-taps // 2)
    xp = x + pad
    p = np.floor(xp)
    frac = xp - p
    if taps % 2 == 0:
        offset = np.where(frac == 0, -(taps // 2), -(taps // 2) + 1)
    else:
        offset = np.where(frac <= 0.5, -((taps - 1) // 2), -((taps - 1) // 2) + 1)
    index = (p + offset).astype(np.int64)[:, None] + np.arange(taps)[None, :] - pad
    if attrs["exclude_outside"]:
        weight = np.where((index < 0) | (index >= n_in), 0.0, weight)
        total = weight.sum(axis=1, keepdims=True)
        weight = weight / np.where(total == 0, 1.0, total)
    return np.clip(index, 0, n_in - 1), weight, outside


def _resize_coeffs(ratio: float, scale: float, attrs: dict) -> list[float]:
    """The filter's weights at `ratio` (the reference's _nearest/_linear/_cubic[_antialias]_coeffs)."""
    mode = attrs["mode"]
    if mode == "nearest":
        if ratio == 1.0:
            return [0.0, 1.0]
        nearest = attrs["nearest_mode"]
        up = {"round_prefer_floor": ratio > 0.5, "round_prefer_ceil": ratio >= 0.5, "floor": False, "ceil": True}[nearest]
        return [0.0, 1.0] if up else [1.0, 0.0]
    if not attrs["antialias"]:
        if mode == "linear":
            return [1 - ratio, ratio]
        a = attrs["cubic_coeff_a"]
        r1, s = ratio + 1, 1 - ratio
        return [((a * r1 - 5 * a) * r1 + 8 * a) * r1 - 4 * a, ((a + 2) * ratio - (a + 3)) * ratio * ratio + 1,
                ((a + 2) * s - (a + 3)) * s * s + 1, ((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a]
    scale = min(scale, 1.0)  # antialias widens the filter only when shrinking
    if mode == "linear":
        start = int(np.floor(-1 / scale) + 1)
        args = (np.arange(start, 2 - start) - ratio) * scale
        coeffs = np.clip(1 - np.abs(args), 0, 1)
    else:
        a = attrs["cubic_coeff_a"]
        start = int(np.floor(-2 / scale) + 1)
        t = np.abs(scale * (np.arange(start, 2 - start) - ratio))
        coeffs = np.where(t <= 1, (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1,
                          np.where(t < 2, a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a, 0.0))
    return list(coeffs / coeffs.sum())


def _is_identity(n_in: int, n_out: int, scale: float, roi: tuple[float, float] | None) -> bool:
    """A dimension the resize leaves as it is (the reference skips it too)."""
    return (math.isclose(scale, 1.0) and n_in == n_out
            and (roi is None or (math.isclose(roi[0], 0.0) and math.isclose(roi[1], 1.0))))


def _c_array(ctype: str, name: str, values) -> str:
    return f"static const {ctype} {name}[{len(values)}] = {{{', '.join(values)}}};"


def _resize(k: _K) -> str:
    """One unit per plane (the dimensions before the first one resized); within it, loops over the output's
    remaining dimensions, each with its tap table: a gather where every output has one tap of weight 1
    (nearest), else a sum of (product of the dimensions' weights) x input over the taps."""
    x, out, attrs = k.shape(0), k.out.shape, k.attrs
    if math.prod(out) == 0:
        k.read_only()
        return "/* empty */"
    r = len(x)
    rois = [(attrs["roi"][d], attrs["roi"][r + d]) if attrs["roi"] else None for d in range(r)]
    moved = [d for d in range(r) if not _is_identity(x[d], out[d], attrs["scales"][d], rois[d])]
    if not moved:
        return _copy(k)
    a0 = moved[0]
    taps = [resize_taps(x[d], out[d], attrs["scales"][d], attrs, rois[d]) if d in moved
            else (np.arange(x[d])[:, None], np.ones((x[d], 1)), np.zeros(x[d], bool)) for d in range(a0, r)]
    gather = all(((w != 0).sum(axis=1) == 1).all() and (w.max(axis=1) == 1.0).all() for _, w, _ in taps)
    tables, counts, outside = [], [], []
    for j, ((index, weight, out_of), stride) in enumerate(zip(taps, cgen.strides(x[a0:]))):
        if gather:  # the one tap of weight 1 of each output: an index table only
            index = index[np.arange(len(index)), np.argmax(weight, axis=1)][:, None]
        else:
            tables.append(_c_array("float", f"W{j}", [cgen.c_float(float(v)) for v in weight.reshape(-1)]))
        tables.append(_c_array("int64_t", f"I{j}", [str(int(i) * stride) for i in index.reshape(-1)]))
        if out_of.any():
            tables.append(_c_array("unsigned char", f"E{j}", ["1" if v else "0" for v in out_of]))
            outside.append(f"E{j}[o{j}]")
        counts.append(index.shape)
    if gather:
        inner = f"yp[o++] = xp[{' + '.join(f'I{j}[o{j}]' for j in range(len(counts)))}];"
    else:
        inner = _resize_sum([t for _, t in counts], outside, attrs["extrapolation_value"])
    depth = len(counts)
    loops = "\n".join([("  " * j) + f"for (int64_t o{j} = 0; o{j} < {n}; ++o{j}) {{" for j, (n, _) in enumerate(counts)]
                      + [cgen.indent(inner, "  " * depth)] + [("  " * j) + "}" for j in reversed(range(depth))])
    planes, in_plane, out_plane = math.prod(x[:a0]), math.prod(x[a0:]), math.prod(out[a0:])
    unit = (f"const float *restrict xp = in0 + u * {in_plane};\nfloat *restrict yp = out0 + u * {out_plane};\n"
            f"int64_t o = 0;\n{loops}")
    work = planes * out_plane * math.prod(t for _, t in counts)
    return k.task("\n".join(tables + [cgen.each_unit(unit)]), planes, work >= cgen.PARALLEL_MIN_WORK)


def _resize_sum(taps: list[int], outside: list[str], extrapolation: float) -> str:
    """The C of one output: acc over every combination of taps (dimension j's tap t_j: index I_j, weight W_j,
    for output o_j), or the extrapolation value where a dimension's source lies outside (E_j)."""
    lines, pad = ["float acc = 0.0f;"], ""
    for j, t in enumerate(taps):
        lines.append(f"{pad}for (int64_t t{j} = 0; t{j} < {t}; ++t{j}) {{")
        pad += "  "
        weight = (f"w{j - 1} * " if j else "") + f"W{j}[o{j} * {t} + t{j}]"
        index = (f"i{j - 1} + " if j else "") + f"I{j}[o{j} * {t} + t{j}]"
        lines += [f"{pad}const float w{j} = {weight};", f"{pad}const int64_t i{j} = {index};"]
    last = len(taps) - 1
    lines.append(f"{pad}acc += w{last} * xp[i{last}];")
    lines += ["  " * j + "}" for j in reversed(range(len(taps)))]
    value = f"({' | '.join(outside)}) ? {cgen.c_float(extrapolation)} : acc" if outside else "acc"
    return "\n".join(lines + [f"yp[o++] = {value};"])


CONV_FAMILY_EMITTERS = {"conv_transpose2d": _conv_transpose2d, "resize": _resize}


EMITTERS = {
    "dense": _dense, "matmul": _matmul,
    "softmax": _softmax, "log_softmax": _softmax, "argmax": _arg_best, "cast": _cast,
    "conv2d": _conv2d, "maxpool2d": _pool, "avgpool2d": _pool,
    "global_avgpool": _global_avgpool, "flatten": _copy, "reshape": _copy,
    "transpose": _transpose, "concat": _concat, "batchnorm": _batchnorm,
    **{op: _reduce for op in REDUCE}, "argmin": _arg_best,
    "lstm": _recurrent, "gru": _recurrent, "rnn": _recurrent,
    **MOVE_EMITTERS,
    **NORM_EMITTERS,
    **CONV_FAMILY_EMITTERS,
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

    @property
    def fuses(self) -> dict[str, tuple[str, ...]]:
        """An elementwise op after an elementwise op (a chain: _chain_link says which)."""
        chain = chain_ops()
        return {op: chain for op in chain}

    def can_fuse(self, node: Node, follower: Node, graph: Graph) -> bool:
        return super().can_fuse(node, follower, graph) and _chain_link(node, follower, graph)

    def _steps(self, region: Region, graph: Graph) -> list[list[Node]]:
        """The region's nodes as steps: a chain of elementwise nodes (each reading the one before, whose output
        nothing else needs; at most TASK_MAX_INPUTS tensors read from outside), or one node."""
        readers = graph.consumers()
        steps: list[list[Node]] = []
        for node in region.nodes:
            last = steps[-1][-1] if steps else None
            if (last is not None and _chain_link(last, node, graph) and last.output not in region.outputs
                    and [n.name for n in readers.get(last.output, [])] == [node.name]
                    and len(_externals([*steps[-1], node])) <= cgen.TASK_MAX_INPUTS):
                steps[-1].append(node)
            else:
                steps.append([node])
        return steps

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
        fn = self.check_c_region(region, graph)
        params = list(region.inputs) + list(region.outputs)
        where = {name: cgen.arg_data(i) for i, name in reversed(list(enumerate(params)))}
        checks = [cgen.check(fn, i, name, graph.type_of(name)) for i, name in enumerate(params)]
        steps = self._steps(region, graph)
        # intermediates (multi-node regions) live in the workspace: a liveness plan reuses a dead one's bytes
        sizes = {step[-1].output: graph.type_of(step[-1].output).nbytes for step in steps
                 if step[-1].output not in where}
        # and so does the scratch of a node that needs one (SCRATCH), for the node's own call
        scratch = [self._scratch_bytes(step[0], graph) if len(step) == 1 else 0 for step in steps]
        arena = plan.plan_arena([plan.Call(step[0].name, _externals(step), [step[-1].output], s)
                                 for step, s in zip(steps, scratch)], sizes)
        workspace = cgen.arg_data(len(params))
        for name, offset in arena.offsets.items():
            where[name] = f"((unsigned char *){workspace} + {offset})"
        if arena.size:
            checks.append(cgen.check_workspace(fn, len(params), arena.size))
        tasks: list[str] = []
        scratch_at = {i: f"((unsigned char *){workspace} + {offset})" for i, offset in arena.workspaces.items()}
        blocks = [self._block(step[0], graph, where, f"{fn}_task{i}", tasks, scratch_at.get(i)) if len(step) == 1
                  else self._chain_block(step, graph, where, f"{fn}_task{i}", tasks)
                  for i, step in enumerate(steps)]
        comment = "; ".join(f"{n.name}: {n.op}({', '.join(n.inputs)}) -> {n.output}" for n in region.nodes)
        source = "".join(t + "\n" for t in tasks) + cgen.function(fn, comment, checks, blocks)
        return CSource(source=source, functions=[fn], prelude=[cgen.PRELUDE, HOST_PRELUDE],
                       workspace_bytes=arena.size)

    @staticmethod
    def _scratch_bytes(node: Node, graph: Graph) -> int:
        """Bytes of scratch the node's body needs (SCRATCH), placed in the region's workspace."""
        if node.op not in SCRATCH:
            return 0
        return SCRATCH[node.op](_K(node, [graph.type_of(name) for name in node.inputs], graph.type_of(node.output)))

    @staticmethod
    def _chain_block(nodes: list[Node], graph: Graph, where: dict[str, str], task_name: str,
                     tasks: list[str]) -> str:
        body, definitions = _chain_body(nodes, graph, task_name)
        tasks.extend(definitions)
        bindings = [cgen.pointer(f"in{i}", "float", where[t]) for i, t in enumerate(_externals(nodes))]
        bindings.append(cgen.pointer("out0", "float", where[nodes[-1].output], const=False))
        what = " -> ".join(f"{n.name}: {n.op}" for n in nodes)
        return cgen.block(f"{what} -> {graph.type_of(nodes[-1].output)}", bindings, body)

    def _block(self, node: Node, graph: Graph, where: dict[str, str], task_name: str, tasks: list[str],
               scratch: str | None = None) -> str:
        ins = [graph.type_of(name) for name in node.inputs]
        out = graph.type_of(node.output)
        k = _K(node, ins, out, task_name)
        body = emitter(node.op)(k)
        tasks.extend(k.tasks)
        operands = {f"in{i}": (name, t) for i, (name, t) in enumerate(zip(node.inputs, ins))}
        operands["out0"] = (node.output, out)
        bindings = [cgen.pointer(v, _ctype(node.op, t.dtype), where[name], const=v != "out0")
                    for v, (name, t) in operands.items() if v in k.reads]
        if scratch is not None:  # a float scratch: the only one so far (SCRATCH) is the recurrent ops'
            bindings.append(cgen.pointer("scratch", "float", scratch, const=False))
        return cgen.block(f"{node.name}: {node.op} -> {out}", bindings, body)
