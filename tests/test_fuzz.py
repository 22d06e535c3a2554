"""Fuzzing the reader: runtime_c/fuzz/fuzz_package.c (libFuzzer, ASan + UBSan)
over everything libdpk reads from a file before dlopen (runtime_c/fuzz/README.md).

- every input in tests/regressions/ (inputs that once crashed, minimized, plus
  hand-made edge cases) replays through the harness and through dpk-run built
  with ASan + UBSan, cleanly;
- a bounded campaign from the bundled examples (runtime_c/fuzz/make_seeds.py)
  finds nothing: 60 s by default, DSOPACK_FUZZ_SECONDS=N to change it (0 skips);
  then half as long for fuzz_payload (the graph and json parsers fed directly).

Skipped, with the reason, without clang and libFuzzer (Debian: clang-14
libclang-rt-14-dev; scripts/setup.sh installs them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import sanitize
from test_runtime_c import build_model, load_error, test_api  # noqa: F401  (test_api is a fixture)

ROOT = sanitize.ROOT
RUNTIME = os.path.join(ROOT, "runtime_c")
REGRESSIONS = os.path.join(ROOT, "tests", "regressions")
SECONDS = int(os.environ.get("DSOPACK_FUZZ_SECONDS", "60"))


def fuzz_cc():
    return os.environ.get("FUZZ_CC") or shutil.which("clang") or shutil.which("clang-14")


def libfuzzer_missing():
    cc = fuzz_cc()
    if not cc:
        return "clang is not installed (apt-get install clang-14 libclang-rt-14-dev)"
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "probe.c")
        with open(src, "w") as f:
            f.write("#include <stddef.h>\n#include <stdint.h>\n"
                    "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n")
        result = subprocess.run([cc, "-fsanitize=fuzzer,address,undefined", src, "-o", os.path.join(d, "probe")],
                                capture_output=True, text=True)
        if result.returncode != 0:
            return f"{cc} cannot link libFuzzer with ASan/UBSan (libclang-rt-14-dev?): {result.stderr.strip()[:300]}"
    return None


@pytest.fixture(scope="module")
def fuzzer():
    reason = libfuzzer_missing()
    if reason:
        pytest.skip(reason)
    result = subprocess.run(["make", "-C", RUNTIME, "-j4", "fuzz", f"FUZZ_CC={fuzz_cc()}"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return os.path.join(RUNTIME, "build", "fuzz", "fuzz_package")


# ASan's defaults: an allocation past its limit is a crash (libFuzzer's own limit
# reports mallocs over -rss_limit_mb, 2 GB, as out-of-memory).
ENV = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}


def regression_inputs():
    return sorted(os.path.join(REGRESSIONS, f) for f in os.listdir(REGRESSIONS)
                  if not f.endswith((".md", ".py")) and not f.startswith("."))


def test_regression_inputs_replay_through_the_harness(fuzzer):
    inputs = regression_inputs()
    assert inputs, "tests/regressions/ holds no inputs"
    result = subprocess.run([fuzzer, "-runs=1", *inputs], capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-6000:]
    assert sum(f"Running: {path}" in result.stderr for path in inputs) == len(inputs), result.stderr[-3000:]


def test_regression_inputs_are_refused_cleanly_by_dpk_run_under_asan(tmp_path):
    reason = sanitize.unavailable("asan")
    if reason:
        pytest.skip(reason)
    dpk_run = os.path.join(sanitize.runtime_build("asan"), "dpk-run")
    inputs = regression_inputs()
    assert inputs, "tests/regressions/ holds no inputs"
    for path in inputs:
        result = subprocess.run([dpk_run, path, "--random", "--verify"], capture_output=True, text=True,
                                env=sanitize.env("asan"), timeout=60)
        sanitize.clean_report(result)
        assert result.returncode == 1 and result.stderr.startswith("dpk-run: "), (path, result.stderr[-3000:])


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """(package seeds, payload seeds): the bundled examples built by make_seeds.py."""
    out = tmp_path_factory.mktemp("seeds")
    made = subprocess.run([sys.executable, os.path.join(RUNTIME, "fuzz", "make_seeds.py"), str(out / "package"),
                           "--payloads", str(out / "payload")], capture_output=True, text=True)
    assert made.returncode == 0 and os.listdir(out / "package") and os.listdir(out / "payload"), made.stdout + made.stderr
    return out / "package", out / "payload"


def campaign(binary, seconds, seed_dir, tmp_path, env=None):
    corpus, findings = tmp_path / "corpus", tmp_path / "findings"
    corpus.mkdir()
    findings.mkdir()
    result = subprocess.run([binary, f"-max_total_time={seconds}", "-timeout=10", "-rss_limit_mb=3000",
                             "-print_final_stats=1", f"-artifact_prefix={findings}/", str(corpus), str(seed_dir)],
                            capture_output=True, text=True, env={**ENV, **(env or {})}, timeout=seconds + 600)
    stats = [line for line in result.stderr.splitlines() if line.startswith("stat::")]
    print("\n".join(stats))
    assert result.returncode == 0 and not os.listdir(findings), (os.listdir(findings), result.stderr[-6000:])
    executed = next(int(line.split()[-1]) for line in stats if line.startswith("stat::number_of_executed_units"))
    assert executed > 1000, stats


@pytest.mark.skipif(SECONDS <= 0, reason="DSOPACK_FUZZ_SECONDS=0")
def test_a_bounded_fuzzing_campaign_finds_nothing(fuzzer, seeds, tmp_path):
    key = f"{seeds[0]}-key.pub"  # make_seeds.py signs digits_mlp with it: the signed reader is fuzzed too
    campaign(fuzzer, SECONDS, seeds[0], tmp_path, env={"DPK_FUZZ_PUBKEY": key} if os.path.exists(key) else None)


@pytest.mark.skipif(SECONDS <= 0, reason="DSOPACK_FUZZ_SECONDS=0")
def test_a_bounded_payload_fuzzing_campaign_finds_nothing(fuzzer, seeds, tmp_path):
    """fuzz_payload: graph and json payload bytes fed to their parsers (half the time)."""
    payload_fuzzer = os.path.join(os.path.dirname(fuzzer), "fuzz_payload")
    campaign(payload_fuzzer, max(SECONDS // 2, 5), seeds[1], tmp_path,
             env={"DPK_FUZZ_CONTEXT": str(seeds[0] / "lenet.raw.elf")})


# ---- what the regressions guard, with the runtime's message -----------------------------------------

def test_a_zstd_payload_claiming_more_than_it_can_hold_is_refused_before_allocating(test_api, tmp_path):  # noqa: F811
    """Found by the edge cases (edge-zstd-claims-*.elf): a frame header and raw_size claiming
    4 GiB made the runtime malloc 4 GiB before decoding one byte (libFuzzer: out-of-memory;
    1 TiB: ASan allocation-size-too-big). No frame expands more than 32768 times."""
    sys.path.insert(0, REGRESSIONS)
    from make_edge_cases import huge_zstd_frame

    frame = huge_zstd_frame(1 << 32)

    def add(writer, manifest):
        desc = writer.add(frame, codec="raw")
        manifest["modules"][2]["payload"] = {**desc, "codec": "zstd", "raw_size": 1 << 32}
    path = build_model(tmp_path, add=add)
    assert load_error(test_api, path) == (
        f"DATA_LOSS: '{path}': module 'main' payload: the zstd frame claims 4294967296 bytes, more than its "
        f"{len(frame)} stored bytes can hold (at most 32768 times)")
