import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException

from kss import config as C
from kss.errors import Interrupted, KssError
from kss.search.records import CANDIDATES, SUMMARY, read_candidates
from kss.tasks.search import run_search

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = {
    "kernel_set", "kernels", "cell_type", "iters", "seed", "dataset", "best_genotype", "best_score",
    "params", "search_seconds", "candidates_scored", "candidates_skipped", "device",
}


def lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / CANDIDATES).read_text().splitlines()]


def test_search_writes_the_output_contract(compose_cfg, tmp_path):
    summary = run_search(compose_cfg("kernel_set=set3", "iters=5"), tmp_path)
    assert CONTRACT <= summary.keys()
    assert json.loads((tmp_path / SUMMARY).read_text()) == summary
    assert summary["kernel_set"] == "set3" and summary["kernels"] == [3, 5] and summary["setting"] == "3x3_5x5_5x"
    records = lines(tmp_path)
    assert [r["index"] for r in records] == list(range(5))
    assert all({"index", "genotype", "score", "params", "seconds"} <= r.keys() for r in records)
    scored = [r for r in records if r["status"] == "scored"]
    best = max(scored, key=lambda r: r["score"])
    assert summary["best_score"] == best["score"] and summary["best_genotype"] == best["genotype"]
    assert summary["candidates_scored"] == len(scored) and summary["device"] == "cpu"


def test_same_seed_same_result_other_seed_other_result(compose_cfg, tmp_path):
    a = run_search(compose_cfg("seed=3"), tmp_path / "a")
    b = run_search(compose_cfg("seed=3"), tmp_path / "b")
    run_search(compose_cfg("seed=4"), tmp_path / "c")
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(lines(tmp_path / "a")) == strip(lines(tmp_path / "b"))
    assert (a["best_genotype"], a["best_score"]) == (b["best_genotype"], b["best_score"])
    assert strip(lines(tmp_path / "a")) != strip(lines(tmp_path / "c"))


def test_resume_equals_uninterrupted(compose_cfg, tmp_path):
    full = run_search(compose_cfg("iters=6"), tmp_path / "full")
    part = tmp_path / "part"
    run_search(compose_cfg("iters=3"), part)  # "interrupted" after 3 candidates
    written = (part / CANDIDATES).read_text()
    # and a crash in the middle of writing the 4th line
    with open(part / CANDIDATES, "a") as f:
        f.write('{"index": 3, "genotype": {"cell_ty')
    resumed = run_search(compose_cfg("iters=6"), part)
    assert (part / CANDIDATES).read_text().startswith(written)  # nothing rewritten
    same = lambda rs: [(r["genotype"], r["score"]) for r in rs]  # noqa: E731
    assert same(lines(part)) == same(lines(tmp_path / "full"))
    for key in ("best_genotype", "best_score", "best_index", "candidates_scored"):
        assert resumed[key] == full[key]


def test_finished_search_is_not_recomputed(compose_cfg, tmp_path):
    run_search(compose_cfg(), tmp_path)
    before = (tmp_path / CANDIDATES).read_text()
    run_search(compose_cfg(), tmp_path)
    assert (tmp_path / CANDIDATES).read_text() == before


def test_resume_refuses_other_settings(compose_cfg, tmp_path):
    run_search(compose_cfg("kernel_set=set1"), tmp_path)
    with pytest.raises(KssError, match="other settings .*kernels"):
        run_search(compose_cfg("kernel_set=set2"), tmp_path)


def test_settings_stored_at_their_defaults_resume_either_way(compose_cfg, tmp_path):
    """A search that wrote a later setting at its default (an earlier kss did, for precision) resumes,
    and one that wrote a non-default value still refuses."""
    from kss.search.records import SETTINGS

    run_search(compose_cfg("iters=2"), tmp_path)
    settings = json.loads((tmp_path / SETTINGS).read_text())
    (tmp_path / SETTINGS).write_text(json.dumps(settings | {"precision": "fp32", "cost_every": False}))
    assert run_search(compose_cfg("iters=3"), tmp_path)["candidates_scored"] == 3
    (tmp_path / SETTINGS).write_text(json.dumps(settings | {"precision": "bf16"}))
    with pytest.raises(KssError, match="other settings .*precision"):
        run_search(compose_cfg("iters=4"), tmp_path)


def test_a_search_scored_with_the_first_uploads_kernel_is_refused_in_one_line(compose_cfg, tmp_path):
    """A directory written before score_version existed holds R on the first upload's scale."""
    from kss.search.records import SETTINGS

    run_search(compose_cfg("iters=2"), tmp_path)
    settings = json.loads((tmp_path / SETTINGS).read_text())
    assert settings["score_version"] == 2 and settings["carry_state"] is True
    old = {k: v for k, v in settings.items() if k not in ("score_version", "carry_state")}
    (tmp_path / SETTINGS).write_text(json.dumps(old))
    with pytest.raises(KssError, match=r"score version 1 \(SNASNet's first upload.*version 2") as info:
        run_search(compose_cfg("iters=3"), tmp_path)
    assert "\n" not in str(info.value) and "hydra.run.dir=" in str(info.value)
    # independent repeats are another setting of the same version: refused as such
    (tmp_path / SETTINGS).write_text(json.dumps(settings))
    with pytest.raises(KssError, match="other settings .*carry_state"):
        run_search(compose_cfg("iters=3", "score.carry_state=false"), tmp_path)
    with pytest.raises(KssError, match="score.carry_state must be true or false"):
        run_search(compose_cfg("iters=3", "score.carry_state=sometimes"), tmp_path / "bad")


def test_resume_refuses_another_data_split(compose_cfg, tmp_path):
    run_search(compose_cfg("iters=2", "dataset.val_size=32"), tmp_path)
    with pytest.raises(KssError, match="other settings .*data_split"):
        run_search(compose_cfg("iters=3", "dataset.val_size=0"), tmp_path)


def test_budget_skips_candidates_before_building(compose_cfg, tmp_path):
    everything = run_search(compose_cfg("iters=8"), tmp_path / "all")
    params = sorted(r["params"] for r in lines(tmp_path / "all"))
    limit = params[len(params) // 2]
    summary = run_search(compose_cfg("iters=8", f"budget.max_params={limit}"), tmp_path / "budget")
    records = lines(tmp_path / "budget")
    over = [r for r in records if r["params"] > limit]
    assert over and all(r["status"] == "over_budget" and r["score"] is None for r in over)
    assert summary["candidates_skipped"] == len(over)
    assert summary["params"] <= limit
    assert everything["candidates_skipped"] == 0


def test_non_finite_scores_are_reported_never_best(compose_cfg, tmp_path, monkeypatch):
    import kss.search.candidate

    calls = iter([-math.inf, 1.0, math.nan, 0.5])
    monkeypatch.setattr(kss.search.candidate, "score_network", lambda *a, **k: next(calls))
    summary = run_search(compose_cfg("iters=4"), tmp_path)
    assert summary["best_score"] == 1.0 and summary["best_index"] == 1
    assert summary["candidates_non_finite"] == 2
    assert [r["raw_score"] for r in lines(tmp_path)] == ["-inf", None, "nan", None]


@pytest.mark.parametrize("cell_type", ["forward", "backward"])
@pytest.mark.parametrize("score", ["hamming", "naswot"])
def test_cell_types_and_score_kinds(compose_cfg, tmp_path, cell_type, score):
    summary = run_search(compose_cfg(f"model.cell_type={cell_type}", f"score={score}", "neuron=plif"), tmp_path)
    assert summary["cell_type"] == cell_type and summary["score_kind"] == score
    assert summary["best_genotype"]["cell_type"] == cell_type


@pytest.mark.parametrize("kernels, name", [("[3,5,7]", "custom"), ("[5]", "custom"), ("[3,5]", "set3")])
def test_custom_kernel_lists(compose_cfg, tmp_path, kernels, name):
    summary = run_search(compose_cfg(f"kernel_set.kernels={kernels}", "dataset.image_size=16"), tmp_path)
    assert summary["kernel_set"] == name
    used = {op for r in lines(tmp_path) for op in r["genotype"]["edges"].values() if op.startswith("conv")}
    assert used <= {f"conv{k}" for k in json.loads(kernels)}


@pytest.mark.parametrize("preset, iters", [("paper", 1000), ("snasnet", 5000), ("smoke", 10)])
def test_iteration_presets(compose_cfg, preset, iters):
    assert compose_cfg(f"iterations={preset}", tiny=False).iters == iters
    # an explicit iters wins over the preset
    assert compose_cfg(f"iterations={preset}", "iters=7", tiny=False).iters == 7


def test_every_kernel_set_composes_to_the_table_kss_reads(compose_cfg):
    assert len(C.KERNEL_SETS) == 6 and C.KERNEL_SETS["set1"] == (1, 3)  # the paper's six; set1 is SNASNet's
    for name, kernels in C.KERNEL_SETS.items():
        cfg = compose_cfg(f"kernel_set={name}", tiny=False)
        assert tuple(cfg.kernel_set.kernels) == kernels and cfg.kernel_set.name == name
        assert C.kernel_set(cfg) == (name, list(kernels))
    custom = compose_cfg("kernel_set.kernels=[3,9]", tiny=False)
    assert C.kernel_set(custom) == ("custom", [3, 9])


def test_a_kernel_set_file_must_carry_its_own_name(tmp_path):
    (tmp_path / "kernel_set").mkdir()
    (tmp_path / "kernel_set" / "set7.yaml").write_text("name: set1\nkernels: [9, 11]\n")
    with pytest.raises(KssError, match=r"set7.yaml names itself 'set1'; its name must be 'set7'"):
        C.read_kernel_sets(tmp_path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["kernel_set.kernels=[]"], "kernel set is empty"),
        (["kernel_set.kernels=[2,3]"], "positive odd"),
        (["kernel_set.kernels=[-3]"], "positive odd"),
        (["kernel_set=set4", "dataset.image_size=8"], "larger than cell 2's 4x4"),  # 7x7 on an 8px input
        (["iters=0"], "iters must be a positive integer"),
        (["iters=-5"], "iters must be a positive integer"),
        (["score.batch_size=1"], "at least 2 images"),
        (["score.batch_size=100000"], r"score.batch_size=100000 is larger than the synthetic training split .*"
                                      r"pass score.batch_size=224 or less"),
        (["budget.max_params=0"], "budget.max_params must be > 0"),
        (["device=cuda:0"], "CUDA is not available"),
        (["score.kind=synflow"], "unknown score kind"),
        (["dataset=cifar10", "dataset.root=/nonexistent/kss-data", "dataset.download=false"], "dataset=synthetic"),
    ],
)
def test_bad_input_gives_one_line(compose_cfg, tmp_path, overrides, message):
    with pytest.raises(KssError, match=message) as info:
        run_search(compose_cfg(*overrides), tmp_path)
    assert "\n" not in str(info.value)


def test_unknown_kernel_set_is_a_config_error(compose_cfg):
    with pytest.raises(MissingConfigException, match="kernel_set/set9"):
        compose_cfg("kernel_set=set9")


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "search.py", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_single_run_and_resume(tmp_path):
    args = ["kernel_set=set3", "iters=3", "dataset=synthetic", "model=tiny", "score.batch_size=16",
            "device=auto", f"hydra.run.dir={tmp_path}"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert summary["kernels"] == [3, 5] and summary["iters"] == 3
    assert "cand/s" in result.stderr  # progress bar with rate
    assert "first candidate took" in result.stdout and "the remaining 2 take about" in result.stdout
    fused = run_cli(*args[:-1], "iters=4", "score.fused=true", f"hydra.run.dir={tmp_path / 'fused'}")
    assert fused.returncode == 0, fused.stderr
    # the first candidate of a fused search compiles: the estimate comes from the second
    assert re.search(r"a candidate takes [\d.]+ s on cpu \(the first took [\d.]+ s, compiling score.fused's blocks\): "
                     r"the remaining 2 take about", fused.stdout), fused.stdout
    again = run_cli(*args)
    assert again.returncode == 0 and "already finished (3 of 3 candidates)" in again.stdout + again.stderr
    assert "resuming" not in again.stdout + again.stderr


@pytest.mark.slow
def test_cli_multirun_over_kernel_sets(tmp_path):
    result = run_cli("-m", "kernel_set=glob(*)", "iters=2", "dataset=synthetic", "model=tiny",
                     "score.batch_size=16", "dataset.image_size=16", "progress=false", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    summaries = sorted(tmp_path.glob("*/search.json"))
    assert len(summaries) == 6
    assert sorted(json.loads(p.read_text())["kernel_set"] for p in summaries) == [f"set{i}" for i in range(1, 7)]


@pytest.mark.slow
def test_cli_bad_input_is_one_line_no_traceback(tmp_path):
    result = run_cli("iters=0", "dataset=synthetic", "model=tiny", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: iters must be a positive integer")
    assert "Traceback" not in result.stderr
    unknown = run_cli("kernel_set=set9", f"hydra.run.dir={tmp_path}")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "kernel_set=set9 is not an option; use one of set1" in unknown.stderr


def test_budget_below_the_smallest_network_is_refused_before_any_work(compose_cfg, tmp_path):
    cfg = compose_cfg("model=snasnet_cifar100", "budget.max_params=10e6", "dataset.image_size=32")
    with pytest.raises(KssError, match=r"below the smallest network of this search space, 17\.\d\dM") as info:
        run_search(cfg, tmp_path / "run")
    message = str(info.value)
    assert "\n" not in message and "classifier's first Linear alone 16.78M" in message and "model.sap=4" in message
    assert not (tmp_path / "run").exists()
    # the same budget with the paper's preset (sap=4) is reachable
    run_search(compose_cfg("model=paper_cifar100", "model.c1=4", "model.c2=8", "model.hidden=16",
                           "budget.max_params=10e6", "iters=2"), tmp_path / "paper")
    assert (tmp_path / "paper" / SUMMARY).exists()


@pytest.mark.slow
def test_cli_budget_below_the_floor_exits_2_and_writes_nothing(tmp_path):
    run = tmp_path / "outputs" / "run"
    result = run_cli("dataset=synthetic", "model=snasnet_cifar100", "budget.max_params=1e6", f"hydra.run.dir={run}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: budget.max_params=1e+06 is below the smallest")
    assert "Traceback" not in result.stderr
    assert not run.exists()


def test_every_candidates_line_has_the_same_keys(compose_cfg, tmp_path):
    run_search(compose_cfg("iters=8", "model=cpu", "dataset.image_size=16", "budget.max_params=1.75e5"), tmp_path)
    rows = lines(tmp_path)
    assert {r["status"] for r in rows} >= {"over_budget", "scored"}
    assert len({tuple(sorted(r)) for r in rows}) == 1


def test_a_search_that_scores_nothing_fails_in_one_line_and_keeps_its_files(compose_cfg, tmp_path, monkeypatch):
    import kss.search.candidate

    monkeypatch.setattr(kss.search.candidate, "score_network", lambda *a, **k: -math.inf)
    with pytest.raises(KssError, match=r"no candidate could be scored \(0 over budget, 3 with a singular kernel, of 3\)"):
        run_search(compose_cfg("iters=3"), tmp_path)
    assert len(lines(tmp_path)) == 3 and (tmp_path / SUMMARY).exists()


def test_ctrl_c_during_a_search_keeps_what_finished(compose_cfg, tmp_path, interrupt_scoring):
    undo = interrupt_scoring(3)
    with pytest.raises(Interrupted, match="interrupted after 2 of 5 candidates; rerun the same command to resume"):
        run_search(compose_cfg("iters=5"), tmp_path)
    assert len(lines(tmp_path)) == 2
    undo()
    assert run_search(compose_cfg("iters=5"), tmp_path)["candidates_scored"] == 5


def test_cli_ctrl_c_is_one_line_and_exit_130(tmp_path):
    code = ("import sys, kss.search.candidate as s\n"
            "def stop(*a, **k):\n    raise KeyboardInterrupt\n"
            "s.score_network = stop\n"
            "sys.argv = ['search.py', *sys.argv[1:]]\n"
            "import runpy; runpy.run_path('search.py', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", code, "iters=3", "dataset=synthetic", "model=tiny", "score.batch_size=16",
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 130
    assert result.stderr.strip().splitlines()[-1] == "error: interrupted after 0 of 3 candidates; rerun the same command to resume"
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_refused_input_leaves_no_run_directory(tmp_path):
    for args in (["iters=-5"], ["dataset=cifar10", "dataset.root=/nonexistent/kss-data", "dataset.download=false"]):
        run = tmp_path / "outputs" / "run"
        result = run_cli(*args, "model=tiny", f"hydra.run.dir={run}")
        assert result.returncode == 2, result.stderr
        assert not run.exists(), list(run.rglob("*"))


def test_a_second_process_on_a_locked_run_directory_refuses(compose_cfg, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom kss.runlock import run_lock\n"
                               f"with run_lock({str(tmp_path)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(KssError, match=rf"is in use by pid {holder.pid} on .*lock_wait=true") as info:
            run_search(compose_cfg("iters=2"), tmp_path)
        assert "\n" not in str(info.value)
        assert not (tmp_path / CANDIDATES).exists()  # nothing interleaved
    finally:
        holder.kill()
        holder.wait()
    assert run_search(compose_cfg("iters=2"), tmp_path)["candidates_scored"] == 2  # a dead holder frees it


def test_a_full_disk_is_one_line_and_keeps_what_was_written(compose_cfg, tmp_path, monkeypatch, capsys):
    import errno
    import os

    import kss.search.loop
    from kss.cli import run_task

    run_search(compose_cfg("iters=2"), tmp_path)  # two finished candidates on disk
    before = (tmp_path / CANDIDATES).read_text()

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(kss.search.loop, "write_json", full)
    with pytest.raises(SystemExit) as exit_info:
        run_task(lambda cfg: run_search(cfg, tmp_path), compose_cfg("iters=3", "extras=none"), "search")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: could not write") and "No space left on device" in err[0]
    lines_after = (tmp_path / CANDIDATES).read_text().splitlines()
    assert (tmp_path / CANDIDATES).read_text().startswith(before) and len(lines_after) == 3
    assert all(json.loads(line) for line in lines_after)  # every line still valid JSON


def test_paths_are_anchored_at_the_project_root_or_kss_root(compose_cfg, monkeypatch, tmp_path):
    from omegaconf import OmegaConf

    monkeypatch.delenv("KSS_ROOT", raising=False)
    monkeypatch.delenv("KSS_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # not the current directory
    cfg = compose_cfg(tiny=False)
    assert cfg.paths.root_dir == str(ROOT) and cfg.dataset.root == str(ROOT / "data")
    run_dir = OmegaConf.to_container(compose_cfg(tiny=False, hydra=True).hydra.run, resolve=False)["dir"]
    assert run_dir.startswith("${paths.output_dir}/search/")
    monkeypatch.setenv("KSS_ROOT", str(tmp_path))
    moved = compose_cfg(tiny=False)
    assert moved.paths.output_dir == str(tmp_path / "outputs") and moved.dataset.root == str(tmp_path / "data")
    monkeypatch.setenv("KSS_DATA_DIR", "/datasets")
    assert compose_cfg(tiny=False).dataset.root == "/datasets"


def test_search_help_lists_only_what_a_search_reads():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = {line.split(":")[0] for line in groups.splitlines() if ": " in line}
    assert {"kernel_set", "iterations", "dataset", "model", "neuron", "score", "experiment"} <= listed
    assert not listed & {"optimizer", "scheduler", "trainer", "callbacks", "debug", "hparams_search"}
    assert "set1, set2, set3, set4, set5, set6" in groups
    halving = result.stdout.split("== search.strategy=halving ==")[1]  # the one strategy that trains
    assert {line.split(":")[0] for line in halving.splitlines() if ": " in line} >= {"optimizer", "scheduler", "trainer", "callbacks"}


def test_experiment_presets_compose_with_search(compose_cfg, tmp_path):
    from kss.config import without_training

    cfg = compose_cfg("experiment=fmnist_cpu", tiny=False)
    assert (cfg.dataset.name, cfg.model.c1, cfg.iters, cfg.score.batch_size) == ("fashion_mnist", 16, 50, 128)
    assert not {"optimizer", "scheduler", "trainer"} & set(without_training(cfg))
    for preset in ("paper_cifar10", "paper_cifar100"):
        assert compose_cfg(f"experiment={preset}", tiny=False).model.sap == 4
    # the preset's training settings still reach train.py
    assert compose_cfg("experiment=fmnist_cpu", config_name="train", tiny=False).optimizer._target_.endswith("AdamW")
    summary = run_search(without_training(compose_cfg("experiment=fmnist_cpu", "dataset=synthetic", "model=tiny",
                                                      "dataset.val_size=32", "iters=2", "score.batch_size=8",
                                                      "wandb.mode=disabled")), tmp_path)
    assert summary["iters"] == 2 and summary["best_genotype"]


def test_bf16_search_completes_with_finite_scores(compose_cfg, tmp_path):
    summary = run_search(compose_cfg("score.precision=bf16", "iters=3"), tmp_path)
    records = read_candidates(tmp_path / CANDIDATES)
    assert summary["precision"] == "bf16" and summary["layout"] == "channels_last" and len(records) == 3
    assert all(r["status"] == "scored" and math.isfinite(r["score"]) for r in records)


@pytest.mark.parametrize("override, message", [("score.precision=tf32", "needs a CUDA device"),
                                               ("score.precision=fp8", "unknown score.precision"),
                                               ("score.layout=nhwc", "unknown score.layout"),
                                               ("score.cudnn_benchmark=maybe", "must be true or false")])
def test_bad_precision_is_refused_in_one_line(compose_cfg, tmp_path, override, message):
    with pytest.raises(KssError, match=message) as info:
        run_search(compose_cfg(override, "iters=1"), tmp_path)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "search_settings.json").exists()  # refused before anything is written


def test_fused_setting_does_not_split_a_search(compose_cfg, tmp_path):
    """score.fused gives the same bits, so a search started with it resumes without it, and agrees."""
    run_search(compose_cfg("score.fused=true", "iters=2"), tmp_path)
    summary = run_search(compose_cfg("score.fused=false", "iters=3"), tmp_path)
    fused = [r["score"] for r in read_candidates(tmp_path / CANDIDATES)]
    plain = run_search(compose_cfg("score.fused=false", "iters=3"), tmp_path / "plain")
    assert summary["candidates_scored"] == 3 and plain["best_score"] == summary["best_score"]
    assert fused == [r["score"] for r in read_candidates(tmp_path / "plain" / CANDIDATES)]


def test_dataset_synthetic_runs_with_its_defaults(compose_cfg, tmp_path):
    """The synthetic preset brings a scoring batch its 224-image training split can serve."""
    cfg = compose_cfg("dataset=synthetic", "iters=2", "progress=false", "wandb.mode=disabled", tiny=False)
    assert cfg.score.batch_size == 128 and cfg.model.c1 == 4  # the preset's batch and its tiny model
    assert run_search(cfg, tmp_path)["candidates_scored"] == 2
    assert compose_cfg("dataset=fashion_mnist", tiny=False).score.batch_size == 256  # other datasets: SNASNet's 256


def test_after_scoring_large_tensors_are_recycled_not_mapped_afresh():
    """After a keep_freed search, a training in the same process (train.py searches first) must not pay a page
    fault per page of every large tensor: mallopt had switched glibc's dynamic mmap threshold off for good,
    and 128 KiB left behind made that training 1.6x slower (issue 21). A fresh interpreter, so that nothing
    this test process freed before has moved the threshold."""
    import kss.search.setup

    if kss.search.setup._glibc() is None:
        pytest.skip("not glibc")
    probe = """
import resource, types, torch
from kss.search.setup import scoring_allocator
with scoring_allocator(types.SimpleNamespace(allocator="keep_freed"), torch.device("cpu")):
    torch.ones(1 << 22).sum()  # scoring: 16 MiB in and out of the kept heap
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    torch.ones(1 << 20)  # 4 MiB: 1024 pages, each faulted in again if every tensor is a fresh mmap
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    faults = int(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)
    assert faults < 50 * 1024 // 4, f"{faults} page faults for 50 reused 4 MiB tensors"


def test_the_allocator_default_gives_the_same_bits_and_is_switchable(compose_cfg, tmp_path, monkeypatch):
    """score.allocator=keep_freed (default) keeps freed memory while scoring; default leaves glibc alone.
    The same R either way, so it is not a setting: a search resumes under the other one."""
    import kss.search.setup

    if kss.search.setup._glibc() is None:
        pytest.skip("not glibc")
    calls = []

    class Recording:  # glibc, with its mallopt calls recorded
        def __init__(self, libc):
            self.libc = libc

        def mallopt(self, param, value):
            calls.append((param, value))
            return self.libc.mallopt(param, value)

        def malloc_trim(self, pad):
            return self.libc.malloc_trim(pad)

    libc = kss.search.setup._glibc()
    monkeypatch.setattr(kss.search.setup, "_glibc", lambda: Recording(libc))
    kept = run_search(compose_cfg("iters=3"), tmp_path / "kept")
    assert kept["allocator"] == "keep_freed" and calls[:2] == [(-4, 0), (-1, -1)]  # no mmap, never trim
    assert calls[2:] == [(-4, 65536), (-3, 32 << 20), (-1, 64 << 20)]  # mmap again, at the dynamic rule's ceiling
    calls.clear()
    plain = run_search(compose_cfg("iters=3", "score.allocator=default"), tmp_path / "plain")
    assert plain["allocator"] == "default" and calls == []
    assert [r["score"] for r in lines(tmp_path / "kept")] == [r["score"] for r in lines(tmp_path / "plain")]
    assert "allocator" not in json.loads((tmp_path / "kept" / "search_settings.json").read_text())
    resumed = run_search(compose_cfg("iters=4", "score.allocator=default"), tmp_path / "kept")  # not a setting
    assert resumed["candidates_scored"] == 4
    with pytest.raises(KssError, match="score.allocator must be keep_freed or default"):
        run_search(compose_cfg("score.allocator=tcmalloc"), tmp_path / "bad")
