"""`dsopack build | inspect | run | verify | keygen | sign | serve`: the command line.

Every user error is one line on stderr ("dsopack: error: ...") and exit code 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

from packager import wording
from packager.ir import BuildError

DESCRIPTION = """\
dsopack turns a model into ONE shared library (kernels, weights, execution
graph and a manifest) that a C runtime or the Python loader runs without
the packager."""

EPILOG = """\
examples:
  dsopack build manifests/digits_mlp.yaml -o digits.so       build a model file
  dsopack build manifests/lenet.yaml -o lenet.so --explain    ... and say which backend took each node
  dsopack build model.onnx -o model.so --shape x=1,3,32,32   an ONNX model (fix its dynamic dims); fastest backends found
  dsopack build model.onnx -o model.so --backends host        ... with the backends you choose, in priority order
  dsopack build model.onnx -o model.so --shape x=1..64,3,32,32 one file for every batch from 1 to 64 (plans 1, 2, 4 ... 64)
  dsopack build model.onnx -o model.so --shape x=1..64,3,32,32 --buckets 1,8,64   ... plans for the sizes you choose
  dsopack inspect digits.so                                   the embedded manifest and its modules
  dsopack verify digits.so                                    check the structure and every checksum
  dsopack keygen -o release.key                               an Ed25519 key pair: release.key, release.key.pub
  dsopack sign digits.so --key release.key                    append a signature over the whole file
  dsopack verify digits.so --pubkey release.key.pub           ... and check it (so do run/loader/dpk-run --pubkey)
  dsopack run digits.so x=sample.npy                          run it (Python loader), print the outputs
  dsopack run digits.so --random --repeat 1000 -o out.npz     random inputs, timings, save the outputs
  dsopack serve digits.so --port 8000                         a Triton server (HTTP/gRPC v2): pip install 'dsopack[serve]'

a deployment manifest (YAML) says what to build:
  name: digits_mlp
  model:
    graph:
      inputs:  {x: {shape: [1, 64], dtype: float32}}   # a dynamic batch: shape: ["batch=1..64", 64]
      weights: digits_mlp.npz              # names -> arrays, relative to the manifest
      nodes:
        - {op: dense, inputs: [x, fc1.weight, fc1.bias], output: h}
        - {op: relu,  inputs: [h], output: y}
      outputs: [y]
  backends: [json, host]                   # priority; default [host] (--backends overrides)
  target: {triple: native, cflags: [-O3]}  # also cc: (or --cc, or $CC)
or, for an ONNX model (needs pip install 'dsopack[onnx]'; see docs/onnx.md):
  model: {onnx: model.onnx, shapes: {x: [1, 3, 32, 32]}}
an .onnx file given without a manifest uses the fastest backends the target has:
[xnnpack, cblas, host], each library backend kept when its library is installed for it
(XNNPACK: xnnpack.h, libXNNPACK; OpenBLAS: cblas.h, libopenblas); the build says what it
left out, with the install hint; --explain says why.

environment: CC (the compiler when neither --cc nor target.cc says),
DSOPACK_CACHE (object cache directory, default ~/.cache/dsopack)."""


class UserError(Exception):
    """A problem with what the user asked; printed as one line."""


# ---------------------------------------------------------------- build

def cmd_build(args) -> int:
    from packager.build import build

    from packager.frontends.onnx import parse_shape_option

    if not os.path.exists(args.spec):
        what = "ONNX file" if args.spec.lower().endswith(".onnx") else "manifest"
        raise UserError(f"{what} '{args.spec}' not found")
    shapes: dict[str, list] = {}
    for item in args.shape:
        name, shape = parse_shape_option(item)
        if name in shapes:
            raise UserError(f"--shape given twice for input '{name}'")
        shapes[name] = list(shape)
    backends = None
    if args.backends is not None:
        from packager import backend_choice

        backends = backend_choice.check(args.backends, "--backends")
    report = build(args.spec, args.output, cc=args.cc, quiet=args.quiet, explain=args.explain,
                   save_temps=args.save_temps, use_cache=not args.no_cache, shapes=shapes or None,
                   target=args.target, march=args.march, backends=backends, buckets=args.buckets or None)
    if not args.quiet:
        plans = len(report.manifest.get("plans", [])) or 1
        print(f"wrote {report.output} ({wording.size(report.file_bytes)}): {len(report.manifest['modules'])} modules, "
              f"arena {wording.size(report.arena_bytes)}" + (f", {plans} plans" if plans > 1 else ""))
    return 0


# ---------------------------------------------------------------- inspect / verify

def _open(path: str, pubkey: str | None = None):
    """The file mapped and checked by libdpk (header, manifest, bounds; with
    `pubkey`, its signature first); no code runs."""
    loader = _import_loader()
    if not os.path.isfile(path):
        raise UserError(f"'{path}' not found")
    try:
        return loader.open_package(path, pubkey=pubkey)
    except loader.DpkError as e:
        raise UserError(str(e)) from None


def module_rows(manifest: dict) -> list[tuple[str, ...]]:
    rows = []
    for m in manifest.get("modules", []):
        imports = ", ".join(m.get("imports", [])) or "-"
        if "payload" in m:
            p = m["payload"]
            raw = p.get("raw_size", p["size"])
            rows.append((m["name"], m["kind"], p["codec"], wording.size(p["size"]), wording.size(raw), imports))
        elif m.get("tensors"):
            tensors = m["tensors"].values()
            codecs = sorted({t.get("codec", "raw") for t in tensors})
            stored = sum(t["size"] for t in tensors)
            raw = sum(t.get("raw_size", t["size"]) for t in tensors)
            rows.append((m["name"], m["kind"], "/".join(codecs), wording.size(stored), f"{wording.size(raw)} ({wording.plural(len(m['tensors']), 'tensor')})",
                         imports))
        else:
            functions = len(m.get("functions", []))
            rows.append((m["name"], m["kind"], "-", "-", f"({wording.plural(functions, 'function')})" if functions else "-", imports))
    return rows


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


def cmd_inspect(args) -> int:
    f = _open(args.file)
    print(f"# {args.file}: dsopack format {f.format_version[0]}.{f.format_version[1]}, "
          f".dpk section {wording.size(f.section_size)}")
    print(f.manifest_text.rstrip("\n"))
    variants = (f.manifest.get("target") or {}).get("variants")
    if isinstance(variants, list) and variants:
        names = ", ".join(f"{v.get('name')} ({' '.join(v.get('cflags') or []) or 'the target flags'})"
                          for v in variants if isinstance(v, dict))
        print(f"# ISA variants: {names}; a load picks the best the CPU runs, or DPK_ISA's")
    dims, plans = f.manifest.get("dims"), f.manifest.get("plans")
    if isinstance(dims, list) and isinstance(plans, list):
        for d in dims:
            if isinstance(d, dict):
                how = f"exact sizes only: {d['exact']}" if d.get("exact") else "sizes between plans run padded"
                print(f"# dim {d.get('name')}: {d.get('min')}..{d.get('max')}, {how}")
        print(f"# plans: " + ", ".join(f"{p.get('graph')} ({', '.join(f'{k}={v}' for k, v in (p.get('dims') or {}).items())})"
                                     for p in plans if isinstance(p, dict)))
    print()
    print(_table(("module", "kind", "codec", "stored", "raw", "imports"), module_rows(f.manifest)))
    return 0


def cmd_verify(args) -> int:
    loader = _import_loader()
    with _open(args.file, args.pubkey) as package:
        try:
            package.verify()  # every payload checksum, zero padding
        except loader.DpkError as e:
            raise UserError(f"{args.file}: {e}") from None
        modules = package.manifest.get("modules", [])
        payloads = sum(1 for m in modules if "payload" in m) + sum(len(m.get("tensors", {})) for m in modules)
        signed = f", signed by the key in {args.pubkey}" if args.pubkey else ""
        print(f"OK {args.file}: format {package.format_version[0]}.{package.format_version[1]}, "
              f"{len(modules)} modules, {payloads} payloads, {wording.size(package.section_size)} checked{signed}")
    return 0


# ---------------------------------------------------------------- keygen / sign

def cmd_keygen(args) -> int:
    from packager import signing

    try:
        public = signing.keygen(args.output, force=args.force)
    except signing.SigningError as e:
        raise UserError(str(e)) from None
    print(f"wrote {args.output} (secret, mode 0600) and {args.output}.pub (public): key {signing.key_id(public).hex()}")
    return 0


def cmd_sign(args) -> int:
    from packager import signing

    try:
        kid, covered = signing.sign(args.file, args.key, args.output)
    except signing.SigningError as e:
        raise UserError(str(e)) from None
    print(f"signed {args.output or args.file} with key {kid.hex()} ({wording.size(covered)} covered)")
    return 0


# ---------------------------------------------------------------- run

def _import_loader():
    try:
        import loader
    except (ImportError, OSError) as e:
        raise UserError(f"the Python loader is not available: {e}") from None
    return loader


def _random_input(info, rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(info.dtype)
    if dtype.kind == "f":
        return rng.standard_normal(info.shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, info.shape).astype(dtype)
    return rng.integers(0, 10, info.shape).astype(dtype)


def _preview(array: np.ndarray, count: int = 6) -> str:
    flat = array.reshape(-1)[:count]
    text = np.array2string(flat, precision=5, separator=", ", max_line_width=1 << 20)
    text = text[:-1] + ", ...]" if array.size > count else text
    if array.dtype.kind == "f" and array.ndim == 2 and array.shape[0] == 1 and array.shape[1] > 1:
        top = int(array[0].argmax())  # one row of scores: say which wins
        text += f"  argmax {top} ({array[0, top]:.5g})"
    return text


def _thread_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"needs a positive integer, not '{text}'")
    return n


def cmd_run(args) -> int:
    loader = _import_loader()
    if not os.path.isfile(args.file):
        raise UserError(f"'{args.file}' not found")
    given = {}
    for item in args.inputs:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"input '{item}': expected NAME=FILE.npy")
        try:
            given[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"input '{name}': cannot read '{path}': {e}") from None
    start = time.perf_counter()
    try:
        model = loader.load(args.file, pubkey=args.pubkey, num_threads=args.threads)
    except loader.DpkError as e:
        raise UserError(str(e)) from None
    load_s = time.perf_counter() - start
    with model:
        names = [info.name for info in model.inputs]
        for name in given:
            if name not in names:
                raise UserError(f"'{name}' is not an input of {args.file} (inputs: {', '.join(names)})")
        rng = np.random.default_rng(args.seed)
        feeds = {}
        for info in model.inputs:
            if info.name in given:
                feeds[info.name] = given[info.name]
            elif args.random:
                feeds[info.name] = _random_input(info, rng)
            else:
                raise UserError(f"missing input '{info.name}' ({info.dtype}{list(info.shape)}): "
                                f"give {info.name}=FILE.npy or --random")
        try:
            start = time.perf_counter()
            outputs = model.run(**feeds)
            first_s = time.perf_counter() - start
            times = []
            for _ in range(max(args.repeat, 0)):
                start = time.perf_counter()
                model.run(**feeds)
                times.append(time.perf_counter() - start)
        except loader.DpkError as e:
            raise UserError(str(e)) from None
    for name, value in outputs.items():
        print(f"{name}: {value.dtype}{list(value.shape)} {_preview(value)}")
    line = f"load {load_s * 1e3:.2f} ms, first run {first_s * 1e3:.3f} ms"
    if times:
        line += f", median of {len(times)} runs {statistics.median(times) * 1e3:.3f} ms"
    print(line)
    if args.output:
        np.savez(args.output, **outputs)
        print(f"wrote {args.output}")
    return 0


# ---------------------------------------------------------------- serve

def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 < n < 65536:
        raise argparse.ArgumentTypeError(f"needs a port number from 1 to 65535, not '{text}'")
    return n


def cmd_serve(args) -> int:
    import logging

    loader = _import_loader()
    for path in args.files:
        if not os.path.isfile(path):
            raise UserError(f"'{path}' not found")
    if args.port == args.grpc_port:
        raise UserError(f"--port and --grpc-port are both {args.port}")
    try:
        from loader import serve
    except ImportError as e:
        raise UserError(str(e)) from None
    logging.basicConfig(level=logging.INFO, format="dsopack serve: %(message)s")
    for noisy in ("pytriton", "tritonclient"):  # their INFO lines are Triton's internals; warnings still show
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return serve.serve(args.files, http_port=args.port, grpc_port=args.grpc_port, max_batch=args.max_batch,
                           instances=args.instances, pubkey=args.pubkey, threads=args.threads,
                           reload_interval=args.reload_interval,
                           max_body=int(args.max_body_mb * (1 << 20)) if args.max_body_mb else None)
    except (ImportError, ValueError, loader.DpkError) as e:
        raise UserError(str(e)) from None


# ---------------------------------------------------------------- main

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 1 (argparse's default is usage + exit 2)
        sys.stderr.write(f"dsopack: error: {message} (see {self.prog} --help)\n")
        sys.exit(1)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dsopack", description=DESCRIPTION, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    from packager.version import version

    p.add_argument("--version", action="version", version=f"dsopack {version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    b = sub.add_parser("build", help="build a model file from a deployment manifest or an ONNX file",
                       description="Build ONE shared library from a deployment manifest (YAML) or an ONNX "
                                   "file (target native -O3; backends: the fastest the target has, [xnnpack, cblas, "
                                   "host] less the libraries it lacks).",
                       epilog="examples:\n  dsopack build manifests/lenet.yaml -o lenet.so --explain\n"
                              "  dsopack build model.onnx -o model.so --shape x=1,3,32,32\n"
                              "  dsopack build model.onnx -o model.so --shape x=1..64,3,32,32 --buckets 1,8,64"
                              "   (any batch 1..64)\n"
                              "  dsopack build model.onnx -o model.so --backends host --explain",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("spec", metavar="SPEC", help="the deployment manifest (.yaml) or an ONNX model (.onnx)")
    b.add_argument("-o", "--output", required=True, metavar="OUT.so", help="the model file to write")
    b.add_argument("--cc", help="C compiler (default: the manifest's target.cc, then $CC, then cc; "
                                "for a cross --target, TRIPLE-gcc)")
    b.add_argument("--target", metavar="TRIPLE",
                   help="build for another machine, e.g. aarch64-linux-gnu (default: the manifest's target.triple, "
                        "native); see docs/edge.md")
    b.add_argument("--march", metavar="CPU",
                   help="the CPU the generated C is tuned for, as gcc's -march (e.g. native: this machine only, "
                        "fastest here; x86-64-v3: any AVX2 machine); replaces the manifest's; recorded in the "
                        "file's producer.cflags. Default: the manifest's target.cflags; with no -march there, "
                        "an x86-64 file carries baseline, AVX2 and AVX-512 variants and picks one at load "
                        "(DPK_ISA forces one), another target's its baseline)")
    b.add_argument("--backends", metavar="A,B,...",
                   help="the backends in priority order, e.g. cblas,host or json,host (a node goes to the first "
                        "that takes it); overrides the manifest's `backends`. Default: the manifest's, else "
                        "(an .onnx file alone) the fastest the target has: xnnpack,cblas,host, less xnnpack "
                        "without XNNPACK and cblas without OpenBLAS for it")
    b.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    b.add_argument("--explain", action="store_true", help="say which backends were used and why (the default's choice too), and which took each node")
    b.add_argument("--save-temps", metavar="DIR", help="keep the generated C, blob and assembly stub in DIR")
    b.add_argument("--no-cache", action="store_true", help="do not use the object cache")
    b.add_argument("--shape", action="append", default=[], metavar="NAME=D0,D1,...",
                   help="fix an ONNX input's shape (its dynamic dims, e.g. the batch); repeat per input; "
                        "overrides the manifest's model.shapes. A dim may be a range, LO..HI (e.g. x=1..64,3,32,32): "
                        "the file then runs every size in it (see --buckets); axes of one ONNX dim_param "
                        "share one range; name a range to tie axes yourself: ids=batch=1..8,seq=1..512")
    b.add_argument("--buckets", action="append", default=[], metavar="SIZES",
                   help="the sizes of a dynamic dim the file gets a plan (compiled code) for, e.g. 1,8,32,64 "
                        "(must include the range's max; DIM=SIZES for one dim: seq=128,512). Default: the range's "
                        "min, the powers of two in it and its max. A size between two plans runs in the larger, "
                        "padded, when every op keeps the dim's rows apart (else it is refused; the build says so)")
    b.set_defaults(func=cmd_build)

    i = sub.add_parser("inspect", help="print the embedded manifest and a table of modules",
                       description="Print a model file's embedded manifest (YAML), then its modules.",
                       epilog="example:\n  dsopack inspect digits.so", formatter_class=argparse.RawDescriptionHelpFormatter)
    i.add_argument("file", metavar="FILE.so")
    i.set_defaults(func=cmd_inspect)

    r = sub.add_parser("run", help="load a model file with the Python loader and run it",
                       description="Load a model file with the Python loader, run it, print outputs and timings.",
                       epilog="examples:\n  dsopack run digits.so x=sample.npy\n"
                              "  dsopack run digits.so --random --repeat 1000 -o out.npz",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("file", metavar="FILE.so")
    r.add_argument("inputs", nargs="*", metavar="NAME=FILE.npy", help="an input from a .npy file")
    r.add_argument("--random", action="store_true", help="fill inputs not given with random values")
    r.add_argument("--seed", type=int, default=0, help="seed for --random (default 0)")
    r.add_argument("-o", "--output", metavar="OUT.npz", help="save the outputs")
    r.add_argument("--repeat", type=int, default=0, metavar="N", help="run N more times and print the median time")
    r.add_argument("--pubkey", metavar="KEY.pub", help="require a signature by this key, checked before any code runs")
    r.add_argument("--threads", type=_thread_count, metavar="N",
                   help="threads a run may use (default: DPK_NUM_THREADS, else the CPUs this process may run on)")
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("verify", help="check a model file's structure and every checksum",
                       description="Check a model file: header, manifest, every payload checksum. "
                                   "Exit 0 and print OK, or exit 1 naming what failed.",
                       epilog="example:\n  dsopack verify digits.so", formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("file", metavar="FILE.so")
    v.add_argument("--pubkey", metavar="KEY.pub", help="also check the file's signature (dsopack sign) against this key")
    v.set_defaults(func=cmd_verify)

    k = sub.add_parser("keygen", help="make an Ed25519 key pair for signing model files",
                       description="Write a secret key to KEY (mode 0600) and its public key to KEY.pub.",
                       epilog="example:\n  dsopack keygen -o release.key", formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("-o", "--output", required=True, metavar="KEY", help="the secret key file (KEY.pub is written too)")
    k.add_argument("--force", action="store_true", help="replace existing key files")
    k.set_defaults(func=cmd_keygen)

    s = sub.add_parser("sign", help="sign a model file (a trailer after its ELF contents)",
                       description="Append an Ed25519 signature over every byte of a model file; re-signing "
                                   "replaces the signature. Unsigned readers see the same file.",
                       epilog="example:\n  dsopack sign digits.so --key release.key\n"
                              "  dsopack verify digits.so --pubkey release.key.pub",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("file", metavar="FILE.so")
    s.add_argument("--key", required=True, metavar="KEY", help="the secret key file (dsopack keygen)")
    s.add_argument("-o", "--output", metavar="OUT.so", help="write the signed file here (default: in place)")
    s.set_defaults(func=cmd_sign)

    sv = sub.add_parser("serve", help="serve model files with NVIDIA Triton (KServe v2 over HTTP and gRPC)",
                        description="Serve model files with a Triton server on 127.0.0.1 (PyTriton: pip install "
                                    "'dsopack[serve]'), the KServe v2 / Open Inference Protocol over HTTP and gRPC, "
                                    "until SIGTERM or Ctrl-C. Each file is a model named after it (digits.so: "
                                    "digits). Inputs, outputs and dtypes come from the file. A file with a batch "
                                    "range (built with --shape x=1..64,...) gets dynamic batching: requests are "
                                    "joined up to its max (or --max-batch) and its plans' sizes are the preferred "
                                    "batches; any other file runs one request at a time, its one shape (or its "
                                    "ranges). Replacing a file by an atomic rename (mv new.so digits.so) switches to "
                                    "the new model once it loads and verifies and has the same inputs and outputs; "
                                    "otherwise the old one keeps serving and the log says why.",
                        epilog="examples:\n"
                               "  dsopack serve digits_batch.so                      HTTP :8000, gRPC :8001\n"
                               "  curl localhost:8000/v2/models/digits_batch         inputs, outputs, dtypes, shapes\n"
                               "  curl -d '{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [1, 64], "
                               "\"data\": [0, 1, ...]}]}' \\\n"
                               "       localhost:8000/v2/models/digits_batch/infer\n"
                               "  dsopack serve digits.so lenet.so --port 9000 --grpc-port 9001 --instances 2\n"
                               "  dsopack serve digits.so --pubkey release.key.pub  every load and reload checks the "
                               "signature\n"
                               "endpoints (v2): GET /v2/health/ready, GET /v2/models/NAME (metadata), "
                               "POST /v2/models/NAME/infer",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sv.add_argument("files", nargs="+", metavar="FILE.so", help="a model file to serve")
    sv.add_argument("--port", type=_port, default=8000, help="HTTP port (default 8000)")
    sv.add_argument("--grpc-port", type=_port, default=8001, help="gRPC port (default 8001)")
    sv.add_argument("--max-batch", type=_thread_count, metavar="N",
                    help="join requests into batches of at most N rows (default: the file's batch range max; "
                         "only for files with a batch range)")
    sv.add_argument("--instances", type=_thread_count, default=1, metavar="K",
                    help="model instances, each running one batch at a time (default 1; they share one loaded "
                         "file; give each fewer --threads)")
    sv.add_argument("--threads", type=_thread_count, metavar="N",
                    help="threads a run may use (default: DPK_NUM_THREADS, else the CPUs this process may run on)")
    sv.add_argument("--pubkey", metavar="KEY.pub",
                    help="require a signature by this key at load and at every reload")
    sv.add_argument("--reload-interval", type=float, default=1.0, metavar="S",
                    help="seconds between checks for a replaced file (default 1)")
    sv.add_argument("--max-body-mb", type=float, metavar="MB",
                    help="refuse an HTTP request body over this many MiB (status 413; default: room for the largest "
                         "valid request of the served files in JSON, at least 1 MiB)")
    sv.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command is None:
        p.print_help()
        return 1
    try:
        return args.func(args)
    except (BuildError, UserError) as e:
        message = str(e)
    except KeyboardInterrupt:
        message = "interrupted"
    except OSError as e:
        message = f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}"
    except Exception as e:  # a bug: still one line, with a way to get the traceback
        if os.environ.get("DSOPACK_TRACEBACK"):
            raise
        message = f"internal error ({type(e).__name__}: {e}); set DSOPACK_TRACEBACK=1 for the traceback"
    sys.stderr.write(f"dsopack: error: {message}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
