"""The compiled moments kernel (``features/_moments.c``) against numpy, on synthetic values (pure
functions: no model is needed to check arithmetic)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mothertree.features import _moments
from mothertree.features.reductions import central_moments, rounded, tensor_stats


def reference_moments(values: np.ndarray) -> np.ndarray:
    """Two-pass central moments in numpy's extended precision (x86's 80-bit long double): a reference
    more exact than float64 two passes, whose rounded mean shifts the odd moments of tensors with a
    large mean and a small spread by more than 1e-10."""
    x = values.astype(np.longdouble)
    mean = x.mean() if x.size else np.longdouble(0)
    d = x - mean
    return np.array([mean, *(np.mean(d**k) if x.size else 0.0 for k in (2, 3, 4))], dtype=np.float64)


def numpy_fp16(values: np.ndarray) -> np.ndarray:
    return np.clip(values, -65504, 65504).astype(np.float16).astype(np.float32)


def numpy_bf16(values: np.ndarray) -> np.ndarray:
    bits = values.astype(np.float32).view(np.uint32)
    return ((bits + (((bits >> 16) & 1) + 0x7FFF)) & np.uint32(0xFFFF0000)).view(np.float32)


def kernel(values: np.ndarray, which: int = 0b111, threads: int = 1) -> tuple[np.ndarray, bool, float, int]:
    out = np.full((3, 4), np.nan)
    finite, absmax, zeros = _moments.moments(
        np.ascontiguousarray(values, dtype=np.float32), out, which, threads
    )
    return out, finite, absmax, zeros


def test_fp16_rounding_is_numpys_bit_for_bit_on_random_bit_patterns():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**32, 2_000_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = values[np.isfinite(values)]
    edges = np.array(
        [0.0, -0.0, 65504, 65519, 65520, 1e6, -1e6, 2**-14, 2**-24, 2**-25, 3 * 2**-26, -(2**-25), 6e-8],
        dtype=np.float32,
    )
    for sample in (values, edges):
        np.testing.assert_array_equal(rounded(sample, 1).view(np.uint32), numpy_fp16(sample).view(np.uint32))


def test_fp16_rounding_keeps_nan_and_clips_infinity():
    values = np.array([np.nan, np.inf, -np.inf], dtype=np.float32)
    out = rounded(values, 1)
    assert np.isnan(out[0]) and out[1] == 65504 and out[2] == -65504


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 70_000),
    scale=st.sampled_from([1e-6, 0.05, 3.0, 3e4]),
    offset=st.sampled_from([0.0, 1.0, -0.02]),
    seed=st.integers(0, 2**16),
)
def test_moments_at_every_precision_equal_numpys_two_pass_ones(size, scale, offset, seed):
    values = (np.random.default_rng(seed).standard_normal(size) * scale + offset).astype(np.float32)
    out, finite, absmax, zeros = kernel(values)
    assert finite
    assert zeros == int(np.count_nonzero(values == 0))
    assert absmax == (float(np.abs(values).max()) if size else 0.0)
    for precision, as_stored in enumerate((values, numpy_fp16(values), numpy_bf16(values))):
        expected = reference_moments(as_stored)
        # Each moment to 1e-10 of the scale its sums round at, E|x - mean|^k: m2, sqrt(m2 m4) >= E|d|^3
        # (a nearly symmetric tensor's m3 is far below it) and m4 (>= std^4; far above it when rounding
        # to fp16 leaves a few values apart from all the others).
        mean, m2, _, m4 = expected
        scales = np.array([abs(mean) + np.sqrt(m2), m2, np.sqrt(m2 * m4), m4])
        assert np.all(np.abs(out[precision] - expected) <= 1e-10 * scales), (out[precision], expected)


def test_the_same_bits_whatever_the_thread_count():
    values = (np.random.default_rng(1).standard_normal(1_000_003) * 0.05).astype(np.float32)
    first, *_ = kernel(values, threads=1)
    for threads in (2, 3, 7, 64, 1000):
        again, *_ = kernel(values, threads=threads)
        np.testing.assert_array_equal(again, first)


def test_a_coarser_resave_has_as_stored_exactly_its_sources_rounded_moments():
    # What fingerprint.is_copy compares bit for bit: a bf16 (fp16) re-save, read back as float32, against
    # the float32 original's moments at that precision.
    source = (np.random.default_rng(2).standard_normal(200_001) * 0.03).astype(np.float32)
    for precision, resave in ((1, numpy_fp16(source)), (2, numpy_bf16(source))):
        at_precision = tensor_stats(source, (precision,)).moments[precision]
        np.testing.assert_array_equal(tensor_stats(resave).moments[0], at_precision)


@pytest.mark.parametrize("position", [0, 5, 16_383, 16_384, 99_999])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_anywhere_is_seen(position, bad):
    values = np.ones(100_000, dtype=np.float32)
    values[position] = bad
    _, finite, _, _ = kernel(values, which=0b001)
    assert not finite
    assert tensor_stats(values).finite is False


def test_only_the_precisions_asked_for_are_written():
    out, *_ = kernel(np.arange(10, dtype=np.float32), which=0b100)
    assert np.isnan(out[:2]).all() and np.isfinite(out[2]).all()


def test_central_moments_of_a_stack_are_each_rows():
    stack = np.random.default_rng(3).standard_normal((4, 1000)).astype(np.float32)
    rows = np.stack([tensor_stats(row).moments[0] for row in stack])
    np.testing.assert_array_equal(central_moments(stack), rows)
    np.testing.assert_allclose(central_moments(stack), [reference_moments(r) for r in stack], rtol=1e-12)


def test_wrong_buffers_are_refused():
    with pytest.raises(TypeError, match="float32"):
        _moments.moments(np.zeros(4, dtype=np.float64), np.zeros((3, 4)), 1, 1)
    with pytest.raises(TypeError, match="12 values"):
        _moments.moments(np.zeros(4, dtype=np.float32), np.zeros(4), 1, 1)
    with pytest.raises(TypeError, match="one size"):
        _moments.round_f16(np.zeros(4, dtype=np.float32), np.zeros(3, dtype=np.float32))


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_exact_zeros_are_counted_with_either_sign_in_every_block(threads):
    # A magnitude-pruned copy (synthetic): zeros across block edges, -0.0 among them, tiny values not.
    values = (np.random.default_rng(4).standard_normal(100_003) * 0.05).astype(np.float32)
    pruned = np.random.default_rng(5).random(values.size) < 0.3
    values[pruned] = 0.0
    values[np.flatnonzero(pruned)[::7]] = -0.0
    values[1] = np.float32(1e-45)  # the least subnormal is not zero
    *_, zeros = kernel(values, which=0b001, threads=threads)
    assert zeros == int(pruned.sum()) - (1 if pruned[1] else 0)
    assert tensor_stats(values).zeros == zeros
