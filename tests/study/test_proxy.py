import csv
import itertools
import json

import numpy as np
import pytest

from kss.errors import KssError
from kss.study.proxy import coarse_to_fine, pick_spread
from kss.tasks.proxy import run_proxy
from kss.study.stats import paired_difference, rank_correlations

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


def genotypes():
    """Distinct forward-cell genotypes, one per op combination of the 6 edges."""
    edges = ("0->1", "0->2", "1->2", "0->3", "1->3", "2->3")
    for ops in itertools.product(("skip", "conv3", "conv5", "avgpool3", "zero"), repeat=len(edges)):
        yield {"cell_type": "forward", "edges": dict(zip(edges, ops))}


def records(scores, genotype_of=None):
    """Search records; genotype_of[i] = j gives candidate i candidate j's genotype (a repeated draw)."""
    cells = list(itertools.islice(genotypes(), len(scores)))
    return [{"index": i, "status": "scored" if s is not None else "over_budget", "score": s,
             "genotype": cells[(genotype_of or {}).get(i, i)]} for i, s in enumerate(scores)]


def test_picks_are_distinct_and_cover_the_score_range():
    rng = np.random.default_rng(1)
    scores = list(rng.normal(size=50)) + [None] * 5
    picks = pick_spread(records(scores), 7)
    assert len({p["index"] for p in picks}) == 7
    finite = [s for s in scores if s is not None]
    assert picks[0]["score"] == min(finite) and picks[-1]["score"] == max(finite)  # lowest and best
    assert [p["score"] for p in picks] == sorted(p["score"] for p in picks)
    assert len(pick_spread(records([1.0, 2.0, 3.0]), 3)) == 3


def test_a_genotype_drawn_twice_is_picked_once_with_its_first_score():
    """Candidates 3 and 5 repeat candidate 1's genotype, 5 with the best score of all: the picks are distinct
    architectures, and the repeat's luckier initialisation does not make it the best-scored pick."""
    scores = [0.1, 0.5, 0.2, 0.6, 0.3, 9.0, 0.4]
    picks = pick_spread(records(scores, {3: 1, 5: 1}), 5)
    assert [p["index"] for p in picks] == [0, 2, 4, 6, 1]  # score order: 0.1, 0.2, 0.3, 0.4, 0.5
    with pytest.raises(KssError, match=r"only 5 distinct architectures \(7 candidates\)"):
        pick_spread(records(scores, {3: 1, 5: 1}), 6)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 8, 64])
def test_the_training_order_spreads_every_prefix(n):
    """Every position once, the ends first, and each prefix of k leaves no gap wider than twice the even
    spacing (n - 1) / (k - 1): a study stopped after k trainings has a spread, not its lowest scores."""
    order = coarse_to_fine(n)
    assert sorted(order) == list(range(n)) and order[:2] == ([0, n - 1] if n > 1 else list(range(n)))
    for k in range(2, n + 1):
        taken = sorted(order[:k])
        assert max(b - a for a, b in itertools.pairwise(taken)) <= 2 * (n - 1) / (k - 1)
    if n == 5:
        assert order == [0, 4, 2, 1, 3]


def test_bad_picks():
    with pytest.raises(KssError, match="scored no candidate"):
        pick_spread(records([None, None]), 2)
    with pytest.raises(KssError, match=r"scored only 2 distinct architectures \(2 candidates\)"):
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
    import kss.search.candidate

    monkeypatch.setattr(kss.search.candidate, "score_network", lambda *args, **kwargs: float("-inf"))  # all singular
    cfg = compose_cfg(*STUDY, config_name="proxy")
    with pytest.raises(KssError, match="no candidate could be scored") as info:
        run_proxy(cfg, tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_tiny_study_end_to_end_and_resumes(compose_cfg, tmp_path, monkeypatch):
    cfg = compose_cfg(*STUDY, config_name="proxy")
    result = run_proxy(cfg, tmp_path)
    for name in ("proxy.csv", "proxy.json", "proxy.md", "proxy.png", "proxy_ranks.png", "proxy_regret.png", "picks.json"):
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
    # the interim report, last written after the seed trainings (the long ones do not rewrite it)
    so_far = json.loads((tmp_path / "proxy_so_far.json").read_text())
    assert so_far["n"] == 4 and so_far["trainings_done"] == 4 + 2 and so_far["trainings_planned"] == 4 + 2 + 3
    interim = (tmp_path / "proxy_so_far.md").read_text()
    assert "Interim: 6 of 9 trainings finished" in interim and "within each kernel set) is 0" in interim
    (tmp_path / "proxy_so_far.json").unlink()
    # test=false: no training of the study ever looked at the test split
    for metrics in tmp_path.glob("train/*/metrics.json"):
        assert json.loads(metrics.read_text())["test_acc"] is None

    # a rerun trains nothing and scores nothing
    import kss.tasks.proxy_study
    import kss.tasks.train

    def fail(*args, **kwargs):
        raise AssertionError("a finished study recomputed something")

    monkeypatch.setattr(kss.tasks.train.L.Trainer, "fit", fail)
    monkeypatch.setattr(kss.tasks.proxy_study, "evaluate_candidate", fail)
    again = run_proxy(cfg, tmp_path)
    assert again["correlations"] == result["correlations"]
    assert not (tmp_path / "proxy_so_far.json").exists()  # nothing trained: no interim report rewritten


def cell(*ops):
    edges = ["0->1", "0->2", "1->2", "0->3", "1->3", "2->3"]
    return {"cell_type": "forward", "edges": dict(zip(edges, ops))}


def synthetic_study(n=12, seed=3):
    """Picks as run_proxy makes them; the first cell is drawn again in set3, two picks have 3 seeds."""
    rng = np.random.default_rng(seed)
    ops = ["zero", "skip", "conv3", "avgpool3"]
    every = list(itertools.product(ops, repeat=6))
    genotypes = [cell(*every[i]) for i in rng.choice(len(every), n, replace=False)]  # distinct cells
    genotypes[0] = cell("avgpool3", "zero", "skip", "avgpool3", "avgpool3", "avgpool3")  # conv-free
    rows = [{"kernel_set": "set1" if i < n // 2 else "set3", "kernels": [1, 3] if i < n // 2 else [3, 5], "index": i,
             "genotype": g, "hamming": float(rng.normal()), "naswot": float(rng.normal()),
             "params": int(rng.integers(1000, 2000)), "random": float(rng.random()),
             "val_acc": float(rng.random()), "val_acc_long": float(rng.random()) if i % 2 else None}
            for i, g in enumerate(genotypes)]
    rows.append(dict(rows[0], kernel_set="set3", kernels=[3, 5], val_acc_long=None))  # same cell, same seed: one run
    seed_noise = {label: {"kernel_set": rows[i]["kernel_set"], "index": rows[i]["index"], "seeds": [0, 1, 2],
                          "val_acc": [rows[i]["val_acc"], float(rng.random()), float(rng.random())]}
                  for label, i in (("top_scored", 1), ("median_scored", n - 1))}
    return rows, seed_noise


def test_architectures_collapse_duplicates_and_merge_seeds():
    from kss.study.proxy import architectures, conv_edges

    rows, noise = synthetic_study()
    archs = architectures(rows, noise, base_seed=0)
    assert len(archs) == len(rows) - 1  # the cell drawn in set1 and set3 is one architecture
    twice = archs[0]
    assert twice["copies"] == 2 and twice["kernel_sets"] == ["set1", "set3"]
    assert twice["runs"] == [rows[0]["val_acc"]]  # the same seed twice is one run, not two seeds
    assert twice["conv_edges"] == 0 and conv_edges(rows[1]["genotype"]) == list(rows[1]["genotype"]["edges"].values()).count("conv3")
    seeded = archs[1]
    assert seeded["runs"] == noise["top_scored"]["val_acc"] and seeded["val_acc_single"] == rows[1]["val_acc"]
    assert seeded["val_acc"] == pytest.approx(np.mean(noise["top_scored"]["val_acc"]))
    old = {k: {kk: vv for kk, vv in v.items() if kk != "seeds"} for k, v in noise.items()}  # proxy.json before seeds
    assert architectures(rows, old, base_seed=0)[1]["runs"] == seeded["runs"]


def test_study_statistics_and_report(tmp_path):
    from kss.study.proxy import study_statistics, summary_markdown, write_outputs

    rows, noise = synthetic_study()
    stats = study_statistics(rows, noise, base_seed=0, long_epochs=3, resamples=50, seed=0)
    assert stats["n"] == 12 and stats["n_picks"] == 13 and stats["duplicates"][0]["kernel_sets"] == ["set1", "set3"]
    pooled = stats["correlations"]["pooled"]
    assert pooled["hamming"]["n"] == 12 and {"tau_p", "rho_p", "tau_ci"} <= set(pooled["hamming"])
    assert set(pooled["hamming"]) >= {"given_params", "given_conv_edges", "vs_params"}
    assert "given_params" not in pooled["params"] and "vs_params" not in pooled["params"]
    assert stats["correlations"]["set3"]["hamming"]["n"] == 7  # the set1 + set3 cell counts in both sets
    rel = stats["reliability"]
    assert rel["replicated"] == 2 and rel["seeds"] == [3, 3] and rel["ceiling"]["tau"] is not None
    assert set(rel["groups"]) == {"pooled", "set1", "set3"}
    curves = stats["regret_curves"]
    assert curves["k"] == list(range(1, 13)) and len(curves["hamming"]) == 12 and curves["random_selection"][0] == pytest.approx(curves["hamming"][0])
    assert stats["budget"]["n"] == 6 and stats["budget"]["change"]["n"] == 6

    result = {"settings": {"epochs": 1, "train_fraction": 0.5, "bootstrap": 50}, **stats, "seed_noise": noise}
    text = summary_markdown(result)
    assert "n = 12 distinct architectures (13 picks; 1 duplicate" in text
    assert "Reliability of one training run" in text and "partial tau given params" in text
    assert "| pooled | hamming | 12 |" in text and "Best-of-k regret" in text and "long - short" in text
    write_outputs(tmp_path, rows, result)
    assert {"proxy.csv", "proxy.json", "proxy.md", "proxy.png", "proxy_ranks.png", "proxy_regret.png"} <= {p.name for p in tmp_path.iterdir()}


def test_the_interim_report_is_of_the_trained_picks_and_says_what_is_missing(tmp_path):
    from kss.study.proxy import write_so_far

    rows, noise = synthetic_study()
    for i in (2, 3, 4, 8):  # not trained yet: the longest untrained run in score order is 3
        rows[i]["val_acc"] = None
    settings = {"epochs": 1, "train_fraction": 0.5, "long_epochs": 3, "bootstrap": 10_000}
    write_so_far(tmp_path, rows, {}, settings, total=20, resamples=50, seed=0)
    result = json.loads((tmp_path / "proxy_so_far.json").read_text())
    assert result["n"] == 8 and result["trainings_done"] == 9 and result["reliability"] is None  # 9 picks, 8 cells
    assert result["settings"]["bootstrap"] == 50
    text = (tmp_path / "proxy_so_far.md").read_text()
    assert text.startswith("# Interim: 9 of 20 trainings finished") and "9 of 13 picks with an accuracy so far" in text
    assert "untrained or failed, in pick order (score order within each kernel set) is 3" in text and "50 resamples" in text
    assert (tmp_path / "proxy_so_far_regret.png").read_bytes().startswith(b"\x89PNG")
    (tmp_path / "proxy_so_far.json").unlink()
    write_so_far(tmp_path, rows[:4], {}, settings, total=20, resamples=50, seed=0)  # 2 trained: too few for a tau
    assert not (tmp_path / "proxy_so_far.json").exists()


def test_reanalyse_a_finished_study(tmp_path):
    import subprocess
    import sys

    from kss.study.proxy import reanalyse, study_statistics, write_outputs

    rows, noise = synthetic_study()
    stats = study_statistics(rows, noise, base_seed=0, long_epochs=3, resamples=50, seed=0)
    settings = {"epochs": 1, "train_fraction": 0.5, "long_epochs": 3, "seed": 0, "bootstrap": 50}
    write_outputs(tmp_path, rows, {"settings": settings, **stats, "seed_noise": noise})
    again = reanalyse(tmp_path, resamples=50, title="a re-analysis")
    assert again["correlations"] == stats["correlations"] and again["reliability"] == stats["reliability"]
    assert (tmp_path / "stats_rerun.md").read_text().startswith("# a re-analysis\n")
    assert (tmp_path / "stats_rerun_regret.png").exists() and (tmp_path / "stats_rerun.json").exists()
    missing = subprocess.run([sys.executable, "-m", "kss.study.proxy", str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def test_the_wandb_run(compose_cfg, tmp_path):
    from kss.study.proxy import study_statistics, write_outputs
    from kss.tasks.proxy_study import log_to_wandb

    rows, noise = synthetic_study()
    result = {"settings": {"epochs": 1, "train_fraction": 1.0}, "seed_noise": noise,
              **study_statistics(rows, noise, base_seed=0, long_epochs=3, resamples=50, seed=0)}
    write_outputs(tmp_path, rows, result)
    log_to_wandb(compose_cfg("wandb.mode=offline", "name=unit", config_name="proxy"), tmp_path, rows, result)
    run = next((tmp_path / "wandb").glob("offline-run-*"))
    assert list(run.glob("*.wandb"))  # the run's data: the table, the plots and the summary


def test_saved_picks_with_repeated_genotypes_are_kept_with_a_warning(tmp_path, caplog):
    """A picks.json from the earlier rule (repeated draws picked twice) still resumes its study, and says
    that n is smaller than the picks."""
    from omegaconf import OmegaConf

    from kss.tasks.proxy_study import collect_picks

    cfg = OmegaConf.create({"proxy": {"per_set": 3}, "iters": 8, "seed": 0})
    cells = list(itertools.islice(genotypes(), 2))
    picks = [{"kernel_set": "set3", "index": i, "genotype": cells[g]} for i, g in enumerate((0, 1, 0))]
    settings = {"kernel_sets": [[3, 5]], "per_set": 3, "iters": 8, "seed": 0}
    (tmp_path / "picks.json").write_text(json.dumps({"settings": settings, "picks": picks}))
    with caplog.at_level("WARNING"):
        assert collect_picks(cfg, tmp_path, [[3, 5]], "cpu") == picks
    assert "repeats 1 genotype(s) within a kernel set" in caplog.text
    caplog.clear()
    picks[2]["kernel_set"] = "set1"  # the same cell in two kernel sets is not a repeat of the rule
    (tmp_path / "picks.json").write_text(json.dumps({"settings": settings, "picks": picks}))
    collect_picks(cfg, tmp_path, [[3, 5]], "cpu")
    assert "repeats" not in caplog.text
