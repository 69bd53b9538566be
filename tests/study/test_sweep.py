import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from kss.study.analysis import BASELINE, PLAN, aggregate, analyse, collect, complete_front
from kss.errors import KssError
from kss.tasks.sweep import plan_from_config, run_sweep

ROOT = Path(__file__).resolve().parents[2]


def write_job(root: Path, kernels, iters, seed, acc=None, params=1000, score=1.0, seconds=10.0, failed=None,
              energy=None, sops=None):
    tag = "_".join(f"{k}x{k}" for k in kernels)
    job = root / "jobs" / f"{tag}_{iters}x_seed{seed}"
    job.mkdir(parents=True)
    common = {"kernels": kernels, "iters": iters, "seed": seed, "dataset": "synthetic"}
    if failed:
        (job / "failed.json").write_text(json.dumps({**common, "kind": "train", "error": failed}))
        return job
    (job / "search.json").write_text(json.dumps({**common, "best_score": score, "params": params,
                                                 "search_seconds": seconds, "best_genotype": {}}))
    if acc is not None:
        (job / "metrics.json").write_text(json.dumps({**common, "test_acc": acc, "best_val_acc": acc - 0.01,
                                                      "params": params, "search_score": score,
                                                      "search_seconds": seconds, "checkpoint": str(job / "best.ckpt"),
                                                      **({"energy_uj": energy, "sops": sops, "firing_rate": 0.1,
                                                          "neuron_state_bytes": 400} if energy is not None else {})}))
    return job


def test_seeds_are_averaged_and_search_time_is_normalised(tmp_path):
    write_job(tmp_path, [1, 3], 5000, 0, acc=0.80, seconds=50)
    write_job(tmp_path, [1, 3], 5000, 1, acc=0.90, seconds=30)
    write_job(tmp_path, [3, 5], 1000, 0, acc=0.70, seconds=12)
    rows = {r.setting: r for r in aggregate(collect(tmp_path))}
    base = rows[BASELINE]
    assert base.seeds == [0, 1] and base.complete == 2
    assert base.test_acc_mean == pytest.approx(0.85) and base.test_acc_std == pytest.approx(math.sqrt(0.005))
    assert base.search_seconds_mean == 40 and base.search_time_normalised == 1.0
    assert rows["3x3_5x5_1000x"].search_time_normalised == pytest.approx(12 / 40)


def test_budget_excludes_the_best_model(tmp_path):
    write_job(tmp_path, [5, 7], 1000, 0, acc=0.95, params=5000)
    write_job(tmp_path, [3, 5], 1000, 0, acc=0.90, params=2000)
    write_job(tmp_path, [1, 3], 1000, 0, acc=0.80, params=1000)
    assert analyse(tmp_path, plots=False)["selection"]["selected"] == "5x5_7x7_1000x"
    selection = analyse(tmp_path, max_params=3000, plots=False)["selection"]
    assert selection["selected"] == "3x3_5x5_1000x" and selection["params"] == 2000
    assert selection["checkpoint"].endswith("3x3_5x5_1000x_seed0/best.ckpt")
    assert selection["genotype_file"].endswith("3x3_5x5_1000x_seed0/search.json")
    nothing = analyse(tmp_path, max_params=500, plots=False)["selection"]
    assert nothing["selected"] is None and "no setting fits the budget of 500" in nothing["message"]


def test_energy_and_sop_budgets_change_the_selection_and_are_all_reported(tmp_path, capsys):
    write_job(tmp_path, [5, 7], 1000, 0, acc=0.95, params=5000, energy=3.0, sops=3e6)
    write_job(tmp_path, [3, 5], 1000, 0, acc=0.90, params=2000, energy=2.0, sops=1e6)
    write_job(tmp_path, [1, 3], 1000, 0, acc=0.80, params=1000, energy=1.0, sops=2e6)
    assert analyse(tmp_path, plots=False)["selection"]["selected"] == "5x5_7x7_1000x"
    energy = analyse(tmp_path, max_energy_uj=2.5, plots=False)["selection"]
    assert energy["selected"] == "3x3_5x5_1000x" and energy["energy_uj"] == 2.0
    both = analyse(tmp_path, max_params=6000, max_energy_uj=2.5, max_sops=1.5e6, plots=False)["selection"]
    assert both["selected"] == "3x3_5x5_1000x"
    assert both["budgets_checked"] == [
        "max_params <= 6000 parameters: 3 of 3 settings fit",
        "max_energy_uj <= 2.5 uJ per image: 2 of 3 settings fit",
        "max_sops <= 1.5e+06 synaptic operations per image: 1 of 2 settings fit"]
    assert all(line in both["message"] for line in both["budgets_checked"])
    assert "max_sops <= 1.5e+06" in (tmp_path / "summary.md").read_text()
    none = analyse(tmp_path, max_energy_uj=0.5, plots=False)["selection"]
    assert none["selected"] is None and "no setting fits the budget of 0.5 uJ per image" in none["message"]
    result = analyse(tmp_path, max_energy_uj=2.5)
    assert "tradeoff_energy.png" in {p.name for p in result["plots"]}


def test_a_cost_budget_excludes_runs_without_cost_figures(tmp_path):
    write_job(tmp_path, [1, 3], 1000, 0, acc=0.9)  # from before kss measured costs
    write_job(tmp_path, [3, 5], 1000, 0, acc=0.8, energy=1.0, sops=1e5)
    selection = analyse(tmp_path, max_energy_uj=2.0, plots=False)["selection"]
    assert selection["selected"] == "3x3_5x5_1000x" and "(1 without the figure)" in selection["message"]


def test_every_seed_must_fit_the_budget(tmp_path):
    write_job(tmp_path, [3, 5], 1000, 0, acc=0.9, params=900)
    write_job(tmp_path, [3, 5], 1000, 1, acc=0.9, params=1100)  # this seed's model is too big
    write_job(tmp_path, [1, 3], 1000, 0, acc=0.8, params=500)
    assert analyse(tmp_path, max_params=1000, plots=False)["selection"]["selected"] == "1x1_3x3_1000x"


def test_ties_go_to_fewer_parameters(tmp_path):
    write_job(tmp_path, [3, 5], 1000, 0, acc=0.85, params=1000)
    write_job(tmp_path, [1, 5], 1000, 0, acc=0.85, params=800)
    write_job(tmp_path, [1, 7], 1000, 0, acc=0.85, params=900)
    assert analyse(tmp_path, plots=False)["selection"]["selected"] == "1x1_5x5_1000x"


def test_failed_and_missing_jobs_are_listed_and_the_rest_analysed(tmp_path):
    write_job(tmp_path, [1, 3], 1000, 0, acc=0.8)
    write_job(tmp_path, [3, 5], 1000, 0, failed="KssError: out of memory")
    (tmp_path / PLAN).write_text(json.dumps({"kind": "train", "dataset": "synthetic", "jobs": [
        {"kernels": [1, 3], "iters": 1000, "seed": 0, "dir": "jobs/1x1_3x3_1000x_seed0"},
        {"kernels": [3, 5], "iters": 1000, "seed": 0, "dir": "jobs/3x3_5x5_1000x_seed0"},
        {"kernels": [5, 7], "iters": 1000, "seed": 0, "dir": "jobs/5x5_7x7_1000x_seed0"},
    ]}))
    result = analyse(tmp_path, plots=False)
    status = {j.setting: j.status for j in result["jobs"]}
    assert status == {"1x1_3x3_1000x": "complete", "3x3_5x5_1000x": "failed", "5x5_7x7_1000x": "missing"}
    assert result["selection"]["selected"] == "1x1_3x3_1000x"
    summary = (tmp_path / "summary.md").read_text()
    assert "out of memory" in summary and "5x5_7x7_1000x seed 0 (missing)" in summary
    data = json.loads((tmp_path / "summary.json").read_text())
    assert len(data["failed"]) == 1 and len(data["missing"]) == 1


def test_a_failure_after_a_finished_run_counts_as_failed(tmp_path):
    import os

    job = write_job(tmp_path, [1, 3], 1000, 0, acc=0.8)
    (job / "failed.json").write_text(json.dumps({"kind": "train", "error": "KssError: other settings"}))
    os.utime(job / "metrics.json", (1, 1))  # the result is older than the failure
    assert collect(tmp_path)[0].status == "failed"


def test_pareto_front(tmp_path):
    for kernels, acc, params in [([1, 3], 0.80, 1000), ([1, 5], 0.78, 1500), ([3, 5], 0.85, 2000), ([5, 7], 0.84, 3000)]:
        write_job(tmp_path, kernels, 1000, 0, acc=acc, params=params)
    front = [r.setting for r in complete_front(aggregate(collect(tmp_path)))]
    assert front == ["1x1_3x3_1000x", "3x3_5x5_1000x"]


def test_search_only_sweeps_rank_by_score(tmp_path):
    write_job(tmp_path, [1, 3], 1000, 0, score=5.0)
    write_job(tmp_path, [3, 5], 1000, 0, score=7.0)
    result = analyse(tmp_path)
    assert result["selection"]["selected"] == "3x3_5x5_1000x" and result["selection"]["metric"] == "score"
    assert {p.name for p in result["plots"]} == {"accuracy.png", "search_time.png", "tradeoff.png"}


def test_plot_panels_have_their_own_letters_and_the_pareto_front_a_visible_legend_entry(tmp_path, monkeypatch):
    import kss.study.plots

    for k, acc in [(1, 0.7), (3, 0.8)]:
        job = write_job(tmp_path, [k, k + 2], 1000, 0, acc=acc, params=1000 * k)
        (job / "csv" / "version_0").mkdir(parents=True)
        (job / "csv" / "version_0" / "metrics.csv").write_text("epoch,val/acc\n0,0.5\n1,0.6\n")
    figures = {}
    real = kss.study.plots._save
    monkeypatch.setattr(kss.study.plots, "_save", lambda fig, path: figures.setdefault(path.name, fig) and real(fig, path))
    analyse(tmp_path)
    titles = [ax.get_title() for fig in figures.values() for ax in fig.axes]
    letters = [t.split(")")[0] + ")" for t in titles if t.startswith("(")]
    assert len(letters) == len(set(letters)) >= 4, titles  # accuracy.png: (a) and (b)
    legend = figures["tradeoff.png"].axes[0].get_legend()
    front = next(h for h, t in zip(legend.legend_handles, legend.get_texts()) if t.get_text() == "Pareto front")
    assert front.get_linestyle() not in ("None", "") and front.get_marker() not in (None, "None", "")


def test_plots_written_and_kernel_size_plot_for_single_kernels(tmp_path):
    for k, acc in [(1, 0.7), (3, 0.8), (5, 0.82), (7, 0.81)]:
        write_job(tmp_path, [k], 1000, 0, acc=acc, params=1000 * k)
    result = analyse(tmp_path, max_params=4000)
    names = {p.name for p in result["plots"]}
    assert names == {"accuracy.png", "search_time.png", "tradeoff.png", "kernel_sizes.png"}
    assert all(p.stat().st_size > 5000 for p in result["plots"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["kernel_sets=[set1,set9]"], "unknown kernel set 'set9'"),
        (["kernel_sets=[]"], "kernel_sets is empty"),
        (["kernel_sets=[[2]]"], "positive odd"),
        (["iters=[]"], "iters is empty"),
        (["seeds=[]"], "seeds is empty"),
        (["iters=[0]"], "iters must be positive"),
        (["budget.max_params=0"], "budget.max_params must be > 0"),
        (["budget.max_sops=-5"], "budget.max_sops must be > 0"),
    ],
)
def test_bad_sweep_input(compose_cfg, overrides, message):
    with pytest.raises(KssError, match=message):
        plan_from_config(compose_cfg(*overrides, config_name="sweep", tiny=False))


def test_analyse_bad_directories(tmp_path):
    with pytest.raises(KssError, match="not a directory"):
        analyse(tmp_path / "nope")
    with pytest.raises(KssError, match="holds no kss runs"):
        analyse(tmp_path)
    with pytest.raises(KssError, match="budget.max_params must be > 0"):
        write_job(tmp_path, [1, 3], 1000, 0, acc=0.8)
        analyse(tmp_path, max_params=-1, plots=False)
    with pytest.raises(KssError, match="budget.max_energy_uj must be > 0"):
        analyse(tmp_path, max_energy_uj=-1, plots=False)


@pytest.mark.parametrize("launcher, target", [("joblib", "JoblibLauncher"), ("slurm_gpu", "SlurmLauncher"),
                                              ("basic", "BasicLauncher")])
def test_launcher_configs_compose(compose_cfg, launcher, target):
    cfg = compose_cfg(f"hydra/launcher={launcher}", config_name="sweep", tiny=False, hydra=True)
    assert target in cfg.hydra.launcher._target_
    if launcher == "slurm_gpu":
        assert cfg.hydra.launcher.gpus_per_node == 1


def test_dry_run_prints_the_plan_with_estimates(compose_cfg, tmp_path, capsys):
    done = write_job(tmp_path, [1, 3], 2, 0, acc=0.5)
    (done / "search.json").write_text(json.dumps({"kernels": [1, 3], "iters": 2, "seed": 0, "dataset": "synthetic",
                                                  "model": {}, "candidates_per_second": 4.0, "candidates_scored": 2}))
    cfg = compose_cfg("kernel_sets=[set1,set3,set5]", "iters=[2]", "dry_run=true", config_name="sweep")
    measured = tmp_path / "earlier"  # a search of set3 at 0.5 candidates/s with the same model
    measured.mkdir()
    (measured / "search.json").write_text(json.dumps({"kernels": [3, 5], "dataset": "synthetic", "candidates_per_second": 0.5,
                                                      "candidates_scored": 4, "model": dict(cfg.model)}))
    # an all-over-budget search of set3 "ran" at 1000 candidates/s: it scored nothing, so it must not count
    skipped = tmp_path / "skipped"
    skipped.mkdir()
    (skipped / "search.json").write_text(json.dumps({"kernels": [3, 5], "dataset": "synthetic", "candidates_per_second": 1000,
                                                     "candidates_scored": 0, "model": dict(cfg.model)}))
    run_sweep(cfg, tmp_path, passed=["dataset=synthetic"], hydra_passed=["hydra/launcher=joblib"])
    out = capsys.readouterr().out
    assert "3 train jobs" in out and "1x1_3x3_2x" in out and "done" in out
    assert "3x3_5x5_2x             seed 0   search ~0.1 min" in out  # 2 candidates / 0.5 per s
    # set5 was never run: measured here, so the plan has a number, not "unknown"
    line = next(line for line in out.splitlines() if line.strip().startswith("3x3_7x7_2x"))
    assert "unknown" not in line and "search ~" in line and "train ~" in line
    assert "hydra/launcher=joblib" in out and not (tmp_path / PLAN).exists()


@pytest.mark.slow
def test_tiny_sweep_end_to_end_and_rerun_skips_finished_jobs(compose_cfg, tmp_path):
    passed = ["dataset=synthetic", "model=tiny", "score.batch_size=16", "trainer.max_epochs=1",
              "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
              "wandb.mode=disabled", "progress=false", "optimizer=adam", "optimizer.lr=1e-2"]
    cfg = compose_cfg("iters=[2]", "seeds=[0]", "budget.max_params=1e5", *passed, config_name="sweep")
    result = run_sweep(cfg, tmp_path, passed=passed)
    rows = result["settings"]
    assert len(rows) == 6 and all(r.complete == 1 and r.test_acc_mean is not None for r in rows)
    assert sorted(r.kernel_set for r in rows) == [f"set{i}" for i in range(1, 7)]
    assert len((tmp_path / "summary.csv").read_text().strip().splitlines()) == 7
    assert {p.name for p in result["plots"]} >= {"accuracy.png", "search_time.png", "tradeoff.png"}
    assert all(p.stat().st_size > 5000 for p in result["plots"])
    assert result["selection"]["selected"] is not None and Path(result["selection"]["genotype_file"]).exists()
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("jobs/*/metrics.json")}
    assert len(stamps) == 6
    run_sweep(cfg, tmp_path, passed=passed)  # rerun: finished jobs report, nothing recomputed
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("jobs/*/metrics.json")} == stamps


@pytest.mark.slow
def test_plain_multirun_can_be_analysed(tmp_path):
    result = subprocess.run(
        [sys.executable, "search.py", "-m", "kernel_set=set1,set3", "iters=2", "dataset=synthetic", "model=tiny",
         "score.batch_size=16", "progress=false", "wandb.mode=disabled", f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    analysed = subprocess.run([sys.executable, "sweep.py", f"analyse={tmp_path}", "wandb.mode=disabled",
                               f"hydra.run.dir={tmp_path / 'analysis'}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert analysed.returncode == 0, analysed.stderr
    assert len((tmp_path / "summary.csv").read_text().strip().splitlines()) == 3
    assert (tmp_path / "tradeoff.png").exists()


@pytest.mark.slow
def test_a_failing_job_is_reported_and_the_others_still_run(compose_cfg, tmp_path):
    passed = ["dataset=synthetic", "model=tiny", "score.batch_size=16", "trainer.fast_dev_run=true",
              "wandb.mode=disabled", "progress=false"]
    # a 9x9 kernel does not fit the 8x8 map of cell 2: that job fails, set1's must not
    cfg = compose_cfg("kernel_sets=[[9],set1]", "iters=[2]", *passed, config_name="sweep")
    with pytest.raises(KssError, match=r"^1 of 2 jobs failed .*: .*9x9_2x_seed0/failed.json$"):  # exit 2, after...
        run_sweep(cfg, tmp_path, passed=passed)
    result = json.loads((tmp_path / "summary.json").read_text())  # ... writing what it could
    assert [j["kernels"] for j in result["failed"]] == [[9]]
    assert "larger than cell 2" in (tmp_path / "summary.md").read_text()
    assert result["selection"]["selected"] == "1x1_3x3_2x"


def test_summary_table_goes_to_wandb_offline(compose_cfg, tmp_path):
    from kss.tasks.sweep import log_summary_to_wandb

    write_job(tmp_path, [1, 3], 1000, 0, acc=0.8)
    write_job(tmp_path, [3, 5], 1000, 0, acc=0.9)
    summary = analyse(tmp_path)
    log_summary_to_wandb(compose_cfg("wandb.mode=offline", "name=unit", config_name="sweep"), tmp_path, summary)
    run = next((tmp_path / "wandb").glob("offline-run-*"))
    assert list(run.glob("*.wandb"))  # the run's data file, ready for `wandb sync`


@pytest.mark.slow
def test_search_only_sweep(compose_cfg, tmp_path):
    passed = ["experiment=fmnist_cpu", "dataset=synthetic", "dataset.val_size=32", "model=tiny", "score.batch_size=16",
              "wandb.mode=disabled", "progress=false"]  # a training preset must not break a search-only sweep
    cfg = compose_cfg("kernel_sets=[set1,set3]", "iters=[3]", "train=false", *passed, config_name="sweep")
    result = run_sweep(cfg, tmp_path, passed=passed)
    assert [j.status for j in result["jobs"]] == ["complete", "complete"]
    assert all(j.kind == "search" and not (Path(j.path) / "metrics.json").exists() for j in result["jobs"])
    assert result["selection"]["metric"] == "score"


def test_kernel_sets_are_compared_with_set1_paired_by_seed(tmp_path):
    for seed, (base, better, same) in enumerate([(0.80, 0.85, 0.81), (0.82, 0.86, 0.80), (0.81, 0.87, 0.82)]):
        write_job(tmp_path, [1, 3], 50, seed, acc=base)
        write_job(tmp_path, [3, 5], 50, seed, acc=better)
        write_job(tmp_path, [5, 7], 50, seed, acc=same)
    result = analyse(tmp_path, plots=False)
    rows = {r.setting: r for r in result["settings"]}
    assert rows["1x1_3x3_50x"].vs_set1 is None
    better = rows["3x3_5x5_50x"].vs_set1
    assert better["seeds"] == [0, 1, 2] and better["mean_diff"] == pytest.approx(0.05)
    assert better["beyond_seed_spread"] and not rows["5x5_7x7_50x"].vs_set1["beyond_seed_spread"]
    text = (tmp_path / "summary.md").read_text()
    assert "3x3_5x5_50x vs 1x1_3x3_50x: +5.00" in text and "larger than the seed spread" in text
    assert "5x5_7x7_50x vs 1x1_3x3_50x" in text and "within the seed spread" in text
    # selection uses validation accuracy, never the test split
    assert result["selection"]["metric"] == "best_val_acc"


@pytest.mark.slow
def test_ray_launcher_runs_a_tiny_multirun(tmp_path):
    """Only where the launchers extra is installed (Ray is large, so CI's dev extra leaves it out)."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    result = subprocess.run(
        [sys.executable, "search.py", "-m", "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
         "kernel_set=set1,set3", "iters=2", "dataset=synthetic", "model=tiny", "score.batch_size=8",
         "wandb.mode=disabled", "extras=none", "progress=false", f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list(tmp_path.glob("*/search.json"))) == 2


def test_strategies_are_planned_and_compared_like_kernel_sets(compose_cfg, tmp_path):
    cfg = compose_cfg("kernel_sets=[set3]", "iters=[4]", "strategies=[random,tpe]", "train=false", config_name="sweep",
                      tiny=False)
    the_plan = plan_from_config(cfg)
    assert [j["dir"] for j in the_plan["jobs"]] == ["jobs/3x3_5x5_4x_seed0", "jobs/3x3_5x5_4x_tpe_seed0"]
    assert the_plan["strategies"] == ["random", "tpe"] and "strategies" not in plan_from_config(
        compose_cfg("kernel_sets=[set3]", config_name="sweep", tiny=False))
    with pytest.raises(KssError, match="unknown strategy 'annealing'"):
        plan_from_config(compose_cfg("strategies=[random,annealing]", config_name="sweep", tiny=False))
    with pytest.raises(KssError, match="cannot hold halving .*search.strategy=halving"):
        plan_from_config(compose_cfg("strategies=[random,halving]", config_name="sweep", tiny=False))
    # the analysis: a random search of 8 and a tpe search that reaches its best R at its 3rd candidate
    for strategy, scores in (("random", [1.0, 2.0, 5.0, 3.0, 1.0, 0.0, 4.0, 2.0]), ("tpe", [2.0, 4.0, 6.0, 1.0])):
        job = tmp_path / "jobs" / f"3x3_5x5_{len(scores)}x{'' if strategy == 'random' else '_tpe'}_seed0"
        job.mkdir(parents=True)
        common = {"kernels": [3, 5], "iters": len(scores), "seed": 0, "dataset": "synthetic"}
        (job / "search.json").write_text(json.dumps({**common, "best_score": max(scores), "params": 1000,
                                                     "search_seconds": 1.0, "best_genotype": {},
                                                     **({} if strategy == "random" else {"strategy": "tpe"})}))
        (job / "candidates.jsonl").write_text("".join(json.dumps({"index": i, "status": "scored", "score": v}) + "\n"
                                                      for i, v in enumerate(scores)))
    result = analyse(tmp_path)
    rows = {r.setting: r for r in result["settings"]}
    assert set(rows) == {"3x3_5x5_8x", "3x3_5x5_4x_tpe"}
    assert rows["3x3_5x5_4x_tpe"].trials_to_random_best == 3 and rows["3x3_5x5_4x_tpe"].reached_random_best == "1/1 seeds vs random 8"
    assert "search_time_guided.png" in {p.name for p in result["plots"]}
    assert "trials_to_random_best" in (tmp_path / "summary.md").read_text()
