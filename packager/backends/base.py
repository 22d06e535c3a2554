"""What a backend is, for the partitioner and the build pipeline.

A backend either generates C in the packed calling convention (compiled into
the file's `dso` module) or serializes a region into a payload of a module
kind that the runtime rebuilds at load (`json`, or a plugin's kind).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from packager.ir import Graph, Node


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
    regions share it; `source` must not define non-static symbols other than
    `functions`."""

    source: str
    functions: list[str]
    prelude: str = ""
    workspace_bytes: int = 0
    libraries: list[str] = field(default_factory=list)  # linker -l names, e.g. ["openblas"]
    requires: list[str] = field(default_factory=list)  # sonames needed at run time


@dataclass
class Payload:
    """A serialized module: rebuilt at load by the runtime kind `kind`.

    Its one function `function` takes `region.activations`, then
    `region.outputs`, then a uint8 workspace tensor of `workspace_bytes` if that
    is > 0; it finds weights by name through its imports."""

    kind: str
    data: bytes
    function: str
    workspace_bytes: int = 0
    imports_weights: bool = True  # the module imports the params module
    codec: str = "zstd"


class Backend:
    name = "base"

    def supports(self, node: Node, graph: Graph) -> str | None:
        """None if this backend takes the node, else the reason it does not."""
        raise NotImplementedError

    def lower(self, region: Region, graph: Graph) -> CSource | Payload:
        raise NotImplementedError
