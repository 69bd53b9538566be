import itertools
import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import ndtr, ndtri

from kss.errors import KssError
from kss.study.stats import (attenuation_ceiling, averaged_reliability, bca_interval, collapse_duplicates, partial_kendall,
                       partial_tau, random_regret, rank_correlations, regret_curve, reliability, tau_difference)


def test_bca_interval_matches_the_textbook_formula_on_the_exact_bootstrap():
    """BCa by hand (Efron & Tibshirani ch. 14) on all 6^6 equally likely resamples of a skewed sample:
    bias correction z0 from the share of resamples below the estimate, acceleration from the jackknife."""
    v = np.array([0.1, 0.2, 0.3, 0.5, 1.0, 4.0])
    every = v[np.array(list(itertools.product(range(6), repeat=6)))].mean(axis=1)
    theta = v.mean()
    z0 = ndtri(((every < theta).sum() + (every <= theta).sum()) / (2 * len(every)))  # ties at theta count half
    jack = np.array([np.delete(v, i).mean() for i in range(6)])
    d = jack.mean() - jack
    a = (d ** 3).sum() / (6 * (d ** 2).sum() ** 1.5)
    z = ndtri(np.array([0.025, 0.975]))
    by_hand = np.quantile(every, ndtr(z0 + (z0 + z) / (1 - a * (z0 + z))))  # [0.317, 2.867]
    percentile = np.quantile(every, [0.025, 0.975])  # [0.233, 2.25]: what a percentile interval would give
    ours = bca_interval(np.mean, (v,), resamples=20_000, seed=0)
    assert ours == pytest.approx(by_hand, abs=0.05)
    assert abs(ours[0] - percentile[0]) > 0.05 and abs(ours[1] - percentile[1]) > 0.3


def test_bca_interval_without_spread_is_the_value():
    assert bca_interval(np.mean, ([2.0, 2.0, 2.0, 2.0],), resamples=100) == [2.0, 2.0]


def test_rank_correlations_carry_scipys_p_values_and_bca_intervals():
    rng = np.random.default_rng(0)
    x = rng.random(25)
    y = x + 0.5 * rng.random(25)
    out = rank_correlations(x, y, resamples=500)
    assert out["n"] == 25
    assert out["tau"] == pytest.approx(stats.kendalltau(x, y).statistic)
    assert out["tau_p"] == pytest.approx(stats.kendalltau(x, y).pvalue)
    assert out["rho_p"] == pytest.approx(stats.spearmanr(x, y).pvalue)
    for name in ("tau", "rho"):
        low, high = out[f"{name}_ci"]
        assert -1 <= low < out[name] < high <= 1
    flat = rank_correlations([1, 1, 1, 1], [1, 2, 3, 4], resamples=50)  # a constant proxy ranks nothing
    assert flat["tau"] is None and flat["tau_p"] is None and flat["tau_ci"] == [None, None]
    with pytest.raises(KssError, match="at least 3 architectures"):
        rank_correlations([1, 2], [1, 2])
    with pytest.raises(KssError, match="differ in length"):
        rank_correlations([1, 2, 3], [1, 2])


def test_partial_tau_by_hand_changes_sign():
    z = [1, 2, 3, 4, 5]          # size
    x = [1, 2, 3, 5, 4]          # the proxy: 9 of 10 pairs ordered as z, tau_xz = (9 - 1) / 10 = 0.8
    y = [1, 3, 5, 2, 4]          # accuracy: 7 concordant with z, tau_yz = (7 - 3) / 10 = 0.4
    # x vs y: discordant pairs (2,4), (3,4), (3,5), (4,5) -> tau_xy = (6 - 4) / 10 = 0.2
    expected = (0.2 - 0.8 * 0.4) / math.sqrt((1 - 0.8 ** 2) * (1 - 0.4 ** 2))  # = -0.218
    assert partial_tau(x, y, z) == pytest.approx(expected)
    assert stats.kendalltau(x, y).statistic > 0 > partial_tau(x, y, z)  # positive tau, negative given size
    out = partial_kendall(x, y, z, resamples=300)
    assert out["tau"] == pytest.approx(expected)
    assert (out["tau_xy"], out["tau_xz"], out["tau_yz"]) == pytest.approx((0.2, 0.8, 0.4))
    assert out["tau_ci"][0] <= out["tau_ci"][1]
    assert math.isnan(partial_tau(x, y, x))  # z orders x perfectly: nothing left to condition on


def test_partial_tau_against_sizes():
    rng = np.random.default_rng(1)
    size = rng.normal(size=300)
    accuracy = -size + 0.5 * rng.normal(size=300)
    unrelated = rng.normal(size=300)
    proxy = accuracy + 0.5 * rng.normal(size=300)
    # a covariate unrelated to both leaves tau as it was
    assert partial_tau(proxy, accuracy, unrelated) == pytest.approx(stats.kendalltau(proxy, accuracy).statistic, abs=0.02)
    # a proxy that is size plus noise: its strong negative tau shrinks by far given size
    sized = size + 0.3 * rng.normal(size=300)
    raw = stats.kendalltau(sized, accuracy).statistic
    out = partial_kendall(sized, accuracy, size, resamples=200)
    assert raw < -0.4 and abs(out["tau"]) < abs(raw) / 2
    assert out["tau_ci"][0] < out["tau"] < out["tau_ci"][1]


def test_tau_difference_is_paired():
    rng = np.random.default_rng(2)
    acc = rng.normal(size=40)
    params = rng.normal(size=40)
    same = tau_difference(params, acc, params, acc, resamples=100)
    assert same["diff"] == 0 and same["diff_ci"] == [0.0, 0.0]  # paired: every resample gives 0
    better = tau_difference(acc + 0.3 * rng.normal(size=40), acc, params, acc, resamples=500)
    assert better["diff"] == pytest.approx(better["tau"] - better["tau_other"])
    assert better["diff_ci"][0] > 0  # a proxy close to accuracy beats an unrelated params column


def brute_force_regret(x, y, k):
    regrets = []
    for draw in itertools.combinations(range(len(x)), k):
        top = max(x[i] for i in draw)
        regrets.append(max(y) - np.mean([y[i] for i in draw if x[i] == top]))
    return np.mean(regrets)


def test_regret_curve_is_exact_with_ties():
    x = [3, 1, 2, 2, 5, 2]
    y = [0.5, 0.1, 0.4, 0.2, 0.9, 0.6]
    curve = regret_curve(x, y)
    assert curve == pytest.approx([brute_force_regret(x, y, k) for k in range(1, 7)])


def test_regret_of_a_perfect_proxy_reaches_zero_below_random():
    rng = np.random.default_rng(3)
    acc = rng.random(20)
    perfect, random = regret_curve(acc, acc), random_regret(acc)
    assert perfect[-1] == 0 and perfect[0] == pytest.approx(random[0])  # k = 1: any proxy is a random pick
    assert np.all(np.diff(perfect) <= 1e-12) and np.all(perfect[1:] < random[1:])
    assert random == pytest.approx(np.full(20, acc.max() - acc.mean()))
    worst = regret_curve(-acc, acc)  # an inverted proxy ends at the worst architecture
    assert worst[-1] == pytest.approx(acc.max() - acc.min()) and np.all(worst[1:] > random[1:])


def test_duplicates_are_collapsed():
    rows = [{"g": "a", "acc": 0.5, "long": None, "name": "first"}, {"g": "b", "acc": 0.7, "long": 0.8},
            {"g": "a", "acc": 0.7, "long": 0.9, "name": "second"}]
    out = collapse_duplicates(rows, lambda r: r["g"], ["acc", "long"])
    assert [r["g"] for r in out] == ["a", "b"]
    assert out[0]["acc"] == pytest.approx(0.6) and out[0]["long"] == 0.9 and out[0]["copies"] == 2
    assert out[0]["name"] == "first" and out[1]["copies"] == 1


def synthetic_runs(n, seeds, noise_sd, seed=0):
    rng = np.random.default_rng(seed)
    true = rng.normal(size=n)
    return true, true[:, None] + noise_sd * rng.normal(size=(n, seeds))


@pytest.mark.parametrize("noise_sd, expected", [(1.0, 0.5), (math.sqrt(3), 0.25), (0.0, 1.0)])
def test_reliability_on_known_noise(noise_sd, expected):
    _, runs = synthetic_runs(600, 2, noise_sd)
    out = reliability(runs, resamples=200)
    assert out["reliability"] == pytest.approx(expected, abs=0.08)
    assert out["n"] == 600 and out["replicated"] == 600
    if noise_sd:
        low, high = out["reliability_ci"]
        assert low < expected < high and high - low < 0.3


def test_reliability_with_few_replicated_architectures():
    _, runs = synthetic_runs(200, 3, 1.0, seed=4)
    mixed = [list(r) for r in runs[:20]] + [[r[0]] for r in runs[20:]]  # 20 with 3 seeds, 180 with one
    out = reliability(mixed, resamples=300)
    assert out["replicated"] == 20 and out["seeds"] == [3] * 20
    assert out["reliability"] == pytest.approx(0.5, abs=0.15)
    assert out["reliability_ci"][0] < out["reliability"] < out["reliability_ci"][1]
    one = reliability([[0.1, 0.2], [0.3], [0.5], [0.4]], resamples=50)  # one replicated: no interval
    assert one["reliability_ci"] == [None, None]
    with pytest.raises(KssError, match="one with >= 2 seeds"):
        reliability([[0.1], [0.2], [0.3]])


def test_the_ceiling_is_what_a_perfect_proxy_shows():
    true, runs = synthetic_runs(3000, 1, 1.0, seed=5)  # reliability 0.5
    observed = stats.kendalltau(true, runs[:, 0]).statistic  # a perfect proxy against single runs
    ceiling = attenuation_ceiling(0.5)
    assert ceiling["tau"] == pytest.approx(0.5) and ceiling["r"] == pytest.approx(math.sqrt(0.5))
    assert observed == pytest.approx(ceiling["tau"], abs=0.03)
    assert stats.spearmanr(true, runs[:, 0]).statistic == pytest.approx(ceiling["rho"], abs=0.03)
    assert attenuation_ceiling(1.0)["tau"] == pytest.approx(1) and attenuation_ceiling(-0.2)["tau"] == 0
    assert attenuation_ceiling(None)["tau"] is None
    assert averaged_reliability(0.5, [1, 1]) == 0.5 and averaged_reliability(0.5, [2, 2]) == pytest.approx(0.75)
