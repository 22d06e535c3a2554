"""ONNX's own node test cases through dsopack: which pass, which are refused, which fail.

    .venv/bin/python scripts/onnx_conformance.py                     # every case; the table on stdout
    .venv/bin/python scripts/onnx_conformance.py --write             # ... and into docs/onnx.md
    .venv/bin/python scripts/onnx_conformance.py --ops Relu,Conv -v  # some ops, one line per case
    .venv/bin/python scripts/onnx_conformance.py --check             # exit 1 if any case FAILS

Each case of `onnx.backend.test.case.node.collect_testcases` (a one-node model and
data sets of inputs and expected outputs; the `_expanded` variants, which test ONNX's
function bodies rather than the op, are left out) is built with packager.build.build
as `dsopack build model.onnx` would (the default backends, the data set's input
shapes), loaded with the loader and run on every data set. A case

    passes   when every output has the expected shape and dtype and values
             (np.allclose with the case's own rtol and atol, as ONNX's backend test runner
             and onnxruntime use them: some cases store expected values to 4 digits, e.g.
             test_averagepool_2d_ceil_last_window_starts_on_pad; NaN == NaN; other dtypes exactly);
    is refused when the build raises BuildError: dsopack says clearly what it does not do
             (the first line of the message, the model's path left out, is the reason);
    fails    otherwise: wrong numbers, shape or dtype, an error at load or run, another
             exception in the build, a crash or a timeout of the worker process.

Cases run in worker processes (--jobs, default the CPUs; forked after collecting, so
each has the packager imported; a worker that crashes is replaced and its case counted
as failed). `--write` replaces what lies between the markers below in docs/onnx.md:
a per-op table and a summary line with the onnx version.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BEGIN = "<!-- conformance:begin -->"
END = "<!-- conformance:end -->"
DOC = os.path.join(ROOT, "docs", "onnx.md")
TIMEOUT_S = 300  # one case (its builds and runs)
PASS, REFUSED, FAILED = "pass", "refused", "failed"


@dataclass
class Case:
    """What a worker needs of an onnx TestCase (picklable)."""

    name: str
    op: str
    model: bytes  # the serialized ModelProto
    data_sets: list  # [(inputs, expected outputs)]
    rtol: float = 1e-3
    atol: float = 1e-7


@dataclass
class Result:
    name: str
    op: str
    status: str  # PASS, REFUSED or FAILED
    detail: str = ""  # the refusal reason or what failed
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def collect(ops: list[str] | None = None) -> list[Case]:
    """ONNX's node test cases (not the _expanded ones), optionally only those of `ops`."""
    with warnings.catch_warnings():  # the case generators overflow casts on purpose
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            from onnx.backend.test.case.node import collect_testcases

            found = collect_testcases(None)
    cases = []
    for tc in found:
        if tc.model is None or "_expanded" in tc.name:
            continue
        op = tc.model.graph.node[0].op_type if len(tc.model.graph.node) else "?"
        domain = tc.model.graph.node[0].domain if len(tc.model.graph.node) else ""
        if domain not in ("", "ai.onnx"):
            op = f"{domain}.{op}"
        if ops is not None and op not in ops:
            continue
        cases.append(Case(tc.name, op, tc.model.SerializeToString(), list(tc.data_sets), tc.rtol, tc.atol))
    return cases


def run_case(case: Case, workdir: str) -> Result:
    """Build, load and run one case; never raises (but a crash kills the process: see run_cases)."""
    import onnx

    import loader
    from packager.build import build
    from packager.ir import BuildError

    start = time.perf_counter()
    model = onnx.load_from_string(case.model)
    initializers = {i.name for i in model.graph.initializer}
    inputs_of = [i for i in model.graph.input if i.name not in initializers]
    input_names = [i.name for i in inputs_of]
    # dims the model leaves open get the data set's (as --shape would give them); fixed ones stay as they are
    open_dims = {i.name for i in inputs_of if not i.type.HasField("tensor_type")
                 or not i.type.tensor_type.HasField("shape")
                 or any(not d.HasField("dim_value") for d in i.type.tensor_type.shape.dim)}
    output_names = [o.name for o in model.graph.output]
    path = os.path.join(workdir, f"{case.name}.onnx")
    with open(path, "wb") as f:
        f.write(case.model)
    so = os.path.join(workdir, f"{case.name}.so")
    built: dict[tuple, str] = {}

    def result(status: str, detail: str = "") -> Result:
        return Result(case.name, case.op, status, detail, time.perf_counter() - start)

    for k, (inputs, expected) in enumerate(case.data_sets):
        where = f"data set {k}: " if len(case.data_sets) > 1 else ""
        inputs, expected = _arrays(inputs), _arrays(expected)
        if len(inputs) != len(input_names) or any(not isinstance(a, np.ndarray) for a in inputs):
            # optional inputs left out, sequences, optionals: dsopack's inputs are tensors, all given
            kinds = ", ".join(type(a).__name__ for a in inputs)
            shapes_key = None
        else:
            shapes_key = tuple(tuple(a.shape) for a in inputs)
        if shapes_key not in built:
            target = f"{so[:-3]}.{len(built)}.so"
            shapes = {n: list(s) for n, s in zip(input_names, shapes_key or ()) if n in open_dims} or None
            try:
                build(path, target, quiet=True, shapes=shapes)
            except BuildError as e:
                return result(REFUSED, refusal_reason(str(e), path))
            except Exception as e:  # a bug in the packager: not a clear refusal
                return result(FAILED, f"{where}build raised {type(e).__name__}: {first_line(str(e))}")
            built[shapes_key] = target
        if shapes_key is None:
            return result(FAILED, f"{where}the build took a model whose test inputs are not all tensors ({kinds})")
        try:
            with loader.load(built[shapes_key], num_threads=1) as m:
                got = m.run(**dict(zip(input_names, inputs)))
        except Exception as e:
            return result(FAILED, f"{where}load/run raised {type(e).__name__}: {first_line(str(e))}")
        for name, want in zip(output_names, expected):
            problem = compare(got.get(name), want, case.rtol, case.atol)
            if problem:
                return result(FAILED, f"{where}output '{name}': {problem}")
        if len(expected) != len(output_names):
            return result(FAILED, f"{where}{len(output_names)} outputs, {len(expected)} expected")
    return result(PASS)


def _arrays(values: list) -> list:
    """A data set's values as NumPy arrays where they are tensors: some cases store TensorProtos (the Cast
    cases) or NumPy scalars (Dropout's ratio); sequences and optionals stay as they are."""
    import onnx
    from onnx import numpy_helper

    return [numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto)
            else np.asarray(v) if isinstance(v, np.generic) else v for v in values]


def compare(got, want, rtol: float, atol: float) -> str | None:
    """None if `got` is `want` (within rtol/atol for floats, NaN equal to NaN), else what differs."""
    if got is None:
        return "missing"
    if isinstance(want, np.generic):  # a 0-d result stored as a NumPy scalar
        want = np.asarray(want)
    if not isinstance(want, np.ndarray):
        return f"expected a {type(want).__name__}, dsopack gives a tensor"
    if got.shape != want.shape:
        return f"shape {list(got.shape)}, expected {list(want.shape)}"
    if got.dtype != want.dtype:
        return f"dtype {got.dtype}, expected {want.dtype}"
    if want.dtype.kind in "fc":
        if np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
            return None
        with np.errstate(all="ignore"):
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            diff[np.isnan(diff) & (np.isnan(got) == np.isnan(want))] = 0
            bad = ~np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
        return f"{int(bad.sum())} of {want.size} values differ (max abs diff {np.nanmax(np.where(bad, diff, 0)):.3g})"
    if np.array_equal(got, want):
        return None
    return f"{int((got != want).sum())} of {want.size} values differ"


def first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def refusal_reason(message: str, path: str) -> str:
    """The first line of a BuildError without the model's path and file names, for grouping."""
    text = first_line(message).replace(path, "model.onnx")
    text = re.sub(r"\S*/(\w+\.onnx)", "model.onnx", text)
    return text[len("model.onnx: "):] if text.startswith("model.onnx: ") else text


# ---------------------------------------------------------------- workers

def _worker(conn, workdir: str) -> None:
    import loader  # noqa: F401  (imported once per worker)

    while True:
        case = conn.recv()
        if case is None:
            return
        conn.send(run_case(case, workdir))


def run_cases(cases: list[Case], jobs: int = 0, progress=None, timeout: float = TIMEOUT_S) -> list[Result]:
    """Every case in `jobs` forked worker processes (0: in this process); results in case order.
    A worker that dies (a crash in a model) or exceeds `timeout` on a case is replaced and that case fails."""
    with tempfile.TemporaryDirectory(prefix="dsopack-conformance-") as workdir:
        if jobs <= 0:
            results = []
            for case in cases:
                results.append(run_case(case, workdir))
                _clean(workdir)
                if progress:
                    progress(results[-1])
            return results
        _warm_up()
        ctx = multiprocessing.get_context("fork")
        results: dict[int, Result] = {}
        todo = list(range(len(cases)))[::-1]
        workers = []  # [process, conn, case index or None, started]

        def spawn():
            parent, child = ctx.Pipe()
            wd = tempfile.mkdtemp(dir=workdir)
            p = ctx.Process(target=_worker, args=(child, wd), daemon=True)
            p.start()
            child.close()
            return [p, parent, None, 0.0]

        def give(w):
            if todo:
                w[2], w[3] = todo.pop(), time.monotonic()
                w[1].send(cases[w[2]])
            else:
                w[2] = None

        workers = [spawn() for _ in range(min(jobs, len(cases)))]
        for w in workers:
            give(w)
        while any(w[2] is not None for w in workers):
            busy = [w for w in workers if w[2] is not None]
            ready = multiprocessing.connection.wait([w[1] for w in busy], timeout=1.0)
            for w in busy:
                index = w[2]
                if w[1] in ready:
                    try:
                        r = w[1].recv()
                    except (EOFError, OSError):
                        w[0].join(5)
                        r = Result(cases[index].name, cases[index].op, FAILED,
                                   f"the worker died (exit code {w[0].exitcode}): a crash in the build or the model",
                                   time.monotonic() - w[3])
                        w[:] = spawn()
                elif time.monotonic() - w[3] > timeout:
                    w[0].kill()
                    w[0].join(5)
                    r = Result(cases[index].name, cases[index].op, FAILED, f"timed out after {timeout:.0f} s",
                               time.monotonic() - w[3])
                    w[:] = spawn()
                else:
                    continue
                results[index] = r
                if progress:
                    progress(r)
                give(w)
        for w in workers:
            w[1].send(None)
            w[0].join(5)
        return [results[i] for i in range(len(cases))]


def _clean(workdir: str) -> None:
    for name in os.listdir(workdir):
        try:
            os.unlink(os.path.join(workdir, name))
        except OSError:
            pass


def _warm_up() -> None:
    """What every worker would do once (probe for OpenBLAS), done before forking."""
    from packager import backend_choice, toolchain
    from packager.spec import Target

    backend_choice.choose(None, toolchain.configure(Target()))


# ---------------------------------------------------------------- the report

def summary(results: list[Result]) -> str:
    import onnx

    counts = collections.Counter(r.status for r in results)
    return (f"{counts[PASS]} of {len(results)} cases pass, {counts[REFUSED]} refused, {counts[FAILED]} failed "
            f"(onnx {onnx.__version__} node tests, {len({r.op for r in results})} ops)")


def table(results: list[Result]) -> str:
    """The per-op Markdown table, ops in alphabetical order."""
    by_op: dict[str, list[Result]] = collections.defaultdict(list)
    for r in results:
        by_op[r.op].append(r)
    lines = ["| op | cases | pass | refused | failed | top refusal reasons / failures |",
             "|---|---|---|---|---|---|"]
    for op in sorted(by_op, key=str.lower):
        rs = by_op[op]
        c = collections.Counter(r.status for r in rs)
        reasons = collections.Counter(_short(r.detail) for r in rs if r.status != PASS)
        text = "; ".join(f"{reason} ({n})" if n > 1 else reason for reason, n in reasons.most_common(2))
        if len(reasons) > 2:
            text += f"; {len(reasons) - 2} more"
        lines.append(f"| {op} | {len(rs)} | {c[PASS]} | {c[REFUSED]} | {c[FAILED]} | {text} |")
    return "\n".join(lines)


def _short(detail: str, limit: int = 100) -> str:
    """A reason, general enough to group the cases of an op: no node names, tensor names, dims or hints."""
    text = re.sub(r"^node '[^']*' \([^)]*\): (as IR node '[^']*' \(op [^)]*\): )?", "", detail)
    text = text.split("; ")[0]  # the hint after the reason
    text = re.sub(r"'[^']*'", "'…'", text)
    text = re.sub(r"\[[\d, ]*\]", "[…]", text)
    text = re.sub(r"\b(is|are) [a-z]+\d*\[…\]", r"\1 …[…]", text)
    text = re.sub(r"\belement type [A-Z]+\d*\b", "element type …", text)
    text = re.sub(r"\b(max abs diff |data set )[\d.e+-]+", r"\1…", text)
    text = re.sub(r"^\d+ of \d+ values", "values", re.sub(r"(output '…': )\d+ of \d+ values", r"\1values", text))
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def report(results: list[Result]) -> str:
    """What goes between the markers in docs/onnx.md."""
    return (f"{summary(results)}; made by `scripts/onnx_conformance.py --write` with the default backends of "
            f"this machine.\n\n{table(results)}")


def read_doc(path: str = DOC) -> str:
    """What lies between the markers in docs/onnx.md (what `--write` last wrote)."""
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{path}: the markers {BEGIN} and {END} are missing")
    return doc.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def write_doc(text: str, path: str = DOC) -> None:
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{path}: the markers {BEGIN} and {END} are missing")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{text}\n{END}{tail}"
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ops", help="only the cases of these ONNX ops, e.g. Relu,Conv")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (0: run in this one)")
    p.add_argument("--write", action="store_true", help=f"write the table into {os.path.relpath(DOC, ROOT)}")
    p.add_argument("--check", action="store_true", help="exit 1 if any case fails (refusals are fine)")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    args = p.parse_args(argv)
    start = time.perf_counter()
    cases = collect(args.ops.split(",") if args.ops else None)
    if not cases:
        print("no cases", file=sys.stderr)
        return 1

    def progress(r: Result) -> None:
        if args.verbose or r.status == FAILED:
            print(f"{r.status:8} {r.name} ({r.seconds:.1f} s){': ' + r.detail if r.detail else ''}", flush=True)

    results = run_cases(cases, args.jobs, progress)
    print(table(results))
    print(summary(results))
    print(f"{len(cases)} cases in {time.perf_counter() - start:.0f} s with {args.jobs} jobs")
    if args.write:
        write_doc(report(results))
        print(f"wrote {os.path.relpath(DOC, ROOT)}")
    if args.check and any(r.status == FAILED for r in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
