"""Calibration of the proxy study's training budget (`python proxy.py proxy.calibrate=true`).

How long must each architecture train before one run measures it? `proxy.calibration.archs` architectures
(distinct genotypes spread over the R range of each kernel set's search, as the study picks them), each
trained with `proxy.calibration.seeds` seeds at every budget of `proxy.calibration.budgets` (epochs of the
training split, kss.tasks.fidelity: 0.3 = one epoch on 30% of the batches). Per budget: the single-run reliability
1 - seed variance / variance across architectures (kss.study.stats.reliability, 95% BCa interval), the seed and
architecture spreads, the tau ceiling it implies, and what the trainings cost on this machine; then the
cheapest budget whose reliability reaches `proxy.calibration.target` (0.7), and the overrides that run the
study there. Validation accuracy only (test=false).

Files: calibration.json/.md/.png (the plot: reliability per budget, seed against seed) in the study's
folder; calibration_so_far.json/.md/.png as each budget finishes (budgets run cheapest first, so a
`cheapest` there is already final: the study can start while the longer budgets still train); the
searches, picks and trainings under calibration/ (every step resumable: a rerun reports finished
trainings from their metrics.json).
"""

from __future__ import annotations

import logging
import math
import platform
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from kss import config as C
from kss.cli import checked
from kss.errors import KssError
from kss.io import write_json
from kss.search.setup import check_batch_fits
from kss.space.genotype import genotype_key
from kss.study.plots import plot_calibration
from kss.study.proxy import PICKS, spread
from kss.study.stats import attenuation_ceiling, reliability
from kss.tasks.fidelity import (batches_per_epoch, budget_tag, check_budget_fits, check_budgets, epochs_and_fraction,
                                train_at_budget)
from kss.tasks.proxy_study import collect_picks
from kss.tasks.search import setup_from_config

log = logging.getLogger(__name__)

FOLDER = "calibration"
SO_FAR = "calibration_so_far"  # .json and .md: the budgets finished so far, rewritten after each


def check_calibration(cfg: DictConfig, kernel_sets: list) -> dict:
    c = cfg.proxy.get("calibration") or {}
    archs, seeds, target = c.get("archs"), c.get("seeds"), c.get("target")
    for name, value, low in (("archs", archs, 3), ("seeds", seeds, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise KssError(f"proxy.calibration.{name} must be an integer >= {low} (got {value!r})")
    budgets = check_budgets(c.get("budgets"), "proxy.calibration.budgets")
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target < 1:
        raise KssError(f"proxy.calibration.target is a reliability and must be in (0, 1) (got {target!r})")
    if cfg.dataset.get("val_size", 0) <= 0:
        raise KssError("the calibration measures validation accuracy: pass dataset.val_size > 0")
    return {"archs": archs, "seeds": seeds, "budgets": budgets, "target": float(target),
            "per_set": math.ceil(archs / len(kernel_sets))}


def calibration_archs(cfg: DictConfig, out_dir: Path, kernel_sets: list, settings: dict, device) -> list[dict]:
    """`archs` distinct genotypes spread over the R range (the picks of kss.proxy, per_set per kernel set)."""
    job = C.job_config(cfg, **{"proxy.per_set": settings["per_set"]})
    picks = collect_picks(job, out_dir / FOLDER, kernel_sets, device)
    distinct = list({genotype_key(p["genotype"]): p for p in reversed(picks)}.values())
    if len(distinct) < settings["archs"]:
        raise KssError(f"the searches gave {len(distinct)} distinct architectures, fewer than "
                       f"proxy.calibration.archs={settings['archs']}; raise iters")
    return sorted(spread(distinct, settings["archs"], "hamming"), key=lambda p: (p["kernel_set"], p["index"]))


def measure(cfg: DictConfig, out_dir: Path, archs: list[dict], settings: dict, on_budget=None) -> list[dict]:
    """Train every architecture x seed at each budget (cheapest first); one row per budget. `on_budget(rows)`
    after each budget, with the rows so far."""
    rows = []
    total = len(settings["budgets"]) * len(archs) * settings["seeds"]
    done = 0
    for budget in settings["budgets"]:
        runs, seconds, start = [], 0.0, time.perf_counter()
        for arch in archs:
            tag = f"{C.setting_tag(arch['kernels'])}_{arch['index']}"
            genotype_file = out_dir / FOLDER / "genotypes" / f"{tag}.json"
            if not genotype_file.exists():
                genotype_file.parent.mkdir(parents=True, exist_ok=True)
                write_json(genotype_file, arch["genotype"])
            accs = []
            for seed in range(cfg.seed, cfg.seed + settings["seeds"]):
                done += 1
                log.info("calibration: training %d of %d (%s #%d, %g epoch(s), seed %d)", done, total,
                         arch["kernel_set"], arch["index"], budget, seed)
                run = out_dir / FOLDER / "train" / f"{tag}_{budget_tag(budget)}_seed{seed}"
                metrics = train_at_budget(cfg, run, genotype_file, arch["kernels"], seed, budget, group=cfg.name)
                accs.append(metrics.get("best_val_acc"))
                seconds += metrics.get("train_seconds") or 0.0
            runs.append([a for a in accs if a is not None])
        epochs, fraction = epochs_and_fraction(budget)
        row = {"budget_epochs": budget, "max_epochs": epochs, "train_fraction": fraction,
               "trainings": len(archs) * settings["seeds"], "train_seconds": seconds,
               "seconds_per_training": seconds / (len(archs) * settings["seeds"]),
               "wall_seconds_this_session": time.perf_counter() - start,
               "val_acc": {f"{a['kernel_set']} #{a['index']}": r for a, r in zip(archs, runs)},
               "mean_val_acc": float(np.mean([x for r in runs for x in r])) if any(runs) else None}
        try:
            rel = reliability(runs, cfg.proxy.bootstrap, cfg.seed)
        except KssError as error:  # too few finished runs (non-finite losses)
            rel = {"reliability": None, "reliability_ci": [None, None], "error": str(error)}
        row |= {"reliability": rel["reliability"], "reliability_ci": rel["reliability_ci"],
                "seed_sd": math.sqrt(rel["seed_var"]) if rel.get("seed_var") is not None else None,
                "arch_sd": math.sqrt(rel["total_var"]) if rel.get("total_var") is not None else None,
                "tau_ceiling": attenuation_ceiling(rel["reliability"])["tau"]}
        rows.append(row)
        if on_budget:
            on_budget(rows)
    return rows


def cheapest(rows: list[dict], target: float) -> dict | None:
    """The first (cheapest) budget whose reliability reaches the target, and the study's overrides for it."""
    for row in rows:
        if row["reliability"] is not None and row["reliability"] >= target:
            low = row["reliability_ci"][0]
            return {"budget_epochs": row["budget_epochs"], "reliability": row["reliability"],
                    "lower_bound_reaches_target": low is not None and low >= target,
                    "overrides": f"proxy.epochs={row['max_epochs']} proxy.train_fraction={row['train_fraction']:.4g}"}
    return None


def _f(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def calibration_markdown(result: dict, pending=()) -> str:
    """The calibration table; `pending`: budgets still training (the table so far)."""
    s = result["settings"]
    lines = [f"# Budget calibration: single-run reliability per training budget ({s['dataset']}, "
             f"{', '.join(s['kernel_sets_names'])})", "",
             f"{s['archs']} distinct architectures spread over the R range, {s['seeds']} training seeds each, at every "
             f"budget (epochs of the training split, each trained from scratch; validation accuracy). Reliability = "
             f"1 - seed variance / variance of single runs across architectures, 95% BCa interval over architectures "
             f"({s['bootstrap']} resamples); the tau ceiling is the largest Kendall tau any proxy can show at that "
             f"reliability (kss.study.stats.attenuation_ceiling). Times: training only, on {result['host']} "
             f"({result['device']}).", "",
             "| budget (epochs) | = max_epochs x fraction | mean val acc | seed sd | arch sd | reliability [95% BCa] "
             "| tau ceiling | trainings | s per training | total min |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["budgets"]:
        low, high = r["reliability_ci"]
        lines.append(f"| {r['budget_epochs']:g} | {r['max_epochs']} x {r['train_fraction']:.3g} | {_f(r['mean_val_acc'], 4)} "
                     f"| {_f(r['seed_sd'] and 100 * r['seed_sd'], 2)} pts | {_f(r['arch_sd'] and 100 * r['arch_sd'], 2)} pts "
                     f"| {_f(r['reliability'])} [{_f(low, 2)}, {_f(high, 2)}] | {_f(r['tau_ceiling'], 2)} | {r['trainings']} "
                     f"| {r['seconds_per_training']:.1f} | {r['train_seconds'] / 60:.1f} |")
    c = result["cheapest"]
    if pending:
        lines += ["", f"*So far: {len(result['budgets'])} of {len(s['budgets'])} budgets; "
                      f"{', '.join(f'{b:g}' for b in pending)} epoch(s) still to train.*"]
    if c is None and pending:
        lines += ["", f"No budget so far reached reliability {s['target']:g}."]
    elif c is None:
        lines += ["", f"No budget reached reliability {s['target']:g}: a proxy study at these budgets cannot show a tau "
                      "above the ceilings in the table; try longer budgets (proxy.calibration.budgets)."]
    else:
        sure = "its interval's lower bound too" if c["lower_bound_reaches_target"] else "the point estimate only; its interval reaches below"
        lines += ["", f"Cheapest budget with reliability >= {s['target']:g}: **{c['budget_epochs']:g} epoch(s)** "
                      f"(reliability {c['reliability']:.3f}; {sure}). Run the study there with `{c['overrides']}`."]
    return "\n".join(lines) + "\n"


def run_calibration(cfg: DictConfig, out_dir: Path, kernel_sets: list, device) -> dict:
    """proxy.calibrate=true: the calibration table (calibration.json, calibration.md); returns its content."""
    settings = check_calibration(cfg, kernel_sets)
    job = C.job_config(cfg, **{"kernel_set.kernels": kernel_sets[0]})
    n_batches = batches_per_epoch(job)
    for budget in settings["budgets"]:
        check_budget_fits(budget, n_batches, "proxy.calibration.budgets")
    if not (out_dir / FOLDER / PICKS).exists():
        data = C.data_module(job)
        check_batch_fits(setup_from_config(job, data), data)
    checked()
    archs = calibration_archs(cfg, out_dir, kernel_sets, settings, device)

    def result_of(rows: list[dict]) -> dict:
        return {"settings": {**{k: v for k, v in settings.items() if k != "per_set"}, "kernel_sets": kernel_sets,
                             "kernel_sets_names": [C.kernel_set_name(k) for k in kernel_sets], "iters": cfg.iters,
                             "dataset": cfg.dataset.name, "model": C.model_fields(cfg), "seed": cfg.seed,
                             "bootstrap": cfg.proxy.bootstrap},
                "architectures": [{k: a[k] for k in ("kernel_set", "index", "genotype", "params", "hamming")} for a in archs],
                "budgets": rows,
                "cheapest": cheapest(rows, settings["target"]),
                "device": str(device),
                "host": platform.node()}

    def so_far(rows: list[dict]) -> None:  # a long calibration shows its cheap budgets while the long ones train
        pending, partial = settings["budgets"][len(rows):], result_of(rows)
        write_json(out_dir / f"{SO_FAR}.json", partial | {"pending": pending})
        (out_dir / f"{SO_FAR}.md").write_text(calibration_markdown(partial, pending))
        plot_calibration(out_dir / f"{SO_FAR}.png", partial)

    result = result_of(measure(cfg, out_dir, archs, settings, on_budget=so_far))
    write_json(out_dir / "calibration.json", result)
    (out_dir / "calibration.md").write_text(calibration_markdown(result))
    plot_calibration(out_dir / "calibration.png", result)
    c = result["cheapest"]
    log.info("calibration: %s", f"cheapest budget with reliability >= {settings['target']:g}: {c['budget_epochs']:g} "
             f"epoch(s) ({c['overrides']})" if c else f"no budget reached reliability {settings['target']:g}")
    return result
