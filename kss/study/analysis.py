"""From a sweep directory to a table, plots and a model selection.

Works on any directory of kss runs: a `sweep.py` sweep (which also knows the jobs it planned,
so missing ones are listed) or a plain Hydra multirun of `search.py` / `train.py`. A job is
read from the files its run wrote (search.json, metrics.json, failed.json, .hydra/), never from logs.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import asdict
from pathlib import Path

from omegaconf import OmegaConf

from kss.names import BUDGETS, FAILED, check_budget, kernel_set_name, setting_tag
from kss.errors import KssError
from kss.space.params import memory_bytes
from kss.study.plots import plot_all
from kss.study.rows import Job, Setting, pareto_front, quality
from kss.study.stats import paired_difference

PLAN = "sweep_plan.json"
BASELINE = "1x1_3x3_5000x"  # SNASNet: kernel set (1, 3), 5000 iterations


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except (OSError, json.JSONDecodeError):
        return None


def read_job(path: Path, kind: str | None = None) -> Job | None:
    """One job directory; None when nothing in it says what the job was."""
    search, metrics, failed = _read(path / "search.json"), _read(path / "metrics.json"), _read(path / FAILED)
    config = OmegaConf.load(path / ".hydra" / "config.yaml") if (path / ".hydra" / "config.yaml").exists() else None
    hydra = OmegaConf.load(path / ".hydra" / "hydra.yaml") if (path / ".hydra" / "hydra.yaml").exists() else None
    source = metrics or search or failed
    if source is not None and "kernels" in source:
        kernels, iters, seed, dataset = source["kernels"], source["iters"], source["seed"], source["dataset"]
    elif config is not None and "kernel_set" in config and "kernel_sets" not in config:  # not a sweep's own
        kernels, iters, seed, dataset = list(config.kernel_set.kernels), config.iters, config.seed, config.dataset.name
    else:
        return None
    if kind is None:
        job_name = hydra.hydra.job.name if hydra is not None else None
        search_only = config is not None and config.get("search_only", False)
        trained = job_name == "train" and not search_only
        kind = "train" if metrics is not None or trained or (failed or {}).get("kind") == "train" else "search"
    done = metrics if kind == "train" else search
    done_file = path / ("metrics.json" if kind == "train" else "search.json")
    if done is not None and failed is not None and (path / FAILED).stat().st_mtime > done_file.stat().st_mtime:
        done = None  # the latest attempt failed: old results do not make it complete
    status = "complete" if done is not None else "failed" if failed is not None else "incomplete"
    job = Job(str(path), list(kernels), int(iters), int(seed), dataset, kind, status,
              error=(failed or {}).get("error"))
    strategy = (search or {}).get("strategy")
    if strategy is None and config is not None:
        strategy = (config.get("search") or {}).get("strategy")
    job.strategy = strategy or "random"
    if search is not None:
        job.best_so_far = best_so_far(path / "candidates.jsonl")
        job.best_score, job.search_seconds = search.get("best_score"), search.get("search_seconds")
        job.params = search.get("params")
        job.genotype_file = str(path / "search.json")
    if metrics is not None:
        job.best_score = metrics.get("search_score", job.best_score)
        job.search_seconds = metrics.get("search_seconds", job.search_seconds)
        job.params, job.test_acc, job.best_val_acc = metrics["params"], metrics["test_acc"], metrics.get("best_val_acc")
        job.checkpoint = metrics.get("checkpoint")
    if job.params is not None:
        for key, value in memory_bytes(job.params).items():
            setattr(job, key, value)
    for source, name in ((search, "search"), (metrics, "test")):  # the trained network's cost wins
        if source is not None and source.get("energy_uj") is not None:
            job.energy_uj, job.sops = source["energy_uj"], source.get("sops")
            job.firing_rate, job.neuron_state_bytes = source.get("firing_rate"), source.get("neuron_state_bytes")
            job.cost_source = name
    return job


def best_so_far(path: Path) -> list | None:
    """The best feasible R after each candidate of a search's candidates.jsonl."""
    if not path.exists():
        return None
    curve, best = [], None
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record["status"] == "scored":
            best = record["score"] if best is None else max(best, record["score"])
        curve.append(best)
    return curve


def collect(root: Path) -> list[Job]:
    """Every job under `root`, plus the planned ones that never wrote anything (status 'missing')."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise KssError(f"{root} is not a directory; pass the sweep or multirun directory to analyse")
    plan = _read(root / PLAN)
    kind = plan["kind"] if plan else None
    markers = ("search.json", "metrics.json", FAILED, ".hydra/config.yaml")
    dirs = sorted({p.parent.parent if p.parent.name == ".hydra" else p.parent
                   for m in markers for p in root.rglob(m)} - {root})
    jobs = [job for d in dirs if (job := read_job(d, kind)) is not None]
    if plan:
        seen = {Path(j.path).resolve() for j in jobs}
        for planned in plan["jobs"]:
            if (root / planned["dir"]).resolve() not in seen:
                jobs.append(Job(str(root / planned["dir"]), planned["kernels"], planned["iters"], planned["seed"],
                                plan["dataset"], kind, "missing"))
    if not jobs:
        raise KssError(f"{root} holds no kss runs (no search.json, metrics.json or .hydra/ job folders); "
                       "pass the directory a sweep or multirun wrote")
    return sorted(jobs, key=lambda j: (j.dataset, len(j.kernels), j.kernels, j.iters, j.seed))


def _mean_std(values: list) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(jobs: list[Job]) -> list[Setting]:
    """One row per (dataset, kernels, iters): mean and std over the complete seeds."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.dataset, tuple(job.kernels), job.iters, job.strategy), []).append(job)
    rows = []
    for (dataset, kernels, iters, strategy), members in groups.items():
        done = [j for j in members if j.status == "complete"]
        row = Setting(members[0].setting, kernel_set_name(kernels), list(kernels), iters, dataset,
                      sorted(j.seed for j in members), len(done), strategy=strategy)
        if done:
            params = [j.params for j in done if j.params is not None]
            row.params_mean = statistics.fmean(params) if params else None
            row.params_max = max(params) if params else None
            for key, value in (memory_bytes(row.params_mean) if params else {}).items():
                setattr(row, key, value)
            row.score_mean, row.score_std = _mean_std([j.best_score for j in done])
            row.search_seconds_mean, row.search_seconds_std = _mean_std([j.search_seconds for j in done])
            row.test_acc_mean, row.test_acc_std = _mean_std([j.test_acc for j in done])
            row.best_val_acc_mean, row.best_val_acc_std = _mean_std([j.best_val_acc for j in done])
            if all(j.energy_uj is not None for j in done):  # a budget must hold for every seed: all or none
                row.energy_uj_mean, row.energy_uj_max = statistics.fmean(j.energy_uj for j in done), max(j.energy_uj for j in done)
                row.sops_mean, row.sops_max = statistics.fmean(j.sops for j in done), max(j.sops for j in done)
                row.firing_rate_mean = statistics.fmean(j.firing_rate for j in done)
                row.neuron_state_bytes = statistics.fmean(j.neuron_state_bytes for j in done)
                sources = {j.cost_source for j in done}
                row.cost_source = sources.pop() if len(sources) == 1 else "mixed"
            best = max(done, key=lambda j: (j.test_acc if j.test_acc is not None else -1,
                                            j.best_score if j.best_score is not None else -math.inf))
            row.best_job = best.path
        rows.append(row)
    trials_to_random_best(rows, jobs)
    paired_against_set1(rows, jobs)
    for row in rows:  # normalised search time, relative to SNASNet's setting on the same dataset
        base = next((r for r in rows if r.setting == BASELINE and r.dataset == row.dataset), None)
        if base and base.search_seconds_mean and row.search_seconds_mean is not None:
            row.search_time_normalised = row.search_seconds_mean / base.search_seconds_mean
    return sorted(rows, key=lambda r: (r.dataset, len(r.kernels), r.kernels, r.iters, r.strategy != "random", r.strategy))


def trials_to_random_best(rows: list[Setting], jobs: list[Job]) -> None:
    """For each guided setting: how many candidates its seeds needed to reach the best R of the largest random
    search of the same kernels and dataset (the paper's "5000 random candidates" when the sweep has it)."""
    for row in (r for r in rows if r.strategy != "random" and r.complete):
        randoms = [j for j in jobs if j.strategy == "random" and j.status == "complete" and j.dataset == row.dataset
                   and j.kernels == row.kernels and j.best_score is not None]
        if not randoms:
            continue
        largest = max(j.iters for j in randoms)
        target = max(j.best_score for j in randoms if j.iters == largest)
        members = [j for j in jobs if j.setting == row.setting and j.dataset == row.dataset and j.status == "complete"
                   and j.best_so_far]
        counts = [next((i + 1 for i, v in enumerate(j.best_so_far) if v is not None and v >= target), None)
                  for j in members]
        hits = [c for c in counts if c is not None]
        row.reached_random_best = f"{len(hits)}/{len(counts)} seeds vs random {largest}"
        row.trials_to_random_best = statistics.median(hits) if hits else None


def paired_against_set1(rows: list[Setting], jobs: list[Job]) -> None:
    """Candidate i draws the same topology in every two-kernel set, so seeds pair settings: each
    setting's accuracy minus set1's, seed by seed (validation accuracy; test only without it)."""
    def accuracy(job: Job) -> float | None:
        return job.best_val_acc if job.best_val_acc is not None else job.test_acc

    def by_seed(row: Setting) -> dict[int, float]:
        return {j.seed: accuracy(j) for j in jobs if j.status == "complete" and j.kind == "train"
                and (j.dataset, j.kernels, j.iters) == (row.dataset, row.kernels, row.iters) and accuracy(j) is not None}

    for row in rows:
        base = next((r for r in rows if r.kernels == [1, 3] and (r.dataset, r.iters) == (row.dataset, row.iters)), None)
        if base is None or base is row:
            continue
        mine, theirs = by_seed(row), by_seed(base)
        seeds = sorted(mine.keys() & theirs.keys())
        if len(seeds) >= 2:
            row.vs_set1 = {"seeds": seeds, **paired_difference([mine[s] for s in seeds], [theirs[s] for s in seeds])}


def verdict(row: Setting) -> str:
    p = row.vs_set1
    if not p["beyond_seed_spread"]:
        plain = "within the seed spread: no measurable effect of the kernel sizes"
    elif p["p_value"] < 0.05:
        plain = "larger than the seed spread, and significant"
    else:
        plain = "larger than the seed spread, but not significant with these seeds"
    return (f"{row.setting} vs {setting_tag([1, 3], row.iters)}: {100 * p['mean_diff']:+.2f} ± {100 * p['std_diff']:.2f} "
            f"points (paired over {p['n']} seeds; seed spread {100 * p['seed_spread']:.2f}, paired t-test p={p['p_value']:.2f}): "
            f"{plain}.")


# budget name -> the figure of a setting it bounds (every seed must fit: the maximum over seeds)
BUDGET_FIGURES = {"max_params": "params_max", "max_energy_uj": "energy_uj_max", "max_sops": "sops_max"}


def select(rows: list[Setting], max_params: float | None = None, max_energy_uj: float | None = None,
           max_sops: float | None = None) -> dict:
    """The best setting whose every seed's model fits every budget set; ties go to fewer parameters.
    A setting without a cost figure (runs from before kss measured it) cannot show it fits a cost budget."""
    budgets = {"max_params": max_params, "max_energy_uj": max_energy_uj, "max_sops": max_sops}
    for name, value in budgets.items():
        check_budget(value, name)
    budgets = {name: value for name, value in budgets.items() if value is not None}
    ranked = [r for r in rows if r.complete and quality(r)[1] is not None]
    fitting, checked = ranked, []
    for name, limit in budgets.items():
        figure = BUDGET_FIGURES[name]
        unknown = sum(getattr(r, figure) is None for r in fitting)
        before = len(fitting)
        fitting = [r for r in fitting if getattr(r, figure) is not None and getattr(r, figure) <= limit]
        checked.append(f"{name} <= {limit:.4g} {BUDGETS[name]}: {len(fitting)} of {before} settings fit"
                       + (f" ({unknown} without the figure)" if unknown else ""))
    base = {"max_params": max_params, "max_energy_uj": max_energy_uj, "max_sops": max_sops, "budgets_checked": checked}
    said = ("budgets checked: " + "; ".join(checked) + ". ") if checked else "no budget set. "
    if not ranked:
        return {"selected": None, **base, "message": said + "no setting has finished results yet"}
    if not fitting:
        smallest = min((r.params_max for r in ranked), default=None)
        over = "the budgets" if len(budgets) > 1 else f"the budget of {next(iter(budgets.values())):.4g} " + BUDGETS[next(iter(budgets))]
        return {"selected": None, **base,
                "message": said + f"no setting fits {over}" + (f" (the smallest has {smallest} parameters)" if smallest else "")}
    best = max(fitting, key=lambda r: (quality(r)[1], -r.params_max, r.setting))
    best_job = read_job(Path(best.best_job)) if best.best_job else None
    metric, value = quality(best)
    energy = f", {best.energy_uj_max:.4g} uJ/image" if best.energy_uj_max is not None else ""
    return {
        "selected": best.setting, "dataset": best.dataset, "kernels": best.kernels, "iters": best.iters,
        "metric": metric, "value": value, "params": best.params_max, "energy_uj": best.energy_uj_max,
        "sops": best.sops_max, **base,
        "checkpoint": best_job.checkpoint if best_job else None,
        "genotype_file": best_job.genotype_file if best_job else None, "job": best.best_job,
        "message": said + f"selected {best.setting} ({metric} {value:.4f}, {best.params_max} params{energy})",
    }


def complete_front(rows: list[Setting]) -> list[Setting]:
    """The Pareto front (parameters vs quality) of the settings with finished results."""
    return pareto_front([r for r in rows if r.complete and quality(r)[1] is not None], "params_mean")


def _fmt(value, digits=4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def write_tables(root: Path, jobs: list[Job], rows: list[Setting], selection: dict) -> None:
    columns = [f for f in Setting.__dataclass_fields__ if f != "best_job"]
    with open(root / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: v for k, v in asdict(row).items() if k in columns})
    with open(root / "jobs.csv", "w", newline="") as f:
        fields = [f for f in Job.__dataclass_fields__ if f != "best_so_far"]  # a curve per job: not a column
        writer = csv.DictWriter(f, fieldnames=[*fields, "setting"])
        writer.writeheader()
        for job in jobs:
            writer.writerow({**{f: v for f, v in asdict(job).items() if f in fields}, "setting": job.setting})
    shown = ["setting", "dataset", "seeds", "complete", "params_mean", "memory_int8_bytes", "energy_uj_mean", "sops_mean",
             "firing_rate_mean", "score_mean",
             "search_seconds_mean", "search_time_normalised", "test_acc_mean", "test_acc_std", "best_val_acc_mean",
             "best_val_acc_std"]
    if any(r.strategy != "random" for r in rows):  # guided search in the sweep: how many candidates they needed
        shown += ["trials_to_random_best", "reached_random_best"]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        values = asdict(row)
        lines.append("| " + " | ".join(_fmt(values[c]) if c != "seeds" else str(len(values[c])) for c in shown) + " |")
    failed = [j for j in jobs if j.status == "failed"]
    missing = [j for j in jobs if j.status in ("missing", "incomplete")]
    paired = [verdict(r) for r in rows if r.vs_set1]
    if paired:
        lines += ["", "**Against set1, paired by seed** (validation accuracy):"] + [f"- {v}" for v in paired]
    lines += ["", f"**Selection:** {selection['message']}"]
    lines += [f"- {what}: `{selection[key]}`" for what, key in (("checkpoint", "checkpoint"), ("genotype", "genotype_file"))
              if selection.get(key)]
    if failed:
        lines += ["", "**Failed jobs:**"] + [f"- {j.setting} seed {j.seed}: {j.error}" for j in failed]
    if missing:
        lines += ["", "**Missing or unfinished jobs:**"] + [f"- {j.setting} seed {j.seed} ({j.status}): `{j.path}`" for j in missing]
    (root / "summary.md").write_text("\n".join(lines) + "\n")
    summary = {"selection": selection, "settings": [asdict(r) for r in rows],
               "failed": [asdict(j) for j in failed], "missing": [asdict(j) for j in missing]}
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def analyse(root: str | Path, max_params: float | None = None, plots: bool = True, max_energy_uj: float | None = None,
            max_sops: float | None = None) -> dict:
    """Collect, aggregate, select, and write summary.{csv,md,json}, jobs.csv and the plots into `root`."""
    root = Path(root)
    for name, value in (("max_params", max_params), ("max_energy_uj", max_energy_uj), ("max_sops", max_sops)):
        check_budget(value, name)  # before any work
    jobs = collect(root)
    rows = aggregate(jobs)
    selection = select(rows, max_params, max_energy_uj, max_sops)
    write_tables(root, jobs, rows, selection)
    written = []
    if plots:
        written = plot_all(root, jobs, rows, selection, complete_front(rows))
    return {"jobs": jobs, "settings": rows, "selection": selection, "plots": written}
