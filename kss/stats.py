"""Rank statistics with bootstrap intervals, and paired comparisons over seeds (scipy does the math)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from kss.errors import KssError


def rank_correlations(proxy: Sequence[float], accuracy: Sequence[float], resamples: int = 1000,
                      seed: int = 0) -> dict:
    """Kendall's tau and Spearman's rho between a proxy and accuracy, with 95% percentile bootstrap
    intervals over architectures (pairs resampled together)."""
    x, y = np.asarray(proxy, dtype=float), np.asarray(accuracy, dtype=float)
    if len(x) != len(y):
        raise KssError(f"proxy and accuracy differ in length ({len(x)} vs {len(y)})")
    if len(x) < 3:
        raise KssError(f"rank correlations need at least 3 architectures (got {len(x)})")
    out = {"n": len(x)}
    for name, fn in (("tau", stats.kendalltau), ("rho", stats.spearmanr)):
        point = float(fn(x, y).statistic)
        out[name] = point if math.isfinite(point) else None
        out[f"{name}_ci"] = _bootstrap(fn, x, y, resamples, seed) if math.isfinite(point) else [None, None]
    return out


def _bootstrap(fn, x, y, resamples: int, seed: int) -> list[float | None]:
    def statistic(a, b):
        value = fn(a, b).statistic
        return value if math.isfinite(value) else 0.0  # a resample of ties only carries no ranking

    result = stats.bootstrap((x, y), statistic, paired=True, vectorized=False, n_resamples=resamples,
                             method="percentile", confidence_level=0.95, rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return [float(low), float(high)]


def paired_difference(values: Sequence[float], baseline: Sequence[float]) -> dict:
    """Setting minus baseline, paired by seed: mean and std of the differences, the seed spread of
    each side, a paired t-test, and whether the difference exceeds the seed spread."""
    a, b = np.asarray(values, dtype=float), np.asarray(baseline, dtype=float)
    if len(a) != len(b) or len(a) < 2:
        raise KssError(f"a paired comparison needs the same seeds on both sides, at least 2 (got {len(a)}, {len(b)})")
    diff = a - b
    spread = max(float(np.std(a, ddof=1)), float(np.std(b, ddof=1)))
    p = float(stats.ttest_rel(a, b).pvalue) if np.ptp(diff) > 0 else (0.0 if diff[0] != 0 else 1.0)
    return {"n": len(a), "mean_diff": float(diff.mean()), "std_diff": float(diff.std(ddof=1)),
            "seed_spread": spread, "p_value": p, "beyond_seed_spread": bool(abs(diff.mean()) > spread)}
