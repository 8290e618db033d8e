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


def test_t_quantiles_match_the_table() -> None:
    for dof, value in ((1, 12.706), (4, 2.776), (9, 2.262), (29, 2.045)):
        assert abs(stats.t_quantile(0.975, dof) - value) < 1e-3


def _drifting_run(rng: np.random.Generator) -> np.ndarray:
    """2000 calls whose level drifts every 50 calls (sd 5%) on top of 10% call-to-call noise; true p50 1 ms."""
    drift = np.repeat(rng.normal(0.0, 0.05, 40), 50)
    return 0.001 * np.exp(drift + rng.normal(0.0, 0.1, 2000))


def test_sectioning_covers_drift_where_a_within_run_bootstrap_does_not() -> None:
    """The point of blocks: with drift, the within-run bootstrap interval misses the truth far too often."""
    rng = np.random.default_rng(5)
    runs = [_drifting_run(rng) for _ in range(200)]
    sectioned = [stats.latency_summary(blocks_s=stats.split_blocks(x, 10))["ci"]["p50"] for x in runs]
    coverage = np.mean([lo <= 1.0 <= hi for lo, hi in sectioned])
    boot = [stats.bootstrap_ci_ms(x, 50, resamples=200) for x in runs[:40]]
    boot_coverage = np.mean([lo <= 1.0 <= hi for lo, hi in boot])
    assert coverage >= 0.88, coverage
    assert boot_coverage <= 0.8, boot_coverage


def test_block_summary_records_its_method_and_stays_positive() -> None:
    rng = np.random.default_rng(2)
    blocks = [rng.lognormal(np.log(0.002), 0.5, 50) for _ in range(5)]
    out = stats.latency_summary(blocks_s=blocks)
    ci = out["ci"]
    assert ci["blocks"] == 5 and len(ci["block_p50"]) == 5 and len(ci["block_p99"]) == 5
    assert "sectioning" in ci["method"] and "rough" in ci["method"]  # 50 calls per block: p99 is rough
    assert 0 < ci["p50"][0] <= out["p50"] <= ci["p50"][1]
    assert 0 < ci["p99"][0] <= out["p99"] <= ci["p99"][1]
    assert out["n"] == 250
    single = stats.latency_summary(np.concatenate(blocks))
    assert single["ci"]["blocks"] == 1 and "bootstrap" in single["ci"]["method"]


def test_split_blocks_keeps_order_and_sizes() -> None:
    parts = stats.split_blocks(np.arange(23, dtype=float), 5)
    assert [len(p) for p in parts] == [5, 5, 5, 4, 4]
    assert np.concatenate(parts).tolist() == list(range(23))
