"""What a backend is, for the partitioner and the build pipeline.

A backend either generates C in the packed calling convention (compiled into
the file's `dso` module) or serializes a region into a payload of a module
kind that the runtime rebuilds at load (`json`, or a plugin's kind).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from packager.backends import cgen
from packager.ir import BuildError, Graph, Node


@dataclass
class Region:
    """Contiguous nodes given to one backend; becomes one function."""

    name: str  # function name (and module name for payload backends), e.g. "ext0"
    nodes: list[Node]
    inputs: list[str]  # tensors read from outside the region (weights included), first use first
    outputs: list[str]  # tensors the region produces that are used outside it, in order
    weights: list[str]  # the subset of `inputs` that are weights

    @property
    def activations(self) -> list[str]:
        """Inputs that are not weights: what a payload backend's function takes."""
        return [name for name in self.inputs if name not in self.weights]


@dataclass
class CSource:
    """Generated C: functions in the packed convention, compiled into the dso.

    The region's function takes all `region.inputs` (weights included), then
    `region.outputs`, then a uint8 workspace tensor if `workspace_bytes` > 0.
    `prelude` (static helpers, #includes) is emitted once per file however many
    regions share it; it is one text or a list of texts, each emitted once (so
    every backend that writes its C with cgen's helpers lists cgen.PRELUDE before
    its own); `source` must not define non-static symbols other than
    `functions`. `install_hint` is said when the compiler or linker cannot find
    a header or library the source needs ("on Debian: apt-get install ...").
    `weights` re-lays out weights the region alone reads: name -> the array the
    file stores instead (same dtype; the function's checks expect its shape),
    e.g. a dense W transposed so the kernel streams it in the order it uses it."""

    source: str
    functions: list[str]
    prelude: str | list[str] = ""
    workspace_bytes: int = 0
    libraries: list[str] = field(default_factory=list)  # linker -l names, e.g. ["openblas"]
    requires: list[str] = field(default_factory=list)  # sonames needed at run time
    install_hint: str = ""
    weights: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class KindSource:
    """The C implementation of a module kind, carried inside the model file.

    `source` includes only dpk_abi.h (and the C library) and defines, with
    external linkage, `const dpk_kind <symbol> = {"<name>", DPK_ABI_VERSION,
    load, get_function, free, get_tensor or NULL};` (everything else static).
    The build compiles it as its own translation unit, lists every carried
    kind in the exported `__dpk_kinds` table and in the manifest's
    `kinds: {carried: [...]}`, so the stock runtime runs the file without
    knowing the kind beforehand."""

    name: str  # the kind name, equal to Payload.kind
    source: str
    symbol: str = ""  # default: dpk_kind_<name>

    @property
    def c_symbol(self) -> str:
        return self.symbol or f"dpk_kind_{self.name}"


@dataclass
class Payload:
    """A serialized module: rebuilt at load by the runtime kind `kind`.

    Its one function `function` takes `region.activations`, then
    `region.outputs`, then a uint8 workspace tensor of `workspace_bytes` if that
    is > 0; it finds weights by name through its imports. `kind_source`, if
    given, carries the kind's C inside the file; without it the kind must be
    built in or registered by the application that loads the file."""

    kind: str
    data: bytes
    function: str
    workspace_bytes: int = 0
    imports_weights: bool = True  # the module imports the params module
    codec: str = "zstd"
    kind_source: KindSource | None = None


class Backend:
    """What a backend implements (docs/backends.md walks through it).

    `name` is the name manifests use. `supports(node, graph)` returns None if
    the backend takes the node, else a short reason (shown by --explain).
    `lower(region, graph)` returns a CSource or a Payload for the region. Set
    `payload = True` when lower() returns Payloads: consecutive nodes then form
    one region (ext0, ext1...); otherwise each node is its own region. Plugins
    register through the `dsopack.backends` entry point group (plugins.py)."""

    name = "base"
    # Fusion: op -> the elementwise ops this backend can fold into it when they
    # follow it, e.g. {"dense": ("relu", "sigmoid", "tanh")}. The partitioner
    # decides when the graph allows it (the follower is the op's only consumer,
    # what else it reads is ready before the anchor runs, and the op's result is
    # not a graph output); the region then holds the nodes in order and its
    # output is the last one's. A follower's own fusions chain on (an entry for
    # "add" lets a relu follow a fused add).
    fuses: dict[str, tuple[str, ...]] = {}

    def can_fuse(self, node: Node, follower: Node, graph: Graph) -> bool:
        """Whether `follower` (reading `node`'s output once, and maybe tensors ready before the region runs)
        may be folded in after `node`."""
        return follower.op in self.fuses.get(node.op, ())

    def supports(self, node: Node, graph: Graph) -> str | None:
        """None if this backend takes the node, else the reason it does not."""
        raise NotImplementedError

    def lower(self, region: Region, graph: Graph) -> CSource | Payload:
        raise NotImplementedError

    def check_c_region(self, region: Region, graph: Graph) -> str:
        """The region's name, checked to be a C identifier (a C backend names its function after it), and
        every node checked to be one this backend supports; a BuildError says which and why."""
        if not cgen.is_identifier(region.name):
            raise BuildError(f"{self.name} backend: region name '{region.name}' is not a C identifier")
        for node in region.nodes:
            reason = self.supports(node, graph)
            if reason is not None:
                raise BuildError(f"{node.describe()}: {self.name} backend cannot lower it: {reason}")
        return region.name


def float32_tensors(backend: str, node: Node, graph: Graph) -> str | None:
    """Why `backend`'s library kernels cannot take `node`: a tensor that is not float32, or is empty; else None."""
    for name in [*node.inputs, node.output]:
        t = graph.type_of(name)
        if t.dtype != "float32":
            return f"{backend} kernels are float32 only ({name} is {t})"
        if any(d < 1 for d in t.shape):
            return f"{backend} kernels need non-empty tensors ({name} is {t})"
    return None
