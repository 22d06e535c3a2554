"""The `cblas` backend: dense, matmul and conv2d as calls into OpenBLAS (CBLAS).

`lower(region)` emits one packed function per region (backends/base.py) that
checks its arguments with the host backend's helpers (it lists HOST_PRELUDE
before its own prelude, so they are emitted once per file) and calls:

    dense    batch 1: cblas_sgemv (W [N, K] times x);  else cblas_sgemm (x @ W.T)
    matmul   cblas_sgemm per batch (a loop nest over broadcast batch dimensions)
    conv2d   per image and group: im2col into the workspace, then cblas_sgemm
             (W_g [OCG, ICG*KH*KW] @ col [ICG*KH*KW, OH*OW]); a 1x1, stride-1,
             unpadded conv multiplies the input in place (no im2col)

Bias: the output starts as the bias (rows copied) and the GEMM accumulates
onto it (beta = 1). A fused activation (relu, sigmoid, tanh; the partitioner
decides when the graph allows it) runs over the output right after the GEMM,
per group for conv2d, while it is still in cache. No allocation at run time:
the im2col buffer is the region's workspace.

The CSource links `-lopenblas` (the .so gets DT_NEEDED libopenblas.so.0) and
names that soname in the manifest's `requires`, so a machine without it fails
at load with a message naming it. OpenBLAS runs its own threads
(OPENBLAS_NUM_THREADS); it is thread-safe for concurrent runs.
"""

from __future__ import annotations

import math
from string import Template

from packager import ops
from packager.backends import host
from packager.backends.base import Backend, CSource, Region
from packager.ir import BuildError, Graph, Node, TensorType

OPS = ("dense", "matmul", "conv2d")
ACTIVATIONS = ("relu", "sigmoid", "tanh")
INT_MAX = 2**31 - 1  # CBLAS sizes and strides are C ints (OpenBLAS without ILP64)
WORKSPACE_ALIGN = 64
LIBRARIES = ["openblas"]
REQUIRES = ["libopenblas.so.0"]
INSTALL_HINT = ("the cblas backend needs the OpenBLAS headers (cblas.h) and library (libopenblas.so) at build "
                "time; on Debian/Ubuntu: apt-get install libopenblas-dev (scripts/setup.sh installs it), or "
                "leave cblas out of `backends`")

CBLAS_PRELUDE = r"""
/* ---- dsopack cblas backend: OpenBLAS through CBLAS ------------------- */
#include <cblas.h>

/* y[r, :] = b for each of `rows` rows of `n` floats (the bias the GEMM adds to). */
static void dpk_cblas_rows(float *restrict y, const float *restrict b, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) memcpy(y + r * n, b, (size_t)n * sizeof(float));
}

/* col[(c * KH + kh) * KW + kw, oh * OW + ow] = x[c, oh * SH - PT + kh * DH, ow * SW - PL + kw * DW],
 * zero where the tap falls in the padding: the im2col matrix of one image and group. */
static void dpk_cblas_im2col(const float *restrict x, float *restrict col, int64_t C, int64_t IH, int64_t IW,
                             int64_t KH, int64_t KW, int64_t SH, int64_t SW, int64_t DH, int64_t DW,
                             int64_t PT, int64_t PL, int64_t OH, int64_t OW) {
  for (int64_t c = 0; c < C; ++c) {
    const float *restrict xc = x + c * IH * IW;
    for (int64_t kh = 0; kh < KH; ++kh) {
      for (int64_t kw = 0; kw < KW; ++kw) {
        float *restrict row = col + ((c * KH + kh) * KW + kw) * OH * OW;
        const int64_t shift = kw * DW - PL;
        const int64_t ow0 = dpk_host_first(-shift, SW), ow1 = dpk_host_end(IW - shift, SW, OW);
        for (int64_t oh = 0; oh < OH; ++oh) {
          float *restrict out = row + oh * OW;
          const int64_t ih = oh * SH - PT + kh * DH;
          if (ih < 0 || ih >= IH || ow0 >= ow1) {
            memset(out, 0, (size_t)OW * sizeof(float));
            continue;
          }
          const float *restrict xr = xc + ih * IW + shift;
          for (int64_t ow = 0; ow < ow0; ++ow) out[ow] = 0.0f;
          if (SW == 1) {
            memcpy(out + ow0, xr + ow0, (size_t)(ow1 - ow0) * sizeof(float));
          } else {
            for (int64_t ow = ow0; ow < ow1; ++ow) out[ow] = xr[ow * SW];
          }
          for (int64_t ow = ow1; ow < OW; ++ow) out[ow] = 0.0f;
        }
      }
    }
  }
}
"""

TEMPLATES = {
    "gemv": Template("""\
$bias
cblas_sgemv(CblasRowMajor, CblasNoTrans, $N, $K, 1.0f, in1, $K, in0, 1, $beta, out0, 1);
$act"""),
    "dense": Template("""\
$bias
cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, $M, $N, $K, 1.0f, in0, $K, in1, $K, $beta, out0, $N);
$act"""),
    "matmul": Template("cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, $M, $N, $K, 1.0f, in0 + $a, $K, "
                       "in1 + $b, $N, 0.0f, out0 + $o, $N);"),
    "conv2d": Template("""\
for (int64_t n = 0; n < $N; ++n) {
  for (int64_t g = 0; g < $G; ++g) {
    const float *restrict x = in0 + (n * $IC + g * $ICG) * ($IH * $IW);
    float *restrict y = out0 + (n * $OC + g * $OCG) * ($OH * $OW);
    $col
    $bias
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, $OCG, $P, $R, 1.0f, in1 + g * ($OCG * $R), $R,
                col, $P, $beta, y, $P);
    $act
  }
}"""),
    "im2col": Template("float *restrict col = (float *)$workspace;\n"
                       "dpk_cblas_im2col(x, col, $ICG, $IH, $IW, $KH, $KW, $SH, $SW, $DH, $DW, $PT, $PL, $OH, $OW);"),
    "activation": Template("""\
for (int64_t i = 0; i < $n; ++i) {
  const float v = $y[i];
  $y[i] = $expr;
}"""),
}
ACTIVATION_EXPR = {op: host.UNARY_EXPR[op] for op in ACTIVATIONS}


def _activation(act: Node | None, y: str, n: int) -> str:
    if act is None:
        return ""
    return TEMPLATES["activation"].substitute(y=y, n=n, expr=ACTIVATION_EXPR[act.op])


def _dense(node: Node, types: list[TensorType], act: Node | None, workspace: str) -> str:
    x, w = types[0].shape, types[1].shape
    M, N, K = math.prod(x[:-1]), w[0], w[1]
    has_bias = len(types) == 3
    act_text = _activation(act, "out0", M * N)
    if M == 1:
        bias = f"memcpy(out0, in2, {N} * sizeof(float));" if has_bias else ""
        return TEMPLATES["gemv"].substitute(N=N, K=K, bias=bias, beta="1.0f" if has_bias else "0.0f", act=act_text)
    bias = f"dpk_cblas_rows(out0, in2, {M}, {N});" if has_bias else ""
    return TEMPLATES["dense"].substitute(M=M, N=N, K=K, bias=bias, beta="1.0f" if has_bias else "0.0f",
                                         act=act_text)


def _matmul(node: Node, types: list[TensorType], act: Node | None, workspace: str) -> str:
    a, b = types[0].shape, types[1].shape
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    M, K, N = a2[-2], a2[-1], b2[-1]
    batch = ops.broadcast_shapes(a2[:-2], b2[:-2])
    strides = [[s * M * N for s in host._strides(batch)],
               [s * M * K for s in host._broadcast_strides(a2[:-2], batch)],
               [s * K * N for s in host._broadcast_strides(b2[:-2], batch)]]
    dims, strides = host._collapse(batch, strides)
    text = host._nest(dims, strides, TEMPLATES["matmul"], M=M, N=N, K=K)
    act_text = _activation(act, "out0", math.prod(batch) * M * N)
    return text + ("\n" + act_text if act_text else "")


def _is_pointwise(attrs: dict, w: tuple[int, ...]) -> bool:
    """A 1x1, stride-1, unpadded conv: the input itself is the im2col matrix."""
    return (w[2], w[3]) == (1, 1) and list(attrs["strides"]) == [1, 1] and not any(attrs["pads"])


def _conv_workspace(node: Node, types: list[TensorType], out: TensorType) -> int:
    w = types[1].shape
    if _is_pointwise(node.attrs, w):
        return 0
    return w[1] * w[2] * w[3] * out.shape[2] * out.shape[3] * 4


def _conv2d(node: Node, types: list[TensorType], act: Node | None, workspace: str, out: TensorType) -> str:
    x, w, y = types[0].shape, types[1].shape, out.shape
    (sh, sw), (dh, dw), pads, g = node.attrs["strides"], node.attrs["dilations"], node.attrs["pads"], node.attrs["groups"]
    OCG, ICG, KH, KW = w[0] // g, w[1], w[2], w[3]
    P, R = y[2] * y[3], ICG * KH * KW
    if _is_pointwise(node.attrs, w):
        col = "const float *restrict col = x;"
    else:
        col = TEMPLATES["im2col"].substitute(workspace=workspace, ICG=ICG, IH=x[2], IW=x[3], KH=KH, KW=KW,
                                             SH=sh, SW=sw, DH=dh, DW=dw, PT=pads[0], PL=pads[1], OH=y[2], OW=y[3])
    has_bias = len(types) == 3
    bias = ""
    if has_bias:
        bias = (f"for (int64_t oc = 0; oc < {OCG}; ++oc) {{\n"
                f"      const float bv = in2[g * {OCG} + oc];\n"
                f"      for (int64_t i = 0; i < {P}; ++i) y[oc * {P} + i] = bv;\n"
                f"    }}")
    act_text = host._indent(_activation(act, "y", OCG * P), "    ").lstrip()
    return TEMPLATES["conv2d"].substitute(
        N=x[0], G=g, IC=x[1], ICG=ICG, IH=x[2], IW=x[3], OC=w[0], OCG=OCG, OH=y[2], OW=y[3], P=P, R=R,
        col=host._indent(col, "    ").lstrip(), bias=bias, beta="1.0f" if has_bias else "0.0f", act=act_text)


def _type(graph: Graph, name: str) -> TensorType:
    return host._type(graph, name)


class CblasBackend(Backend):
    name = "cblas"
    fuses = {op: ACTIVATIONS for op in OPS}

    def supports(self, node: Node, graph: Graph) -> str | None:
        if node.op in ACTIVATIONS:
            return f"cblas takes {node.op} only fused into the dense, matmul or conv2d whose sole consumer it is"
        if node.op not in OPS:
            return f"op {node.op} has no cblas kernel (cblas takes {', '.join(OPS)})"
        for name in [*node.inputs, node.output]:
            t = _type(graph, name)
            if t.dtype != "float32":
                return f"cblas kernels are float32 only ({name} is {t})"
            if any(d < 1 for d in t.shape):
                return f"cblas kernels need non-empty tensors ({name} is {t})"
            if math.prod(t.shape) > INT_MAX:
                return f"{name} is {t}: more than {INT_MAX} elements (CBLAS sizes are C ints)"
        return None

    def lower(self, region: Region, graph: Graph) -> CSource:
        fn = region.name
        if not host._IDENT.match(fn):
            raise BuildError(f"cblas backend: region name '{fn}' is not a C identifier")
        node, act = region.nodes[0], None
        if len(region.nodes) == 2 and region.nodes[1].op in ACTIVATIONS and region.nodes[1].inputs == [node.output]:
            act = region.nodes[1]
        elif len(region.nodes) != 1:
            names = ", ".join(n.name for n in region.nodes)
            raise BuildError(f"cblas backend: region '{fn}' holds {names}; it takes one node and an optional "
                             f"fused activation")
        reason = self.supports(node, graph)
        if reason is not None:
            raise BuildError(f"{node.describe()}: cblas backend cannot lower it: {reason}")
        result = (act or node).output
        if region.outputs != [result]:
            raise BuildError(f"cblas backend: region '{fn}' must have the one output '{result}', "
                             f"not {region.outputs}")
        params = list(region.inputs) + list(region.outputs)
        checks = [host._check(fn, i, name, _type(graph, name)) for i, name in enumerate(params)]
        types = [_type(graph, name) for name in node.inputs]
        out = _type(graph, result)
        workspace = 0
        if node.op == "conv2d":
            workspace = _conv_workspace(node, types, out)
            workspace = (workspace + WORKSPACE_ALIGN - 1) // WORKSPACE_ALIGN * WORKSPACE_ALIGN
        nargs = len(params)
        workspace_ptr = f"dpk_host_data(&args[{nargs}])"
        if workspace:
            checks.append(host.CHECK.substitute(fn=fn, i=nargs, tensor="workspace", code=1, bits=8, ndim=1,
                                                dims=workspace, want=f"uint8[{workspace}]"))
            nargs += 1
        if node.op == "conv2d":
            body = _conv2d(node, types, act, workspace_ptr, out)
        else:
            body = {"dense": _dense, "matmul": _matmul}[node.op](node, types, act, workspace_ptr)
        index = {name: i for i, name in reversed(list(enumerate(params)))}
        lines = [f"  {{ /* {node.name}: {node.op}" + (f" + {act.name}: {act.op}" if act else "") + f" -> {out} */"]
        for i, name in enumerate(node.inputs):
            lines.append(f"    const float *restrict in{i} = (const float *)dpk_host_data(&args[{index[name]}]);")
        lines.append(f"    float *restrict out0 = (float *)dpk_host_data(&args[{index[result]}]);")
        lines.append(host._indent("\n".join(line for line in body.splitlines() if line.strip()), "    "))
        lines.append("  }")
        comment = "; ".join(f"{n.name}: {n.op}({', '.join(n.inputs)}) -> {n.output}" for n in region.nodes)
        source = host.FUNCTION.substitute(comment=comment.replace("*/", "* /") + " (OpenBLAS)", name=fn, nargs=nargs,
                                          checks="\n".join(checks), blocks="\n".join(lines))
        return CSource(source=source, functions=[fn], prelude=[host.HOST_PRELUDE, CBLAS_PRELUDE],
                       workspace_bytes=workspace, libraries=list(LIBRARIES), requires=list(REQUIRES),
                       install_hint=INSTALL_HINT)
