"""Test helper: a model file with dynamic shapes, made by hand as test_runtime_c.py
makes its static ones (C kernels that read their sizes off the tensors, a params
payload, one graph payload per plan, packager.blob.BlobWriter, the `.incbin`
stub, gcc -shared), so the runtime's side of dynamic shapes is tested on its own.

    inputs   x: float32[batch, K]     t: float32[batch, seq]
    outputs  y: float32[batch, N] = relu(x @ W.T + b)
             z: float32[batch, seq] = 2 t
             n: float32[batch]      = the batch size the plan ran (each element)
             s: float32[K]          = the sum of x's rows (fixed shape: padding rows must be zero)
    dims     batch 1..8 (padded), seq 1..4 (exact: never padded)
    plans    every (batch, seq) of BATCHES x SEQS, smallest first; the last, (8, 4), is `main`;
             each of `cost` 1, so a run pads and never cuts into chunks (`s` sums over the batch,
             which a packager-built file never does with a padded dim; chunks=True leaves the costs
             out, so they default to the sizes' product and runs cut: test `y`, `z` and `n` then)
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np

from packager.blob import BlobWriter, write_incbin_stub

INCLUDE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runtime_c", "include")
CC = os.environ.get("CC", "gcc")
K, N = 4, 3
BATCHES, SEQS = (1, 4, 8), (2, 4)
EXACT = "softmax 'attn' normalizes over it"

KERNELS = r"""
#include "dpk_abi.h"
DPK_EXPORT const dpk_backend_api *__dpk_api = 0;

/* y[B,N] = x[B,K] @ W[N,K].T + b[N], then relu in place */
DPK_EXPORT int dyn_dense(const dpk_value *args, const int *codes, int nargs, dpk_value *ret, int *ret_code,
                         void *resource) {
  (void)codes; (void)ret; (void)ret_code; (void)resource;
  if (nargs != 4) { __dpk_api->set_error("dyn_dense takes 4 tensors, got %d", nargs); return -1; }
  const float *x = args[0].v_tensor->data, *w = args[1].v_tensor->data, *b = args[2].v_tensor->data;
  float *y = args[3].v_tensor->data;
  int64_t rows = args[0].v_tensor->shape[0], n = args[1].v_tensor->shape[0], k = args[1].v_tensor->shape[1];
  for (int64_t r = 0; r < rows; r++)
    for (int64_t i = 0; i < n; i++) {
      float acc = b[i];
      for (int64_t j = 0; j < k; j++) acc += x[r * k + j] * w[i * k + j];
      y[r * n + i] = acc > 0 ? acc : 0;
    }
  return 0;
}

/* z = 2 t (any shape) */
DPK_EXPORT int dyn_double(const dpk_value *args, const int *codes, int nargs, dpk_value *ret, int *ret_code,
                          void *resource) {
  (void)codes; (void)nargs; (void)ret; (void)ret_code; (void)resource;
  const DLTensor *t = args[0].v_tensor;
  int64_t count = 1;
  for (int i = 0; i < t->ndim; i++) count *= t->shape[i];
  const float *in = t->data;
  float *out = args[1].v_tensor->data;
  for (int64_t i = 0; i < count; i++) out[i] = 2 * in[i];
  return 0;
}

/* n[B] = B; s[K] = the sum of x's B rows */
DPK_EXPORT int dyn_rows(const dpk_value *args, const int *codes, int nargs, dpk_value *ret, int *ret_code,
                        void *resource) {
  (void)codes; (void)nargs; (void)ret; (void)ret_code; (void)resource;
  const DLTensor *x = args[0].v_tensor;
  int64_t rows = x->shape[0], k = x->shape[1];
  float *n = args[1].v_tensor->data, *s = args[2].v_tensor->data;
  for (int64_t r = 0; r < rows; r++) n[r] = (float)rows;
  for (int64_t j = 0; j < k; j++) {
    s[j] = 0;
    for (int64_t r = 0; r < rows; r++) s[j] += ((const float *)x->data)[r * k + j];
  }
  return 0;
}

DPK_EXPORT int dyn_fail(const dpk_value *args, const int *codes, int nargs, dpk_value *ret, int *ret_code,
                        void *resource) {
  (void)args; (void)codes; (void)nargs; (void)ret; (void)ret_code; (void)resource;
  __dpk_api->set_error("the kernel refuses: code %d", 7);
  return 1;
}
"""

FUNCTIONS = ["dyn_dense", "dyn_double", "dyn_rows", "dyn_fail"]


def weights(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, K)).astype(np.float32), rng.standard_normal(N).astype(np.float32)


def graph_name(batch: int, seq: int) -> str:
    return "main" if (batch, seq) == (BATCHES[-1], SEQS[-1]) else f"g_b{batch}_s{seq}"


def graph_payload(batch: int, seq: int, fail=False) -> dict:
    """The model at one size of each dim."""
    calls = [{"func": "dyn_dense", "args": [0, 2, 3, 4]}, {"func": "dyn_double", "args": [1, 5]},
             {"func": "dyn_rows", "args": [0, 6, 7]}]
    if fail:
        calls.append({"func": "dyn_fail", "args": [4]})
    return {
        "version": 1,
        "arena_bytes": 64,
        "tensors": [
            {"name": "x", "dtype": "float32", "shape": [batch, K], "storage": "input", "index": 0},
            {"name": "t", "dtype": "float32", "shape": [batch, seq], "storage": "input", "index": 1},
            {"name": "fc.weight", "dtype": "float32", "shape": [N, K], "storage": "param"},
            {"name": "fc.bias", "dtype": "float32", "shape": [N], "storage": "param"},
            {"name": "y", "dtype": "float32", "shape": [batch, N], "storage": "output", "index": 0},
            {"name": "z", "dtype": "float32", "shape": [batch, seq], "storage": "output", "index": 1},
            {"name": "n", "dtype": "float32", "shape": [batch], "storage": "output", "index": 2},
            {"name": "s", "dtype": "float32", "shape": [K], "storage": "output", "index": 3},
        ],
        "calls": calls,
    }


def plan_sizes() -> list[tuple[int, int]]:
    return [(b, s) for b in BATCHES for s in SEQS]


def build(directory, name="dyn", *, edit=None, graphs=None, fail=False, exact=True, seed=0, chunks=False) -> str:
    """Write, compile and link the dynamic model; return its path.

    `graphs(batch, seq) -> dict` replaces a plan's graph payload; `edit(manifest)`
    changes the manifest dict in place before it is written."""
    directory = str(directory)
    w, b = weights(seed)
    writer = BlobWriter()
    w_desc = writer.add(w, align=4096)
    b_desc = writer.add(b, align=64)
    graph_modules, plans = [], []
    for batch, seq in plan_sizes():
        payload = graphs(batch, seq) if graphs else graph_payload(batch, seq, fail=fail)
        graph_modules.append({"name": graph_name(batch, seq), "kind": "graph", "imports": ["lib", "weights"],
                              "payload": writer.add(json.dumps(payload).encode(), codec="zstd")})
        plans.append({"graph": graph_name(batch, seq), "dims": {"batch": batch, "seq": seq}, **({} if chunks else {"cost": 1})})
    seq_dim = {"name": "seq", "min": 1, "max": SEQS[-1]}
    if exact:
        seq_dim["exact"] = EXACT
    big, long = BATCHES[-1], SEQS[-1]
    manifest = {
        "format": "dsopack/1",
        "name": name,
        "producer": {"dsopack": "test"},
        "target": {"triple": "x86_64-linux-gnu", "machine": "x86_64"},
        "requires": [],
        "checksum": "xxh3-64",
        "entry": "main",
        "inputs": [{"name": "x", "dtype": "float32", "shape": [big, K], "dims": ["batch", None]},
                   {"name": "t", "dtype": "float32", "shape": [big, long], "dims": ["batch", "seq"]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": [big, N], "dims": ["batch", None]},
                    {"name": "z", "dtype": "float32", "shape": [big, long], "dims": ["batch", "seq"]},
                    {"name": "n", "dtype": "float32", "shape": [big], "dims": ["batch"]},
                    {"name": "s", "dtype": "float32", "shape": [K]}],
        "dims": [{"name": "batch", "min": 1, "max": big}, seq_dim],
        "plans": plans,
        "modules": [
            {"name": "lib", "kind": "dso", "functions": FUNCTIONS},
            {"name": "weights", "kind": "params", "tensors": {
                "fc.weight": {"dtype": "float32", "shape": [N, K], **w_desc},
                "fc.bias": {"dtype": "float32", "shape": [N], **b_desc}}},
            *graph_modules,
        ],
    }
    if edit:
        edit(manifest)
    blob = os.path.join(directory, f"{name}.blob")
    writer.write(blob, manifest)
    src, stub, out = (os.path.join(directory, f"{name}{ext}") for ext in (".c", ".s", ".so"))
    with open(src, "w") as f:
        f.write(KERNELS)
    write_incbin_stub(stub, blob)
    subprocess.run([CC, "-shared", "-fPIC", "-O1", "-fvisibility=hidden", "-I", INCLUDE, src, stub, "-o", out],
                   check=True, capture_output=True)
    return out


def expected(x: np.ndarray, t: np.ndarray, ran_batch: int, seed=0) -> dict[str, np.ndarray]:
    """The outputs in float64 (y within float32 rounding), for a run in the plan of batch `ran_batch`."""
    w, b = weights(seed)
    y = np.maximum(x.astype(np.float64) @ w.T.astype(np.float64) + b, 0)
    return {"y": y, "z": 2 * t.astype(np.float64), "n": np.full(x.shape[0], float(ran_batch)),
            "s": x.astype(np.float64).sum(axis=0)}
