"""Sharded search (kss.search.shards): shards=N shard=K split one search; merged, it is the unsharded search."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from kss.errors import Interrupted, KssError
from kss.runlock import run_lock
from kss.search.records import CANDIDATES, SETTINGS, SUMMARY
from kss.tasks.search import run_search
from kss.search.shards import shard_candidates, shard_lock, shard_summary
from kss.tasks.search import check_sharding

ROOT = Path(__file__).resolve().parents[2]
TIMING = {"search_seconds", "candidates_per_second", "host"}  # what may differ between two runs of one search
TINY_CLI = ["dataset=synthetic", "model=tiny", "score.batch_size=16", "progress=false", "wandb.mode=disabled",
            "extras=none", "device=cpu"]


def candidates(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run_dir / CANDIDATES).read_text().splitlines()]


def summary(run_dir: Path) -> dict:
    return {k: v for k, v in json.loads((run_dir / SUMMARY).read_text()).items() if k not in TIMING}


def assert_same_search(sharded: Path, unsharded: Path) -> None:
    assert candidates(sharded) == candidates(unsharded)
    assert summary(sharded) == summary(unsharded)


def run_shard(compose_cfg, run_dir, shard, shards=3, iters=7, *more):
    overrides = [f"iters={iters}", f"shards={shards}", *([] if shard is None else [f"shard={shard}"]), *more]
    return run_search(compose_cfg(*overrides), run_dir)


def test_three_shards_one_after_another_merge_into_the_unsharded_search(compose_cfg, tmp_path):
    # a budget, so the merged search also has over-budget candidates in their places
    budget = ["model=cpu", "dataset.image_size=16", "budget.max_params=1.75e5"]
    run_search(compose_cfg("iters=8", *budget), tmp_path / "one")
    assert {r["status"] for r in candidates(tmp_path / "one")} >= {"over_budget", "scored"}
    sharded = tmp_path / "sharded"
    for shard in (0, 1):
        own = run_shard(compose_cfg, sharded, shard, 3, 8, *budget)
        assert own["shard"] == shard and own["shards"] == 3
        assert not (sharded / SUMMARY).exists() and not (sharded / CANDIDATES).exists()  # nothing merged yet
    indices = [json.loads(line)["index"] for line in shard_candidates(sharded, 1, 3).read_text().splitlines()]
    assert indices == [1, 4, 7]
    merged = run_shard(compose_cfg, sharded, 2, 3, 8, *budget)
    assert_same_search(sharded, tmp_path / "one")
    assert merged == json.loads((sharded / SUMMARY).read_text()) and "shard" not in merged
    assert json.loads((sharded / SETTINGS).read_text())["shards"] == 3


def test_a_finished_shard_is_not_recomputed_and_an_explicit_merge_reports_the_same(compose_cfg, tmp_path):
    for shard in range(3):
        run_shard(compose_cfg, tmp_path, shard)
    before = [shard_candidates(tmp_path, k, 3).read_text() for k in range(3)]
    again = run_shard(compose_cfg, tmp_path, 1)
    assert [shard_candidates(tmp_path, k, 3).read_text() for k in range(3)] == before
    assert again == run_shard(compose_cfg, tmp_path, None) == json.loads((tmp_path / SUMMARY).read_text())


def test_an_interrupted_shard_resumes(compose_cfg, tmp_path, interrupt_scoring):
    run_search(compose_cfg("iters=9"), tmp_path / "one")
    undo = interrupt_scoring(2)
    sharded = tmp_path / "sharded"
    with pytest.raises(Interrupted, match="shard-0-of-3 interrupted after 1 of 3 candidates; rerun the same command"):
        run_shard(compose_cfg, sharded, 0, 3, 9)
    undo()
    path = shard_candidates(sharded, 0, 3)
    written = path.read_text()
    assert [json.loads(line)["index"] for line in written.splitlines()] == [0]
    with open(path, "a") as f:  # and a crash in the middle of writing the next line
        f.write('{"index": 3, "genotype": {"cell_ty')
    run_shard(compose_cfg, sharded, 0, 3, 9)
    assert path.read_text().startswith(written) and len(path.read_text().splitlines()) == 3
    for shard in (1, 2):
        run_shard(compose_cfg, sharded, shard, 3, 9)
    assert_same_search(sharded, tmp_path / "one")


def test_missing_and_incomplete_shards_are_reported_by_name(compose_cfg, tmp_path, interrupt_scoring, caplog):
    run_shard(compose_cfg, tmp_path, 0)
    undo = interrupt_scoring(2)
    with pytest.raises(Interrupted):
        run_shard(compose_cfg, tmp_path, 1)  # shard 1 (candidates 1, 4): 1 of 2 done
    with pytest.raises(KssError) as info:
        run_shard(compose_cfg, tmp_path, None)  # merge and report
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"the sharded search in {tmp_path} is not complete: ")
    assert "shard-0-of-3" not in message
    assert (f"shard-1-of-3 (1 of 2 candidates done): python search.py <the same settings> shard=1 "
            f"hydra.run.dir={tmp_path}") in message
    assert "shard-2-of-3 (not started, 2 candidates): python search.py <the same settings> shard=2" in message
    assert not (tmp_path / SUMMARY).exists()
    # a shard that finishes while others are missing says which it waits for
    undo()
    with caplog.at_level("INFO", logger="kss"):
        run_shard(compose_cfg, tmp_path, 1)
    assert "shard-1-of-3 is done; waiting for shard-2-of-3 (not started, 2 candidates)" in caplog.text


def test_shards_lock_apart_and_a_running_shard_is_named(compose_cfg, tmp_path):
    """Another process holds shard 1: shard 0 still runs, shard 1 is refused, the report says it runs."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom kss.runlock import run_lock\n"
                               f"with run_lock({str(tmp_path)!r}, name={shard_lock(1, 2)!r}):\n"
                               "    print('held', flush=True)\n    time.sleep(60)\n"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run_shard(compose_cfg, tmp_path, 0, 2, 4)["candidates_scored"] == 2
        with pytest.raises(KssError, match=rf"shard-1-of-2\) is in use by pid {holder.pid} "):
            run_shard(compose_cfg, tmp_path, 1, 2, 4)
        with pytest.raises(KssError, match=r"shard-1-of-2 \(running, 0 of 2 candidates done\)"):
            run_shard(compose_cfg, tmp_path, None, 2, 4)
    finally:
        holder.kill()
        holder.wait()
    assert run_shard(compose_cfg, tmp_path, 1, 2, 4)["iters"] == 4  # merged


def test_mixing_shard_counts_in_one_directory_is_refused(compose_cfg, tmp_path):
    run_shard(compose_cfg, tmp_path / "three", 0, 3)
    with pytest.raises(KssError, match=r"other settings \(shards differ \(it was run with shards=3\)\)") as info:
        run_shard(compose_cfg, tmp_path / "three", 0, 4)
    assert "\n" not in str(info.value)
    with pytest.raises(KssError, match="it was run with shards=3"):
        run_search(compose_cfg("iters=7"), tmp_path / "three")  # nor an unsharded search
    assert not shard_candidates(tmp_path / "three", 0, 4).exists() and not (tmp_path / "three" / CANDIDATES).exists()
    run_search(compose_cfg("iters=7"), tmp_path / "one")
    with pytest.raises(KssError, match="it was run with shards=1"):
        run_shard(compose_cfg, tmp_path / "one", 0, 3)


def test_an_old_search_without_shards_in_its_settings_still_resumes(compose_cfg, tmp_path):
    run_search(compose_cfg("iters=2"), tmp_path)
    settings = json.loads((tmp_path / SETTINGS).read_text())
    del settings["shards"]
    (tmp_path / SETTINGS).write_text(json.dumps(settings))
    assert run_search(compose_cfg("iters=3"), tmp_path)["iters"] == 3


@pytest.mark.parametrize("shards, shard", [(3, 3), (3, -1), (0, None), (0, 0), (-2, None), (1, 1), (2, "merge")])
def test_bad_shard_numbers_are_refused_in_one_line(compose_cfg, tmp_path, shards, shard):
    cfg = compose_cfg(f"shards={shards}", f"shard={'null' if shard is None else shard}")
    with pytest.raises(KssError, match=r"^(shards must be a positive integer|shard=\S+ is not one of)") as info:
        check_sharding(cfg)
    assert "\n" not in str(info.value)
    with pytest.raises(KssError):
        run_search(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_one_shard_is_the_unsharded_search(compose_cfg, tmp_path):
    run_search(compose_cfg("iters=3", "shards=1", "shard=0"), tmp_path / "a")
    run_search(compose_cfg("iters=3"), tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert_same_search(tmp_path / "a", tmp_path / "b")


def test_the_merged_search_is_logged_to_wandb_once(compose_cfg, tmp_path, monkeypatch):
    import kss.tasks.search

    logged = []
    monkeypatch.setattr(kss.tasks.search, "log_to_wandb", lambda cfg, out_dir, summary: logged.append(summary))
    for shard in (0, 1, 2, 2):  # the last shard twice: its rerun only reports
        run_shard(compose_cfg, tmp_path, shard, 3, 7, "wandb.mode=offline")
        assert len(logged) == (0 if shard < 2 else 1)
    run_shard(compose_cfg, tmp_path, None, 3, 7, "wandb.mode=offline")
    assert len(logged) == 1 and logged[0] == json.loads((tmp_path / SUMMARY).read_text())


def test_the_merged_summary_names_where_the_shards_ran(compose_cfg, tmp_path):
    for shard in range(2):
        run_shard(compose_cfg, tmp_path, shard, 2, 4)
    own = json.loads(shard_summary(tmp_path, 0, 2).read_text())
    assert own["device"] == "cpu" and own["candidates_scored"] + own["candidates_non_finite"] == 2
    assert json.loads((tmp_path / SUMMARY).read_text())["device"] == "cpu"


@pytest.mark.parametrize("script", ["train", "proxy"])
def test_train_and_proxy_refuse_shards(compose_cfg, tmp_path, script):
    from kss.study.proxy import run_proxy
    from kss.tasks.train import run_train

    run = {"train": run_train, "proxy": run_proxy}[script]
    with pytest.raises(KssError, match=rf"^{script}\.py does not shard its search .*search.py.*genotype=") as info:
        run(compose_cfg("shards=2", "shard=0", config_name=script), tmp_path / "run")
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()


def test_shards_of_a_multirun_share_one_directory_and_the_slurm_command_composes(compose_cfg):
    """The README's SLURM command, composed job by job: 8 shards, one GPU each, shard not in the directory name."""
    readme = (ROOT / "README.md").read_text()
    [line] = [line for line in readme.splitlines() if "hydra/launcher=slurm_gpu" in line and "shards=8" in line]
    words = shlex.split(line.split("#")[0])
    assert words[:3] == ["python", "search.py", "-m"] and "shard=range(8)" in words and "iters=5000" in words
    shards = set()
    for k in range(8):
        overrides = [f"shard={k}" if w == "shard=range(8)" else w for w in words[3:]]
        cfg = compose_cfg(*overrides, tiny=False, hydra=True)
        assert check_sharding(cfg) == (8, k) and cfg.iters == 5000 and cfg.dataset.name == "cifar10"
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.tasks_per_node == 1
        assert list(cfg.hydra.job.config.override_dirname.exclude_keys) == ["shard"]
        shards.add(cfg.shard)
    assert shards == set(range(8))


def run_cli(*args):
    return subprocess.run([sys.executable, "search.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_shards_in_parallel_in_one_multirun_equal_the_unsharded_search(compose_cfg, tmp_path, launcher):
    """joblib: local processes side by side; submitit_local: SLURM's launcher (a job array) with a local executor."""
    run_search(compose_cfg("iters=7"), tmp_path / "one")
    extra = ["hydra.launcher.n_jobs=3"] if launcher == "joblib" else ["hydra.launcher.gpus_per_node=0"]
    result = run_cli("-m", f"hydra/launcher={launcher}", *extra, *TINY_CLI, "iters=7", "shards=3", "shard=range(3)",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 0, result.stderr
    [search_dir] = [p.parent for p in (tmp_path / "sweep").glob("*/" + SETTINGS)]  # one directory for all shards
    assert "shard=" not in search_dir.name and "shards=3" in search_dir.name
    assert_same_search(search_dir, tmp_path / "one")
    assert sorted(p.name for p in (search_dir / ".hydra").iterdir() if p.is_dir()) == [
        f"shard-{k}-of-3" for k in range(3)]


@pytest.mark.slow
def test_cli_reports_a_missing_shard_with_a_command_that_finishes_it(compose_cfg, tmp_path):
    run = tmp_path / "iters=4,shards=2"  # as a multirun names its folders
    first = run_cli(*TINY_CLI, "iters=4", "shards=2", "shard=0", f'hydra.run.dir="{run}"')
    assert first.returncode == 0, first.stderr
    report = run_cli(*TINY_CLI, "iters=4", "shards=2", f'hydra.run.dir="{run}"')
    assert report.returncode == 2 and "Traceback" not in report.stderr
    last = report.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: the sharded search in {run} is not complete: shard-1-of-2 (not started, 2 candidates): ")
    command = shlex.split(last.split(": ", 3)[-1])
    assert command[:2] == ["python", "search.py"] and "shard=1" in command
    finish = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert finish.returncode == 0, finish.stderr
    run_search(compose_cfg("iters=4"), tmp_path / "one")
    assert_same_search(run, tmp_path / "one")


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["shards=3", "shard=3"], "error: shard=3 is not one of 0..2 (shards=3)"),
    (["shards=3", "shard=-1"], "error: shard=-1 is not one of 0..2 (shards=3)"),
    (["shards=0"], "error: shards must be a positive integer (got 0)"),
])
def test_cli_bad_shard_numbers_exit_2_in_one_line_and_leave_no_run_directory(tmp_path, args, message):
    run = tmp_path / "outputs" / "run"
    result = run_cli(*TINY_CLI, "iters=4", *args, f"hydra.run.dir={run}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert not run.exists()
