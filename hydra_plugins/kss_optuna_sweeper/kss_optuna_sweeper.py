"""hparams_search=optuna: kss's own small Hydra sweeper on a current Optuna (>= 4).

hydra-optuna-sweeper 1.3 pins optuna < 3, which cannot share an environment with the Optuna that
search.strategy=tpe|evolution|pareto uses; this sweeper replaces it with the same config shape
(hydra.sweeper.direction / study_name / storage / n_trials / n_jobs / sampler / params). Each trial is one
ordinary train.py job (any Hydra launcher), asked from the study with the params' distributions and told
the job's return value: train.py returns the best validation accuracy (never the test split). A failed job
is a failed trial. The best trial is written to <sweep dir>/optimization_results.yaml.

params: choice(a, b, ...) -> categorical; interval(low, high) -> float (int when both are ints; tag(log, ...)
for a log scale); range(start, stop, step) -> int.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict  # no `from __future__ import annotations`: Hydra loads plugins outside sys.modules

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class KssOptunaSweeperConf:
    _target_: str = "hydra_plugins.kss_optuna_sweeper.kss_optuna_sweeper.KssOptunaSweeper"
    direction: str = "maximize"
    study_name: str = "kss_hparams"
    storage: Any = None  # None: in memory; sqlite:///optuna.db (or any SQLAlchemy URL) keeps the study across runs
    n_trials: int = 20
    n_jobs: int = 1  # trials launched together (a parallel launcher runs them side by side)
    sampler: Any = None  # e.g. {_target_: optuna.samplers.TPESampler, seed: 0}; None: Optuna's default
    params: Dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=KssOptunaSweeperConf, provider="kss")


def distribution(name: str, text: str):
    """An Optuna distribution from a Hydra sweep expression."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    sweep = OverridesParser.create().parse_override(f"{name}={text}").value()
    if isinstance(sweep, ChoiceSweep):
        return CategoricalDistribution(list(sweep.list))
    log_scale = "log" in sweep.tags
    if isinstance(sweep, IntervalSweep):
        if isinstance(sweep.start, int) and isinstance(sweep.end, int):
            return IntDistribution(sweep.start, sweep.end, log=log_scale)
        return FloatDistribution(float(sweep.start), float(sweep.end), log=log_scale)
    if isinstance(sweep, RangeSweep):
        return IntDistribution(int(sweep.start), int(sweep.stop) - 1, step=int(sweep.step or 1))
    raise ValueError(f"hydra.sweeper.params.{name}: {text!r} is not choice(...), interval(...) or range(...)")


class KssOptunaSweeper(Sweeper):
    def __init__(self, direction: str, study_name: str, storage: Any, n_trials: int, n_jobs: int, sampler: Any,
                 params: dict) -> None:
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.n_trials, self.n_jobs, self.sampler, self.params = n_trials, n_jobs, sampler, dict(params or {})
        self.job_idx = 0

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context, task_function=task_function,
                                                                config=config)

    def sweep(self, arguments: list[str]) -> None:
        import optuna
        from optuna.trial import TrialState

        space = {name: distribution(name, str(text)) for name, text in self.params.items()}
        sampler = self.sampler  # Hydra instantiates it with the sweeper (recursively); a plain config here
        if sampler is not None and not isinstance(sampler, optuna.samplers.BaseSampler):
            sampler = instantiate(sampler)
        study = optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=sampler,
                                    direction=self.direction, load_if_exists=True)
        done = 0
        while done < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            batch = [tuple(f"{name}={value}" for name, value in t.params.items()) + tuple(arguments) for t in trials]
            self.validate_batch_is_legal(batch)
            returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            for trial, job in zip(trials, returns):
                try:
                    value = job.return_value  # re-raises the job's exception when it failed
                except Exception as error:  # noqa: BLE001 - one failed trial, the others go on
                    log.warning("trial %d failed: %s", trial.number, error)
                    value = None
                if value is None:
                    study.tell(trial, state=TrialState.FAIL)
                else:
                    study.tell(trial, float(value))
            done += len(trials)
        best = study.best_trial
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value, "best_trial": best.number}
        out = Path(self.config.hydra.sweep.dir)
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), out / "optimization_results.yaml")
        log.info("best trial %d: %s = %s", best.number, best.params, best.value)
