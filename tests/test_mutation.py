"""Mutation sweep: a deployment file with one byte changed (a bad copy, a worn SD
card) never crashes the runtime, `verify` detects every change, and a load
either refuses or gives a model whose run refuses or completes.

The bundled digits_mlp example is built twice: as `dsopack build` makes it
(module payloads zstd) and with its module payloads stored raw (so changed
bytes reach the graph parser as JSON text instead of failing zstd). For each,
tests/c/mutate.c changes, one at a time, every byte of the .dpk section before
the payload area (header, manifest, padding) and a seeded random sample of
payload-area and module-payload bytes, in one process; the test asserts that
it finished (no crash), that nothing went undetected and that no changed module
payload loaded (load checks their checksums). With AddressSanitizer available
the driver, the runtime and the model's kernels are all instrumented.
"""

from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import pytest

import sanitize
from packager import blob as blob_module
from packager.build import build

ROOT = sanitize.ROOT
SAMPLES = 400  # random payload-area bytes, and as many module-payload bytes, per model
SEED = 20240611


def kind():
    return "asan" if sanitize.unavailable("asan") is None else "plain"


def build_digits(out, raw_modules: bool, asan: bool) -> str:
    """digits_mlp built into `out`; module payloads raw if asked; kernels with ASan if asked."""
    manifest = open(os.path.join(ROOT, "manifests", "digits_mlp.yaml")).read()
    manifest = manifest.replace("weights: digits_mlp.npz", f"weights: {os.path.join(ROOT, 'manifests', 'digits_mlp.npz')}")
    if asan:
        manifest = manifest.replace("cflags: [-O3]", "cflags: [-O1, -fsanitize=address]")
    name = "digits_raw" if raw_modules else "digits"
    yaml_path, so = os.path.join(out, f"{name}.yaml"), os.path.join(out, f"{name}.so")
    with open(yaml_path, "w") as f:
        f.write(manifest)
    if not raw_modules:
        build(yaml_path, so, quiet=True)
        return so
    add = blob_module.BlobWriter.add

    def add_raw(self, data, codec="raw", align=blob_module.PAYLOAD_ALIGN):
        return add(self, data, codec if isinstance(data, np.ndarray) else "raw", align)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blob_module.BlobWriter, "add", add_raw)
        build(yaml_path, so, quiet=True)
    return so


@pytest.fixture(scope="module")
def mutate(tmp_path_factory):
    out = tmp_path_factory.mktemp("mutate")
    return sanitize.c_program("tests/c/mutate.c", str(out / "mutate"), kind(), internal=True)


@pytest.mark.parametrize("raw_modules", [False, True], ids=["as-built", "raw-module-payloads"])
def test_every_single_byte_change_is_detected_and_never_crashes(mutate, tmp_path, raw_modules):
    k = kind()
    path = build_digits(str(tmp_path), raw_modules, asan=k == "asan")
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run([mutate, path, str(work), str(SEED), str(SAMPLES)], capture_output=True, text=True,
                            env=sanitize.env(k), timeout=600)
    text = sanitize.clean_report(result)
    summary = re.search(r"^mutations (\d+) undetected (\d+) open_refused (\d+) verify_refused (\d+) load_refused (\d+) "
                        r"run_refused (\d+) run_completed (\d+) run_changed (\d+) module_payload_loaded (\d+)$",
                        result.stdout, re.M)
    assert summary, text[-4000:]
    total, undetected, opened, verified, load, run_refused, completed, changed, module_loaded = map(int, summary.groups())
    print(summary.group(0))
    assert result.returncode == 0, text[-4000:]
    assert undetected == 0 and module_loaded == 0
    assert opened + verified == total                   # every change detected
    assert load + run_refused + completed == total      # every load refused, or its run refused or completed
    assert total - 2 * SAMPLES >= 4096                  # header, manifest and padding: the payload area is 4096-aligned
    assert changed > 0                                  # some changed weights did reach a run
