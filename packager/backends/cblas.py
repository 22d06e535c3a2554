"""The `cblas` backend: dense, matmul, conv2d and conv_transpose2d as calls into OpenBLAS (CBLAS).

`lower(region)` emits one packed function per region (backends/base.py), built
from cgen's helpers like host's (both list cgen.PRELUDE first, so it is emitted
once per file; this backend's fixed C is c/cblas_prelude.h). The loop body is a
task over blocks (cgen.task) that the runtime may split over its threads.
A block is fixed at build time (block b covers the same outputs whatever the
thread count) and is ONE library call or kernel invocation of the same shape,
so the outputs are bit-identical for any thread count, any load on the pool
and any number of concurrent runs (README, "Same answer for any thread count"):

    dense    blocks of W's rows (or of rows of x when W has few): cblas_sgemv
             at batch 1, else cblas_sgemm (x @ W.T) per block. From 8 rows
             of x on, a W only this dense reads is stored in panels of 32
             columns (from 32 outputs on), each [K, 32] contiguous
             (CSource.weights), and blocks of panels are the units: a
             register kernel on AVX-512, AVX2 and aarch64 (a panel stays in
             cache while every row of x passes), one cblas_sgemm per panel
             on baseline x86-64
    matmul   blocks of output rows of one batch entry: one cblas_sgemm each
    conv2d   blocks of output rows (image, group, rows): im2col of the block's
             rows into the scratch, then cblas_sgemm (W_g [OCG, ICG*KH*KW] @
             col); a 1x1, stride-1, unpadded conv multiplies the input in
             place. A stride-1 or 2 conv whose rows are a multiple of 8 or 16
             outputs compiles, on AVX-512 targets, a direct kernel over the
             same blocks instead (conv2d_direct: the block's input rows
             zero-padded into the scratch, accumulators in registers); other
             targets compile the im2col path from the same file.
    conv_transpose2d  blocks of output channels (image, group, channels): one
             cblas_sgemm (W_g^T [channels*KH*KW, ICG] @ x_g [ICG, IH*IW]) into
             the scratch, then col2im: each (channel, kh, kw) row of it added
             onto the output plane where its taps land (the bias first)

Bias: the output starts as the bias and the GEMM accumulates onto it (beta =
1). A fused residual add (after a conv2d) and a fused activation (any unary
elementwise op of the registry: relu, sigmoid, tanh...; the partitioner
decides when the graph allows it) run over each block right after it is
computed, while it is in cache. No allocation at run time: the scratch is the
region's workspace (or a worker's, of the same size).

The CSource links `-lopenblas` (the .so gets DT_NEEDED libopenblas.so.0) and
names that soname in the manifest's `requires`, so a machine without it fails
at load with a message naming it. The runtime sets OpenBLAS to 1 thread at
load (see README, Threads); it is thread-safe for concurrent calls.
"""

from __future__ import annotations

import math
from string import Template

import numpy as np

from packager import ops, spill
from packager.backends import cgen
from packager.backends.base import Backend, CSource, Region, float32_tensors
from packager.backends.host import HOST_PRELUDE  # col2im bounds (dpk_host_first/end), dpk_expf & co (ops' C)
from packager.backends.host import unary_expr  # a fused activation computes what host's op does
from packager.ir import BuildError, Graph, Node, TensorType

OPS = ("dense", "matmul", "conv2d", "conv_transpose2d")
INT_MAX = 2**31 - 1  # CBLAS sizes and strides are C ints (OpenBLAS without ILP64)
WORKSPACE_ALIGN = 64
LIBRARIES = ["openblas"]
REQUIRES = ["libopenblas.so.0"]
INSTALL_HINT = ("the cblas backend needs the OpenBLAS headers (cblas.h) and library (libopenblas.so) at build "
                "time; on Debian/Ubuntu: apt-get install libopenblas-dev (scripts/setup.sh installs it), or "
                "leave cblas out of `backends`")

CBLAS_PRELUDE = cgen.read_c("cblas_prelude.h")  # cblas.h, and the AVX-512 kernels' helpers

# Blocks (the units of parallel work): a loop is split over threads only if it does at least
# cgen.PARALLEL_MIN_WORK multiply-adds. block_size() fixes each block at build time: at most
# MAX_BLOCKS blocks (enough to share among a few threads; each is one library call, and more calls
# cost more in call overhead and smaller GEMMs), and at least BLOCK_MIN_WORK multiply-adds each.
MAX_BLOCKS = 16
BLOCK_MIN_WORK = 1 << 16
MAX_COL_BYTES = 512 * 1024  # im2col block per call: stays in L2 next to the weights
GEMV_BLOCK = 16  # W's rows per block are a multiple of this
# From this many rows of x on, a dense whose W only it reads stores W in panels: [N / 32][K][32] (the last
# zero-padded), W's layout packed once at build time. A register kernel (c/cblas_prelude.h) streams each panel
# with no packing, where OpenBLAS repacks W on every call (31% of the 100 MB MLP's time at batch 64); a
# panel's K x 32 floats are contiguous, so any K is read page after page (W^T [K, N], the layout before,
# walked one page per row and lost to OpenBLAS from 4 MiB of W on).
PANEL_MIN_ROWS = 8
PANEL = 32  # columns per panel: two zmm
PANEL_KC = 256  # K per pass of the panel kernel: 8 rows of x and a panel's 32 KiB of it stay in L1/L2
MIN_GROUP_CHANNELS = 4  # grouped convs with fewer channels per group (depthwise...) are host's

TEMPLATES = {
    # Every template below is the body of one block u (cgen.each_unit runs it for u in [begin, end)).
    # dense, one sgemv (batch 1) or sgemm per block: rows of x, or W's rows
    "gemv": Template("""\
const int64_t n0 = u * $NB, nc = $N - n0 < $NB ? $N - n0 : $NB;
$bias
cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)nc, $K, 1.0f, in1 + n0 * $K, $K, in0, 1, $beta, out0 + n0, 1);
$act"""),
    "dense": Template("""\
const int64_t m0 = $m0, mc = $mc, n0 = $n0, nc = $nc;
float *restrict y = out0 + m0 * $N + n0;
$bias
cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)mc, (int)nc, $K, 1.0f, in0 + m0 * $K, $K,
            in1 + n0 * $K, $K, $beta, y, $N);
$act"""),
    # dense on W in panels ([N / 32][K][32]): rows m0.. of x by columns n0.. (whole panels), then $act.
    # $run is dense_p_kernel where the target has it (DPK_PANEL_ROWS), else dense_p_sgemm
    "dense_p": Template("""\
const int64_t m0 = $m0, mc = $mc, n0 = $n0, nc = $nc;
float *restrict y = out0 + m0 * $N + n0;
$run
$act"""),
    # the register kernel: a panel at a time, DPK_PANEL_ROWS rows of x at a time against it (the panel stays
    # in cache), accumulators in registers
    "dense_p_kernel": Template("""\
/* In chunks of $KC of K (each output's terms are still added in the order of k: the sums go on from y): a
 * panel's chunk stays in cache while every row of x passes it, accumulators in registers. */
for (int64_t k0 = 0; k0 < $K; k0 += $KC) {
  const int64_t k1 = $K - k0 < $KC ? $K : k0 + $KC;
  for (int64_t c = n0; c < n0 + nc; c += 32) {
    const float *restrict wp = in1 + c * $K; /* panel c / 32 */
    const int64_t cols = $N - c < 32 ? $N - c : 32;
    float start[32] = {0}; /* the bias, or 0 */
$bias_panel
    for (int64_t h = 0; h < cols; h += 2 * DPK_PANEL_LANES) {
      int64_t m = 0;
      for (; m + DPK_PANEL_ROWS <= mc; m += DPK_PANEL_ROWS) { /* constant bounds: acc stays in registers */
        const float *restrict xr = in0 + (m0 + m) * $K;
        dpk_panel_vec acc[DPK_PANEL_ROWS][2];
        for (int64_t i = 0; i < DPK_PANEL_ROWS; ++i)
          dpk_panel_get(k0 ? y + (m + i) * $N + (c - n0) + h : start + h, &acc[i][0], &acc[i][1], cols - h);
        for (int64_t k = k0; k < k1; ++k) {
          dpk_panel_vec w0, w1;
          memcpy(&w0, wp + k * 32 + h, sizeof w0);
          memcpy(&w1, wp + k * 32 + h + DPK_PANEL_LANES, sizeof w1);
          for (int64_t i = 0; i < DPK_PANEL_ROWS; ++i) {
            const float a = xr[i * $K + k];
            acc[i][0] += a * w0;
            acc[i][1] += a * w1;
          }
        }
        for (int64_t i = 0; i < DPK_PANEL_ROWS; ++i)
          dpk_panel_put(y + (m + i) * $N + (c - n0) + h, acc[i][0], acc[i][1], cols - h);
      }
      for (; m < mc; ++m) { /* the block's last rows, one at a time: the same sums */
        const float *restrict xr = in0 + (m0 + m) * $K;
        dpk_panel_vec a0, a1;
        dpk_panel_get(k0 ? y + m * $N + (c - n0) + h : start + h, &a0, &a1, cols - h);
        for (int64_t k = k0; k < k1; ++k) {
          dpk_panel_vec w0, w1;
          memcpy(&w0, wp + k * 32 + h, sizeof w0);
          memcpy(&w1, wp + k * 32 + h + DPK_PANEL_LANES, sizeof w1);
          a0 += xr[k] * w0;
          a1 += xr[k] * w1;
        }
        dpk_panel_put(y + m * $N + (c - n0) + h, a0, a1, cols - h);
      }
    }
  }
}"""),
    # a target without the kernel: OpenBLAS once per panel (ld 32)
    "dense_p_sgemm": Template("""\
for (int64_t c = n0; c < n0 + nc; c += 32) {
  const int64_t cols = $N - c < 32 ? $N - c : 32;
$bias_rows
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)mc, (int)cols, $K, 1.0f, in0 + m0 * $K, $K,
              in1 + c * $K, 32, $beta, y + (c - n0), $N);
}"""),
    # matmul: block u is $RB output rows of batch entry b (each entry has $NBK blocks)
    "matmul": Template("""\
const int64_t b = u / $NBK, m0 = u % $NBK * $RB, mc = $M - m0 < $RB ? $M - m0 : $RB;
(void)b; /* one batch entry: the offsets do not use it */
float *restrict y = out0 + $o + m0 * $N;
cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)mc, $N, $K, 1.0f, in0 + $a + m0 * $K, $K,
            in1 + $b, $N, 0.0f, y, $N);
$act"""),
    # conv2d: block u is $RB output rows (from oh0) of image n, group g (each has $NBK blocks):
    # im2col of those rows into the scratch, then one sgemm
    "conv2d": Template("""\
$colptr_decl
const int64_t n = u / ($G * $NBK), g = u / $NBK % $G, oh0 = u % $NBK * $RB;
const int64_t rows = $OH - oh0 < $RB ? $OH - oh0 : $RB;
const float *restrict x = in0 + (n * $IC + g * $ICG) * ($IH * $IW);
float *restrict y = out0 + (n * $OC + g * $OCG) * $P + oh0 * $OW;
$col
$bias
cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, $OCG, (int)(rows * $OW), $R, 1.0f, in1 + g * ($OCG * $R),
            $R, $colptr, $ldb, $beta, y, $P);
$act"""),
    # col[(c * KH + kh) * KW + kw, r * OW + ow] = x[c, (oh0 + r) * SH - PT + kh * DH, ow * SW - PL + kw * DW]
    # for the `rows` output rows from oh0, zero where the tap falls in the padding.
    # Each kw gets its own literal column bounds ($taps), so every copy has a
    # constant length that gcc inlines as vector moves (no memcpy call per row).
    "im2col": Template("""\
for (int64_t c = 0; c < $ICG; ++c) {
  for (int64_t kh = 0; kh < $KH; ++kh) {
    float *restrict tap = col + (c * $KH + kh) * $KW * (rows * $OW);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t ih = (oh0 + r) * $SH - $PT + kh * $DH;
      float *restrict out = tap + r * $OW;
      if (ih < 0 || ih >= $IH) {
        for (int64_t k = 0; k < $KW; ++k) memset(out + k * (rows * $OW), 0, $OW * sizeof(float));
        continue;
      }
      const float *restrict xr = x + (c * $IH + ih) * $IW;
$taps
    }
  }
}"""),
    "im2col_tap": Template("""\
{ /* kw = $kw */
  float *restrict o = out + $kw * (rows * $OW);
  for (int64_t ow = 0; ow < $ow0; ++ow) o[ow] = 0.0f;
  for (int64_t ow = $ow0; ow < $ow1; ++ow) o[ow] = xr[ow * $SW + $shift];
  for (int64_t ow = $ow1; ow < $OW; ++ow) o[ow] = 0.0f;
}"""),
    # conv2d, stride 1 or 2, direct (AVX-512 builds only; others compile the im2col
    # path): the same blocks, $RB output rows (from oh0) of image n. A block first
    # copies the padded input rows its output rows read (oh * $SH + kh) and the
    # scratch does not hold yet into the scratch (at their place in the padded
    # image), zero-padded, each row split into $SW phases (columns j * $SW + phase)
    # so a strided tap reads contiguous floats; then for each output row and block
    # of $OB output channels, $OB x $NV vectors of $VW outputs accumulate every
    # (c, kh, kw) tap, a broadcast weight times a vector of the padded row, in
    # registers. Each output's sum runs in the same order whatever the blocks.
    "conv2d_direct": Template("""\
float *restrict pad = (float *)scratch;
int64_t pad_n = -1, pad_end = 0; /* padded rows [.., pad_end) of image pad_n are in the scratch */
for (int64_t u = begin; u < end; ++u) {
  const int64_t n = u / $NBK, oh0 = u % $NBK * $RB, oh1 = $OH - oh0 < $RB ? $OH : oh0 + $RB;
  const int64_t r1 = (oh1 - 1) * $SH + $KH;
  const int64_t r0 = n == pad_n && pad_end > oh0 * $SH ? pad_end : oh0 * $SH;
  if (r0 < r1) {
    const float *restrict x = in0 + n * ($C * $IH * $IW);
    for (int64_t c = 0; c < $C; ++c)
      for (int64_t r = r0; r < r1; ++r) {
$skip
        float *restrict pr = pad + (c * $PH + r) * ($SW * $QW);
        const int64_t h = r - $PT;
        if (h < 0 || h >= $IH) {
          memset(pr, 0, $SW * $QW * sizeof(float));
          continue;
        }
        const float *restrict xr = x + (c * $IH + h) * $IW;
$copy
      }
    pad_n = n;
    pad_end = r1;
  }
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    float *restrict y = out0 + n * ($OC * $P) + oh * $OW;
    for (int64_t o0 = 0; o0 < $OC; o0 += $OB) {
      $VT acc[$OB][$NV];
      for (int64_t i = 0; i < $OB; ++i) {
        const float bv = $bias;
        for (int64_t v = 0; v < $NV; ++v) acc[i][v] = ($VT){0} + bv;
      }
      for (int64_t c = 0; c < $C; ++c)
        for (int64_t kh = 0; kh < $KH; ++kh) {
          for (int64_t kw = 0; kw < $KW; ++kw) {
            const float *restrict row = pad + ((c * $PH + oh * $SH + kh) * $SW + kw % $SW) * $QW + kw / $SW;
            $VT xv[$NV];
            for (int64_t v = 0; v < $NV; ++v) memcpy(&xv[v], row + $VW * v, sizeof($VT));
            const float *restrict wp = in1 + ((o0 * $C + c) * $KH + kh) * $KW + kw;
            for (int64_t i = 0; i < $OB; ++i) {
              const float wv = wp[i * ($C * $KH * $KW)];
              for (int64_t v = 0; v < $NV; ++v) acc[i][v] += wv * xv[v];
            }
          }
        }
      for (int64_t i = 0; i < $OB; ++i)
        for (int64_t j = 0; j < $NV; ++j) { /* the activation on the vector, in registers, then one store */
          float t[$VW];
          memcpy(t, &acc[i][j], sizeof t);
$act
          memcpy(y + (o0 + i) * $P + $VW * j, t, sizeof t);
        }
    }
  }
}"""),
    # a fused residual add over the block just computed: y += the same positions of $res
    "residual": Template("""\
{
  const float *restrict r = $res + (y - out0);
  for (int64_t oc = 0; oc < $OCG; ++oc)
    for (int64_t i = 0; i < rows * $OW; ++i) y[oc * $P + i] += r[oc * $P + i];
}"""),
    "conv_bias": Template("""\
for (int64_t oc = 0; oc < $OCG; ++oc) {
  const float bv = in2[g * $OCG + oc];
  for (int64_t i = 0; i < rows * $OW; ++i) y[oc * $P + i] = bv;
}"""),
    "activation": Template("""\
for (int64_t r = 0; r < $rows; ++r) {
  float *restrict yr = $y + r * $ld;
  for (int64_t i = 0; i < $n; ++i) {
    const float v = yr[i];
    yr[i] = $expr;
  }
}"""),
}


def activations() -> tuple[str, ...]:
    """The ops fused after a cblas op: every unary elementwise op of the registry computing float32 to float32
    (host.unary_expr's C for float32)."""
    return ops.elementwise(1, "float32")


def _activation(act: Node | None, y: str, rows: str | int, n: str | int, ld: str | int) -> str:
    """The fused activation over `rows` rows of `n` floats, `ld` apart, from `y`."""
    if act is None:
        return ""
    return TEMPLATES["activation"].substitute(y=y, rows=rows, n=n, ld=ld, expr=unary_expr(act))


def _vector_act(act: Node | None, width: int, indent: str) -> str:
    """The activation over `t[0..width)`, a vector's worth of outputs about to be stored."""
    if act is None:
        return ""
    return cgen.indent(f"for (int64_t k = 0; k < {width}; ++k) {{\n  const float v = t[k];\n"
                       f"  t[k] = {unary_expr(act)};\n}}", indent)


def stores_panels(node: Node, graph: Graph) -> bool:
    """Whether this dense stores its W in panels: enough rows of x (in the largest plan of a dynamic build,
    so that every plan stores W alike), a panel's worth of outputs (a narrower W would be mostly padding),
    and W is a weight only it reads."""
    w = node.inputs[1]
    rows_from = graph.layouts_from if graph.layouts_from and node.inputs[0] in graph.layouts_from.types else graph
    x = rows_from.type_of(node.inputs[0]).shape
    return (node.op == "dense" and math.prod(x[:-1]) >= PANEL_MIN_ROWS and w in graph.weights
            and graph.weights[w].shape[0] >= PANEL and w not in graph.outputs
            and [n.name for n in graph.consumers().get(w, [])] == [node.name])


def panels(w: np.ndarray) -> np.ndarray:
    """W [N, K] as [ceil(N / PANEL)][K][PANEL]: panel p holds W's rows p * PANEL.. as columns, zero-padded
    (a W mapped from a file a block of panels at a time, into a spill file: spill.derived)."""
    n, k = w.shape

    def some(lo: int, hi: int) -> np.ndarray:  # panels [lo, hi)
        rows = w[lo * PANEL:hi * PANEL]
        padded = np.zeros(((hi - lo) * PANEL, k), w.dtype)
        padded[:len(rows)] = rows
        return padded.reshape(-1, PANEL, k).transpose(0, 2, 1)

    return spill.derived(w, (-(-n // PANEL), k, PANEL), w.dtype, some, "cblas panels")


def block_size(count: int, unit_work: int, granule: int = 1, most: int | None = None) -> int:
    """Units per block for `count` units of `unit_work` multiply-adds each: at most MAX_BLOCKS blocks, each of
    at least BLOCK_MIN_WORK (as far as `count` allows), a multiple of `granule`, at most `most` (if given)."""
    size = max(-(-count // MAX_BLOCKS), -(-BLOCK_MIN_WORK // max(1, unit_work)))
    size = min(size, count, most or count)
    return max(granule, -(-size // granule) * granule)


def _dense_panels(node: Node, types: list[TensorType], act: Node | None, N: int) -> tuple[str, int, bool]:
    """Dense on W in panels (types[1] is [N / PANEL, K, PANEL]) of N outputs."""
    x, K = types[0].shape, types[1].shape[1]
    M = math.prod(x[:-1])
    has_bias = len(types) == 3
    if N < 4 * PANEL:  # too few panels to share: blocks of rows of x (a multiple of AVX-512's 8)
        rb = block_size(M, N * K, granule=8)
        fields = dict(m0=f"u * {rb}", mc=f"{M} - u * {rb} < {rb} ? {M} - u * {rb} : {rb}", n0="0", nc=N)
        units = -(-M // rb)
    else:  # blocks of whole panels
        nb = block_size(-(-N // PANEL), PANEL * K * M) * PANEL
        fields = dict(m0="0", mc=M, n0=f"u * {nb}", nc=f"{N} - u * {nb} < {nb} ? {N} - u * {nb} : {nb}")
        units = -(-N // nb)
    bias_panel = "    memcpy(start, in2 + c, (size_t)cols * sizeof(float));" if has_bias else ""
    bias_rows = (f"  for (int64_t m = 0; m < mc; ++m) memcpy(y + m * {N} + (c - n0), in2 + c, (size_t)cols * "
                 f"sizeof(float));" if has_bias else "")
    kernel = TEMPLATES["dense_p_kernel"].substitute(N=N, K=K, KC=PANEL_KC, bias_panel=bias_panel)
    sgemm = TEMPLATES["dense_p_sgemm"].substitute(N=N, K=K, bias_rows=bias_rows, beta="1.0f" if has_bias else "0.0f")
    text = TEMPLATES["dense_p"].substitute(fields, N=N, run=cgen.if_defined("DPK_PANEL_ROWS", kernel, sgemm),
                                           act=_activation(act, "y", "mc", "nc", N))
    return text, units, M * N * K >= cgen.PARALLEL_MIN_WORK


def _dense(node: Node, types: list[TensorType], act: Node | None) -> tuple[str, int, bool]:
    x, w = types[0].shape, types[1].shape
    M, N, K = math.prod(x[:-1]), w[0], w[1]
    has_bias = len(types) == 3
    beta = "1.0f" if has_bias else "0.0f"
    parallel = M * N * K >= cgen.PARALLEL_MIN_WORK
    # blocks of W's rows (each thread streams its share of W, and an sgemm on a share of the
    # columns runs at full speed, where one on a share of the rows of a short x does not), or
    # of rows of x when W has too few rows to share
    if M >= 8 and N < 8 * GEMV_BLOCK:
        rb = block_size(M, N * K)
        fields = dict(m0=f"u * {rb}", mc=f"{M} - u * {rb} < {rb} ? {M} - u * {rb} : {rb}", n0="0", nc=N)
        units = -(-M // rb)
    else:
        nb = block_size(N, M * K, granule=GEMV_BLOCK)
        fields = dict(m0="0", mc=M, n0=f"u * {nb}", nc=f"{N} - u * {nb} < {nb} ? {N} - u * {nb} : {nb}")
        units = -(-N // nb)
    if M == 1:
        bias = "memcpy(out0 + n0, in2 + n0, (size_t)nc * sizeof(float));" if has_bias else ""
        return TEMPLATES["gemv"].substitute(NB=nb, N=N, K=K, bias=bias, beta=beta,
                                            act=_activation(act, "out0 + n0", 1, "nc", 0)), units, parallel
    bias = (f"for (int64_t m = 0; m < mc; ++m) memcpy(y + m * {N}, in2 + n0, (size_t)nc * sizeof(float));"
            if has_bias else "")
    text = TEMPLATES["dense"].substitute(fields, N=N, K=K, bias=bias, beta=beta,
                                         act=_activation(act, "y", "mc", "nc", N))
    return text, units, parallel


def _matmul(node: Node, types: list[TensorType], act: Node | None) -> tuple[str, int, bool]:
    a, b = types[0].shape, types[1].shape
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    M, K, N = a2[-2], a2[-1], b2[-1]
    batch = ops.broadcast_shapes(a2[:-2], b2[:-2])
    strides = [[s * M * N for s in cgen.strides(batch)],
               [s * M * K for s in cgen.broadcast_strides(a2[:-2], batch)],
               [s * K * N for s in cgen.broadcast_strides(b2[:-2], batch)]]
    dims, strides = cgen.collapse(batch, strides)
    nbatch = math.prod(dims)
    parallel = nbatch * M * N * K >= cgen.PARALLEL_MIN_WORK
    rb = block_size(nbatch * M, N * K, most=M)  # rows per block, within one batch entry
    o, oa, ob = (cgen.flat_offset(dims, st, "b") for st in strides)
    text = TEMPLATES["matmul"].substitute(M=M, N=N, K=K, o=o, a=oa, b=ob, RB=rb, NBK=-(-M // rb),
                                          act=_activation(act, "y", 1, f"mc * {N}", 0))
    return text, nbatch * -(-M // rb), parallel


def _is_pointwise(attrs: dict, w: tuple[int, ...]) -> bool:
    """A 1x1, stride-1, unpadded conv: the input itself is the im2col matrix."""
    return (w[2], w[3]) == (1, 1) and list(attrs["strides"]) == [1, 1] and not any(attrs["pads"])


def _conv_rows(node: Node, types: list[TensorType], out: TensorType) -> int:
    """Output rows per block: a share of all (image, group) rows by block_size, within one image and group,
    and (im2col) no more than keep the block's im2col matrix in L2."""
    x, w, (OH, OW) = types[0].shape, types[1].shape, out.shape[2:]
    g = node.attrs["groups"]
    most = OH if _is_pointwise(node.attrs, w) else max(1, min(OH, MAX_COL_BYTES // (w[1] * w[2] * w[3] * OW * 4)))
    return block_size(x[0] * g * OH, w[0] // g * OW * w[1] * w[2] * w[3], most=most)


DIRECT_MAX_PAD_BYTES = 1 << 20  # the direct conv's padded image (its scratch) stays in L2


def _direct(node: Node, types: list[TensorType], out: TensorType) -> tuple[int, int, int] | None:
    """(output channels per block, vectors per row, floats per vector) of the direct conv, or None where
    it does not apply: stride 1 or 2, no dilation, one group, rows a multiple of 16 or 8 outputs (at most 4
    vectors), channels a multiple of the block, the padded image <= DIRECT_MAX_PAD_BYTES."""
    a, w, OW = node.attrs, types[1].shape, out.shape[3]
    width = 16 if OW % 16 == 0 else 8
    if (a["groups"] != 1 or list(a["strides"]) not in ([1, 1], [2, 2]) or list(a["dilations"]) != [1, 1]
            or OW % width):
        return None
    nv = OW // width
    padded = _direct_pad_bytes(node, types)
    block = next((b for b in (16, 8, 4) if b * nv <= 16 and w[0] % b == 0), None)
    if nv > 4 or block is None or padded > DIRECT_MAX_PAD_BYTES or _is_pointwise(a, w):
        return None
    return block, nv, width


def _direct_pad_bytes(node: Node, types: list[TensorType]) -> int:
    """The direct conv's padded image: C x padded rows x (stride phases of ceil(padded width / stride))."""
    x, pads, sw = types[0].shape, node.attrs["pads"], node.attrs["strides"][1]
    return x[1] * (x[2] + pads[0] + pads[2]) * sw * -(-(x[3] + pads[1] + pads[3]) // sw) * 4


def _conv_workspace(node: Node, types: list[TensorType], out: TensorType) -> int:
    w = types[1].shape
    direct = _direct_pad_bytes(node, types) if _direct(node, types, out) else 0
    if _is_pointwise(node.attrs, w):
        return direct
    return max(direct, w[1] * w[2] * w[3] * _conv_rows(node, types, out) * out.shape[3] * 4)


def _im2col(C: int, IH: int, IW: int, KH: int, KW: int, SH: int, SW: int, DH: int, DW: int, PT: int, PL: int,
            OW: int) -> str:
    taps = []
    for kw in range(KW):
        shift = kw * DW - PL
        ow0 = 0 if shift >= 0 else -(shift // SW)  # first ow whose column ow * SW + shift >= 0
        ow1 = min(OW, max(0, -(-(IW - shift) // SW)))  # first ow whose column is past the input
        ow0 = min(ow0, ow1)
        taps.append(TEMPLATES["im2col_tap"].substitute(kw=kw, OW=OW, SW=SW, shift=shift, ow0=ow0, ow1=ow1))
    return TEMPLATES["im2col"].substitute(ICG=C, IH=IH, IW=IW, KH=KH, KW=KW, SH=SH, DH=DH, PT=PT, OW=OW,
                                          taps=cgen.indent("\n".join(taps), "      "))


def _phase_copy(IW: int, PL: int, SW: int, QW: int) -> str:
    """C that writes padded row `pr` (SW phases of QW floats; phase p holds padded columns j * SW + p) from input
    row `xr`: for stride 1 a copy between literal zero fills; for stride 2 the row zeroed, then input
    columns 2m and 2m + 1 written to their phases by dpk_deinterleave (permutes)."""
    if SW == 1:
        return (f"for (int64_t j = 0; j < {PL}; ++j) pr[j] = 0.0f;\n"
                f"memcpy(pr + {PL}, xr, {IW} * sizeof(float));\n"
                f"for (int64_t j = {PL + IW}; j < {QW}; ++j) pr[j] = 0.0f;")
    # input column iw sits at padded column iw + PL: phase (iw + PL) % 2, index (iw + PL) // 2
    even, odd = f"pr + {PL % 2 * QW + PL // 2}", f"pr + {(PL + 1) % 2 * QW + (PL + 1) // 2}"
    tail = f"\nqe[{IW // 2}] = xr[{IW - 1}];" if IW % 2 else ""
    return (f"memset(pr, 0, {2 * QW} * sizeof(float));\n"
            f"float *restrict qe = {even}, *restrict qo = {odd};\n"
            f"dpk_deinterleave(xr, qe, qo, {IW // 2});{tail}")


def _conv2d(node: Node, types: list[TensorType], act: Node | None, out: TensorType,
            res: str | None = None) -> tuple[str, int, bool]:
    """The conv's task body; `res` names the input pointer of a fused residual add (same shape as the output)."""
    x, w, y = types[0].shape, types[1].shape, out.shape
    (sh, sw), (dh, dw), pads, g = node.attrs["strides"], node.attrs["dilations"], node.attrs["pads"], node.attrs["groups"]
    OCG, ICG, KH, KW = w[0] // g, w[1], w[2], w[3]
    P, R = y[2] * y[3], ICG * KH * KW
    if _is_pointwise(node.attrs, w):
        decl, col, colptr, ldb = "", "", f"x + oh0 * {y[3]}", P
    else:
        decl = "float *restrict col = (float *)scratch;"
        col = _im2col(ICG, x[2], x[3], KH, KW, sh, sw, dh, dw, pads[0], pads[1], y[3])
        colptr, ldb = "col", f"(int)(rows * {y[3]})"
    has_bias = len(types) == 3
    bias = TEMPLATES["conv_bias"].substitute(OCG=OCG, OW=y[3], P=P) if has_bias else ""
    rb = _conv_rows(node, types, out)
    nbk = -(-y[2] // rb)  # blocks per image and group
    text = TEMPLATES["conv2d"].substitute(
        G=g, RB=rb, NBK=nbk, IC=x[1], ICG=ICG, IH=x[2], IW=x[3], OC=w[0], OCG=OCG, OH=y[2],
        OW=y[3], P=P, R=R, colptr_decl=decl, col=cgen.indent(col, "  "), colptr=colptr, ldb=ldb,
        bias=cgen.indent(bias, "  "), beta="1.0f" if has_bias else "0.0f",
        act=cgen.indent((TEMPLATES["residual"].substitute(res=res, OCG=OCG, OW=y[3], P=P) if res else "")
                        + "\n" + _activation(act, "y", OCG, f"rows * {y[3]}", P), "  "))
    text = cgen.each_unit(text)
    parallel = x[0] * w[0] * P * R >= cgen.PARALLEL_MIN_WORK
    direct = _direct(node, types, out)
    if direct:  # the same blocks (g = 1): rows of an image
        pads_ = node.attrs["pads"]
        act_text = ""
        if res:
            act_text = (f"          const float *restrict r = {res} + n * {w[0] * P} + oh * {y[3]} + (o0 + i) * {P}"
                        f" + {direct[2]} * j;\n"
                        f"          for (int64_t k = 0; k < {direct[2]}; ++k) t[k] += r[k];\n")
        act_text += _vector_act(act, direct[2], "          ")
        qw = -(-(x[3] + pads_[1] + pads_[3]) // sw)
        skip = f"        if (r % {sh} >= {KH}) continue; /* a row no tap reads */" if KH < sh else ""
        fast = TEMPLATES["conv2d_direct"].substitute(
            OB=direct[0], NV=direct[1], VW=direct[2], VT=f"dpk_v{direct[2]}", RB=rb, NBK=nbk, C=x[1], IH=x[2], IW=x[3], OC=w[0],
            OH=y[2], OW=y[3], P=P, KH=KH, KW=KW, PT=pads_[0], PH=x[2] + pads_[0] + pads_[2], SH=sh, SW=sw,
            QW=qw, skip=skip, copy=cgen.indent(_phase_copy(x[3], pads_[1], sw, qw), "        "),
            bias="in2[o0 + i]" if has_bias else "0.0f", act=act_text)
        text = cgen.if_defined("__AVX512F__", fast, text)
    return text, x[0] * g * nbk, parallel


# ---- the convolution family: conv_transpose2d as gemm + col2im -----------------------------------------

CONV_TRANSPOSE = Template("""\
const int64_t n = u / ($G * $NBK), g = u / $NBK % $G, oc0 = u % $NBK * $OB;
const int64_t ocs = $OCG - oc0 < $OB ? $OCG - oc0 : $OB;
float *restrict col = (float *)scratch;
cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(ocs * $KK), $Q, $ICG, 1.0f,
            in1 + g * ($ICG * $OCG * $KK) + oc0 * $KK, $OCG * $KK, in0 + (n * $IC + g * $ICG) * $Q, $Q,
            0.0f, col, $Q);
float *restrict y = out0 + (n * $OC + g * $OCG + oc0) * $P;
for (int64_t i = 0; i < ocs; ++i) {
  float *restrict yp = y + i * $P;
  const float bv = $bias;
  for (int64_t p = 0; p < $P; ++p) yp[p] = bv;
  for (int64_t kh = 0; kh < $KH; ++kh) {
    const int64_t ih0 = dpk_host_first(($PT) - kh * $DH, $SH);
    const int64_t ih1 = dpk_host_end($OH + ($PT) - kh * $DH, $SH, $IH);
    for (int64_t kw = 0; kw < $KW; ++kw) {
      const float *restrict cp = col + ((i * $KH + kh) * $KW + kw) * $Q;
      const int64_t iw0 = dpk_host_first(($PL) - kw * $DW, $SW);
      const int64_t iw1 = dpk_host_end($OW + ($PL) - kw * $DW, $SW, $IW);
      const int64_t shift = kw * $DW - ($PL);
      for (int64_t ih = ih0; ih < ih1; ++ih) {
        float *restrict yr = yp + (ih * $SH + kh * $DH - ($PT)) * $OW;
        const float *restrict cr = cp + ih * $IW;
        for (int64_t iw = iw0; iw < iw1; ++iw) yr[iw * $SW + shift] += cr[iw];
      }
    }
  }
}
$act""")


def _conv_transpose_channels(types: list[TensorType], groups: int) -> int:
    """Output channels per block: a share of all (image, group, channel) planes by block_size, within one
    group, and no more than keep the block's GEMM result (the scratch) within MAX_COL_BYTES."""
    x, w = types[0].shape, types[1].shape
    ocg, kk, q = w[1], w[2] * w[3], x[2] * x[3]
    most = max(1, min(ocg, MAX_COL_BYTES // (kk * q * 4)))
    return block_size(x[0] * groups * ocg, kk * q * w[0] // groups, most=most)


def _conv_transpose_workspace(node: Node, types: list[TensorType]) -> int:
    x, w = types[0].shape, types[1].shape
    return _conv_transpose_channels(types, node.attrs["groups"]) * w[2] * w[3] * x[2] * x[3] * 4


def _conv_transpose2d(node: Node, types: list[TensorType], act: Node | None, out: TensorType) -> tuple[str, int, bool]:
    x, w, y = types[0].shape, types[1].shape, out.shape
    (sh, sw), (dh, dw), pads, g = node.attrs["strides"], node.attrs["dilations"], node.attrs["pads"], node.attrs["groups"]
    ob = _conv_transpose_channels(types, g)
    nbk = -(-w[1] // ob)  # blocks per image and group
    text = CONV_TRANSPOSE.substitute(
        G=g, NBK=nbk, OB=ob, OCG=w[1], ICG=x[1] // g, IC=x[1], OC=y[1], KK=w[2] * w[3], KH=w[2], KW=w[3],
        Q=x[2] * x[3], IH=x[2], IW=x[3], OH=y[2], OW=y[3], P=y[2] * y[3], SH=sh, SW=sw, DH=dh, DW=dw,
        PT=pads[0], PL=pads[1], bias="in2[g * %d + oc0 + i]" % w[1] if len(types) == 3 else "0.0f",
        act=_activation(act, "y", "ocs", y[2] * y[3], y[2] * y[3]))
    parallel = math.prod(x) * math.prod(w[1:]) >= cgen.PARALLEL_MIN_WORK
    return cgen.each_unit(text), x[0] * g * nbk, parallel


def _fused_chain(fn: str, nodes: list[Node]) -> tuple[Node, Node | None, Node | None]:
    """(op, residual add or None, activation or None) of a region: the op, then what the partitioner fused."""
    node, rest = nodes[0], list(nodes[1:])
    add = rest.pop(0) if rest and rest[0].op == "add" and node.op == "conv2d" else None
    act = rest.pop(0) if rest and rest[0].op in activations() else None
    chain = [n for n in (node, add, act) if n]
    if rest or any(b.inputs.count(a.output) != 1 or (b is act and len(b.inputs) != 1) for a, b in zip(chain, chain[1:])):
        names = ", ".join(n.name for n in nodes)
        raise BuildError(f"cblas backend: region '{fn}' holds {names}; it takes one node, then optionally a "
                         f"residual add (after a conv2d) and an activation, each reading the one before")
    return node, add, act


class CblasBackend(Backend):
    name = "cblas"
    @property
    def fuses(self) -> dict[str, tuple[str, ...]]:
        """An activation after any op; after a conv also a residual add (then an activation after that add)."""
        acts = activations()
        return {**{op: acts for op in OPS}, "conv2d": acts + ("add",), "add": acts}

    def can_fuse(self, node: Node, follower: Node, graph: Graph) -> bool:
        if follower.op != "add":
            return super().can_fuse(node, follower, graph)
        # a residual: the other operand has the conv's output type exactly (no broadcast), and one more
        # input still fits the task's context
        other = [t for t in follower.inputs if t != node.output]
        return (node.op == "conv2d" and len(other) == 1 and graph.type_of(other[0]) == graph.type_of(node.output)
                and len(node.inputs) < cgen.TASK_MAX_INPUTS)

    def supports(self, node: Node, graph: Graph) -> str | None:
        if node.op in activations():
            return f"cblas takes {node.op} only fused into the dense, matmul or conv2d whose sole consumer it is"
        if node.op not in OPS:
            return f"op {node.op} has no cblas kernel (cblas takes {', '.join(OPS)})"
        if node.op == "conv_transpose2d" and node.attrs["groups"] > 1:  # W is [C_in, C_out / groups, ...]
            w, g = graph.type_of(node.inputs[1]).shape, node.attrs["groups"]
            if min(w[0] // g, w[1]) < MIN_GROUP_CHANNELS:
                return (f"groups={g} leaves {w[0] // g} input and {w[1]} output channels per group: host's direct "
                        f"loop is faster than sgemm calls that small (cblas takes groups of >= "
                        f"{MIN_GROUP_CHANNELS} channels)")
        if node.op == "conv2d" and node.attrs.get("groups", 1) > 1:
            w, g = graph.type_of(node.inputs[1]).shape, node.attrs["groups"]
            if min(w[0] // g, w[1]) < MIN_GROUP_CHANNELS:
                return (f"groups={g} leaves {w[1]} input and {w[0] // g} output channels per group: one sgemm "
                        f"per group that small costs more in calls than host's direct loop (cblas takes groups of "
                        f">= {MIN_GROUP_CHANNELS} channels)")
        reason = float32_tensors("cblas", node, graph)
        if reason is not None:
            return reason
        for name in [*node.inputs, node.output]:
            t = graph.type_of(name)
            if math.prod(t.shape) > INT_MAX:
                return f"{name} is {t}: more than {INT_MAX} elements (CBLAS sizes are C ints)"
        return None

    def lower(self, region: Region, graph: Graph) -> CSource:
        fn = region.name
        if not cgen.is_identifier(fn):
            raise BuildError(f"cblas backend: region name '{fn}' is not a C identifier")
        node, add, act = _fused_chain(fn, region.nodes)
        reason = self.supports(node, graph)
        if reason is not None:
            raise BuildError(f"{node.describe()}: cblas backend cannot lower it: {reason}")
        result = region.nodes[-1].output
        residual = [t for t in add.inputs if t != node.output][0] if add else None
        if region.outputs != [result]:
            raise BuildError(f"cblas backend: region '{fn}' must have the one output '{result}', "
                             f"not {region.outputs}")
        params = list(region.inputs) + list(region.outputs)
        relaid = {}  # weight -> the layout this region stores it in (CSource.weights)
        if stores_panels(node, graph):
            relaid[node.inputs[1]] = panels(graph.weights[node.inputs[1]])
        types_of = {name: TensorType(a.shape, a.dtype.name) for name, a in relaid.items()}
        checks = [cgen.check(fn, i, name, types_of.get(name) or graph.type_of(name)) for i, name in enumerate(params)]
        types = [types_of.get(name) or graph.type_of(name) for name in node.inputs]
        out = graph.type_of(result)
        workspace = 0
        if node.op in ("conv2d", "conv_transpose2d"):
            workspace = (_conv_workspace(node, types, out) if node.op == "conv2d"
                         else _conv_transpose_workspace(node, types))
            workspace = (workspace + WORKSPACE_ALIGN - 1) // WORKSPACE_ALIGN * WORKSPACE_ALIGN
        scratch = "(void *)0"
        if workspace:
            checks.append(cgen.check_workspace(fn, len(params), workspace))
            scratch = cgen.arg_data(len(params))
        task_inputs = node.inputs + ([residual] if residual else [])
        if node.op == "conv2d":
            body, units, parallel = _conv2d(node, types, act, out, f"in{len(node.inputs)}" if residual else None)
        elif node.op == "conv_transpose2d":
            body, units, parallel = _conv_transpose2d(node, types, act, out)
        else:
            if relaid:
                body, units, parallel = _dense_panels(node, types, act, out.shape[-1])
            else:
                body, units, parallel = {"dense": _dense, "matmul": _matmul}[node.op](node, types, act)
            body = cgen.each_unit(body)
        what = " + ".join(f"{n.name}: {n.op}" for n in region.nodes)
        definition, call = cgen.task(f"{fn}_task", what, ["float"] * (len(task_inputs) + 1), units, body, parallel,
                                     workspace, scratch)
        index = {name: i for i, name in reversed(list(enumerate(params)))}
        bindings = [cgen.pointer(f"in{i}", "float", cgen.arg_data(index[name])) for i, name in enumerate(task_inputs)]
        bindings.append(cgen.pointer("out0", "float", cgen.arg_data(index[result]), const=False))
        comment = "; ".join(f"{n.name}: {n.op}({', '.join(n.inputs)}) -> {n.output}" for n in region.nodes)
        source = definition + "\n" + cgen.function(fn, comment + " (OpenBLAS)", checks,
                                                   [cgen.block(f"{what} -> {out}", bindings, call)])
        prelude = [cgen.PRELUDE, CBLAS_PRELUDE, HOST_PRELUDE]  # col2im bounds; the fused activations' dpk_expf...
        return CSource(source=source, functions=[fn], prelude=prelude,
                       workspace_bytes=workspace, libraries=list(LIBRARIES), requires=list(REQUIRES),
                       install_hint=INSTALL_HINT, weights=relaid)
