"""The proxy study's task: searches each kernel set, picks candidates spread over the score range, trains
them under one budget (kss.tasks.train), and hands the rows to kss.study.proxy, which computes and writes the
report. This is the part of the study that reads the Hydra config; kss.study.proxy works on plain rows.

Every step is resumable: searches resume, finished trainings are reported by kss.tasks.train, and the proxies
of the picks are kept in picks.json.
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from kss import config as C
from kss.cli import checked
from kss.errors import KssError
from kss.io import write_json
from kss.search.candidate import evaluate_candidate
from kss.search.loop import search
from kss.search.records import CANDIDATES, read_candidates
from kss.search.setup import check_batch_fits
from kss.space.genotype import genotype_key
from kss.study.proxy import (COVARIATES, PICKS, PROXIES, coarse_to_fine, pick_spread, seed_noise_rows, spread,
                             study_statistics, write_outputs, write_so_far)
from kss.tasks.fidelity import budget_job
from kss.tasks.search import refuse_shards, setup_from_config
from kss.tasks.train import METRICS, run_train
from kss.tracking import image, table, wandb_run

log = logging.getLogger(__name__)
SO_FAR_RESAMPLES = 1000


def check_study(cfg: DictConfig, kernel_sets: list) -> None:
    refuse_shards(cfg, "proxy.py")
    p = cfg.proxy
    if p.per_set * len(kernel_sets) < 3:
        raise KssError(f"a rank correlation needs at least 3 architectures; per_set={p.per_set} x "
                       f"{len(kernel_sets)} kernel set(s) gives {p.per_set * len(kernel_sets)}")
    if not isinstance(p.epochs, int) or p.epochs < 1:
        raise KssError(f"proxy.epochs is the training budget and must be a positive integer (got {p.epochs})")
    if not 0 < p.train_fraction <= 1:
        raise KssError(f"proxy.train_fraction must be in (0, 1] (got {p.train_fraction})")
    if p.get("seed_archs", 2) < 2:
        raise KssError(f"proxy.seed_archs must be >= 2: the top-scored and the median architecture (got {p.seed_archs})")
    if p.long_factor < 1 or p.seeds < 1:
        raise KssError(f"proxy.long_factor and proxy.seeds must be >= 1 (got {p.long_factor}, {p.seeds})")


def collect_picks(cfg: DictConfig, out_dir: Path, kernel_sets: list, device) -> list[dict]:
    """Search each kernel set, pick across its score range, compute every proxy of the picks."""
    path = out_dir / PICKS
    settings = {"kernel_sets": kernel_sets, "per_set": cfg.proxy.per_set, "iters": cfg.iters, "seed": cfg.seed}
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("settings") == settings:
            repeated = len(saved["picks"]) - len({(p["kernel_set"], genotype_key(p["genotype"])) for p in saved["picks"]})
            if repeated:  # picked before pick_spread kept one draw per genotype: the statistics collapse them
                log.warning("%s repeats %d genotype(s) within a kernel set (picked by an earlier rule); the statistics "
                            "count each architecture once, so n is smaller than the picks", path, repeated)
            return saved["picks"]
        raise KssError(f"{path} holds picks of other settings; pass hydra.run.dir=<new dir> or name=<new name>")
    data = C.data_module(C.job_config(cfg, **{"kernel_set.kernels": kernel_sets[0]}))
    picks = []
    for kernels in kernel_sets:
        job = C.job_config(cfg, **{"kernel_set.kernels": kernels})
        setup = setup_from_config(job, data)
        search_dir = out_dir / "search" / C.setting_tag(kernels, cfg.iters)
        search(setup, data, search_dir, device, progress=cfg.progress)
        chosen = pick_spread(read_candidates(search_dir / CANDIDATES)[: cfg.iters], cfg.proxy.per_set)
        batches = [b.to(device) for b in data.search_batches(setup.batch_size, setup.repeats, setup.seed)]
        naswot = replace(setup, score="naswot")
        for rank, record in enumerate(chosen):
            with torch.random.fork_rng():
                other = evaluate_candidate(naswot, record["index"], batches, device)
            rng = np.random.default_rng([cfg.seed, 7919, record["index"], *kernels])
            picks.append({
                "kernel_set": C.kernel_set_name(kernels), "kernels": kernels, "index": record["index"],
                "genotype": record["genotype"], "params": record["params"], "hamming": record["score"],
                "naswot": other["score"], "random": float(rng.random()), "rank_in_set": rank,
            })
    write_json(path, {"settings": settings, "picks": picks})
    return picks


def _tag(pick: dict) -> str:
    return f"{C.setting_tag(pick['kernels'])}_{pick['index']}"


def pick_run_dir(cfg: DictConfig, out_dir: Path, pick: dict, seed: int, epochs: int) -> Path:
    # the budget is in the name: trainer.limit_train_batches is not among a run's settings
    return out_dir / "train" / f"{_tag(pick)}_e{epochs}_f{cfg.proxy.train_fraction:g}_seed{seed}"


def train_pick(cfg: DictConfig, out_dir: Path, pick: dict, seed: int, epochs: int) -> tuple[float | None, bool]:
    """Validation accuracy of one pick after a fixed budget (kss.tasks.train; resumable), and whether it was
    trained now (False: a finished run reported)."""
    genotype_file = out_dir / "genotypes" / f"{_tag(pick)}.json"
    genotype_file.parent.mkdir(parents=True, exist_ok=True)
    if not genotype_file.exists():
        write_json(genotype_file, pick["genotype"])
    job = budget_job(cfg, genotype_file, pick["kernels"], seed, epochs, cfg.proxy.train_fraction, group=cfg.name)
    run_dir = pick_run_dir(cfg, out_dir, pick, seed, epochs)
    finished = (run_dir / METRICS).exists()
    return run_train(job, run_dir).get("best_val_acc"), not finished


def run_study(cfg: DictConfig, out_dir: Path, kernel_sets: list) -> dict:
    """The proxy study (kss.tasks.proxy.run_proxy calls it): proxy.json's content out."""
    check_study(cfg, kernel_sets)
    device = C.resolve_device(cfg.device)
    if not (out_dir / PICKS).exists():  # the searches ahead need the data, and a scoring batch it can serve
        job = C.job_config(cfg, **{"kernel_set.kernels": kernel_sets[0]})
        data = C.data_module(job)
        check_batch_fits(setup_from_config(job, data), data)
    checked()  # the config tree (extras.print_config), once the input is valid
    p = cfg.proxy
    picks = collect_picks(cfg, out_dir, kernel_sets, device)
    total = len(picks) + max(2, min(p.get("seed_archs", 2), len(picks))) * (p.seeds - 1) + min(p.long_archs, len(picks))
    done = 0

    def progress(what: str) -> None:
        nonlocal done
        done += 1
        log.info("proxy study: training %d of %d (%s)", done, total, what)

    long_epochs = p.epochs * p.long_factor
    settings = {"kernel_sets": kernel_sets, "per_set": p.per_set, "iters": cfg.iters, "epochs": p.epochs,
                "train_fraction": p.train_fraction, "long_epochs": long_epochs, "seeds": p.seeds,
                "dataset": cfg.dataset.name, "model": C.model_fields(cfg), "seed": cfg.seed, "bootstrap": p.bootstrap}
    rows = [pick | {"val_acc": None, "val_acc_long": None} for pick in picks]  # in pick order: the statistics' order
    seed_noise = {}

    def so_far() -> None:  # interim statistics after each new training (fewer resamples: they are rewritten often)
        try:
            write_so_far(out_dir, rows, seed_noise, settings, total, min(p.bootstrap, SO_FAR_RESAMPLES), cfg.seed)
        except Exception as error:  # a report of partial data must not stop hours of training
            log.warning("proxy study: the interim report failed (%s: %s); the trainings go on", type(error).__name__, error)

    # the finished trainings are read first, so the interim report after the first new one includes them all
    order = coarse_to_fine(len(rows))
    finished = [i for i in order if (pick_run_dir(cfg, out_dir, rows[i], cfg.seed, p.epochs) / METRICS).exists()]
    for i in finished + [i for i in order if i not in finished]:
        progress(f"{rows[i]['kernel_set']} #{rows[i]['index']}")
        rows[i]["val_acc"], trained = train_pick(cfg, out_dir, rows[i], cfg.seed, p.epochs)
        if trained:
            so_far()

    noisy = seed_noise_rows(rows, p.get("seed_archs", 2))  # the top-scored, the median, then spread
    for label, row in noisy:
        runs, trained = {cfg.seed: row["val_acc"]}, False
        for extra in range(1, p.seeds):
            progress(f"{label}, seed {cfg.seed + extra}")
            runs[cfg.seed + extra], now = train_pick(cfg, out_dir, row, cfg.seed + extra, p.epochs)
            trained |= now
        runs = {s: a for s, a in runs.items() if a is not None}
        accs = list(runs.values())
        seed_noise[label] = {"kernel_set": row["kernel_set"], "index": row["index"], "seeds": list(runs),
                             "val_acc": accs, "mean": statistics.fmean(accs),
                             "std": statistics.stdev(accs) if len(accs) > 1 else 0.0}
        if trained:
            so_far()

    # Budget: a subset spread over the score range, trained long_factor x longer.
    for row in spread(rows, min(p.long_archs, len(rows)), "hamming"):  # the same dicts as in rows: in proxy.csv
        progress(f"{row['kernel_set']} #{row['index']}, {long_epochs} epochs")
        row["val_acc_long"], _ = train_pick(cfg, out_dir, row, cfg.seed, long_epochs)

    log.info("proxy study: statistics (%d bootstrap resamples per interval)", p.bootstrap)
    result = {
        "settings": settings,
        **study_statistics(rows, seed_noise, cfg.seed, long_epochs, p.bootstrap, cfg.seed),
        "seed_noise": seed_noise,
    }
    write_outputs(out_dir, rows, result)
    log_to_wandb(cfg, out_dir, rows, result)
    return result


def log_to_wandb(cfg: DictConfig, out_dir: Path, rows: list[dict], result: dict) -> None:
    with wandb_run(cfg.wandb.mode, cfg.wandb.project, out_dir, "proxy", group=cfg.name, name=f"{cfg.name}-proxy",
                   tags=[cfg.dataset.name, "proxy"]) as run:
        if run is None:
            return
        columns = ["kernel_set", "index", *PROXIES, "val_acc", "val_acc_long"]
        data = table(columns, [[row.get(c) for c in columns] for row in rows])
        run.log({"proxy": data, **{p.stem: image(p) for p in sorted(out_dir.glob("proxy*.png"))}})
        pooled = result["correlations"].get("pooled", {})
        run.summary.update({f"tau/{k}": v["tau"] for k, v in pooled.items()} | {f"rho/{k}": v["rho"] for k, v in pooled.items()}
                           | {f"partial_tau_given_{c}/{k}": v[f"given_{c}"]["tau"] for k, v in pooled.items()
                              for c in COVARIATES if f"given_{c}" in v}
                           | {"reliability": (result.get("reliability") or {}).get("reliability"), "n": result["n"]})
