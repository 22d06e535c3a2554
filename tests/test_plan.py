"""Arena planning by liveness and weight layout (packager/plan.py)."""

import random

import numpy as np
import pytest

from packager import plan
from packager.blob import BlobWriter


def check_no_overlap(calls, sizes, p):
    """Tensors (and workspaces) alive at the same call never share a byte; all fit in the arena."""
    items = {name: (p.offsets[name], sizes[name], *p.lifetimes[name]) for name in p.offsets}
    for i, call in enumerate(calls):
        if call.workspace_bytes:
            items[f"ws{i}"] = (p.workspaces[i], call.workspace_bytes, i, i)
    for name, (offset, size, _, _) in items.items():
        assert offset % 64 == 0, name
        assert offset + size <= p.size, name
    names = list(items)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            oa, sa, fa, la = items[a]
            ob, sb, fb, lb = items[b]
            if fa <= lb and fb <= la:  # alive together
                assert oa + sa <= ob or ob + sb <= oa, (a, items[a], b, items[b])


def test_chain_reuses_memory():
    # x -> t0 -> t1 -> t2 -> t3 -> y: only two intermediates are alive at a time
    names = ["x", "t0", "t1", "t2", "t3", "y"]
    calls = [plan.Call(f"f{i}", [names[i]], [names[i + 1]]) for i in range(5)]
    sizes = {t: 1000 for t in names[1:-1]}
    p = plan.plan_arena(calls, sizes)
    check_no_overlap(calls, sizes, p)
    assert set(p.offsets) == {"t0", "t1", "t2", "t3"}
    assert p.size == 2 * 1024  # two 64-aligned 1000-byte slots
    assert p.lifetimes["t1"] == (1, 2)


def test_tensors_read_later_stay_alive():
    calls = [plan.Call("a", ["x"], ["s"]), plan.Call("b", ["s"], ["t"]), plan.Call("c", ["t"], ["u"]),
             plan.Call("d", ["s", "u"], ["y"])]
    sizes = {"s": 64, "t": 64, "u": 64}
    p = plan.plan_arena(calls, sizes)
    check_no_overlap(calls, sizes, p)
    assert p.lifetimes["s"] == (0, 3)
    assert p.size == 3 * 64  # s lives across everything; t and u overlap at call 2


def test_workspaces_live_only_during_their_call():
    calls = [plan.Call("a", ["x"], ["s"], workspace_bytes=5000), plan.Call("b", ["s"], ["y"], workspace_bytes=100)]
    sizes = {"s": 128}
    p = plan.plan_arena(calls, sizes)
    check_no_overlap(calls, sizes, p)
    assert set(p.workspaces) == {0, 1}
    assert p.size == plan.align(5000) + 128  # the small workspace fits where the big one was


def test_alignment_and_empty():
    assert plan.plan_arena([], {}).size == 0
    p = plan.plan_arena([plan.Call("a", ["x"], ["s"]), plan.Call("b", ["s"], ["t"]), plan.Call("c", ["s", "t"], ["y"])],
                        {"s": 1, "t": 3})
    assert p.offsets == {"s": 0, "t": 64} or p.offsets == {"s": 64, "t": 0}
    assert p.size == 128


@pytest.mark.parametrize("seed", range(20))
def test_random_graphs_never_overlap_live_tensors(seed):
    rng = random.Random(seed)
    tensors = ["x"]
    calls, sizes = [], {}
    for i in range(rng.randint(1, 40)):
        ins = rng.sample(tensors, k=min(len(tensors), rng.randint(1, 3)))
        out = f"t{i}"
        sizes[out] = rng.choice([1, 63, 64, 100, 4096, 10000])
        calls.append(plan.Call(f"f{i}", ins, [out], workspace_bytes=rng.choice([0, 0, 0, 200, 7000])))
        tensors.append(out)
    p = plan.plan_arena(calls, sizes)
    check_no_overlap(calls, sizes, p)
    assert p.size <= sum(plan.align(s) for s in sizes.values()) + sum(plan.align(c.workspace_bytes) for c in calls)


def test_weights_big_page_aligned_small_packed():
    weights = {"small_a": np.zeros(3, np.float32), "big": np.ones((64, 64), np.float32),
               "small_b": np.zeros(10, np.int64), "page": np.zeros(1024, np.float32)}
    writer = BlobWriter()
    writer.add(b"graph payload", "zstd")
    tensors = plan.place_weights(writer, weights)
    assert list(tensors) == list(weights)  # listed in the model's order
    assert tensors["big"]["offset"] % 4096 == 0 and tensors["page"]["offset"] % 4096 == 0
    assert tensors["small_a"]["offset"] % 64 == 0 and tensors["small_b"]["offset"] % 64 == 0
    assert max(tensors["big"]["offset"], tensors["page"]["offset"]) < tensors["small_a"]["offset"]
    assert tensors["small_b"]["offset"] - tensors["small_a"]["offset"] == 64  # packed
    assert tensors["big"] | {} == {"dtype": "float32", "shape": [64, 64], "offset": tensors["big"]["offset"],
                                   "size": 16384, "codec": "raw", "checksum": tensors["big"]["checksum"]}
    assert tensors["small_b"]["dtype"] == "int64" and tensors["small_b"]["size"] == 80
