from __future__ import annotations

import numpy as np

from rtpick.perf import stats


def test_summary_matches_numpy_and_is_in_ms() -> None:
    samples = np.random.default_rng(0).uniform(0.001, 0.002, 1000)
    out = stats.summarize_ms(samples)
    assert out["p50"] == np.percentile(samples * 1e3, 50)
    assert out["p99"] == np.percentile(samples * 1e3, 99)
    assert out["max"] == samples.max() * 1e3


def test_bootstrap_is_seeded_and_covers_the_true_median() -> None:
    rng = np.random.default_rng(1)
    samples = rng.lognormal(np.log(0.005), 0.2, 2000)  # true median 5 ms
    a = stats.bootstrap_ci_ms(samples, 50)
    b = stats.bootstrap_ci_ms(samples, 50)
    assert a == b
    assert a[0] < 5.0 < a[1]
    assert a[1] - a[0] < 0.3


def test_stability_needs_two_matching_windows() -> None:
    assert not stats.is_stable([1.0] * 15)
    assert stats.is_stable([5.0] * 10 + [1.0] * 10 + [1.02] * 10)
    assert not stats.is_stable([1.0] * 10 + [2.0] * 10)


def test_interval_overlap() -> None:
    assert stats.intervals_overlap([1, 2], [1.5, 3])
    assert not stats.intervals_overlap([1, 2], [2.1, 3])
