import csv
import json

import numpy as np
import pytest

from kss.errors import KssError
from kss.proxy import pick_spread, run_proxy
from kss.stats import paired_difference, rank_correlations

STUDY = ["trainer.max_epochs=1", "wandb.mode=disabled", "optimizer=adam", "optimizer.lr=1e-2", "iters=8",
         "dataset.train_size=64", "dataset.val_size=32", "dataset.test_size=16", "kernel_sets=[set1,set3]",
         "proxy.per_set=2", "proxy.seeds=2", "proxy.long_archs=3", "proxy.long_factor=2", "proxy.bootstrap=50",
         "proxy.train_fraction=0.5"]


def test_rank_statistics_on_known_answers():
    order = [0.1, 0.4, 0.5, 0.9, 1.3, 2.0]
    up = rank_correlations(order, [1, 2, 3, 4, 5, 6], resamples=200)
    assert up["tau"] == pytest.approx(1) and up["rho"] == pytest.approx(1)
    down = rank_correlations(order, [6, 5, 4, 3, 2, 1], resamples=200)
    assert down["tau"] == pytest.approx(-1) and down["rho"] == pytest.approx(-1)
    rng = np.random.default_rng(0)
    x, y = rng.random(40), rng.random(40)
    noisy = rank_correlations(x, x + 0.5 * y, resamples=300)
    for name in ("tau", "rho"):
        low, high = noisy[f"{name}_ci"]
        assert -1 <= low <= noisy[name] <= high <= 1
    with pytest.raises(KssError, match="at least 3 architectures"):
        rank_correlations([1, 2], [1, 2])


def test_paired_difference_against_the_seed_spread():
    clear = paired_difference([0.90, 0.91, 0.92], [0.80, 0.81, 0.82])
    assert clear["mean_diff"] == pytest.approx(0.10) and clear["beyond_seed_spread"]
    noise = paired_difference([0.80, 0.90, 0.85], [0.85, 0.82, 0.88])
    assert not noise["beyond_seed_spread"]
    with pytest.raises(KssError, match="same seeds"):
        paired_difference([0.9], [0.8])


def records(scores):
    return [{"index": i, "status": "scored" if s is not None else "over_budget", "score": s}
            for i, s in enumerate(scores)]


def test_picks_are_distinct_and_cover_the_score_range():
    rng = np.random.default_rng(1)
    scores = list(rng.normal(size=50)) + [None] * 5
    picks = pick_spread(records(scores), 7)
    assert len({p["index"] for p in picks}) == 7
    finite = [s for s in scores if s is not None]
    assert picks[0]["score"] == min(finite) and picks[-1]["score"] == max(finite)  # lowest and best
    assert [p["score"] for p in picks] == sorted(p["score"] for p in picks)
    assert len(pick_spread(records([1.0, 2.0, 3.0]), 3)) == 3


def test_bad_picks():
    with pytest.raises(KssError, match="scored no candidate"):
        pick_spread(records([None, None]), 2)
    with pytest.raises(KssError, match="scored only 2 candidates"):
        pick_spread(records([1.0, 2.0]), 3)


@pytest.mark.parametrize("overrides, message", [
    (["kernel_sets=[set1]", "proxy.per_set=2"], "at least 3 architectures"),
    (["proxy.epochs=0"], "training budget and must be a positive integer"),
    (["proxy.train_fraction=0"], "train_fraction must be in"),
])
def test_bad_study_input_is_one_line(compose_cfg, tmp_path, overrides, message):
    cfg = compose_cfg(*STUDY, *overrides, config_name="proxy")
    with pytest.raises(KssError, match=message) as info:
        run_proxy(cfg, tmp_path)
    assert "\n" not in str(info.value)


def test_a_search_with_no_scored_candidate_is_one_line(compose_cfg, tmp_path, monkeypatch):
    import kss.search

    monkeypatch.setattr(kss.search, "score_network", lambda *args, **kwargs: float("-inf"))  # all singular
    cfg = compose_cfg(*STUDY, config_name="proxy")
    with pytest.raises(KssError, match="no candidate could be scored") as info:
        run_proxy(cfg, tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_tiny_study_end_to_end_and_resumes(compose_cfg, tmp_path, monkeypatch):
    cfg = compose_cfg(*STUDY, config_name="proxy")
    result = run_proxy(cfg, tmp_path)
    for name in ("proxy.csv", "proxy.json", "proxy.md", "proxy.png", "proxy_ranks.png", "picks.json"):
        assert (tmp_path / name).exists(), name
    with open(tmp_path / "proxy.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["kernel_set"] for r in rows} == {"set1", "set3"}
    assert all(0 <= float(r["val_acc"]) <= 1 for r in rows)
    pooled = result["correlations"]["pooled"]
    assert set(pooled) == {"hamming", "naswot", "params", "random"}
    for stat in pooled.values():
        assert stat["n"] == 4
        assert stat["tau"] is None or -1 <= stat["tau"] <= 1
        assert stat["rho"] is None or -1 <= stat["rho"] <= 1
    assert len(result["seed_noise"]["top_scored"]["val_acc"]) == 2
    assert result["budget"]["n"] == 3 and result["budget"]["epochs"] == 2
    assert json.loads((tmp_path / "proxy.json").read_text())["n"] == 4
    # test=false: no training of the study ever looked at the test split
    for metrics in tmp_path.glob("train/*/metrics.json"):
        assert json.loads(metrics.read_text())["test_acc"] is None

    # a rerun trains nothing and scores nothing
    import kss.proxy
    import kss.training

    def fail(*args, **kwargs):
        raise AssertionError("a finished study recomputed something")

    monkeypatch.setattr(kss.training.L.Trainer, "fit", fail)
    monkeypatch.setattr(kss.proxy, "evaluate_candidate", fail)
    again = run_proxy(cfg, tmp_path)
    assert again["correlations"] == result["correlations"]


def test_study_outputs_and_the_wandb_run(compose_cfg, tmp_path):
    from kss.proxy import correlations, log_to_wandb, regret, write_outputs

    rng = np.random.default_rng(3)
    rows = [{"kernel_set": ks, "kernels": k, "index": i, "genotype": {}, "hamming": float(rng.normal()),
             "naswot": float(rng.normal()), "params": int(rng.integers(1000, 2000)), "random": float(rng.random()),
             "val_acc": float(rng.random()), "val_acc_long": None}
            for ks, k in (("set1", [1, 3]), ("set3", [3, 5])) for i in range(4)]
    result = {"settings": {"epochs": 1, "train_fraction": 1.0}, "n": len(rows),
              "correlations": correlations(rows, "val_acc", 50, 0), "regret": regret(rows),
              "seed_noise": {}, "budget": {"n": 0, "short": {}, "long": {}}}
    write_outputs(tmp_path, rows, result)
    assert {"proxy.csv", "proxy.json", "proxy.md", "proxy.png", "proxy_ranks.png"} <= {p.name for p in tmp_path.iterdir()}
    log_to_wandb(compose_cfg("wandb.mode=offline", "name=unit", config_name="proxy"), tmp_path, rows, result)
    run = next((tmp_path / "wandb").glob("offline-run-*"))
    assert list(run.glob("*.wandb"))  # the run's data: the table, both plots and the summary
