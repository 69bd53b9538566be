"""Guided search: Optuna's samplers pick the candidates (search.strategy=tpe | evolution | pareto).

- The genotype is one categorical choice per edge: a forward cell's 6 edges x the kernel set's ops; a
  backward cell's node pairs each a direction (forward / feedback, SNASNet's coin) and an op. The 0->3
  edge chooses among the non-zero ops only: SNASNet resamples until it is non-zero, and pruning never
  removes it then (both its nodes stay live), so a uniform draw here is SNASNet's sampler. SNASNet's
  pruning runs before scoring; a trial that prunes to a genotype the study has scored reuses that score
  (search.json's `duplicates` counts them).
- The study lives in a database (search.storage: study.db in the run directory by default, or any
  SQLAlchemy URL); each trial keeps its candidates.jsonl line in its user attrs, so candidates.jsonl is
  rebuilt from the study on resume. Resume = reopen the study; a trial an interruption left running is
  marked failed and ignored.
- Candidate `index` (the trial's place in candidates.jsonl) is initialised from (seed, index) as in the
  random search, and its sampler is a fresh one seeded from (seed, index): Optuna's samplers keep their
  random state in the process, so this is what makes a resumed search ask what an uninterrupted one would.
- Budgets are Optuna constraints (Trial.set_constraint): over-budget trials are scored, recorded with status
  over_budget, and only feasible trials can win.
- `shards=N shard=K`: N workers on one study, worker K filling the indices i with i mod N == K (kss.search.shards
  merges their files as for a random search); which trials each one asks then depends on timing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

from kss.errors import KssError
from kss.io import write_lines
from kss.names import setting_tag
from kss.search.candidate import candidate_rngs, evaluate_candidate
from kss.search.progress import interruptible, say_how_long
from kss.runlock import run_lock
from kss.search.records import SETTLE_SECONDS, record_settings
from kss.search.score import check_precision
from kss.search.setup import use_fused
from kss.search.strategies import MEMORY, STUDY, open_storage, shown
from kss.space.genotype import FORWARD_EDGES, NODES, Genotype, genotype_key, op_names, prune

log = logging.getLogger(__name__)

TPE_STARTUP = 10  # random trials before TPE models the scores (Optuna's default)
BUDGET_FIGURES = {"max_params": "params", "max_energy_uj": "energy_uj", "max_sops": "sops"}


def storage_url(setup, out_dir: Path) -> str:
    return setup.storage or f"sqlite:///{(Path(out_dir) / STUDY).resolve()}"


def search_space(kernels, cell_type: str) -> dict:
    """Parameter name -> CategoricalDistribution, in a fixed order."""
    from optuna.distributions import CategoricalDistribution

    ops = op_names(kernels)
    space = {}
    for i, j in FORWARD_EDGES:
        if (i, j) == (0, NODES - 1):
            space[f"{i}->{j}"] = CategoricalDistribution([op for op in ops if op != "zero"])
        elif cell_type == "backward":  # SNASNet's backward sampler: a direction, then an op, per node pair
            space[f"{i}-{j} direction"] = CategoricalDistribution(["forward", "feedback"])
            space[f"{i}-{j}"] = CategoricalDistribution(list(ops))
        else:
            space[f"{i}->{j}"] = CategoricalDistribution(list(ops))
    return space


def genotype_from_params(params: dict, cell_type: str) -> Genotype:
    """A trial's choices -> the pruned genotype that is scored."""
    ops = [["zero"] * NODES for _ in range(NODES)]
    for i, j in FORWARD_EDGES:
        if f"{i}->{j}" in params:
            ops[i][j] = params[f"{i}->{j}"]
        else:
            a, b = (j, i) if params[f"{i}-{j} direction"] == "feedback" else (i, j)
            ops[a][b] = params[f"{i}-{j}"]
    return Genotype(cell_type, tuple(tuple(row) for row in prune(ops, cell_type)))


def set_constraints(trial, setup, record: dict) -> None:
    """The budgets as the trial's constraints (Optuna 5's Trial.set_constraint, which replaces the samplers'
    constraints_func): feasible when every value is <= 0; the samplers rank infeasible trials below every
    feasible one, and only a feasible (status scored) candidate wins."""
    for name, figure in BUDGET_FIGURES.items():
        if (limit := getattr(setup, name)) is not None:
            trial.set_constraint(name, (record[figure] - limit) / limit if record.get(figure) is not None else 0.0)


def make_sampler(setup, seed: int, n_params: int):
    import optuna

    if setup.strategy == "evolution":  # NSGA-II: uniform crossover, and each edge mutates with p = 1/edges
        return optuna.samplers.NSGAIISampler(population_size=setup.population, mutation_prob=1.0 / n_params, seed=seed)
    # tpe, and pareto (multi-objective TPE): seeded random trials first, then the Parzen estimators
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP, multivariate=True)


def open_study(setup, out_dir: Path):
    """Create or reopen the search's study; a study holding another search's trials is refused."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(setup, out_dir)
    directions = ["maximize", "minimize"] if setup.strategy == "pareto" else ["maximize"]
    # one worker at a time creates the database's tables and the study (two at once: "table ... already exists")
    with run_lock(out_dir, wait=SETTLE_SECONDS):
        storage = open_storage(url)
        study = optuna.create_study(storage=storage, study_name=f"kss-{Path(out_dir).resolve().name}",
                                    directions=directions, load_if_exists=True)
    if not study.metric_names:  # the dashboard's axis labels
        study.set_metric_names(["R", setup.minimise] if setup.strategy == "pareto" else ["R"])
    settings = json.loads(json.dumps(setup.settings() | {"shards": 1}))  # one study, any number of workers
    before = study.user_attrs.get("settings")
    if before is None:
        study.set_user_attr("settings", settings)
    elif before != settings:
        changed = sorted(k for k in before.keys() | settings.keys() if before.get(k) != settings.get(k))
        raise KssError(f"the study {study.study_name} in {shown(url)} holds a search with other settings "
                       f"({', '.join(changed)} differ); pass another search.storage or hydra.run.dir")
    return study


def study_records(study) -> list[dict]:
    """Every finished trial's candidates.jsonl line (complete trials and non-finite ones)."""
    from optuna.trial import TrialState

    return [t.user_attrs["record"] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
            if "record" in t.user_attrs]


def fail_stale(study, worker: int, workers: int) -> int:
    """Mark this worker's trials that an interruption left running as failed (they are ignored)."""
    from optuna.trial import TrialState

    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
             if t.user_attrs.get("worker", worker if workers == 1 else None) == worker]
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
    if stale:
        log.info("marked %d trial(s) left running by an interruption as failed", len(stale))
    return len(stale)


def score_trials(setup, batches: list, device, progress: bool, records: list, candidates_path: Path,
                 indices: range | None = None, label: str = "") -> None:
    """The guided counterpart of kss.search.loop.score_candidates: one trial per index in `indices` from the
    len(records)-th on, each line appended to `candidates_path` once the study holds it."""
    from optuna.trial import TrialState
    from tqdm.auto import tqdm

    indices = range(setup.iters) if indices is None else indices
    check_precision(setup.precision, device)
    out_dir = candidates_path.parent
    record_settings(out_dir, setup)
    if setup.storage in MEMORY and records:
        raise KssError(f"{candidates_path} holds {len(records)} candidates and search.storage={setup.storage} keeps no "
                       "study to resume; leave search.storage unset (study.db), or move the file away")
    study = open_study(setup, out_dir)
    fail_stale(study, indices.start, indices.step)
    everything = study_records(study)
    mine = sorted((r for r in everything if r["index"] in indices), key=lambda r: r["index"])[: len(indices)]
    if [r["index"] for r in mine] != list(indices[: len(mine)]):
        raise KssError(f"the study in {shown(storage_url(setup, out_dir))} has gaps or repeats in this search's "
                       f"candidates; move {out_dir} away to start afresh")
    if len(records) > len(mine):
        raise KssError(f"{candidates_path} holds {len(records)} candidates but the study in "
                       f"{shown(storage_url(setup, out_dir))} only {len(mine)}; pass the search.storage it ran with, "
                       "or move the run directory away to start afresh")
    if len(mine) > len(records):  # lines the interruption did not write: the study has them
        write_lines(candidates_path, mine)
        records[:] = mine
    known = {genotype_key(r["genotype"]): r for r in sorted(everything, key=lambda r: r["index"])}
    space = search_space(setup.kernels, setup.spec.cell_type)
    best = max((r["score"] for r in records if r["status"] == "scored"), default=None)
    bar = tqdm(total=len(indices), initial=len(records), disable=not progress, unit="trial", dynamic_ncols=True,
               desc=f"{setup.strategy} {setting_tag(setup.kernels, setup.iters)}{' ' + label if label else ''}")
    first = len(records)
    fast = use_fused(setup, device)
    with bar, open(candidates_path, "a") as sink, interruptible(records, len(indices), label):
        for position in range(len(records), len(indices)):
            index = indices[position]
            start = time.perf_counter()
            rng, _ = candidate_rngs(setup.seed, index)
            study.sampler = make_sampler(setup, int(rng.integers(2**31)), len(space))
            trial = study.ask(space)
            trial.set_user_attr("index", index)
            trial.set_user_attr("worker", indices.start)
            genotype = genotype_from_params(trial.params, setup.spec.cell_type)
            key = genotype_key(genotype.to_json())
            if key not in known and indices.step > 1:  # another worker may have scored it meanwhile
                known |= {genotype_key(r["genotype"]): r for r in study_records(study) if genotype_key(r["genotype"]) not in known}
            if key in known:  # pruned to a scored genotype: its score, not a second network
                record = dict(known[key]) | {"index": index, "seconds": time.perf_counter() - start,
                                             "strategy": setup.strategy}
                trial.set_user_attr("duplicate_of", known[key]["index"])
            else:
                record = evaluate_candidate(setup, index, batches, device, fast, genotype) | {"strategy": setup.strategy}
                known[key] = record
            trial.set_user_attr("record", record)
            set_constraints(trial, setup, record)
            if record["status"] == "non_finite":
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, trial_values(setup, record))
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            records.append(record)
            if position == first + fast and len(indices) - position > 1 and "duplicate_of" not in trial.user_attrs:
                say_how_long(bar, record["seconds"], len(indices) - position - 1, device,
                              records[first]["seconds"] if fast else None)
            if record["status"] == "scored" and (best is None or record["score"] > best):
                best = record["score"]
            bar.set_postfix(best=f"{best:.3f}" if best is not None else "-", refresh=False)
            bar.update()


def trial_values(setup, record: dict) -> list[float]:
    values = [record["score"]]
    if setup.strategy == "pareto":
        values.append(record[setup.minimise])
    if not all(v is not None and math.isfinite(v) for v in values):
        raise KssError(f"candidate {record['index']} has no {setup.minimise}; pass cost.every_candidate=true")
    return values


def pareto_front(records: list[dict], objective: str) -> list[int]:
    """Indices of the feasible candidates no other beats on R (higher) and `objective` (lower); of equal
    points, the earliest."""
    points = sorted((r[objective], -r["score"], r["index"]) for r in records
                    if r["status"] == "scored" and r.get(objective) is not None)
    front, best = [], -math.inf
    for _, negative, index in points:
        if -negative > best:
            front.append(index)
            best = -negative
    return sorted(front)


def summary_fields(setup, records: list[dict]) -> dict:
    """What a guided search adds to search.json."""
    keys = [genotype_key(r["genotype"]) for r in records]
    fields = {"strategy": setup.strategy, "duplicates": len(keys) - len(set(keys))}
    if setup.strategy == "evolution":
        fields["population"] = setup.population
    if setup.strategy == "pareto":
        fields |= {"minimise": setup.minimise, "pareto_front": pareto_front(records, setup.minimise)}
    return fields
