"""benchmarks/bench_report.py: how the harness judges each target of issue 5, on made-up figures (no timing).

The benchmark measures (benchmarks/compare.py); this checks that a measured figure on either side of a
target's line gets the verdict it should, so a PASS in results.md means what it says."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bench_report  # noqa: E402


def startup(ready_d=0.004, first_d=0.009, ready_o=0.25, first_o=0.26, floor=0.007, ready_1mb=0.0035):
    return {"mlp_100mb": {"dsopack": {"ready": ready_d, "to_first": first_d},
                          "onnxruntime": {"ready": ready_o, "to_first": first_o},
                          "mmap": {"ready": 0.0005, "to_first": floor}},
            "mlp_1mb": {"dsopack": {"ready": ready_1mb, "to_first": ready_1mb}}}


def latency(**ratios):
    """(model, batch) -> medians with dsopack / onnxruntime = the given ratio (onnxruntime at 100 us)."""
    rows = {}
    for key, ratio in ratios.items():
        name, batch = key.rsplit("_b", 1)
        rows[(name, int(batch))] = {"dsopack": {"median": ratio * 1e-4}, "onnxruntime": {"median": 1e-4}}
    return rows


def pss(inc1=98.0, inc4=99.0, serve1=120.0, serve4=171.0):
    return {"dsopack": {"inc1": inc1 * 1024, "inc4": inc4 * 1024, "serve1": {"Pss": serve1 * 1024},
                        "serve4": {"Pss": serve4 * 1024}}}


def status_of(targets, start):
    found = [t["status"] for t in targets if t["text"].startswith(start)]
    assert len(found) == 1, (start, [t["text"] for t in targets])
    return found[0]


@pytest.mark.parametrize("ratio, batch, status", [
    (0.9, 1, "PASS"), (0.91, 1, "MISS"), (1.0, 64, "PASS"), (1.01, 64, "MISS"), (0.5, 64, "PASS")])
def test_latency_lines_are_judged_against_0_9x_at_batch_1_and_1x_at_batch_64(ratio, batch, status):
    got = bench_report.targets({}, latency(**{f"lenet_b{batch}": ratio}), None, {})
    assert status_of(got, f"lenet batch {batch} latency") == status


def test_every_model_has_its_latency_lines_the_100mb_mlp_too():
    got = bench_report.targets({}, latency(mlp_100mb_b1=3.0, mlp_100mb_b64=0.5), None, {})
    assert [t["status"] for t in got] == ["MISS", "PASS"]


@pytest.mark.parametrize("figures, line, status", [
    (dict(ready_d=0.005, ready_o=0.25), "100 MB model load-to-ready", "PASS"),           # 50x
    (dict(ready_d=0.00501, ready_o=0.25), "100 MB model load-to-ready", "MISS"),         # 49.9x
    (dict(first_d=0.026, first_o=0.26), "100 MB model load-to-first-result", "PASS"),   # 10x
    (dict(first_d=0.0261, first_o=0.26), "100 MB model load-to-first-result", "MISS"),
    (dict(first_d=0.014, floor=0.007), "100 MB model first result", "PASS"),           # 2x the mmap read
    (dict(first_d=0.0141, floor=0.007), "100 MB model first result", "MISS"),
    (dict(ready_d=0.007, ready_1mb=0.0035), "load-to-ready 100 MB / 1 MB", "PASS"),     # 2x
    (dict(ready_d=0.0071, ready_1mb=0.0035), "load-to-ready 100 MB / 1 MB", "MISS"),
])
def test_start_up_lines(figures, line, status):
    assert status_of(bench_report.targets(startup(**figures), {}, None, {}), line) == status


@pytest.mark.parametrize("overhead, status", [(5e-6, "PASS"), (5.01e-6, "MISS")])
def test_the_call_overhead_line(overhead, status):
    got = bench_report.targets({}, {}, {"overhead": overhead, "run": overhead + 1e-7, "c_run": 1e-7}, {})
    assert status_of(got, "Python call overhead") == status


@pytest.mark.parametrize("figures, model_memory, total", [
    (dict(inc1=98.0, inc4=147.0), "PASS", "PASS"),                # 1.5x
    (dict(inc1=98.0, inc4=148.0), "MISS", "PASS"),
    (dict(serve1=120.0, serve4=181.0), "PASS", "MISS"),
])
def test_the_two_pss_lines(figures, model_memory, total):
    lines = bench_report.targets({}, {}, None, pss(**figures))
    assert [t["status"] for t in lines] == [model_memory, total]
    assert "model memory over idle interpreters" in lines[0]["text"] and "total" in lines[1]["text"]


def test_a_full_set_of_figures_gives_a_line_per_target():
    models = ("mlp_small", "mlp_100mb", "lenet", "cnn_bn", "tm_lenet", "tm_mobilenet", "tm_resnet", "resnet18",
              "mobilenet_v2", "efficientnet_b0", "bert_2x128")
    lat = latency(**{f"{m}_b{b}": 0.9 if b == 1 else 1.0 for m in models for b in (1, 64)})
    got = bench_report.targets(startup(), lat, {"overhead": 2.5e-6, "run": 2.6e-6, "c_run": 7e-8}, pss())
    assert len(got) == 4 + 2 * len(models) + 3 and all(t["status"] == "PASS" for t in got), [t["text"] for t in got if t["status"] != "PASS"]
