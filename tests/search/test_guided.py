"""Guided search (kss.search.guided): Optuna's samplers on a study database, resumable, constrained, parallel."""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import kss.search.guided as G
from kss.errors import Interrupted, KssError
from kss.space.genotype import NODES, draw_ops, prune
from kss.search.records import CANDIDATES, SETTINGS, SUMMARY
from kss.tasks.search import run_search

ROOT = Path(__file__).resolve().parents[2]
TIMING = {"search_seconds", "candidates_per_second", "host"}
TINY_CLI = ["dataset=synthetic", "model=tiny", "score.batch_size=16", "progress=false", "wandb.mode=disabled",
            "extras=none", "device=cpu"]
# every key candidates.jsonl and search.json had before search.strategy existed
LINE_KEYS = ["index", "genotype", "params", "status", "score", "raw_score", "sops", "energy_uj", "firing_rate", "exceeds",
             "seconds"]


def lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / CANDIDATES).read_text().splitlines()]


def untimed(run_dir: Path) -> tuple[list[dict], dict]:
    summary = {k: v for k, v in json.loads((run_dir / SUMMARY).read_text()).items() if k not in TIMING}
    return [{k: v for k, v in r.items() if k != "seconds"} for r in lines(run_dir)], summary


def study(run_dir: Path):
    import optuna

    return optuna.load_study(study_name=f"kss-{run_dir.resolve().name}", storage=f"sqlite:///{run_dir / G.STUDY}")


def test_random_strategy_adds_no_key_and_keeps_snasnets_sampler(compose_cfg, tmp_path):
    summary = run_search(compose_cfg("kernel_set=set3", "iters=3"), tmp_path / "default")
    explicit = run_search(compose_cfg("kernel_set=set3", "iters=3", "search.strategy=random"), tmp_path / "random")
    assert untimed(tmp_path / "default") == untimed(tmp_path / "random")
    assert all(list(r) == LINE_KEYS for r in lines(tmp_path / "default"))
    assert not {"strategy", "duplicates", "pareto_front"} & summary.keys() and explicit.keys() == summary.keys()
    settings = json.loads((tmp_path / "default" / SETTINGS).read_text())
    assert not {"strategy", "storage", "population", "minimise"} & settings.keys()
    assert not (tmp_path / "default" / G.STUDY).exists()
    # the genotypes of SNASNet's sampler for seed 0, as before kss.search.guided existed
    assert [r["genotype"]["edges"]["0->3"] for r in lines(tmp_path / "default")] == ["skip", "conv3", "skip"]


def test_the_0_3_edge_survives_pruning_so_the_space_is_snasnets():
    rng = np.random.default_rng(0)
    for cell_type in ("forward", "backward"):
        for _ in range(2000):
            ops = draw_ops(rng, [3, 5], cell_type)
            if ops[0][NODES - 1] != "zero":
                assert prune(ops, cell_type)[0][NODES - 1] == ops[0][NODES - 1]
    forward, backward = G.search_space([3, 5], "forward"), G.search_space([3, 5], "backward")
    assert len(forward) == 6 and all(len(d.choices) == 5 for k, d in forward.items() if k != "0->3")
    assert "zero" not in forward["0->3"].choices and len(forward["0->3"].choices) == 4
    assert len(backward) == 11 and backward["1-2 direction"].choices == ("forward", "feedback")
    genotype = G.genotype_from_params({"0->3": "conv3", "0-1 direction": "feedback", "0-1": "conv5",
                                       "0-2 direction": "forward", "0-2": "skip", "1-2 direction": "feedback",
                                       "1-2": "conv3", "1-3 direction": "forward", "1-3": "zero",
                                       "2-3 direction": "feedback", "2-3": "avgpool3"}, "backward")
    assert genotype.ops[1][0] == "conv5" and genotype.ops[0][2] == "skip" and genotype.ops[2][1] == "conv3"
    assert genotype.ops[3][2] == "avgpool3" and genotype.ops[0][3] == "conv3"


@pytest.mark.parametrize("strategy, more", [("tpe", []), ("evolution", ["search.population=3"])])
def test_an_interrupted_guided_search_resumes_to_the_uninterrupted_trials(compose_cfg, tmp_path, interrupt_scoring,
                                                                          monkeypatch, strategy, more):
    monkeypatch.setattr(G, "TPE_STARTUP", 3)  # so that TPE models the scores within a tiny search
    overrides = ["iters=9", f"search.strategy={strategy}", *more]
    full = run_search(compose_cfg(*overrides), tmp_path / "full")
    undo = interrupt_scoring(5)
    with pytest.raises(Interrupted, match="rerun the same command to resume"):
        run_search(compose_cfg(*overrides), tmp_path / "part")
    part = tmp_path / "part"
    (part / CANDIDATES).write_text("".join(line + "\n" for line in (part / CANDIDATES).read_text().splitlines()[:-1]))
    states = [t.state.name for t in study(part).trials]
    assert states[-1] == "RUNNING"  # what the interruption left
    undo()
    resumed = run_search(compose_cfg(*overrides), part)
    assert untimed(part) == untimed(tmp_path / "full")  # the line the file lost came back from the study
    assert resumed["strategy"] == full["strategy"] == strategy
    trials = study(part).trials
    assert sum(t.state.name == "FAIL" for t in trials) == 1 and sum(t.state.name == "COMPLETE" for t in trials) == 9
    assert [r["strategy"] for r in lines(part)] == [strategy] * 9 and all(list(r)[:-1] == LINE_KEYS for r in lines(part))


def test_duplicates_reuse_the_score_and_are_counted(compose_cfg, tmp_path, monkeypatch):
    # kernel set [3] and a single-op space make repeats certain
    summary = run_search(compose_cfg("kernel_set.kernels=[3]", "iters=12", "search.strategy=tpe"), tmp_path)
    records = lines(tmp_path)
    first = {}
    for r in records:
        key = json.dumps(r["genotype"], sort_keys=True)
        if key in first:
            assert (r["score"], r["params"]) == (first[key]["score"], first[key]["params"])
        first.setdefault(key, r)
    assert summary["duplicates"] == len(records) - len(first) > 0
    assert sum("duplicate_of" in t.user_attrs for t in study(tmp_path).trials) == summary["duplicates"]
    assert records[summary["best_index"]]["index"] == min(r["index"] for r in records if r["score"] == summary["best_score"])


def test_budgets_are_constraints_and_only_feasible_trials_win(compose_cfg, tmp_path):
    budget = "budget.max_params=3800"
    summary = run_search(compose_cfg("iters=10", "search.strategy=tpe", budget), tmp_path)
    over = [r for r in lines(tmp_path) if r["status"] == "over_budget"]
    assert over and all(r["score"] is not None and r["exceeds"] == "max_params" and r["params"] > 3800 for r in over)
    assert summary["params"] <= 3800 and summary["best_index"] not in [r["index"] for r in over]
    assert summary["candidates_over_budget"]["max_params"] == len(over)
    assert sum(t.constraints["max_params"] > 0 for t in study(tmp_path).trials) == len(over)


def test_pareto_records_the_front_of_r_and_params(compose_cfg, tmp_path):
    summary = run_search(compose_cfg("iters=8", "search.strategy=pareto"), tmp_path)
    records = lines(tmp_path)
    front = summary["pareto_front"]
    assert front == G.pareto_front(records, "params") and summary["minimise"] == "params"
    for i in front:
        assert not any(r["score"] >= records[i]["score"] and r["params"] <= records[i]["params"]
                       and (r["score"], r["params"]) != (records[i]["score"], records[i]["params"]) for r in records)
    assert summary["best_index"] in front  # the best R is on the front
    assert [d.name for d in study(tmp_path).directions] == ["MAXIMIZE", "MINIMIZE"]


def test_pareto_front_of_plain_records():
    rows = [(0, -5.0, 100), (1, -3.0, 200), (2, -3.0, 200), (3, -4.0, 300), (4, -1.0, 400), (5, -6.0, 50)]
    records = [{"index": i, "score": s, "params": p, "status": "scored"} for i, s, p in rows]
    records.append({"index": 6, "score": 0.0, "params": 10, "status": "over_budget"})
    assert G.pareto_front(records, "params") == [0, 1, 4, 5]


@pytest.mark.parametrize("overrides, message", [
    (["search.strategy=annealing"], "unknown search.strategy 'annealing'"),
    (["search.strategy=pareto", "search.minimise=null"], "pareto needs a second objective"),
    (["search.strategy=pareto", "search.minimise=energy_uj"], "pass cost.every_candidate=true"),
    (["search.strategy=tpe", "search.storage=sqlite:////nonexistent/kss/study.db"], "cannot be opened"),
    (["search.strategy=tpe", "search.storage=postgresql://kss:secret@localhost:1/kss"], "cannot be opened"),
    (["search.strategy=tpe", "search.storage=memory", "shards=2", "shard=0"], "need a shared study"),
    (["search.strategy=evolution", "search.population=1"], "search.population must be an integer >= 2"),
])
def test_bad_guided_input_gives_one_line(compose_cfg, tmp_path, overrides, message):
    with pytest.raises(KssError, match=message) as info:
        run_search(compose_cfg(*overrides), tmp_path / "run")
    assert "\n" not in str(info.value) and "secret" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_a_study_of_other_settings_is_refused(compose_cfg, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    run_search(compose_cfg("iters=2", "search.strategy=tpe", f"search.storage={url}", "seed=1"), tmp_path / "run")
    with pytest.raises(KssError, match="holds a search with other settings"):
        run_search(compose_cfg("iters=2", "search.strategy=tpe", f"search.storage={url}", "seed=2"),
                   tmp_path / "other" / "run")


def run_cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "search.py", *TINY_CLI, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.slow
def test_cli_bad_guided_input_exits_2_in_one_line_and_leaves_no_run_directory(tmp_path):
    for args in (["search.strategy=annealing"], ["search.strategy=tpe", "search.storage=sqlite:////nonexistent/x.db"],
                 ["search.strategy=pareto", "search.minimise=null"]):
        run = tmp_path / "outputs" / "run"
        out, err = run_cli(*args, f"hydra.run.dir={run}").communicate(timeout=300)
        assert err.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in err, err
        assert not run.exists(), list(run.rglob("*"))


@pytest.mark.slow
def test_two_workers_on_one_sqlite_study_complete_the_search_and_merge(tmp_path):
    run = tmp_path / "run"
    workers = [run_cli("iters=8", "search.strategy=tpe", "shards=2", f"shard={k}", f"hydra.run.dir={run}")
               for k in (0, 1)]
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
    summary = json.loads((run / SUMMARY).read_text())
    assert summary["strategy"] == "tpe" and summary["candidates_scored"] + summary["candidates_non_finite"] == 8
    assert [r["index"] for r in lines(run)] == list(range(8))
    trials = study(run).trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == 8
    assert sorted(t.user_attrs["index"] for t in trials) == list(range(8))
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_optuna_dashboard_serves_the_study(compose_cfg, tmp_path):
    run_search(compose_cfg("iters=3", "search.strategy=tpe"), tmp_path)
    port = free_port()
    command = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or "optuna-dashboard"
    # the README's command: optuna-dashboard sqlite:///<run dir>/study.db
    dashboard = subprocess.Popen([command, f"sqlite:///{tmp_path / G.STUDY}", "--host", "127.0.0.1", "--port", str(port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        status, deadline = None, time.monotonic() + 60
        while status is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    status = response.status
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    studies = response.read().decode()
            except OSError:
                time.sleep(0.5)
        assert status == 200
        assert f"kss-{tmp_path.name}" in studies  # the study, served
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
