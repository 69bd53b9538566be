"""benchmarks/fmnist_studies.py: the plan of each long study, what it saves to docs/results and restores from
there on a new machine (so a later session continues), and the selection table. Nothing here trains: the
studies' steps are the project's own scripts, tested elsewhere."""

import importlib.util
import json
import sqlite3
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import benchmarks/keep.py from beside them


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fs = load("fmnist_studies")


def args(tmp_path, *extra):
    import argparse

    parsed = argparse.Namespace(out=tmp_path / "outputs", results=tmp_path / "docs", preset="synthetic", epochs=None,
                                fraction=1.0, dry_run=True, sync_seconds=0)
    for key, value in zip(extra[::2], extra[1::2]):
        setattr(parsed, key, value)
    return parsed


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def calibration(preset: str, cheapest, **extra) -> dict:
    """A calibration result of the preset's settings, as kss.tasks.calibration writes it."""
    o = fs.overrides(fs.PRESETS[preset]["calibration"])
    settings = {"archs": o["proxy.calibration.archs"], "seeds": o["proxy.calibration.seeds"],
                "budgets": [float(b) for b in o["proxy.calibration.budgets"]]}
    return {"settings": settings, "cheapest": cheapest, **extra}


def finished_training(acc: float, seed: int = 0, params: int = 100) -> dict:
    return {"best_val_acc": acc, "test_acc": acc - 0.01, "seed": seed, "params": params, "energy_uj": 1.0}


def test_save_keeps_finished_records_and_restore_brings_them_back_without_overwriting(tmp_path):
    out, docs = tmp_path / "outputs" / "study", tmp_path / "docs" / "study"
    write(out / "train" / "a" / "metrics.json", finished_training(0.5))
    write(out / "train" / "b" / "metrics.json", "{")  # being written: not a finished training
    write(out / "train" / "a" / "checkpoints" / "last.ckpt", "weights")
    write(out / "train" / "a" / "csv" / "version_0" / "metrics.csv", "epoch")
    write(out / "halving" / "genotypes" / "3.json", {"cell_type": "forward"})
    write(out / "halving" / "search.json", {"best_index": 3})
    with sqlite3.connect(out / "halving" / "study.db") as db:
        db.execute("create table trials (number int)")
        db.execute("insert into trials values (7)")
    (out / "calibration_so_far.png").write_bytes(b"\x89PNG plot")  # the plots go with their tables
    (out / "proxy_so_far_regret.png").write_bytes(b"\x89PNG plot")
    (out / "train" / "a" / "csv" / "curves.png").write_bytes(b"\x89PNG")  # not a study's plot
    assert fs.save(out, docs) == 6 and fs.save(out, docs) == 0  # unchanged files are not copied again
    kept = sorted(str(p.relative_to(docs)) for p in docs.rglob("*") if p.is_file())
    assert kept == ["calibration_so_far.png", "halving/genotypes/3.json", "halving/search.json", "halving/study.db",
                    "proxy_so_far_regret.png", "train/a/metrics.json"]
    with sqlite3.connect(docs / "halving" / "study.db") as db:
        assert db.execute("select number from trials").fetchall() == [(7,)]

    # `save`: every study's records at once (a training finished after the runner's last sync, before a stop)
    write(tmp_path / "outputs" / fs.STUDIES["proxy"] / "train" / "c" / "metrics.json", finished_training(0.6))
    fs.main(["save", "--out", str(tmp_path / "outputs"), "--results", str(tmp_path / "docs")])
    saved = tmp_path / "docs" / fs.STUDIES["proxy"] / "train" / "c" / "metrics.json"
    assert json.loads(saved.read_text())["best_val_acc"] == 0.6

    fresh = tmp_path / "new_machine" / "study"
    write(fresh / "halving" / "search.json", {"best_index": 9})  # a local file is never overwritten
    assert fs.restore(docs, fresh) == 5
    assert fs.save(fresh, docs) == 1  # only the local search.json goes back: restored records keep their times
    assert json.loads((fresh / "train" / "a" / "metrics.json").read_text())["best_val_acc"] == 0.5
    assert json.loads((fresh / "halving" / "search.json").read_text())["best_index"] == 9


def test_the_selection_plan_continues_from_restored_records(tmp_path, capsys):
    a = args(tmp_path)
    preset = fs.PRESETS["synthetic"]
    first = fs.plan_of(a, preset, "select")
    assert [s.name for s in first] == ["R search", "halving (Optuna's async pruner)", "halving (whole rungs)"]
    assert not any(s.done for s in first) and first[0].argv()[-1].startswith("hydra.run.dir=")
    assert "search.halving.mode=async" in first[1].args and "search.halving.mode=sync" in first[2].args
    assert first[1].run_dir.name == "halving" and first[2].run_dir.name == "halving_sync"

    # the searches finished on another machine and were committed: a fresh checkout restores them
    docs = a.results / fs.STUDIES["select"]
    records = [{"index": i, "status": "scored", "score": s, "params": p, "genotype": {"cell_type": "forward", "i": i}}
               for i, (s, p) in enumerate([(1.0, 50), (3.0, 70), (2.0, 10), (0.5, 90)])]
    write(docs / "search_r" / "candidates.jsonl", "\n".join(json.dumps(r) for r in records) + "\n")
    write(docs / "search_r" / "search.json", {"iters": 4, "search_seconds": 60.0})
    write(docs / "halving" / "search.json", {"best_index": 2, "training_epochs": 1.5, "search_seconds": 120.0})
    write(docs / "halving_sync" / "search.json", {"best_index": 3, "training_epochs": 1.0, "search_seconds": 90.0})
    write(docs / "final" / "largest_seed1" / "metrics.json", finished_training(0.6, seed=1, params=90))
    fs.restore(docs, a.out / fs.STUDIES["select"])
    steps = fs.plan_of(a, preset, "select")
    assert len(steps) == 3 + len(fs.METHODS) * len(preset["seeds"])
    assert [s.name for s in steps if s.done] == ["R search", "halving (Optuna's async pruner)", "halving (whole rungs)",
                                                 "largest seed 1"]
    genotype = {s.name: next(x for x in s.args if x.startswith("genotype=")).split("=", 1)[1] for s in steps[3:]}
    picked = {name: json.loads(Path(genotype[f"{name} seed 0"]).read_text())["source_index"]
              for name in ("r_argmax", "smallest", "largest")}
    assert picked == {"r_argmax": 1, "smallest": 2, "largest": 3}
    assert genotype["halving seed 0"].endswith("halving_sync/search.json")
    assert genotype["halving_asha seed 0"].endswith("fmnist_selection/halving/search.json")
    fs.run_steps(steps, a, fs.STUDIES["select"])  # dry run: only what is left is printed as a command
    printed = capsys.readouterr().out
    assert "largest seed 1: done" in printed and printed.count("train.py") == len(steps) - 4


def test_the_whole_rung_halving_reuses_the_async_ones_finished_rungs(tmp_path):
    out = tmp_path / "select"
    write(out / "halving" / "rungs" / "0_e1_f0.111" / "metrics.json", finished_training(0.5))
    write(out / "halving" / "rungs" / "1_e1_f0.111" / "metrics.json", {"epochs": 1})  # unfinished: not reused
    write(out / "halving" / "rungs" / "0_e1_f0.111" / "checkpoints" / "last.ckpt", "weights")
    write(out / "halving_sync" / "rungs" / "2_e1_f0.111" / "metrics.json", finished_training(0.7))
    assert fs.reuse_rungs(out) == 1 and fs.reuse_rungs(out) == 0
    assert sorted(str(p.relative_to(out / "halving_sync")) for p in (out / "halving_sync").rglob("*") if p.is_file()) == [
        "rungs/0_e1_f0.111/metrics.json", "rungs/2_e1_f0.111/metrics.json"]
    assert fs.reuse_rungs(tmp_path / "nothing") == 0


def test_a_failing_interim_selection_table_never_stops_the_trainings(tmp_path, monkeypatch, capsys):
    def broken(*args):
        raise KeyError("training_epochs")

    monkeypatch.setattr(fs, "write_selection", broken)
    fs.interim_selection(args(tmp_path), fs.PRESETS["synthetic"])
    assert "warning: the interim selection table failed (KeyError" in capsys.readouterr().err


def test_the_proxy_study_runs_at_the_calibrated_budget(tmp_path):
    a = args(tmp_path)
    with pytest.raises(SystemExit, match="no calibrated budget yet"):
        fs.plan_of(a, fs.PRESETS["synthetic"], "proxy")
    so_far = a.out / fs.STUDIES["calibrate"] / "calibration_so_far.json"
    write(so_far, calibration("synthetic", None, pending=[0.5]))  # nothing passed yet: a longer budget may
    with pytest.raises(SystemExit, match="no calibrated budget yet"):
        fs.plan_of(a, fs.PRESETS["synthetic"], "proxy")
    write(so_far, calibration("synthetic", {"overrides": "proxy.epochs=1 proxy.train_fraction=0.3"}, pending=[0.5]))
    step, = fs.plan_of(a, fs.PRESETS["synthetic"], "proxy")  # a passed budget is final: the study starts
    assert step.args[-2:] == ["proxy.epochs=1", "proxy.train_fraction=0.3"]
    write(so_far, calibration("fmnist", {"overrides": "proxy.epochs=1 proxy.train_fraction=0.3"}))
    with pytest.raises(SystemExit, match="calibration of other settings .*12 archs x 2 seeds"):
        fs.plan_of(a, fs.PRESETS["synthetic"], "proxy")  # an earlier calibration of another plan
    so_far.unlink()
    final = a.results / fs.STUDIES["calibrate"] / "calibration.json"
    write(final, calibration("synthetic", None))
    with pytest.raises(SystemExit, match="no budget with reliability"):
        fs.plan_of(a, fs.PRESETS["synthetic"], "proxy")
    write(final, calibration("synthetic", {"overrides": "proxy.epochs=1 proxy.train_fraction=0.3"}))
    step, = fs.plan_of(a, fs.PRESETS["synthetic"], "proxy")
    assert step.args[-2:] == ["proxy.epochs=1", "proxy.train_fraction=0.3"] and "proxy.seed_archs=3" in step.args
    step, = fs.plan_of(args(tmp_path, "epochs", 3, "fraction", 1.0), fs.PRESETS["synthetic"], "proxy")
    assert step.args[-2:] == ["proxy.epochs=3", "proxy.train_fraction=1.0"]
    assert "proxy.calibration.budgets=[0.3,1,3]" in fs.calibrate_plan(a, fs.PRESETS["fmnist"])[0].args


def test_the_selection_table_pairs_seeds_against_the_halving_winner(tmp_path):
    a = args(tmp_path)
    out = a.out / fs.STUDIES["select"]
    write(out / "search_r" / "search.json", {"iters": 4, "search_seconds": 60.0})
    write(out / "halving" / "search.json", {"best_index": 0, "training_epochs": 1.5, "search_seconds": 120.0})
    write(out / "halving_sync" / "search.json", {"best_index": 7, "training_epochs": 1.0, "search_seconds": 60.0})
    assert fs.write_selection(a, fs.PRESETS["synthetic"]) is None  # no final training yet
    accs = {"halving": [0.80, 0.82], "halving_asha": [0.79, 0.80], "r_argmax": [0.70, 0.71], "random": [0.75, 0.78],
            "smallest": [0.6, 0.6], "largest": [0.81, 0.84]}
    for name, values in accs.items():
        write(out / "final" / f"{name}_seed0" / "metrics.json", finished_training(values[0] + 0.01, 0))
    write(out / "final" / "halving_seed1" / "metrics.json", finished_training(accs["halving"][1] + 0.01, 1))
    interim = fs.write_selection(a, fs.PRESETS["synthetic"])  # 7 of 12: the table so far, no difference yet
    assert interim.name == "selection_so_far.md" and not (a.results / fs.STUDIES["select"] / "selection.md").exists()
    text = interim.read_text()
    assert "**Interim: 7 of 12 final trainings finished**" in text and "| halving | 100 | 1.0 | 2 | 81.00 |" in text
    assert "| r_argmax | 100 | 1.0 | 1 | 70.00 | n/a | - | - |" in text
    (out / "final" / "random_seed0" / "metrics.json").unlink()
    assert "| random | n/a | n/a | 0 | n/a | n/a | - | - |" in fs.write_selection(a, fs.PRESETS["synthetic"]).read_text()
    write(out / "final" / "random_seed0" / "metrics.json", finished_training(accs["random"][0] + 0.01, 0))
    for name, values in accs.items():
        write(out / "final" / f"{name}_seed1" / "metrics.json", finished_training(values[1] + 0.01, 1))
    assert (out / "selection_so_far.md").read_text() == interim.read_text()  # written in outputs, saved to docs
    assert (a.results / fs.STUDIES["select"] / "selection_so_far.png").read_bytes().startswith(b"\x89PNG")
    final = fs.write_selection(a, fs.PRESETS["synthetic"])
    assert final.name == "selection.md" and "Interim" not in final.read_text()
    assert not interim.exists() and not (out / "selection_so_far.md").exists()  # superseded: removed
    assert (final.parent / "selection.png").exists() and not (final.parent / "selection_so_far.png").exists()
    write(out / "final" / "halving_seed1" / "metrics.json", finished_training(accs["halving"][1] + 0.01, 1)
          | {"energy_uj": 3.0})  # firing rates, so energy, differ by seed: the mean is reported
    summary = fs.selection_summary(a, fs.PRESETS["synthetic"])
    assert summary["methods"]["halving"]["mean"] == pytest.approx(0.81)
    assert summary["methods"]["halving"]["energy_uj"] == pytest.approx(2.0)
    assert summary["minus_halving"]["r_argmax"]["mean_diff"] == pytest.approx(-0.105)
    assert summary["minus_halving"]["largest"]["mean_diff"] == pytest.approx(0.015)
    assert summary["minus_halving"]["halving_asha"]["mean_diff"] == pytest.approx(-0.015)
    text = fs.selection_markdown(summary)
    assert "| r_argmax | 100 | 1.0 | 2 | 70.50 |" in text and "-10.50" in text
    assert "whole rungs 1.00 training epochs (1 min, winner candidate 7)" in text and "candidate 0;" in text


def test_the_other_long_runs_keep_their_records_the_same_way(tmp_path):
    """guided_search.py and kernel_study.py save and restore through benchmarks/keep.py with their own records."""
    guided, kernel = load("guided_search"), load("kernel_study")
    out, docs = tmp_path / "outputs", tmp_path / "docs"
    write(out / "tpe_seed1" / "candidates.jsonl", "{}\n")
    with sqlite3.connect(out / "tpe_seed1" / "study.db") as db:
        db.execute("create table trials (number int)")
    write(out / "tpe_seed1" / ".hydra" / "config.yaml", "x: 1")
    write(out / "search_set1_1000x" / "candidates.jsonl", "{}\n")
    write(out / "train_set1_2ep_seed0" / "metrics.json", finished_training(0.8))
    write(out / "train_set1_2ep_seed1" / "metrics.json", "{")  # still training
    assert sorted(str(p.relative_to(out)) for p in guided.keep.records(out, guided.kept_record)) == [
        "tpe_seed1/candidates.jsonl", "tpe_seed1/study.db"]
    assert guided.keep.save(out, docs, kernel.kept_record) == 2  # the unfinished training is not kept
    assert kernel.keep.restore(docs, tmp_path / "fresh", kernel.kept_record, whole_runs=True) == 2
    assert (tmp_path / "fresh" / "train_set1_2ep_seed0" / "metrics.json").exists()
    # a run folder this machine has is left as it is: a committed search.json never joins a local partial search
    write(docs / "search_set1_1000x" / "search.json", {"best_index": 1})
    assert kernel.keep.restore(docs, out, kernel.kept_record, whole_runs=True) == 0
    assert not (out / "search_set1_1000x" / "search.json").exists()
    assert kernel.keep.restore(docs, out, kernel.kept_record) == 1  # file by file (fmnist_studies' way) it would


def test_a_winners_r_is_redrawn_from_its_other_draws_only(tmp_path):
    guided = load("guided_search")
    a, b = {"cell_type": "forward", "edges": {"0->3": "conv3"}}, {"cell_type": "forward", "edges": {"0->3": "skip"}}
    reference = [{"index": i, "genotype": g, "score": r, "status": "scored", "params": 1}
                 for i, (g, r) in enumerate([(a, -100.0), (b, -99.0), (a, -104.0), (a, -106.0)])]
    draws = guided.draws_by_genotype(reference)
    assert guided.redrawn_r(reference[:1], draws) == -105.0  # a block's winner: its own draw left out
    assert guided.redrawn_r(reference[:2], draws) is None  # b was drawn once
    run = [{"index": 0, "genotype": a, "score": -98.0, "status": "scored"},
           {"index": 1, "genotype": b, "score": -90.0, "status": "over_budget"}]  # over budget never wins
    assert guided.redrawn_r(run, draws) == pytest.approx(-310.0 / 3)


def test_the_guided_summary_pairs_pareto_seeds_with_random_blocks_and_aligns_its_rows(tmp_path):
    import argparse

    guided = load("guided_search")

    def records(scores_params):
        return "".join(json.dumps({"index": i, "genotype": {"cell_type": "forward", "edges": {"0->3": f"conv{i % 3}"}},
                                   "score": score, "params": params, "status": "scored"}) + "\n"
                       for i, (score, params) in enumerate(scores_params))

    reference = [(-100.0 - i % 7, 100 + 10 * (i % 5)) for i in range(20)]  # two blocks of 10
    write(tmp_path / "ref" / "candidates.jsonl", records(reference))
    write(tmp_path / "out" / "pareto_seed0" / "candidates.jsonl", records([(-90.0, 50)] * 10))  # beats block 0
    write(tmp_path / "out" / "pareto_seed1" / "candidates.jsonl", records([(-130.0, 1000)] * 10))  # worse than block 1
    write(tmp_path / "out" / "tpe_budget_seed0" / "candidates.jsonl", records([(-101.0, 100)] * 10))
    a = argparse.Namespace(reference=tmp_path / "ref", out=tmp_path / "out", results=tmp_path / "docs", seeds=[0, 1],
                           trials=10, strategies=["pareto", "tpe"], budgeted=True)
    out = guided.summarise(a)
    hv = out["hypervolume"]
    assert hv["pareto"][0] > hv["random_blocks"][0] and hv["pareto"][1] < hv["random_blocks"][1]
    text = (tmp_path / "docs" / "summary.md").read_text()
    assert "paired (seed i vs block i): pareto larger in 1 of 2 seeds" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len({line.count(" | ") for line in table}) == 1  # every row has the header's columns
    budget_row = next(line for line in table if line.startswith("| random_budget |")).split(" | ")
    assert budget_row[-3] != "-" and budget_row[-4] == "-"  # the whole block's best sits under the last checkpoint
    assert out["reference"]["genotypes_drawn_again"] == 3 and out["reference"]["redraw_sd"] > 0


def test_status_counts_the_epochs_trained_against_the_plan(tmp_path, capsys):
    a = args(tmp_path, "preset", "fmnist")
    preset = fs.PRESETS["fmnist"]
    assert fs.planned_epochs(a, preset, "calibrate") == pytest.approx(12 * 2 * 4.3)
    assert fs.planned_epochs(a, preset, "proxy") is None  # no budget yet
    assert fs.overrides(preset["final"]) == {"trainer.max_epochs": 2, "scheduler": "cosine_steps"}
    halving = 27 * 0.111 + 9 * 0.333 + 3 * 1 + 1 * 3
    assert fs.planned_epochs(a, preset, "select") == pytest.approx(2 * halving + 6 * 3 * 2)  # async and whole rungs
    write(a.out / fs.STUDIES["calibrate"] / "calibration_so_far.json",
          calibration("fmnist", {"overrides": "proxy.epochs=1 proxy.train_fraction=0.3"}))
    assert fs.planned_epochs(a, preset, "proxy") == pytest.approx((64 + 10 * 2) * 0.3)
    train = a.out / fs.STUDIES["calibrate"] / "calibration" / "train"
    write(train / "3x3_5x5_89_e1_f0.3_seed0" / "metrics.json", {"epochs": 1, "train_seconds": 180.0})
    write(train / "3x3_5x5_89_e1_f0.3_seed1" / "metrics.json", {"epochs": 1, "train_seconds": 180.0})
    write(train / "interrupted" / "metrics.json", {"epochs": 1})  # no train_seconds: not a finished training
    assert fs.trained(a.out / fs.STUDIES["calibrate"]) == (pytest.approx(0.6), 360.0)
    assert fs.left_line(a, preset, "calibrate").startswith("; 0.6 of ~103 epochs trained at 10 min per epoch so far: "
                                                          "~17.1 h left at that pace (rough")
    write(train / "3x3_5x5_89_e1_f1_seed0" / "metrics.json", {"epochs": 1, "train_seconds": 420.0})
    assert fs.trained(a.out / fs.STUDIES["calibrate"]) == (pytest.approx(1.6), 780.0)
    assert fs.seconds_per_epoch(a.out / fs.STUDIES["calibrate"]) == 420.0  # the full epoch's pace, not 780 / 1.6
    assert "at 7 min per epoch so far: ~11.9 h left" in fs.left_line(a, preset, "calibrate")
    final = a.out / fs.STUDIES["select"] / "final" / "halving_seed0" / "metrics.json"
    write(final, {"epochs": 2, "train_seconds": 1200.0})  # a full-epoch run: its epochs as they are
    assert fs.trained(a.out / fs.STUDIES["select"]) == (2.0, 1200.0)
    assert fs.seconds_per_epoch(tmp_path / "nothing_yet") is None
    reused = a.out / fs.STUDIES["select"] / "halving_sync" / "rungs" / "0_e1_f0.111" / "metrics.json"
    write(a.out / fs.STUDIES["select"] / "halving" / "rungs" / "0_e1_f0.111" / "metrics.json",
          finished_training(0.5) | {"epochs": 1, "train_seconds": 90.0})
    fs.reuse_rungs(a.out / fs.STUDIES["select"])
    assert reused.exists() and fs.trained(a.out / fs.STUDIES["select"]) == (pytest.approx(2.111), 1290.0)  # once
    write(tmp_path / "stopped" / "run" / "metrics.json", {"epochs": 0, "train_seconds": 30.0})  # stopped in epoch 1
    assert fs.seconds_per_epoch(tmp_path / "stopped") is None

    proxy = a.out / fs.STUDIES["proxy"]
    assert fs.interim_line(proxy) == ""
    tau = {"hamming": {"tau": 0.1, "tau_ci": [-0.2, 0.4]}, "naswot": {"tau": 0.3, "tau_ci": [0.0, 0.5]},
           "params": {"tau": -0.05, "tau_ci": [None, None]}}  # an undefined interval is not printed
    write(proxy / "proxy_so_far.json", {"n": 20, "correlations": {"pooled": tau}})
    assert fs.interim_line(proxy) == "; so far on 20 architectures: tau(hamming) +0.10 [-0.20, +0.40] (proxy_so_far.md)"

    capsys.readouterr()
    write(a.results / fs.STUDIES["calibrate"] / "calibration" / "train" / "run" / "checkpoints" / "last.ckpt", "x")
    write(a.out / fs.STUDIES["calibrate"] / "calibration.json", "{}")  # the calibration's one step: done
    fs.status(a, preset)
    lines = {line.split(":")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "1 unfinished training(s) carry a checkpoint" in lines["calibrate"]
    assert lines["calibrate"].endswith(f"finished (records in {a.results / fs.STUDIES['calibrate']})")
    assert "continue with: python benchmarks/fmnist_studies.py select" in lines["select"]


def test_the_kernel_summary_pairs_each_set_with_the_first_by_seed(tmp_path):
    import argparse

    kernel = load("kernel_study")
    a = argparse.Namespace(results=tmp_path, out=tmp_path / "out", sets=["set1", "set3"], seeds=[0, 1, 2], epochs=2,
                           iters=10)
    accs = {("set1", 0): 0.80, ("set1", 1): 0.84, ("set1", 2): 0.82, ("set3", 0): 0.81, ("set3", 1): 0.86}
    for (kernel_set, seed), acc in accs.items():
        write(tmp_path / kernel.train_dir(a, kernel_set, seed).name / "metrics.json",
              finished_training(acc + 0.01, seed) | {"energy_uj": 3.0 if kernel_set == "set3" else 1.0,
                                                     "search_score": -100.0, "train_seconds": 60.0, "epochs": 2})
    kernel.summarise(a)
    text = (tmp_path / "summary.md").read_text()
    # set3 - set1 on seeds 0 and 1 only (set3 seed 2 unfinished): +1 and +2 points
    assert "- set3 - set1: seed 0: +1.00, seed 1: +2.00 (mean +1.50, sd 0.71, paired t-test p = 0.2" in text
    assert "energy per image 3.0x" in text and "Remaining: set3 seed 2" in text
    assert "0.51x its peak in the last epoch of 2" in text
    assert (tmp_path / "summary.png").read_bytes().startswith(b"\x89PNG")  # accuracy against energy per set


def test_accuracy_points_average_the_seeds_and_skip_picks_without_energy_or_runs():
    from kss.study.plots import accuracy_points

    rows = [{"label": "a", "energy_uj": 2.0, "test_acc": [0.80, 0.84, 0.82]},
            {"label": "b", "energy_uj": 5.0, "test_acc": [0.9]},
            {"label": "no energy", "energy_uj": None, "test_acc": [0.5]},
            {"label": "no runs", "energy_uj": 1.0, "test_acc": []}]
    (a, energy, accs, mean, sd), (b, _, _, b_mean, b_sd) = accuracy_points(rows)
    assert (a, energy, b) == ("a", 2.0, "b") and accs == pytest.approx([80, 84, 82])
    assert mean == pytest.approx(82.0) and sd == pytest.approx(2.0) and (b_mean, b_sd) == (pytest.approx(90.0), 0.0)


def test_carried_checkpoints_resume_an_unfinished_training_on_a_new_machine(compose_cfg, tmp_path, capsys):
    """save --checkpoints at a stop; a fresh checkout at the same path gets them back (moved out of docs/results),
    the training goes on from its last finished epoch (not from scratch) and tests its best epoch; checkpoints
    carried from another folder are not restored; the first save after a training finishes deletes its copy."""
    import csv
    import shutil
    import warnings

    from kss.tasks.train import run_train

    keep = load("keep")
    train = ["optimizer=adam", "optimizer.lr=1e-2", "scheduler=none", "iters=2", "dataset.train_size=96",
             "dataset.val_size=32", "dataset.test_size=32", "genotype=snasnet_cifar10", "model.cell_type=backward"]
    out, results = tmp_path / "outputs", tmp_path / "docs"
    run = Path("train") / "arch_seed0"
    run_train(compose_cfg(*train, "trainer.max_epochs=1", config_name="train"), out / run)
    (out / run / "metrics.json").unlink()  # stopped after its first epoch: a checkpoint, no result
    run_train(compose_cfg(*train, "trainer.max_epochs=1", config_name="train"), out / "train" / "done_seed0")
    assert keep.carry_checkpoints(out, results) == 2  # last.ckpt and the best epoch's; finished runs carry nothing
    carried = results / run / "checkpoints"
    assert sorted(p.name for p in carried.iterdir()) == ["best-epoch=000.ckpt", "carried.json", "last.ckpt"]
    assert not (results / "train" / "done_seed0" / "checkpoints").exists()
    assert fs.save(out, results) >= 1 and (carried / "last.ckpt").exists()  # still unfinished: kept

    elsewhere = tmp_path / "other_checkout"
    assert keep.restore_checkpoints(results, elsewhere) == 0  # Lightning's state names the files by absolute path
    assert "was carried from" in capsys.readouterr().err and (carried / "last.ckpt").exists()

    shutil.rmtree(out / run)  # the new machine: the same checkout path, nothing of the run but the carried files
    assert keep.restore_checkpoints(results, out) == 2 and not carried.exists()  # moved: a refusal cannot recur
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = run_train(compose_cfg(*train, "trainer.max_epochs=2", config_name="train"), out / run)
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]  # the best epoch's state is reloaded
    assert resumed["epochs"] == 2 and resumed["test_acc"] is not None
    trained = {int(row["epoch"]) for row in csv.DictReader((out / run / "csv" / "version_0" / "metrics.csv").open())
               if row.get("train/acc")}
    assert trained == {1}  # this machine trained only the second epoch
    keep.carry_checkpoints(out, results)  # a finished training: nothing carried
    fs.save(out, results)
    assert (results / run / "metrics.json").exists() and not carried.exists()
