"""Rank statistics a reviewer accepts, and paired comparisons over seeds (scipy does the math).

Every interval is a 95% BCa bootstrap interval (`scipy.stats.bootstrap(method="BCa")`, 10,000
resamples by default) that resamples *architectures*: the pairs (proxy, accuracy[, covariate])
travel together. Point estimates and p-values come from scipy's tests (`kendalltau`: exact where
there are no ties and n is small, else the asymptotic normal test; `spearmanr`: the t test).
Partial taus and differences of taus have no exact test here: their interval is the inference.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Iterable, Sequence

import numpy as np
from scipy import stats
from scipy.special import comb

from kss.errors import KssError

RESAMPLES = 10_000
CONFIDENCE = 0.95


def bca_interval(statistic: Callable[..., float], samples: Sequence[Sequence[float]], resamples: int = RESAMPLES,
                 seed: int = 0, paired: bool = True) -> list[float | None]:
    """95% BCa bootstrap interval of `statistic(*samples)` (scipy). paired=True resamples the rows of
    all samples together (architectures); paired=False resamples each sample on its own (strata).
    A statistic that is non-finite on a resample (all ties) counts as 0 there: no ranking. A bootstrap
    distribution without spread gives [value, value]; an interval scipy cannot form gives [None, None]."""
    def finite(*resampled):
        value = float(statistic(*resampled))
        return value if math.isfinite(value) else 0.0

    with warnings.catch_warnings():  # constant resamples warn in kendalltau/spearmanr; BCa warns when degenerate
        warnings.simplefilter("ignore")
        result = stats.bootstrap(tuple(np.asarray(s, dtype=float) for s in samples), finite, paired=paired,
                                 vectorized=False, n_resamples=resamples, method="BCa",
                                 confidence_level=CONFIDENCE, rng=np.random.default_rng(seed))
    if np.ptp(result.bootstrap_distribution) == 0:
        value = float(result.bootstrap_distribution.flat[0])
        return [value, value]
    low, high = result.confidence_interval
    return [float(low), float(high)] if math.isfinite(low) and math.isfinite(high) else [None, None]


def _tau(x, y) -> float:
    return float(stats.kendalltau(x, y).statistic)


def _rho(x, y) -> float:
    return float(stats.spearmanr(x, y).statistic)


def _pairs(*columns: Sequence[float]) -> list[np.ndarray]:
    arrays = [np.asarray(c, dtype=float) for c in columns]
    if len({len(a) for a in arrays}) != 1:
        raise KssError(f"paired columns differ in length ({', '.join(str(len(a)) for a in arrays)})")
    if len(arrays[0]) < 3:
        raise KssError(f"rank correlations need at least 3 architectures (got {len(arrays[0])})")
    return arrays


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def rank_correlations(proxy: Sequence[float], accuracy: Sequence[float], resamples: int = RESAMPLES,
                      seed: int = 0) -> dict:
    """Kendall's tau-b and Spearman's rho between a proxy and accuracy: scipy's point estimate and
    p-value (two-sided), and a 95% BCa interval over architectures."""
    x, y = _pairs(proxy, accuracy)
    out = {"n": len(x)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant column: nan, reported as None
        tests = {"tau": stats.kendalltau(x, y), "rho": stats.spearmanr(x, y)}
    for name, test in tests.items():
        point = _finite(float(test.statistic))
        out[name] = point
        out[f"{name}_p"] = None if point is None else float(test.pvalue)
        out[f"{name}_ci"] = [None, None] if point is None else bca_interval(
            _tau if name == "tau" else _rho, (x, y), resamples, seed)
    return out


def partial_tau(x: Sequence[float], y: Sequence[float], z: Sequence[float]) -> float:
    """Kendall's partial tau of x and y given z:
    tau_xy.z = (tau_xy - tau_xz tau_yz) / sqrt((1 - tau_xz^2)(1 - tau_yz^2))  (Kendall 1942; tau-b
    from scipy). nan where z orders x or y perfectly (|tau_xz| = 1 or |tau_yz| = 1). Read it as "the
    association left after z's", not as a test of conditional independence: for continuous data it
    need not be 0 when x and y are independent given z (Korn 1984)."""
    xy, xz, yz = _tau(x, y), _tau(x, z), _tau(y, z)
    denominator = (1 - xz * xz) * (1 - yz * yz)
    return (xy - xz * yz) / math.sqrt(denominator) if denominator > 1e-12 else math.nan  # tau = 1 up to rounding


def partial_kendall(proxy: Sequence[float], accuracy: Sequence[float], covariate: Sequence[float],
                    resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Partial tau of proxy and accuracy given a covariate (params, conv edges), with the three taus it
    is made of and a 95% BCa interval resampling architectures (proxy, accuracy, covariate together)."""
    x, y, z = _pairs(proxy, accuracy, covariate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        point = _finite(partial_tau(x, y, z))
        parts = {"tau_xy": _finite(_tau(x, y)), "tau_xz": _finite(_tau(x, z)), "tau_yz": _finite(_tau(y, z))}
    ci = [None, None] if point is None else bca_interval(partial_tau, (x, y, z), resamples, seed)
    return {"n": len(x), "tau": point, "tau_ci": ci, **parts}


def tau_difference(x: Sequence[float], y: Sequence[float], x2: Sequence[float], y2: Sequence[float],
                   resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """tau(x, y) - tau(x2, y2) on the same architectures (row i of all four columns is one
    architecture), with a paired 95% BCa interval: R vs params against one accuracy (y2 = y), or one
    proxy against two training budgets (x2 = x)."""
    a, b, c, d = _pairs(x, y, x2, y2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, second = _finite(_tau(a, b)), _finite(_tau(c, d))
    if first is None or second is None:
        return {"n": len(a), "diff": None, "diff_ci": [None, None], "tau": first, "tau_other": second}
    ci = bca_interval(lambda p, q, r, s: _tau(p, q) - _tau(r, s), (a, b, c, d), resamples, seed)
    return {"n": len(a), "diff": first - second, "diff_ci": ci, "tau": first, "tau_other": second}


def regret_curve(proxy: Sequence[float], accuracy: Sequence[float]) -> np.ndarray:
    """Expected best-of-k regret for k = 1..n, exactly: draw k of the n architectures at random
    (without replacement), keep the one the proxy scores highest (ties in the proxy: the mean accuracy
    of the tied ones drawn), regret = best accuracy of all n minus the kept one's accuracy.

    With the distinct proxy values v sorted descending, a the number of architectures scoring above v
    and g the number scoring v: P(the best score drawn is v) = [C(n-a, k) - C(n-a-g, k)] / C(n, k), and
    given that, the kept accuracy averages to the mean accuracy of the g tied architectures."""
    x, y = _pairs(proxy, accuracy)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise KssError("a regret curve needs finite proxy values and accuracies")
    n, values = len(x), np.unique(x)[::-1]
    group_means = np.array([y[x == v].mean() for v in values])
    above = [0, *np.cumsum([int(np.sum(x == v)) for v in values]).tolist()]  # scoring above values[i]: above[i]
    curve = np.empty(n)
    for k in range(1, n + 1):
        total = comb(n, k, exact=True)  # Python integers: exact, and int / int is a correctly rounded float
        weights = [(comb(n - above[i], k, exact=True) - comb(n - above[i + 1], k, exact=True)) / total
                   for i in range(len(values))]
        curve[k - 1] = y.max() - float(np.dot(weights, group_means))
    return curve


def random_regret(accuracy: Sequence[float]) -> np.ndarray:
    """The baseline: keep one of the k drawn architectures at random; its expected regret is
    best - mean accuracy for every k."""
    y = np.asarray(accuracy, dtype=float)
    return np.full(len(y), y.max() - y.mean())


def collapse_duplicates(rows: Iterable[dict], key: Callable[[dict], Hashable], average: Sequence[str]) -> list[dict]:
    """One row per key (e.g. the genotype: the same architecture drawn twice is one architecture):
    the fields in `average` are averaged over the rows' non-None values (None if all are None), the
    other fields come from the first row; `copies` counts the rows merged. Order of first appearance."""
    groups: dict[Hashable, list[dict]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    out = []
    for members in groups.values():
        merged = dict(members[0], copies=len(members))
        for field in average:
            values = [m[field] for m in members if m.get(field) is not None]
            merged[field] = float(np.mean(values)) if values else None
        out.append(merged)
    return out


def _variances(runs: list[np.ndarray]) -> tuple[float, float]:
    """(pooled seed variance of the replicated architectures, variance of the first runs)."""
    replicated = [r for r in runs if len(r) > 1]
    if not replicated:
        return math.nan, math.nan
    seed_var = sum(float(((r - r.mean()) ** 2).sum()) for r in replicated) / sum(len(r) - 1 for r in replicated)
    return seed_var, float(np.var([r[0] for r in runs], ddof=1))


def _reliability(runs: list[np.ndarray]) -> float:
    seed_var, total_var = _variances(runs)
    return 1 - seed_var / total_var if total_var > 0 else math.nan


def reliability(runs: Sequence[Sequence[float]], resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Single-run reliability of accuracy as a measure of an architecture:
    1 - (seed variance within architectures) / (variance of single runs across architectures).

    `runs[a]` holds architecture a's accuracies, one per training seed, runs[a][0] at the seed every
    architecture was trained with. The seed variance is pooled over the architectures with >= 2 seeds
    (sum of squared deviations from each one's mean / sum of (seeds - 1)); the total variance is the
    sample variance of runs[a][0] over all architectures. The 95% BCa interval resamples
    architectures, the replicated and the single-seed ones separately (so every resample keeps its
    seed-variance estimate); it needs >= 2 replicated architectures."""
    arrays = [np.asarray(r, dtype=float) for r in runs if len(r)]
    replicated = [i for i, r in enumerate(arrays) if len(r) > 1]
    single = [i for i, r in enumerate(arrays) if len(r) == 1]
    if len(arrays) < 3 or not replicated:
        raise KssError(f"reliability needs >= 3 architectures, one with >= 2 seeds (got {len(arrays)}, "
                       f"{len(replicated)} with >= 2 seeds)")
    seed_var, total_var = _variances(arrays)
    out = {"reliability": _finite(_reliability(arrays)), "reliability_ci": [None, None], "n": len(arrays),
           "replicated": len(replicated), "seeds": [len(arrays[i]) for i in replicated],
           "seed_var": seed_var, "total_var": total_var}
    if len(replicated) >= 2 and out["reliability"] is not None:
        def statistic(*strata):
            return _reliability([arrays[int(i)] for s in strata for i in s])

        samples = (replicated, single) if len(single) >= 2 else (replicated + single,)
        out["reliability_ci"] = bca_interval(statistic, samples, resamples, seed, paired=False)
    return out


def averaged_reliability(single_run: float, seeds_per_architecture: Sequence[int]) -> float:
    """Reliability of accuracies averaged over each architecture's m seeds: its noise variance is the
    seed variance / m (Spearman-Brown), averaged over architectures:
    1 - (1 - single_run) * mean(1 / m)."""
    return 1 - (1 - single_run) * float(np.mean([1 / m for m in seeds_per_architecture]))


def attenuation_ceiling(reliability: float | None) -> dict:
    """The largest rank correlation any proxy can show against accuracies of this reliability.

    A perfect proxy ranks architectures by their true (seed-averaged) accuracy; Spearman's correction
    for attenuation (1904) gives its Pearson correlation with measured accuracy as sqrt(reliability)
    (observed r <= true r * sqrt(reliability), the proxy itself measured without noise). Under
    bivariate normality Kendall's tau = (2/pi) asin(r) and Spearman's rho = (6/pi) asin(r/2)
    (Greiner's relation; Kendall & Gibbons, Rank Correlation Methods), so the ceiling is
    tau <= (2/pi) asin(sqrt(reliability)), rho <= (6/pi) asin(sqrt(reliability)/2): an approximation
    that assumes normal, equal seed noise for all architectures. Reliability 0.5 -> tau 0.5."""
    if reliability is None or not math.isfinite(reliability):
        return {"r": None, "tau": None, "rho": None}
    r = math.sqrt(min(max(reliability, 0.0), 1.0))
    return {"r": r, "tau": 2 / math.pi * math.asin(r), "rho": 6 / math.pi * math.asin(r / 2)}


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
