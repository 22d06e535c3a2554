"""The `xnnpack` backend: conv2d and dense as XNNPACK operators, in NHWC, a region at a time.

XNNPACK (Debian's libxnnpack-dev; what TFLite and ExecuTorch run on CPUs) picks
its microkernels by CPU at run time (SSE/AVX/AVX2/AVX-512 here, NEON on arm64),
so a file built for the baseline -march still runs AVX-512 kernels. It computes
in NHWC. Consecutive nodes this backend takes form one region (payload-style
grouping, but lowered to C in the packed calling convention): the region turns
its 4-D inputs from NCHW into NHWC once, runs every node in NHWC, and turns its
4-D outputs back, so a ResNet's conv/add/relu chain pays two transposes, not two
per conv. In a region:

    conv2d   any groups (depthwise, grouped; a plain conv needs 8 output channels,
             XNNPACK's narrowest tile), strides, dilations, asymmetric pads,
             bias; a relu or clip that alone reads it is fused (XNNPACK's
             output min/max), and so are a SiLU, x * sigmoid(x), and any other
             unary op (run on each block as it finishes, while it is in cache)
    dense    x [M, K] (rank 2) made in the region (a CNN's classifier; an MLP's
             dense is OpenBLAS's), W [N, K] as stored, bias; relu/clip fused
    maxpool2d, global_avgpool, reduce_mean over H and W  XNNPACK's pools
    add, sub, mul, div  operands of the output's shape, or one value, or one
             per channel (a squeeze-excite scale); then any fused unary op
    unary    every float32 unary elementwise op of the registry (relu, sigmoid,
             hard_swish...: host's C, in a flat loop over the NHWC buffer;
             sigmoid alone is XNNPACK's vectorized operator)

All but the anchors are taken only where an operand (the input of a pool) is
made by a node this backend takes (an add between two host nodes stays on host:
no transposes for nothing). ResNet-18, MobileNet v2/v3 and EfficientNet-B0 are
then one region from the stem to the classifier: two transposes per run.

Weights: a conv's W is stored at build time in XNNPACK's portable OHWI order
(CSource.weights; [G][OC/G][KH][KW][IC/G]); XNNPACK then packs W and the bias
into its CPU-specific blocked layout when the region's operators are created,
on the region's first call (so about one more copy of the region's weights in
memory, per concurrent run; c/xnnpack_prelude.h keeps the instances).

Threads and determinism: each conv is split at build time into blocks of
output rows (batch 1) or of images (a batch) first, each reading only its part
of x (MobileNet v2 on 2 threads: 5.2 -> 4.3 ms at batch 1, 2.34x -> 1.21x
onnxruntime's time at batch 64, against blocks of channels, which read all of
x), then into blocks of output channels (or groups); a dense or pool into
blocks of output channels, then of rows or images. A
block of rows or images packs its own copy of the layer's weights, so they are
cut while the copies cost at most SPLIT_COPY_BYTES. Each block is one XNNPACK
operator run with no
pthreadpool; the blocks are the units of a cgen task, so dsopack's own pool
runs them. Every output is computed by one operator on one thread whatever the
thread count: outputs are bit-identical for any thread count.

The CSource links -lXNNPACK and requires libXNNPACK.so.0 (it pulls
libpthreadpool.so.0 and libcpuinfo.so.0), so a machine without it fails at load
naming it, like OpenBLAS for cblas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from packager import ops
from packager.backends import cgen
from packager.backends.base import Backend, CSource, Region, float32_tensors
from packager.backends.host import HOST_PRELUDE, unary_expr  # the unary ops' C calls dpk_expf & co
from packager.ir import Graph, Node, TensorType

ANCHORS = ("conv2d", "dense")
BINARY = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
# layout-bound, so they keep a region going (ResNet's stem maxpool; a squeeze-excite block's mean over H, W)
POOLS = ("maxpool2d", "global_avgpool", "reduce_mean")
ACTIVATIONS = ("relu", "clip")  # what an XNNPACK operator's output min/max computes
LIBRARIES = ["XNNPACK"]
REQUIRES = ["libXNNPACK.so.0"]
INSTALL_HINT = ("the xnnpack backend needs the XNNPACK headers (xnnpack.h, pthreadpool.h) and library "
                "(libXNNPACK.so) at build time; on Debian/Ubuntu: apt-get install libxnnpack-dev "
                "libpthreadpool-dev (scripts/setup.sh installs them), or leave xnnpack out of `backends`")
PRELUDE = cgen.read_c("xnnpack_prelude.h")

ALIGN = 64  # bytes: every workspace buffer starts on a cache line
CHANNEL_GRANULE = 16  # output channels per block are a multiple of this (XNNPACK's AVX-512 tile is 16 wide)
MAX_BLOCKS = 8  # operators per conv/dense: enough to share among a few threads
# multiply-adds per block at least: with blocks of rows, 256K beat 1M (MobileNet v2 at batch 1 on 2 threads
# 4.38 -> 4.0 ms, EfficientNet-B0 10.3 -> 9.3; ResNet-18 even); 64K was no better
BLOCK_MIN_WORK = 1 << 18
MIN_CONV_CHANNELS = 8  # output channels a (non-grouped) conv needs for XNNPACK's tiles to pay
# the extra packed weights a layer's blocks of rows or images may cost (a copy each): MobileNet v2 ran as fast
# with 256 KiB as with 1 MiB, for 3 MiB more memory instead of 11
SPLIT_COPY_BYTES = 1 << 18
TRANSPOSE_TILE = 256  # positions per unit of a layout transpose
ELEMENTWISE_BLOCK = 16384
# Debian's XNNPACK (2022-02) has depthwise microkernels of 3, 4, 9 and 25 taps; a 7x7 depthwise conv
# (ConvNeXt) ran through its generic path: ConvNeXt-tiny 1.26x slower than [cblas, host] (interleaved A/B)
DEPTHWISE_MAX_TAPS = 25
SIGMOID_WORK = 16  # a sigmoid costs about this many multiply-adds (for the block sizes)
SWISH_CHUNK = 16384  # floats a fused SiLU takes at a time (its sigmoid's 64 KiB stay in L2 for the product)


class XnnpackBackend(Backend):
    name = "xnnpack"
    payload = True  # consecutive nodes form one region (one NHWC island); lower() returns C

    def __init__(self) -> None:
        self._taken: tuple[Graph | None, dict[str, str | None]] = (None, {})  # a graph and node -> supports()
        self._made_by: tuple[Graph | None, dict[str, Node]] = (None, {})  # a graph and its tensor -> producer

    # ---- what the backend takes

    def supports(self, node: Node, graph: Graph) -> str | None:
        if self._taken[0] is not graph:
            self._taken = (graph, {})
        answers = self._taken[1]
        if node.name not in answers:
            answers[node.name] = self._supports(node, graph)
        return answers[node.name]

    def _supports(self, node: Node, graph: Graph) -> str | None:
        taken = ANCHORS + POOLS + tuple(BINARY) + unary_ops()
        if node.op not in taken:
            return (f"op {node.op} has no xnnpack kernel (xnnpack takes {', '.join(ANCHORS + POOLS + tuple(BINARY))} "
                    f"and float32 unary elementwise ops)")
        reason = float32_tensors("xnnpack", node, graph)
        if reason is not None:
            return reason
        if node.op in ANCHORS:
            return self._anchor_reason(node, graph)
        out = graph.type_of(node.output).shape
        if node.op in BINARY:
            for t in node.inputs:
                if _operand_index(graph.type_of(t).shape, out) is None or (
                        t in graph.weights and len(out) == 4 and graph.type_of(t).shape == out):
                    return (f"xnnpack takes {node.op} of operands of the output's shape (computed, not weights), "
                            f"of one value, or of one per channel ({t} is {list(graph.type_of(t).shape)}, the output "
                            f"{list(out)})")
        if node.op == "clip" and not node.attrs["min"] < node.attrs["max"]:
            return "xnnpack takes a clip with min < max"
        if node.op == "maxpool2d":
            reason = _maxpool_reason(node, graph)
            if reason:
                return reason
        x = graph.type_of(node.inputs[0]).shape
        if node.op == "reduce_mean" and (len(x) != 4 or sorted(a % 4 for a in node.attrs["axes"]) != [2, 3]):
            return "xnnpack takes a reduce_mean over H and W of a 4-D tensor (a global average pool)"
        if not any(self._made_here(t, graph) and (node.op in POOLS or graph.type_of(t).shape == out)
                   for t in node.inputs[:1 + (node.op in BINARY)]):
            return (f"xnnpack takes {node.op} only of a full-size result of a node it takes (no layout change for it "
                    f"alone)")
        return None

    def _anchor_reason(self, node: Node, graph: Graph) -> str | None:
        x = graph.type_of(node.inputs[0]).shape
        if node.op == "dense" and len(x) != 2:
            return f"xnnpack takes a dense of x [M, K] (rank 2), not {list(x)}"
        if node.op == "dense" and not self._made_here(node.inputs[0], graph):
            # an MLP's chain: OpenBLAS reads W where it lies (no packed copy in memory, no packing before the first
            # result: the 100 MB MLP) and its sgemv is 3x faster at batch 1 (mlp_small 20 against 69 us)
            return ("xnnpack takes a dense only inside a region (x made by a node it takes, e.g. a CNN's "
                    "classifier); a dense alone is cblas's or host's")
        if node.op == "conv2d" and len(x) != 4:
            return f"xnnpack takes a 2-D conv of NCHW x, not {list(x)}"
        if node.op == "conv2d" and node.inputs[0] in graph.weights:  # the region transposes activations only
            return "xnnpack takes a conv of a computed x, not of a weight"
        if node.op == "conv2d":
            w = graph.type_of(node.inputs[1]).shape
            # inside a region it stays: leaving it would cost transposes (EfficientNet's squeeze-excite convs of 4)
            if node.attrs["groups"] == 1 and w[0] < MIN_CONV_CHANNELS and not self._made_here(node.inputs[0], graph):
                return (f"a conv of {w[0]} output channels of an x made outside a region: XNNPACK computes them in "
                        f"tiles of 8 or 16 (AVX2, AVX-512), so it wastes most of each tile (LeNet's 6-channel conv at "
                        f"batch 64: 1.8x OpenBLAS's time)")
            if w[1] == 1 and node.attrs["groups"] > 1 and w[2] * w[3] > DEPTHWISE_MAX_TAPS:
                return (f"a depthwise {w[2]}x{w[3]} conv: XNNPACK has depthwise kernels of at most "
                        f"{DEPTHWISE_MAX_TAPS} taps, and its fallback is slower than host's direct loop")
        readers = graph.consumers()
        for i, name in enumerate(node.inputs[1:], 1):
            what = "W" if i == 1 else "bias"
            if name not in graph.weights:
                return f"xnnpack packs {node.op}'s {what} at load: it must be a weight ({name} is computed)"
            if node.op == "conv2d" and i == 1 and (name in graph.outputs or len(readers.get(name, [])) != 1):
                return f"xnnpack stores the conv's W in its own order: {name} must be read by this node alone"
        return None

    def _made_here(self, tensor: str, graph: Graph) -> bool:
        producer = self._producers(graph).get(tensor)
        return producer is not None and self.supports(producer, graph) is None

    def _producers(self, graph: Graph) -> dict[str, Node]:
        if self._made_by[0] is not graph:
            self._made_by = (graph, {n.output: n for n in graph.nodes})
        return self._made_by[1]

    # ---- lowering

    def lower(self, region: Region, graph: Graph) -> CSource:
        fn = self.check_c_region(region, graph)
        return _Lowering(fn, region, graph).source()


def unary_ops() -> tuple[str, ...]:
    """Unary elementwise ops the region computes in place of host (any layout will do): the registry's float32
    ones (host.unary_expr's C)."""
    return ops.elementwise(1, "float32")


def _operand_index(shape: tuple, out: tuple) -> str | None:
    """The C index into an operand of `shape` for output element i = r * C + c of `out` as the region lays it
    out (rows r of C channels: NHWC when 4-D, rows of a matrix when 2-D): the same shape (i), one value (0),
    or (4-D) one value per channel, or (2-D) per column (c, and the image's row of channels); else None."""
    shape, out = tuple(shape), tuple(out)
    if shape == out:
        return "i"
    if math.prod(shape) == 1:
        return "0"
    padded = (1,) * (len(out) - len(shape)) + shape
    if len(padded) != len(out):
        return None
    if len(out) == 4 and padded[1] == out[1] and padded[2:] == (1, 1):  # NHWC: channel is the fastest axis
        per_image = f"r / {out[2] * out[3]} * {out[1]} + " if padded[0] == out[0] > 1 else ""
        return f"{per_image}c" if padded[0] in (1, out[0]) else None
    if len(out) == 2 and padded == (1, out[1]):
        return "c"
    return None


def _maxpool_reason(node: Node, graph: Graph) -> str | None:
    """Why XNNPACK's max pooling cannot compute this maxpool2d (its output size is the floor one), or None."""
    x, y = graph.type_of(node.inputs[0]).shape, graph.type_of(node.output).shape
    (kh, kw), (sh, sw), (dh, dw), pads = (node.attrs["kernel"], node.attrs["strides"], node.attrs["dilations"],
                                          node.attrs["pads"])
    if kh * kw == 1:
        return "xnnpack takes max pools of more than one tap"
    floor = [(x[2] + pads[0] + pads[2] - dh * (kh - 1) - 1) // sh + 1, (x[3] + pads[1] + pads[3] - dw * (kw - 1) - 1) // sw + 1]
    if list(y[2:]) != floor:
        return f"xnnpack's max pool gives {floor[0]}x{floor[1]} outputs (floor), not {y[2]}x{y[3]} (ceil_mode)"
    return None


@dataclass(frozen=True)
class _Epilogue:
    """What a conv's units do to their output once computed: the unary op `act` in place, or a SiLU if None."""

    widths: list[int]  # each slice's output channels
    stride: int  # the output's channels
    act: Node | None

    @property
    def what(self) -> str:
        return f" + {self.act.op if self.act else 'silu'}"


@dataclass(frozen=True)
class _Block:
    """A part of a layer's batch that one operator (per slice of channels) computes: its x and y element
    offsets, its images (setup's batch), its input rows (setup's height), and its top and bottom pads."""

    x: int
    y: int
    images: int
    rows: int
    pads: tuple[int, int]
    pixels: int  # output pixels (rows of a matrix) the block writes


def _copies(count: int, slices: int, work: int, weight_bytes: int) -> int:
    """How many blocks (of images or rows) to cut `count` into, beside `slices` slices of channels: while there
    are fewer than MAX_BLOCKS units, each of at least BLOCK_MIN_WORK, and the extra packed copies of the
    weights (one per block) cost at most SPLIT_COPY_BYTES."""
    return max(1, min(count, MAX_BLOCKS // slices, work // (BLOCK_MIN_WORK * slices),
                      1 + SPLIT_COPY_BYTES // max(1, weight_bytes)))


def _image_blocks(x: tuple, y: tuple, count: int, pads: tuple[int, int] = (0, 0)) -> list[_Block]:
    """The batch of x / y (NHWC, or rows of a matrix) cut into `count` blocks of whole images."""
    size = -(-x[0] // count)
    return [_Block(i * math.prod(x[1:]), i * math.prod(y[1:]), min(x[0], i + size) - i,
                   x[2] if len(x) == 4 else 1, pads, (min(x[0], i + size) - i) * math.prod(y[2:]))
            for i in range(0, x[0], size)]


def _row_blocks(x: tuple, y: tuple, kh: int, sh: int, dh: int, pt: int, count: int) -> list[_Block] | None:
    """One NHWC image's output rows (of a conv of kh taps down, stride sh, dilation dh, top pad pt) cut into
    `count` blocks, each with the input rows it reads and the pads it keeps (a block inside the image has
    none). A block reads only its own rows of x, where a block of channels reads all of x, which every thread
    wrote. None when a block would read no input row (pads taller than the image)."""
    height, oh = x[2], y[2]
    size = -(-oh // count)
    blocks = []
    for r0 in range(0, oh, size):
        r1 = min(oh, r0 + size)
        first, end = r0 * sh - pt, (r1 - 1) * sh - pt + (kh - 1) * dh + 1  # input rows [first, end)
        lo, hi = max(0, first), min(height, end)
        if hi <= lo:
            return None
        blocks.append(_Block(lo * x[3] * x[1], r0 * y[3] * y[1], 1, hi - lo, (lo - first, end - hi), (r1 - r0) * y[3]))
    return blocks


def _act_bounds(act: Node | None) -> tuple[float, float]:
    if act is None:
        return -math.inf, math.inf
    if act.op == "relu":
        return 0.0, math.inf
    return float(act.attrs["min"]), float(act.attrs["max"])


def _slices(count: int, granule: int, work: int, most: int = MAX_BLOCKS) -> list[tuple[int, int]]:
    """[begin, end) blocks over `count` channels (or groups), each a multiple of `granule` but the last,
    at most `most`, each of at least BLOCK_MIN_WORK multiply-adds as far as that allows."""
    blocks = max(1, min(most, -(-count // granule), work // BLOCK_MIN_WORK))
    size = -(-(-(-count // blocks)) // granule) * granule
    return [(b, min(count, b + size)) for b in range(0, count, size)]


class _Lowering:
    """One region's C: the operators' create function, the steps (transposes, operators, elementwise loops) as
    tasks over a workspace of NHWC buffers, and the packed function."""

    def __init__(self, fn: str, region: Region, graph: Graph):
        self.fn, self.region, self.graph = fn, region, graph
        self.params = list(region.inputs) + list(region.outputs)
        self.arg = {name: i for i, name in reversed(list(enumerate(self.params)))}
        self.relaid: dict[str, np.ndarray] = {}
        self.creates: list[str] = []  # C statements of the create function
        self.nops = 0
        self.tasks: list[str] = []  # static task definitions
        self.steps: list[str] = []  # the function's blocks, in order
        self.where: dict[str, int] = {}  # tensor -> its workspace offset (NHWC for 4-D), or absent: its argument
        self.live: list[tuple[int, int, str]] = []  # (offset, bytes, tensor) allocated now
        self.peak = 0

    # -- the workspace: a first-fit allocator over the region's steps

    def _alloc(self, tensor: str) -> None:
        self._alloc_bytes(tensor, self.graph.type_of(tensor).nbytes)

    def _alloc_bytes(self, tensor: str, nbytes: int) -> str:
        """A workspace buffer of `nbytes` for `tensor` (a buffer no node reads is freed after this step)."""
        nbytes = -(-nbytes // ALIGN) * ALIGN
        offset = 0
        for start, size, _ in sorted(self.live):
            if start - offset >= nbytes:
                break
            offset = max(offset, start + size)
        self.live.append((offset, nbytes, tensor))
        self.where[tensor] = offset
        self.peak = max(self.peak, offset + nbytes)
        return tensor

    def _free_dead(self, step: int, last_use: dict[str, int]) -> None:
        keep = set(self.region.outputs)
        self.live = [b for b in self.live if b[2] in keep or last_use.get(b[2], -1) > step]

    def _ptr(self, tensor: str) -> str:
        """The C expression of `tensor`'s data: its workspace buffer, else its argument."""
        if tensor in self.where:
            return f"((uint8_t *){cgen.arg_data(len(self.params))} + {self.where[tensor]})"
        return cgen.arg_data(self.arg[tensor])

    def _nhwc(self, tensor: str) -> bool:
        return len(self.graph.type_of(tensor).shape) == 4

    # -- the steps

    def _step(self, comment: str, types: list[str], ins: list[str], out: str, units: int, body: str,
              work: int, scratch: int = 0) -> None:
        """A task over `units` units; `scratch` bytes per thread (the caller's in the workspace)."""
        name = f"{self.fn}_step{len(self.steps)}"
        mine = "(void *)0"
        if scratch:
            mine = self._ptr(self._alloc_bytes(f"{name}.scratch", scratch))
        definition, call = cgen.task(name, comment, types, units, body, work >= cgen.PARALLEL_MIN_WORK,
                                     scratch, mine)
        self.tasks.append(definition)
        bindings = [cgen.pointer(f"in{i}", t, e) for i, (t, e) in enumerate(zip(types, ins))]
        bindings.append(cgen.pointer("out0", types[-1], out, const=False))
        self.steps.append(cgen.block(comment, bindings, call))

    def _transpose(self, tensor: str, to_nhwc: bool) -> None:
        n, c, h, w = self.graph.type_of(tensor).shape
        p = h * w
        units = n * -(-p // TRANSPOSE_TILE)
        src, dst = (cgen.arg_data(self.arg[tensor]), self._ptr(tensor))
        if not to_nhwc:
            src, dst = dst, src
        body = f"dpk_xnn_transpose(in0, out0, {c}, {p}, {TRANSPOSE_TILE}, begin, end, {int(to_nhwc)});"
        what = "NCHW -> NHWC" if to_nhwc else "NHWC -> NCHW"
        self._step(f"{tensor}: {what}", ["float", "float"], [src], dst, units, body, n * c * p)

    def _operators(self, node: Node, slices: list[tuple[int, int]], create: str, setup: str,
                   offsets: list[tuple[int, int]], out: str, work: int, blocks: list[_Block] | None = None,
                   what: str = "", epilogue: _Epilogue | None = None) -> None:
        """One operator per block (of images or rows; default: the whole batch) and slice of channels: `create`
        and `setup` are C with {k} (the operator), {b}/{e} (the slice), {pt}/{pb} (the block's pads), {n}/{h}
        (its images and input rows); offsets are each slice's (x, y) element offsets. `epilogue` runs on each
        unit's output right after it is computed, while it is in cache (a pass of its own over the whole
        tensor: a SiLU's two cost EfficientNet-B0 a fifth of its time)."""
        blocks = blocks or [_Block(0, 0, 1, 1, (0, 0), 0)]  # the sigmoid's: setup and create name neither
        base = self.nops
        units = [(block, k) for block in blocks for k in range(len(slices))]
        for i, (block, k) in enumerate(units):
            b, e = slices[k]
            self.creates.append(create.format(k=base + i, b=b, e=e, pt=block.pads[0], pb=block.pads[1]))
        self.nops += len(units)
        arrays = {"xoff": [block.x + offsets[k][0] for block, k in units],
                  "yoff": [block.y + offsets[k][1] for block, k in units]}
        if "{n}" in setup:
            arrays["nb"] = [block.images for block, _ in units]
        if "{h}" in setup:
            arrays["hb"] = [block.rows for block, _ in units]
        after, scratch = "", 0
        if epilogue:
            widths, stride = epilogue.widths, epilogue.stride
            arrays["px"] = [block.pixels for block, _ in units]
            arrays["cw"] = [widths[k] for _, k in units]
        if epilogue and epilogue.act:  # a unary op's C, in place
            after = (f"  const int64_t rows = px[u], width = cw[u];\n"
                     f"  for (int64_t p = 0; p < rows; ++p) {{\n"
                     f"    float *restrict row = out0 + yoff[u] + p * {stride};\n"
                     f"    for (int64_t c = 0; c < width; ++c) {{\n"
                     f"      const float v = row[c];\n      row[c] = {unary_expr(epilogue.act)};\n    }}\n  }}\n")
        elif epilogue:  # a SiLU: an XNNPACK sigmoid per unit into the thread's scratch, then the product
            for i, (block, k) in enumerate(units):
                self.creates.append(f"DPK_XNN_CHECK(\"{self.fn}\", \"{cgen.c_string(node.name)}\", "
                                    f"xnn_create_sigmoid_nc_f32({widths[k]}, {stride}, {widths[k]}, 0, "
                                    f"&ops[{self.nops + i}]));")
            self.nops += len(units)
            chunk = max(1, SWISH_CHUNK // max(widths))
            scratch = min(chunk, max(block.pixels for block in blocks)) * max(widths) * 4
            after = (f"  dpk_xnn_swish(in0[{len(units)} + u], out0 + yoff[u], (float *)scratch, px[u], cw[u], "
                     f"{stride}, {chunk});\n")
        declared = ", ".join(f"{name}[] = {{{', '.join(map(str, values))}}}" for name, values in arrays.items())
        body = (f"static const int64_t {declared};\n"
                f"for (int64_t u = begin; u < end; ++u) {{\n"
                f"  /* the operators were created and checked with these shapes: setup and run cannot fail */\n"
                f"  (void){setup.format(op='in0[u]', x='in1 + xoff[u]', y='out0 + yoff[u]', n='(size_t)nb[u]', h='(size_t)hb[u]')};\n"
                f"  (void)xnn_run_operator(in0[u], NULL);\n{after}"
                f"}}")
        count = f"{len(units)} XNNPACK operator{'s' * (len(units) > 1)}" + (
            f": {len(slices)} slices x {len(blocks)} blocks of {what}" if len(blocks) > 1 else "")
        self._step(f"{node.name}: {node.op}{epilogue.what if epilogue else ''} ({count})", ["xnn_operator_t", "float", "float"],
                   [f"(inst->ops + {base})", self._ptr(node.inputs[0])], out, len(units), body, work, scratch)

    def _conv2d(self, node: Node, act: Node | None, out: str, silu: bool = False) -> None:
        """A conv; `act` a relu/clip (XNNPACK's output bounds) or another unary op (an epilogue), `silu` the
        SiLU of its output (an epilogue)."""
        x, y = self.graph.type_of(node.inputs[0]).shape, self.graph.type_of(node.output).shape
        w = self.graph.weights[node.inputs[1]]
        g = node.attrs["groups"]
        (sh, sw), (dh, dw), (pt, pl, pb, pr) = node.attrs["strides"], node.attrs["dilations"], node.attrs["pads"]
        oc, icg, kh, kw = w.shape
        ocg = oc // g
        # [OC, IC/G, KH, KW] -> [G][OC/G][KH][KW][IC/G] (OHWI per group): XNNPACK's order
        self.relaid[node.inputs[1]] = np.ascontiguousarray(w.transpose(0, 2, 3, 1))
        work = y[0] * y[2] * y[3] * oc * icg * kh * kw
        bounded = act is not None and act.op in ACTIVATIONS
        lo, hi = _act_bounds(act if bounded else None)
        wp = f"(const float *){cgen.arg_data(self.arg[node.inputs[1]])}"
        per_unit = 1 if g == 1 else ocg  # a block: output channels [b, e) of the one group, or groups [b, e)
        bias = (f"(const float *){cgen.arg_data(self.arg[node.inputs[2]])} + {{b}} * {per_unit}"
                if len(node.inputs) == 3 else "NULL")
        # blocks of rows (one image) or of images first: each reads only its part of x, where a block of channels
        # reads all of x, which the other threads wrote
        if x[0] == 1:
            blocks, what = _row_blocks(x, y, kh, sh, dh, pt, _copies(y[2], 1, work, w.nbytes)), "rows"
        else:
            blocks, what = _image_blocks(x, y, _copies(x[0], 1, work, w.nbytes), (pt, pb)), "images"
        blocks = blocks or _image_blocks(x, y, 1, (pt, pb))
        most = MAX_BLOCKS // len(blocks)
        if g == 1:
            slices = _slices(oc, CHANNEL_GRANULE, work, most)
            create = (f"{{pt}}, {pr}, {{pb}}, {pl}, {kh}, {kw}, {sh}, {sw}, {dh}, {dw}, 1, {icg}, {{e}} - {{b}}, "
                      f"{x[1]}, {oc}, {wp} + {{b}} * {kh * kw * icg}")
            offsets = [(0, b) for b, _ in slices]
            widths = [e - b for b, e in slices]
        else:
            slices = _slices(g, max(1, CHANNEL_GRANULE // math.gcd(CHANNEL_GRANULE, ocg)), work, most)
            create = (f"{{pt}}, {pr}, {{pb}}, {pl}, {kh}, {kw}, {sh}, {sw}, {dh}, {dw}, {{e}} - {{b}}, {icg}, {ocg}, "
                      f"{x[1]}, {oc}, {wp} + {{b}} * {ocg * kh * kw * icg}")
            offsets = [(b * icg, b * ocg) for b, _ in slices]
            widths = [(e - b) * ocg for b, e in slices]
        create = (f"DPK_XNN_CHECK(\"{self.fn}\", \"{cgen.c_string(node.name)}\", xnn_create_convolution2d_nhwc_f32("
                  f"{create}, {bias}, {cgen.c_float(lo)}, {cgen.c_float(hi)}, 0, &ops[{{k}}]));")
        setup = f"xnn_setup_convolution2d_nhwc_f32({{op}}, {{n}}, {{h}}, {x[3]}, {{x}}, {{y}}, NULL)"
        epilogue = (_Epilogue(widths, oc, None) if silu else
                    _Epilogue(widths, oc, act) if act and not bounded else None)
        self._operators(node, slices, create, setup, offsets, out, work, blocks, what, epilogue)

    def _dense(self, node: Node, act: Node | None, out: str) -> None:
        (m, k), n = self.graph.type_of(node.inputs[0]).shape, self.graph.type_of(node.output).shape[-1]
        work = m * n * k
        lo, hi = _act_bounds(act)
        slices = _slices(n, CHANNEL_GRANULE, work)
        wp = f"(const float *){cgen.arg_data(self.arg[node.inputs[1]])} + {{b}} * {k}"
        bias = (f"(const float *){cgen.arg_data(self.arg[node.inputs[2]])} + {{b}}"
                if len(node.inputs) == 3 else "NULL")
        create = (f"DPK_XNN_CHECK(\"{self.fn}\", \"{cgen.c_string(node.name)}\", xnn_create_fully_connected_nc_f32("
                  f"{k}, {{e}} - {{b}}, {k}, {n}, {wp}, {bias}, {cgen.c_float(lo)}, {cgen.c_float(hi)}, 0, "
                  f"&ops[{{k}}]));")
        setup = "xnn_setup_fully_connected_nc_f32({op}, {n}, {x}, {y}, NULL)"
        blocks = _image_blocks((m, k), (m, n), _copies(m, len(slices), work, k * n * 4))
        self._operators(node, slices, create, setup, [(0, b) for b, _ in slices], out, work, blocks, "rows")

    def _pool(self, node: Node, out: str) -> None:
        """maxpool2d / global_avgpool: one operator per block of channels (pixel strides = all channels)."""
        x, y = self.graph.type_of(node.inputs[0]).shape, self.graph.type_of(node.output).shape
        c = x[1]
        if node.op == "maxpool2d":
            (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = (node.attrs["kernel"], node.attrs["strides"],
                                                              node.attrs["dilations"], node.attrs["pads"])
            work = y[0] * y[2] * y[3] * c * kh * kw
            create = (f"xnn_create_max_pooling2d_nhwc_f32({pt}, {pr}, {pb}, {pl}, {kh}, {kw}, {sh}, {sw}, {dh}, {dw}, "
                      f"{{e}} - {{b}}, {c}, {c}, -INFINITY, INFINITY, 0, &ops[{{k}}])")
            setup = f"xnn_setup_max_pooling2d_nhwc_f32({{op}}, {{n}}, {x[2]}, {x[3]}, {{x}}, {{y}}, NULL)"
        else:
            work = math.prod(x)
            create = (f"xnn_create_global_average_pooling_nwc_f32({{e}} - {{b}}, {c}, {c}, -INFINITY, INFINITY, 0, "
                      f"&ops[{{k}}])")
            setup = f"xnn_setup_global_average_pooling_nwc_f32({{op}}, {{n}}, {x[2] * x[3]}, {{x}}, {{y}}, NULL)"
        slices = _slices(c, CHANNEL_GRANULE, work)
        create = f"DPK_XNN_CHECK(\"{self.fn}\", \"{cgen.c_string(node.name)}\", {create});"
        blocks = _image_blocks(x, y, _copies(x[0], len(slices), work, 0))
        self._operators(node, slices, create, setup, [(b, b) for b, _ in slices], out, work, blocks, "images")

    def _sigmoid(self, node: Node, out: str) -> None:
        """XNNPACK's vectorized sigmoid (host's C calls expf per element): one operator per slice of the flat
        tensor."""
        count = math.prod(self.graph.type_of(node.output).shape)
        slices = _slices(count, ELEMENTWISE_BLOCK, count * SIGMOID_WORK)
        create = (f"DPK_XNN_CHECK(\"{self.fn}\", \"{cgen.c_string(node.name)}\", xnn_create_sigmoid_nc_f32("
                  f"{{e}} - {{b}}, {{e}} - {{b}}, {{e}} - {{b}}, 0, &ops[{{k}}]));")
        setup = "xnn_setup_sigmoid_nc_f32({op}, 1, {x}, {y}, NULL)"
        self._operators(node, slices, create, setup, [(b, b) for b, _ in slices], out, count * SIGMOID_WORK)

    def _elementwise(self, node: Node, act: Node | None, out: str) -> None:
        shape = self.graph.type_of(node.output).shape
        count = math.prod(shape)
        ins = list(node.inputs)
        indexes = [_operand_index(self.graph.type_of(t).shape, shape) for t in ins]
        loads = [f"in{k}[{index}]" for k, index in enumerate(indexes)]
        value = f" {BINARY[node.op]} ".join(loads) if node.op in BINARY else loads[0]
        acts = [a for a in (node, act) if a is not None and a.op not in BINARY]
        expr = unary_expr(acts[0]) if acts else "v"
        # with an operand per channel: units of whole rows of channels, read along a row (no i % C per element)
        width = shape[1] if any(index not in ("i", "0") for index in indexes) else 1
        rows, per_unit = count // width, max(1, ELEMENTWISE_BLOCK // width)
        loop = ("for (int64_t i = r0; i < r1; ++i) {\n" if width == 1 else
                f"for (int64_t r = r0; r < r1; ++r)\n  for (int64_t c = 0, i = r * {width}; c < {width}; ++c, ++i) {{\n")
        body = cgen.each_unit(
            f"const int64_t r0 = u * {per_unit}, r1 = r0 + {per_unit} < {rows} ? r0 + {per_unit} : {rows};\n"
            f"{loop}  const float v = {value};\n  out0[i] = {expr};\n}}")
        what = " + ".join(n.op for n in [node, act] if n)
        self._step(f"{node.name}: {what}", ["float"] * (len(ins) + 1), [self._ptr(t) for t in ins], out,
                   -(-rows // per_unit), body, count)

    def _fusable_act(self, node: Node, nxt: Node | None) -> bool:
        """Whether `nxt` is a unary op the node computes (below) that alone reads `node`'s output, which nothing
        outside needs."""
        # a conv's relu/clip are XNNPACK's output bounds, its other unary ops (leaky_relu, hard_swish...) an
        # epilogue on each block (a sigmoid alone stays XNNPACK's vectorized operator)
        fused = (ACTIVATIONS if node.op == "dense" else tuple(o for o in unary_ops() if o != "sigmoid")
                 if node.op == "conv2d" else unary_ops() if node.op in BINARY else ())
        return (nxt is not None and nxt.op in fused and nxt.inputs == [node.output]
                and node.output not in self.region.outputs
                and [c.name for c in self.graph.consumers().get(node.output, [])] == [nxt.name])

    def _silu(self, i: int) -> Node | None:
        """The mul of a SiLU, x * sigmoid(x), of conv node i's output x (nodes i + 1 and i + 2, which alone read
        x and the sigmoid, which nothing outside the region needs): the conv computes it (_operators' swish)."""
        nodes, readers = self.region.nodes, self.graph.consumers()
        if nodes[i].op != "conv2d" or i + 2 >= len(nodes):
            return None
        x, sig, mul = nodes[i].output, nodes[i + 1], nodes[i + 2]
        if not (sig.op == "sigmoid" and sig.inputs == [x] and mul.op == "mul"
                and sorted(mul.inputs) == sorted([x, sig.output])):
            return None
        if {x, sig.output} & set(self.region.outputs):
            return None
        if (sorted(n.name for n in readers.get(x, [])) != sorted([sig.name, mul.name])
                or [n.name for n in readers.get(sig.output, [])] != [mul.name]):
            return None
        return mul

    def source(self) -> CSource:
        nodes, region = self.region.nodes, self.region
        last_use: dict[str, int] = {}
        for i, node in enumerate(nodes):
            for t in node.inputs:
                last_use[t] = i
        for t in region.activations:  # NCHW arguments -> NHWC buffers
            if self._nhwc(t):
                self._alloc(t)
                self._transpose(t, True)
        i = 0
        while i < len(nodes):
            node = nodes[i]
            nxt = nodes[i + 1] if i + 1 < len(nodes) else None
            act = nxt if self._fusable_act(node, nxt) else None
            silu = None if act else self._silu(i)
            result = (silu or act or node).output
            if self._nhwc(result) or result not in region.outputs:
                self._alloc(result)
            out = self._ptr(result)
            if node.op == "conv2d":
                self._conv2d(node, act, out, silu is not None)
            elif node.op == "dense":
                self._dense(node, act, out)
            elif node.op in POOLS:
                self._pool(node, out)
            elif node.op == "sigmoid":
                self._sigmoid(node, out)
            else:
                self._elementwise(node, act, out)
            i += 3 if silu else 2 if act else 1
            self._free_dead(i - 1, last_use)
        for t in region.outputs:  # NHWC buffers -> NCHW arguments
            if self._nhwc(t):
                self._transpose(t, False)
        return self._csource()

    def _csource(self) -> CSource:
        fn, graph = self.fn, self.graph
        types = {name: TensorType(a.shape, a.dtype.name) for name, a in self.relaid.items()}
        checks = [cgen.check(fn, i, name, types.get(name) or graph.type_of(name)) for i, name in enumerate(self.params)]
        workspace = self.peak
        if workspace:
            checks.append(cgen.check_workspace(fn, len(self.params), workspace))
        create = (f"static int {fn}_create(const dpk_value *args, xnn_operator_t *ops) {{\n"
                  + cgen.indent("\n".join(self.creates), "  ") + "\n  return 0;\n}\n"
                  f"static dpk_xnn_pool {fn}_pool = DPK_XNN_POOL({self.nops});\n")
        acquire = (f"dpk_xnn_instance *inst = dpk_xnn_acquire(&{fn}_pool, args, {fn}_create, \"{fn}\");\n"
                   f"if (!inst) return -1;")
        blocks = ["  { /* this call's XNNPACK operators */", cgen.indent(acquire, "    "),
                  *[cgen.indent(s, "  ") for s in self.steps],
                  f"    dpk_xnn_release(&{fn}_pool, inst);", "  }"]
        comment = "; ".join(f"{n.name}: {n.op}({', '.join(n.inputs)}) -> {n.output}" for n in self.region.nodes)
        source = create + "\n".join(self.tasks) + "\n" + cgen.function(fn, comment + " (XNNPACK, NHWC inside)", checks,
                                                                        ["\n".join(blocks)])
        return CSource(source=source, functions=[fn], prelude=[cgen.PRELUDE, HOST_PRELUDE, PRELUDE], workspace_bytes=workspace,
                       libraries=list(LIBRARIES), requires=list(REQUIRES), install_hint=INSTALL_HINT,
                       weights=dict(self.relaid))
