"""Window sizing: the documented arithmetic, and that a default-sized healthy window reaches pass."""

from __future__ import annotations

import pytest

from agent.config.models import FeedAgentConfig
from agent.shadow.model import Sample
from agent.shadow.sizing import HEADROOM, samples_to_pass, window_sizing
from agent.shadow.stats import wilson_interval
from agent.shadow.verdict import judge_window

T0 = 1_767_229_200_000


def exchange(**block):
    block = {"venue": "bybit", "symbols": ["BTCUSDT", "ETHUSDT"], **block}
    return FeedAgentConfig.model_validate({"exchanges": {"x": block}}).exchanges["x"]


@pytest.mark.parametrize("ratio, confidence, n", [(0.01, 0.95, 381), (0.001, 0.95, 3838), (0.05, 0.95, 73),
                                                  (0.01, 0.99, 657)])
def test_samples_to_pass_is_the_smallest_clean_window_the_wilson_rule_passes(ratio, confidence, n):
    assert samples_to_pass(ratio, confidence) == n
    assert wilson_interval(0, n, confidence)[1] <= ratio < wilson_interval(0, n - 1, confidence)[1]


def test_the_defaults_documented_in_the_report_guide():
    sizing = window_sizing(exchange())  # prices every 5 s (the default), BTCUSDT and ETHUSDT
    assert (sizing.min_samples, sizing.window_seconds, sizing.expected_samples) == (381, 1920.0, 768)
    assert sizing.window_derived and sizing.min_samples_derived
    fast = window_sizing(exchange(rest={"prices_interval_seconds": 1}))
    assert (fast.window_seconds, fast.expected_samples) == (420.0, 840)
    one = window_sizing(exchange(symbols=["BTCUSDT"]))
    assert one.window_seconds == 3840.0 and one.expected_samples >= HEADROOM * 381


def test_configured_values_win_and_are_reported_as_such():
    sizing = window_sizing(exchange(shadow={"window_seconds": 300, "min_samples": 50}))
    assert (sizing.window_seconds, sizing.min_samples, sizing.expected_samples) == (300.0, 50, 120)
    assert not sizing.window_derived and sizing.samples_to_pass == 381  # such a window can never pass


@pytest.mark.parametrize("stray", [0, 1, 2])
def test_a_default_sized_window_with_a_few_stray_mismatches_passes(stray):
    sizing = window_sizing(exchange())
    samples = [Sample(exchange="x", kind="price", symbol="BTCUSDT", ts_ms=T0 + i,
                      result="mismatch" if i < stray else "match",
                      mismatch_kind="price_divergence" if i < stray else None)
               for i in range(sizing.expected_samples)]

    verdict = judge_window(samples, exchange="x", window_start_ms=T0, window_end_ms=T0 + 10**6,
                           min_samples=sizing.min_samples, max_mismatch_ratio=0.01)

    assert verdict.verdict == "pass", verdict.reason


def test_a_window_closes_early_only_when_it_can_only_fail():
    from agent.shadow.verdict import fails_already

    # defaults: 768 expected samples; curtailment bound 1,152: 19 mismatches fail it whatever comes after
    kw = dict(expected=768, max_mismatch_ratio=0.01)
    assert not fails_already(18, 18, decisive=False, **kw)
    assert fails_already(19, 19, decisive=False, **kw)
    assert not fails_already(2, 500, decisive=False, **kw)
    assert fails_already(0, 1, decisive=True, **kw)  # a missed close, a ghost, a silent WebSocket
    # the closed-early window really fails: the same counts judged over the whole expected window
    samples = [Sample(exchange="x", kind="price", symbol="BTCUSDT", ts_ms=T0 + i,
                      result="mismatch" if i < 19 else "match", mismatch_kind="price_divergence" if i < 19 else None)
               for i in range(1152)]
    verdict = judge_window(samples, exchange="x", window_start_ms=T0, window_end_ms=T0 + 10**6, min_samples=381,
                           max_mismatch_ratio=0.01)
    assert verdict.verdict == "fail"
