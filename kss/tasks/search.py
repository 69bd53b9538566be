"""The task behind search.py: the config turned into a SearchSetup once, the search run, W&B told."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from kss import config as C
from kss.cli import checked
from kss.search import shards as S
from kss.search.loop import search
from kss.search.records import CANDIDATES, is_finished, read_candidates
from kss.search.score import check_precision
from kss.errors import KssError
from kss.search.setup import SearchSetup, check_batch_fits
from kss.tracking import wandb_run


def setup_from_config(cfg: DictConfig, data, shards: int = 1) -> SearchSetup:
    name, kernels = C.kernel_set(cfg)
    search = cfg.get("search") or {}
    return SearchSetup(
        kernel_set=name,
        kernels=kernels,
        iters=cfg.iters,
        seed=cfg.seed,
        dataset=cfg.dataset.name,
        spec=C.model_spec(cfg, data),
        neuron=C.neuron_spec(cfg),
        score=cfg.score.kind,
        batch_size=cfg.score.batch_size,
        repeats=cfg.score.repeats,
        carry_state=cfg.score.get("carry_state", True),
        max_params=cfg.budget.max_params,
        data_split=C.data_split(cfg),
        precision=cfg.score.get("precision", "fp32"),
        layout=cfg.score.get("layout", "auto"),
        cudnn_benchmark=cfg.score.get("cudnn_benchmark", False),
        fused=cfg.score.get("fused", "auto"),
        allocator=cfg.score.get("allocator", "keep_freed"),
        shards=shards,
        max_energy_uj=cfg.budget.get("max_energy_uj"),
        max_sops=cfg.budget.get("max_sops"),
        cost_every=bool(cfg.get("cost", {}).get("every_candidate", False)),
        cost=C.cost_table(cfg),
        strategy=search.get("strategy", "random"),
        storage=search.get("storage"),
        population=search.get("population", 20),
        minimise=search.get("minimise", "params"),
    )


def run_search(cfg: DictConfig, out_dir: str | Path | None = None) -> dict:
    """The task behind `search.py`: config in, search.json's content out (a shard's own summary
    while other shards of its search are still to run)."""
    shards, shard = check_sharding(cfg)  # before any work: a refused command leaves nothing behind
    out_dir = Path(out_dir or C.run_dir())
    data = C.data_module(cfg)
    setup = setup_from_config(cfg, data, shards)
    device = C.resolve_device(cfg.device)
    check_precision(setup.precision, device)
    if shards == 1 and not is_finished(out_dir, setup.iters) or shards > 1 and shard is not None:
        check_batch_fits(setup, data)
    checked()  # the input is valid: the config tree (extras.print_config), then the work
    if shards > 1:
        summary, merged_now = S.run_sharded(setup, data, out_dir, device, shard, progress=cfg.get("progress", True),
                                            lock_wait=cfg.get("lock_wait", False))
        if merged_now:  # the shard that completes the set logs the search, once
            log_to_wandb(cfg, out_dir, summary)
        return summary
    finished = is_finished(out_dir, setup.iters)
    summary = search(setup, data, out_dir, device, progress=cfg.get("progress", True), lock_wait=cfg.get("lock_wait", False))
    if not finished:  # a finished search was logged when it finished: no second W&B run
        log_to_wandb(cfg, out_dir, summary)
    return summary


def log_to_wandb(cfg: DictConfig, out_dir: Path, summary: dict) -> None:
    """One W&B run per search (job_type 'search'), offline by default; the scores as a curve."""
    with search_wandb_run(cfg, out_dir) as run:
        if run is None:
            return
        best = None
        for record in read_candidates(out_dir / CANDIDATES)[: cfg.iters]:
            if record["status"] == "scored":
                best = record["score"] if best is None else max(best, record["score"])
            costed = {f"candidate/{k}": record[k] for k in ("energy_uj", "sops") if record.get(k) is not None}
            run.log({"candidate/score": record["score"], "candidate/params": record["params"], "best_score": best,
                     **costed}, step=record["index"])
        run.summary.update({k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
        run.summary.update({f"firing_rate/{k}": v for k, v in summary.get("firing_rates", {}).items()})


def search_wandb_run(cfg: DictConfig, out_dir: Path, *tags: str):
    """The W&B run of one search, training-free or halving (job_type 'search'; None when wandb is disabled)."""
    config = C.logged_config(cfg)
    config.pop("shard", None)  # a sharded search is logged once, by whichever shard completed it
    return wandb_run(cfg.wandb.mode, cfg.wandb.project, out_dir, "search", group=cfg.wandb.group, name=out_dir.name,
                     tags=[*C.run_tags(cfg), *tags], config=config)


def check_sharding(cfg: DictConfig) -> tuple[int, int | None]:
    """(shards, shard) from the config, refused in one line unless 1 <= shards and 0 <= shard < shards."""
    shards, shard = cfg.get("shards", 1), cfg.get("shard")
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise KssError(f"shards must be a positive integer (got {shards}); e.g. shards=8 shard=0")
    if shard is not None and (isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < shards):
        raise KssError(f"shard={shard} is not one of 0..{shards - 1} (shards={shards}); pass shard=0..{shards - 1}, "
                       "or leave shard out to merge the finished shards and report the rest")
    return shards, shard


def refuse_shards(cfg: DictConfig, script: str) -> None:
    """For the scripts whose search is never sharded: shards>1 would search a part and act on it."""
    if cfg.get("shards", 1) != 1 or cfg.get("shard") not in (None, 0):
        raise KssError(f"{script} does not shard its search (got shards={cfg.get('shards')} shard={cfg.get('shard')}); "
                       "run the shards with search.py, then pass genotype=<its run dir>/search.json")
