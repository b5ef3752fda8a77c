"""Wilson intervals, quantiles and bounded samples (agent.shadow.stats)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.shadow.stats import RecentValues, quantile, quantiles, wilson_interval, z_score

CONFIDENCES = st.sampled_from([0.8, 0.9, 0.95, 0.98, 0.99, 0.999])


@st.composite
def k_and_n(draw: st.DrawFn, max_n: int = 100_000) -> tuple[int, int]:
    n = draw(st.integers(min_value=0, max_value=max_n))
    return draw(st.integers(min_value=0, max_value=n)), n


def reference_wilson(k: int, n: int, z: float) -> tuple[float, float]:
    """The textbook form (Newcombe 1998, method 3), written independently of the module's algebra."""
    p, q = k / n, 1 - k / n
    root = z * math.sqrt(z * z + 4 * n * p * q)
    return ((2 * n * p + z * z - root) / (2 * (n + z * z)), (2 * n * p + z * z + root) / (2 * (n + z * z)))


@given(k_and_n(), CONFIDENCES)
def test_wilson_bounds_bracket_the_estimate(kn: tuple[int, int], confidence: float) -> None:
    # Arrange
    k, n = kn

    # Act
    low, high = wilson_interval(k, n, confidence)

    # Assert
    estimate = k / n if n else 0.0
    assert 0.0 <= low <= high <= 1.0
    if n:
        assert low <= estimate <= high


@given(k_and_n(), CONFIDENCES)
def test_wilson_is_symmetric(kn: tuple[int, int], confidence: float) -> None:
    k, n = kn

    low, high = wilson_interval(k, n, confidence)
    mirror_low, mirror_high = wilson_interval(n - k, n, confidence)

    assert low == pytest.approx(1 - mirror_high, abs=1e-12)
    assert high == pytest.approx(1 - mirror_low, abs=1e-12)


@given(k_and_n(max_n=5_000), CONFIDENCES)
def test_raising_k_never_lowers_either_bound(kn: tuple[int, int], confidence: float) -> None:
    k, n = kn
    if k == n:
        k -= 1
    if k < 0:
        return

    low, high = wilson_interval(k, n, confidence)
    low2, high2 = wilson_interval(k + 1, n, confidence)
    added_low, added_high = wilson_interval(k + 1, n + 1, confidence)

    assert low2 >= low and high2 >= high
    assert added_low >= low and added_high >= high  # one more sample, and it mismatched


@given(k_and_n(max_n=10_000), CONFIDENCES)
def test_wilson_agrees_with_the_textbook_form(kn: tuple[int, int], confidence: float) -> None:
    k, n = kn
    if n == 0:
        return

    low, high = wilson_interval(k, n, confidence)
    ref_low, ref_high = reference_wilson(k, n, z_score(confidence))

    assert low == pytest.approx(max(0.0, ref_low), abs=1e-9)
    assert high == pytest.approx(min(1.0, ref_high), abs=1e-9)


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (0, 10, 0.0, 0.2775),       # rule of three's neighbour: 0 of 10 still allows 28 %
    (5, 10, 0.2366, 0.7634),
    (12, 480, 0.0144, 0.0432),
    (0, 300, 0.0, 0.0126),      # ~3/n: 300 clean samples barely bound the rate near 1 %
])
def test_wilson_published_points(k: int, n: int, low: float, high: float) -> None:
    assert wilson_interval(k, n, 0.95) == pytest.approx((low, high), abs=5e-5)


def test_wilson_no_data_says_nothing() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("k", "n"), [(-1, 5), (6, 5), (0, -1)])
def test_wilson_rejects_impossible_counts(k: int, n: int) -> None:
    with pytest.raises(ValueError):
        wilson_interval(k, n)


def test_z_score_of_95_percent() -> None:
    assert z_score(0.95) == pytest.approx(1.959964, abs=1e-6)
    with pytest.raises(ValueError):
        z_score(1.0)


def test_quantile_interpolates_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0]

    assert quantile(values, 0.5) == 2.5
    assert quantile(values, 0.0) == 1.0 and quantile(values, 1.0) == 4.0
    assert quantiles(values, [0.25, 0.75]) == [1.75, 3.25]
    assert quantile([], 0.5) is None


@given(st.lists(st.floats(min_value=-1e9, max_value=1e9), min_size=1, max_size=200),
       st.floats(min_value=0, max_value=1))
def test_quantile_lies_within_the_values(values: list[float], q: float) -> None:
    result = quantile(values, q)

    assert result is not None and min(values) - 1e-6 <= result <= max(values) + 1e-6


def test_recent_values_keeps_the_latest() -> None:
    recent = RecentValues(capacity=3)
    for value in [100.0, 1.0, 2.0, 3.0]:
        recent.add(value)

    assert len(recent) == 3 and recent.p50 == 2.0 and recent.quantile(1.0) == 3.0
