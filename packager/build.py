"""The pipeline: deployment manifest -> one shared library, one stage at a time.

    [1/6] frontend   the manifest -> a Spec (spec.py, frontends/); the toolchain (toolchain.py)
    [2/6] infer      check the graph, infer every tensor's type (ir_check.py)
    [3/6] partition  nodes -> backends -> regions (partition.py)
    [4/6] lower      regions -> C and payload modules, the calls (lower.py); tensors and arena (graph_plan.py)
    [5/6] package    modules, manifest, payloads -> the blob (file_manifest.py, blob.py)
    [6/6] compile    C + the blob's `.incbin` stub -> the .so, written atomically (compile.py, toolchain.py)

A failed build raises BuildError and leaves no output file (and an older file
at that path untouched).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from dataclasses import dataclass, field

from packager import backend_choice, dynamic, graph_plan, ir_check, lower, spill, toolchain
from packager import partition as partition_mod
from packager import spec as spec_mod
from packager.compile import compile_model
from packager.file_manifest import package
from packager.ir import BuildError
from packager.wording import plural, size

STAGES = 6


@dataclass
class BuildReport:
    output: str
    name: str
    manifest: dict
    explain: list[str]  # one line per node: which backend took it and why
    backends: list[str]  # the priority used
    backends_reason: str  # why those (the default for the target, or who gave them)
    functions: list[str]  # exported by the dso module
    arena_bytes: int
    blob_bytes: int
    file_bytes: int
    compiled: int  # C objects compiled ...
    cached: int  # ... and taken from the object cache
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds


class _Stages:
    def __init__(self, quiet: bool, log) -> None:
        self.quiet, self.log = quiet, log
        self.timings: dict[str, float] = {}
        self.index = 0
        self.start = time.perf_counter()

    def done(self, stage: str, summary: str) -> None:
        now = time.perf_counter()
        self.index += 1
        self.timings[stage] = now - self.start
        if not self.quiet:
            self.log(f"[{self.index}/{STAGES}] {stage}: {summary} ... {(now - self.start) * 1000:.0f} ms")
        self.start = time.perf_counter()


def build(spec, output, *, base_dir=None, cc=None, quiet=False, explain=False, log=print,
          save_temps: str | None = None, use_cache: bool = True, shapes: dict | None = None,
          target: str | None = None, march: str | None = None, backends=None, buckets=None,
          place_from: int | None = None) -> BuildReport:
    """Build `spec` (a manifest path, a dict, a spec.Spec or an .onnx path) into the
    shared library `output`. `shapes` (input name -> list of ints, or of ranges "1..64" for dynamic dims)
    fixes an ONNX model's dynamic dims. `buckets` (the CLI's --buckets texts, "1,8,64" or "seq=128,512")
    chooses the sizes a model with dynamic dims gets a plan for (dynamic.py; default: powers of two).
    `target` (a triple, e.g. aarch64-linux-gnu) overrides the manifest's target.triple; `march`
    replaces any -march in its target.cflags (recorded in the manifest's producer.cflags).
    `backends` (names in priority order, or "a,b,c") replaces the manifest's; without either (a bare
    .onnx file) the build uses the fastest backends the target has (backend_choice.py) and says which.
    A blob (weights and all) of `place_from` bytes or more (default compile.PLACE_FROM) is written into the
    linked file rather than linked (elf_place.py: the only way past 2 GiB)."""
    output = os.fspath(output)
    _check_output(output)  # (before the spill directory goes next to it)
    with spill.session(near=output):  # weights derived from mapped ones wait on disk (spill.py), till the end
        return _build(spec, output, base_dir=base_dir, cc=cc, quiet=quiet, explain=explain, log=log,
                      save_temps=save_temps, use_cache=use_cache, shapes=shapes, target=target, march=march,
                      backends=backends, buckets=buckets, place_from=place_from)


def _build(spec, output, *, base_dir, cc, quiet, explain, log, save_temps, use_cache, shapes, target, march,
           backends, buckets, place_from) -> BuildReport:
    if backends is not None:
        backends = backend_choice.check(backends)
    stages = _Stages(quiet, log)

    # [1/6] frontend
    s = spec if isinstance(spec, spec_mod.Spec) else spec_mod.load(spec, base_dir, shapes=shapes)
    graph = s.graph
    sizes = dynamic.plan_sizes(graph.dims, dynamic.chosen_buckets(buckets)) if graph.dims else [{}]
    if buckets and not graph.dims:
        raise BuildError("--buckets needs a dynamic dim: declare one as a range, e.g. --shape x=1..64,784 "
                         "(a YAML graph: shape: [\"batch=1..64\", 784])")
    if len(sizes) > 1 and isinstance(spec, spec_mod.Spec):
        raise BuildError("a model with dynamic dims is built from its manifest or file, not from a Spec object")
    graphs = [spec_mod.load(spec, base_dir, shapes=shapes, sizes=p).graph for p in sizes[:-1]] + [graph]
    tc = toolchain.configure(s.target, cc=cc, triple=target, march=march)
    choice = backend_choice.choose(backends if backends is not None else s.backends, tc,
                                   "--backends (build's backends=)" if backends is not None else "the manifest")
    weight_bytes = sum(a.nbytes for a in graph.weights.values())
    stages.done("frontend", f"'{s.name}': {plural(len(graph.nodes), 'node')}, {plural(len(graph.inputs), 'input')}, "
                            f"{plural(len(graph.weights), 'weight')} ({size(weight_bytes)}), {tc.cc_name}, {tc.triple}"
                + (f"; {plural(len(sizes), 'plan')} for {dynamic.describe(graph.dims, sizes)}" if graph.dims else ""))
    if choice.left_out and not quiet:
        log(f"      backends [{', '.join(choice.backends)}]: {choice.left_out}")

    # [2/6] infer
    shape_constants = dynamic.separate_weights(graphs, sizes)
    for g in graphs:
        ir_check.infer(g)
        g.layouts_from = graph
    outputs = [lower.output_plan(g) for g in graphs]
    fields = dynamic.manifest_fields(graphs, sizes, shape_constants) if graph.dims else None
    copies = sum(out.copied for out in outputs[-1])
    stages.done("infer", f"{plural(len(graph.types), 'tensor')} typed, {plural(len(graph.outputs), 'output')}"
                + (f", {plural(copies, 'output copy')}" if copies else "")
                + "".join(f"; {d['name']} {'padded' if 'exact' not in d else 'exact: ' + d['exact']}"
                          for d in (fields or {}).get("dims", [])))

    # [3/6] partition
    parts = [partition_mod.partition(g, choice.backends) for g in graphs]
    explain_lines = parts[-1].explain()
    counts = Counter(backend.name for backend, _ in parts[-1].regions)
    stages.done("partition", plural(len(parts[-1].regions), "region")
                + (" (" + ", ".join(f"{n} {b}" for b, n in counts.items()) + ")" if counts else "")
                + (" per plan" if len(parts) > 1 else ""))
    if explain:
        log(f"      backends [{', '.join(choice.backends)}]: {choice.reason}")  # asked for: printed even when quiet
        for line in explain_lines:
            log(f"      {line}")  # asked for: printed even when quiet

    # [4/6] lower
    names = [dynamic.graph_module(p, last=k == len(sizes) - 1) for k, p in enumerate(sizes)]
    lows = [lower.lower(s.name, g, part.regions, out, prefix=dynamic.function_prefix(p, last=k == len(sizes) - 1))
            for k, (g, part, out, p) in enumerate(zip(graphs, parts, outputs, sizes))]
    plans = [graph_plan.plan(low.graph, low.calls, out) for low, out in zip(lows, outputs)]
    low = lower.merge(s.name, [lows[-1], *lows[:-1]]) if len(lows) > 1 else lows[0]
    low.graph = dataclasses.replace(low.graph, weights=dynamic.shared_weights(lows, names))
    arena = plans[-1].arena.size
    stages.done("lower", f"{plural(len(low.all_functions), 'function')} in C ({len(low.c_text.splitlines())} lines), "
                         f"{plural(len(low.payloads), 'payload module')}, {plural(len(lows[-1].calls), 'call')}, "
                         f"arena {size(arena)}" + (f" (largest plan; smallest {size(plans[0].arena.size)})"
                                                   if len(plans) > 1 else ""))

    # [5/6] package
    pkg = package(s.name, low, {name: p.payload_bytes() for name, p in zip(names, plans)}, outputs[-1], tc,
                  dynamic=fields)
    stages.done("package", f"{plural(len(pkg.manifest['modules']), 'module')}, {plural(len(pkg.weights), 'weight')}, "
                           f"blob {size(pkg.blob.size)}")

    # [6/6] compile
    stats = compile_model(low.c_units, low.carried, pkg.blob, output, tc, libraries=low.libraries,
                          install_hints=low.install_hints, save_temps=save_temps, use_cache=use_cache,
                          name=s.name, functions=low.all_functions, once_units=low.once_units,
                          once_functions=low.once_functions,
                          **({} if place_from is None else {"place_from": place_from}))
    file_bytes = os.path.getsize(output)
    cache_note = "from the cache" if stats["cached"] and not stats["compiled"] else "compiled"
    if len(low.c_units) > 1 or tc.variants:
        cache_note += f" ({plural(len(low.c_units), 'unit')}"
        cache_note += f" x {len(tc.variants)} ISA variants" if tc.variants else ""
        cache_note += " in parallel)"
    stages.done("compile", f"{tc.cc_name} {' '.join(tc.cflags)}, C {cache_note} -> {output} ({size(file_bytes)})")
    return BuildReport(output=output, name=s.name, manifest=pkg.manifest, explain=explain_lines,
                       backends=choice.backends, backends_reason=choice.reason, functions=low.all_functions,
                       arena_bytes=arena, blob_bytes=pkg.blob.size, file_bytes=file_bytes,
                       compiled=stats["compiled"], cached=stats["cached"], timings=stages.timings)


def _check_output(output: str) -> None:
    if os.path.isdir(output):
        raise BuildError(f"output '{output}' is a directory (give a file name, e.g. {output.rstrip('/')}/model.so)")
    if not os.path.isdir(os.path.dirname(os.path.abspath(output))):
        raise BuildError(f"output '{output}': directory '{os.path.dirname(os.path.abspath(output))}' does not exist")
