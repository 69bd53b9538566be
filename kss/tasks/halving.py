"""Multi-fidelity search (search.strategy=halving): successive halving over *trained* candidates, for when
the training-free score does not rank architectures.

- **Pool**: `search.halving.pool` candidates, either SNASNet's random sampler (candidate i is the random
  search's candidate i: the same (seed, i) stream; over-budget and repeated genotypes skipped), or, with
  `search.prefilter=<search dir | search.json | candidates.jsonl>`, the distinct top-R candidates of a
  finished search. Either way they enter the study in candidate order (index), so no R rank is favoured.
- **Rungs**: `search.halving.budgets` (epochs of the training split, increasing: e.g. [0.111, 0.333, 1, 3]);
  at rung k a candidate is trained from scratch for budgets[k] epochs (kss.tasks.fidelity: an ordinary,
  resumable train.py run in <run dir>/rungs/, test=false) and reports its best **validation** accuracy.
- **Study: Optuna.** One study (<run dir>/study.db, or search.storage) with one trial per candidate; each
  rung's accuracy is `trial.report(acc, step=eta**k)`. A pruned trial is told PRUNED, one that finishes the
  last rung COMPLETE with its last-rung accuracy; the winner is the study's best COMPLETE trial (ties: the
  earliest). Who goes on (`search.halving.mode`):
  - `sync` (default): rung by rung. Every candidate of a rung trains, then the top max(n // eta, 1) of
    its n accuracies go on, by Optuna's own promotion rule applied to the whole rung: rungs of exactly
    27 -> 9 -> 3 -> 1 (ties at the cut all go on).
  - `async`: Optuna's `SuccessiveHalvingPruner(min_resource=1, reduction_factor=eta)` as it is, asked by
    `trial.should_prune()` as each trial finishes a rung, trials one after another (ASHA). It decides each
    trial on the trials that reached the rung before it (promoted when in the top 1/eta of them; the first
    eta - 1 trials of a rung are promoted when they lead), so rung k holds about pool / eta**k trials and
    the first trials are favoured: on Fashion-MNIST (docs/results/fmnist_selection) trial 0 went through
    every rung from the second-worst of 27 accuracies at the first, and won.
- **Resume**: an interrupted trial stays RUNNING in the study and is continued (same trial, same reports);
  decisions are kept in the trials' user attrs; an interrupted training resumes from its checkpoint, a
  finished one is read from its metrics.json. So a resumed search takes the uninterrupted one's decisions
  and ends with its winner; the one exception is a training interrupted after its first epoch, which
  resumes from its last epoch's checkpoint with a fresh data order (Lightning keeps no RNG state), so its
  accuracy, and a decision that close, can differ.
- **Output**: search.json in the usual contract (best_genotype, best_index, params, ...; best_score is the
  winner's R with a prefilter, else null) plus best_val_acc and the rungs; halving.md, a table of the rungs.
  `python train.py genotype=<run dir>/search.json` trains the winner; the test split was never looked at.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import statistics
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from kss import config as C
from kss.cli import checked
from kss.errors import KssError
from kss.io import write_json
from kss.runlock import run_lock
from kss.search.candidate import candidate_rngs
from kss.search.records import CANDIDATES, SUMMARY, read_candidates
from kss.search.strategies import open_storage, shown
from kss.space.genotype import Genotype, check_fits, genotype_key, sample_genotype
from kss.space.params import count_params, memory_bytes
from kss.tasks.search import refuse_shards, search_wandb_run
from kss.tasks.train import check_training_config, run_settings
from kss.tracking import table
from kss.tasks.fidelity import (batches_per_epoch, budget_tag, check_budget_fits, check_budgets, epochs_and_fraction,
                                train_at_budget, training_config)

log = logging.getLogger(__name__)

RUNGS = "rungs"
GENOTYPES = "genotypes"
TABLE = "halving.md"
STUDY = "study.db"
DRAWS_PER_CANDIDATE = 100  # a random pool gives up after pool x this many draws (budget, repeats)


MODES = ("sync", "async")


@dataclass
class HalvingSetup:
    pool: int
    eta: int
    budgets: list[float]
    prefilter: str | None
    storage: str | None
    mode: str = "sync"


def _integer(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise KssError(f"{name} must be an integer >= {low} (got {value!r})")
    return value


def check_halving(cfg: DictConfig) -> HalvingSetup:
    """One line for settings that cannot work: eta < 2, budgets not increasing, a rung with no candidates, ..."""
    search = cfg.get("search") or {}
    h = search.get("halving") or {}
    eta = _integer(h.get("eta"), "search.halving.eta", 2)
    pool = _integer(h.get("pool"), "search.halving.pool", 1)
    budgets = check_budgets(h.get("budgets"), "search.halving.budgets")
    if len(budgets) < 2:
        raise KssError(f"search.halving.budgets needs at least two rungs to halve between (got {budgets})")
    for rung, budget in enumerate(budgets):
        if pool // eta**rung < 1:
            raise KssError(f"search.halving.pool={pool} with eta={eta} leaves rung {rung} ({budget:g} epochs) with no "
                           f"candidates ({pool} // {eta}^{rung} = 0); pass search.halving.pool={eta ** (len(budgets) - 1)} "
                           "or more, or fewer budgets")
    if cfg.dataset.get("val_size", 0) <= 0:
        raise KssError("search.strategy=halving ranks candidates on validation accuracy: pass dataset.val_size > 0")
    cost_budgets = [f"budget.{name}" for name in ("max_energy_uj", "max_sops") if cfg.budget.get(name) is not None]
    if cost_budgets:
        raise KssError(f"search.strategy=halving applies budget.max_params only (its pool is not costed); drop "
                       f"{' and '.join(cost_budgets)}, or prefilter a search that applied them (search.prefilter=...)")
    mode = h.get("mode", "sync")
    if mode not in MODES:
        raise KssError(f"search.halving.mode must be sync (whole rungs: 27 -> 9 -> 3 -> 1) or async (Optuna's pruner "
                       f"as it is) (got {mode!r})")
    prefilter = search.get("prefilter")
    return HalvingSetup(pool=pool, eta=eta, budgets=budgets, prefilter=str(prefilter) if prefilter else None,
                        storage=search.get("storage"), mode=mode)


def random_pool(n: int, seed: int, kernels, spec, neuron, max_params) -> list[dict]:
    """The first n distinct, within-budget genotypes of SNASNet's sampler, candidate i drawn from (seed, i)."""
    pool, seen = [], set()
    for index in range(n * DRAWS_PER_CANDIDATE):
        genotype = sample_genotype(candidate_rngs(seed, index)[0], kernels, spec.cell_type)
        params = count_params(genotype, spec, neuron)
        key = genotype_key(genotype.to_json())
        if key in seen or max_params is not None and params > max_params:
            continue
        seen.add(key)
        pool.append({"index": index, "genotype": genotype.to_json(), "params": params, "score": None})
        if len(pool) == n:
            return pool
    raise KssError(f"search.halving.pool={n}: only {len(pool)} distinct candidates within budget in "
                   f"{n * DRAWS_PER_CANDIDATE} draws; lower the pool or raise budget.max_params")


def prefilter_file(source: str) -> Path:
    path = Path(source)
    file = path / CANDIDATES if path.is_dir() else path if path.suffix == ".jsonl" else path.parent / CANDIDATES
    if not file.is_file():
        raise KssError(f"search.prefilter={source}: no {CANDIDATES} there; pass a finished search's run directory, "
                       "its search.json or its candidates.jsonl")
    return file


def prefiltered_pool(source: str, n: int, kernels, spec, neuron) -> list[dict]:
    """The n distinct genotypes of highest R in a finished search, in candidate order."""
    file = prefilter_file(source)
    records = read_candidates(file, repair=False)
    ranked = sorted((r for r in records if r.get("status") == "scored"), key=lambda r: (-r["score"], r["index"]))
    pool, seen = [], set()
    for record in ranked:
        key = genotype_key(record["genotype"])
        if key in seen:
            continue
        genotype = Genotype.from_json(record["genotype"])
        check_fits(genotype, kernels, spec.cell_type)
        seen.add(key)
        pool.append({"index": record["index"], "genotype": genotype.to_json(),
                     "params": count_params(genotype, spec, neuron), "score": record["score"]})
        if len(pool) == n:
            return sorted(pool, key=lambda c: c["index"])
    raise KssError(f"search.prefilter={source} holds {len(pool)} distinct scored candidates, fewer than "
                   f"search.halving.pool={n}; lower the pool or pass a longer search")


def study_settings(hs: HalvingSetup, tcfg: DictConfig, pool: list[dict]) -> dict:
    training = run_settings(tcfg)
    training.pop("genotype")
    return json.loads(json.dumps({"strategy": "halving", "mode": hs.mode, "eta": hs.eta, "budgets": hs.budgets,
                                  "prefilter": hs.prefilter, "pool": [c["index"] for c in pool], "training": training}))


def open_study(hs: HalvingSetup, out_dir: Path, settings: dict):
    """Create or reopen the halving study (Optuna's SuccessiveHalvingPruner); other settings are refused."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = hs.storage or f"sqlite:///{(out_dir / STUDY).resolve()}"
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=hs.eta,
                                                    min_early_stopping_rate=0, bootstrap_count=0)
    study = optuna.create_study(storage=open_storage(url), study_name=f"kss-{out_dir.resolve().name}",
                                direction="maximize", pruner=pruner, load_if_exists=True)
    before = study.user_attrs.get("settings")
    if before is not None and "mode" not in before:  # a study from before search.halving.mode: Optuna's pruner
        before = {"mode": "async", **before}
    if before is None:
        study.set_user_attr("settings", settings)
        with warnings.catch_warnings():  # experimental in Optuna (the dashboard's axis label)
            warnings.simplefilter("ignore")
            study.set_metric_names(["val_acc"])
    elif before != settings:
        changed = sorted(k for k in before.keys() | settings.keys() if before.get(k) != settings.get(k))
        raise KssError(f"the study {study.study_name} in {shown(url)} holds a halving search with other settings "
                       f"({', '.join(changed)} differ); rerun with the same settings to resume, or pass "
                       "hydra.run.dir=<new dir>")
    return study


def _frozen(study, number: int):
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def _snapshot(study) -> dict:
    """The study's trials by number, read once (a whole rung's lookups from one read)."""
    return {t.number: t for t in study.get_trials(deepcopy=False)}


def decide(study, trial, rung: int, value: float, eta: int) -> str:
    """'promoted' or 'pruned' at `rung`, asked of Optuna's pruner once and kept in the trial's user attrs."""
    frozen = _frozen(study, trial.number)
    if (decision := frozen.user_attrs.get(f"rung_{rung}")) is not None:
        return decision
    if f"completed_rung_{rung}" in frozen.system_attrs:
        # Interrupted between the pruner's answer and recording it: the pruner has registered this rung and
        # would not decide it again. Its own rule on the values it compared (sequential trials: the same).
        from optuna.pruners._successive_halving import _is_trial_promotable_to_next_rung

        key = f"completed_rung_{rung}"
        competing = [t.system_attrs[key] for t in study.get_trials(deepcopy=False) if key in t.system_attrs]
        promoted = math.isfinite(value) and _is_trial_promotable_to_next_rung(value, competing, eta, study.direction)
    else:
        promoted = not trial.should_prune()
    decision = "promoted" if promoted else "pruned"
    trial.set_user_attr(f"rung_{rung}", decision)
    return decision


def open_trial(study, out_dir: Path, position: int, candidate: dict, trials: dict):
    """The candidate's trial: entered into the study (with its attributes, in one write), or reopened when an
    interruption left it running; None once it is finished."""
    import optuna
    from optuna.trial import TrialState

    frozen = trials.get(position)
    if frozen is not None and frozen.state.is_finished():
        return None
    if frozen is None:
        study.enqueue_trial({}, user_attrs={"position": position,
                                            **{k: candidate[k] for k in ("index", "params", "score", "genotype")}})
    if frozen is None or frozen.state == TrialState.WAITING:
        trial = study.ask()  # the enqueued trial
        if trial.user_attrs.get("position") != position:
            raise KssError(f"the study in {out_dir} does not follow this search's pool (trial {trial.number}); "
                           f"move {out_dir} away to start afresh")
        return trial
    log.info("halving: continuing candidate %d (trial %d) after an interruption", candidate["index"], frozen.number)
    # Optuna has no public call to reopen a RUNNING trial; Trial(study, id) is what study.ask() builds
    return optuna.trial.Trial(study, frozen._trial_id)


def rung_value(hs: HalvingSetup, tcfg: DictConfig, out_dir: Path, study, trial, candidate: dict, rung: int, kernels,
               what: str) -> float:
    """The candidate's validation accuracy at `rung` (nan when its training gave none), trained and reported
    once: a rung reported before an interruption is read back."""
    step, budget = hs.eta**rung, hs.budgets[rung]
    reported = _frozen(study, trial.number).intermediate_values
    if step in reported:
        return reported[step]
    genotype_file = out_dir / GENOTYPES / f"{candidate['index']}.json"
    if not genotype_file.exists():
        genotype_file.parent.mkdir(parents=True, exist_ok=True)
        write_json(genotype_file, candidate["genotype"])
    log.info("halving: candidate %d (%s), rung %d: %g epoch(s)", candidate["index"], what, rung, budget)
    metrics = train_at_budget(tcfg, out_dir / RUNGS / f"{candidate['index']}_{budget_tag(budget)}", genotype_file,
                              kernels, tcfg.seed, budget, group=out_dir.name)
    value = metrics.get("best_val_acc")
    value = float(value) if value is not None else math.nan
    trial.report(value, step)
    return value


def finish(study, trial, value: float) -> None:
    """The last rung's accuracy is the trial's value (FAIL when there is none)."""
    from optuna.trial import TrialState

    study.tell(trial, value if math.isfinite(value) else None,
               state=TrialState.COMPLETE if math.isfinite(value) else TrialState.FAIL)


def run_trials(hs: HalvingSetup, tcfg: DictConfig, out_dir: Path, pool: list[dict], study, kernels) -> None:
    """mode=async: one trial after another through its rungs, Optuna's pruner deciding each rung."""
    from optuna.trial import TrialState

    trials = {t.user_attrs.get("position"): t for t in study.get_trials(deepcopy=False)}
    last = len(hs.budgets) - 1
    for position, candidate in enumerate(pool):
        if (trial := open_trial(study, out_dir, position, candidate, trials)) is None:
            continue
        for rung in range(len(hs.budgets)):
            value = rung_value(hs, tcfg, out_dir, study, trial, candidate, rung, kernels, f"{position + 1} of {len(pool)}")
            if rung == last:
                finish(study, trial, value)
                break
            if decide(study, trial, rung, value, hs.eta) == "pruned":
                study.tell(trial, state=TrialState.PRUNED)
                break


def run_rungs(hs: HalvingSetup, tcfg: DictConfig, out_dir: Path, pool: list[dict], study, kernels) -> None:
    """mode=sync: rung by rung. Every candidate of a rung trains before any is decided, then the top
    max(n // eta, 1) of its n accuracies go on (Optuna's own promotion rule, applied to the whole rung), so
    the rungs hold pool, pool / eta, ... candidates (27 -> 9 -> 3 -> 1) and no trial is favoured by its
    place in the pool. Decisions are kept in the trials' user attrs: a resumed search repeats them."""
    from optuna.pruners._successive_halving import _is_trial_promotable_to_next_rung
    from optuna.trial import TrialState

    trials = {t.user_attrs.get("position"): t for t in study.get_trials(deepcopy=False)}
    opened = [(trial, candidate) for position, candidate in enumerate(pool)
              if (trial := open_trial(study, out_dir, position, candidate, trials)) is not None]
    last = len(hs.budgets) - 1
    for rung in range(len(hs.budgets)):
        frozen = _snapshot(study)
        alive = [(t, c) for t, c in opened
                 if all(frozen[t.number].user_attrs.get(f"rung_{r}") == "promoted" for r in range(rung))]
        if not alive:
            break
        values = [rung_value(hs, tcfg, out_dir, study, t, c, rung, kernels, f"{i + 1} of {len(alive)} at this rung")
                  for i, (t, c) in enumerate(alive)]
        if rung == last:
            for (trial, _), value in zip(alive, values):
                finish(study, trial, value)
            break
        # the whole rung, also its trials pruned before an interruption; a failed training (no accuracy) counts
        # in n as the worst, so one failure does not shrink the top n // eta
        step, frozen = hs.eta**rung, _snapshot(study)
        competing = [v if math.isfinite(v) else -math.inf
                     for t in frozen.values() if (v := t.intermediate_values.get(step)) is not None]
        for (trial, _), value in zip(alive, values):
            decision = frozen[trial.number].user_attrs.get(f"rung_{rung}")
            if decision is None:
                promoted = math.isfinite(value) and _is_trial_promotable_to_next_rung(value, competing, hs.eta,
                                                                                      study.direction)
                decision = "promoted" if promoted else "pruned"
                trial.set_user_attr(f"rung_{rung}", decision)
            if decision == "pruned":
                study.tell(trial, state=TrialState.PRUNED if math.isfinite(value) else TrialState.FAIL)


def rung_table(hs: HalvingSetup, out_dir: Path, study) -> list[dict]:
    """Per rung: its budget, the candidates trained there with their validation accuracy and train seconds,
    and the promoted ones."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.user_attrs["position"])
    rungs = []
    for rung, budget in enumerate(hs.budgets):
        epochs, fraction = epochs_and_fraction(budget)
        step = hs.eta**rung
        here = [t for t in trials if step in t.intermediate_values]
        seconds = 0.0
        for t in here:
            metrics = out_dir / RUNGS / f"{t.user_attrs['index']}_{budget_tag(budget)}" / "metrics.json"
            if metrics.exists():
                seconds += json.loads(metrics.read_text()).get("train_seconds") or 0.0
        rungs.append({"rung": rung, "budget_epochs": budget, "max_epochs": epochs, "train_fraction": fraction,
                      "step": step, "candidates": [t.user_attrs["index"] for t in here],
                      "val_acc": {str(t.user_attrs["index"]): t.intermediate_values[step] for t in here},
                      "promoted": [t.user_attrs["index"] for t in here if t.user_attrs.get(f"rung_{rung}") == "promoted"],
                      "train_seconds": seconds})
    return rungs


def summarize(cfg: DictConfig, tcfg: DictConfig, hs: HalvingSetup, pool: list[dict], study, out_dir: Path, spec,
              neuron, kernels) -> dict:
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        raise KssError("no candidate finished the last rung with a validation accuracy; check the data and the "
                       "training settings (the rung trainings are in rungs/)")
    best = max(complete, key=lambda t: (t.value, -t.user_attrs["position"]))
    rungs = rung_table(hs, out_dir, study)
    name, _ = C.kernel_set(tcfg)
    return {
        "kernel_set": name,
        "kernels": kernels,
        "setting": C.setting_tag(kernels, hs.pool),
        "cell_type": spec.cell_type,
        "iters": hs.pool,
        "seed": cfg.seed,
        "dataset": cfg.dataset.name,
        "strategy": "halving",
        "score_kind": cfg.score.kind if hs.prefilter else None,
        "best_index": best.user_attrs["index"],
        "best_genotype": best.user_attrs["genotype"],
        "best_score": best.user_attrs["score"],  # the winner's R with a prefilter; null for a random pool
        "best_val_acc": best.value,
        "best_budget_epochs": hs.budgets[-1],
        "params": best.user_attrs["params"],
        **memory_bytes(best.user_attrs["params"]),
        "search_seconds": sum(r["train_seconds"] for r in rungs),
        "training_epochs": sum(r["budget_epochs"] * len(r["candidates"]) for r in rungs),
        "candidates_scored": len(pool),
        "candidates_skipped": 0,
        "candidates_over_budget": {name: 0 for name in C.BUDGETS},
        "candidates_non_finite": 0,
        "pool": hs.pool,
        "eta": hs.eta,
        "budgets": hs.budgets,
        "prefilter": hs.prefilter,
        "mode": hs.mode,
        "pruner": "optuna.pruners.SuccessiveHalvingPruner" if hs.mode == "async" else
                  "whole rungs, Optuna's promotion rule (optuna.pruners._successive_halving)",
        "study_trials": {state.name.lower(): sum(t.state == state for t in study.get_trials(deepcopy=False))
                         for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)},
        "rungs": rungs,
        "selection_metric": "best_val_acc (validation split; the test split unseen)",
        "max_params": cfg.budget.max_params,
        "max_energy_uj": cfg.budget.get("max_energy_uj"),
        "max_sops": cfg.budget.get("max_sops"),
        "device": str(C.resolve_device(tcfg.device)),
        "model": asdict(spec),
        "neuron": asdict(neuron),
        "optimizer": OmegaConf.to_container(tcfg.optimizer, resolve=True),
        "torch": torch.__version__,
        "host": platform.node(),
    }


SCHEDULERS = {"sync": "whole rungs (every candidate of a rung trained, then the top 1/eta promoted by Optuna's rule)",
              "async": "Optuna's SuccessiveHalvingPruner (asynchronous: each trial decided on the trials before it)"}


def table_markdown(summary: dict) -> str:
    lines = [f"# Successive halving: {summary['pool']} candidates, eta {summary['eta']}, budgets "
             f"{', '.join(f'{b:g}' for b in summary['budgets'])} epoch(s) of the training split "
             f"({summary['dataset']}, {summary['kernel_set']})", "",
             f"Scheduler: {SCHEDULERS[summary.get('mode', 'async')]}; each training from scratch at its budget; validation "
             f"accuracy only (the test split unseen). Winner: candidate {summary['best_index']} "
             f"(val acc {summary['best_val_acc']:.4f} at {summary['best_budget_epochs']:g} epochs, "
             f"{summary['params']} params). Cost: {summary['training_epochs']:.2f} training epochs, "
             f"{summary['search_seconds'] / 60:.1f} min of training on {summary['device']}.", "",
             "| rung | budget (epochs) | trained | promoted | best val acc | median val acc | train min |",
             "|---|---|---|---|---|---|---|"]
    for r in summary["rungs"]:
        accs = [v for v in r["val_acc"].values() if v is not None and math.isfinite(v)]
        median = statistics.median(accs) if accs else math.nan
        lines.append(f"| {r['rung']} | {r['budget_epochs']:g} | {len(r['candidates'])} | {len(r['promoted'])} | "
                     f"{max(accs, default=math.nan):.4f} | {median:.4f} | {r['train_seconds'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def run_halving(cfg: DictConfig, out_dir: Path) -> dict:
    """The task behind `search.py search.strategy=halving`: config in, search.json's content out."""
    refuse_shards(cfg, "search.strategy=halving")
    out_dir = Path(out_dir)
    hs = check_halving(cfg)
    tcfg = training_config(cfg)
    check_training_config(tcfg)
    name, kernels = C.kernel_set(tcfg)
    data = C.data_module(tcfg)
    spec, neuron = C.model_spec(tcfg, data), C.neuron_spec(tcfg)
    spec.validate(kernels)
    C.budgets(tcfg)
    n_batches = batches_per_epoch(tcfg)  # loads the data: missing data is refused before anything is written
    for budget in hs.budgets:
        check_budget_fits(budget, n_batches, "search.halving.budgets")
    if hs.prefilter:
        pool = prefiltered_pool(hs.prefilter, hs.pool, kernels, spec, neuron)
    else:
        pool = random_pool(hs.pool, cfg.seed, kernels, spec, neuron, tcfg.budget.max_params)
    settings = study_settings(hs, tcfg, pool)
    checked()
    with run_lock(out_dir, cfg.get("lock_wait", False)):
        finished_before = (out_dir / SUMMARY).exists()
        study = open_study(hs, out_dir, settings)
        (run_rungs if hs.mode == "sync" else run_trials)(hs, tcfg, out_dir, pool, study, kernels)
        summary = summarize(cfg, tcfg, hs, pool, study, out_dir, spec, neuron, kernels)
        write_json(out_dir / SUMMARY, summary)
        (out_dir / TABLE).write_text(table_markdown(summary))
    if not finished_before:  # a rerun of a finished search reports it and adds no W&B run, as search.py does
        log_to_wandb(cfg, out_dir, summary)
    log.info("halving: winner candidate %d, val acc %.4f at %g epochs, %d params  %s", summary["best_index"],
             summary["best_val_acc"], hs.budgets[-1], summary["params"], Genotype.from_json(summary["best_genotype"]))
    return summary


def log_to_wandb(cfg: DictConfig, out_dir: Path, summary: dict) -> None:
    """One W&B run per halving search (job_type 'search', like a training-free search), beside its rung
    trainings' own runs: every rung's validation accuracies as a table, the winner in the summary."""
    with search_wandb_run(cfg, out_dir, "halving") as run:
        if run is None:
            return
        rows = [[r["rung"], r["budget_epochs"], int(index), acc, int(index) in r["promoted"]]
                for r in summary["rungs"] for index, acc in r["val_acc"].items()]
        run.log({"rungs": table(["rung", "budget_epochs", "index", "val_acc", "promoted"], rows)})
        run.summary.update({k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
