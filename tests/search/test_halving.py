"""Multi-fidelity search (search.strategy=halving, kss.tasks.halving): successive halving over trained
candidates, by whole rungs (mode=sync) or Optuna's SuccessiveHalvingPruner as it is (mode=async); and the budget calibration of the proxy study (proxy.calibrate=true, kss.tasks.calibration)."""

import csv
import json
import math
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import torch
import pytest

from kss.errors import KssError
from kss.tasks.entry import search_task as run_search, train_task

ROOT = Path(__file__).resolve().parents[2]
# synthetic data, 4 training batches of 16 per epoch; trainings stubbed unless a test trains for real
HALVING = ["optimizer=adam", "optimizer.lr=1e-2", "dataset.train_size=96", "dataset.val_size=32", "dataset.test_size=16",
           "callbacks=none", "search.strategy=halving"]


def accuracy(index: int, budget: float) -> float:
    """A made-up validation accuracy per (candidate, budget): rankings change between budgets."""
    rng = np.random.default_rng([index, int(budget * 1000)])
    return float(np.round(0.2 + 0.1 * math.log1p(budget) + 0.3 * rng.random(), 4))


@pytest.fixture
def stub_training(monkeypatch):
    """Replace each rung's training by `accuracy`; returns the (index, budget) calls. stop_at=n: the n-th call
    is a Ctrl-C (KeyboardInterrupt) instead."""
    import kss.tasks.halving

    calls = []

    def arm(stop_at: int | None = None):
        calls.clear()

        def train(cfg, out_dir, genotype_file, kernels, seed, budget, group=None):
            if stop_at is not None and len(calls) + 1 == stop_at:
                raise KeyboardInterrupt
            index = int(Path(genotype_file).stem)
            calls.append((index, budget))
            return {"best_val_acc": accuracy(index, budget), "train_seconds": 0.01}

        monkeypatch.setattr(kss.tasks.halving, "train_at_budget", train)
        return calls

    return arm


def asha(pool: list[int], budgets: list[float], eta: int) -> list[list[int]]:
    """The candidates each rung trains under asynchronous successive halving, trials in pool order: a trial goes
    on when its value is among the top max(n // eta, 1) of the n trials that reached the rung so far."""
    rungs, alive = [], list(pool)
    for rung, budget in enumerate(budgets):
        rungs.append(alive)
        if rung == len(budgets) - 1:
            break
        seen, promoted = [], []
        for index in alive:
            seen.append(accuracy(index, budget))
            if seen[-1] >= sorted(seen, reverse=True)[max(len(seen) // eta, 1) - 1]:
                promoted.append(index)
        alive = promoted
    return rungs


def whole_rungs(pool: list[int], budgets: list[float], eta: int) -> list[list[int]]:
    """Synchronous successive halving: each rung's top max(n // eta, 1) by accuracy go on."""
    rungs, alive = [], list(pool)
    for rung, budget in enumerate(budgets):
        rungs.append(alive)
        ranked = sorted(alive, key=lambda i: -accuracy(i, budget))
        alive = sorted(ranked[:max(len(alive) // eta, 1)])
    return rungs


def halving_cfg(compose_cfg, *overrides):
    return compose_cfg(*HALVING, *overrides, config_name="train")


def test_sync_rungs_are_whole_and_keep_the_top_third(compose_cfg, tmp_path, stub_training):
    """27 -> 9 -> 3 -> 1 as the issue's plan says; trial order plays no part (unlike async, below)."""
    calls = stub_training()
    budgets = [0.25, 0.5, 0.75, 1]
    cfg = halving_cfg(compose_cfg, "search.halving.pool=27", "search.halving.eta=3", f"search.halving.budgets={budgets}")
    summary = run_search(cfg, tmp_path)
    pool = summary["rungs"][0]["candidates"]
    expected = whole_rungs(pool, budgets, 3)
    assert [len(r) for r in expected] == [27, 9, 3, 1]
    assert [r["candidates"] for r in summary["rungs"]] == expected
    assert expected != asha(pool, budgets, 3)  # this pool is one where trial order changes who goes on
    assert [b for _, b in calls] == sorted(b for _, b in calls)  # every rung trained before the next one starts
    assert summary["best_index"] == expected[-1][0] and summary["mode"] == "sync"
    assert summary["study_trials"] == {"complete": 1, "pruned": 26, "fail": 0}
    assert summary["training_epochs"] == pytest.approx(27 * 0.25 + 9 * 0.5 + 3 * 0.75 + 1)
    text = (tmp_path / "halving.md").read_text()
    assert "whole rungs" in text and "| 3 | 1 | 1 | 0 |" in text


def test_an_interrupted_sync_halving_resumes_to_the_same_rungs(compose_cfg, tmp_path, stub_training, monkeypatch):
    """A Ctrl-C inside rung 1's trainings, and one between two of rung 0's decisions: the resumed search
    trains only what had not finished, and decides as the whole one did."""
    import optuna

    args = ("search.halving.pool=9", "search.halving.eta=3", "search.halving.budgets=[0.25,0.5,1]")
    stub_training()
    whole = run_search(halving_cfg(compose_cfg, *args), tmp_path / "whole")
    stub_training(stop_at=11)  # rung 0's 9 trainings, then the second of rung 1's 3
    with pytest.raises(KeyboardInterrupt):
        run_search(halving_cfg(compose_cfg, *args), tmp_path / "cut")
    calls = stub_training()
    resumed = run_search(halving_cfg(compose_cfg, *args), tmp_path / "cut")
    assert resumed["rungs"] == whole["rungs"] and resumed["best_index"] == whole["best_index"]
    assert resumed["study_trials"] == whole["study_trials"] and len(calls) == 13 - 10

    real, hits = optuna.trial.Trial.set_user_attr, []

    def cut(self, key, value):
        if key == "rung_0" and self.number == 4 and not hits:
            hits.append(key)
            raise KeyboardInterrupt
        return real(self, key, value)

    stub_training()
    monkeypatch.setattr(optuna.trial.Trial, "set_user_attr", cut)
    with pytest.raises(KeyboardInterrupt):
        run_search(halving_cfg(compose_cfg, *args), tmp_path / "cut2")
    monkeypatch.setattr(optuna.trial.Trial, "set_user_attr", real)
    calls = stub_training()
    resumed = run_search(halving_cfg(compose_cfg, *args), tmp_path / "cut2")
    assert hits and resumed["rungs"] == whole["rungs"] and resumed["best_index"] == whole["best_index"]
    assert len(calls) == 3 + 1  # rung 0 was all trained: only rungs 1 and 2


def test_a_study_from_before_the_mode_setting_resumes_as_async_only(compose_cfg, tmp_path, stub_training):
    import optuna

    args = ("search.halving.pool=4", "search.halving.eta=2", "search.halving.budgets=[0.25,0.5]")
    stub_training()
    first = run_search(halving_cfg(compose_cfg, *args, "search.halving.mode=async"), tmp_path)
    study = optuna.load_study(study_name=f"kss-{tmp_path.name}", storage=f"sqlite:///{tmp_path / 'study.db'}")
    settings = study.user_attrs["settings"]
    study.set_user_attr("settings", {k: v for k, v in settings.items() if k != "mode"})  # as such a study holds them
    assert run_search(halving_cfg(compose_cfg, *args, "search.halving.mode=async"), tmp_path)["best_index"] == first["best_index"]
    with pytest.raises(KssError, match=r"other settings \(mode differ\)"):
        run_search(halving_cfg(compose_cfg, *args), tmp_path)


def test_rung_sizes_follow_optunas_successive_halving(compose_cfg, tmp_path, stub_training):
    calls = stub_training()
    cfg = halving_cfg(compose_cfg, "search.halving.pool=9", "search.halving.eta=3", "search.halving.budgets=[0.25,1,3]",
                      "search.halving.mode=async")
    summary = run_search(cfg, tmp_path)
    pool = summary["rungs"][0]["candidates"]  # the random search's first distinct candidates, in order
    assert len(pool) == 9 and pool == sorted(pool) and pool[0] == 0
    expected = asha(pool, [0.25, 1, 3], 3)
    assert [r["candidates"] for r in summary["rungs"]] == expected
    assert [len(r) for r in expected][0] == 9 and len(expected[1]) < 9 and 1 <= len(expected[2]) < len(expected[1])
    for rung, budget in zip(expected, [0.25, 1.0, 3.0]):  # each rung trained exactly its candidates, once
        assert sorted(i for i, b in calls if b == budget) == sorted(rung)
    last = expected[-1]
    winner = max(last, key=lambda i: (accuracy(i, 3), -i))
    assert summary["best_index"] == winner and summary["best_val_acc"] == accuracy(winner, 3)
    assert summary["study_trials"] == {"complete": len(last), "pruned": 9 - len(last), "fail": 0}
    assert summary["training_epochs"] == pytest.approx(0.25 * 9 + len(expected[1]) + 3 * len(last))
    # search.json in the usual contract: the winner's genotype is what train.py genotype=... builds
    saved = json.loads((tmp_path / "search.json").read_text())
    from kss.space.genotype import load_genotype

    assert load_genotype(str(tmp_path / "search.json")).to_json() == saved["best_genotype"]
    assert saved["best_score"] is None and saved["strategy"] == "halving"
    assert (tmp_path / "study.db").exists() and "| 2 | 3 |" in (tmp_path / "halving.md").read_text()

    # finished: a rerun trains nothing and reports the same winner
    again = run_search(cfg, tmp_path)
    assert len(calls) == sum(len(r) for r in expected) and again["best_index"] == winner


def test_an_interrupted_halving_resumes_mid_rung_to_the_same_winner(compose_cfg, tmp_path, stub_training):
    args = ("search.halving.pool=8", "search.halving.eta=2", "search.halving.budgets=[0.25,0.5,1]", "search.halving.mode=async")
    stub_training()
    whole = run_search(halving_cfg(compose_cfg, *args), tmp_path / "whole")
    rungs = [r["candidates"] for r in whole["rungs"]]
    assert len(rungs[1]) >= 2  # the interruption below falls into rung 1 of a promoted trial
    interrupted_at = 5  # trials run depth-first: trial 0's three rungs, trial 1's rung 0, then the Ctrl-C
    stub_training(stop_at=interrupted_at)
    with pytest.raises(KeyboardInterrupt):
        run_search(halving_cfg(compose_cfg, *args), tmp_path / "cut")
    calls = stub_training()
    resumed = run_search(halving_cfg(compose_cfg, *args), tmp_path / "cut")
    assert resumed["best_index"] == whole["best_index"] and resumed["rungs"] == whole["rungs"]
    assert resumed["study_trials"] == whole["study_trials"]  # the interrupted trial went on: no failed or extra trial
    import optuna

    study = optuna.load_study(study_name="kss-cut", storage=f"sqlite:///{tmp_path / 'cut' / 'study.db'}")
    assert len(study.trials) == 8
    assert len(calls) == sum(len(r) for r in rungs) - (interrupted_at - 1)  # only what had not finished


def test_an_interruption_between_the_pruners_answer_and_its_record(compose_cfg, tmp_path, stub_training, monkeypatch):
    import optuna

    args = ("search.halving.pool=8", "search.halving.eta=2", "search.halving.budgets=[0.25,0.5]", "search.halving.mode=async")
    stub_training()
    whole = run_search(halving_cfg(compose_cfg, *args), tmp_path / "whole")
    real = optuna.trial.Trial.set_user_attr
    hits = []

    def cut(self, key, value):
        if key.startswith("rung_") and self.number == 4 and not hits:
            hits.append(key)
            raise KeyboardInterrupt
        return real(self, key, value)

    monkeypatch.setattr(optuna.trial.Trial, "set_user_attr", cut)
    with pytest.raises(KeyboardInterrupt):
        run_search(halving_cfg(compose_cfg, *args), tmp_path / "cut")
    monkeypatch.setattr(optuna.trial.Trial, "set_user_attr", real)
    resumed = run_search(halving_cfg(compose_cfg, *args), tmp_path / "cut")
    assert hits and resumed["rungs"] == whole["rungs"] and resumed["best_index"] == whole["best_index"]


def test_a_halving_search_has_its_own_wandb_run_once(compose_cfg, tmp_path, stub_training):
    args = ("search.halving.pool=4", "search.halving.eta=2", "search.halving.budgets=[0.25,0.5]", "wandb.mode=offline")
    stub_training()
    summary = run_search(halving_cfg(compose_cfg, *args), tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))  # the rungs table and the winner's summary
    assert run_search(halving_cfg(compose_cfg, *args), tmp_path)["best_index"] == summary["best_index"]
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1  # a finished search adds no run


def test_a_prefiltered_pool_is_the_top_r_of_a_search(compose_cfg, tmp_path, stub_training):
    search_dir = tmp_path / "search"
    run_search(compose_cfg("iters=5"), search_dir)
    records = [json.loads(line) for line in (search_dir / "candidates.jsonl").read_text().splitlines()]
    top = sorted((r for r in records if r["status"] == "scored"), key=lambda r: -r["score"])[:3]
    stub_training()
    summary = run_search(halving_cfg(compose_cfg, "iters=5", "search.halving.pool=3", "search.halving.eta=2",
                                     "search.halving.budgets=[0.25,0.5]", f"search.prefilter={search_dir / 'search.json'}"),
                         tmp_path / "halving")
    assert summary["rungs"][0]["candidates"] == sorted(r["index"] for r in top)
    assert summary["best_score"] == next(r["score"] for r in top if r["index"] == summary["best_index"])


@pytest.mark.parametrize("overrides, message", [
    (["search.halving.eta=1"], "search.halving.eta must be an integer >= 2"),
    (["search.halving.budgets=[1,0.5]"], "must increase from rung to rung"),
    (["search.halving.budgets=[1,1]"], "must increase from rung to rung"),
    (["search.halving.budgets=[1]"], "at least two rungs"),
    (["search.halving.budgets=[0,1]"], "positive budgets"),
    (["search.halving.pool=8", "search.halving.eta=3"], "leaves rung 2 (1 epochs) with no candidates"),
    (["search.halving.budgets=[0.1,1]"], "less than one batch"),
    (["search.prefilter=/nonexistent/search.json"], "no candidates.jsonl there"),
    (["dataset.val_size=0"], "validation accuracy"),
    (["shards=2"], "does not shard"),
    (["budget.max_sops=1e6"], "applies budget.max_params only"),
    (["search.halving.mode=both"], "search.halving.mode must be sync"),
])
def test_bad_halving_settings_are_one_line_and_write_nothing(compose_cfg, tmp_path, overrides, message, stub_training):
    calls = stub_training()
    cfg = halving_cfg(compose_cfg, "search.halving.pool=9", "search.halving.budgets=[0.25,0.5,1]", *overrides)
    with pytest.raises(KssError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        run_search(cfg, tmp_path / "run")
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists() and not calls


def test_train_py_with_halving_searches_then_trains_the_winner(compose_cfg, tmp_path, stub_training):

    calls = stub_training()
    cfg = halving_cfg(compose_cfg, "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
                      "search.halving.pool=2", "search.halving.eta=2", "search.halving.budgets=[0.25,0.5]")
    metrics = train_task(cfg, tmp_path)
    summary = json.loads((tmp_path / "search.json").read_text())
    assert metrics["genotype"] == summary["best_genotype"] and metrics["genotype_source"] == str(tmp_path / "search.json")
    done = len(calls)
    assert done >= 3 and (tmp_path / "metrics.json").exists() and (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert train_task(cfg, tmp_path)["test_acc"] == metrics["test_acc"] and len(calls) == done  # finished: reported


def test_a_training_free_search_refuses_halving_in_one_line(compose_cfg, tmp_path):
    from kss.tasks.proxy import run_proxy

    with pytest.raises(KssError, match="not a training-free search"):
        run_proxy(compose_cfg(*CALIBRATION[:-1], "proxy.calibrate=false", "proxy.per_set=2", "search.strategy=halving",
                              config_name="proxy"), tmp_path / "run")


@pytest.mark.slow
def test_halving_trains_for_real_resumes_and_its_winner_trains_with_train_py(compose_cfg, tmp_path, monkeypatch):
    """Real rung trainings (train.py's task, checkpoints, metrics.json, test split unseen), a Ctrl-C inside a
    training, the resume, then train.py genotype=<dir>/search.json."""
    import kss.train.module
    from kss.errors import Interrupted

    args = ("search.halving.pool=2", "search.halving.eta=2", "search.halving.budgets=[0.25,0.5]")
    real = kss.train.module.SpikingClassifier.training_step
    steps = []

    def ctrl_c(self, *a, **k):
        steps.append(1)
        if len(steps) == 3:  # rung 1 of the first trial (rung 0 is one step)... in the middle of a training
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(kss.train.module.SpikingClassifier, "training_step", ctrl_c)
    with pytest.raises(Interrupted, match="rerun the same command to resume"):
        run_search(halving_cfg(compose_cfg, *args), tmp_path / "halving")
    monkeypatch.setattr(kss.train.module.SpikingClassifier, "training_step", real)
    summary = run_search(halving_cfg(compose_cfg, *args), tmp_path / "halving")
    whole = run_search(halving_cfg(compose_cfg, *args), tmp_path / "whole")  # never interrupted: the same accuracies
    def decisions(s):
        return [(r["candidates"], r["val_acc"], r["promoted"]) for r in s["rungs"]]

    assert decisions(summary) == decisions(whole) and summary["best_index"] == whole["best_index"]
    assert [len(r["candidates"]) for r in summary["rungs"]][0] == 2 and summary["study_trials"]["fail"] == 0
    runs = sorted((tmp_path / "halving" / "rungs").iterdir())
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["test_acc"] is None and (run / "checkpoints" / "last.ckpt").exists()
        index, budget = run.name.split("_", 1)
        rung = next(r for r in summary["rungs"] if f"e{r['max_epochs']}_f{r['train_fraction']:.4g}" == budget)
        assert rung["val_acc"][index] == pytest.approx(metrics["best_val_acc"])
    trained = train_task(compose_cfg(*HALVING[:-1], "trainer.max_epochs=1", f"genotype={tmp_path / 'halving' / 'search.json'}",
                                    config_name="train"), tmp_path / "final")
    assert trained["genotype"] == summary["best_genotype"] and trained["test_acc"] is not None


@pytest.mark.slow
def test_cli_bad_halving_and_calibration_settings_exit_2_in_one_line_and_write_nothing(tmp_path):
    tiny = ["dataset=synthetic", "model=tiny", "progress=false", "device=cpu", "wandb.mode=disabled"]
    for script, args in (("search", ["search.strategy=halving", "search.halving.eta=1"]),
                         ("proxy", ["proxy.calibrate=true", "proxy.calibration.budgets=[3,1]"])):
        run = tmp_path / "outputs" / "run"
        result = subprocess.run([sys.executable, f"{script}.py", *tiny, *args, f"hydra.run.dir={run}"], cwd=ROOT,
                                capture_output=True, text=True, timeout=300)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert not run.exists() and not (tmp_path / "outputs").exists()


# --- calibration (proxy.calibrate=true) ---

CALIBRATION = ["trainer.max_epochs=1", "optimizer=adam", "optimizer.lr=1e-2", "iters=6", "dataset.train_size=96",
               "dataset.val_size=32", "dataset.test_size=16", "kernel_sets=[set1,set3]", "proxy.calibrate=true",
               "proxy.calibration.archs=6", "proxy.calibration.budgets=[0.25,1]", "proxy.bootstrap=200", "callbacks=none"]


def test_calibration_finds_the_cheapest_reliable_budget(compose_cfg, tmp_path, monkeypatch):
    """Stubbed trainings with known noise: seed sd 0.1 against architecture sd ~0.03 at 0.25 epochs
    (reliability ~0), seed sd 0.002 against ~0.1 at 1 epoch (reliability ~1)."""
    import kss.tasks.calibration
    from kss.tasks.proxy import run_proxy

    calls = []

    so_far = []  # the table so far, as the first long training starts

    def train(cfg, out_dir, genotype_file, kernels, seed, budget, group=None):
        calls.append((Path(genotype_file).stem, seed, budget))
        if budget == 1 and not so_far:
            so_far.append((tmp_path / "calibration_so_far.md").read_text())
            so_far.append(json.loads((tmp_path / "calibration_so_far.json").read_text()))
            so_far.append((tmp_path / "calibration_so_far.png").read_bytes())
        arch = int(np.random.default_rng([zlib.crc32(Path(genotype_file).stem.encode())]).integers(10))
        noise = np.random.default_rng([seed, arch, int(budget * 100)]).normal()
        acc = 0.5 + (0.003 if budget < 1 else 0.01) * arch + (0.1 if budget < 1 else 0.002) * noise
        return {"best_val_acc": float(acc), "train_seconds": budget}

    monkeypatch.setattr(kss.tasks.calibration, "train_at_budget", train)
    result = run_proxy(compose_cfg(*CALIBRATION, config_name="proxy"), tmp_path)
    assert len(calls) == 6 * 2 * 2 and len(result["architectures"]) == 6
    short, long = result["budgets"]
    assert short["reliability"] < 0.7 <= long["reliability"] and long["reliability"] > 0.95
    assert result["cheapest"]["budget_epochs"] == 1.0 and result["cheapest"]["overrides"] == "proxy.epochs=1 proxy.train_fraction=1"
    assert long["train_seconds"] == pytest.approx(12) and long["seconds_per_training"] == pytest.approx(1)
    text = (tmp_path / "calibration.md").read_text()
    assert "**1 epoch(s)**" in text and json.loads((tmp_path / "calibration.json").read_text())["cheapest"]
    assert "| 0.25 |" in so_far[0] and "| 1 |" not in so_far[0] and "1 of 2 budgets; 1 epoch(s) still to train" in so_far[0]
    assert "No budget so far reached reliability 0.7." in so_far[0] and "try longer budgets" not in so_far[0]
    assert so_far[1]["cheapest"] is None and so_far[1]["pending"] == [1.0] and len(so_far[1]["budgets"]) == 1
    assert (tmp_path / "calibration_so_far.md").read_text() == text  # once finished, the same table
    final = json.loads((tmp_path / "calibration_so_far.json").read_text())
    assert final["cheapest"] == result["cheapest"] and final["pending"] == []
    png = (tmp_path / "calibration.png").read_bytes()
    assert png.startswith(b"\x89PNG") and so_far[2].startswith(b"\x89PNG") and so_far[2] != png  # one budget, then two


@pytest.mark.parametrize("overrides, message", [
    (["proxy.calibration.archs=2"], "archs must be an integer >= 3"),
    (["proxy.calibration.seeds=1"], "seeds must be an integer >= 2"),
    (["proxy.calibration.budgets=[1,0.3]"], "must increase"),
    (["proxy.calibration.target=1.5"], r"must be in \(0, 1\)"),
    (["proxy.calibration.budgets=[0.01,1]"], "less than one batch"),
    (["proxy.calibrate=maybe"], "true or false"),
])
def test_bad_calibration_settings_are_one_line_and_write_nothing(compose_cfg, tmp_path, overrides, message):
    from kss.tasks.proxy import run_proxy

    with pytest.raises(KssError, match=message) as info:
        run_proxy(compose_cfg(*CALIBRATION, *overrides, config_name="proxy"), tmp_path / "run")
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_calibration_trains_for_real_and_resumes(compose_cfg, tmp_path, monkeypatch):
    from kss.tasks.proxy import run_proxy

    cfg = compose_cfg(*CALIBRATION, "proxy.calibration.archs=3", "proxy.calibration.budgets=[0.25,0.5]",
                      config_name="proxy")
    result = run_proxy(cfg, tmp_path)
    assert [r["trainings"] for r in result["budgets"]] == [6, 6]
    runs = sorted((tmp_path / "calibration" / "train").glob("*/metrics.json"))
    assert len(runs) == 12 and all(json.loads(p.read_text())["test_acc"] is None for p in runs)
    # each budget is a complete training: its cosine schedule annealed to the end of its own steps
    scheduler = json.loads(runs[0].read_text())["settings"]["scheduler"]
    assert scheduler["interval"] == "step" and scheduler["T_max"] is None
    last = torch.load(next(runs[0].parent.glob("checkpoints/last*.ckpt")), weights_only=False)
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(scheduler["eta_min"])
    import shutil

    import kss.tasks.train

    # another machine: the study's records (no checkpoints) at another path; nothing is trained again
    moved = tmp_path.parent / f"{tmp_path.name}_moved"
    shutil.copytree(tmp_path, moved, ignore=shutil.ignore_patterns("checkpoints", "csv"))
    monkeypatch.setattr(kss.tasks.train.L.Trainer, "fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    assert run_proxy(cfg, tmp_path)["budgets"][0]["val_acc"] == result["budgets"][0]["val_acc"]
    again = run_proxy(cfg, moved)
    assert [r["val_acc"] for r in again["budgets"]] == [r["val_acc"] for r in result["budgets"]]


def test_fractional_budgets_are_epochs_on_a_fraction_of_the_batches():
    from kss.tasks.fidelity import budget_tag, check_budget_fits, check_budgets, epochs_and_fraction

    assert epochs_and_fraction(0.111) == (1, 0.111) and epochs_and_fraction(1) == (1, 1.0)
    assert epochs_and_fraction(3) == (3, 1.0) and epochs_and_fraction(1.5) == (2, 0.75)
    assert budget_tag(1 / 3) == "e1_f0.3333" and budget_tag(3) == "e3_f1"
    assert check_budgets([0.3, 1, 3], "b") == [0.3, 1.0, 3.0]
    for bad in ([], [1, True], "1", [1, -2]):
        with pytest.raises(KssError, match="b must be"):
            check_budgets(bad, "b")
    check_budget_fits(0.25, 4, "b")
    with pytest.raises(KssError, match="less than one batch"):
        check_budget_fits(0.2, 4, "b")


def test_a_budget_anneals_a_cosine_schedule_per_step_and_leaves_other_schedules(compose_cfg):
    from kss.tasks.fidelity import budget_job

    job = budget_job(compose_cfg("scheduler=cosine", config_name="train"), Path("g.json"), [1, 3], 0, 1, 0.3)
    assert job.scheduler.interval == "step" and job.scheduler.T_max is None
    assert job.trainer.limit_train_batches == 0.3 and job.test is False
    whole = budget_job(compose_cfg(config_name="train"), Path("g.json"), [1, 3], 0, 1, 1)  # "train_fraction=1"
    assert isinstance(whole.trainer.limit_train_batches, float)  # the whole split, not one batch
    steps = compose_cfg("scheduler=cosine_steps", config_name="train")
    assert budget_job(steps, Path("g.json"), [1, 3], 0, 1, 0.3).scheduler == steps.scheduler
    assert not budget_job(compose_cfg("scheduler=none", config_name="train"), Path("g.json"), [1, 3], 0, 1, 0.3).scheduler


def test_the_study_retrains_seed_archs_architectures_with_every_seed(compose_cfg, tmp_path, monkeypatch):
    import kss.tasks.proxy_study
    import kss.tasks.proxy

    calls = []

    def train_pick(cfg, out_dir, pick, seed, epochs):
        calls.append((pick["hamming"], seed, epochs))
        return 0.3 + 0.01 * pick["index"] + 0.001 * seed, True

    monkeypatch.setattr(kss.tasks.proxy_study, "train_pick", train_pick)
    overrides = [o for o in CALIBRATION if not o.startswith(("proxy.", "kernel_sets="))]
    result = kss.tasks.proxy.run_proxy(compose_cfg(*overrides, "kernel_sets=[set3]", "proxy.per_set=6", "proxy.seeds=3", "proxy.seed_archs=4",
                                             "proxy.long_archs=0", "proxy.bootstrap=50", config_name="proxy"), tmp_path)
    noisy = result["seed_noise"]
    assert list(noisy)[:2] == ["top_scored", "median_scored"] and len(noisy) == 4
    assert len({(n["kernel_set"], n["index"]) for n in noisy.values()}) == 4
    assert all(n["seeds"] == [0, 1, 2] for n in noisy.values())
    assert len(calls) == 6 + 4 * 2 and result["reliability"]["seeds"] == [3] * result["reliability"]["replicated"]
    scores = sorted(score for score, _, _ in calls[:6])
    assert [score for score, _, _ in calls[:2]] == [scores[0], scores[-1]]  # the lowest and the best R first
    so_far = json.loads((tmp_path / "proxy_so_far.json").read_text())
    assert so_far["trainings_done"] == so_far["trainings_planned"] == 14 and so_far["n"] == 6

    def broken(*args, **kwargs):
        raise ValueError("degenerate interim data")

    monkeypatch.setattr(kss.tasks.proxy_study, "write_so_far", broken)  # the interim report never stops the study
    calls.clear()
    again = kss.tasks.proxy.run_proxy(compose_cfg(*overrides, "kernel_sets=[set3]", "proxy.per_set=6", "proxy.seeds=3",
                                                  "proxy.seed_archs=4", "proxy.long_archs=0", "proxy.bootstrap=50",
                                                  config_name="proxy"), tmp_path / "again")
    assert len(calls) == 14 and again["n"] == 6
    with pytest.raises(KssError, match="seed_archs must be >= 2"):
        kss.tasks.proxy.run_proxy(compose_cfg(*overrides, "proxy.seed_archs=1", config_name="proxy"), tmp_path / "bad")


def test_a_resumed_study_reads_its_finished_trainings_before_training_more(compose_cfg, tmp_path, monkeypatch):
    """The finished trainings are read first, so the first interim report after a resume covers every one of
    them; the new trainings follow in coarse-to-fine order."""
    import kss.tasks.proxy
    import kss.tasks.proxy_study
    from kss.study.proxy import coarse_to_fine
    from kss.tasks.proxy_study import pick_run_dir

    calls, interim = [], []

    def train_pick(cfg, out_dir, pick, seed, epochs):
        done = pick_run_dir(cfg, out_dir, pick, seed, epochs) / "metrics.json"
        calls.append((pick["index"], not done.exists()))
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text("{}")
        return 0.3 + 0.01 * pick["index"], calls[-1][1]

    real = kss.tasks.proxy_study.write_so_far

    def recorded(out_dir, rows, *args):
        interim.append(sum(row["val_acc"] is not None for row in rows))
        real(out_dir, rows, *args)

    monkeypatch.setattr(kss.tasks.proxy_study, "train_pick", train_pick)
    monkeypatch.setattr(kss.tasks.proxy_study, "write_so_far", recorded)
    overrides = [o for o in CALIBRATION if not o.startswith(("proxy.", "kernel_sets="))]
    cfg = compose_cfg(*overrides, "kernel_sets=[set3]", "proxy.per_set=6", "proxy.seeds=1", "proxy.long_archs=0",
                      "proxy.bootstrap=50", config_name="proxy")
    kss.tasks.proxy.run_proxy(cfg, tmp_path)
    picks = json.loads((tmp_path / "picks.json").read_text())["picks"]
    assert [index for index, _ in calls] == [picks[i]["index"] for i in coarse_to_fine(6)] and interim == [1, 2, 3, 4, 5, 6]
    for i in (1, 2, 4):  # three trainings lost (never finished): the other three are kept
        (pick_run_dir(cfg, tmp_path, picks[i], 0, 1) / "metrics.json").unlink()
    calls.clear(), interim.clear()
    kss.tasks.proxy.run_proxy(cfg, tmp_path)
    kept = [i for i in coarse_to_fine(6) if i not in (1, 2, 4)]
    assert calls == [(picks[i]["index"], False) for i in kept] + [(picks[i]["index"], True) for i in (2, 1, 4)]
    assert interim == [4, 5, 6]  # the first report after the resume already holds the three kept ones
    with open(tmp_path / "proxy.csv") as f:  # the statistics see the picks in pick order, whatever the training order
        assert [int(row["index"]) for row in csv.DictReader(f)] == [pick["index"] for pick in picks]


def test_calibration_plot_draws_partial_and_failed_budgets(tmp_path):
    """A budget whose reliability could not be computed, one with a wild interval and an architecture with one
    finished run are drawn (or skipped) without error; the seed panel spans the accuracies."""
    from kss.study.plots import plot_calibration

    def row(budget, rel, ci, val_acc):
        return {"budget_epochs": budget, "reliability": rel, "reliability_ci": ci, "val_acc": val_acc}

    result = {"settings": {"target": 0.7, "archs": 3, "seeds": 2, "dataset": "synthetic"},
              "budgets": [row(0.3, None, [None, None], {"a": [0.5]}),
                          row(1.0, -0.9, [-16.5, 0.96], {"a": [0.7, 0.6], "b": [0.71, 0.72], "c": [0.8]}),
                          row(3.0, 0.8, [0.6, 0.9], {"a": [0.9, 0.88], "b": [0.86, 0.87]}),
                          row(9.0, 0.5, [0.55, 0.9], {"a": [0.9, 0.9]})]}  # a skewed BCa interval excluding its estimate
    path = plot_calibration(tmp_path / "calibration.png", result)
    assert path.read_bytes().startswith(b"\x89PNG")


def test_a_failed_training_in_a_whole_rung_fails_its_trial_and_keeps_the_rung_size(compose_cfg, tmp_path, stub_training,
                                                                                     monkeypatch):
    """A candidate whose rung-0 training gave no accuracy (a non-finite loss) is FAIL, and still counts in the
    rung: 9 candidates keep 3 (not 8 // 3 = 2). Ties at the cut all go on (Optuna's rule)."""
    import tests.search.test_halving as here

    real = here.accuracy
    stub_training()
    args = ("search.halving.pool=9", "search.halving.eta=3", "search.halving.budgets=[0.25,0.5]")
    pool = run_search(halving_cfg(compose_cfg, *args), tmp_path / "whole")["rungs"][0]["candidates"]
    failed, tied = pool[4], sorted(pool, key=lambda i: -real(i, 0.25))[:4]

    def accuracy(index, budget):
        if budget == 0.25 and index == failed:
            return math.nan
        if budget == 0.25 and index in tied[2:]:  # the 3rd and 4th best tie at the cut
            return real(tied[2], 0.25)
        return real(index, budget)

    monkeypatch.setattr(here, "accuracy", accuracy)
    summary = run_search(halving_cfg(compose_cfg, *args), tmp_path / "cut")
    kept = summary["rungs"][1]["candidates"]
    expected = sorted(i for i in pool if i != failed and accuracy(i, 0.25) >= accuracy(tied[2], 0.25))
    assert kept == expected and len(kept) == (4 if failed not in tied else 3)
    assert summary["study_trials"] == {"complete": len(kept), "pruned": 9 - 1 - len(kept), "fail": 1}
