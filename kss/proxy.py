"""The proxy study behind `proxy.py`: does a higher R at initialisation mean a more accurate SNN?

For each kernel set: search (or resume) with kss.search, pick `per_set` candidates spread evenly
over the score range (score quantiles; the lowest and the best included), score them with the
other proxies (NASWOT's R, parameter count, a random number as the floor), then train every pick
with kss.training under one fixed budget (same data order and seed) and compare proxies with
**validation** accuracy. Also: the top-scored and the median architecture retrained with more
seeds (the noise every correlation is read against), and a subset retrained with a longer budget
(does the ranking change with training length?).

Every step is resumable: searches resume, finished trainings are reported by kss.training, and
the proxies of the picks are kept in picks.json.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from kss import config as C
from kss.cli import checked
from kss.errors import KssError
from kss.search import (CANDIDATES, check_batch_fits, evaluate_candidate, read_candidates, search, setup_from_config,
                        write_json)
from kss.stats import rank_correlations
from kss.sweep import resolve_kernel_sets
from kss.training import run_train

log = logging.getLogger(__name__)

PROXIES = ("hamming", "naswot", "params", "random")
PICKS = "picks.json"


def spread(items: list[dict], n: int, key: str) -> list[dict]:
    """n distinct items at evenly spaced ranks of `key`: the lowest, ..., the highest (n <= len(items))."""
    ranked = sorted(items, key=lambda r: (r[key], r["index"]))
    positions = np.unique(np.linspace(0, len(ranked) - 1, n).round().astype(int))
    return [ranked[p] for p in positions]


def pick_spread(records: list[dict], n: int) -> list[dict]:
    """n distinct scored candidates at evenly spaced score ranks: the lowest, ..., the best."""
    scored = [r for r in records if r["status"] == "scored"]
    if not scored:
        raise KssError("the search scored no candidate (all over budget or non-finite); raise budget.max_params or iters")
    if n > len(scored):
        raise KssError(f"per_set={n} but the search scored only {len(scored)} candidates; raise iters or lower per_set")
    return spread(scored, n, "score")


def check_study(cfg: DictConfig, kernel_sets: list) -> None:
    from kss.shards import refuse_shards

    refuse_shards(cfg, "proxy.py")
    p = cfg.proxy
    if p.per_set * len(kernel_sets) < 3:
        raise KssError(f"a rank correlation needs at least 3 architectures; per_set={p.per_set} x "
                       f"{len(kernel_sets)} kernel set(s) gives {p.per_set * len(kernel_sets)}")
    if not isinstance(p.epochs, int) or p.epochs < 1:
        raise KssError(f"proxy.epochs is the training budget and must be a positive integer (got {p.epochs})")
    if not 0 < p.train_fraction <= 1:
        raise KssError(f"proxy.train_fraction must be in (0, 1] (got {p.train_fraction})")
    if p.long_factor < 1 or p.seeds < 1:
        raise KssError(f"proxy.long_factor and proxy.seeds must be >= 1 (got {p.long_factor}, {p.seeds})")


def collect_picks(cfg: DictConfig, out_dir: Path, kernel_sets: list, device) -> list[dict]:
    """Search each kernel set, pick across its score range, compute every proxy of the picks."""
    path = out_dir / PICKS
    settings = {"kernel_sets": kernel_sets, "per_set": cfg.proxy.per_set, "iters": cfg.iters, "seed": cfg.seed}
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("settings") == settings:
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


def train_pick(cfg: DictConfig, out_dir: Path, pick: dict, seed: int, epochs: int) -> float | None:
    """Validation accuracy of one pick after a fixed budget (kss.training; resumable)."""
    tag = f"{C.setting_tag(pick['kernels'])}_{pick['index']}"
    genotype_file = out_dir / "genotypes" / f"{tag}.json"
    genotype_file.parent.mkdir(parents=True, exist_ok=True)
    if not genotype_file.exists():
        write_json(genotype_file, pick["genotype"])
    job = C.job_config(cfg, **{
        "kernel_set.kernels": pick["kernels"], "genotype": str(genotype_file), "seed": seed,
        "trainer.max_epochs": epochs, "trainer.limit_train_batches": cfg.proxy.train_fraction,
        "test": False, "search_only": False, "wandb.group": cfg.name,
    })
    # the budget is in the name: trainer.limit_train_batches is not among a run's settings
    metrics = run_train(job, out_dir / "train" / f"{tag}_e{epochs}_f{cfg.proxy.train_fraction:g}_seed{seed}")
    return metrics.get("best_val_acc")


def correlations(rows: list[dict], accuracy_key: str, resamples: int, seed: int) -> dict:
    """Per proxy: tau, rho and their intervals, per kernel set and pooled."""
    groups = {"pooled": rows} | {ks: [r for r in rows if r["kernel_set"] == ks] for ks in sorted({r["kernel_set"] for r in rows})}
    out = {}
    for group, members in groups.items():
        members = [r for r in members if r.get(accuracy_key) is not None]
        if len(members) < 3:
            continue
        out[group] = {}
        for proxy in PROXIES:
            usable = [r for r in members if r[proxy] is not None and math.isfinite(r[proxy])]
            if len(usable) >= 3:
                out[group][proxy] = rank_correlations([r[proxy] for r in usable], [r[accuracy_key] for r in usable],
                                                      resamples, seed)
    return out


def regret(rows: list[dict], key: str = "val_acc") -> dict:
    """The top-scored architecture's accuracy against the best trained and the median one."""
    done = [r for r in rows if r.get(key) is not None]
    top = max(done, key=lambda r: r["hamming"])
    best = max(r[key] for r in done)
    median = statistics.median(r[key] for r in done)
    return {"top_scored": {"kernel_set": top["kernel_set"], "index": top["index"], key: top[key]},
            "best": best, "median": median, "regret_vs_best": best - top[key], "gain_vs_median": top[key] - median}


def run_proxy(cfg: DictConfig, out_dir: str | Path | None = None) -> dict:
    """The task behind `proxy.py`: config in, proxy.json's content out."""
    out_dir = Path(out_dir or C.run_dir())
    kernel_sets = resolve_kernel_sets(cfg.kernel_sets)
    check_study(cfg, kernel_sets)
    device = C.resolve_device(cfg.device)
    if not (out_dir / PICKS).exists():  # the searches ahead need the data, and a scoring batch it can serve
        job = C.job_config(cfg, **{"kernel_set.kernels": kernel_sets[0]})
        data = C.data_module(job)
        check_batch_fits(setup_from_config(job, data), data)
    checked()  # the config tree (extras.print_config), once the input is valid
    p = cfg.proxy
    picks = collect_picks(cfg, out_dir, kernel_sets, device)
    total = len(picks) + 2 * (p.seeds - 1) + min(p.long_archs, len(picks))
    done = 0

    def progress(what: str) -> None:
        nonlocal done
        done += 1
        log.info("proxy study: training %d of %d (%s)", done, total, what)

    rows = []
    for pick in picks:
        progress(f"{pick['kernel_set']} #{pick['index']}")
        rows.append(pick | {"val_acc": train_pick(cfg, out_dir, pick, cfg.seed, p.epochs)})

    # Seed noise: the top-scored and the median-scored architecture, p.seeds training seeds each.
    by_score = sorted(rows, key=lambda r: r["hamming"])
    seed_noise = {}
    for label, row in (("top_scored", by_score[-1]), ("median_scored", by_score[len(by_score) // 2])):
        accs = [row["val_acc"]]
        for extra in range(1, p.seeds):
            progress(f"{label}, seed {cfg.seed + extra}")
            accs.append(train_pick(cfg, out_dir, row, cfg.seed + extra, p.epochs))
        accs = [a for a in accs if a is not None]
        seed_noise[label] = {"kernel_set": row["kernel_set"], "index": row["index"], "val_acc": accs,
                             "mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0}

    # Budget: a subset spread over the score range, trained long_factor x longer.
    long_epochs = p.epochs * p.long_factor
    for row in rows:
        row["val_acc_long"] = None
    long_rows = spread(rows, min(p.long_archs, len(rows)), "hamming")
    for row in long_rows:  # the same dicts as in rows: their long accuracy shows in proxy.csv
        progress(f"{row['kernel_set']} #{row['index']}, {long_epochs} epochs")
        row["val_acc_long"] = train_pick(cfg, out_dir, row, cfg.seed, long_epochs)

    resamples, seed = p.bootstrap, cfg.seed
    result = {
        "settings": {"kernel_sets": kernel_sets, "per_set": p.per_set, "iters": cfg.iters, "epochs": p.epochs,
                     "train_fraction": p.train_fraction, "long_epochs": long_epochs, "seeds": p.seeds,
                     "dataset": cfg.dataset.name, "model": C.model_fields(cfg)},
        "n": len(rows),
        "correlations": correlations(rows, "val_acc", resamples, seed),
        "regret": regret(rows),
        "seed_noise": seed_noise,
        "budget": {"n": len(long_rows), "epochs": long_epochs,
                   "short": correlations(long_rows, "val_acc", resamples, seed).get("pooled", {}),
                   "long": correlations(long_rows, "val_acc_long", resamples, seed).get("pooled", {})},
    }
    write_outputs(out_dir, rows, result)
    log_to_wandb(cfg, out_dir, rows, result)
    return result


def write_outputs(out_dir: Path, rows: list[dict], result: dict) -> None:
    columns = ["kernel_set", "kernels", "index", "genotype", *PROXIES, "val_acc", "val_acc_long"]
    with open(out_dir / "proxy.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "kernels": json.dumps(row["kernels"]), "genotype": json.dumps(row["genotype"])})
    write_json(out_dir / "proxy.json", result)
    (out_dir / "proxy.md").write_text(summary_markdown(result))
    from kss.plots import plot_proxy

    plot_proxy(out_dir, rows, result)


def _interval(stat: dict, name: str) -> str:
    value, (low, high) = stat[name], stat[f"{name}_ci"]
    return "" if value is None else f"{value:+.3f} [{low:+.2f}, {high:+.2f}]"


def summary_markdown(result: dict) -> str:
    lines = [f"Validation accuracy after {result['settings']['epochs']} epoch(s) on "
             f"{result['settings']['train_fraction']:g} of the training split; {result['n']} architectures.",
             "", "| group | proxy | n | Kendall tau [95% CI] | Spearman rho [95% CI] |", "|---|---|---|---|---|"]
    for group, proxies in result["correlations"].items():
        for proxy, stat in proxies.items():
            lines.append(f"| {group} | {proxy} | {stat['n']} | {_interval(stat, 'tau')} | {_interval(stat, 'rho')} |")
    r = result["regret"]
    lines += ["", f"Top-scored architecture ({r['top_scored']['kernel_set']} #{r['top_scored']['index']}): "
                  f"val acc {r['top_scored']['val_acc']:.4f}; best trained {r['best']:.4f} (regret "
                  f"{r['regret_vs_best']:.4f}); median {r['median']:.4f} (gain {r['gain_vs_median']:+.4f})."]
    for label, noise in result["seed_noise"].items():
        lines.append(f"Seed noise, {label} ({noise['kernel_set']} #{noise['index']}): "
                     f"{noise['mean']:.4f} +- {noise['std']:.4f} over {len(noise['val_acc'])} training seeds.")
    b = result["budget"]
    for length in ("short", "long"):
        if "hamming" in b[length]:
            lines.append(f"Budget check ({b['n']} architectures), {length}: hamming tau {_interval(b[length]['hamming'], 'tau')}.")
    return "\n".join(lines) + "\n"


def log_to_wandb(cfg: DictConfig, out_dir: Path, rows: list[dict], result: dict) -> None:
    if cfg.wandb.mode == "disabled":
        return
    import wandb

    run = wandb.init(project=cfg.wandb.project, group=cfg.name, job_type="proxy", name=f"{cfg.name}-proxy",
                     dir=str(out_dir), mode=cfg.wandb.mode, tags=[cfg.dataset.name, "proxy"],
                     settings=wandb.Settings(quiet=True))
    try:
        columns = ["kernel_set", "index", *PROXIES, "val_acc", "val_acc_long"]
        table = wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])
        run.log({"proxy": table, **{p.stem: wandb.Image(str(p)) for p in sorted(out_dir.glob("proxy*.png"))}})
        pooled = result["correlations"].get("pooled", {})
        run.summary.update({f"tau/{k}": v["tau"] for k, v in pooled.items()} | {f"rho/{k}": v["rho"] for k, v in pooled.items()})
    finally:
        run.finish()
