"""The host kernels' own float math (c/host_prelude.h: dpk_expf, dpk_sigmoidf, dpk_tanhf, dpk_erff, dpk_pow) against
NumPy in float64, within the error bounds the header documents, compiled for every ISA this CPU has
(the portable baseline everywhere; AVX2 and AVX-512 on an x86-64 that has them), as the ops that use
them (exp, sigmoid, tanh, erf, gelu, gelu_tanh, pow): correctness only, no timing.
"""

import platform

import numpy as np
import pytest

import reference as ref
from kernel_harness import compile_sources, lower_node

EPS32 = 2.0 ** -23
TINY = float(np.finfo(np.float32).tiny)  # FLT_MIN: below it a result may be a subnormal or 0
BIG = float(np.finfo(np.float32).max)
# the header's bounds, in EPS32 relative to the exact result
BOUNDS = {"exp": 0.7, "sigmoid": 1.25, "tanh": 1.25, "erf": 1.7}
REFERENCE = {"exp": np.exp, "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)), "tanh": np.tanh, "erf": ref.erf}


def _marches() -> list[str]:
    """gcc -march values for the ISAs this CPU runs: [] is the build's default (the baseline)."""
    flags = open("/proc/cpuinfo").read() if platform.machine() == "x86_64" else ""
    return ["baseline"] + ["x86-64-v3"] * (" avx2" in flags) + ["x86-64-v4"] * (" avx512f" in flags)


def _grid() -> np.ndarray:
    """Dense over the whole range where the results change, both signs near zero, and the edges."""
    tiny = np.logspace(-30, 0, 4001)
    edges = [0.0, -0.0, np.inf, -np.inf, np.nan, 88.72, 88.7228, 88.73, 89.0, 89.5, -87.33, -87.34, -103.97,
             -104.0, -105.0, 200.0, -200.0, 0.625, -0.625, 0.62499, 0.62501, 1e-40, -1e-40]
    return np.concatenate([np.linspace(-110, 110, 1 << 18), tiny, -tiny, edges]).astype(np.float32)


@pytest.fixture(scope="module", params=_marches())
def kernels(request, tmp_path_factory):
    """The five ops lowered for a float32 grid, compiled with one -march (and -O3, as builds are)."""
    x = _grid()
    exponents = np.resize(np.array([1.0, 2.0, 3.0, 0.5, -1.5, 0.0], np.float32), x.shape)
    lowered = [lower_node(op, [x]) for op in ("exp", "sigmoid", "tanh", "erf", "gelu", "gelu_tanh")]
    lowered.append(lower_node("pow", [x, exponents]))
    sources = [backend.lower(region, graph) for backend, region, graph in lowered]
    march = [] if request.param == "baseline" else [f"-march={request.param}"]
    lib = compile_sources(sources, tmp_path_factory.mktemp(request.param), cflags=["-O3", *march])

    def run(op, *inputs):
        out = np.full(x.shape, np.nan, np.float32)
        lib.call(f"host_{op}_0", *inputs, out)
        return out

    return x, exponents, run


@pytest.mark.parametrize("op", sorted(BOUNDS))
def test_within_the_documented_bound(kernels, op):
    x, _, run = kernels
    got = run(op, x).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        want = REFERENCE[op](x.astype(np.float64))
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    overflow = np.abs(want) > BIG
    assert np.all(got[overflow] == np.inf)
    normal = ~nan & ~overflow & (np.abs(want) >= TINY)
    rel = np.abs(got[normal] - want[normal]) / np.abs(want[normal])
    assert rel.max() <= BOUNDS[op] * EPS32, (op, float(rel.max() / EPS32), x[normal][np.argmax(rel)])
    below = ~nan & ~overflow & ~normal
    assert np.all(np.abs(got[below] - want[below]) < TINY)


def test_tanh_is_odd_to_the_sign_of_zero(kernels):
    x, _, run = kernels
    got = run("tanh", x)
    finite = np.isfinite(x)
    assert np.array_equal(np.signbit(got[finite]), np.signbit(x[finite]))
    assert np.array_equal(got[np.isinf(x)], np.sign(x[np.isinf(x)]))


@pytest.mark.parametrize("op", ["gelu", "gelu_tanh"])
def test_gelu(kernels, op):
    """0.5 x (1 + erf or tanh(...)): their error carries through as an absolute error of a few EPS32 |x|."""
    x, _, run = kernels
    got = run(op, x).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        want = getattr(ref, op)(x)
    finite = np.isfinite(want)
    assert np.all(np.abs(got[finite] - want[finite]) <= 4 * EPS32 * np.abs(x[finite]) + TINY)
    assert np.array_equal(np.isnan(got), np.isnan(want))


def test_pow_products_and_the_general_case(kernels):
    """x^1, x^2, x^3 as products, other exponents through C pow: the double result rounded to float32
    (a double rounding at most: 1 ulp), NaN for a negative base to a fractional power."""
    x, e, run = kernels
    got = run("pow", x, e).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        want = np.power(x.astype(np.float64), e.astype(np.float64)).astype(np.float32).astype(np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    both = ~np.isnan(want)
    with np.errstate(invalid="ignore"):  # inf - inf where both are the same infinity
        close = (got[both] == want[both]) | (np.abs(got[both] - want[both]) <= EPS32 * np.abs(want[both]))
    assert np.all(close)
