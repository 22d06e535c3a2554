"""Dynamic dims: input dimensions declared as ranges, and the plans (buckets) a file carries for them.

A range is written `LO..HI`, optionally named: `batch=1..64` (the CLI's `--shape x=1..64,784`, a YAML
graph input's shape `["batch=1..64", 784]`, an ONNX model's `model.shapes`). Axes with the same name
are one dim and always have the same size; an unnamed range takes the ONNX dim_param of its axis if the
model names one (so every input with that dim_param shares it), else `INPUT.AXIS` ("x.0").

The frontends record each declared dim in `Graph.dims` and build the graph at one size of each: the
`sizes` they are given (the plan's), else its max. The build makes one graph per plan (`plan_sizes`:
by default 1, powers of two and the max, across each dim's range; `--buckets` chooses) and the file
carries them all (docs/format.md, "Dynamic shapes").
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field

from packager import padding
from packager.ir import BuildError

MAX_PLANS = 32  # more would mostly mean a build many times longer than the user meant
# A plan's `cost` (the runtime cuts a size into chunks of smaller plans when their costs add up to less than
# the padded run's): a roofline estimate of its run time in nanoseconds on a nominal 2-core x86-64 machine.
# Only ratios between a file's plans matter; measured here: 100 GMAC/s and 40 GB/s (the MLP of compare.py).
MACS_PER_NS, BYTES_PER_NS, NODE_NS = 100, 40, 1000
_RANGE = re.compile(r"^(?:([A-Za-z_][\w.:-]*)=)?(\d+)\.\.(\d+)$")


@dataclass(frozen=True)
class DimRange:
    """One axis declared as a range, as written; `name` None until the frontend names it."""
    lo: int
    hi: int
    name: str | None = None

    def __str__(self) -> str:
        return f"{self.name + '=' if self.name else ''}{self.lo}..{self.hi}"


@dataclass
class Dim:
    """A dynamic dim of a graph: its range and the input axes that have its size."""
    name: str
    lo: int
    hi: int
    axes: list[tuple[str, int]] = field(default_factory=list)  # (input, axis)


def parse_dim(value) -> int | DimRange | None:
    """An int, or a range string "LO..HI" / "NAME=LO..HI"; None if `value` is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, DimRange):
        return value
    m = _RANGE.match(value.strip()) if isinstance(value, str) else None
    if not m:
        return None
    lo, hi = int(m.group(2)), int(m.group(3))
    return DimRange(lo, hi, m.group(1)) if 1 <= lo <= hi else None


def declare(dims: dict[str, Dim], rng: DimRange, name: str, input_name: str, axis: int, where: str) -> Dim:
    """Record that axis `axis` of `input_name` is the dim `name` of range `rng`; one name, one range."""
    dim = dims.get(name)
    if dim is None:
        dim = dims[name] = Dim(name, rng.lo, rng.hi)
    elif (dim.lo, dim.hi) != (rng.lo, rng.hi):
        first_input, first_axis = dim.axes[0]
        raise BuildError(f"{where}: input '{input_name}' dimension {axis} is dim '{name}' with range "
                         f"{rng.lo}..{rng.hi}, but input '{first_input}' dimension {first_axis} gave it "
                         f"{dim.lo}..{dim.hi} (one dim, one range)")
    dim.axes.append((input_name, axis))
    return dim


def size_of(dim: Dim, sizes: dict[str, int] | None) -> int:
    """The size the graph is built at: the plan's, else the max."""
    return (sizes or {}).get(dim.name, dim.hi)


def default_buckets(lo: int, hi: int) -> list[int]:
    """lo, the powers of two between, and hi."""
    sizes = {lo, hi}
    p = 1
    while p < hi:
        if p > lo:
            sizes.add(p)
        p *= 2
    return sorted(sizes)


def parse_buckets(text: str) -> tuple[str | None, list[int]]:
    """'1,8,32,64' -> (None, [1, 8, 32, 64]) (every dim); 'seq=128,512' -> ('seq', [128, 512])."""
    name, sep, values = text.rpartition("=")
    try:
        sizes = sorted({int(v) for v in values.split(",")})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] < 1 or (sep and not name):
        raise BuildError(f"--buckets '{text}': expected SIZES or DIM=SIZES with SIZES positive integers "
                         "separated by commas, e.g. --buckets 1,8,32,64 or --buckets seq=128,512")
    return (name or None), sizes


def chosen_buckets(texts) -> dict | None:
    """--buckets texts (one or a list) -> dim name (None: every dim) -> sizes."""
    chosen: dict = {}
    for text in [texts] if isinstance(texts, str) else texts or []:
        name, sizes = parse_buckets(text)
        if name in chosen:
            raise BuildError(f"--buckets given twice for {f'dim {name!r}' if name else 'every dim'}")
        chosen[name] = sizes
    return chosen or None


def plan_sizes(dims: dict[str, Dim], buckets: dict[str | None, list[int]] | None = None) -> list[dict[str, int]]:
    """Every plan's sizes, smallest first (by total size, then dim by dim); the last has every dim at its
    max. `buckets`: dim name (None: every dim not named) -> the sizes to build."""
    buckets = dict(buckets or {})
    unknown = sorted(n for n in buckets if n is not None and n not in dims)
    if unknown:
        raise BuildError(f"--buckets names dim '{unknown[0]}', which the model does not have "
                         f"(its dynamic dims: {', '.join(dims) or 'none'})")
    per_dim = []
    for dim in dims.values():
        sizes = buckets.get(dim.name, buckets.get(None)) or default_buckets(dim.lo, dim.hi)
        outside = [s for s in sizes if not dim.lo <= s <= dim.hi]
        if outside:
            raise BuildError(f"--buckets: size {outside[0]} is outside dim '{dim.name}''s range {dim.lo}..{dim.hi}")
        if sizes[-1] != dim.hi:
            raise BuildError(f"--buckets for dim '{dim.name}' must include its max, {dim.hi} (sizes above the "
                             f"largest bucket, {sizes[-1]}, would have no plan)")
        per_dim.append([(dim.name, s) for s in sizes])
    plans = [dict(combo) for combo in itertools.product(*per_dim)]
    if len(plans) > MAX_PLANS:
        raise BuildError(f"{len(plans)} plans ({' x '.join(str(len(p)) for p in per_dim)} sizes of "
                         f"{', '.join(dims)}) is more than {MAX_PLANS}: choose fewer with --buckets")
    plans.sort(key=lambda p: (_product(p.values()), tuple(p.values())))
    return plans


def plan_tag(sizes: dict[str, int]) -> str:
    """A plan's suffix for the names of its functions and its graph module: "b8", "b8_128"."""
    return "b" + "_".join(str(s) for s in sizes.values())


def graph_module(sizes: dict[str, int], last: bool) -> str:
    """The name of a plan's graph module: the largest plan's is `main` (the entry)."""
    return "main" if last else f"main_{plan_tag(sizes)}"


def function_prefix(sizes: dict[str, int], last: bool) -> str:
    """What starts the names of a plan's functions and payload modules: "b8_"; none for the largest's."""
    return "" if last else f"{plan_tag(sizes)}_"


def describe(dims: dict[str, Dim], plans: list[dict[str, int]]) -> str:
    """ "batch 1..64 (1, 2, 4, 8, 16, 32, 64)" for the build's log."""
    return ", ".join(f"{d.name} {d.lo}..{d.hi} ({', '.join(str(s) for s in sorted({p[d.name] for p in plans}))})"
                     for d in dims.values())


def separate_weights(graphs: list, plans: list[dict[str, int]]) -> dict[str, str]:
    """Give a plan's weight its own name where it differs from the weight of that name in the largest plan
    (a constant the frontend folded from the input's shape), so that the file keeps both. Returns why each
    dim such a constant depends on may not be padded (a padded run would see the plan's size in it, not the
    input's: `x / batch_size`); a graph output that is one is refused (its value is a size no plan knows)."""
    largest, tag = graphs[-1].weights, plan_tag(plans[-1])
    exact: dict[str, str] = {}
    for graph, sizes in zip(graphs[:-1], plans[:-1]):
        for name in list(graph.weights):
            if name not in largest or _same(largest[name], graph.weights[name]):
                continue
            if name in graph.outputs:
                raise BuildError(f"output '{name}' is a constant computed from the inputs' sizes (e.g. by Shape): "
                                 f"it differs between plans {plan_tag(sizes)} and {tag}, and a file with dynamic "
                                 "dims cannot return it")
            for dim, size in sizes.items():
                if size != plans[-1][dim]:
                    exact.setdefault(dim, f"constant '{name}' is computed from its size (it differs between plans "
                                          f"{plan_tag(sizes)} and {tag})")
            new = f"{name}@{plan_tag(sizes)}"
            graph.weights = {new if n == name else n: a for n, a in graph.weights.items()}
            for node in graph.nodes:
                node.inputs = [new if i == name else i for i in node.inputs]
    return exact


def shared_weights(lows: list, names: list[str]) -> dict:
    """The weights every plan's code reads, each stored once; a backend that laid one out differently in two
    plans (it must choose from Graph.layouts_from) is a bug, said here rather than stored twice."""
    weights: dict = {}
    where: dict[str, str] = {}
    for low, plan in zip(lows, names):
        for name in dict.fromkeys([*low.dso_weights, *(w for p in low.payloads for w in p.weights)]):
            array = low.graph.weights[name]
            if name in weights and not _same(weights[name], array):
                raise BuildError(f"weight '{name}' is stored as {array.dtype}{list(array.shape)} by plan '{plan}' "
                                 f"but as {weights[name].dtype}{list(weights[name].shape)} by plan '{where[name]}' "
                                 "(a backend bug: a weight's layout must not depend on the plan)")
            weights.setdefault(name, array)
            where.setdefault(name, plan)
    return weights


def manifest_fields(graphs: list, plans: list[dict[str, int]], exact: dict[str, str]) -> dict:
    """The manifest's `dims` (each padded, or `exact` with the reason), `plans`, and each input's and
    output's `dims`, from the plans' inferred graphs (largest last); `exact`: dims known not to be padded
    and why (separate_weights)."""
    largest = graphs[-1]
    names = [graph_module(p, last=k == len(plans) - 1) for k, p in enumerate(plans)]
    inputs = {name: [None] * len(t.shape) for name, t in largest.inputs.items()}
    for dim in largest.dims.values():
        for name, axis in dim.axes:
            inputs[name][axis] = dim.name
    outputs = [_output_dims(graphs, plans, name) for name in largest.outputs]
    dims = []
    for dim in largest.dims.values():
        entry = {"name": dim.name, "min": dim.lo, "max": dim.hi}
        why = exact.get(dim.name) or _why_exact(graphs, dim, outputs)
        if why:
            entry["exact"] = why
        dims.append(entry)
    return {"inputs": list(inputs.values()), "outputs": outputs, "dims": dims,
            "plans": [{"graph": name, "dims": dict(p), "cost": plan_cost(g)}
                      for name, p, g in zip(names, plans, graphs)]}


def plan_cost(graph) -> int:
    """The estimated run time of an inferred graph (MACS_PER_NS...): each node the longer of its
    multiply-adds and the bytes it reads and writes, plus a fixed cost per node."""
    total = 0.0
    for node in graph.nodes:
        out = graph.type_of(node.output)
        nbytes = out.nbytes + sum(graph.type_of(i).nbytes for i in node.inputs if i)
        macs = math.prod(out.shape) * _inner(node, graph)
        total += max(macs / MACS_PER_NS, nbytes / BYTES_PER_NS) + NODE_NS
    return max(1, round(total))


def _inner(node, graph) -> int:
    """Multiply-adds per output element: the length of the sums that make it (1 for the other ops)."""
    if node.op in ("dense", "matmul"):
        return graph.type_of(node.inputs[0]).shape[-1]
    if node.op in ("conv2d", "conv_transpose2d"):
        return math.prod(graph.type_of(node.inputs[1]).shape[1:])
    return 1


def _output_dims(graphs: list, plans: list[dict[str, int]], output: str) -> list[str | None]:
    """Per axis of the output: the dim whose size it has in every plan, or None where it is fixed."""
    shapes = [g.type_of(output).shape for g in graphs]
    dims = []
    for axis in range(len(shapes[-1])):
        sizes = [shape[axis] for shape in shapes]
        if len(set(sizes)) == 1:
            dims.append(None)
            continue
        match = [d for d in plans[-1] if [p[d] for p in plans] == sizes]
        if not match:
            raise BuildError(f"output '{output}' dimension {axis} is {', '.join(map(str, sizes))} in the plans "
                             f"({', '.join(plan_tag(p) for p in plans)}): neither fixed nor one dynamic dim's size "
                             "(dsopack's outputs have each dimension fixed or equal to one dim)")
        dims.append(match[0])
    return dims


def _why_exact(graphs: list, dim: Dim, outputs: list[list[str | None]]) -> str | None:
    """Why `dim` may not be padded (None: it may): a node of some plan mixes its rows, or an output does not
    keep it as the axis its size says."""
    for graph in graphs:
        try:
            axes = padding.output_axes(graph, dim.axes)
        except padding.Mixed as e:
            return str(e)
    for name, axis, dims in zip(graphs[-1].outputs, axes, outputs):
        if axis != (dims.index(dim.name) if dim.name in dims else None):
            return f"output '{name}' does not keep it as one axis"
    return None


def _same(a, b) -> bool:
    """Whether two weights hold the same bytes, compared a block of rows at a time (they may be mapped from
    files larger than memory)."""
    if a is b:
        return True
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    step = max(1, (64 << 20) // max(1, a.itemsize))
    return all(flat_a[i:i + step].tobytes() == flat_b[i:i + step].tobytes() for i in range(0, flat_a.size, step))


def _product(values) -> int:
    total = 1
    for v in values:
        total *= v
    return total
